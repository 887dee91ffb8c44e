"""What a DNS server does with one query: the decisions, without the sockets.

:meth:`QueryEngine.handle` takes a query's bytes, the client's address, the transport and
``now``, and returns a :class:`Reply` (bytes to send), a :class:`Drop`, or a
:class:`Forward` (ask an upstream; the caller later calls :meth:`QueryEngine.resolved`
or :meth:`QueryEngine.failed`, which build the replies of every waiter).

Order of checks: not a query (QR set, or fewer than 12 bytes) → dropped; unparseable →
FORMERR (RFC 1035 §4.1.1) when the header is readable; opcode other than QUERY → NOTIMP;
QDCOUNT ≠ 1 → REFUSED (RFC 9619 §3 says FORMERR for more than one; REFUSED is what this
server promises for both); EDNS version above 0 → BADVERS (RFC 6891 §6.1.3); class other
than IN, zone transfers → REFUSED; then our zones (authoritative, AA set), then the
forwarder's cache, then upstreams, for clients allowed recursion (others: REFUSED).

EDNS (RFC 6891): replies advertise ``udp_payload`` (1232 by default) and, over UDP, fit in
the client's size capped by ours (512 without EDNS); a longer reply goes out empty with TC
set, and the client retries over TCP (RFC 7766).

The fast path (:class:`WireAnswers`): every reply built for a cacheable answer is kept as
bytes, keyed by the query's bytes after its ID. The same query bytes later are answered
with the query's ID and those bytes, with no parsing: that is what lets a Python server run
near dnsmasq's speed. A kept reply from our zones lives until the zones change; one from the
forwarder's cache as long as its cache entry is fresh, its TTL fields rewritten in place
each second so they count down as the cache's do (:func:`ttl_offsets`).

Pure: dnspython for messages, time passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from backhaul.guard.dns_rrl import ClientNetworks, RateLimiter, RateVerdict
from backhaul.proto.dns_cache import CacheEntry, CacheKey, ResponseCache, cache_key
from backhaul.proto.dns_forward import ForwardPlan, Upstream
from backhaul.proto.dns_zone import Authority

__all__ = [
    "Drop",
    "EngineSettings",
    "EngineStatistics",
    "Forward",
    "QueryEngine",
    "Reply",
    "WireAnswers",
]

QR = 0x8000
TC = dns.flags.TC
AA = dns.flags.AA
IN = dns.rdataclass.IN
MAX_TCP = 65_535
_PARSE_ERRORS = (dns.exception.DNSException, ValueError, IndexError, KeyError, UnicodeError)


@dataclass(frozen=True)
class EngineSettings:
    udp_payload: int = 1232
    allow_recursion: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    wire_entries: int = 100_000


@dataclass(slots=True)
class Reply:
    """Bytes to send back. ``qname``/``qtype``/``rcode``/``source`` are for the log."""

    wire: bytes
    qname: str = ""
    qtype: str = ""
    rcode: str = ""
    source: str = ""


@dataclass(slots=True)
class Drop:
    reason: str


@dataclass(slots=True)
class Pending:
    """A waiter for an upstream answer: its query and the size its reply must fit."""

    query: dns.message.Message
    limit: int
    client: str
    wire_key: bytes | None


@dataclass(slots=True)
class Forward:
    """Ask ``upstreams`` (in order) ``question`` for ``key``; ``waiter`` is this query."""

    key: CacheKey
    qname: dns.name.Name
    qtype: int
    upstreams: list[Upstream]
    waiter: Pending


Decision = Reply | Drop | Forward


@dataclass
class EngineStatistics:
    by_type: dict[str, int] = field(default_factory=dict)
    by_rcode: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


class WireAnswers:
    """Reply bytes per query bytes (after the ID): the fast path.

    An entry is ``[reply bytes after the ID, valid until, needs recursion, hits,
    label]``; ``label`` is ``(qtype, rcode, source)`` for the metrics (source ``zone`` or
    ``cache``: where the kept reply came from).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.table: dict[bytes, list[object]] = {}
        #: hits of entries that were dropped, by label (so no count is lost)
        self.retired: dict[tuple[str, str, str], int] = {}

    def put(
        self,
        key: bytes,
        tail: bytes,
        until: float,
        recursive: bool,
        label: tuple[str, str, str],
        aging: tuple[float, int, list[int], list[int]] | None = None,
    ) -> None:
        """Keep ``tail`` (a reply after its ID) for ``key`` until ``until``. ``aging``:
        ``(stored, age, offsets, ttls)`` for a forwarded answer whose TTLs count down:
        when it was stored in the cache, the age its bytes show now, the offsets of its
        TTL fields in the reply and their values at age 0."""
        table = self.table
        if key not in table and len(table) >= self.max_entries:
            oldest = next(iter(table))
            self._retire(table.pop(oldest))
        entry: list[object] = [tail, until, recursive, 0, label]
        if aging is not None:
            entry.extend(aging)
        table[key] = entry

    def _retire(self, entry: list[object]) -> None:
        hits = entry[3]
        assert isinstance(hits, int)
        if hits:
            label = entry[4]
            assert isinstance(label, tuple)
            self.retired[label] = self.retired.get(label, 0) + hits

    def clear(self) -> None:
        for entry in self.table.values():
            self._retire(entry)
        self.table.clear()

    def hits(self) -> dict[tuple[str, str, str], int]:
        out = dict(self.retired)
        for entry in self.table.values():
            hits = entry[3]
            assert isinstance(hits, int)
            if hits:
                label = entry[4]
                assert isinstance(label, tuple)
                out[label] = out.get(label, 0) + hits
        return out


def _type_text(rdtype: int) -> str:
    try:
        return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))
    except ValueError:
        return str(rdtype)


def _skip_name(wire: bytes, pos: int) -> int:
    while True:
        size = wire[pos]
        if size == 0:
            return pos + 1
        if size >= 0xC0:  # a compression pointer ends the name
            return pos + 2
        pos += size + 1


def ttl_offsets(wire: bytes) -> list[int]:
    """Offsets of the TTL field of every record (OPT excluded: its TTL holds flags) in a
    well-formed message, such as one dnspython just wrote (RFC 1035 §4.1.3)."""
    qdcount = int.from_bytes(wire[4:6], "big")
    records = sum(int.from_bytes(wire[i : i + 2], "big") for i in (6, 8, 10))
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(wire, pos) + 4
    out: list[int] = []
    for _ in range(records):
        pos = _skip_name(wire, pos)
        if wire[pos : pos + 2] != b"\x00\x29":  # OPT
            out.append(pos + 4)
        pos += 10 + int.from_bytes(wire[pos + 8 : pos + 10], "big")
    return out


def _age_ttls(entry: list[object], age: int) -> None:
    """Rewrite the TTLs of a kept forwarded reply for ``age`` seconds since it was cached."""
    tail = entry[0]
    offsets = entry[7]
    ttls = entry[8]
    assert isinstance(tail, bytes) and isinstance(offsets, list) and isinstance(ttls, list)
    buf = bytearray(tail)
    for offset, ttl in zip(offsets, ttls, strict=True):
        at = offset - 2  # the tail starts after the ID
        buf[at : at + 4] = max(0, ttl - age).to_bytes(4, "big")
    entry[0] = bytes(buf)
    entry[6] = age


def header_reply(packet: bytes, rcode: int) -> bytes:
    """A reply with only a header (and the question when there is exactly one we can read)
    for a query we will not process: FORMERR, NOTIMP, REFUSED."""
    msg = dns.message.Message(id=int.from_bytes(packet[:2], "big"))
    flags = int.from_bytes(packet[2:4], "big")
    msg.flags = QR | (flags & 0x7800) | (flags & dns.flags.RD)
    msg.set_rcode(dns.rcode.Rcode.make(rcode))
    return msg.to_wire()


class QueryEngine:
    """The server's policy: zones, forwarder cache, recursion ACL and rate limit."""

    def __init__(
        self,
        authority: Authority,
        cache: ResponseCache | None = None,
        plan: ForwardPlan | None = None,
        settings: EngineSettings | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.authority = authority
        self.cache = cache or ResponseCache()
        self.plan = plan
        self.rate_limiter = rate_limiter
        self.recursion = ClientNetworks(self.settings.allow_recursion)
        self.wire = WireAnswers(self.settings.wire_entries)
        self.stats = EngineStatistics()

    # ------------------------------------------------------------------ bookkeeping

    def set_authority(self, authority: Authority) -> None:
        """New zone data (a reload): kept reply bytes are forgotten."""
        self.authority = authority
        self.wire.clear()

    def _count(self, qtype: str, rcode: str, source: str) -> None:
        s = self.stats
        s.by_type[qtype] = s.by_type.get(qtype, 0) + 1
        s.by_rcode[rcode] = s.by_rcode.get(rcode, 0) + 1
        s.by_source[source] = s.by_source.get(source, 0) + 1

    def drop(self, reason: str) -> Drop:
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
        return Drop(reason)

    # ------------------------------------------------------------------ the fast path

    def fast(self, packet: bytes, client: str, now: float) -> list[object] | None:
        """The kept entry answering ``packet`` from ``client`` now, or None. The reply
        is ``packet[:2] + entry[0]``; the caller counts ``entry[3] += 1``."""
        entry = self.wire.table.get(packet[2:])
        if entry is None:
            return None
        if entry[1] <= now:  # type: ignore[operator]
            return None
        if entry[2]:  # forwarded: only for clients allowed recursion, TTLs counting down
            if client not in self.recursion:
                return None
            age = int(now - entry[5])  # type: ignore[operator]
            if age != entry[6]:
                _age_ttls(entry, age)
        return entry

    # ------------------------------------------------------------------ queries

    def handle(self, packet: bytes, client: str, now: float, udp: bool = True) -> Decision:
        """Decide what to do with one query (see the module docstring)."""
        if len(packet) < 12:
            return self.drop("short")
        if packet[2] & 0x80:
            return self.drop("not_a_query")
        if udp and self.rate_limiter is not None:
            verdict = self.rate_limiter.check(client, now)
            if verdict is RateVerdict.DROP:
                return self.drop("rate_limited")
            if verdict is RateVerdict.SLIP:
                return self._slip(packet)
        entry = self.fast(packet, client, now)
        if entry is not None:
            entry[3] += 1  # type: ignore[operator]
            label = entry[4]
            assert isinstance(label, tuple)
            tail = entry[0]
            assert isinstance(tail, bytes)
            return Reply(packet[:2] + tail, "", label[0], label[1], label[2])
        try:
            query = dns.message.from_wire(packet)
        except dns.message.UnknownTSIGKey:
            return self._refuse_header(packet, dns.rcode.REFUSED, "tsig")
        except _PARSE_ERRORS:
            return self._refuse_header(packet, dns.rcode.FORMERR, "formerr")
        opcode = query.opcode()
        if opcode != dns.opcode.QUERY:
            return self._refuse_header(packet, dns.rcode.NOTIMP, "notimp")
        if len(query.question) != 1:
            return self._refuse_header(packet, dns.rcode.REFUSED, "qdcount")
        q = query.question[0]
        qname, qtype, qclass = q.name, q.rdtype, q.rdclass
        limit = MAX_TCP
        if udp:
            limit = 512
            if query.edns >= 0:
                limit = max(512, min(query.payload, self.settings.udp_payload))
        if query.edns > 0:
            return self._respond(query, dns.rcode.BADVERS, (), (), (), limit, "badvers")
        if qclass != IN or qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            return self._respond(query, dns.rcode.REFUSED, (), (), (), limit, "refused")
        if qtype == dns.rdatatype.OPT or (dns.rdatatype.is_metatype(qtype) and qtype != 255):
            return self._respond(query, dns.rcode.FORMERR, (), (), (), limit, "formerr")
        wire_key = packet[2:] if udp else None
        answer = self.authority.lookup(qname, qtype)
        if answer is not None:
            reply = self._respond(
                query,
                answer.rcode,
                answer.answer,
                answer.authority,
                answer.additional,
                limit,
                "zone",
                aa=True,
            )
            if wire_key is not None and not (reply.wire[2] & 0x02):  # not truncated
                self._keep(wire_key, reply, float("inf"), False)  # until set_authority()
            return reply
        if self.plan is None or client not in self.recursion:
            return self._respond(query, dns.rcode.REFUSED, (), (), (), limit, "refused")
        upstreams = self.plan.upstreams_for(qname)
        if not upstreams:
            return self._respond(query, dns.rcode.REFUSED, (), (), (), limit, "refused")
        key = cache_key(qname, qtype, qclass)
        cached = self.cache.lookup(key, now)
        if cached is not None:
            return self._from_entry(query, cached, now, limit, wire_key, "cache")
        waiter = Pending(query, limit, client, wire_key)
        return Forward(key, qname, qtype, list(upstreams), waiter)

    # ------------------------------------------------------------------ after upstreams

    def resolved(
        self,
        key: CacheKey,
        response: dns.message.Message,
        size: int,
        waiters: Sequence[Pending],
        now: float,
    ) -> list[Reply]:
        """An upstream answered ``key``: cache it and build every waiter's reply."""
        entry = self.cache.store(key, response, size, now)
        if entry is not None:
            return [
                self._from_entry(w.query, entry, now, w.limit, w.wire_key, "upstream")
                for w in waiters
            ]
        rcode = response.rcode()
        return [
            self._respond(
                w.query,
                rcode,
                response.answer,
                response.authority,
                response.additional,
                w.limit,
                "upstream",
            )
            for w in waiters
        ]

    def failed(self, key: CacheKey, waiters: Sequence[Pending], now: float) -> list[Reply]:
        """Every upstream failed for ``key``: a stale answer (RFC 8767) or SERVFAIL."""
        entry = self.cache.stale(key, now)
        if entry is not None:
            stale_ttl = self.cache.settings.stale_ttl
            return [
                self._from_entry(w.query, entry, now, w.limit, None, "stale", stale_ttl)
                for w in waiters
            ]
        return [
            self._respond(w.query, dns.rcode.SERVFAIL, (), (), (), w.limit, "servfail")
            for w in waiters
        ]

    # ------------------------------------------------------------------ building replies

    def _from_entry(
        self,
        query: dns.message.Message,
        entry: CacheEntry,
        now: float,
        limit: int,
        wire_key: bytes | None,
        source: str,
        stale_ttl: int | None = None,
    ) -> Reply:
        answer, authority, additional = entry.sections(now, stale_ttl)
        reply = self._respond(query, entry.rcode, answer, authority, additional, limit, source)
        if wire_key is not None and stale_ttl is None and not (reply.wire[2] & 0x02):
            age = int(now - entry.stored)  # what entry.sections() took off every TTL
            offsets = ttl_offsets(reply.wire)
            ttls = [int.from_bytes(reply.wire[o : o + 4], "big") + age for o in offsets]
            if entry.expires > now:
                self._keep(wire_key, reply, entry.expires, True, (entry.stored, age, offsets, ttls))
        return reply

    def _keep(
        self,
        wire_key: bytes,
        reply: Reply,
        until: float,
        recursive: bool,
        aging: tuple[float, int, list[int], list[int]] | None = None,
    ) -> None:
        label = (reply.qtype, reply.rcode, "cache" if recursive else "zone")
        self.wire.put(wire_key, reply.wire[2:], until, recursive, label, aging)

    def _respond(
        self,
        query: dns.message.Message,
        rcode: int,
        answer: Sequence[dns.rrset.RRset],
        authority: Sequence[dns.rrset.RRset],
        additional: Sequence[dns.rrset.RRset],
        limit: int,
        source: str,
        aa: bool = False,
    ) -> Reply:
        response = dns.message.make_response(
            query,
            recursion_available=self.plan is not None,
            our_payload=self.settings.udp_payload,
        )
        response.set_rcode(dns.rcode.Rcode.make(rcode))
        if aa:
            response.flags |= AA
        response.answer = list(answer)
        response.authority = list(authority)
        response.additional = list(additional)
        try:
            wire = response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer = []
            response.authority = []
            response.additional = []
            response.flags |= TC
            wire = response.to_wire(max_size=limit)
        q = query.question[0] if query.question else None
        qtype = _type_text(q.rdtype) if q is not None else ""
        rcode_text = dns.rcode.to_text(dns.rcode.Rcode.make(rcode))
        self._count(qtype, rcode_text, source)
        return Reply(wire, q.name.to_text() if q is not None else "", qtype, rcode_text, source)

    def _refuse_header(self, packet: bytes, rcode: int, source: str) -> Reply:
        rcode_text = dns.rcode.to_text(dns.rcode.Rcode.make(rcode))
        self._count("", rcode_text, source)
        return Reply(header_reply(packet, rcode), "", "", rcode_text, source)

    def _slip(self, packet: bytes) -> Reply:
        """A truncated, empty reply (RRL's slip): a real client retries over TCP."""
        try:
            query = dns.message.from_wire(packet)
        except _PARSE_ERRORS:
            return Reply(b"", source="slip")
        response = dns.message.make_response(query, our_payload=self.settings.udp_payload)
        response.flags |= TC
        return Reply(response.to_wire(), source="slip")
