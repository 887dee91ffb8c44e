"""Durations, sizes and addresses: examples, errors, and hypothesis round-trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from backhaul.config.units import (
    Address,
    UnitError,
    format_duration,
    format_size,
    parse_address,
    parse_duration,
    parse_size,
)

# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("250ms", 0.25),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        (" 2 s ", 2.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("10", 10.0),
        (".5s", 0.5),
        (5, 5.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize(
    "bad",
    ["", "5", "s", "5x", "-1s", "5 sec", "1d", "5S", "1e3s", "inf", "nan", "1s-", True, None,
     [], -1, float("inf"), float("nan"), "1" * 400 + "h"],
)  # fmt: skip
def test_parse_duration_rejects(bad: object) -> None:
    if bad == "5":  # a bare numeric string is seconds, like a number
        assert parse_duration(bad) == 5.0
        return
    with pytest.raises(UnitError) as info:
        parse_duration(bad)
    assert "expected a duration" in str(info.value)
    assert str(info.value).startswith("found ")


def test_duration_error_hints() -> None:
    with pytest.raises(UnitError, match="lower case: '5s'"):
        parse_duration("5S")
    with pytest.raises(UnitError, match="not negative"):
        parse_duration("-5s")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (5, "5s"), (0.25, "250ms"), (60, "1m"), (90, "1m30s"), (3600, "1h"),
     (3661, "1h1m1s"), (1.5, "1.5s"), (0.0001, "0.0001s"), (1e-7, "0.0000001s")],
)  # fmt: skip
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
@example(0.1)
@example(1e-300)
@example(59.999)
def test_duration_round_trip(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-12, abs=0)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h"]))
def test_duration_number_and_unit(number: int, unit: str) -> None:
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert parse_duration(f"{number}{unit}") == pytest.approx(number * factor)


@given(st.text(max_size=30))
@example("1m1")
@example("1.s")
@example("..5s")
@example("\x00")
def test_duration_random_text_parses_or_raises_unit_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except UnitError as exc:
        assert isinstance(exc, ValueError)
        assert "expected a duration" in str(exc)
    else:
        assert math.isfinite(seconds)
        assert seconds >= 0


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "size"),
    [("64KiB", 65536), ("1MiB", 1048576), ("10MB", 10_000_000), ("512", 512), ("512B", 512),
     ("1GiB", 1 << 30), ("1TiB", 1 << 40), ("1.5KB", 1500), ("0.5KiB", 512), ("8 KiB", 8192),
     ("64kib", 65536), ("10mb", 10_000_000), (0, 0), (4096, 4096), (1e6, 1_000_000)],
)  # fmt: skip
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size
    assert type(parse_size(text)) is int


@pytest.mark.parametrize(
    "bad",
    ["", "KiB", "-1", "1.5B", "0.3KiB", "10K", "1M", "1PB", "x", "1e3", True, None, -1, 1.5,
     float("inf"), {"a": 1}, "9" * 30 + "TiB", 2**63],
)  # fmt: skip
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(UnitError) as info:
        parse_size(bad)
    assert "expected a size" in str(info.value)


def test_size_ambiguous_unit_hint() -> None:
    with pytest.raises(UnitError, match="'K' is ambiguous: write 'KiB' or 'KB'"):
        parse_size("10K")


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0"), (512, "512"), (1024, "1KiB"), (1000, "1KB"), (1500, "1500"), (65536, "64KiB"),
     (10_000_000, "10MB"), (1 << 30, "1GiB"), (3 << 40, "3TiB"), (1_024_000, "1000KiB")],
)  # fmt: skip
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_size_round_trip(size: int) -> None:
    assert parse_size(format_size(size)) == size


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["B", "KB", "MB", "GB", "KiB", "MiB", "GiB", "TiB"]),
)
def test_size_number_and_unit(number: int, unit: str) -> None:
    factor = {"B": 1, "KB": 1000, "MB": 10**6, "GB": 10**9, "KiB": 1024, "MiB": 1024**2,
              "GiB": 1024**3, "TiB": 1024**4}[unit]  # fmt: skip
    assert parse_size(f"{number}{unit}") == number * factor


@given(st.text(max_size=30))
@example("1.KiB")
@example("0.0009765625KiB")
def test_size_random_text_parses_or_raises_unit_error(text: str) -> None:
    try:
        size = parse_size(text)
    except UnitError as exc:
        assert "expected a size" in str(exc)
    else:
        assert isinstance(size, int)
        assert size >= 0


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
        ("[::1]:8080", "::1", 8080, "[::1]:8080"),
        (":8080", "0.0.0.0", 8080, "0.0.0.0:8080"),
        ("localhost:80", "localhost", 80, "localhost:80"),
        ("LocalHost:80", "localhost", 80, "localhost:80"),
        ("[0:0:0:0:0:0:0:1]:1", "::1", 1, "[::1]:1"),
        ("[::]:443", "::", 443, "[::]:443"),
        ("api.internal.:9000", "api.internal", 9000, "api.internal:9000"),
        ("127.0.0.1:0", "127.0.0.1", 0, "127.0.0.1:0"),
        ("my_host-1:65535", "my_host-1", 65535, "my_host-1:65535"),
    ],
)
def test_parse_address(text: str, host: str, port: int, shown: str) -> None:
    address = parse_address(text)
    assert address == Address(host, port)
    assert (address.host, address.port) == (host, port)
    assert str(address) == shown
    assert parse_address(str(address)) == address


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ("127.0.0.1", "port is missing"),
        ("127.0.0.1:", "not a number"),
        ("127.0.0.1:http", "not a number"),
        ("127.0.0.1:65536", "above 65535"),
        ("127.0.0.1:-1", "not a number"),
        ("::1:8080", "brackets"),
        ("[::1]8080", "IPv6 as"),
        ("[::1:8080", "IPv6 as"),
        ("[fe80::zz]:80", "not IPv6"),
        ("300.1.1.1:80", "not IPv4"),
        ("1.2.3:80", "not a valid IPv4"),
        ("http://127.0.0.1:80", "no scheme"),
        ("bad host:80", "not a valid host name"),
        ("-a.example:80", "not a valid host name"),
        ("a..b:80", "not a valid host name"),
        ("", "expected host:port"),
        (8080, "quote it"),
        (None, "expected host:port"),
    ],
)
def test_parse_address_rejects(bad: object, hint: str) -> None:
    with pytest.raises(UnitError) as info:
        parse_address(bad)
    assert hint in str(info.value)
    assert "expected host:port" in str(info.value)


@given(st.ip_addresses(), st.integers(min_value=0, max_value=65535))
def test_address_round_trip(ip: object, port: int) -> None:
    address = Address(str(ip), port)
    assert parse_address(str(address)) == address


@given(st.text(max_size=40))
@example("[::1]:")
@example("[]:1")
@example(":")
def test_address_random_text_parses_or_raises_unit_error(text: str) -> None:
    try:
        address = parse_address(text)
    except UnitError as exc:
        assert "expected host:port" in str(exc)
    else:
        assert 0 <= address.port <= 65535
        assert parse_address(str(address)) == address
