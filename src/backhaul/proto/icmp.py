"""ICMP and ICMPv6 codec, sans-IO: echo messages, errors with their quoted datagram.

Bytes in, values out; no sockets, no clocks. Used by ``backhaul ping`` and ``backhaul trace``
(``tools/ping.py``, ``tools/trace.py``), which own the sockets.

- Echo request/reply: RFC 792 (IPv4), RFC 4443 section 4 (IPv6).
- Errors that quote the datagram that caused them: destination unreachable, time exceeded,
  parameter problem (RFC 792; RFC 4443 section 3), packet too big (RFC 4443 section 3.2) and
  fragmentation needed with the next-hop MTU (RFC 1191 section 4). The quote is parsed as far
  as it goes: the IP header, then the first 8 bytes of UDP, TCP or ICMP echo, which is all
  RFC 792 guarantees and all a probe needs to be recognised.
- The Internet checksum (RFC 1071) and the UDP checksum with its pseudo-header (RFC 768,
  RFC 8200 section 8.1), plus the two tricks Paris traceroute needs to keep a flow identifier
  constant while still telling probes apart: echo id/seq pairs whose checksum never changes,
  and a UDP payload chosen so the UDP checksum takes a wanted value.

Every parser either returns a value or raises :class:`backhaul.errors.RemoteProtocolError`
(a :class:`~backhaul.errors.ProtocolError`); encoders raise
:class:`~backhaul.errors.LocalProtocolError` for values that cannot go on the wire.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Literal

from backhaul.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ICMP4",
    "ICMP6",
    "PROTO_ICMP",
    "PROTO_ICMPV6",
    "PROTO_TCP",
    "PROTO_UDP",
    "Echo",
    "EchoHeader",
    "IPv4Header",
    "IPv6Header",
    "IcmpError",
    "IcmpMessage",
    "IcmpOther",
    "QuotedDatagram",
    "TcpHeader",
    "UdpHeader",
    "encode_echo",
    "encode_udp",
    "internet_checksum",
    "paris_echo_ids",
    "paris_udp_payload",
    "parse_icmp",
    "parse_ipv4",
    "parse_ipv6",
    "udp_checksum",
]

Family = Literal[4, 6]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58


class ICMP4:
    """ICMP (IPv4) type numbers, RFC 792."""

    ECHO_REPLY = 0
    DEST_UNREACH = 3
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11
    PARAM_PROBLEM = 12
    # destination unreachable codes
    NET_UNREACH = 0
    HOST_UNREACH = 1
    PROTO_UNREACH = 2
    PORT_UNREACH = 3
    FRAG_NEEDED = 4


class ICMP6:
    """ICMPv6 type numbers, RFC 4443."""

    DEST_UNREACH = 1
    PACKET_TOO_BIG = 2
    TIME_EXCEEDED = 3
    PARAM_PROBLEM = 4
    ECHO_REQUEST = 128
    ECHO_REPLY = 129
    # destination unreachable codes
    NO_ROUTE = 0
    ADMIN_PROHIBITED = 1
    ADDR_UNREACH = 3
    PORT_UNREACH = 4


_ECHO_TYPES = {
    4: (ICMP4.ECHO_REQUEST, ICMP4.ECHO_REPLY),
    6: (ICMP6.ECHO_REQUEST, ICMP6.ECHO_REPLY),
}
_ERROR_KINDS: dict[tuple[int, int], str] = {
    (4, ICMP4.DEST_UNREACH): "unreachable",
    (4, ICMP4.TIME_EXCEEDED): "time-exceeded",
    (4, ICMP4.PARAM_PROBLEM): "parameter-problem",
    (6, ICMP6.DEST_UNREACH): "unreachable",
    (6, ICMP6.PACKET_TOO_BIG): "packet-too-big",
    (6, ICMP6.TIME_EXCEEDED): "time-exceeded",
    (6, ICMP6.PARAM_PROBLEM): "parameter-problem",
}


# --------------------------------------------------------------------------- checksums


def _ones_sum(data: bytes, initial: int = 0) -> int:
    """One's complement sum of 16-bit big-endian words (odd tail padded with zero)."""
    if len(data) % 2:
        data += b"\x00"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = initial + sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes) -> int:
    """The Internet checksum of ``data`` (RFC 1071): complement of the one's complement sum.

    Checking a received message: the checksum over the whole message, checksum field
    included, is 0.
    """
    return ~_ones_sum(data) & 0xFFFF


def _pseudo_header(source: IPAddress, destination: IPAddress, protocol: int, length: int) -> bytes:
    if source.version != destination.version:
        raise LocalProtocolError("source and destination are of different IP versions")
    if source.version == 4:
        return source.packed + destination.packed + struct.pack("!BBH", 0, protocol, length)
    return source.packed + destination.packed + struct.pack("!IxxxB", length, protocol)


def _check_port(port: int, what: str) -> None:
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"{what} {port} is not a port number (0-65535)")


def udp_checksum(
    source: IPAddress, destination: IPAddress, sport: int, dport: int, payload: bytes
) -> int:
    """The UDP checksum as sent on the wire (RFC 768; a computed 0 is sent as 0xFFFF)."""
    _check_port(sport, "source port")
    _check_port(dport, "destination port")
    length = 8 + len(payload)
    if length > 0xFFFF:
        raise LocalProtocolError(f"UDP datagram of {length} bytes is over 65535")
    header = struct.pack("!HHHH", sport, dport, length, 0)
    pseudo = _pseudo_header(source, destination, PROTO_UDP, length)
    value = ~_ones_sum(pseudo + header + payload) & 0xFFFF
    return value or 0xFFFF


def encode_udp(
    source: IPAddress, destination: IPAddress, sport: int, dport: int, payload: bytes
) -> bytes:
    """A UDP header and payload with a correct checksum, ready for a raw socket."""
    checksum = udp_checksum(source, destination, sport, dport, payload)
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), checksum) + payload


def paris_udp_payload(
    source: IPAddress,
    destination: IPAddress,
    sport: int,
    dport: int,
    length: int,
    checksum: int,
) -> bytes:
    """A UDP payload of ``length`` bytes whose datagram has the UDP checksum ``checksum``.

    Paris traceroute keeps the 5-tuple fixed (so per-flow load balancers send every probe the
    same way) and tells probes apart by their UDP checksum, which routers quote back in ICMP
    errors. The first two payload bytes are solved for; the rest are zero.
    """
    if length < 2:
        raise LocalProtocolError("a Paris UDP probe needs at least 2 payload bytes")
    if not 1 <= checksum <= 0xFFFE:
        raise LocalProtocolError(f"checksum {checksum} cannot be forced (use 1-65534)")
    rest = bytes(length - 2)
    header = struct.pack("!HHHH", sport, dport, 8 + length, 0)
    pseudo = _pseudo_header(source, destination, PROTO_UDP, 8 + length)
    partial = _ones_sum(pseudo + header + b"\x00\x00" + rest)
    # want: ~(partial + word) == checksum, i.e. partial + word == ~checksum (one's complement)
    word = _ones_sum(struct.pack("!HH", ~checksum & 0xFFFF, ~partial & 0xFFFF))
    return struct.pack("!H", word) + rest


# --------------------------------------------------------------------------- IP headers


@dataclass(frozen=True, slots=True)
class IPv4Header:
    """The fields of an IPv4 header (RFC 791) that the tools use."""

    header_length: int
    tos: int
    total_length: int
    identification: int
    dont_fragment: bool
    more_fragments: bool
    fragment_offset: int
    ttl: int
    protocol: int
    checksum: int
    source: ipaddress.IPv4Address
    destination: ipaddress.IPv4Address


@dataclass(frozen=True, slots=True)
class IPv6Header:
    """The fixed IPv6 header (RFC 8200 section 3)."""

    traffic_class: int
    flow_label: int
    payload_length: int
    next_header: int
    hop_limit: int
    source: ipaddress.IPv6Address
    destination: ipaddress.IPv6Address


def parse_ipv4(data: bytes, *, quoted: bool = False) -> tuple[IPv4Header, bytes]:
    """Split an IPv4 packet into its header and payload.

    ``quoted=True`` is for a datagram quoted inside an ICMP error: it is usually cut short,
    so the payload is whatever follows the header rather than ``total_length`` bytes.
    """
    if len(data) < 20:
        raise RemoteProtocolError(f"IPv4 header needs 20 bytes, got {len(data)}", rfc="RFC 791")
    ver_ihl, tos, total, ident, frag, ttl, proto, csum = struct.unpack_from("!BBHHHBBH", data)
    if ver_ihl >> 4 != 4:
        raise RemoteProtocolError(f"IP version {ver_ihl >> 4} where 4 was expected", rfc="RFC 791")
    hlen = (ver_ihl & 0x0F) * 4
    if hlen < 20:
        raise RemoteProtocolError(f"IPv4 header length {hlen} is below 20", rfc="RFC 791")
    if len(data) < hlen:
        raise RemoteProtocolError(
            f"IPv4 header says {hlen} bytes, only {len(data)} present", rfc="RFC 791"
        )
    if total < hlen:
        raise RemoteProtocolError(
            f"IPv4 total length {total} is below the header length {hlen}", rfc="RFC 791"
        )
    if quoted:
        payload = data[hlen:]
    else:
        if total > len(data):
            raise RemoteProtocolError(
                f"IPv4 total length {total} but {len(data)} bytes received", rfc="RFC 791"
            )
        payload = data[hlen:total]
    header = IPv4Header(
        header_length=hlen,
        tos=tos,
        total_length=total,
        identification=ident,
        dont_fragment=bool(frag & 0x4000),
        more_fragments=bool(frag & 0x2000),
        fragment_offset=(frag & 0x1FFF) * 8,
        ttl=ttl,
        protocol=proto,
        checksum=csum,
        source=ipaddress.IPv4Address(data[12:16]),
        destination=ipaddress.IPv4Address(data[16:20]),
    )
    return header, payload


def parse_ipv6(data: bytes, *, quoted: bool = False) -> tuple[IPv6Header, bytes]:
    """Split an IPv6 packet into its fixed header and the rest (extension headers included)."""
    if len(data) < 40:
        raise RemoteProtocolError(f"IPv6 header needs 40 bytes, got {len(data)}", rfc="RFC 8200")
    first, plen, nxt, hops = struct.unpack_from("!IHBB", data)
    if first >> 28 != 6:
        raise RemoteProtocolError(f"IP version {first >> 28} where 6 was expected", rfc="RFC 8200")
    rest = data[40:]
    if not quoted:
        if plen > len(rest):
            raise RemoteProtocolError(
                f"IPv6 payload length {plen} but {len(rest)} bytes received", rfc="RFC 8200"
            )
        rest = rest[:plen]
    header = IPv6Header(
        traffic_class=(first >> 20) & 0xFF,
        flow_label=first & 0xFFFFF,
        payload_length=plen,
        next_header=nxt,
        hop_limit=hops,
        source=ipaddress.IPv6Address(data[8:24]),
        destination=ipaddress.IPv6Address(data[24:40]),
    )
    return header, rest


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class UdpHeader:
    source_port: int
    destination_port: int
    length: int
    checksum: int


@dataclass(frozen=True, slots=True)
class TcpHeader:
    """The first 8 bytes of a TCP header: all an ICMP error is sure to quote."""

    source_port: int
    destination_port: int
    sequence: int


@dataclass(frozen=True, slots=True)
class EchoHeader:
    """The header of a quoted ICMP/ICMPv6 echo request."""

    type: int
    code: int
    checksum: int
    ident: int
    seq: int


@dataclass(frozen=True, slots=True)
class QuotedDatagram:
    """The original datagram quoted in an ICMP error (the probe that caused it).

    ``transport`` is ``None`` when the quote stops before 8 transport bytes or the protocol
    is one the tools never send.
    """

    family: Family
    source: IPAddress
    destination: IPAddress
    protocol: int
    identification: int | None
    transport: UdpHeader | TcpHeader | EchoHeader | None


@dataclass(frozen=True, slots=True)
class Echo:
    """An echo request or reply."""

    family: Family
    is_reply: bool
    code: int
    ident: int
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP error about a datagram we sent.

    ``kind`` is one of ``unreachable``, ``time-exceeded``, ``parameter-problem``,
    ``packet-too-big``; ``mtu`` is the next-hop MTU for fragmentation needed (IPv4, code 4)
    and packet too big (IPv6), else ``None``.
    """

    family: Family
    type: int
    code: int
    kind: str
    quoted: QuotedDatagram
    mtu: int | None = None

    def describe(self) -> str:
        """A human phrase like iputils prints (``Time to live exceeded``)."""
        return describe_error(self.family, self.type, self.code, self.mtu)


@dataclass(frozen=True, slots=True)
class IcmpOther:
    """Any other ICMP message (router advertisements, neighbour discovery, ...)."""

    family: Family
    type: int
    code: int


IcmpMessage = Echo | IcmpError | IcmpOther

_UNREACH4 = {
    0: "Destination Net Unreachable",
    1: "Destination Host Unreachable",
    2: "Destination Protocol Unreachable",
    3: "Destination Port Unreachable",
    4: "Frag needed and DF set",
    5: "Source Route Failed",
    6: "Destination Net Unknown",
    7: "Destination Host Unknown",
    9: "Destination Net Prohibited",
    10: "Destination Host Prohibited",
    13: "Communication prohibited by filter",
}
_UNREACH6 = {
    0: "No route",
    1: "Administratively prohibited",
    2: "Beyond scope of source address",
    3: "Address unreachable",
    4: "Port unreachable",
    5: "Source address failed ingress/egress policy",
    6: "Reject route to destination",
}


def describe_error(family: int, type_: int, code: int, mtu: int | None = None) -> str:
    """A human phrase for an ICMP error type/code."""
    if family == 4:
        if type_ == ICMP4.TIME_EXCEEDED:
            return "Time to live exceeded" if code == 0 else "Frag reassembly time exceeded"
        if type_ == ICMP4.DEST_UNREACH:
            text = _UNREACH4.get(code, f"Destination unreachable, code {code}")
            return f"{text} (mtu = {mtu})" if code == ICMP4.FRAG_NEEDED else text
        if type_ == ICMP4.PARAM_PROBLEM:
            return "Parameter problem"
    else:
        if type_ == ICMP6.TIME_EXCEEDED:
            return "Time exceeded: Hop limit" if code == 0 else "Time exceeded: Reassembly"
        if type_ == ICMP6.DEST_UNREACH:
            return f"Destination unreachable: {_UNREACH6.get(code, f'code {code}')}"
        if type_ == ICMP6.PACKET_TOO_BIG:
            return f"Packet too big: mtu={mtu}"
        if type_ == ICMP6.PARAM_PROBLEM:
            return "Parameter problem"
    return f"ICMP type {type_} code {code}"


def encode_echo(
    family: Family,
    ident: int,
    seq: int,
    payload: bytes = b"",
    *,
    reply: bool = False,
    source: IPAddress | None = None,
    destination: IPAddress | None = None,
) -> bytes:
    """An echo request (or reply) message.

    IPv4: the checksum is filled in. IPv6: the checksum covers a pseudo-header, so it is only
    filled in when ``source`` and ``destination`` are given; otherwise it is left 0 for the
    kernel, which computes it on raw ICMPv6 and ping sockets (RFC 3542 section 3.1).
    """
    if not 0 <= ident <= 0xFFFF or not 0 <= seq <= 0xFFFF:
        raise LocalProtocolError(f"echo id {ident} / seq {seq} must each fit 16 bits")
    if family not in (4, 6):
        raise LocalProtocolError(f"IP family {family} is not 4 or 6")
    type_ = _ECHO_TYPES[family][1 if reply else 0]
    body = struct.pack("!BBHHH", type_, 0, 0, ident, seq) + payload
    if family == 4:
        checksum = internet_checksum(body)
    elif source is not None and destination is not None:
        pseudo = _pseudo_header(source, destination, PROTO_ICMPV6, len(body))
        checksum = ~_ones_sum(pseudo + body) & 0xFFFF
    else:
        return body
    return body[:2] + struct.pack("!H", checksum) + body[4:]


def paris_echo_ids(base_ident: int, base_seq: int, index: int) -> tuple[int, int]:
    """The (ident, seq) of Paris probe number ``index``: seq counts up, ident counts down.

    Their sum stays the same, so with a fixed payload the echo checksum (part of the flow
    identifier per-flow load balancers hash for ICMP) is identical for every probe while each
    probe is still told apart by its seq.
    """
    ident, seq = base_ident - index, base_seq + index
    if index < 0 or ident < 0 or seq > 0xFFFF:
        raise LocalProtocolError(
            f"Paris probe {index} does not fit ident {base_ident} / seq {base_seq}"
        )
    return ident, seq


def _parse_transport(
    protocol: int, family: Family, data: bytes
) -> UdpHeader | TcpHeader | EchoHeader | None:
    if len(data) < 8:
        return None
    if protocol == PROTO_UDP:
        return UdpHeader(*struct.unpack_from("!HHHH", data))
    if protocol == PROTO_TCP:
        return TcpHeader(*struct.unpack_from("!HHI", data))
    if (family, protocol) in ((4, PROTO_ICMP), (6, PROTO_ICMPV6)):
        type_, code, checksum, ident, seq = struct.unpack_from("!BBHHH", data)
        if type_ == _ECHO_TYPES[family][0]:
            return EchoHeader(type_, code, checksum, ident, seq)
    return None


def _parse_quoted(family: Family, data: bytes) -> QuotedDatagram:
    if family == 4:
        ip4, rest = parse_ipv4(data, quoted=True)
        return QuotedDatagram(
            family=4,
            source=ip4.source,
            destination=ip4.destination,
            protocol=ip4.protocol,
            identification=ip4.identification,
            transport=_parse_transport(ip4.protocol, 4, rest),
        )
    ip6, rest = parse_ipv6(data, quoted=True)
    return QuotedDatagram(
        family=6,
        source=ip6.source,
        destination=ip6.destination,
        protocol=ip6.next_header,
        identification=None,
        transport=_parse_transport(ip6.next_header, 6, rest),
    )


def parse_icmp(family: Family, data: bytes, *, verify_checksum: bool = True) -> IcmpMessage:
    """Parse one ICMP (``family=4``) or ICMPv6 (``family=6``) message, without the IP header.

    ``verify_checksum`` applies to IPv4 only: the ICMPv6 checksum covers a pseudo-header the
    caller does not see, and the kernel has already checked it before a socket gets the
    message.
    """
    if family not in (4, 6):
        raise LocalProtocolError(f"IP family {family} is not 4 or 6")
    rfc = "RFC 792" if family == 4 else "RFC 4443"
    if len(data) < 8:
        raise RemoteProtocolError(f"ICMP message needs 8 bytes, got {len(data)}", rfc=rfc)
    if family == 4 and verify_checksum and _ones_sum(data) != 0xFFFF:
        raise RemoteProtocolError("ICMP checksum does not match", rfc="RFC 792")
    type_, code = data[0], data[1]
    request, reply = _ECHO_TYPES[family]
    if type_ in (request, reply):
        ident, seq = struct.unpack_from("!HH", data, 4)
        return Echo(family, type_ == reply, code, ident, seq, bytes(data[8:]))
    kind = _ERROR_KINDS.get((family, type_))
    if kind is None:
        return IcmpOther(family, type_, code)
    mtu: int | None = None
    if family == 4 and type_ == ICMP4.DEST_UNREACH and code == ICMP4.FRAG_NEEDED:
        mtu = struct.unpack_from("!H", data, 6)[0]
    elif family == 6 and type_ == ICMP6.PACKET_TOO_BIG:
        mtu = struct.unpack_from("!I", data, 4)[0]
    return IcmpError(family, type_, code, kind, _parse_quoted(family, data[8:]), mtu)
