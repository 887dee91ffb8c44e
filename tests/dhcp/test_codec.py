"""The DHCP codec: round trips, RFC 3396 and overload, every kind of bad input, fuzzing."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.errors import LocalProtocolError, ProtocolError
from backhaul.proto.dhcp import (
    MAGIC_COOKIE,
    DhcpFormatError,
    DhcpPacket,
    MessageType,
    Opt,
    decode,
    decode_addresses,
    decode_fqdn,
    encode,
    encode_classless_routes,
    encode_domain_search,
)

MAC = bytes.fromhex("020000000001")


def discover(**options: bytes) -> DhcpPacket:
    opts = {Opt.MESSAGE_TYPE: bytes((MessageType.DISCOVER,))}
    opts.update({int(k[1:]): v for k, v in options.items()})
    return DhcpPacket(xid=0x12345678, flags=0x8000, chaddr=MAC, options=opts)


def test_round_trip_and_padding():
    packet = discover(o12=b"alpha", o55=bytes((1, 3, 6)))
    data = encode(packet)
    assert len(data) == 300  # RFC 1542 minimum
    assert data[236:240] == MAGIC_COOKIE
    back = decode(data)
    assert back.xid == 0x12345678 and back.broadcast and back.chaddr == MAC
    assert back.message_type is MessageType.DISCOVER
    assert back.options[Opt.HOST_NAME] == b"alpha"


def test_long_option_is_split_and_concatenated_again():
    packet = discover(o43=bytes(range(256)) * 2)
    data = encode(packet)
    assert decode(data).options[43] == bytes(range(256)) * 2  # RFC 3396


def test_overloaded_file_and_sname_carry_options():
    base = bytearray(encode(discover(o52=b"\x03")))
    base[108:112] = bytes((12, 2)) + b"hi"  # file field: host name
    base[112] = 255
    base[44:48] = bytes((15, 2)) + b"ex"  # sname field: domain name
    base[48] = 255
    back = decode(bytes(base))
    assert back.options[12] == b"hi" and back.options[15] == b"ex"
    assert back.file == b"" and back.sname == b""


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d[:200], "shorter than 240"),
        (lambda d: d[:236] + b"\x00\x00\x00\x00" + d[240:], "magic cookie"),
        (lambda d: b"\x07" + d[1:], "op 7"),
        (lambda d: d[:2] + b"\x11" + d[3:], "hardware address length 17"),
        (lambda d: d[:240] + b"\x0c\x50abc", "says 80 bytes but only 3 remain"),
        (lambda d: d[:240] + b"\x0c", "no length byte"),
        (lambda d: d + bytes(5000), "longer than 4096"),
        (lambda d: d[:240] + b"\x34\x01\x07\xff", "overload option value"),
    ],
)
def test_bad_input_raises_the_named_protocol_error(mutate, words):
    data = mutate(encode(discover()))
    with pytest.raises(DhcpFormatError, match=words):
        decode(data)


def test_encoding_refuses_what_cannot_go_on_the_wire():
    with pytest.raises(LocalProtocolError):
        encode(DhcpPacket(chaddr=bytes(17)))
    with pytest.raises(LocalProtocolError, match="over the 600-byte limit"):
        encode(discover(o43=bytes(1000)), max_size=600)
    with pytest.raises(LocalProtocolError):
        encode(DhcpPacket(options={255: b"x"}))


def test_option_values():
    assert encode_domain_search(["example.com", "lab.example.com"]) == (
        b"\x07example\x03com\x00\x03lab\xc0\x00"
    )  # RFC 3397 §2 compression
    routes = [
        (ipaddress.IPv4Network("10.9.0.0/16"), ipaddress.IPv4Address("10.0.0.1")),
        (ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv4Address("10.0.0.254")),
    ]
    assert encode_classless_routes(routes) == bytes([16, 10, 9, 10, 0, 0, 1, 0, 10, 0, 0, 254])
    assert decode_addresses(b"\x0a\x00\x00\x01\x0a\x00\x00\x02")[1] == ipaddress.IPv4Address(
        "10.0.0.2"
    )
    with pytest.raises(DhcpFormatError):
        decode_addresses(b"\x01\x02\x03")
    assert decode_fqdn(b"\x00\x00\x00web1.lab") == "web1"
    assert decode_fqdn(b"\x04\x00\x00\x04web2\x03lab\x00") == "web2"
    with pytest.raises(DhcpFormatError):
        decode_fqdn(b"\x04\x00\x00\x09bad")


def _check(data: bytes) -> None:
    try:
        decode(data)
    except ProtocolError:
        pass


@settings(max_examples=400)
@given(st.binary(max_size=700))
def test_random_bytes_decode_or_raise_the_protocol_error(data):
    _check(data)
    _check(encode(discover())[:240] + data)


@settings(max_examples=300)
@given(st.data())
def test_mutated_packets_and_every_truncation(data):
    good = bytearray(encode(discover(o12=b"host", o55=b"\x01\x03", o61=b"\x01" + MAC)))
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(good) - 1))
        good[index] = data.draw(st.integers(0, 255))
    _check(bytes(good))
    cut = data.draw(st.integers(0, len(good)))
    _check(bytes(good[:cut]))
