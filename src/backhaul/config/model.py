"""The edge config: frozen pydantic models whose field names are the YAML keys.

Durations, sizes and addresses are parsed once, at load, into float seconds, int bytes and
:class:`~backhaul.config.units.Address`; regexes are compiled at load to prove they compile.
Lists are stored as tuples so a config is immutable. The typed values live in
:mod:`backhaul.config.fields`, a cluster's balancing, health and resilience blocks in
:mod:`backhaul.config.cluster_policy`; both are re-exported here.

Cross-checks that span several parts of the config (a route naming an unknown cluster,
duplicate listener addresses...) run in :class:`EdgeConfig`'s validator and report every
problem with its config path (see :class:`Problems`). That validator also resolves each
route's ``proxy.retries`` override against its cluster's retries, so the edge reads the
effective policy from one block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from backhaul.config.cluster_policy import (
    HASH_POLICIES,
    Backoff,
    CircuitBreakerSettings,
    ClusterRetries,
    HashKey,
    HealthChecks,
    HttpHealthCheck,
    LeastRequestSettings,
    MaglevSettings,
    OutlierDetectionSettings,
    Policy,
    Retries,
    RetryBudgetSettings,
    RingHashSettings,
    SlowStartSettings,
    Sticky,
    backoff_problem,
    cluster_advisories,
    merged_retries,
)
from backhaul.config.dhcp import DhcpConfig
from backhaul.config.dns import DnsConfig, EndpointsFrom
from backhaul.config.fields import (
    ADDRESS_PATTERN,
    AUTHORITY,
    CHECK_PATH,
    CONTROL,
    RETRY_CONDITIONS,
    TOKEN,
    ConfigModel,
    Duration,
    Hosts,
    ListenAddress,
    Percent,
    PositiveDuration,
    PositiveSize,
    Problems,
    RetryOn,
    Size,
    StatusRanges,
    WholeSeconds,
    compiles,
    did_you_mean,
    header_value,
    one_of,
)
from backhaul.config.tls import ClientCertMatch, Hsts, ListenerTls, RedirectHttps, UpstreamTls
from backhaul.config.units import Address, describe, format_duration
from backhaul.http.compression import DEFAULT_LEVEL, DEFAULT_MIN_LENGTH, DEFAULT_TYPES
from backhaul.http.filters import NOT_EDITABLE
from backhaul.http.redirect import RedirectTemplate, parse_redirect

__all__ = [
    "CONFIG_DIR",
    "HASH_POLICIES",
    "RETRY_CONDITIONS",
    "AccessLog",
    "Admin",
    "Backoff",
    "CircuitBreakerSettings",
    "Cluster",
    "ClusterRetries",
    "ClusterTimeouts",
    "Compress",
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
    "cross_check",
    "cross_check_parts",
    "default_names",
    "route_retries",
]


#: Validation context key: the folder of the config file, for the paths in it.
CONFIG_DIR = "config_dir"

# --------------------------------------------------------------------------- models


class AccessLog(ConfigModel):
    """One line per request; JSON objects or the combined log format."""

    enabled: bool = True
    path: str = Field(
        default="-",
        min_length=1,
        description="'-' = stdout, else a file path (a relative one is in the config's folder)",
    )
    format: Literal["json", "combined"] = "json"

    @field_validator("path")
    @classmethod
    def _beside_the_config(cls, value: str, info: ValidationInfo) -> str:
        # A relative path names a file next to the config file, whatever the working
        # directory of `backhaul serve` (the loader passes the config's folder).
        folder = (info.context or {}).get(CONFIG_DIR)
        if value == "-" or folder is None or PurePath(value).is_absolute():
            return value
        return str(PurePath(folder) / value)


class Admin(ConfigModel):
    """The admin API listener (served by the edge's control process).

    With ``token_file`` or ``token_env`` every request but those to the ``public`` paths
    needs ``Authorization: Bearer <token>``; an address off loopback needs a token."""

    address: ListenAddress = Field(default="127.0.0.1:9901")  # type: ignore[assignment]
    metrics_path: str = Field(default="/metrics", description="Prometheus text exposition")
    token_file: str | None = Field(
        default=None,
        min_length=1,
        description="file holding the bearer token (a relative path is in the config's folder)",
    )
    token_env: str | None = Field(
        default=None, min_length=1, description="environment variable holding the bearer token"
    )
    public: tuple[Literal["healthz", "metrics", "docs"], ...] = Field(
        default=("healthz",),
        description="answered without the token: healthz (load balancers' probes carry"
        " none), metrics (a scraper without credentials), docs (/docs and /openapi.json)",
    )

    @field_validator("token_file")
    @classmethod
    def _token_beside_the_config(cls, value: str | None, info: ValidationInfo) -> str | None:
        folder = (info.context or {}).get(CONFIG_DIR)
        if value is None or folder is None or PurePath(value).is_absolute():
            return value
        return str(PurePath(folder) / value)

    @model_validator(mode="after")
    def _token_readable(self) -> Admin:
        problems = admin_token_problems(self)
        if problems:
            raise Problems(problems)
        return self

    @field_validator("metrics_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not CHECK_PATH.fullmatch(value):
            raise ValueError(
                f"found {describe(value)}: expected a path starting with '/' without spaces,"
                " such as '/metrics'"
            )
        return value


class ListenerLimits(ConfigModel):
    """Request size limits; beyond them the edge answers 414, 431 or 413."""

    request_line: PositiveSize = Field(default="8KiB", description="414 beyond")  # type: ignore[assignment]
    header_bytes: PositiveSize = Field(default="64KiB", description="431 beyond")  # type: ignore[assignment]
    header_count: int = Field(default=100, ge=1, description="431 beyond")
    body: Size = Field(default="1GiB", description="413 beyond; routes may override it")  # type: ignore[assignment]


class ListenerErrors(ConfigModel):
    """What the answers the edge makes itself tell clients."""

    show_endpoints: bool = Field(
        default=False,
        description="502/504 details name the endpoint's address (default: the cluster only;"
        " the address is in the edge's log and the access log either way)",
    )


class ListenerTimeouts(ConfigModel):
    """Downstream deadlines."""

    request_headers: PositiveDuration = Field(default="10s", description="whole request head (408)")  # type: ignore[assignment]
    body_idle: PositiveDuration = Field(
        default="30s", description="no body byte for this long (408)"
    )  # type: ignore[assignment]
    keepalive_idle: Duration = Field(default="60s", description="idle keep-alive closed after")  # type: ignore[assignment]
    drain: Duration = Field(default="30s", description="SIGTERM waits this long for requests")  # type: ignore[assignment]


class Forwarding(ConfigModel):
    """Which forwarding headers the edge adds to proxied requests."""

    x_forwarded: bool = Field(default=True, description="X-Forwarded-For/-Proto/-Host")
    forwarded: bool = Field(default=False, description="RFC 7239 Forwarded")
    via: bool = Field(default=True, description="Via: 1.1 backhaul")
    request_id: bool = Field(default=True, description="X-Request-Id generated when absent")


class Listener(ConfigModel):
    """An address the edge accepts on, with its protocol, limits and deadlines."""

    name: str = Field(default="", description="unique; default 'listener-<i>'")
    address: ListenAddress
    protocol: Literal["http"] = "http"
    limits: ListenerLimits = Field(default_factory=ListenerLimits)
    timeouts: ListenerTimeouts = Field(default_factory=ListenerTimeouts)
    forwarding: Forwarding = Field(default_factory=Forwarding)
    errors: ListenerErrors = Field(default_factory=ListenerErrors)
    tls: ListenerTls | None = Field(default=None, description="HTTPS (see config/tls.py)")
    redirect_https: RedirectHttps | None = Field(
        default=None, description="answer every request with a redirect to https://"
    )


class HeaderMatch(ConfigModel):
    """A request header condition: exactly one of ``exact``, ``regex``, ``present``."""

    name: str
    exact: str | None = None
    regex: str | None = Field(default=None, description="full match on the value")
    present: bool | None = None

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        return compiles(value)

    @field_validator("name")
    @classmethod
    def _token(cls, value: str) -> str:
        if not TOKEN.fullmatch(value):
            raise ValueError(f"found {describe(value)}: expected a header name such as 'x-env'")
        return value.lower()

    @model_validator(mode="after")
    def _one_condition(self) -> HeaderMatch:
        given = [k for k in ("exact", "regex", "present") if getattr(self, k) is not None]
        if len(given) != 1:
            found = " and ".join(given) if given else "none"
            raise ValueError(f"found {found}: expected exactly one of exact, regex, present")
        return self


class RouteMatch(ConfigModel):
    """What a request must look like; an empty match takes everything."""

    host: Hosts = None
    path: str | None = Field(default=None, description="exact path")
    prefix: str | None = Field(default=None, description="path prefix (segment-unaware)")
    regex: str | None = Field(default=None, description="full-match regex on the path")
    methods: tuple[str, ...] | None = Field(default=None, min_length=1)
    headers: tuple[HeaderMatch, ...] = ()
    client_cert: ClientCertMatch | None = Field(
        default=None, description="the verified TLS client certificate (client_auth)"
    )

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        return compiles(value)

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
            if not TOKEN.fullmatch(method):
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


class ProxyAction(ConfigModel):
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
        if value is not None and not AUTHORITY.fullmatch(value):
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


class RedirectAction(ConfigModel):
    """Answer with a redirect; ``{path}`` and ``{query}`` in ``to`` expand (see
    :mod:`backhaul.http.redirect`; an empty query leaves no bare ``?``)."""

    to: str = Field(min_length=1, description="absolute URL or path")
    status: Literal[301, 302, 303, 307, 308] = 302

    @field_validator("to")
    @classmethod
    def _target(cls, value: str) -> str:
        if CONTROL.search(value) or any(c.isspace() for c in value):
            raise ValueError(
                f"found {describe(value)}: expected a URL without spaces or control characters"
            )
        if not value.startswith(("/", "http://", "https://", "{path}")):
            raise ValueError(
                f"found {describe(value)}: expected an absolute URL ('https://...') or a path"
                " starting with '/'"
            )
        parse_redirect(value)  # unknown placeholders ({pth}) and stray braces
        return value

    @property
    def template(self) -> RedirectTemplate:
        """``to``, parsed: ``template.location(path, query)`` is the ``Location``."""
        return parse_redirect(self.to)


class RespondAction(ConfigModel):
    """Answer directly, without an upstream."""

    status: int = Field(default=200, ge=200, le=599)
    body: str = ""
    content_type: str = Field(default="text/plain; charset=utf-8", min_length=1)

    @field_validator("content_type")
    @classmethod
    def _header(cls, value: str) -> str:
        return header_value(value)


class RouteLimits(ConfigModel):
    """Per-route overrides of the listener limits."""

    body: Size | None = None


class HeaderEdits(ConfigModel):
    """Headers to set (each replaces every line of its name) and names to remove."""

    set: dict[str, str] = Field(default_factory=dict)
    remove: tuple[str, ...] = ()

    @field_validator("set")
    @classmethod
    def _set(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            _editable_name(name)
            header_value(text)
        return value

    @field_validator("remove")
    @classmethod
    def _remove(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            _editable_name(name)
        return value


def _editable_name(name: str) -> None:
    if not TOKEN.fullmatch(name):
        raise ValueError(f"found {describe(name)}: expected a header name such as 'x-env'")
    if name.lower().encode() in NOT_EDITABLE:
        raise ValueError(
            f"found {describe(name)}: framing, hop-by-hop and Host headers are the edge's own"
            " (use host_rewrite for Host); expected another header name"
        )


class Compress(ConfigModel):
    """Response compression on a route (a filter: backhaul.http.filters.CompressFilter)."""

    encodings: tuple[Literal["gzip"], ...] = Field(
        default=("gzip",), min_length=1, description="content codings offered (gzip only)"
    )
    types: tuple[str, ...] = Field(
        default=DEFAULT_TYPES, min_length=1, description="'text/html', 'text/*' or '*'"
    )
    min_length: Size = Field(
        default=DEFAULT_MIN_LENGTH, description="smaller Content-Length: sent as is"
    )
    level: int = Field(default=DEFAULT_LEVEL, description="1 fastest .. 9 smallest")

    @field_validator("level")
    @classmethod
    def _level(cls, value: int) -> int:
        if not 1 <= value <= 9:
            raise ValueError(
                f"found {value}: expected a level from 1 (fastest, nginx's default) to 9"
                " (smallest output, most CPU)"
            )
        return value

    @field_validator("types")
    @classmethod
    def _media_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            kind, slash, sub = text.partition("/")
            if text == "*" or (
                slash and TOKEN.fullmatch(kind) and (sub == "*" or TOKEN.fullmatch(sub))
            ):
                continue
            raise ValueError(
                f"found {describe(text)}: expected a media type such as 'text/html',"
                " a whole type such as 'text/*', or '*'"
            )
        return value


class RouteHeaders(ConfigModel):
    """A route's header edits: ``request`` on what goes upstream, ``response`` on what goes
    to the client (upstream answers and the route's own respond/redirect answers)."""

    request: HeaderEdits | None = None
    response: HeaderEdits | None = None


class Route(ConfigModel):
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
    hsts: Hsts | None = Field(default=None, description="Strict-Transport-Security over HTTPS")
    headers: RouteHeaders | None = Field(default=None, description="header edits (a filter)")
    compress: Compress | None = Field(default=None, description="response compression (a filter)")

    @model_validator(mode="after")
    def _one_action(self) -> Route:
        given = [k for k in ("proxy", "redirect", "respond") if getattr(self, k) is not None]
        if len(given) != 1:
            found = " and ".join(given) if given else "no action"
            raise ValueError(
                f"found {found}: expected exactly one action: proxy, redirect or respond"
            )
        return self


class Endpoint(ConfigModel):
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
                {"type": "string", "pattern": ADDRESS_PATTERN, "description": "an address"},
                mapping,
            ]
        }


class ClusterTimeouts(ConfigModel):
    """Upstream deadlines."""

    connect: PositiveDuration = Field(default="5s")  # type: ignore[assignment]
    response_headers: PositiveDuration = Field(default="30s")  # type: ignore[assignment]
    body_idle: PositiveDuration = Field(default="60s")  # type: ignore[assignment]


class ClusterLimits(ConfigModel):
    """Bounds on the response heads of a cluster's endpoints; beyond them the answer is a 502."""

    header_bytes: PositiveSize = Field(default="64KiB", description="502 beyond")  # type: ignore[assignment]
    header_count: int = Field(default=256, ge=1, le=10_000, description="502 beyond")


class Pool(ConfigModel):
    """Upstream keep-alive connection pool, per endpoint."""

    max_idle: int = Field(default=64, ge=0, description="idle connections kept per endpoint")
    idle_timeout: PositiveDuration = Field(default="60s")  # type: ignore[assignment]


class Cluster(ConfigModel):
    """A named pool of upstream endpoints with a balancing policy."""

    endpoints: tuple[Endpoint, ...] = Field(default=(), description="or endpoints_from")
    endpoints_from: EndpointsFrom | None = Field(
        default=None, description="endpoints resolved from DNS and kept up to date"
    )
    policy: Policy = "round_robin"
    timeouts: ClusterTimeouts = Field(default_factory=ClusterTimeouts)
    pool: Pool = Field(default_factory=Pool)
    limits: ClusterLimits = Field(default_factory=ClusterLimits)
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
    tls: UpstreamTls | None = Field(default=None, description="TLS to the endpoints")

    @model_validator(mode="after")
    def _consistent(self) -> Cluster:
        problems: list[tuple[str, str]] = []
        if not self.endpoints and self.endpoints_from is None:
            problems.append(
                (
                    "endpoints",
                    "found an empty list: expected at least 1 endpoint (or endpoints_from)",
                )
            )
        if self.endpoints and self.endpoints_from is not None:
            problems.append(
                (
                    "endpoints_from",
                    "found both endpoints and endpoints_from: expected one source of endpoints",
                )
            )
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
        backoff = backoff_problem(self.retries)
        if backoff is not None:
            problems.append(("retries." + backoff[0], backoff[1]))
        if problems:
            raise Problems(problems)
        return self


class EdgeConfig(ConfigModel):
    """The whole edge config: listeners, routes (first match wins), clusters."""

    model_config = ConfigDict(
        **ConfigModel.model_config,
        json_schema_extra={
            "anyOf": [
                {"required": ["listeners"]},
                {"required": ["dns"]},
                {"required": ["dhcp"]},
            ]
        },
    )

    server_header: str = Field(default="backhaul", description="Server header; '' = none")
    workers: int | None = Field(default=None, ge=1, le=1024, description="None = CPU count")
    access_log: AccessLog = Field(default_factory=AccessLog)
    admin: Admin | None = None
    listeners: tuple[Listener, ...] = Field(default=(), description="at least one, or dns or dhcp")
    routes: tuple[Route, ...] = ()
    clusters: dict[str, Cluster] = Field(default_factory=dict)
    dns: DnsConfig | None = Field(default=None, description="the DNS server (None = off)")
    dhcp: DhcpConfig | None = Field(default=None, description="the DHCPv4 server")

    @field_validator("server_header")
    @classmethod
    def _header(cls, value: str) -> str:
        return header_value(value)

    @model_validator(mode="before")
    @classmethod
    def _default_names(cls, data: Any) -> Any:
        return default_names(data)

    @model_validator(mode="after")
    def _cross_check(self) -> EdgeConfig:
        problems = cross_check(self)
        if self.dhcp is not None and self.dhcp.metrics_address is not None:
            taken = [(f"listeners[{j}]", lst.address) for j, lst in enumerate(self.listeners)]
            taken += [("admin.address", self.admin.address)] if self.admin else []
            for where, address in taken:
                if _overlap(self.dhcp.metrics_address, address):
                    problems.append(
                        (
                            "dhcp.metrics_address",
                            f"found {self.dhcp.metrics_address}, which overlaps {where}"
                            f" ({address}): leave it out to have the DHCP metrics on the"
                            " admin listener, or give it an address of its own",
                        )
                    )
                    break
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


def admin_token_problems(admin: Admin) -> list[tuple[str, str]]:
    """Why ``admin``'s token cannot be used (read now, as ``backhaul check`` runs)."""
    import os

    make = "write one, for instance: openssl rand -hex 32 > FILE; chmod 600 FILE"
    if admin.token_file is not None and admin.token_env is not None:
        return [("token_env", "found both token_file and token_env: expected one of them")]
    if admin.token_file is not None:
        try:
            with open(admin.token_file, "rb") as handle:
                raw = handle.read(4097)
        except FileNotFoundError:
            return [("token_file", f"found no file {admin.token_file}: {make}")]
        except OSError as exc:
            return [("token_file", f"cannot read {admin.token_file} ({exc.strerror})")]
        if not raw.strip():
            return [("token_file", f"{admin.token_file} is empty: {make}")]
        if len(raw) > 4096:
            return [("token_file", f"{admin.token_file} is over 4096 bytes: expected a token")]
    elif admin.token_env is not None and not os.environ.get(admin.token_env, "").strip():
        return [
            (
                "token_env",
                f"the environment variable {admin.token_env} is unset or empty: set it"
                " to the token before starting the edge (or use token_file)",
            )
        ]
    return []


def admin_exposure_problems(admin: Admin) -> list[tuple[str, str]]:
    """An admin address off loopback without a token (a cross-check, so that it is reported
    next to the address's other problems)."""
    import ipaddress

    if admin.token_file is not None or admin.token_env is not None:
        return []
    host = admin.address.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return []
    return [
        (
            "admin.address",
            f"found {admin.address}, which is not a loopback address, and no token: the"
            " admin API can drain endpoints and reload the config; add admin.token_file (or"
            " admin.token_env) with a bearer token, or listen on 127.0.0.1",
        )
    ]


def default_names(data: Any) -> Any:
    """Raw config data with ``listener-N`` / ``route-N`` names where the file gives none."""
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
    if not config.listeners and config.dns is None and config.dhcp is None:
        problems.append(
            (
                "listeners",
                "found an empty list: expected at least 1 listener (or a dns section, or a"
                " dhcp: section to serve only DHCP)",
            )
        )
    problems.extend(_dns_overlaps(config))
    problems.extend(
        cross_check_parts(config.listeners, config.routes, config.clusters, config.admin)
    )
    return problems


def cross_check_parts(
    listeners: Sequence[Listener | None],
    routes: Sequence[Route | None],
    clusters: Mapping[str, object],
    admin: Admin | None,
    listener_names: Sequence[object] = (),
) -> list[tuple[str, str]]:
    """:func:`cross_check` over parts of a config, some of which may have failed their own
    validation (``None``): the loader runs it then too, so that one bad part does not hide
    the problems between the others. ``listener_names[i]`` is the name the file gives
    listener ``i`` when that listener is ``None``; ``clusters`` needs only its names.
    """
    problems: list[tuple[str, str]] = []
    seen_names: dict[str, int] = {}
    for i, maybe in enumerate(listeners):
        if maybe is None:
            raw = listener_names[i] if i < len(listener_names) else None
            if isinstance(raw, str) and raw.strip() and raw not in seen_names:
                seen_names[raw] = i
            continue
        listener = maybe
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
        if listener.tls is not None and listener.redirect_https is not None:
            problems.append(
                (
                    f"listeners[{i}].redirect_https",
                    "found redirect_https on a TLS listener: expected it on a plain-HTTP"
                    " listener (it sends clients to the HTTPS one)",
                )
            )
        for j in range(i):
            earlier = listeners[j]
            if earlier is None:
                continue
            other = earlier.address
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
    if admin is not None:
        for j, other_listener in enumerate(listeners):
            if other_listener is None:
                continue
            if _overlap(admin.address, other_listener.address):
                problems.append(
                    (
                        "admin.address",
                        f"found {describe(str(admin.address))}, which overlaps listeners[{j}]"
                        f" ({other_listener.address}): expected an address of its own",
                    )
                )
                break
        problems.extend(admin_exposure_problems(admin))
    route_names: dict[str, int] = {}
    for i, maybe_route in enumerate(routes):
        if maybe_route is None:
            continue
        route = maybe_route
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
                        f" ({one_of(seen_names)}){did_you_mean(name, seen_names)}",
                    )
                )
        if route.proxy is not None and route.proxy.cluster not in clusters:
            name = route.proxy.cluster
            problems.append(
                (
                    f"routes[{i}].proxy.cluster",
                    f"found {describe(name)}: expected a cluster defined under clusters"
                    f" ({one_of(clusters)}){did_you_mean(name, clusters)}",
                )
            )
    for name in clusters:
        if not name.strip():
            problems.append(("clusters", "found an empty cluster name: expected a name"))
    return problems


def _dns_overlaps(config: EdgeConfig) -> list[tuple[str, str]]:
    """A DNS address whose TCP port an HTTP listener or the admin listener also takes."""
    if config.dns is None:
        return []
    taken = [(f"listeners[{j}]", lst.address) for j, lst in enumerate(config.listeners)]
    if config.admin is not None:
        taken.append(("admin", config.admin.address))
    if config.dns.metrics is not None:
        taken.append(("dns.metrics", config.dns.metrics))
    problems = []
    for i, address in enumerate(config.dns.listen):
        for where, other in taken:
            if _overlap(address, other):
                problems.append(
                    (
                        f"dns.listen[{i}]",
                        f"found {describe(str(address))}, which overlaps {where} ({other}):"
                        " expected a port of its own (DNS takes TCP too)",
                    )
                )
                break
    return problems


def _resolve_route_retries(
    config: EdgeConfig,
) -> tuple[tuple[Route, ...], list[tuple[str, str]]]:
    """Routes whose ``proxy.retries`` is the effective policy (the cluster's with the
    route's keys), and the problems of those merged policies."""
    routes, problems = route_retries(config.routes, config.clusters)
    return tuple(r for r in routes if r is not None), problems


def route_retries(
    routes: Sequence[Route | None], clusters: Mapping[str, Cluster | None]
) -> tuple[tuple[Route | None, ...], list[tuple[str, str]]]:
    """Each route with its effective ``proxy.retries``, and the problems of those merged
    policies; routes or clusters that failed their own validation (``None``) are passed
    over, so the loader can run it on the parts of a bad config too."""
    out: list[Route | None] = []
    problems: list[tuple[str, str]] = []
    for i, route in enumerate(routes):
        proxy = route.proxy if route is not None else None
        cluster = clusters.get(proxy.cluster) if proxy is not None else None
        if route is None or proxy is None or proxy.retries is None or cluster is None:
            out.append(route)
            continue
        merged = merged_retries(cluster.retries, proxy.retries)
        backoff = backoff_problem(merged)
        if backoff is not None:
            path, message = backoff
            problems.append(
                (f"routes[{i}].proxy.retries.{path}", message + " (with the cluster's retries)")
            )
        new_proxy = proxy.model_copy(update={"retries": merged})
        out.append(route.model_copy(update={"proxy": new_proxy}))
    return tuple(out), problems


def advisories(config: EdgeConfig) -> list[tuple[str, str]]:
    """Things that are valid but probably not meant: unused clusters, unreachable routes."""
    notes: list[tuple[str, str]] = []
    used = {route.proxy.cluster for route in config.routes if route.proxy is not None}
    for name in config.clusters:
        if name not in used:
            notes.append((f"clusters.{name}", "no route proxies to this cluster"))
    for name, cluster in config.clusters.items():
        notes.extend((f"clusters.{name}{path}", text) for path, text in cluster_advisories(cluster))
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
    mtls = {lst.name for lst in config.listeners if lst.tls and lst.tls.client_auth}
    for i, route in enumerate(config.routes):
        on = set(route.listeners) if route.listeners else {lst.name for lst in config.listeners}
        if route.match.client_cert is not None and not on & mtls:
            notes.append(
                (
                    f"routes[{i}].match.client_cert",
                    "none of this route's listeners asks for client certificates"
                    " (tls.client_auth), so no request has one",
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
