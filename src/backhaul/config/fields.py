"""The building blocks of the config models: the frozen base model, :class:`Problems`, and
the typed values that parse at load.

Each typed value is an ``Annotated`` type for pydantic: a validator that parses the YAML
form, a serializer that writes it back, and a JSON Schema for editors.

- :data:`Duration`, :data:`PositiveDuration`, :data:`WholeSeconds`: ``"5s"``, ``"250ms"``
  -> float (or int) seconds;
- :data:`Size`, :data:`PositiveSize`: ``"64KiB"`` -> int bytes;
- :data:`ListenAddress`: ``"127.0.0.1:8080"`` -> :class:`~backhaul.config.units.Address`;
- :data:`Percent`: ``20`` or ``"20%"`` -> float 0..100;
- :data:`StatusRanges`: ``"200-399"``, ``[200, 204]`` -> inclusive ``(low, high)`` tuples;
- :data:`RetryOn`: ``[connect-failure, reset, 503]`` -> a canonical tuple;
- :data:`Hosts`: exact or ``*.`` wildcard host names.

A validator raises ``ValueError`` (or :class:`Problems` for several, or nested, paths) whose
message says what was found and what was expected; the loader adds the path and the line.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, WithJsonSchema

from backhaul.config.units import (
    DURATION_EXPECTED,
    SIZE_EXPECTED,
    Address,
    UnitError,
    describe,
    format_duration,
    format_size,
    parse_address,
    parse_duration,
    parse_size,
)
from backhaul.vocabulary.status_ranges import (
    StatusRangeError,
    format_status_ranges,
    parse_status_ranges,
)

__all__ = [
    "ADDRESS_PATTERN",
    "AUTHORITY",
    "CHECK_PATH",
    "CONTROL",
    "COOKIE_PATH",
    "RETRY_CONDITIONS",
    "TOKEN",
    "ConfigModel",
    "Duration",
    "Hosts",
    "ListenAddress",
    "Percent",
    "PositiveDuration",
    "PositiveSize",
    "Problems",
    "RetryOn",
    "Size",
    "StatusRanges",
    "WholeSeconds",
    "compiles",
    "did_you_mean",
    "header_value",
    "one_of",
]


class Problems(ValueError):
    """Several ``(path, message)`` problems found by a cross-check; paths are relative to
    the model that raised it (the loader prefixes the model's own path)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p or '<top>'}: {m}" for p, m in problems))


# --------------------------------------------------------------------------- unit types

_DURATION_PATTERN = (
    r"^\s*(\d+(\.\d*)?|\.\d+)(\s*(ms|s|m|h)\s*)?((\d+(\.\d*)?|\.\d+)\s*(ms|s|m|h)\s*)*$"
)
_SIZE_PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*([KMGTkmgt][Ii]?[Bb]|[Bb])?\s*$"
ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):[0-9]{1,5}$"


def _duration(value: object) -> float:
    return parse_duration(value)


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise UnitError(value, DURATION_EXPECTED + " (greater than zero)")
    return seconds


def _size(value: object) -> int:
    return parse_size(value)


def _positive_size(value: object) -> int:
    size = parse_size(value)
    if size <= 0:
        raise UnitError(value, SIZE_EXPECTED + " (greater than zero)")
    return size


def _address(value: object) -> Address:
    return parse_address(value)


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": _DURATION_PATTERN},
        {"type": "number", "minimum": 0},
    ],
    "description": "A duration: '5s', '250ms', '1m', '1h', '1m30s' or seconds.",
}
_SIZE_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": _SIZE_PATTERN},
        {"type": "integer", "minimum": 0},
    ],
    "description": "A size in bytes: 512, '64KiB' (1024), '10MB' (1000), '1GiB'.",
}

Duration = Annotated[
    float,
    PlainValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]
"""Float seconds (zero allowed); written ``"5s"``, ``"250ms"``, ``"1m"`` or a number."""

PositiveDuration = Annotated[
    float,
    PlainValidator(_positive_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({**_DURATION_SCHEMA, "not": {"const": 0}}),
]
"""Like :data:`Duration`, but greater than zero."""

Size = Annotated[
    int,
    PlainValidator(_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema(_SIZE_SCHEMA),
]
"""Int bytes (zero allowed); written ``"64KiB"``, ``"10MB"``, ``"512"`` or an int."""

PositiveSize = Annotated[
    int,
    PlainValidator(_positive_size),
    PlainSerializer(format_size, return_type=str),
    WithJsonSchema({**_SIZE_SCHEMA, "not": {"const": 0}}),
]
"""Like :data:`Size`, but greater than zero."""

ListenAddress = Annotated[
    Address,
    PlainValidator(_address),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": ADDRESS_PATTERN,
            "description": "host:port: '127.0.0.1:8080', '[::1]:8080', ':8080', 'localhost:80'.",
        }
    ),
]
"""An :class:`Address`; written ``"127.0.0.1:8080"``, ``"[::1]:8080"`` or ``":8080"``."""


PERCENT_EXPECTED = "expected a percentage from 0 to 100, such as 20 or '20%'"
_PERCENT_TEXT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%?\s*")


def _percent(value: object) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        found = _PERCENT_TEXT.fullmatch(value)
        number = float(found.group(1)) if found else None
    if number is None or not (math.isfinite(number) and 0.0 <= number <= 100.0):
        raise UnitError(value, PERCENT_EXPECTED)
    return number


def _whole_seconds(value: object) -> int:
    seconds = parse_duration(value)
    if seconds != int(seconds):
        raise UnitError(value, DURATION_EXPECTED + " (whole seconds)")
    return int(seconds)


Percent = Annotated[
    float,
    PlainValidator(_percent),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 100},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d*)?|\.\d+)\s*%?\s*$"},
            ],
            "description": "A percentage from 0 to 100: 20 or '20%'.",
        }
    ),
]
"""Float percent, 0 to 100; written ``20``, ``12.5`` or ``"20%"``."""

WholeSeconds = Annotated[
    int,
    PlainValidator(_whole_seconds),
    PlainSerializer(lambda v: format_duration(float(v)), return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]
"""Int seconds; written like a :data:`Duration` (``"1h"``, ``"30m"``, ``3600``)."""

STATUSES_EXPECTED = (
    "expected statuses or ranges from 100 to 599, such as '200-399' or [200, 204, '300-308']"
)


def _status_ranges(value: object) -> tuple[tuple[int, int], ...]:
    parts: list[str] = []
    if isinstance(value, str):
        parts.append(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        parts.append(str(value))
    elif isinstance(value, list | tuple):
        if not value:
            raise ValueError(f"found an empty list: {STATUSES_EXPECTED}")
        for item in value:
            if isinstance(item, list | tuple) and len(item) == 2:  # (low, high), as stored
                low, high = item
                if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
                    parts.append(f"{low}-{high}")
                    continue
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise ValueError(f"found {describe(item)} in the list: {STATUSES_EXPECTED}")
            parts.append(str(item))
    else:
        raise ValueError(f"found {describe(value)}: {STATUSES_EXPECTED}")
    try:
        return parse_status_ranges(", ".join(parts))
    except StatusRangeError as exc:
        raise ValueError(str(exc)) from exc


StatusRanges = Annotated[
    tuple[tuple[int, int], ...],
    PlainValidator(_status_ranges),
    PlainSerializer(format_status_ranges, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*[1-5][0-9][0-9]"},
                {"type": "integer", "minimum": 100, "maximum": 599},
                {
                    "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    "minItems": 1,
                },
            ],
            "description": "Statuses and inclusive ranges: '200-399', '200, 204', [200, 204].",
        }
    ),
]
"""Inclusive ``(low, high)`` status ranges; written ``"200-399"``, ``"200, 204, 300-308"``,
``200`` or a list of those."""

RETRY_CONDITIONS: tuple[str, ...] = ("connect-failure", "reset")
"""What ``retry_on`` may name besides 5xx statuses (in their stored order)."""
_RETRY_ON_EXPECTED = "expected connect-failure, reset or a 5xx status such as 503"
_RETRY_ON_HINTS = {
    "timeout": "; a try that times out is retried when 504 is listed",
    "5xx": "; list the statuses, such as 502, 503, 504",
    "gateway-error": "; list the statuses, such as 502, 503, 504",
    "retriable-status-codes": "; list the statuses themselves, such as 503",
}


def _retry_on(value: object) -> tuple[str | int, ...]:
    single = isinstance(value, str)
    if isinstance(value, str):
        items: list[object] = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(
            f"found {describe(value)}: expected a list such as [connect-failure, reset, 503]"
        )
    conditions: set[str] = set()
    statuses: set[int] = set()
    problems: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        where = "" if single else f"[{i}]"
        status: int | None = None
        if isinstance(item, int) and not isinstance(item, bool):
            status = item
        elif isinstance(item, str):
            text = item.strip().lower()
            if text in RETRY_CONDITIONS:
                conditions.add(text)
                continue
            if text.isdigit():
                status = int(text)
            else:
                hint = _RETRY_ON_HINTS.get(text) or did_you_mean(
                    text.replace("_", "-"), RETRY_CONDITIONS
                )
                if not hint and text.replace("_", "-") in RETRY_CONDITIONS:
                    hint = f"; did you mean {text.replace('_', '-')!r}?"
                problems.append((where, f"found {describe(item)}: {_RETRY_ON_EXPECTED}{hint}"))
                continue
        if status is None:
            problems.append((where, f"found {describe(item)}: {_RETRY_ON_EXPECTED}"))
        elif not 500 <= status <= 599:
            problems.append(
                (
                    where,
                    f"found {status}: {_RETRY_ON_EXPECTED} (only 5xx answers are retried;"
                    " any other status is the upstream's final word)",
                )
            )
        else:
            statuses.add(status)
    if problems:
        raise Problems(problems)
    ordered: list[str | int] = [c for c in RETRY_CONDITIONS if c in conditions]
    ordered.extend(sorted(statuses))
    return tuple(ordered)


RetryOn = Annotated[
    tuple[str | int, ...],
    PlainValidator(_retry_on),
    PlainSerializer(list, return_type=list),
    WithJsonSchema(
        {
            "type": "array",
            "items": {
                "anyOf": [
                    {"enum": list(RETRY_CONDITIONS)},
                    {"type": "integer", "minimum": 500, "maximum": 599},
                ]
            },
            "description": "What is retried: connect-failure (any method: nothing was sent),"
            " reset (closed before the response head) and 5xx statuses (504 also covers a try"
            " that timed out).",
        }
    ),
]
"""``"connect-failure"``, ``"reset"`` (in that order) then int statuses, ascending."""


def compiles(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(
            f"found {describe(value)}: expected a regular expression that compiles ({exc})"
        ) from exc
    return value


CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?")


def header_value(value: str) -> str:
    """A value the edge puts in a header: no CR, LF, NUL or other control (RFC 9110 §5.5)."""
    bad = CONTROL.search(value)
    if bad is not None or value != value.strip(" \t"):
        what = f"the control character {bad.group()!r}" if bad else "surrounding whitespace"
        raise ValueError(
            f"found {describe(value)} with {what}: expected a header value"
            " (visible characters and inner spaces)"
        )
    return value


TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
COOKIE_PATH = re.compile(r"/[\x21-\x3a\x3c-\x7e]*")  # RFC 6265 §4.1.1 av-octets, no ';'
CHECK_PATH = re.compile(r"/[\x21-\x7e]*")  # origin-form without spaces or controls
_HOST_NAME = re.compile(
    r"(\*\.)?([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*"
)


def _host_pattern(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"found {describe(value)}: expected a host name such as 'example.com'")
    host = value.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        return host
    if _HOST_NAME.fullmatch(host):
        return host
    hint = ""
    if ":" in host:
        hint = " without a port (the port is ignored when matching)"
    elif "*" in host:
        hint = " (a wildcard is only allowed as a leading '*.', like '*.example.com')"
    raise ValueError(
        f"found {describe(value)}: expected a host name such as 'api.example.com' or"
        f" '*.example.com'{hint}"
    )


def _hosts(value: object) -> str | tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("found an empty list: expected at least one host (or no host key)")
        return tuple(_host_pattern(v) for v in value)
    return _host_pattern(value)


Hosts = Annotated[
    str | tuple[str, ...] | None,
    PlainValidator(_hosts),
    PlainSerializer(lambda v: list(v) if isinstance(v, tuple) else v),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
                {"type": "null"},
            ],
            "description": "Exact 'api.example.com' or wildcard '*.example.com' (any case,"
            " the request's port is ignored); a list matches any of them.",
        }
    ),
]


# --------------------------------------------------------------------------- base model


class ConfigModel(BaseModel):
    """Frozen, unknown keys refused, defaults validated (so they parse like YAML values)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def one_of(names: Any) -> str:
    """``one of 'a', 'b'`` (at most ten), or ``none is defined``."""
    names = list(names)
    if not names:
        return "none is defined"
    return "one of " + ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")


def did_you_mean(name: str, names: Any) -> str:
    """``; did you mean 'x'?`` when one of ``names`` is close to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
