"""The edge config: frozen pydantic models whose field names are the YAML keys.

Durations, sizes and addresses are parsed once, at load, into float seconds, int bytes and
:class:`~backhaul.config.units.Address`; regexes are compiled at load to prove they compile.
Lists are stored as tuples so a config is immutable.

Cross-checks that span several parts of the config (a route naming an unknown cluster,
duplicate listener addresses...) run in :class:`EdgeConfig`'s validator and report every
problem with its config path (see :class:`Problems`).
"""

from __future__ import annotations

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
    "AccessLog",
    "Admin",
    "Cluster",
    "ClusterTimeouts",
    "Duration",
    "EdgeConfig",
    "Endpoint",
    "Forwarding",
    "HeaderMatch",
    "ListenAddress",
    "Listener",
    "ListenerLimits",
    "ListenerTimeouts",
    "Pool",
    "PositiveDuration",
    "PositiveSize",
    "Problems",
    "ProxyAction",
    "RedirectAction",
    "RespondAction",
    "Route",
    "RouteLimits",
    "RouteMatch",
    "Size",
    "advisories",
    "cross_check",
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


class ProxyAction(_Model):
    """Forward to a cluster, optionally rewriting the path prefix and the Host."""

    cluster: str = Field(min_length=1)
    strip_prefix: str | None = Field(default=None, description="removed from the path front")
    rewrite_prefix: str | None = Field(default=None, description="put in its place")
    host_rewrite: str | None = Field(default=None, description="Host sent upstream")

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
    policy: Literal["round_robin"] = "round_robin"
    timeouts: ClusterTimeouts = Field(default_factory=ClusterTimeouts)
    pool: Pool = Field(default_factory=Pool)


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


def _one_of(names: Any) -> str:
    names = list(names)
    if not names:
        return "none is defined"
    return "one of " + ", ".join(repr(n) for n in names[:10]) + (" ..." if len(names) > 10 else "")


def _did_you_mean(name: str, names: Any) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def advisories(config: EdgeConfig) -> list[tuple[str, str]]:
    """Things that are valid but probably not meant: unused clusters, unreachable routes."""
    notes: list[tuple[str, str]] = []
    used = {route.proxy.cluster for route in config.routes if route.proxy is not None}
    for name in config.clusters:
        if name not in used:
            notes.append((f"clusters.{name}", "no route proxies to this cluster"))
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
