"""Authoritative DNS data and the answers it gives.

Data comes from RFC 1035 zone files (dnspython's zone reader), ``/etc/hosts``-format files,
records written inline in the config (zone-file lines) and the names the server is local
for (dnsmasq's ``--local=/NAME/``: a zone with only a synthesised SOA and NS). A/AAAA
records get automatic PTR records unless turned off.

:meth:`Authority.lookup` follows RFC 1034 §4.3.2 for the names we hold: an exact node or a
wildcard (RFC 4592: ``*.<closest encloser>``, never across an existing name or an empty
non-terminal), CNAMEs chased within our zones, NXDOMAIN or NODATA with the zone's SOA in the
authority section and the negative TTL of RFC 2308 §3 (the smaller of the SOA's TTL and
MINIMUM), an ANY query answered with one RRset (RFC 8482 §4.1), and the addresses of MX,
SRV and NS targets we hold in the additional section. Delegations below an apex are not
supported: an NS set below the apex is served as plain data.

Pure: no I/O; the caller reads files and passes their text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.node
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.reversename
import dns.rrset
import dns.zone

from backhaul.errors import BackhaulError

__all__ = [
    "Answer",
    "Authority",
    "HostsEntry",
    "ZoneDataError",
    "ZoneSource",
    "build_authority",
    "parse_hosts",
    "parse_zone",
]

IN = dns.rdataclass.IN
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
CNAME = dns.rdatatype.CNAME
SOA = dns.rdatatype.SOA
NS = dns.rdatatype.NS
MX = dns.rdatatype.MX
SRV = dns.rdatatype.SRV
PTR = dns.rdatatype.PTR
ANY = dns.rdatatype.ANY
RRSIG = dns.rdatatype.RRSIG

#: CNAME links followed within our zones before the answer stops (loops end here too).
MAX_CHAIN = 8
#: The synthesised SOA of a local domain or a hosts-only name: refresh, retry, expire.
_SOA_TIMERS = "3600 600 86400"


class ZoneDataError(BackhaulError):
    """A zone file, hosts file or inline record that cannot be read; ``source`` names it
    and ``line`` is the 1-based line when known."""

    def __init__(self, source: str, message: str, line: int | None = None) -> None:
        self.source = source
        self.line = line
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class HostsEntry:
    """One address and the names a hosts file gives it."""

    address: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class ZoneSource:
    """What one zone is made of: zone-file text, inline record lines, or neither (a local
    domain with only the synthesised SOA and NS)."""

    origin: str | None
    text: str = ""
    source: str = "<inline>"
    records: tuple[str, ...] = ()


@dataclass
class Answer:
    """An authoritative answer: RCODE and the three sections (dnspython RRsets)."""

    rcode: int
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    #: The smallest TTL in the answer (or the negative TTL): how long a copy stays right.
    ttl: int = 0


def _name(text: str, source: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text.strip().rstrip(".") + ".")
    except dns.exception.DNSException as exc:
        raise ZoneDataError(source, f"{text!r} is not a domain name ({exc})") from exc


def parse_zone(spec: ZoneSource, default_ttl: int = 3600) -> dns.zone.Zone:
    """A zone (absolute names) from zone-file text and inline lines; a missing SOA or NS
    at the apex is synthesised (as for a local domain)."""
    origin = _name(spec.origin, spec.source) if spec.origin else None
    text = spec.text
    shift = 0
    if origin is not None and "$TTL" not in text:
        text = f"$TTL {default_ttl}\n" + text
        shift = 1
    file_lines = text.count("\n") + 1
    if spec.records:
        text = text + "\n" + "\n".join(spec.records) + "\n"
    try:
        zone = dns.zone.from_text(
            text or "\n",
            origin=origin,
            relativize=False,
            check_origin=False,
            filename=spec.source,
        )
    except dns.exception.SyntaxError as exc:
        line = _syntax_line(str(exc))
        message = _strip_location(str(exc))
        if line is not None and spec.records and line >= file_lines:
            for index, record in enumerate(spec.records):
                try:  # which record it was (the reader's line number can be one past it)
                    dns.zone.from_text(
                        f"$TTL {default_ttl}\n{record}\n",
                        origin=zone_origin(spec, origin),
                        relativize=False,
                        check_origin=False,
                    )
                except dns.exception.DNSException as one:
                    raise ZoneDataError(
                        f"records[{index}]", f"{record!r}: {_strip_location(str(one))}"
                    ) from exc
        raise ZoneDataError(spec.source, message, line - shift if line else None) from exc
    except dns.zone.UnknownOrigin as exc:
        raise ZoneDataError(
            spec.source, "no origin: set the zone's origin or add $ORIGIN to the file"
        ) from exc
    except dns.exception.DNSException as exc:
        raise ZoneDataError(spec.source, str(exc) or type(exc).__name__) from exc
    if zone.origin is None:
        raise ZoneDataError(spec.source, "no origin: set the zone's origin or add $ORIGIN")
    apex = zone.origin
    if zone.get_rdataset(apex, SOA) is None:
        soa = dns.rdata.from_text(
            IN, SOA, f"ns.{apex} hostmaster.{apex} 1 {_SOA_TIMERS} {min(default_ttl, 3600)}"
        )
        zone.find_rdataset(apex, SOA, create=True).add(soa, min(default_ttl, 3600))
    if zone.get_rdataset(apex, NS) is None:
        zone.find_rdataset(apex, NS, create=True).add(
            dns.rdata.from_text(IN, NS, f"ns.{apex}"), default_ttl
        )
    return zone


def zone_origin(spec: ZoneSource, origin: dns.name.Name | None) -> dns.name.Name | None:
    """The origin of ``spec``: the configured one, else the text's first $ORIGIN."""
    if origin is not None:
        return origin
    for line in spec.text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "$ORIGIN":
            return _name(words[1], spec.source)
    return None


def _syntax_line(message: str) -> int | None:
    # dnspython: "<file>:<line>: <message>"
    parts = message.split(":", 2)
    if len(parts) == 3 and parts[1].strip().isdigit():
        return int(parts[1])
    return None


def _strip_location(message: str) -> str:
    parts = message.split(":", 2)
    if len(parts) == 3 and parts[1].strip().isdigit():
        return parts[2].strip()
    return message


def parse_hosts(text: str, source: str = "<hosts>") -> list[HostsEntry]:
    """The entries of an ``/etc/hosts``-format text: address, then names; ``#`` comments."""
    out: list[HostsEntry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) < 2:
            raise ZoneDataError(source, f"{raw.strip()!r}: expected an address and names", number)
        try:
            address = ipaddress.ip_address(words[0].split("%", 1)[0])
        except ValueError as exc:
            raise ZoneDataError(
                source, f"{words[0]!r} is not an IPv4 or IPv6 address", number
            ) from exc
        for word in words[1:]:
            try:
                dns.name.from_text(word)
            except dns.exception.DNSException as exc:
                raise ZoneDataError(source, f"{word!r} is not a host name", number) from exc
        out.append(HostsEntry(str(address), tuple(words[1:])))
    return out


class _Zone:
    """One zone and the facts lookups need: every existing name with its ancestors (so an
    empty non-terminal is known to exist), the SOA and the negative TTL."""

    __slots__ = ("names", "negative", "origin", "soa", "zone")

    def __init__(self, zone: dns.zone.Zone) -> None:
        assert zone.origin is not None
        self.zone = zone
        self.origin: dns.name.Name = zone.origin
        names: set[dns.name.Name] = set()
        for name in zone.nodes:
            while name not in names and name.is_subdomain(self.origin):
                names.add(name)
                if name == self.origin:
                    break
                name = name.parent()
        self.names = names
        soa_set = zone.get_rdataset(self.origin, SOA)
        assert soa_set is not None
        soa = soa_set[0]
        self.negative = min(soa_set.ttl, soa.minimum)  # RFC 2308 §3
        self.soa = dns.rrset.from_rdata_list(self.origin, self.negative, [soa])

    def node(self, name: dns.name.Name) -> tuple[dns.node.Node | None, bool]:
        """``(node, exists)``: the node at ``name`` or the wildcard that covers it, and
        whether the name exists at all (an empty non-terminal exists without a node)."""
        node = self.zone.nodes.get(name)
        if node is not None:
            return node, True
        if name in self.names:
            return None, True
        encloser = name.parent()
        while encloser not in self.names:
            encloser = encloser.parent()
        wild = self.zone.nodes.get(dns.name.Name((b"*", *encloser.labels)))
        return wild, wild is not None


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
    rrset.update(rdataset)  # type: ignore[no-untyped-call]
    return rrset


class Authority:
    """Every zone we answer for, and the automatic reverse records."""

    def __init__(
        self,
        zones: Iterable[dns.zone.Zone],
        reverse: dict[dns.name.Name, dns.rrset.RRset] | None = None,
    ) -> None:
        self.zones: dict[dns.name.Name, _Zone] = {}
        for zone in zones:
            entry = _Zone(zone)
            self.zones[entry.origin] = entry
        self.reverse = reverse or {}
        self._depths = sorted({len(o) for o in self.zones}, reverse=True)

    def origins(self) -> list[dns.name.Name]:
        return list(self.zones)

    def find_zone(self, name: dns.name.Name) -> _Zone | None:
        """The zone holding ``name`` (the deepest origin that is a suffix of it)."""
        labels = name.labels
        size = len(labels)
        for depth in self._depths:
            if depth <= size:
                zone = self.zones.get(dns.name.Name(labels[size - depth :]))
                if zone is not None:
                    return zone
        return None

    def holds(self, name: dns.name.Name) -> bool:
        """Whether ``name`` is ours to answer (a zone covers it, or an automatic PTR)."""
        return name in self.reverse or self.find_zone(name) is not None

    def lookup(self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType) -> Answer | None:
        """The authoritative answer for ``qname``/``qtype`` (class IN), or None when no
        zone of ours covers the name."""
        zone = self.find_zone(qname)
        auto = self.reverse.get(qname)
        if auto is not None and qtype in (PTR, ANY) and (zone is None or not zone.node(qname)[1]):
            return Answer(dns.rcode.NOERROR, [auto], ttl=auto.ttl)
        if zone is None:
            return None
        result = Answer(dns.rcode.NOERROR)
        name = qname
        for _ in range(MAX_CHAIN):
            node, exists = zone.node(name)
            if node is None:
                if not exists:
                    result.rcode = dns.rcode.NXDOMAIN  # also after a CNAME (RFC 6604 §2.1)
                result.authority.append(zone.soa)
                break
            if qtype == ANY:  # RFC 8482 §4.1: one RRset, the client asks again if it needs more
                found = [rds for rds in node.rdatasets if rds.rdtype != RRSIG]
                result.answer.append(_rrset(name, found[0]))
                break
            rds = node.get_rdataset(IN, qtype)
            if rds is not None:
                result.answer.append(_rrset(name, rds))
                break
            cname = node.get_rdataset(IN, CNAME) if qtype != CNAME else None
            if cname is None:
                result.authority.append(zone.soa)  # NODATA
                break
            result.answer.append(_rrset(name, cname))
            name = cname[0].target
            next_zone = self.find_zone(name)
            if next_zone is None:
                break  # outside our data: the client's resolver follows it
            zone = next_zone
        self._add_glue(result)
        ttls = [r.ttl for r in (*result.answer, *result.authority)]
        result.ttl = min(ttls) if ttls else 0
        return result

    def _add_glue(self, result: Answer) -> None:
        seen: set[dns.name.Name] = set()
        for rrset in result.answer:
            for rdata in rrset:
                if rrset.rdtype == MX:
                    target = rdata.exchange
                elif rrset.rdtype in (SRV, NS):
                    target = rdata.target
                else:
                    continue
                if target in seen:
                    continue
                seen.add(target)
                zone = self.find_zone(target)
                node = zone.zone.nodes.get(target) if zone is not None else None
                if node is None:
                    continue
                for rdtype in (A, AAAA):
                    rds = node.get_rdataset(IN, rdtype)
                    if rds is not None:
                        result.additional.append(_rrset(target, rds))


def _add_hosts(
    zones: dict[dns.name.Name, dns.zone.Zone],
    entries: Sequence[HostsEntry],
    ttl: int,
) -> None:
    depths = sorted({len(o) for o in zones}, reverse=True)
    for entry in entries:
        rdtype = AAAA if ":" in entry.address else A
        rdata = dns.rdata.from_text(IN, rdtype, entry.address)
        for text in entry.names:
            name = _name(text, "<hosts>")
            zone = None
            for depth in depths:
                if depth <= len(name):
                    zone = zones.get(dns.name.Name(name.labels[len(name) - depth :]))
                    if zone is not None:
                        break
            if zone is None:  # a name outside every zone: a small zone of its own
                zone = parse_zone(ZoneSource(origin=str(name)), default_ttl=ttl)
                assert zone.origin is not None
                zones[zone.origin] = zone
                depths = sorted({len(o) for o in zones}, reverse=True)
            rds = zone.find_rdataset(name, rdtype, create=True)
            rds.add(rdata, ttl)
            rds.update_ttl(ttl)


def _reverse_records(zones: Iterable[dns.zone.Zone]) -> dict[dns.name.Name, dns.rrset.RRset]:
    out: dict[dns.name.Name, dns.rrset.RRset] = {}
    for zone in zones:
        for name, node in zone.nodes.items():
            if name.labels and name.labels[0] == b"*":
                continue
            for rdtype in (A, AAAA):
                rds = node.get_rdataset(IN, rdtype)
                if rds is None:
                    continue
                for rdata in rds:
                    ptr = dns.reversename.from_address(rdata.address)
                    rrset = out.get(ptr)
                    if rrset is None:
                        rrset = out[ptr] = dns.rrset.RRset(ptr, IN, PTR)
                    rrset.add(dns.rdata.from_text(IN, PTR, name.to_text()), rds.ttl)
    return out


def build_authority(
    zones: Sequence[ZoneSource],
    hosts: Sequence[HostsEntry] = (),
    hosts_ttl: int = 0,
    auto_ptr: bool = True,
    default_ttl: int = 3600,
) -> Authority:
    """Every zone and hosts entry in one :class:`Authority`. Two sources with the same
    origin merge (a local domain and a zone file for it, say)."""
    parsed: dict[dns.name.Name, dns.zone.Zone] = {}
    for spec in zones:
        zone = parse_zone(spec, default_ttl)
        assert zone.origin is not None
        existing = parsed.get(zone.origin)
        if existing is None:
            parsed[zone.origin] = zone
            continue
        for name, node in zone.nodes.items():
            for rds in node.rdatasets:
                if rds.rdtype in (SOA, NS) and name == zone.origin and not spec.text:
                    continue  # a synthesised apex does not replace a real one
                target = existing.find_rdataset(name, rds.rdtype, rds.covers, create=True)
                if rds.rdtype == SOA:
                    target.clear()  # type: ignore[no-untyped-call]
                target.update(rds)  # type: ignore[no-untyped-call]
    _add_hosts(parsed, hosts, hosts_ttl)
    reverse = _reverse_records(parsed.values()) if auto_ptr else {}
    return Authority(parsed.values(), reverse)
