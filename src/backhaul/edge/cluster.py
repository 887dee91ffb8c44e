"""Clusters and endpoints as the running edge holds them.

A :class:`Cluster` ties one config cluster to the balancing policy (:mod:`backhaul.balance`):
its balancer, circuit breakers, retry policy and budget, hash key and sticky cookie, and the
active health checks that feed it. An :class:`Endpoint` is the balancer's endpoint state plus
the edge's LIFO pool of idle upstream connections to that address.

Balancing state is per worker (like nginx's): each worker sees its own traffic for outlier
detection and logs each transition of its own state machine once, tagged with its pid. The
active health checks of the endpoints written in the config run once per machine, in the
control process; each worker replays their results into its balancer on its tick
(:meth:`Cluster.apply_checks`).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from typing import TYPE_CHECKING, Any

from backhaul.balance import (
    CheckSchedule,
    CircuitBreakers,
    HashKeySpec,
    HealthState,
    HttpCheck,
    RetryBudget,
    RetryPolicy,
    StickyCookie,
    make_balancer,
)
from backhaul.balance.endpoint import EndpointState
from backhaul.edge import runtime_config as rt
from backhaul.edge.balancing import balance_settings, retry_policy
from backhaul.edge.tls import describe_connect_error
from backhaul.errors import ConnectError, ConnectTimeout

if TYPE_CHECKING:
    from backhaul.edge.datapath import UpstreamConnection

__all__ = ["Cluster", "ClusterStats", "Endpoint"]


class Endpoint(EndpointState):
    """One upstream address: balancing state (inherited) and a LIFO pool of idle
    connections (``idle``; the data plane takes from and gives back to it)."""

    # Its fields are declared in cluster.pxd (a C type once compiled).

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

    async def wait_connected(
        self, loop: asyncio.AbstractEventLoop, protocol: type[UpstreamConnection]
    ) -> UpstreamConnection:
        """A new connection of ``protocol`` (the data plane's upstream driver), within the
        cluster's connect timeout."""
        tls = self.cluster.tls  # ssl= and the name to verify
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: protocol(self),
                    self.host,
                    self.port,
                    ssl=tls.context if tls is not None else None,
                    server_hostname=tls.server_hostname(self.host) if tls is not None else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(
                f"connecting to upstream endpoint {self.label} took longer than "
                f"{self.connect_timeout:g}s"
            ) from exc
        except OSError as exc:
            reason = describe_connect_error(exc) if tls is not None else exc.strerror or str(exc)
            raise ConnectError(
                f"upstream endpoint {self.label} refused or failed the connection: {reason}",
                peer=self.label,
            ) from exc
        problem = tls.check_peer(proto.transport) if tls is not None else None  # TLS hook
        if problem is not None:
            proto.close()
            raise ConnectError(f"upstream endpoint {self.label}: {problem}", peer=self.label)
        return proto

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

    # Its fields are declared in cluster.pxd (a C type once compiled).

    def __init__(self) -> None:
        self.retries = 0
        self.budget_exhausted = 0
        self.no_healthy = 0


class Cluster:
    """A named pool of endpoints with its balancing, health and resilience policy."""

    # Its fields are declared in cluster.pxd (a C type once compiled).

    def __init__(
        self,
        name: str,
        config: rt.Cluster,
        builtin_ports: dict[int, int] | None = None,
        now: float = 0.0,
    ) -> None:
        self.name = name
        timeouts = config.timeouts
        self.connect_timeout = float(timeouts.connect)
        self.response_headers_timeout = float(timeouts.response_headers)
        self.body_idle = float(timeouts.body_idle)
        self.max_idle = int(config.pool.max_idle)
        self.head_bytes = int(config.limits.header_bytes)  # an endpoint's response head
        self.head_fields = int(config.limits.header_count)
        self.idle_timeout = float(config.pool.idle_timeout)
        self.stats = ClusterStats()
        self.tls: Any = None  # TLS hook: edge.tls.ClientTls when the cluster has tls
        self.rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        self.endpoints: list[Endpoint] = []
        self.discovered = False  # endpoints from DNS (backhaul.edge.discovery)
        for i, ep in enumerate(config.endpoints):
            if ep.address is not None:
                self.endpoints.append(Endpoint(self, ep.address.host, ep.address.port, ep.weight))
            else:
                port = (builtin_ports or {})[i]
                label = f"builtin:{name}-{i + 1}"
                self.endpoints.append(Endpoint(self, "127.0.0.1", port, ep.weight, label))
        self.balancer = make_balancer(
            self.endpoints, balance_settings(config), name=name, now=now, rng=self.rng
        )
        breakers = config.circuit_breakers
        self.breakers = CircuitBreakers(
            breakers.max_connections, breakers.max_pending, breakers.max_requests
        )
        self.retry_policy: RetryPolicy = retry_policy(config.retries)
        budget = config.retries.budget
        self.retry_budget = RetryBudget(budget.percent, budget.min_retry_concurrency)
        key = config.hash_key
        self.hash_key = HashKeySpec(key.source, key.name) if key is not None else None
        sticky = config.sticky
        self.sticky = (
            StickyCookie(
                name=sticky.cookie,
                path=sticky.path,
                max_age=sticky.max_age,
                secure=sticky.secure,
                http_only=sticky.http_only,
                same_site=sticky.same_site,
            )
            if sticky is not None
            else None
        )
        checks = config.health_checks
        self.check_kind: str | None = None
        self.check: HttpCheck | None = None
        self.check_schedule: CheckSchedule | None = None
        self.check_tasks: list[asyncio.Task[None]] = []
        # Endpoints checked by the control process: (endpoint, index in the shared map),
        # and the last result of each that this worker has replayed.
        self.shared_checks: list[tuple[Endpoint, int]] = []
        self.checks_seen: list[int] = []
        if checks is not None:
            self.check_kind = checks.type
            self.check_schedule = CheckSchedule(
                checks.interval, checks.timeout, checks.jitter, checks.unhealthy_interval
            )
            http = checks.http
            if checks.type == "http" and http is not None:
                self.check = HttpCheck(
                    path=http.path,
                    method=http.method,
                    host=http.host,
                    statuses=http.expected_statuses,
                    body_contains=http.body_contains,
                    body_regex=http.body_regex,
                    body_limit=http.body_limit,
                )

    def log_events(self, events: Any) -> None:
        """Log each health or panic event once (this worker's state machine)."""
        for event in events:
            print(f"backhaul: worker {os.getpid()}: {self.name}: {event}", file=sys.stderr)

    def apply_control(self, name: str, control: Any, now: float) -> None:
        """Drain or restore endpoints as the operator asked (shared endpoint control)."""
        balancer = self.balancer
        for ep in self.endpoints:
            i = control.find(name, ep.label)
            if i is None:
                continue
            draining = ep.state is HealthState.DRAINING
            if control.drain_wanted(i):
                if not draining:
                    self.log_events(balancer.drain(ep, now))
            elif draining:
                self.log_events(balancer.restore(ep, now))

    def share_checks(self, name: str, control: Any) -> list[Endpoint]:
        """Take the active-check results of the config's address endpoints from the shared
        map (``control.health``); returns the endpoints this worker must check itself (its
        built-in origins)."""
        if self.check_schedule is None:
            return []
        own = []
        for ep in self.endpoints:
            i = control.find(name, ep.label) if not ep.label.startswith("builtin:") else None
            if i is None:
                own.append(ep)
            else:
                self.shared_checks.append((ep, i))
                self.checks_seen.append(0)
        return own

    def apply_checks(self, health: Any, now: float) -> None:
        """Replay into the balancer the shared checker's results not seen yet, in order (a
        worker that starts late replays the last ones it keeps: the same verdict at once)."""
        seen = self.checks_seen
        for k, (ep, i) in enumerate(self.shared_checks):
            if health.check_seq(i) == seen[k]:
                continue
            record = health.check(i)
            last = record.seq
            balancer = self.balancer
            for n in range(max(seen[k] + 1, last - health.ring + 1), last + 1):
                detail = record.reason if n == last else ""
                self.log_events(balancer.check_result(ep, record.passed(n), now, detail))
            seen[k] = last

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
