"""Clusters and endpoints as the running edge holds them.

A :class:`Cluster` ties one config cluster to the balancing policy (:mod:`backhaul.balance`):
its balancer, circuit breakers, retry policy and budget, hash key and sticky cookie, and the
active health checks that feed it. An :class:`Endpoint` is the balancer's endpoint state plus
the edge's LIFO pool of idle upstream connections to that address.

Balancing state is per worker (like nginx's): each worker sees its own traffic for outlier
detection and runs its own health checks, and logs each transition of its own state machine
once, tagged with its pid.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from typing import TYPE_CHECKING, Any

from backhaul.balance import (
    BalanceSettings,
    CheckSchedule,
    CircuitBreakers,
    EndpointState,
    HashKeySpec,
    HealthThresholds,
    HttpCheck,
    OutlierDetection,
    RetryBudget,
    RetryPolicy,
    SlowStart,
    StickyCookie,
    make_balancer,
)
from backhaul.balance.healthcheck import parse_status_ranges
from backhaul.errors import ConnectError, ConnectTimeout

if TYPE_CHECKING:
    from backhaul.edge.upstream import UpstreamConnection

__all__ = ["Cluster", "ClusterStats", "Endpoint", "retry_policy_of"]


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    """A config attribute, or ``default`` when the config has no such key (or it is null)."""
    value = getattr(cfg, name, None) if cfg is not None else None
    return default if value is None else value


class Endpoint(EndpointState):
    """One upstream address: balancing state (inherited) and a LIFO pool of idle
    connections."""

    __slots__ = (
        "address",
        "cluster",
        "connect_timeout",
        "host",
        "idle",
        "idle_timeout",
        "label",
        "log_name",
        "max_idle",
        "port",
    )

    def __init__(
        self, cluster: Cluster, host: str, port: int, weight: int = 1, label: str | None = None
    ) -> None:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(label or address, weight)
        self.cluster = cluster
        self.host = host
        self.port = port
        self.address = address
        self.label = label or address
        self.log_name = f'"{self.label}"'
        self.idle: list[UpstreamConnection] = []
        self.max_idle: int = cluster.max_idle
        self.idle_timeout: float = cluster.idle_timeout
        self.connect_timeout: float = cluster.connect_timeout

    def acquire_nowait(self) -> UpstreamConnection | None:
        """The warmest idle connection, or None."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def wait_connected(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        """A new connection, within the cluster's connect timeout."""
        from backhaul.edge.upstream import UpstreamConnection

        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port
                )
        except TimeoutError as exc:
            raise ConnectTimeout(
                f"connecting to upstream endpoint {self.label} took longer than "
                f"{self.connect_timeout:g}s"
            ) from exc
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConnectError(
                f"upstream endpoint {self.label} refused or failed the connection: {reason}",
                peer=self.label,
            ) from exc
        return proto

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Return a clean connection to the pool (or close it when the pool is full)."""
        conn.exchange = None
        if conn.closed:
            return
        if len(self.idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        if conn.transport is not None:
            conn.transport.resume_reading()
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def sweep(self, now: float) -> None:
        """Close idle connections older than the idle timeout (oldest are at the front)."""
        idle = self.idle
        limit = now - self.idle_timeout
        while idle and (idle[0].closed or idle[0].idle_since < limit):
            idle.pop(0).close()

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()


class ClusterStats:
    """Plain counters of one cluster (per worker), read by metrics."""

    __slots__ = ("budget_exhausted", "no_healthy", "retries")

    def __init__(self) -> None:
        self.retries = 0
        self.budget_exhausted = 0
        self.no_healthy = 0


def retry_policy_of(cfg: Any, default: RetryPolicy | None = None) -> RetryPolicy:
    """The :class:`RetryPolicy` of a ``retries`` config block (None: ``default``)."""
    if cfg is None:
        return default if default is not None else RetryPolicy()
    retry_on = tuple(_get(cfg, "retry_on", ("connect-failure", "reset", 502, 503, 504)))
    statuses = frozenset(int(x) for x in retry_on if str(x).isdigit())
    backoff = _get(cfg, "backoff")
    return RetryPolicy(
        max_retries=int(_get(cfg, "max_retries", 2)),
        connect_failure="connect-failure" in retry_on,
        reset="reset" in retry_on,
        statuses=statuses,
        non_idempotent=bool(_get(cfg, "non_idempotent", False)),
        per_try_timeout=_get(cfg, "per_try_timeout"),
        backoff_base=float(_get(backoff, "base", 0.025)),
        backoff_max=float(_get(backoff, "max", 0.25)),
    )


def _balance_settings(cfg: Any) -> BalanceSettings:
    outlier_cfg = _get(cfg, "outlier_detection")
    outlier = None
    if outlier_cfg is not None:
        outlier = OutlierDetection(
            consecutive_5xx=int(_get(outlier_cfg, "consecutive_5xx", 5)),
            consecutive_connect_failures=int(_get(outlier_cfg, "consecutive_connect_failures", 5)),
            base_ejection_time=float(_get(outlier_cfg, "base_ejection_time", 30.0)),
            max_ejection_time=float(_get(outlier_cfg, "max_ejection_time", 300.0)),
            max_ejection_percent=float(_get(outlier_cfg, "max_ejection_percent", 10.0)),
            decay_interval=float(_get(outlier_cfg, "decay_interval", 10.0)),
        )
    checks = _get(cfg, "health_checks")
    slow = _get(cfg, "slow_start")
    return BalanceSettings(
        policy=_get(cfg, "policy", "round_robin"),
        health=HealthThresholds(
            healthy_threshold=int(_get(checks, "healthy_threshold", 2)),
            unhealthy_threshold=int(_get(checks, "unhealthy_threshold", 3)),
        ),
        outlier=outlier,
        slow_start=SlowStart(
            window=float(_get(slow, "window", 0.0)),
            min_weight_percent=float(_get(slow, "min_weight_percent", 10.0)),
        ),
        panic_threshold=float(_get(cfg, "panic_threshold", 50.0)),
        virtual_nodes=int(_get(_get(cfg, "ring_hash"), "virtual_nodes", 256)),
        maglev_table_size=int(_get(_get(cfg, "maglev"), "table_size", 65537)),
        latency_decay=float(_get(_get(cfg, "least_request"), "latency_decay", 10.0)),
    )


class Cluster:
    """A named pool of endpoints with its balancing, health and resilience policy."""

    __slots__ = (
        "balancer",
        "body_idle",
        "breakers",
        "check",
        "check_kind",
        "check_schedule",
        "check_tasks",
        "connect_timeout",
        "endpoints",
        "hash_key",
        "idle_timeout",
        "max_idle",
        "name",
        "response_headers_timeout",
        "retry_budget",
        "retry_policy",
        "rng",
        "stats",
        "sticky",
    )

    def __init__(
        self,
        name: str,
        config: Any,
        builtin_ports: dict[int, int] | None = None,
        now: float = 0.0,
    ) -> None:
        self.name = name
        timeouts = config.timeouts
        self.connect_timeout = float(timeouts.connect)
        self.response_headers_timeout = float(timeouts.response_headers)
        self.body_idle = float(timeouts.body_idle)
        self.max_idle = int(config.pool.max_idle)
        self.idle_timeout = float(config.pool.idle_timeout)
        self.stats = ClusterStats()
        self.rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        self.endpoints: list[Endpoint] = []
        for i, ep in enumerate(config.endpoints):
            if ep.address is not None:
                self.endpoints.append(Endpoint(self, ep.address.host, ep.address.port, ep.weight))
            else:
                port = (builtin_ports or {})[i]
                label = f"builtin:{name}-{i + 1}"
                self.endpoints.append(Endpoint(self, "127.0.0.1", port, ep.weight, label))
        self.balancer = make_balancer(
            self.endpoints, _balance_settings(config), name=name, now=now, rng=self.rng
        )
        for ep_cfg, ep in zip(config.endpoints, self.endpoints, strict=True):
            if _get(ep_cfg, "drain", False):
                self.log_events(self.balancer.drain(ep, now))
        breakers = _get(config, "circuit_breakers")
        self.breakers = CircuitBreakers(
            max_connections=int(_get(breakers, "max_connections", 1024)),
            max_pending=int(_get(breakers, "max_pending", 1024)),
            max_requests=int(_get(breakers, "max_requests", 1024)),
        )
        retries = _get(config, "retries")
        self.retry_policy = retry_policy_of(retries, RetryPolicy(max_retries=1))
        budget = _get(retries, "budget")
        self.retry_budget = RetryBudget(
            float(_get(budget, "percent", 20.0)), int(_get(budget, "min_retry_concurrency", 3))
        )
        hash_cfg = _get(config, "hash_key")
        self.hash_key = (
            HashKeySpec(hash_cfg.source, _get(hash_cfg, "name", "")) if hash_cfg else None
        )
        sticky_cfg = _get(config, "sticky")
        self.sticky = (
            StickyCookie(
                name=_get(sticky_cfg, "cookie", "backhaul_sticky"),
                path=_get(sticky_cfg, "path", "/"),
                max_age=_get(sticky_cfg, "max_age"),
                secure=bool(_get(sticky_cfg, "secure", False)),
                http_only=bool(_get(sticky_cfg, "http_only", True)),
                same_site=_get(sticky_cfg, "same_site", "Lax"),
            )
            if sticky_cfg
            else None
        )
        checks = _get(config, "health_checks")
        self.check_kind: str | None = None
        self.check: HttpCheck | None = None
        self.check_schedule: CheckSchedule | None = None
        self.check_tasks: list[asyncio.Task[None]] = []
        if checks is not None:
            self.check_kind = _get(checks, "type", "http")
            self.check_schedule = CheckSchedule(
                interval=float(_get(checks, "interval", 5.0)),
                timeout=float(_get(checks, "timeout", 2.0)),
                jitter=float(_get(checks, "jitter", 0.0)),
                unhealthy_interval=_get(checks, "unhealthy_interval"),
            )
            if self.check_kind == "http":
                http = _get(checks, "http")
                statuses = _get(http, "expected_statuses", "200-399")
                self.check = HttpCheck(
                    path=_get(http, "path", "/"),
                    method=_get(http, "method", "GET"),
                    host=_get(http, "host"),
                    statuses=parse_status_ranges(statuses)
                    if isinstance(statuses, str)
                    else tuple(tuple(r) for r in statuses),
                    body_contains=_get(http, "body_contains"),
                    body_regex=_get(http, "body_regex"),
                )

    def log_events(self, events: Any) -> None:
        """Log each health or panic event once (this worker's state machine)."""
        for event in events:
            print(f"backhaul: worker {os.getpid()}: {self.name}: {event}", file=sys.stderr)

    def tick(self, now: float) -> None:
        for ep in self.endpoints:
            ep.sweep(now)
        events = self.balancer.tick(now)
        if events:
            self.log_events(events)

    def describe_unhealthy(self) -> str:
        """Why no endpoint can take a request, in words (for the 503 detail)."""
        counts: dict[str, int] = {}
        for ep in self.endpoints:
            state = getattr(ep.state, "value", str(ep.state))
            counts[state] = counts.get(state, 0) + 1
        parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return f"no healthy endpoint in cluster '{self.name}' ({parts})"

    def close_idle(self) -> None:
        for ep in self.endpoints:
            ep.close_idle()

    def cancel_checks(self) -> list[asyncio.Task[None]]:
        tasks = self.check_tasks
        self.check_tasks = []
        for task in tasks:
            task.cancel()
        return tasks
