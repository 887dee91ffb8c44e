"""A cluster's balancing, health and resilience settings: the YAML blocks that
:mod:`backhaul.balance` runs on.

Each block carries what a balance constructor takes, units parsed, under the YAML's names
(each class says which constructor and which names differ); the edge builds the balance
objects from them (:mod:`backhaul.edge.settings`). This module checks every range the balance
classes check, with a config path in each problem, so a config that loads always builds in
the edge (a property test builds every random config that loads). It does not import
:mod:`backhaul.balance`: the names both use (policy names, maglev table sizes) live in
:mod:`backhaul.vocabulary`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from backhaul.config.fields import (
    AUTHORITY,
    CHECK_PATH,
    COOKIE_PATH,
    TOKEN,
    ConfigModel,
    Duration,
    Percent,
    PositiveDuration,
    PositiveSize,
    Problems,
    RetryOn,
    StatusRanges,
    WholeSeconds,
)
from backhaul.config.units import describe, format_duration
from backhaul.vocabulary.balancing import HASH_POLICIES, MAX_MAGLEV_TABLE, Policy, is_prime

if TYPE_CHECKING:
    from backhaul.config.model import Cluster

__all__ = [
    "HASH_POLICIES",
    "MAX_MAGLEV_TABLE",
    "Backoff",
    "CircuitBreakerSettings",
    "ClusterRetries",
    "HashKey",
    "HealthChecks",
    "HttpHealthCheck",
    "LeastRequestSettings",
    "MaglevSettings",
    "OutlierDetectionSettings",
    "Policy",
    "Retries",
    "RetryBudgetSettings",
    "RingHashSettings",
    "SlowStartSettings",
    "Sticky",
    "backoff_problem",
    "cluster_advisories",
    "merged_retries",
]


# --------------------------------------------------------------------------- blocks


class HashKey(ConfigModel):
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
            if not TOKEN.fullmatch(self.name):
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


class RingHashSettings(ConfigModel):
    """ring_hash: points on the ring per unit of endpoint weight
    (``BalanceSettings.virtual_nodes``)."""

    virtual_nodes: int = Field(default=256, ge=1, le=65_536)


def _nearest_primes(n: int) -> str:
    below = next((k for k in range(min(n, MAX_MAGLEV_TABLE), 1, -1) if is_prime(k)), None)
    above = next(k for k in range(max(n, 2), MAX_MAGLEV_TABLE + 1) if is_prime(k))
    return ", ".join(str(k) for k in dict.fromkeys((below, above)) if k is not None)


class MaglevSettings(ConfigModel):
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


class LeastRequestSettings(ConfigModel):
    """least_request: the time constant of the latency average
    (``BalanceSettings.latency_decay``, seconds)."""

    latency_decay: PositiveDuration = Field(default="10s")  # type: ignore[assignment]


class Sticky(ConfigModel):
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
        if not TOKEN.fullmatch(value):
            raise ValueError(
                f"found {describe(value)}: expected a cookie name (letters, digits, '-', '_'"
                " ...), such as 'backhaul_sticky'"
            )
        return value

    @field_validator("path")
    @classmethod
    def _cookie_path(cls, value: str) -> str:
        if not COOKIE_PATH.fullmatch(value):
            raise ValueError(
                f"found {describe(value)}: expected a path starting with '/' without ';',"
                " spaces or control characters"
            )
        return value

    @field_validator("max_age")
    @classmethod
    def _lasts(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError(
                "found 0s: expected a lifetime such as '1h' (a cookie with Max-Age=0 is"
                " deleted at once); omit max_age for a session cookie"
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


class SlowStartSettings(ConfigModel):
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


class HttpHealthCheck(ConfigModel):
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
        if not CHECK_PATH.fullmatch(value):
            raise ValueError(
                f"found {describe(value)}: expected a path starting with '/' without spaces,"
                " such as '/healthz'"
            )
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if not TOKEN.fullmatch(value):
            raise ValueError(f"found {describe(value)}: expected a method such as 'GET'")
        return value.upper()

    @field_validator("host")
    @classmethod
    def _authority(cls, value: str | None) -> str | None:
        if value is not None and not AUTHORITY.fullmatch(value):
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


class HealthChecks(ConfigModel):
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


class OutlierDetectionSettings(ConfigModel):
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


class Backoff(ConfigModel):
    """Retries wait a random time in ``[0, min(max, base * 2**(n-1)))`` first ("full
    jitter"; ``RetryPolicy(backoff_base=base, backoff_max=max)``)."""

    base: PositiveDuration = Field(default="25ms")  # type: ignore[assignment]
    max: PositiveDuration = Field(default="250ms")  # type: ignore[assignment]


class RetryBudgetSettings(ConfigModel):
    """Retries in flight stay within ``percent`` of the cluster's active requests, but
    ``min_retry_concurrency`` are always allowed (``RetryBudget(budget_percent=percent,
    min_retry_concurrency)``)."""

    percent: Percent = 20.0
    min_retry_concurrency: int = Field(default=3, ge=0, le=100_000)


class Retries(ConfigModel):
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


class CircuitBreakerSettings(ConfigModel):
    """Caps per cluster (per worker); past one the edge answers 503 at once
    (``CircuitBreakers``, same names; Envoy's defaults)."""

    max_connections: int = Field(default=1024, ge=1, le=10_000_000)
    max_pending: int = Field(default=1024, ge=1, le=10_000_000)
    max_requests: int = Field(default=1024, ge=1, le=10_000_000)


# --------------------------------------------------------------------------- building and checking


def backoff_problem(retries: Retries) -> tuple[str, str] | None:
    """``(path, message)`` when the backoff's base is above its max."""
    backoff = retries.backoff
    if backoff.base > backoff.max:
        return (
            "backoff.base",
            f"found {format_duration(backoff.base)}, above backoff.max"
            f" ({format_duration(backoff.max)}): expected base <= max",
        )
    return None


def merged_retries(base: Retries, override: Retries) -> Retries:
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


def cluster_advisories(cluster: Cluster) -> list[tuple[str, str]]:
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
    if cluster.endpoints and all(ep.drain for ep in cluster.endpoints):
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
