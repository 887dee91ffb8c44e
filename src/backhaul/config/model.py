"""The edge config: frozen pydantic models whose field names are the YAML keys.

Durations, sizes and addresses are parsed once, at load, into float seconds, int bytes and
:class:`~backhaul.config.units.Address`; regexes are compiled at load to prove they compile.
Lists are stored as tuples so a config is immutable.

Cross-checks that span several parts of the config (a route naming an unknown cluster,
duplicate listener addresses...) run in :class:`EdgeConfig`'s validator and report every
problem with its config path (see :class:`Problems`).
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from backhaul.balance import (
    BalanceSettings,
    CheckSchedule,
    CircuitBreakers,
    HashKeySpec,
    HealthThresholds,
    HttpCheck,
    OutlierDetection,
    RetryBudget,
    RetryPolicy,
    SlowStart,
    StickyCookie,
)
from backhaul.balance.healthcheck import (
    StatusRangeError,
    format_status_ranges,
    parse_status_ranges,
)
from backhaul.balance.settings import is_prime
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

__all__ = [
    "HASH_POLICIES",
    "RETRY_CONDITIONS",
    "AccessLog",
    "Admin",
    "Backoff",
    "CircuitBreakerSettings",
    "Cluster",
    "ClusterRetries",
    "ClusterTimeouts",
    "Duration",
    "EdgeConfig",
    "Endpoint",
    "Forwarding",
    "HashKey",
    "HeaderMatch",
    "HealthChecks",
    "HttpHealthCheck",
    "LeastRequestSettings",
    "ListenAddress",
    "Listener",
    "ListenerLimits",
    "ListenerTimeouts",
    "MaglevSettings",
    "OutlierDetectionSettings",
    "Percent",
    "Policy",
    "Pool",
    "PositiveDuration",
    "PositiveSize",
    "Problems",
    "ProxyAction",
    "RedirectAction",
    "RespondAction",
    "Retries",
    "RetryBudgetSettings",
    "RetryOn",
    "RingHashSettings",
    "Route",
    "RouteLimits",
    "RouteMatch",
    "Size",
    "SlowStartSettings",
    "StatusRanges",
    "Sticky",
    "WholeSeconds",
    "advisories",
    "balance_settings",
    "cross_check",
    "retry_policy",
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
_ADDRESS_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):[0-9]{1,5}$"


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
            "pattern": _ADDRESS_PATTERN,
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
    elif isinstance(value, list | tuple) and value:
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
                hint = _RETRY_ON_HINTS.get(text) or _did_you_mean(
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


def _compiles(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(
            f"found {describe(value)}: expected a regular expression that compiles ({exc})"
        ) from exc
    return value


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?")


def _header_value(value: str) -> str:
    """A value the edge puts in a header: no CR, LF, NUL or other control (RFC 9110 §5.5)."""
    bad = _CONTROL.search(value)
    if bad is not None or value != value.strip(" \t"):
        what = f"the control character {bad.group()!r}" if bad else "surrounding whitespace"
        raise ValueError(
            f"found {describe(value)} with {what}: expected a header value"
            " (visible characters and inner spaces)"
        )
    return value


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
_COOKIE_PATH = re.compile(r"/[\x21-\x3a\x3c-\x7e]*")  # RFC 6265 §4.1.1 av-octets, no ';'
_CHECK_PATH = re.compile(r"/[\x21-\x7e]*")  # origin-form without spaces or controls
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


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class AccessLog(_Model):
    """One line per request; JSON objects or the combined log format."""

    enabled: bool = True
    path: str = Field(default="-", min_length=1, description="'-' = stdout, else a file path")
    format: Literal["json", "combined"] = "json"


class Admin(_Model):
    """The admin API listener."""

    address: ListenAddress = Field(default="127.0.0.1:9901")  # type: ignore[assignment]
    metrics_path: str = Field(default="/metrics", description="Prometheus text exposition")

    @field_validator("metrics_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not _CHECK_PATH.fullmatch(value):
            raise ValueError(
                f"found {describe(value)}: expected a path starting with '/' without spaces,"
                " such as '/metrics'"
            )
        return value


class ListenerLimits(_Model):
    """Request size limits; beyond them the edge answers 414, 431 or 413."""

    request_line: PositiveSize = Field(default="8KiB", description="414 beyond")  # type: ignore[assignment]
    header_bytes: PositiveSize = Field(default="64KiB", description="431 beyond")  # type: ignore[assignment]
    header_count: int = Field(default=100, ge=1, description="431 beyond")
    body: Size = Field(default="1GiB", description="413 beyond; routes may override it")  # type: ignore[assignment]


class ListenerTimeouts(_Model):
    """Downstream deadlines."""

    request_headers: PositiveDuration = Field(default="10s", description="whole request head (408)")  # type: ignore[assignment]
    body_idle: PositiveDuration = Field(
        default="30s", description="no body byte for this long (408)"
    )  # type: ignore[assignment]
    keepalive_idle: Duration = Field(default="60s", description="idle keep-alive closed after")  # type: ignore[assignment]
    drain: Duration = Field(default="30s", description="SIGTERM waits this long for requests")  # type: ignore[assignment]


class Forwarding(_Model):
    """Which forwarding headers the edge adds to proxied requests."""

    x_forwarded: bool = Field(default=True, description="X-Forwarded-For/-Proto/-Host")
    forwarded: bool = Field(default=False, description="RFC 7239 Forwarded")
    via: bool = Field(default=True, description="Via: 1.1 backhaul")
    request_id: bool = Field(default=True, description="X-Request-Id generated when absent")


class Listener(_Model):
    """An address the edge accepts on, with its protocol, limits and deadlines."""

    name: str = Field(default="", description="unique; default 'listener-<i>'")
    address: ListenAddress
    protocol: Literal["http"] = "http"
    limits: ListenerLimits = Field(default_factory=ListenerLimits)
    timeouts: ListenerTimeouts = Field(default_factory=ListenerTimeouts)
    forwarding: Forwarding = Field(default_factory=Forwarding)


class HeaderMatch(_Model):
    """A request header condition: exactly one of ``exact``, ``regex``, ``present``."""

    name: str
    exact: str | None = None
    regex: str | None = Field(default=None, description="full match on the value")
    present: bool | None = None

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        return _compiles(value)

    @field_validator("name")
    @classmethod
    def _token(cls, value: str) -> str:
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"found {describe(value)}: expected a header name such as 'x-env'")
        return value.lower()

    @model_validator(mode="after")
    def _one_condition(self) -> HeaderMatch:
        given = [k for k in ("exact", "regex", "present") if getattr(self, k) is not None]
        if len(given) != 1:
            found = " and ".join(given) if given else "none"
            raise ValueError(f"found {found}: expected exactly one of exact, regex, present")
        return self


class RouteMatch(_Model):
    """What a request must look like; an empty match takes everything."""

    host: Hosts = None
    path: str | None = Field(default=None, description="exact path")
    prefix: str | None = Field(default=None, description="path prefix (segment-unaware)")
    regex: str | None = Field(default=None, description="full-match regex on the path")
    methods: tuple[str, ...] | None = Field(default=None, min_length=1)
    headers: tuple[HeaderMatch, ...] = ()

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        return _compiles(value)

    @field_validator("path", "prefix")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"found {describe(value)}: expected a path starting with '/'")
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        for method in value:
            if not _TOKEN.fullmatch(method):
                raise ValueError(f"found {describe(method)}: expected a method such as 'GET'")
        return tuple(m.upper() for m in value)

    @model_validator(mode="after")
    def _one_path_kind(self) -> RouteMatch:
        given = [k for k in ("path", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(
                f"found {' and '.join(given)}: expected at most one of path, prefix, regex"
            )
        return self


# --------------------------------------------------------------------------- cluster policy
#
# These blocks carry what the constructors in backhaul.balance take, units parsed, with the
# YAML's names (see each class for its constructor). Each cluster is also built into those
# objects once at load (``_balance_problems``), so a config that loads always builds.

Policy = Literal[
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "least_request",
    "random",
    "ring_hash",
    "maglev",
]
HASH_POLICIES: tuple[str, ...] = ("ring_hash", "maglev")
MAX_MAGLEV_TABLE = 5_000_011
"""The largest maglev table balance accepts (a prime)."""


class HashKey(_Model):
    """Where ring_hash and maglev take a request's key (``HashKeySpec(source, name)``):
    a header or a cookie (``name`` required), the client address, or the path. A request
    without the key is spread round robin."""

    source: Literal["header", "cookie", "client_ip", "path"]
    name: str = Field(default="", description="the header or cookie name")

    @model_validator(mode="after")
    def _name_fits_source(self) -> HashKey:
        if self.source in ("header", "cookie"):
            example = "x-user-id" if self.source == "header" else "session"
            if not self.name:
                raise Problems(
                    [
                        (
                            "name",
                            f"found nothing: expected the {self.source} name to hash on,"
                            f" such as {example!r}",
                        )
                    ]
                )
            if not _TOKEN.fullmatch(self.name):
                raise Problems(
                    [
                        (
                            "name",
                            f"found {describe(self.name)}: expected a {self.source} name"
                            f" (letters, digits, '-', '_' ...), such as {example!r}",
                        )
                    ]
                )
            if self.source == "header" and self.name != self.name.lower():
                object.__setattr__(self, "name", self.name.lower())
        elif self.name:
            raise Problems(
                [
                    (
                        "name",
                        f"found {describe(self.name)}: expected no name with source"
                        f" {self.source} (a name goes with header or cookie)",
                    )
                ]
            )
        return self


class RingHashSettings(_Model):
    """ring_hash: points on the ring per unit of endpoint weight
    (``BalanceSettings.virtual_nodes``)."""

    virtual_nodes: int = Field(default=256, ge=1, le=65_536)


def _nearest_primes(n: int) -> str:
    below = next((k for k in range(min(n, MAX_MAGLEV_TABLE), 1, -1) if is_prime(k)), None)
    above = next(k for k in range(max(n, 2), MAX_MAGLEV_TABLE + 1) if is_prime(k))
    return ", ".join(str(k) for k in dict.fromkeys((below, above)) if k is not None)


class MaglevSettings(_Model):
    """maglev: the lookup table size (``BalanceSettings.maglev_table_size``), a prime much
    larger than the number of endpoints (100x or more keeps the spread within 1%)."""

    table_size: int = Field(default=65537, ge=2, le=MAX_MAGLEV_TABLE)

    @field_validator("table_size")
    @classmethod
    def _prime(cls, value: int) -> int:
        if not is_prime(value):
            raise ValueError(
                f"found {value}: expected a prime table size, such as 65537"
                f" (the nearest primes: {_nearest_primes(value)})"
            )
        return value


class LeastRequestSettings(_Model):
    """least_request: the time constant of the latency average
    (``BalanceSettings.latency_decay``, seconds)."""

    latency_decay: PositiveDuration = Field(default="10s")  # type: ignore[assignment]


class Sticky(_Model):
    """Sticky sessions by cookie (``StickyCookie(name=cookie, path, max_age, secure,
    http_only, same_site)``). ``max_age`` None makes a session cookie."""

    cookie: str = Field(default="backhaul_sticky", description="the cookie name")
    path: str = "/"
    max_age: WholeSeconds | None = Field(default=None, description="None = session cookie")
    secure: bool = False
    http_only: bool = True
    same_site: Literal["Lax", "Strict", "None"] | None = "Lax"

    @field_validator("cookie")
    @classmethod
    def _cookie_name(cls, value: str) -> str:
        if not _TOKEN.fullmatch(value):
            raise ValueError(
                f"found {describe(value)}: expected a cookie name (letters, digits, '-', '_'"
                " ...), such as 'backhaul_sticky'"
            )
        return value

    @field_validator("path")
    @classmethod
    def _cookie_path(cls, value: str) -> str:
        if not _COOKIE_PATH.fullmatch(value):
            raise ValueError(
                f"found {describe(value)}: expected a path starting with '/' without ';',"
                " spaces or control characters"
            )
        return value

    @field_validator("same_site", mode="before")
    @classmethod
    def _same_site_case(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"lax": "Lax", "strict": "Strict", "none": "None"}.get(value.lower(), value)
        return value

    @model_validator(mode="after")
    def _none_needs_secure(self) -> Sticky:
        if self.same_site == "None" and not self.secure:
            raise Problems(
                [
                    (
                        "same_site",
                        "found 'None' without secure: true: browsers drop such cookies;"
                        " set secure: true or same_site: Lax",
                    )
                ]
            )
        return self


class SlowStartSettings(_Model):
    """After an endpoint becomes healthy its weight ramps from ``min_weight_percent`` to
    100% over ``window`` (``SlowStart(window, min_weight_percent)``); 0s = off."""

    window: Duration = Field(default="0s", description="0s = off")  # type: ignore[assignment]
    min_weight_percent: Percent = 10.0

    @field_validator("min_weight_percent")
    @classmethod
    def _above_zero(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"found {value:g}: expected a percentage greater than 0, up to 100")
        return value


class HttpHealthCheck(_Model):
    """What an HTTP check sends and what passes (``HttpCheck(path, method, host,
    statuses=expected_statuses, body_contains, body_regex, body_limit)``)."""

    path: str = "/"
    method: str = "GET"
    host: str | None = Field(default=None, description="Host header; default the endpoint's")
    expected_statuses: StatusRanges = Field(
        default=((200, 399),), json_schema_extra={"default": "200-399"}
    )
    body_contains: str | None = Field(default=None, min_length=1)
    body_regex: str | None = Field(default=None, description="searched in the body start")
    body_limit: PositiveSize = Field(default="64KiB", description="body bytes looked at")  # type: ignore[assignment]

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not _CHECK_PATH.fullmatch(value):
            raise ValueError(
                f"found {describe(value)}: expected a path starting with '/' without spaces,"
                " such as '/healthz'"
            )
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"found {describe(value)}: expected a method such as 'GET'")
        return value.upper()

    @field_validator("host")
    @classmethod
    def _authority(cls, value: str | None) -> str | None:
        if value is not None and not _AUTHORITY.fullmatch(value):
            raise ValueError(
                f"found {describe(value)}: expected a host with an optional port, such as"
                " 'api.internal'"
            )
        return value

    @field_validator("body_regex")
    @classmethod
    def _bytes_regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            re.compile(value.encode())  # the check searches the body's bytes
        except re.error as exc:
            raise ValueError(
                f"found {describe(value)}: expected a regular expression that compiles ({exc})"
            ) from exc
        return value


class HealthChecks(_Model):
    """Active health checks: an HTTP request or a TCP connect per endpoint every
    ``interval`` (+ up to ``jitter``), each within ``timeout``
    (``CheckSchedule(interval, timeout, jitter, unhealthy_interval)``); ``healthy_threshold``
    passes in a row make an endpoint healthy, ``unhealthy_threshold`` failures unhealthy
    (``HealthThresholds``). ``http`` is filled in with its defaults for type http and is
    None for tcp."""

    type: Literal["http", "tcp"] = "http"
    interval: PositiveDuration = Field(default="5s")  # type: ignore[assignment]
    timeout: PositiveDuration = Field(default="2s")  # type: ignore[assignment]
    jitter: Duration = Field(default="0s", description="random extra delay, up to")  # type: ignore[assignment]
    unhealthy_interval: PositiveDuration | None = Field(
        default=None, description="while not healthy; default: interval"
    )
    healthy_threshold: int = Field(default=2, ge=1, le=1000)
    unhealthy_threshold: int = Field(default=3, ge=1, le=1000)
    http: HttpHealthCheck | None = None

    @model_validator(mode="before")
    @classmethod
    def _http_defaults(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and data.get("type", "http") == "http"
            and data.get("http") is None
        ):
            return {**data, "http": {}}
        return data

    @model_validator(mode="after")
    def _http_only_for_http(self) -> HealthChecks:
        if self.type == "tcp" and self.http is not None:
            raise Problems(
                [
                    (
                        "http",
                        "found http settings with type tcp: expected them only with"
                        " type: http (remove http, or set type: http)",
                    )
                ]
            )
        return self


class OutlierDetectionSettings(_Model):
    """Passive health: eject an endpoint after consecutive 5xx or connect failures on real
    traffic, for ``base_ejection_time`` x the number of ejections in a row (at most
    ``max_ejection_time``). 0 turns a trigger off (``OutlierDetection``, same names)."""

    consecutive_5xx: int = Field(default=5, ge=0, le=1000, description="0 = off")
    consecutive_connect_failures: int = Field(default=5, ge=0, le=1000, description="0 = off")
    base_ejection_time: PositiveDuration = Field(default="30s")  # type: ignore[assignment]
    max_ejection_time: PositiveDuration = Field(default="300s")  # type: ignore[assignment]
    max_ejection_percent: Percent = 10.0
    decay_interval: PositiveDuration = Field(default="10s")  # type: ignore[assignment]

    @model_validator(mode="after")
    def _max_not_below_base(self) -> OutlierDetectionSettings:
        if self.max_ejection_time < self.base_ejection_time:
            raise Problems(
                [
                    (
                        "max_ejection_time",
                        f"found {format_duration(self.max_ejection_time)}:"
                        " expected at least base_ejection_time"
                        f" ({format_duration(self.base_ejection_time)})",
                    )
                ]
            )
        return self


class Backoff(_Model):
    """Retries wait a random time in ``[0, min(max, base * 2**(n-1)))`` first ("full
    jitter"; ``RetryPolicy(backoff_base=base, backoff_max=max)``)."""

    base: PositiveDuration = Field(default="25ms")  # type: ignore[assignment]
    max: PositiveDuration = Field(default="250ms")  # type: ignore[assignment]


class RetryBudgetSettings(_Model):
    """Retries in flight stay within ``percent`` of the cluster's active requests, but
    ``min_retry_concurrency`` are always allowed (``RetryBudget(budget_percent=percent,
    min_retry_concurrency)``)."""

    percent: Percent = 20.0
    min_retry_concurrency: int = Field(default=3, ge=0, le=100_000)


class Retries(_Model):
    """When a failed try is tried again on another endpoint (``RetryPolicy``):
    ``retry_on`` names what is retried — ``connect-failure`` (any method: nothing was sent),
    ``reset`` (closed before the response head) and 5xx statuses (504 also retries a try
    that timed out) — for idempotent methods unless the route sets
    ``retry_non_idempotent``. Default: one retry on connect-failure and reset, like nginx's
    ``proxy_next_upstream error``; statuses are opt-in because a 503 is often an
    overloaded upstream asking for less traffic."""

    max_retries: int = Field(default=1, ge=0, le=10, description="0 = no retries")
    retry_on: RetryOn = Field(default=("connect-failure", "reset"))
    per_try_timeout: PositiveDuration | None = Field(
        default=None, description="deadline of each try; default: the cluster's timeouts"
    )
    backoff: Backoff = Field(default_factory=Backoff)


class ClusterRetries(Retries):
    """A cluster's retries; routes may override all but the ``budget`` (one per cluster)."""

    budget: RetryBudgetSettings = Field(default_factory=RetryBudgetSettings)


class CircuitBreakerSettings(_Model):
    """Caps per cluster (per worker); past one the edge answers 503 at once
    (``CircuitBreakers``, same names; Envoy's defaults)."""

    max_connections: int = Field(default=1024, ge=1, le=10_000_000)
    max_pending: int = Field(default=1024, ge=1, le=10_000_000)
    max_requests: int = Field(default=1024, ge=1, le=10_000_000)


class ProxyAction(_Model):
    """Forward to a cluster, optionally rewriting the path prefix and the Host."""

    cluster: str = Field(min_length=1)
    strip_prefix: str | None = Field(default=None, description="removed from the path front")
    rewrite_prefix: str | None = Field(default=None, description="put in its place")
    host_rewrite: str | None = Field(default=None, description="Host sent upstream")
    retries: Retries | None = Field(
        default=None,
        description="overrides the cluster's retries key by key; None = the cluster's",
    )
    retry_non_idempotent: bool = Field(
        default=False, description="retry POST, PATCH ... too (the route knows they are safe)"
    )

    @field_validator("retries", mode="before")
    @classmethod
    def _no_budget(cls, value: Any) -> Any:
        if isinstance(value, dict) and "budget" in value:
            raise Problems(
                [
                    (
                        "budget",
                        "found a retry budget on a route: expected it on the cluster"
                        " (one budget per cluster; set clusters.<name>.retries.budget)",
                    )
                ]
            )
        return value

    @field_validator("host_rewrite")
    @classmethod
    def _authority(cls, value: str | None) -> str | None:
        if value is not None and not _AUTHORITY.fullmatch(value):
            raise ValueError(
                f"found {describe(value)}: expected a host with an optional port, such as"
                " 'api.internal' or 'api.internal:8443'"
            )
        return value

    @field_validator("strip_prefix", "rewrite_prefix")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"found {describe(value)}: expected a path starting with '/'")
        return value


class RedirectAction(_Model):
    """Answer with a redirect; ``{path}`` and ``{query}`` in ``to`` expand."""

    to: str = Field(min_length=1, description="absolute URL or path")
    status: Literal[301, 302, 303, 307, 308] = 302

    @field_validator("to")
    @classmethod
    def _target(cls, value: str) -> str:
        if _CONTROL.search(value) or any(c.isspace() for c in value):
            raise ValueError(
                f"found {describe(value)}: expected a URL without spaces or control characters"
            )
        if not value.startswith(("/", "http://", "https://", "{path}")):
            raise ValueError(
                f"found {describe(value)}: expected an absolute URL ('https://...') or a path"
                " starting with '/'"
            )
        return value


class RespondAction(_Model):
    """Answer directly, without an upstream."""

    status: int = Field(default=200, ge=200, le=599)
    body: str = ""
    content_type: str = Field(default="text/plain; charset=utf-8", min_length=1)

    @field_validator("content_type")
    @classmethod
    def _header(cls, value: str) -> str:
        return _header_value(value)


class RouteLimits(_Model):
    """Per-route overrides of the listener limits."""

    body: Size | None = None


class Route(_Model):
    """A match leading to exactly one action: proxy, redirect or respond."""

    name: str = Field(default="", description="default 'route-<i>'")
    listeners: tuple[str, ...] | None = Field(
        default=None, min_length=1, description="only on these listeners; default: all"
    )
    match: RouteMatch = Field(default_factory=RouteMatch)
    proxy: ProxyAction | None = None
    redirect: RedirectAction | None = None
    respond: RespondAction | None = None
    limits: RouteLimits | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        given = [k for k in ("proxy", "redirect", "respond") if getattr(self, k) is not None]
        if len(given) != 1:
            found = " and ".join(given) if given else "no action"
            raise ValueError(
                f"found {found}: expected exactly one action: proxy, redirect or respond"
            )
        return self


class Endpoint(_Model):
    """One upstream: an address or a built-in demo origin. A string is short for
    ``{address: ...}``."""

    address: ListenAddress | None = None
    builtin: Literal["echo"] | None = None
    weight: int = Field(default=1, ge=1, le=10_000)
    drain: bool = Field(default=False, description="present but takes no new requests")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"address": data}
        return data

    @model_validator(mode="after")
    def _one_target(self) -> Endpoint:
        if (self.address is None) == (self.builtin is None):
            found = "address and builtin" if self.address is not None else "neither"
            raise ValueError(f"found {found}: expected exactly one of address, builtin")
        if self.address is not None and self.address.port == 0:
            raise Problems(
                [("address", f"found {describe(str(self.address))}: expected a port 1-65535")]
            )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        mapping = handler(schema)
        return {
            "anyOf": [
                {"type": "string", "pattern": _ADDRESS_PATTERN, "description": "an address"},
                mapping,
            ]
        }


class ClusterTimeouts(_Model):
    """Upstream deadlines."""

    connect: PositiveDuration = Field(default="5s")  # type: ignore[assignment]
    response_headers: PositiveDuration = Field(default="30s")  # type: ignore[assignment]
    body_idle: PositiveDuration = Field(default="60s")  # type: ignore[assignment]


class Pool(_Model):
    """Upstream keep-alive connection pool, per endpoint."""

    max_idle: int = Field(default=64, ge=0, description="idle connections kept per endpoint")
    idle_timeout: PositiveDuration = Field(default="60s")  # type: ignore[assignment]


class Cluster(_Model):
    """A named pool of upstream endpoints with a balancing policy."""

    endpoints: tuple[Endpoint, ...] = Field(min_length=1)
    policy: Policy = "round_robin"
    timeouts: ClusterTimeouts = Field(default_factory=ClusterTimeouts)
    pool: Pool = Field(default_factory=Pool)
    hash_key: HashKey | None = Field(default=None, description="ring_hash and maglev")
    ring_hash: RingHashSettings = Field(default_factory=RingHashSettings)
    maglev: MaglevSettings = Field(default_factory=MaglevSettings)
    least_request: LeastRequestSettings = Field(default_factory=LeastRequestSettings)
    sticky: Sticky | None = Field(default=None, description="None = no sticky sessions")
    slow_start: SlowStartSettings = Field(default_factory=SlowStartSettings)
    panic_threshold: Percent = Field(
        default=50.0, description="below this % healthy, balance over all; 0 = never"
    )
    health_checks: HealthChecks | None = Field(default=None, description="None = no checks")
    outlier_detection: OutlierDetectionSettings | None = Field(
        default=None, description="None = no passive ejection"
    )
    retries: ClusterRetries = Field(default_factory=ClusterRetries)
    circuit_breakers: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)

    @model_validator(mode="after")
    def _consistent(self) -> Cluster:
        problems: list[tuple[str, str]] = []
        if self.sticky is not None and self.policy in HASH_POLICIES:
            problems.append(
                (
                    "sticky",
                    f"found sticky with policy {self.policy}: expected one way to pin clients;"
                    f" {self.policy} already keeps a hash_key on one endpoint (remove sticky,"
                    " or choose a policy such as least_request)",
                )
            )
        seen: dict[Address, int] = {}
        for i, endpoint in enumerate(self.endpoints):
            if endpoint.address is None:
                continue
            if endpoint.address in seen:
                problems.append(
                    (
                        f"endpoints[{i}].address",
                        f"found {describe(str(endpoint.address))} again (endpoints"
                        f"[{seen[endpoint.address]}] has it): expected each address once"
                        " (raise its weight instead)",
                    )
                )
            else:
                seen[endpoint.address] = i
        backoff = _backoff_problem(self.retries)
        if backoff is not None:
            problems.append(("retries." + backoff[0], backoff[1]))
        if not problems:
            problems.extend(_balance_problems(self))
        if problems:
            raise Problems(problems)
        return self


class EdgeConfig(_Model):
    """The whole edge config: listeners, routes (first match wins), clusters."""

    server_header: str = Field(default="backhaul", description="Server header; '' = none")
    workers: int | None = Field(default=None, ge=1, le=1024, description="None = CPU count")
    access_log: AccessLog = Field(default_factory=AccessLog)
    admin: Admin | None = None
    listeners: tuple[Listener, ...] = Field(min_length=1)
    routes: tuple[Route, ...] = ()
    clusters: dict[str, Cluster] = Field(default_factory=dict)

    @field_validator("server_header")
    @classmethod
    def _header(cls, value: str) -> str:
        return _header_value(value)

    @model_validator(mode="before")
    @classmethod
    def _default_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, prefix in (("listeners", "listener"), ("routes", "route")):
            items = out.get(key)
            if not isinstance(items, list | tuple):
                continue
            named: list[Any] = []
            for i, item in enumerate(items):
                if isinstance(item, dict) and item.get("name") is None:
                    item = {**item, "name": f"{prefix}-{i}"}
                elif isinstance(item, Listener | Route) and not item.name:
                    item = item.model_copy(update={"name": f"{prefix}-{i}"})
                named.append(item)
            out[key] = named
        return out

    @model_validator(mode="after")
    def _cross_check(self) -> EdgeConfig:
        problems = cross_check(self)
        if not problems:
            routes, problems = _resolve_route_retries(self)
            # Still inside validation: the frozen model is not out yet. Routes that override
            # retries now carry the effective policy, so the edge reads one block.
            object.__setattr__(self, "routes", routes)
        if problems:
            raise Problems(problems)
        return self

    def listener(self, name: str) -> Listener:
        """The listener called ``name`` (KeyError if none)."""
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)


def _overlap(a: Address, b: Address) -> bool:
    if a.port != b.port or a.port == 0:
        return False
    if a.host == b.host:
        return True
    v6_any = "::"
    if v6_any in (a.host, b.host):
        return True  # a dual-stack [::] socket also takes IPv4
    if "0.0.0.0" in (a.host, b.host):
        other = b.host if a.host == "0.0.0.0" else a.host
        return ":" not in other
    return False


def cross_check(config: EdgeConfig) -> list[tuple[str, str]]:
    """Problems that span several parts of ``config``, each with its config path."""
    problems: list[tuple[str, str]] = []
    seen_names: dict[str, int] = {}
    for i, listener in enumerate(config.listeners):
        if not listener.name.strip():
            problems.append((f"listeners[{i}].name", "found an empty string: expected a name"))
        elif listener.name in seen_names:
            first = seen_names[listener.name]
            problems.append(
                (
                    f"listeners[{i}].name",
                    f"found {describe(listener.name)} again (listeners[{first}] has it):"
                    " expected a unique listener name",
                )
            )
        else:
            seen_names[listener.name] = i
        for j in range(i):
            other = config.listeners[j].address
            if _overlap(listener.address, other):
                same = listener.address == other
                why = "the same address" if same else f"{other} takes that port too"
                problems.append(
                    (
                        f"listeners[{i}].address",
                        f"found {describe(str(listener.address))}, which overlaps"
                        f" listeners[{j}] ({why}): expected a distinct address per listener",
                    )
                )
                break
    if config.admin is not None:
        for j, listener in enumerate(config.listeners):
            if _overlap(config.admin.address, listener.address):
                problems.append(
                    (
                        "admin.address",
                        f"found {describe(str(config.admin.address))}, which overlaps"
                        f" listeners[{j}] ({listener.address}): expected an address of its own",
                    )
                )
                break
    route_names: dict[str, int] = {}
    for i, route in enumerate(config.routes):
        if not route.name.strip():
            problems.append((f"routes[{i}].name", "found an empty string: expected a name"))
        elif route.name in route_names:
            problems.append(
                (
                    f"routes[{i}].name",
                    f"found {describe(route.name)} again (routes[{route_names[route.name]}]"
                    " has it): expected a unique route name",
                )
            )
        else:
            route_names[route.name] = i
        for j, name in enumerate(route.listeners or ()):
            if name not in seen_names:
                problems.append(
                    (
                        f"routes[{i}].listeners[{j}]",
                        f"found {describe(name)}: expected a listener name"
                        f" ({_one_of(seen_names)}){_did_you_mean(name, seen_names)}",
                    )
                )
        if route.proxy is not None and route.proxy.cluster not in config.clusters:
            name = route.proxy.cluster
            problems.append(
                (
                    f"routes[{i}].proxy.cluster",
                    f"found {describe(name)}: expected a cluster defined under clusters"
                    f" ({_one_of(config.clusters)}){_did_you_mean(name, config.clusters)}",
                )
            )
    for name in config.clusters:
        if not name.strip():
            problems.append(("clusters", "found an empty cluster name: expected a name"))
    return problems


def _backoff_problem(retries: Retries) -> tuple[str, str] | None:
    """``(path, message)`` when the backoff's base is above its max."""
    backoff = retries.backoff
    if backoff.base > backoff.max:
        return (
            "backoff.base",
            f"found {format_duration(backoff.base)}, above backoff.max"
            f" ({format_duration(backoff.max)}): expected base <= max",
        )
    return None


def retry_policy(retries: Retries, non_idempotent: bool = False) -> RetryPolicy:
    """The :class:`~backhaul.balance.RetryPolicy` of a ``retries`` block (a route's
    ``proxy.retries`` or its cluster's), ``non_idempotent`` from the route's
    ``retry_non_idempotent``."""
    return RetryPolicy(
        max_retries=retries.max_retries,
        connect_failure="connect-failure" in retries.retry_on,
        reset="reset" in retries.retry_on,
        statuses=frozenset(x for x in retries.retry_on if isinstance(x, int)),
        non_idempotent=non_idempotent,
        per_try_timeout=retries.per_try_timeout,
        backoff_base=retries.backoff.base,
        backoff_max=retries.backoff.max,
    )


def balance_settings(cluster: Cluster) -> BalanceSettings:
    """The :class:`~backhaul.balance.BalanceSettings` of ``cluster`` (what ``make_balancer``
    takes besides the endpoints)."""
    checks = cluster.health_checks
    outlier = cluster.outlier_detection
    return BalanceSettings(
        policy=cluster.policy,
        health=HealthThresholds(
            healthy_threshold=checks.healthy_threshold if checks else 2,
            unhealthy_threshold=checks.unhealthy_threshold if checks else 3,
        ),
        outlier=None
        if outlier is None
        else OutlierDetection(
            consecutive_5xx=outlier.consecutive_5xx,
            consecutive_connect_failures=outlier.consecutive_connect_failures,
            base_ejection_time=outlier.base_ejection_time,
            max_ejection_time=outlier.max_ejection_time,
            max_ejection_percent=outlier.max_ejection_percent,
            decay_interval=outlier.decay_interval,
        ),
        slow_start=SlowStart(
            window=cluster.slow_start.window,
            min_weight_percent=cluster.slow_start.min_weight_percent,
        ),
        panic_threshold=cluster.panic_threshold,
        virtual_nodes=cluster.ring_hash.virtual_nodes,
        maglev_table_size=cluster.maglev.table_size,
        latency_decay=cluster.least_request.latency_decay,
    )


def _balance_problems(cluster: Cluster) -> list[tuple[str, str]]:
    """Build every balance object of ``cluster`` once, so that a config that loads always
    builds in the edge; a refusal here is a check this module lacks (each is reported
    against its block)."""
    builds: list[tuple[str, Any]] = [
        ("", lambda: balance_settings(cluster)),
        ("retries", lambda: retry_policy(cluster.retries)),
        (
            "retries.budget",
            lambda: RetryBudget(
                cluster.retries.budget.percent, cluster.retries.budget.min_retry_concurrency
            ),
        ),
        (
            "circuit_breakers",
            lambda: CircuitBreakers(**dict(cluster.circuit_breakers)),
        ),
    ]
    if cluster.hash_key is not None:
        key = cluster.hash_key
        builds.append(("hash_key", lambda: HashKeySpec(key.source, key.name)))
    if cluster.sticky is not None:
        sticky = cluster.sticky
        builds.append(
            (
                "sticky",
                lambda: StickyCookie(
                    name=sticky.cookie,
                    path=sticky.path,
                    max_age=sticky.max_age,
                    secure=sticky.secure,
                    http_only=sticky.http_only,
                    same_site=sticky.same_site,
                ),
            )
        )
    if cluster.health_checks is not None:
        checks = cluster.health_checks
        builds.append(
            (
                "health_checks",
                lambda: CheckSchedule(
                    checks.interval, checks.timeout, checks.jitter, checks.unhealthy_interval
                ),
            )
        )
        if checks.http is not None:
            http = checks.http
            builds.append(
                (
                    "health_checks.http",
                    lambda: HttpCheck(
                        path=http.path,
                        method=http.method,
                        host=http.host,
                        statuses=http.expected_statuses,
                        body_contains=http.body_contains,
                        body_regex=http.body_regex,
                        body_limit=http.body_limit,
                    ),
                )
            )
    problems: list[tuple[str, str]] = []
    for path, build in builds:
        try:
            build()
        except ValueError as exc:
            problems.append((path, f"refused by the balancer: {exc}"))
    return problems


def _merged_retries(base: Retries, override: Retries) -> Retries:
    """``base`` with the keys ``override`` sets (backoff key by key)."""
    values: dict[str, Any] = {name: getattr(base, name) for name in Retries.model_fields}
    for name in override.model_fields_set:
        if name == "backoff":
            backoff = {k: getattr(base.backoff, k) for k in Backoff.model_fields}
            backoff.update(
                {k: getattr(override.backoff, k) for k in override.backoff.model_fields_set}
            )
            values["backoff"] = Backoff.model_validate(backoff)
        else:
            values[name] = getattr(override, name)
    return Retries.model_validate(values)


def _resolve_route_retries(
    config: EdgeConfig,
) -> tuple[tuple[Route, ...], list[tuple[str, str]]]:
    """Routes whose ``proxy.retries`` is the effective policy (the cluster's with the
    route's keys), and the problems of those merged policies."""
    routes: list[Route] = []
    problems: list[tuple[str, str]] = []
    changed = False
    for i, route in enumerate(config.routes):
        proxy = route.proxy
        cluster = config.clusters.get(proxy.cluster) if proxy is not None else None
        if proxy is None or proxy.retries is None or cluster is None:
            routes.append(route)
            continue
        merged = _merged_retries(cluster.retries, proxy.retries)
        backoff = _backoff_problem(merged)
        if backoff is not None:
            path, message = backoff
            problems.append(
                (f"routes[{i}].proxy.retries.{path}", message + " (with the cluster's retries)")
            )
        new_proxy = proxy.model_copy(update={"retries": merged})
        routes.append(route.model_copy(update={"proxy": new_proxy}))
        changed = True
    return (tuple(routes) if changed else config.routes), problems


def _one_of(names: Any) -> str:
    names = list(names)
    if not names:
        return "none is defined"
    return "one of " + ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")


def _did_you_mean(name: str, names: Any) -> str:
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def advisories(config: EdgeConfig) -> list[tuple[str, str]]:
    """Things that are valid but probably not meant: unused clusters, unreachable routes."""
    notes: list[tuple[str, str]] = []
    used = {route.proxy.cluster for route in config.routes if route.proxy is not None}
    for name in config.clusters:
        if name not in used:
            notes.append((f"clusters.{name}", "no route proxies to this cluster"))
    for name, cluster in config.clusters.items():
        notes.extend((f"clusters.{name}{path}", text) for path, text in _cluster_notes(cluster))
    for i, route in enumerate(config.routes):
        proxy = route.proxy
        target = config.clusters.get(proxy.cluster) if proxy is not None else None
        if proxy is None or target is None:
            continue
        retries = proxy.retries or target.retries
        if proxy.retry_non_idempotent and (
            retries.max_retries == 0 or retries.retry_on in ((), ("connect-failure",))
        ):
            notes.append(
                (
                    f"routes[{i}].proxy.retry_non_idempotent",
                    "has no effect: this route retries nothing but connect failures, which are"
                    " retried for every method",
                )
            )
        per_try = retries.per_try_timeout
        if per_try is not None and per_try >= target.timeouts.response_headers:
            notes.append(
                (
                    f"routes[{i}].proxy.retries.per_try_timeout"
                    if proxy.retries is not None
                    else f"clusters.{proxy.cluster}.retries.per_try_timeout",
                    f"{format_duration(per_try)} is not shorter than the cluster's"
                    " timeouts.response_headers"
                    f" ({format_duration(target.timeouts.response_headers)}), so it never"
                    " ends a try first",
                )
            )
    catch_all: tuple[int, Route] | None = None
    for i, route in enumerate(config.routes):
        if catch_all is not None:
            j, first = catch_all
            notes.append(
                (
                    f"routes[{i}]",
                    f"never matched: routes[{j}] ({first.name!r}) above it matches everything",
                )
            )
            continue
        if route.match == RouteMatch() and catch_all is None and route.listeners is None:
            catch_all = (i, route)
    return notes


def _cluster_notes(cluster: Cluster) -> list[tuple[str, str]]:
    """Advisories of one cluster, paths relative to it."""
    notes: list[tuple[str, str]] = []
    policy = cluster.policy
    hashing = policy in HASH_POLICIES
    if cluster.hash_key is not None and not hashing:
        notes.append(
            (".hash_key", f"is used only by ring_hash and maglev; policy {policy} ignores it")
        )
    if hashing and cluster.hash_key is None:
        notes.append(
            (
                ".policy",
                f"{policy} without hash_key spreads requests round robin; set hash_key to keep"
                " each key on one endpoint",
            )
        )
    for block in ("ring_hash", "maglev", "least_request"):
        if block in cluster.model_fields_set and policy != block:
            notes.append((f".{block}", f"is used only by policy {block}; {policy} ignores it"))
    if policy == "round_robin" and any(ep.weight != 1 for ep in cluster.endpoints):
        notes.append(
            (
                ".policy",
                "round_robin ignores endpoint weights; use weighted_round_robin to honour them",
            )
        )
    if all(ep.drain for ep in cluster.endpoints):
        notes.append(
            (".endpoints", "every endpoint drains: the cluster answers 503 to new requests")
        )
    if policy == "maglev" and cluster.maglev.table_size < 100 * len(cluster.endpoints):
        notes.append(
            (
                ".maglev.table_size",
                f"{cluster.maglev.table_size} is under 100 slots per endpoint: the load spread"
                " is uneven; use a larger prime such as 65537",
            )
        )
    if hashing and cluster.slow_start.window > 0:
        notes.append(
            (
                ".slow_start",
                f"{policy} keeps keys where they are and does not ramp weights; slow_start is"
                " ignored",
            )
        )
    outlier = cluster.outlier_detection
    if outlier is not None and outlier.consecutive_5xx == outlier.consecutive_connect_failures == 0:
        notes.append(
            (
                ".outlier_detection",
                "both triggers are 0 (off): nothing is ever ejected",
            )
        )
    return notes
