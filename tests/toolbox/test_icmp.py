"""The sans-IO ICMP codec: checksums, echo, errors with quoted datagrams, Paris tricks, fuzz."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.errors import LocalProtocolError, ProtocolError
from backhaul.proto import icmp

V4A, V4B = ipaddress.IPv4Address("192.0.2.2"), ipaddress.IPv4Address("203.0.113.2")
V6A, V6B = ipaddress.IPv6Address("2001:db8:1::2"), ipaddress.IPv6Address("2001:db8:3::2")


def ipv4_header(src, dst, proto, payload_len, ttl=1, ident=0x1234) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + payload_len,
        ident,
        0x4000,
        ttl,
        proto,
        0,
        src.packed,
        dst.packed,
    )
    checksum = icmp.internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:]


def ipv6_header(src, dst, next_header, payload_len, hops=1) -> bytes:
    return struct.pack("!IHBB", 6 << 28, payload_len, next_header, hops) + src.packed + dst.packed


def icmp4_error(type_, code, quoted, rest_of_header=0) -> bytes:
    body = struct.pack("!BBHI", type_, code, 0, rest_of_header) + quoted
    return body[:2] + struct.pack("!H", icmp.internet_checksum(body)) + body[4:]


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


# ----------------------------------------------------------------------------- checksums


def test_checksum_matches_rfc1071_worked_example():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is ~ddf2
    assert icmp.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_checksum_of_odd_length_pads_with_zero():
    assert icmp.internet_checksum(b"\x01") == icmp.internet_checksum(b"\x01\x00") == 0xFEFF


@pytest.mark.parametrize(("src", "dst"), [(V4A, V4B), (V6A, V6B)])
def test_udp_datagram_checksums_to_zero_with_its_pseudo_header(src, dst):
    datagram = icmp.encode_udp(src, dst, 40000, 33434, b"hello, world")
    length = struct.pack("!H", len(datagram))
    if src.version == 4:
        pseudo = src.packed + dst.packed + b"\x00\x11" + length
    else:
        pseudo = src.packed + dst.packed + b"\x00\x00" + length + b"\x00\x00\x00\x11"
    assert ones_sum(pseudo + datagram) == 0xFFFF
    assert struct.unpack_from("!HHH", datagram) == (40000, 33434, 8 + 12)


@settings(max_examples=300, deadline=None)
@given(
    sport=st.integers(0, 0xFFFF),
    dport=st.integers(0, 0xFFFF),
    length=st.integers(2, 64),
    wanted=st.integers(1, 0xFFFE),
    v6=st.booleans(),
)
def test_paris_udp_payload_forces_the_checksum(sport, dport, length, wanted, v6):
    src, dst = (V6A, V6B) if v6 else (V4A, V4B)
    payload = icmp.paris_udp_payload(src, dst, sport, dport, length, wanted)
    assert len(payload) == length
    assert icmp.udp_checksum(src, dst, sport, dport, payload) == wanted


def test_paris_udp_payload_refuses_unforceable_values():
    with pytest.raises(LocalProtocolError):
        icmp.paris_udp_payload(V4A, V4B, 1, 2, 1, 5)
    with pytest.raises(LocalProtocolError):
        icmp.paris_udp_payload(V4A, V4B, 1, 2, 8, 0)


# ----------------------------------------------------------------------------- echo


def test_echo_v4_round_trip_and_checksum():
    packet = icmp.encode_echo(4, 0xBEEF, 7, b"payload!")
    assert packet[0] == 8 and ones_sum(packet) == 0xFFFF
    message = icmp.parse_icmp(4, packet)
    assert message == icmp.Echo(4, False, 0, 0xBEEF, 7, b"payload!")
    reply = icmp.parse_icmp(4, icmp.encode_echo(4, 1, 2, b"x", reply=True))
    assert isinstance(reply, icmp.Echo) and reply.is_reply


def test_echo_v4_bad_checksum_is_a_protocol_error():
    packet = bytearray(icmp.encode_echo(4, 1, 1, b"abcd"))
    packet[-1] ^= 0xFF
    with pytest.raises(ProtocolError, match="checksum"):
        icmp.parse_icmp(4, bytes(packet))
    assert isinstance(icmp.parse_icmp(4, bytes(packet), verify_checksum=False), icmp.Echo)


def test_echo_v6_checksum_left_to_the_kernel_unless_addresses_given():
    bare = icmp.encode_echo(6, 5, 6, b"zz")
    assert bare[0] == 128 and bare[2:4] == b"\x00\x00"
    full = icmp.encode_echo(6, 5, 6, b"zz", source=V6A, destination=V6B)
    pseudo = V6A.packed + V6B.packed + struct.pack("!I", len(full)) + b"\x00\x00\x00\x3a"
    assert ones_sum(pseudo + full) == 0xFFFF
    assert icmp.parse_icmp(6, full) == icmp.Echo(6, False, 0, 5, 6, b"zz")


def test_echo_refuses_out_of_range_fields():
    with pytest.raises(LocalProtocolError):
        icmp.encode_echo(4, 0x10000, 1)
    with pytest.raises(LocalProtocolError):
        icmp.encode_echo(5, 1, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", [4, 6])
def test_paris_echo_ids_keep_the_checksum_constant_and_tell_probes_apart(family):
    base = 0xC000
    pairs = [icmp.paris_echo_ids(base, 1, n) for n in range(200)]
    assert len(set(pairs)) == 200
    assert len({seq for _, seq in pairs}) == 200
    checksums = {
        icmp.encode_echo(family, i, s, bytes(32), source=V6A, destination=V6B)[2:4]
        if family == 6
        else icmp.encode_echo(family, i, s, bytes(32))[2:4]
        for i, s in pairs
    }
    assert len(checksums) == 1
    # the classic scheme (fixed id, counting seq) does change it: the test can tell
    classic = {icmp.encode_echo(4, base, s, bytes(32))[2:4] for s in range(1, 50)}
    assert len(classic) == 49


def test_paris_echo_ids_refuse_to_wrap():
    with pytest.raises(LocalProtocolError):
        icmp.paris_echo_ids(10, 1, 11)


# ----------------------------------------------------------------------------- errors


def test_time_exceeded_v4_quoting_a_udp_probe():
    udp = icmp.encode_udp(V4A, V4B, 40000, 33437, bytes(32))
    quoted = ipv4_header(V4A, V4B, icmp.PROTO_UDP, len(udp), ident=0x4242) + udp
    message = icmp.parse_icmp(4, icmp4_error(11, 0, quoted))
    assert isinstance(message, icmp.IcmpError)
    assert message.kind == "time-exceeded" and message.describe() == "Time to live exceeded"
    q = message.quoted
    assert (q.source, q.destination, q.protocol, q.identification) == (V4A, V4B, 17, 0x4242)
    checksum = struct.unpack_from("!H", udp, 6)[0]
    assert q.transport == icmp.UdpHeader(40000, 33437, 40, checksum)


def test_quote_cut_to_rfc792_minimum_still_identifies_tcp_and_echo():
    tcp = struct.pack("!HHIIHHHH", 45000, 443, 0xDEADBEEF, 0, 0x5002, 0, 0, 0)
    quoted = ipv4_header(V4A, V4B, icmp.PROTO_TCP, len(tcp)) + tcp[:8]
    message = icmp.parse_icmp(4, icmp4_error(11, 0, quoted))
    assert message.quoted.transport == icmp.TcpHeader(45000, 443, 0xDEADBEEF)
    echo = icmp.encode_echo(4, 77, 9, bytes(56))
    quoted = ipv4_header(V4A, V4B, icmp.PROTO_ICMP, len(echo)) + echo[:8]
    message = icmp.parse_icmp(4, icmp4_error(3, 1, quoted))
    assert message.kind == "unreachable"
    assert message.describe() == "Destination Host Unreachable"
    t = message.quoted.transport
    assert isinstance(t, icmp.EchoHeader) and (t.ident, t.seq) == (77, 9)


def test_quote_shorter_than_eight_transport_bytes_has_no_transport():
    quoted = ipv4_header(V4A, V4B, icmp.PROTO_UDP, 40) + b"\x9c\x40\x82"
    message = icmp.parse_icmp(4, icmp4_error(11, 0, quoted))
    assert message.quoted.transport is None


def test_frag_needed_carries_the_next_hop_mtu():
    quoted = ipv4_header(V4A, V4B, icmp.PROTO_ICMP, 8) + icmp.encode_echo(4, 1, 1)
    message = icmp.parse_icmp(4, icmp4_error(3, 4, quoted, rest_of_header=1280))
    assert message.mtu == 1280
    assert message.describe() == "Frag needed and DF set (mtu = 1280)"


def test_time_exceeded_and_packet_too_big_v6():
    udp = icmp.encode_udp(V6A, V6B, 40001, 33434, bytes(8))
    quoted = ipv6_header(V6A, V6B, icmp.PROTO_UDP, len(udp)) + udp
    message = icmp.parse_icmp(6, struct.pack("!BBHI", 3, 0, 0, 0) + quoted)
    assert message.kind == "time-exceeded" and message.family == 6
    assert message.quoted.destination == V6B
    assert message.quoted.transport.destination_port == 33434
    message = icmp.parse_icmp(6, struct.pack("!BBHI", 2, 0, 0, 1280) + quoted)
    assert (message.kind, message.mtu) == ("packet-too-big", 1280)
    message = icmp.parse_icmp(6, struct.pack("!BBHI", 1, 4, 0, 0) + quoted)
    assert message.describe() == "Destination unreachable: Port unreachable"


def test_other_messages_are_reported_as_such():
    router_solicitation = struct.pack("!BBHI", 133, 0, 0, 0)
    assert icmp.parse_icmp(6, router_solicitation) == icmp.IcmpOther(6, 133, 0)


def test_ipv4_parse_checks_lengths_and_version():
    packet = ipv4_header(V4A, V4B, 1, 8, ttl=61) + icmp.encode_echo(4, 1, 1)
    header, payload = icmp.parse_ipv4(packet + b"trailing padding")
    assert header.ttl == 61 and header.dont_fragment and len(payload) == 8
    with pytest.raises(ProtocolError, match="version"):
        icmp.parse_ipv4(b"\x65" + packet[1:])
    with pytest.raises(ProtocolError, match="total length"):
        icmp.parse_ipv4(packet[:-1])
    with pytest.raises(ProtocolError, match="header length"):
        icmp.parse_ipv4(b"\x44" + packet[1:])


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("short", [b"", b"\x0b\x00\x00"])
def test_short_messages_are_protocol_errors(family, short):
    with pytest.raises(ProtocolError):
        icmp.parse_icmp(family, short)


# ----------------------------------------------------------------------------- fuzz


def _parse_or_protocol_error(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ProtocolError:
        pass


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200), family=st.sampled_from([4, 6]), verify=st.booleans())
def test_random_bytes_parse_or_raise_protocol_error(data, family, verify):
    _parse_or_protocol_error(icmp.parse_icmp, family, data, verify_checksum=verify)
    _parse_or_protocol_error(icmp.parse_ipv4, data)
    _parse_or_protocol_error(icmp.parse_ipv4, data, quoted=True)
    _parse_or_protocol_error(icmp.parse_ipv6, data)
    _parse_or_protocol_error(icmp.parse_ipv6, data, quoted=True)


@settings(max_examples=500, deadline=None)
@given(
    family=st.sampled_from([4, 6]),
    type_=st.sampled_from([1, 2, 3, 4, 11, 12]),
    code=st.integers(0, 255),
    quoted=st.binary(max_size=80),
    version_byte=st.sampled_from([0x45, 0x46, 0x4F, 0x60, 0x00]),
)
def test_errors_with_random_quotes_parse_or_raise_protocol_error(
    family, type_, code, quoted, version_byte
):
    # past the first checks: a real error header, then a quote that starts plausibly
    body = struct.pack("!BBHI", type_, code, 0, 0) + bytes([version_byte]) + quoted
    _parse_or_protocol_error(icmp.parse_icmp, family, body, verify_checksum=False)
