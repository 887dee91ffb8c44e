"""A worker: one event loop serving every listener of a config.

The worker builds its runtime from a validated config (route tables, clusters with their
pools, built-in demo origins), binds each listener with ``SO_REUSEPORT`` so several workers
share a port, and runs a tick twice a second that enforces deadlines, sweeps idle upstream
connections and hands the access-log batch to its writer thread. ``wait_drained`` stops
accepting and lets in-flight exchanges finish within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import traceback
from typing import Any

from backhaul.edge import runtime_config as rt
from backhaul.edge.accesslog import AccessLog
from backhaul.edge.balancing import route_retry_policy
from backhaul.edge.cluster import Cluster
from backhaul.edge.datapath import (
    DEADLINE_IDLE,
    DEADLINE_NONE,
    EXCHANGE_DEADLINE_NONE,
    HttpConnection,
    ListenerSettings,
    WorkerContext,
    WorkerStats,
)
from backhaul.edge.discovery import Discovery, SharedDiscovery, metered, start_discovery
from backhaul.edge.healthcheck import run_checks
from backhaul.edge.listen import bind_listener_socket
from backhaul.edge.parking import ConnectionPark
from backhaul.edge.routing import CompiledRoute, RouteTable
from backhaul.edge.tls import EdgeTls
from backhaul.state.endpoint_control import EndpointControl, endpoint_labels
from backhaul.state.reload_status import ReloadStatus
from backhaul.state.shared_counters import SharedCounters, WorkerMetrics, build_layout

__all__ = ["ListenerRuntime", "Worker", "bind_listener_socket"]

TICK = 0.5
#: While draining, a connection with no request in progress is closed once it has been idle
#: this long (seconds): a client that sends its next request at once gets an answer with
#: ``Connection: close`` instead of a connection closed under its request.
DRAIN_IDLE_GRACE = 1.0
# A keep-alive connection idle this long (seconds) when the tick looks is parked: its memory
# goes back before thousands of new ones pile up, and a busy client (whose connection waits
# for microseconds between requests) is never taken for an idle one.
IDLE_BEFORE_PARKING = 0.1
# Parking this many connections frees enough C heap to give its pages back.
PARKED_BEFORE_TRIM = 256


class ListenerRuntime(ListenerSettings):  # type: ignore[misc]  # a C type (datapath.pyx)
    """A listener's settings, flattened for the hot path (the data plane reads the fields of
    ``ListenerSettings`` as struct members), and its route table."""

    # The fields of ListenerSettings, as mypy sees them (the C type has no stub).
    name: str
    routes: RouteTable
    scheme: str
    max_request_line: int
    max_header_bytes: int
    max_header_count: int
    show_endpoints: bool
    headers_timeout: float
    body_idle_timeout: float
    keepalive_timeout: float
    drain_timeout: float
    x_forwarded: bool
    forwarded: bool
    request_id: bool
    metrics_none: int
    tls: Any  # TLS hook: the listener's edge.tls.ServerTls when it is HTTPS

    def __init__(self, config: rt.Listener, routes: RouteTable) -> None:
        self.name = config.name
        self.address = config.address
        self.routes = routes
        self.scheme = "http"
        limits = config.limits
        self.max_request_line = int(limits.request_line)
        self.max_header_bytes = int(limits.header_bytes)
        self.max_header_count = int(limits.header_count)
        self.show_endpoints = bool(config.errors.show_endpoints)
        timeouts = config.timeouts
        self.headers_timeout = float(timeouts.request_headers)
        self.body_idle_timeout = float(timeouts.body_idle)
        self.keepalive_timeout = float(timeouts.keepalive_idle)
        self.drain_timeout = float(timeouts.drain)
        fwd = config.forwarding
        self.x_forwarded = bool(fwd.x_forwarded)
        self.forwarded = bool(fwd.forwarded)
        self.request_id = bool(fwd.request_id)
        self.server: asyncio.AbstractServer | None = None
        self.metrics_index = 0  # this listener's index in the metrics layout
        self.metrics_none = 0  # its metrics series for requests no route took
        self.tls = None


class Worker:
    """Serves one config on the running loop."""

    def __init__(
        self,
        config: rt.EdgeConfig,
        loop: asyncio.AbstractEventLoop | None = None,
        metrics: tuple[SharedCounters, int] | None = None,
        control: EndpointControl | None = None,
        sockets: dict[str, socket.socket] | None = None,
        reload_status: ReloadStatus | None = None,
    ) -> None:
        """``sockets``: listening sockets by listener name, bound by the supervisor and
        shared by its workers; a listener without one is bound here (SO_REUSEPORT).
        ``reload_status``: the supervisor's record of config reloads (for ``/metrics``)."""
        self.config = config
        self.reload_status = reload_status
        self._sockets = sockets or {}
        self.pid = os.getpid()
        # What the operator asked of each endpoint (drain), shared by every worker.
        self.endpoint_control = (
            control if control is not None else EndpointControl(endpoint_labels(config))
        )
        # No supervisor, hence no control process: this worker runs every check itself.
        self.checks_shared = control is not None
        if metrics is None:  # no supervisor: a private one-slot store
            self.metrics = WorkerMetrics.standalone(build_layout(config))
        else:
            store, slot = metrics
            self.metrics = WorkerMetrics(store.layout, store, slot)
        self.loop = loop or asyncio.get_event_loop()
        self.stats = WorkerStats()
        self.server_header: bytes | None = (
            config.server_header.encode() if config.server_header else None
        )
        self.via: bytes | None = b"1.1 backhaul"
        self.clusters: dict[str, Cluster] = {}
        self.tls = EdgeTls.empty()  # TLS hook: set in start()
        self.listeners: list[ListenerRuntime] = []
        self._origins: list[asyncio.Server] = []
        self._tick_task: asyncio.Task[None] | None = None
        self.discovery: SharedDiscovery | Discovery | None = None  # clusters with endpoints_from
        log_cfg = config.access_log
        self.access_log: AccessLog | None = (
            AccessLog(log_cfg.path, log_cfg.format) if log_cfg.enabled else None
        )
        # What the data plane reads on every request, typed (see datapath.WorkerContext).
        self.context = WorkerContext(
            self,
            self.loop,
            self.via,
            self.server_header,
            self.access_log,
            self.stats,
            self.metrics.recorder,
            os.urandom(6).hex().encode(),
        )
        self.connections: set[HttpConnection] = self.context.connections
        # Idle keep-alive connections without a transport (see edge/parking.pyx).
        self.parking: ConnectionPark | None = None
        self._resuming: set[asyncio.Task[Any]] = set()
        self._parked_since_trim = 0

    @property
    def draining(self) -> bool:
        """Whether the worker stops taking new requests (connections close when idle)."""
        return bool(self.context.draining)

    @draining.setter
    def draining(self, value: bool) -> None:
        self.context.draining = value

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Build the runtime and start accepting on every listener."""
        config = self.config
        for name, cluster_cfg in config.clusters.items():
            builtin_ports: dict[int, int] = {}
            for i, ep in enumerate(cluster_cfg.endpoints):
                if ep.builtin is not None:
                    from backhaul.edge.origin import start_echo_origin  # httptools: only here

                    server, port = await start_echo_origin(f"{name}-{i + 1}")
                    self._origins.append(server)
                    builtin_ports[i] = port
            self.clusters[name] = Cluster(name, cluster_cfg, builtin_ports, self.loop.time())
        self.tls = EdgeTls(config)  # TLS hook: contexts of HTTPS listeners and TLS clusters
        for name, client_tls in self.tls.clusters.items():
            self.clusters[name].tls = client_tls
        for lst in config.listeners:
            default_body = int(lst.limits.body)
            routes = []
            for i, route_cfg in enumerate(config.routes):
                if route_cfg.listeners and lst.name not in route_cfg.listeners:
                    continue
                route = CompiledRoute(i, route_cfg, default_body)
                # a slot of CompiledRoute (routing.py) that declares no type for it
                key = self.metrics.layout.series(lst.name, route_cfg.name)
                route.metrics_key = key  # type: ignore[attr-defined]
                proxy = route_cfg.proxy
                if route.kind == "proxy" and proxy is not None:
                    cluster = self.clusters[proxy.cluster]
                    route.cluster = cluster
                    policy = route_retry_policy(proxy, config.clusters[proxy.cluster])
                    route.retry_policy = policy
                    route.retry_statuses = frozenset(policy.statuses)
                    route.try_timeout = min(
                        cluster.response_headers_timeout,
                        policy.per_try_timeout or cluster.response_headers_timeout,
                    )
                routes.append(route)
            runtime = ListenerRuntime(lst, RouteTable(routes))
            runtime.metrics_index = self.metrics.layout.listener_index(lst.name)
            runtime.metrics_none = self.metrics.layout.series(lst.name, None)
            runtime.tls = self.tls.server(lst.name)  # TLS hook
            if runtime.tls is not None:
                runtime.scheme = "https"
            self.listeners.append(runtime)
        for runtime, lst in zip(self.listeners, config.listeners, strict=True):
            sock = self._sockets.get(runtime.name)
            if sock is None:
                sock = bind_listener_socket(runtime.address.host, runtime.address.port)
            factory = self.tls.protocol_factory(lst, self.loop) or (  # redirect_https
                lambda r=runtime: HttpConnection(self.context, r)  # type: ignore[misc]
            )
            if runtime.tls is not None:  # TLS hook: the TLS driver over the TCP transport
                factory = runtime.tls.stream_factory(factory, self.loop)
            runtime.server = await self.loop.create_server(factory, sock=sock, backlog=4096)
        self.parking = ConnectionPark(len(self.listeners), self._resume_parked)
        self.loop.add_reader(self.parking.fileno(), self.parking.ready)
        now = self.loop.time()
        control = self.endpoint_control
        # The shared map's row of this worker: its pid and start time (the admin API's view).
        control.health.worker_started(self.metrics.slot, self.pid)
        for name, cluster in self.clusters.items():
            cluster.apply_control(name, control, now)  # drains from the config
            # Config endpoints are checked once per machine (the control process); this
            # worker checks its own built-in origins (and, running alone, everything).
            run_checks(cluster, cluster.share_checks(name, control) if self.checks_shared else None)
            cluster.apply_checks(control.health, now)
        # Endpoints from DNS: the sets the control process publishes (resolved and checked
        # once per machine), or this worker's own resolvers when it runs alone.
        self.discovery = start_discovery(
            self.clusters, config, self.loop, control if self.checks_shared else None
        )
        self._tick_task = self.loop.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.tick(self.loop.time())

    def tick(self, now: float) -> None:
        """Enforce deadlines, sweep pools, flush the access log."""
        # A connection found idle for IDLE_BEFORE_PARKING is parked (see edge/parking.pyx),
        # or, when it cannot be (TLS), gives back its parser (see hibernate).
        idle_since = now - IDLE_BEFORE_PARKING
        parking = self.parking
        parked = 0
        per_listener = [0] * len(self.listeners)
        for conn in list(self.connections):
            per_listener[conn.listener.metrics_index] += 1
            if conn.deadline_kind != DEADLINE_NONE:
                if conn.deadline < now:
                    conn.on_deadline(now)
                elif (
                    conn.deadline_kind == DEADLINE_IDLE
                    and not conn.hibernating
                    and conn.deadline - conn.listener.keepalive_timeout < idle_since
                ):
                    if parking is not None and self._park(conn, parking):
                        per_listener[conn.listener.metrics_index] -= 1
                        parked += 1
                        continue
                    conn.hibernate()
            tx = conn.tx
            if tx is not None and tx.deadline_kind != EXCHANGE_DEADLINE_NONE and tx.deadline < now:
                tx.on_deadline(now)
        parked_now = [0] * len(self.listeners)
        if parking is not None:
            parking.expire(now)
            parked_now = list(parking.counts)
            # Once a wave of parking ends, give the freed C heap back to the system.
            self._parked_since_trim += parked
            if self._parked_since_trim >= PARKED_BEFORE_TRIM and (
                not parked or self._parked_since_trim >= 16 * PARKED_BEFORE_TRIM
            ):
                parking.trim()
                self._parked_since_trim = 0
        self.tls.tick(now, metrics=self.metrics)  # TLS hook: ticket keys, reloads, counters
        control = self.endpoint_control
        health = control.health
        discovery = self.discovery
        if discovery is not None:  # new endpoint sets first, then the checker's results
            discovery.tick(now)
        for name, cluster in self.clusters.items():
            cluster.apply_control(name, control, now)
            cluster.apply_checks(health, now)
            cluster.tick(now)
        metrics = self.metrics
        log = self.access_log
        if log is not None:
            log.flush()
            metrics.sync_access_log(dropped=log.dropped, write_errors=log.write_errors)
        for i, n in enumerate(per_listener):
            metrics.set_active_connections(i, n + parked_now[i], parked_now[i])
        in_flight: list[int] = []  # per config endpoint, for the admin API's merged view
        for ci, cluster in enumerate(self.clusters.values()):
            in_flight += [ep.in_flight for ep in metered(cluster)]
            breakers = cluster.breakers
            metrics.sync_cluster(
                ci,
                retries=cluster.stats.retries,
                budget_exhausted=cluster.stats.budget_exhausted,
                overflows=(
                    breakers.connections.overflows_total,
                    breakers.pending.overflows_total,
                    breakers.requests.overflows_total,
                ),
                ejections=[ep.ejections_total for ep in metered(cluster)],
                health=[ep.state for ep in metered(cluster)],
                panic=cluster.balancer.panic,
            )
        if len(in_flight) <= health.endpoints:
            in_flight += [0] * (health.endpoints - len(in_flight))
            views = [0] * health.endpoints
            if discovery is not None:
                discovery.views(in_flight, views)
            health.publish_in_flight(metrics.slot, in_flight, views)
        metrics.flush()

    @staticmethod
    def _park(conn: HttpConnection, parking: ConnectionPark) -> bool:
        """Park ``conn`` if it can be: its socket moves to ``parking``, its transport closes."""
        fd = conn.parkable_fd()
        if fd < 0 or not parking.park(fd, conn.deadline, conn.listener.metrics_index):
            return False
        conn.detach()
        return True

    def _resume_parked(self, listener_index: int, fd: int) -> None:
        """A parked connection has bytes to read: give it a transport and a protocol again."""
        runtime = self.listeners[listener_index]
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return
        task = self.loop.create_task(self._reattach(runtime, sock))
        self._resuming.add(task)
        task.add_done_callback(self._resuming.discard)

    async def _reattach(self, runtime: ListenerRuntime, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(
                lambda: HttpConnection(self.context, runtime), sock
            )
        except OSError:
            sock.close()

    def _stop_parking(self) -> None:
        """Close the parked connections and stop watching for them (drain and stop)."""
        parking = self.parking
        if parking is not None:
            self.loop.remove_reader(parking.fileno())
            parking.close_all()
            self.parking = None

    async def wait_drained(self, timeout: float | None = None) -> None:
        """Stop accepting, close idle connections, let in-flight exchanges finish.

        A connection is told to close (its next answer says ``Connection: close``) only
        between two exchanges, never while one is under way: an answer whose head already
        promised keep-alive is not followed by a close the client cannot expect. A
        connection without a request is closed once idle for :data:`DRAIN_IDLE_GRACE`.
        Waits at most ``timeout`` (default: the longest listener drain timeout), then cuts
        what is left.
        """
        if timeout is None:
            timeout = max((lst.drain_timeout for lst in self.listeners), default=30.0)
        for runtime in self.listeners:
            if runtime.server is not None:
                runtime.server.close()
        self._stop_parking()  # parked connections are idle for more than a tick: close them
        grace = min(DRAIN_IDLE_GRACE, timeout)
        deadline = self.loop.time() + timeout
        while True:
            now = self.loop.time()
            for conn in list(self.connections):
                if conn.tx is None:
                    conn.flow.closing = True
                    if conn.rx is None and self._idle_for(conn, now) >= grace:
                        conn.close()
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        self.draining = True
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    @staticmethod
    def _idle_for(conn: HttpConnection, now: float) -> float:
        """How long ``conn`` has waited for a request (its deadline minus the timeout)."""
        listener: ListenerRuntime = conn.listener
        deadline = float(conn.deadline)
        if conn.deadline_kind == DEADLINE_IDLE:
            return now - (deadline - listener.keepalive_timeout)
        if conn.deadline_kind == DEADLINE_NONE:
            return DRAIN_IDLE_GRACE
        return now - (deadline - listener.headers_timeout)

    async def aclose(self) -> None:
        """Stop everything this worker started (bounded)."""
        if self._tick_task is not None:
            self._tick_task.cancel()
            try:
                await self._tick_task
            except asyncio.CancelledError:
                pass
            self._tick_task = None
        if self.discovery is not None:
            await self.discovery.aclose()
        for runtime in self.listeners:
            if runtime.server is not None:
                runtime.server.close()
        self._stop_parking()
        for task in list(self._resuming):
            task.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        checks = []
        for cluster in self.clusters.values():
            checks += cluster.cancel_checks()
            cluster.close_idle()
        for task in checks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in self._origins:
            server.close()
        self.metrics.close()
        if self.access_log is not None:
            self.access_log.close()

    # -- used by connections -------------------------------------------------------------
    def access_log_reject(self, conn: HttpConnection, status: int, nbytes: int, url: bytes) -> None:
        self.stats.exchanges += 1
        self.metrics.record_reject(conn.listener.metrics_none, status, 0, nbytes)
        log = self.access_log
        if log is not None:
            log.refusal(self.context.next_request_id(), conn.client_ip, url, status, nbytes)

    def report_bug(self, exc: BaseException) -> None:
        """A defect in the edge (not bad input): log it with its traceback."""
        print("backhaul: internal error (please report):", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
