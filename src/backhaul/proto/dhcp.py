"""DHCPv4 codec, sans-IO: the BOOTP message and its options (RFC 2131, RFC 2132).

Bytes in, a :class:`DhcpPacket` out, and back. No sockets, no clocks.

- The fixed part is RFC 2131 section 2 (236 bytes), then the magic cookie 99.130.83.99
  (RFC 2131 section 3; RFC 1497). A message shorter than 240 bytes, with another cookie, or
  longer than :data:`MAX_MESSAGE` is refused.
- Options are code/length/value (RFC 2132 section 2). An option that appears several times is
  one option whose values are concatenated (RFC 3396 section 7). Option 52 (overload, RFC 2132
  section 9.3) moves more options into the ``file`` and ``sname`` fields; they are read in the
  order the RFC gives (options, then file, then sname).
- Encoding splits values longer than 255 bytes into several options (RFC 3396) and pads the
  message to the 300 bytes BOOTP relays expect (RFC 1542 section 2.1).
- Value helpers for the options the server sends: addresses, 32-bit times, the domain search
  list (RFC 3397, DNS names via dnspython), classless static routes (RFC 3442), the client
  FQDN (RFC 4702) and the relay agent information option (RFC 3046).

Every decoder returns a value or raises :class:`DhcpFormatError` (a
:class:`~backhaul.errors.RemoteProtocolError`); encoders raise
:class:`~backhaul.errors.LocalProtocolError` for values that cannot go on the wire.
"""

from __future__ import annotations

import enum
import io
import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.name

from backhaul.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "BOOTREPLY",
    "BOOTREQUEST",
    "CLIENT_PORT",
    "FLAG_BROADCAST",
    "MAGIC_COOKIE",
    "MAX_MESSAGE",
    "MIN_MESSAGE",
    "SERVER_PORT",
    "DhcpFormatError",
    "DhcpPacket",
    "MessageType",
    "Opt",
    "decode",
    "decode_addresses",
    "decode_fqdn",
    "decode_u32",
    "encode",
    "encode_addresses",
    "encode_classless_routes",
    "encode_domain_search",
    "encode_u16",
    "encode_u32",
]

SERVER_PORT = 67
CLIENT_PORT = 68
BOOTREQUEST = 1
BOOTREPLY = 2
FLAG_BROADCAST = 0x8000
MAGIC_COOKIE = b"\x63\x82\x53\x63"
MIN_MESSAGE = 300  # RFC 1542 section 2.1: relays may drop shorter BOOTP messages
MAX_MESSAGE = 4096  # bound on what is decoded; a DHCP message fits one Ethernet frame
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes, RFC 2131 figure 1
_HEADER = _FIXED.size + len(MAGIC_COOKIE)


class DhcpFormatError(RemoteProtocolError):
    """A DHCP message that breaks RFC 2131/2132 (too short, bad cookie, option overrun...)."""

    def __init__(self, detail: str, rfc: str | None = "RFC 2131") -> None:
        super().__init__(detail, status_hint=400, rfc=rfc)


class MessageType(enum.IntEnum):
    """Option 53 values (RFC 2132 section 9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(enum.IntEnum):
    """The option codes this server reads or writes (RFC 2132 unless noted)."""

    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS_SERVERS = 6
    HOST_NAME = 12
    DOMAIN_NAME = 15
    INTERFACE_MTU = 26
    BROADCAST_ADDRESS = 28
    NTP_SERVERS = 42
    VENDOR_SPECIFIC = 43
    REQUESTED_ADDRESS = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_LIST = 55
    MESSAGE = 56
    MAX_MESSAGE_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    CLIENT_FQDN = 81  # RFC 4702
    RELAY_AGENT = 82  # RFC 3046
    DOMAIN_SEARCH = 119  # RFC 3397
    CLASSLESS_ROUTES = 121  # RFC 3442
    END = 255


_ZERO4 = ipaddress.IPv4Address(0)
_MESSAGE_TYPES = {kind.value: kind for kind in MessageType}
_NO_ADDRESS = bytes(4)


def _address(value: bytes) -> ipaddress.IPv4Address:
    return _ZERO4 if value == _NO_ADDRESS else ipaddress.IPv4Address(value)


@dataclass(slots=True)
class DhcpPacket:
    """One DHCP message. ``options`` maps a code to its (concatenated) value, in the order
    the options are to be written; ``chaddr`` holds the ``hlen`` meaningful bytes."""

    op: int = BOOTREQUEST
    xid: int = 0
    htype: int = 1
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: ipaddress.IPv4Address = _ZERO4
    yiaddr: ipaddress.IPv4Address = _ZERO4
    siaddr: ipaddress.IPv4Address = _ZERO4
    giaddr: ipaddress.IPv4Address = _ZERO4
    chaddr: bytes = b""
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def message_type(self) -> MessageType | None:
        """Option 53, or ``None`` for a plain BOOTP message or an unknown type."""
        value = self.options.get(Opt.MESSAGE_TYPE)
        if value is None or len(value) != 1:
            return None
        return _MESSAGE_TYPES.get(value[0])

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    def address_option(self, code: int) -> ipaddress.IPv4Address | None:
        """A single-address option (50, 54...), or ``None`` when absent or malformed."""
        value = self.options.get(code)
        if value is None or len(value) != 4:
            return None
        return ipaddress.IPv4Address(value)


def _parse_options(data: bytes, into: dict[int, bytes], where: str) -> None:
    """Read code/length/value options from ``data`` until END, merging repeats (RFC 3396)."""
    i, end = 0, len(data)
    while i < end:
        code = data[i]
        if code == Opt.PAD:
            i += 1
            continue
        if code == Opt.END:
            return
        if i + 1 >= end:
            raise DhcpFormatError(f"option {code} in {where} has no length byte", "RFC 2132 §2")
        length = data[i + 1]
        start = i + 2
        if start + length > end:
            raise DhcpFormatError(
                f"option {code} in {where} says {length} bytes but only {end - start} remain",
                "RFC 2132 §2",
            )
        value = data[start : start + length]
        previous = into.get(code)
        into[code] = value if previous is None else previous + value
        i = start + length
    # A missing END is tolerated: many clients pad the field with zeroes instead.


def decode(data: bytes) -> DhcpPacket:
    """Parse one DHCP message (the UDP payload)."""
    if len(data) < _HEADER:
        raise DhcpFormatError(f"message of {len(data)} bytes is shorter than {_HEADER}")
    if len(data) > MAX_MESSAGE:
        raise DhcpFormatError(f"message of {len(data)} bytes is longer than {MAX_MESSAGE}")
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, ch, sname, file_) = (
        _FIXED.unpack_from(data)
    )
    if data[_FIXED.size : _HEADER] != MAGIC_COOKIE:
        raise DhcpFormatError(
            f"magic cookie is {data[_FIXED.size : _HEADER].hex()}, not 63825363", "RFC 2131 §3"
        )
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpFormatError(f"op {op} is neither BOOTREQUEST (1) nor BOOTREPLY (2)")
    if hlen > 16:
        raise DhcpFormatError(f"hardware address length {hlen} is over 16")
    options: dict[int, bytes] = {}
    _parse_options(data[_HEADER:], options, "options")
    overload = options.get(Opt.OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise DhcpFormatError(f"overload option value {overload.hex()}", "RFC 2132 §9.3")
        if overload[0] & 1:
            _parse_options(file_, options, "file")
            file_ = b""
        if overload[0] & 2:
            _parse_options(sname, options, "sname")
            sname = b""
    return DhcpPacket(
        op=op,
        xid=xid,
        htype=htype,
        hops=hops,
        secs=secs,
        flags=flags,
        ciaddr=_address(ci),
        yiaddr=_address(yi),
        siaddr=_address(si),
        giaddr=_address(gi),
        chaddr=ch[:hlen],
        sname=sname.rstrip(b"\0"),
        file=file_.rstrip(b"\0"),
        options=options,
    )


def encode(packet: DhcpPacket, *, max_size: int = 1472) -> bytes:
    """The wire form of ``packet``: fixed part, cookie, options, END, padding to 300 bytes.

    ``max_size`` bounds the whole message (1472 = a 1500-byte MTU less IP and UDP headers);
    a larger message raises :class:`LocalProtocolError`.
    """
    if len(packet.chaddr) > 16:
        raise LocalProtocolError(f"chaddr of {len(packet.chaddr)} bytes is over 16")
    if len(packet.sname) > 64 or len(packet.file) > 128:
        raise LocalProtocolError("sname is over 64 bytes or file over 128 bytes")
    parts = [
        _FIXED.pack(
            packet.op,
            packet.htype,
            len(packet.chaddr),
            packet.hops,
            packet.xid,
            packet.secs,
            packet.flags,
            packet.ciaddr.packed,
            packet.yiaddr.packed,
            packet.siaddr.packed,
            packet.giaddr.packed,
            packet.chaddr,
            packet.sname,
            packet.file,
        ),
        MAGIC_COOKIE,
    ]
    for code, value in packet.options.items():
        if not 0 < code < 255:
            raise LocalProtocolError(f"option code {code} cannot be sent (use 1-254)")
        if not value:
            parts.append(bytes((code, 0)))
        for i in range(0, len(value), 255):
            chunk = value[i : i + 255]
            parts.append(bytes((code, len(chunk))))
            parts.append(chunk)
    parts.append(b"\xff")
    message = b"".join(parts)
    if len(message) > max_size:
        raise LocalProtocolError(
            f"reply of {len(message)} bytes is over the {max_size}-byte limit; send fewer options"
        )
    if len(message) < MIN_MESSAGE:
        message += bytes(MIN_MESSAGE - len(message))
    return message


# --------------------------------------------------------------------------- option values


def encode_addresses(addresses: Iterable[ipaddress.IPv4Address | str]) -> bytes:
    """A list of IPv4 addresses (routers, DNS servers, NTP servers...)."""
    return b"".join(ipaddress.IPv4Address(a).packed for a in addresses)


def decode_addresses(value: bytes) -> list[ipaddress.IPv4Address]:
    if len(value) % 4:
        raise DhcpFormatError(f"address list of {len(value)} bytes is not a multiple of 4")
    return [ipaddress.IPv4Address(value[i : i + 4]) for i in range(0, len(value), 4)]


def encode_u32(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise LocalProtocolError(f"{value} does not fit 32 bits")
    return struct.pack("!I", value)


def encode_u16(value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"{value} does not fit 16 bits")
    return struct.pack("!H", value)


def decode_u32(value: bytes) -> int:
    if len(value) != 4:
        raise DhcpFormatError(f"32-bit option has {len(value)} bytes")
    result: int = struct.unpack("!I", value)[0]
    return result


def encode_domain_search(domains: Iterable[str]) -> bytes:
    """Option 119: the names in DNS wire form with compression (RFC 3397 section 2)."""
    compress: dict[dns.name.Name, int] = {}
    out = io.BytesIO()
    for domain in domains:
        try:
            name = dns.name.from_text(domain)
        except dns.exception.DNSException as exc:
            raise LocalProtocolError(f"search domain {domain!r}: {exc}") from exc
        name.to_wire(out, compress)  # compression offsets count from the option's start
    return out.getvalue()


def encode_classless_routes(
    routes: Iterable[tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]],
) -> bytes:
    """Option 121: each route as prefix length, the significant destination octets, router
    (RFC 3442 section 3)."""
    out = bytearray()
    for network, router in routes:
        width = network.prefixlen
        out.append(width)
        out += network.network_address.packed[: (width + 7) // 8]
        out += router.packed
    return bytes(out)


def decode_fqdn(value: bytes) -> str | None:
    """The host name in a client FQDN option (RFC 4702 section 2): the first label, or
    ``None`` when the option carries no usable name."""
    if len(value) < 3:
        raise DhcpFormatError(f"client FQDN option of {len(value)} bytes", "RFC 4702 §2")
    flags, name = value[0], value[3:]
    if not name:
        return None
    if flags & 0x04:  # E: canonical wire encoding
        try:
            parsed, _ = dns.name.from_wire(name, 0)
        except dns.exception.DNSException as exc:
            raise DhcpFormatError(f"client FQDN name: {exc}", "RFC 4702 §2.3") from exc
        labels = [label.decode("ascii", "replace") for label in parsed.labels if label]
        return labels[0] if labels else None
    text = name.decode("ascii", "replace").split(".")[0]
    return text or None
