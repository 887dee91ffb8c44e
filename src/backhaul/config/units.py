"""Durations, sizes and addresses: parsed once, at load, into typed values.

- a duration is a float number of seconds: ``"5s"``, ``"250ms"``, ``"1m"``, ``"1h"``,
  ``"1.5s"``, ``"1m30s"``, or a plain number of seconds (``5``, ``0.25``);
- a size is an int number of bytes: ``"64KiB"`` (1024), ``"10MB"`` (1000), ``"512"``,
  ``"512B"`` or a plain int;
- an address is ``host:port``: ``"127.0.0.1:8080"``, ``"[::1]:8080"``, ``":8080"`` (every
  IPv4 address) or ``"localhost:80"``.

Each parser raises :class:`UnitError` (a ``ValueError``) whose message says what was found and
what was expected; the config loader turns it into a ``ConfigError`` problem with its path.
Nothing here does I/O: host names are checked for shape, never resolved.
"""

from __future__ import annotations

import ipaddress
import math
import re
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

__all__ = [
    "Address",
    "UnitError",
    "format_duration",
    "format_size",
    "parse_address",
    "parse_duration",
    "parse_size",
]

DURATION_EXPECTED = (
    "expected a duration such as '5s', '250ms', '1m', '1h', '1m30s' or a number of seconds"
)
SIZE_EXPECTED = (
    "expected a size such as '512', '64KiB', '1MiB', '10MB' (KiB = 1024 bytes, KB = 1000)"
    " or a number of bytes"
)
ADDRESS_EXPECTED = (
    "expected host:port such as '127.0.0.1:8080', '[::1]:8080', ':8080' or 'localhost:80'"
)

#: Sizes above this are refused (they are typos, and they would overflow C-level counters).
MAX_SIZE = 2**63 - 1
_MAX_TEXT = 400  # longer unit strings are refused before any regex runs


class UnitError(ValueError):
    """A duration, size or address that does not parse; ``str()`` says found and expected."""

    def __init__(self, found: object, expected: str) -> None:
        self.found = found
        self.expected = expected
        super().__init__(f"found {describe(found)}: {expected}")


def describe(value: object) -> str:
    """A short, user-facing description of a config value (for 'found ...' messages)."""
    if value is None:
        return "an empty value (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return repr(text) if value else "an empty string"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


# --------------------------------------------------------------------------- durations

_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h)")
_DURATION_FULL = re.compile(rf"(?:{_NUMBER}\s*(?:ms|s|m|h)\s*)+")
_PLAIN_NUMBER = re.compile(_NUMBER)


def parse_duration(value: object) -> float:
    """Parse ``"5s"``, ``"250ms"``, ``"1m"``, ``"1h"``, ``"1.5s"``, ``"1h30m"`` or a number
    of seconds into float seconds (finite, not negative)."""
    if isinstance(value, bool):
        raise UnitError(value, DURATION_EXPECTED)
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise UnitError(value, DURATION_EXPECTED + " (finite, not negative)")
        return float(value)
    if not isinstance(value, str):
        raise UnitError(value, DURATION_EXPECTED)
    text = value.strip()
    if not text or len(text) > _MAX_TEXT:
        raise UnitError(value, DURATION_EXPECTED)
    if _PLAIN_NUMBER.fullmatch(text):
        total = Decimal(text)
    elif _DURATION_FULL.fullmatch(text):
        total = Decimal(0)
        for number, unit in _DURATION_PART.findall(text):
            total += Decimal(number) * _DURATION_UNITS[unit]
    else:
        hint = ""
        lowered = text.lower()
        if lowered != text and _DURATION_FULL.fullmatch(lowered):
            hint = f" (units are lower case: '{lowered}')"
        elif text.startswith("-"):
            hint = " (not negative)"
        raise UnitError(value, DURATION_EXPECTED + hint)
    seconds = float(total)
    if not math.isfinite(seconds):
        raise UnitError(value, DURATION_EXPECTED + " (too large)")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest readable duration that :func:`parse_duration` reads back as ``seconds``
    (``"250ms"``, ``"5s"``, ``"1m30s"``, ``"2h"``); ``repr`` precision for odd values."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {seconds!r}")
    if seconds == 0:
        return "0s"
    whole = int(seconds)
    if whole == seconds and whole >= 60:
        hours, rest = divmod(whole, 3600)
        minutes, secs = divmod(rest, 60)
        parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
        parts.append(f"{secs}s" if secs else "")
        return "".join(parts)
    if whole == seconds:
        return f"{whole}s"
    if seconds < 1:
        millis = seconds * 1000
        if millis == int(millis) and float(Decimal(int(millis)) / 1000) == seconds:
            return f"{int(millis)}ms"
    text = _plain_decimal(seconds)
    return f"{text}s"


def _plain_decimal(value: float) -> str:
    """``repr`` of a float without exponent notation (``1e-05`` -> ``0.00001``)."""
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


# --------------------------------------------------------------------------- sizes

_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(rf"({_NUMBER})\s*([A-Za-z]*)")


def parse_size(value: object) -> int:
    """Parse ``"64KiB"``, ``"1MiB"``, ``"10MB"``, ``"512"``, ``"512B"`` or an int into a
    whole, non-negative number of bytes (KiB = 1024, KB = 1000; unit case is ignored)."""
    if isinstance(value, bool):
        raise UnitError(value, SIZE_EXPECTED)
    if isinstance(value, int):
        if not 0 <= value <= MAX_SIZE:
            raise UnitError(value, SIZE_EXPECTED + " (not negative, at most 8 EiB)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or value != int(value) or value > MAX_SIZE:
            raise UnitError(value, SIZE_EXPECTED + " (a whole number of bytes)")
        return int(value)
    if not isinstance(value, str):
        raise UnitError(value, SIZE_EXPECTED)
    text = value.strip()
    match = _SIZE.fullmatch(text) if len(text) <= _MAX_TEXT else None
    if match is None:
        raise UnitError(value, SIZE_EXPECTED)
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit.lower() or "b")
    if factor is None:
        hint = ""
        if unit.lower() in ("k", "m", "g", "t"):
            hint = f" ('{unit}' is ambiguous: write '{unit.upper()}iB' or '{unit.upper()}B')"
        raise UnitError(value, SIZE_EXPECTED + hint)
    try:
        exact = Decimal(number) * factor
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only plain numbers
        raise UnitError(value, SIZE_EXPECTED) from exc
    if exact != exact.to_integral_value():
        raise UnitError(value, SIZE_EXPECTED + " (a whole number of bytes)")
    size = int(exact)
    if size > MAX_SIZE:
        raise UnitError(value, SIZE_EXPECTED + " (at most 8 EiB)")
    return size


def format_size(size: int) -> str:
    """The shortest exact form :func:`parse_size` reads back (``"64KiB"``, ``"10MB"``,
    ``"1500"``); binary units are preferred when both fit."""
    if size < 0:
        raise ValueError(f"not a size: {size!r}")
    if size == 0:
        return "0"
    for unit, factor in (
        ("TiB", 1024**4),
        ("GiB", 1024**3),
        ("MiB", 1024**2),
        ("KiB", 1024),
        ("TB", 1000**4),
        ("GB", 1000**3),
        ("MB", 1000**2),
        ("KB", 1000),
    ):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


# --------------------------------------------------------------------------- addresses


class Address(NamedTuple):
    """A host and a port. ``str()`` gives ``127.0.0.1:8080`` or ``[::1]:8080``."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_PORT = re.compile(r"[0-9]{1,5}")


def _check_port(value: object, text: str) -> int:
    if not _PORT.fullmatch(text):
        raise UnitError(value, ADDRESS_EXPECTED + f" (port '{text}' is not a number)")
    port = int(text)
    if port > 65535:
        raise UnitError(value, ADDRESS_EXPECTED + f" (port {port} is above 65535)")
    return port


def _check_hostname(value: object, host: str) -> str:
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(x) for x in name.split(".")):
        raise UnitError(value, ADDRESS_EXPECTED + f" ('{host}' is not a valid host name)")
    if name.replace(".", "").isdigit():
        raise UnitError(value, ADDRESS_EXPECTED + f" ('{host}' is not a valid IPv4 address)")
    return name.lower()


def parse_address(value: object) -> Address:
    """Parse ``host:port`` into an :class:`Address`. IPv6 goes in brackets; an empty host
    (``":8080"``) means ``0.0.0.0``. IP literals are normalised (``[0::1]`` -> ``::1``),
    host names lower-cased. Port 0 is allowed here (the OS picks one)."""
    if isinstance(value, Address):
        return value
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, int) and not isinstance(value, bool) else ""
        raise UnitError(value, ADDRESS_EXPECTED + hint)
    text = value.strip()
    if not text or len(text) > 300:
        raise UnitError(value, ADDRESS_EXPECTED)
    if "://" in text:
        raise UnitError(value, ADDRESS_EXPECTED + " (no scheme here)")
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise UnitError(value, ADDRESS_EXPECTED + " (IPv6 as '[addr]:port')")
        inner = text[1:close]
        try:
            ip6 = ipaddress.IPv6Address(inner)
        except ValueError as exc:
            raise UnitError(value, ADDRESS_EXPECTED + f" ('{inner}' is not IPv6)") from exc
        return Address(ip6.compressed, _check_port(value, text[close + 2 :]))
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise UnitError(value, ADDRESS_EXPECTED + " (the port is missing)")
    if ":" in host:
        raise UnitError(value, ADDRESS_EXPECTED + " (put an IPv6 address in brackets)")
    port = _check_port(value, port_text)
    if not host:
        return Address("0.0.0.0", port)
    if host.replace(".", "").isdigit() and host.count(".") == 3:
        try:
            return Address(str(ipaddress.IPv4Address(host)), port)
        except ValueError as exc:
            raise UnitError(value, ADDRESS_EXPECTED + f" ('{host}' is not IPv4)") from exc
    return Address(_check_hostname(value, host), port)
