"""The forwarder's cache of upstream answers: what to keep, for how long, and what to serve.

- Positive answers live for the smallest TTL of their answer section, negative answers
  (NXDOMAIN, or NOERROR with no answer: NODATA) for the SOA's negative TTL (RFC 2308 §5:
  the smaller of the SOA's TTL and its MINIMUM); an answer without an SOA to bound it, and
  SERVFAIL, are not cached (RFC 2308 §7.1 allows at most 5 minutes; we take none). Every
  lifetime is clamped to ``[min_ttl, max_ttl]`` (``negative_max_ttl`` for negative ones).
- Served records carry the TTL they have left (their TTL minus the entry's age).
- Serve-stale (RFC 8767): an expired entry stays for ``stale_for`` seconds; when every
  upstream fails, it is served with TTL ``stale_ttl`` (RFC 8767 §4 suggests 30 s).
- Bounded by entries and by bytes (each entry's wire size), least recently used first out.

Pure: the caller passes ``now`` (monotonic seconds).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

__all__ = ["CacheEntry", "CacheSettings", "CacheStatistics", "ResponseCache", "cache_key"]

SOA = dns.rdatatype.SOA
CacheKey = tuple[dns.name.Name, int, int]


def cache_key(qname: dns.name.Name, qtype: int, qclass: int) -> CacheKey:
    """The key of a question: name (dnspython compares names case-insensitively), type
    and class."""
    return (qname, qtype, qclass)


@dataclass(frozen=True)
class CacheSettings:
    max_entries: int = 10_000
    max_bytes: int = 32 << 20
    min_ttl: int = 0
    max_ttl: int = 86_400
    negative_max_ttl: int = 3_600
    stale_for: int = 86_400  # 0 = no serve-stale
    stale_ttl: int = 30


class CacheEntry:
    """One cached upstream answer: its rcode and sections, and when it was stored."""

    __slots__ = ("additional", "answer", "authority", "expires", "rcode", "size", "stored", "ttl")

    def __init__(
        self,
        rcode: int,
        answer: list[dns.rrset.RRset],
        authority: list[dns.rrset.RRset],
        additional: list[dns.rrset.RRset],
        stored: float,
        ttl: int,
        size: int,
    ) -> None:
        self.rcode = rcode
        self.answer = answer
        self.authority = authority
        self.additional = additional
        self.stored = stored
        self.ttl = ttl
        self.expires = stored + ttl
        self.size = size

    def remaining(self, now: float) -> int:
        """Whole seconds of freshness left (0 once expired)."""
        return max(0, int(self.expires - now))

    def sections(
        self, now: float, stale_ttl: int | None = None
    ) -> tuple[list[dns.rrset.RRset], ...]:
        """Copies of the three sections with TTLs aged to ``now`` (or all ``stale_ttl``)."""
        age = int(now - self.stored)
        out: list[list[dns.rrset.RRset]] = []
        for section in (self.answer, self.authority, self.additional):
            copies = []
            for rrset in section:
                copy = rrset.copy()  # type: ignore[no-untyped-call]
                copy.ttl = stale_ttl if stale_ttl is not None else max(0, rrset.ttl - age)
                copies.append(copy)
            out.append(copies)
        return out[0], out[1], out[2]


@dataclass
class CacheStatistics:
    hits: int = 0
    misses: int = 0
    stale_hits: int = 0
    stored: int = 0
    evicted: int = 0
    entries: int = 0
    bytes: int = 0


class ResponseCache:
    """Bounded LRU of upstream answers, keyed by :func:`cache_key`."""

    def __init__(self, settings: CacheSettings | None = None) -> None:
        self.settings = settings or CacheSettings()
        self._entries: OrderedDict[CacheKey, CacheEntry] = OrderedDict()
        self._bytes = 0
        self.stats = CacheStatistics()

    def __len__(self) -> int:
        return len(self._entries)

    def lifetime(self, response: dns.message.Message) -> int | None:
        """Seconds to keep ``response`` (clamped), or None when it must not be cached."""
        s = self.settings
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or response.flags & 0x0200:
            return None  # errors and truncated answers are not kept
        if rcode == dns.rcode.NOERROR and response.answer:
            ttl = min(r.ttl for r in response.answer)
            return max(s.min_ttl, min(s.max_ttl, ttl))
        for rrset in response.authority:
            if rrset.rdtype == SOA:
                ttl = min(int(rrset.ttl), int(rrset[0].minimum))
                return max(s.min_ttl, min(s.negative_max_ttl, ttl))
        return None

    def store(
        self, key: CacheKey, response: dns.message.Message, size: int, now: float
    ) -> CacheEntry | None:
        """Keep ``response`` (``size``: its wire length) if it may be cached."""
        ttl = self.lifetime(response)
        if ttl is None:
            return None
        entry = CacheEntry(
            response.rcode(),
            self._clamped(response.answer, ttl),
            self._clamped(response.authority, ttl),
            self._clamped(response.additional, ttl),
            now,
            ttl,
            size,
        )
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[key] = entry
        self._bytes += size
        self.stats.stored += 1
        self._evict(now)
        return entry

    def _clamped(self, section: list[dns.rrset.RRset], ttl: int) -> list[dns.rrset.RRset]:
        """Copies whose TTLs lie within the clamps and end with the entry (a negative
        answer's SOA carries the negative TTL, RFC 2308 §5)."""
        out = []
        for rrset in section:
            copy = rrset.copy()  # type: ignore[no-untyped-call]
            copy.ttl = min(max(int(rrset.ttl), self.settings.min_ttl), ttl)
            out.append(copy)
        return out

    def _evict(self, now: float) -> None:
        s = self.settings
        entries = self._entries
        while entries and (len(entries) > s.max_entries or self._bytes > s.max_bytes):
            _, old = entries.popitem(last=False)
            self._bytes -= old.size
            self.stats.evicted += 1

    def lookup(self, key: CacheKey, now: float) -> CacheEntry | None:
        """A fresh entry (counted as a hit, moved to the front), or None (a miss)."""
        entry = self._entries.get(key)
        if entry is None or entry.expires <= now:
            self.stats.misses += 1
            return None
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return entry

    def stale(self, key: CacheKey, now: float) -> CacheEntry | None:
        """An expired entry still inside the serve-stale window (RFC 8767), or None."""
        entry = self._entries.get(key)
        if entry is None or now > entry.expires + self.settings.stale_for:
            return None
        self.stats.stale_hits += 1
        return entry

    def sweep(self, now: float) -> int:
        """Drop entries past their stale window; returns how many."""
        horizon = now - self.settings.stale_for
        dead = [k for k, e in self._entries.items() if e.expires < horizon]
        for key in dead:
            self._bytes -= self._entries.pop(key).size
        return len(dead)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def statistics(self) -> CacheStatistics:
        self.stats.entries = len(self._entries)
        self.stats.bytes = self._bytes
        return self.stats
