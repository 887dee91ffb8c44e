"""Frames decoded down to their transport header, sans-IO and without copies.

One function, :func:`decode`, reads a captured frame in place (``struct.unpack_from`` on the
capture buffer) through its link layer (Ethernet with 802.1Q/802.1ad tags, Linux cooked
SLL and SLL2, BSD loopback, raw IP), IPv4 or IPv6 (with extension headers) and TCP, UDP or
ICMP, and returns a :class:`Packet`: the protocol stack as names (``("eth", "ip", "tcp")``),
the addresses as raw bytes and the transport fields the analyses need. Lengths come from the
IP header, as Wireshark's do (Ethernet padding is not payload), and the captured part of the
payload is told apart from the declared part (a capture with a small snap length).

Application protocols are named by port, for the protocol hierarchy only (``http``,
``dns``, ``tls`` ...): a guess, never used to decide how a payload is parsed elsewhere.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from typing import NamedTuple

from backhaul.proto.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)

__all__ = [
    "TCP_ACK",
    "TCP_FIN",
    "TCP_PSH",
    "TCP_RST",
    "TCP_SYN",
    "Packet",
    "address_text",
    "decode",
    "decode_transport",
    "endpoint_text",
]

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

_U16 = struct.Struct("!H").unpack_from
_IPV4 = struct.Struct("!BxHHHxB2x4s4s").unpack_from
_PORTS = struct.Struct("!HH").unpack_from
_U32 = struct.Struct("!I").unpack_from
_TCP = struct.Struct("!HHIIBBH").unpack_from
_NULL_FAMILY_V6 = (24, 28, 30)
_IPV6_EXTENSIONS = (0, 43, 60, 51)  # hop-by-hop, routing, destination options, AH

_TCP_APPS = {80: "http", 8080: "http", 8000: "http", 443: "tls", 53: "dns", 22: "ssh"}
_UDP_APPS = {53: "dns", 5353: "mdns", 67: "dhcp", 68: "dhcp", 123: "ntp", 443: "quic"}


_STACKS: dict[tuple[tuple[str, ...], str, str], tuple[str, ...]] = {}


def _stack(base: tuple[str, ...], transport: str, app: str) -> tuple[str, ...]:
    """``base + (transport, app)`` (app may be empty), one shared tuple per distinct stack."""
    key = (base, transport, app)
    stack = _STACKS.get(key)
    if stack is None:
        stack = _STACKS[key] = (*base, transport, app) if app else (*base, transport)
    return stack


class Packet(NamedTuple):
    """A frame decoded as far as its transport header.

    ``family`` is 4 or 6 (0: not IP, only ``stack`` is set). ``proto`` is the IP protocol
    number (6 TCP, 17 UDP, 1/58 ICMP). For TCP, ``seq``/``ack``/``flags``/``window`` are the
    header's. ``payload_offset`` is where the transport payload starts in the buffer,
    ``payload_length`` its length by the IP header, ``payload_captured`` how much of it the
    capture holds. A frame that carries an IP fragment has ``fragment`` = (identification,
    offset in bytes, more fragments follow), its IP payload at ``payload_offset`` and no
    transport fields: :class:`~backhaul.proto.ip_fragments.Defragmenter` puts it together."""

    stack: tuple[str, ...]
    family: int
    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload_offset: int
    payload_length: int
    payload_captured: int
    fragment: tuple[int, int, bool] | None = None


_new = tuple.__new__


def _not_ip(stack: tuple[str, ...]) -> Packet:
    return Packet(stack, 0, b"", b"", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def decode(linktype: int, buf: bytes | memoryview, off: int, caplen: int) -> Packet:
    """Decode the frame ``buf[off:off + caplen]`` captured on ``linktype``."""
    end = off + caplen
    if linktype == LINKTYPE_ETHERNET:
        if caplen < 14:
            return _not_ip(("eth",))
        (ethertype,) = _U16(buf, off + 12)
        pos = off + 14
        stack: tuple[str, ...] = ("eth",)
        while ethertype in (0x8100, 0x88A8) and pos + 4 <= end:
            stack += ("vlan",)
            (ethertype,) = _U16(buf, pos + 2)
            pos += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        if caplen < 16:
            return _not_ip(("sll",))
        (ethertype,) = _U16(buf, off + 14)
        pos = off + 16
        stack = ("sll",)
    elif linktype == LINKTYPE_LINUX_SLL2:
        if caplen < 20:
            return _not_ip(("sll",))
        (ethertype,) = _U16(buf, off)
        pos = off + 20
        stack = ("sll",)
    elif linktype in (LINKTYPE_RAW, 12, 228, 229):
        if caplen < 1:
            return _not_ip(("raw",))
        version = buf[off] >> 4
        ethertype = 0x0800 if version == 4 else 0x86DD if version == 6 else 0
        pos = off
        stack = ("raw",)
    elif linktype == LINKTYPE_NULL:
        if caplen < 4:
            return _not_ip(("null",))
        family = int.from_bytes(buf[off : off + 4], "little")
        if family > 0xFFFF:
            family = int.from_bytes(buf[off : off + 4], "big")
        ethertype = 0x0800 if family == 2 else 0x86DD if family in _NULL_FAMILY_V6 else 0
        pos = off + 4
        stack = ("null",)
    else:
        return _not_ip((f"linktype{linktype}",))

    if ethertype == 0x0800:
        if pos + 20 > end:
            return _not_ip((*stack, "ip"))
        vihl, total, ident, frag, proto, src, dst = _IPV4(buf, pos)
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20:
            return _not_ip((*stack, "ip"))
        stack += ("ip",)
        l4 = pos + ihl
        l4_end = pos + total if total >= ihl else end
        if frag & 0x3FFF:  # a fragment (more follow, or not the first)
            fragment = (ident, (frag & 0x1FFF) * 8, bool(frag & 0x2000))
            return _fragment(stack, 4, src, dst, proto, l4, l4_end, end, fragment)
        family = 4
    elif ethertype == 0x86DD:
        if pos + 40 > end:
            return _not_ip((*stack, "ipv6"))
        (plen,) = _U16(buf, pos + 4)
        proto = buf[pos + 6]
        src = bytes(buf[pos + 8 : pos + 24])
        dst = bytes(buf[pos + 24 : pos + 40])
        stack += ("ipv6",)
        l4 = pos + 40
        l4_end = l4 + plen if plen else end
        while proto in _IPV6_EXTENSIONS and l4 + 8 <= end:
            length = (buf[l4 + 1] + 2) * 4 if proto == 51 else (buf[l4 + 1] + 1) * 8
            proto = buf[l4]
            l4 += length
        if proto == 44:  # fragment header (RFC 8200 section 4.5)
            if l4 + 8 > end:
                return Packet(stack, 6, src, dst, proto, 0, 0, 0, 0, 0, 0, l4, 0, 0)
            (frag_field,) = _U16(buf, l4 + 2)
            (ident,) = _U32(buf, l4 + 4)
            proto = buf[l4]
            l4 += 8
            if frag_field & 0xFFF9:  # an offset, or more fragments follow
                fragment = (ident, frag_field & 0xFFF8, bool(frag_field & 1))
                return _fragment(stack, 6, src, dst, proto, l4, l4_end, end, fragment)
        family = 6
    elif ethertype == 0x0806:
        return _not_ip((*stack, "arp"))
    else:
        return _not_ip((*stack, f"ethertype-0x{ethertype:04x}"))

    return decode_transport(stack, family, src, dst, proto, buf, l4, l4_end, end)


def _fragment(stack: tuple[str, ...], family: int, src: bytes, dst: bytes, proto: int, l4: int,
              l4_end: int, end: int, fragment: tuple[int, int, bool]) -> Packet:  # fmt: skip
    length = max(l4_end - l4, 0)
    captured = max(min(l4_end, end) - l4, 0)
    return Packet(
        (*stack, "fragment"), family, src, dst, proto, 0, 0, 0, 0, 0, 0, l4, length, captured,
        fragment,
    )  # fmt: skip


def decode_transport(
    stack: tuple[str, ...], family: int, src: bytes, dst: bytes, proto: int,
    buf: bytes | memoryview, l4: int, l4_end: int, end: int,
) -> Packet:  # fmt: skip
    """The transport part of :func:`decode`: the header at ``buf[l4]``, the IP payload
    ending at ``l4_end`` by the IP header and at ``end`` by the capture."""
    captured_end = min(l4_end, end)
    if proto == 6:
        if l4 + 20 > captured_end:
            return Packet(stack, family, src, dst, proto, 0, 0, 0, 0, 0, 0, l4, 0, 0)
        sport, dport, seq, ack, offx, flags, window = _TCP(buf, l4)
        poff = l4 + (offx >> 4) * 4
        plen = l4_end - poff
        if plen > 0:
            app = _TCP_APPS.get(dport) or _TCP_APPS.get(sport) or "data"
            stack = _stack(stack, "tcp", app)
            pcap_len = captured_end - poff
            if pcap_len < 0:
                pcap_len = 0
        else:
            stack = _stack(stack, "tcp", "")
            plen = pcap_len = 0
        return _new(Packet, (
            stack, family, src, dst, 6, sport, dport, seq, ack, flags | (offx & 1) << 8,
            window, poff, plen, pcap_len, None,
        ))  # fmt: skip
    if proto == 17:
        stack += ("udp",)
        if l4 + 8 > captured_end:
            return Packet(stack, family, src, dst, proto, 0, 0, 0, 0, 0, 0, l4, 0, 0)
        sport, dport = _PORTS(buf, l4)
        poff = l4 + 8
        plen = max(l4_end - poff, 0)
        if plen:
            app = _UDP_APPS.get(dport) or _UDP_APPS.get(sport) or "data"
            stack += (app,)
        return Packet(
            stack, family, src, dst, 17, sport, dport, 0, 0, 0, 0, poff, plen,
            max(captured_end - poff, 0),
        )  # fmt: skip
    name = {1: "icmp", 58: "icmpv6", 2: "igmp", 47: "gre", 50: "esp", 132: "sctp"}.get(
        proto, f"ipproto-{proto}"
    )
    stack += (name,)
    plen = max(l4_end - l4, 0)
    return Packet(stack, family, src, dst, proto, 0, 0, 0, 0, 0, 0, l4, plen, captured_end - l4)


@functools.lru_cache(maxsize=65536)
def address_text(raw: bytes) -> str:
    """An address as text: dotted quad for 4 bytes, RFC 5952 for 16."""
    return str(ipaddress.ip_address(raw))


def endpoint_text(raw: bytes, port: int) -> str:
    """``192.0.2.1:80`` or ``[2001:db8::1]:80`` (RFC 3986 brackets for IPv6)."""
    text = address_text(raw)
    return f"[{text}]:{port}" if len(raw) == 16 else f"{text}:{port}"
