"""The admin API: typed handlers over the state that the edge's processes share.

Served by the edge's control process (:mod:`backhaul.admin.process`) on the admin address.
Every answer is built from what the processes of this machine publish in shared memory, so
it is the same whichever moment it is asked and describes all workers at once:

- the metrics store (:mod:`backhaul.state.shared_counters`): each worker's counters, its
  view of each endpoint's health, its heartbeat;
- the endpoint map (:mod:`backhaul.state.endpoint_control`): the operator's drain wishes,
  the machine-wide health checker's results, each worker's requests in flight, and the
  endpoints found through DNS (:mod:`backhaul.state.discovered_endpoints`) with each
  worker's view of them;
- the reload status (:mod:`backhaul.state.reload_status`), written by the supervisor.

The operations are declared below with :class:`~backhaul.admin.router.Router`; the OpenAPI
document at ``/openapi.json`` and the page at ``/docs`` are made from the same declarations.
With a token configured (``admin.token_file``/``admin.token_env``) every operation but the
public ones (``/healthz`` by default, see ``admin.public``) needs ``Authorization: Bearer
TOKEN``; the comparison is constant-time and the token is never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import platform
import signal
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from backhaul import __version__
from backhaul.admin.docs import docs_page
from backhaul.admin.metrics import metrics_renderer
from backhaul.admin.router import ApiError, Router
from backhaul.admin.server import Request, Response, problem
from backhaul.net.socket_address import SocketAddress
from backhaul.state.endpoint_control import EndpointControl
from backhaul.state.endpoint_health import split_view
from backhaul.state.record import Record
from backhaul.state.shared_counters import HEALTH_STATES, STALE_AFTER, SharedCounters

__all__ = ["AdminState", "ControlApi", "build_router", "plain_config"]

RELOAD_DEADLINE = 30.0
"""Seconds ``POST /config/reload`` waits for the supervisor to finish the attempt."""


# -- models --------------------------------------------------------------------------------
class PathMessage(BaseModel):
    """One problem or note about a config, at its config path."""

    path: str = Field(description="dotted config path, such as clusters.api.endpoints[2]")
    message: str


class ConfigView(BaseModel):
    """The config the edge runs."""

    digest: str = Field(description="hex SHA-256 of the config in effect")
    generation: int = Field(description="1 at start, +1 for each config a reload applied")
    config: dict[str, Any] = Field(
        description="every default filled in; durations in seconds, sizes in bytes"
    )


class CheckReport(BaseModel):
    """What ``backhaul check --json`` prints for the same config."""

    source: str
    valid: bool
    problems: list[PathMessage]
    config: dict[str, Any] | None
    notes: list[PathMessage]


class ReloadResult(BaseModel):
    """The outcome of the reload attempt this request asked for."""

    ok: bool
    generation: int
    attempts: int
    digest: str
    last_attempt_unix: float
    detail: str


class ActiveCheck(BaseModel):
    """The machine-wide health checker's view of an endpoint."""

    verdict: Literal["unknown", "healthy", "unhealthy"] = Field(
        description="by the cluster's thresholds; unknown before the first result"
    )
    checks: int = Field(description="results so far")
    passes_in_a_row: int
    failures_in_a_row: int
    last_check_unix: float | None
    last_reason: str


class EndpointView(BaseModel):
    """One endpoint, as all live workers see it."""

    endpoint: str = Field(description="its label: host:port, or builtin:<cluster>-<n>")
    weight: int
    state: str = Field(
        description="the state every live worker sees (healthy, warming, unhealthy,"
        " ejected, draining); 'mixed' while they disagree, 'unknown' with no live worker"
    )
    workers_by_state: dict[str, int] = Field(description="live workers seeing each state")
    drain_requested: bool
    in_flight: int = Field(description="requests in flight, summed over the live workers")
    in_flight_by_worker: dict[str, int] = Field(description="by worker pid")
    ejections_total: int = Field(description="ejections by outlier detection, all workers")
    active_check: ActiveCheck | None = Field(
        description="None when the cluster has no health checks or the endpoint is checked"
        " by each worker (built-in origins)"
    )


class DiscoveryView(BaseModel):
    """Where a cluster's endpoints come from: DNS, resolved once for the machine."""

    name: str
    type: str
    max_endpoints: int = Field(description="room in shared memory for this cluster")
    generation: int = Field(description="endpoint sets published so far (0: none yet)")
    left_out: int = Field(description="endpoints of the last answer beyond max_endpoints")
    resolutions: int = Field(description="successful resolutions")
    failures: int = Field(description="failed resolutions (the endpoints were kept)")
    last_resolution_unix: float | None
    last_error: str = Field(description="why the last resolution failed; '' after a success")


class ClusterView(BaseModel):
    """One cluster, merged over the live workers."""

    name: str
    policy: str
    health_checks: str | None = Field(description="type and interval, None when off")
    endpoints_from_dns: bool = Field(
        description="endpoints come from DNS: the control process resolves them for every"
        " worker; listed with each worker's view of them (drain and ejections are for"
        " config endpoints only)"
    )
    discovery: DiscoveryView | None = Field(
        default=None, description="the DNS question and its answers, for endpoints_from"
    )
    workers: int = Field(description="live workers in this view")
    workers_in_panic: int
    endpoints: list[EndpointView]


class ClustersView(BaseModel):
    """Every cluster."""

    workers: int = Field(description="live workers (flushed their counters lately)")
    clusters: dict[str, ClusterView] = Field(description="by name, in config order")


class DrainResult(BaseModel):
    """A drain or restore was recorded; every worker applies it on its next tick."""

    cluster: str
    endpoint: str
    drain: bool
    detail: str


class ListenerView(BaseModel):
    """One listener."""

    name: str
    address: str
    scheme: Literal["http", "https"]
    connections_active: int = Field(description="open downstream connections, all workers")
    routes: list[str]


class ListenersView(BaseModel):
    listeners: list[ListenerView]


class RouteView(BaseModel):
    """One route, in match order (the first match wins)."""

    name: str
    listeners: list[str] | None = Field(description="None: every listener")
    match: dict[str, Any]
    action: Literal["proxy", "redirect", "respond"]
    cluster: str | None
    settings: dict[str, Any] = Field(description="the action's settings")


class RoutesView(BaseModel):
    routes: list[RouteView]


class WorkerView(BaseModel):
    """One worker slot."""

    slot: int
    pid: int
    started_unix: float
    restarts: int = Field(description="how many times this slot's worker was restarted")
    live: bool = Field(description="flushed its counters within the last few ticks")
    seconds_since_flush: float


class WorkersView(BaseModel):
    supervisor_pid: int
    control_pid: int
    workers: list[WorkerView]


class VersionView(BaseModel):
    version: str
    python: str
    started_unix: float = Field(description="when the edge (its supervisor) started")
    uptime_seconds: float


# -- the state the handlers read -----------------------------------------------------------
def plain_config(value: Any) -> Any:
    """The runtime config (:mod:`backhaul.edge.runtime_config`), or a part of it, as JSON
    data: addresses as ``host:port``; the policy objects the edge derives from the config
    (a cluster's ``balance`` and ``retry``, a route's ``retry_policy``) left out."""
    if isinstance(value, Record):
        return {
            name: plain_config(field)
            for name, field in value.as_dict().items()
            if not type(field).__module__.startswith("backhaul.balance.")
        }
    if isinstance(value, Mapping):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, SocketAddress):
        return str(value)
    if isinstance(value, list | tuple):
        return [plain_config(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class AdminState:
    """What the admin API reads and acts on, in the control process."""

    def __init__(
        self,
        settings: Any,
        control: EndpointControl,
        metrics: SharedCounters | None,
        *,
        supervisor_pid: int,
        started_unix: float,
        reload_status: Any = None,
        token: bytes | None = None,
        config_file: str | None = None,
    ) -> None:
        self.settings = settings
        self.control = control
        self.metrics = metrics
        self.supervisor_pid = supervisor_pid
        self.started_unix = started_unix
        self.reload_status = reload_status
        self.token = token
        self.config_file = config_file
        self.config = plain_config(settings)
        self.digest = hashlib.sha256(
            json.dumps(self.config, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        self.openapi = b""  # the document, written by ControlApi
        self.render_metrics = (
            metrics_renderer(metrics, reload=reload_status, discovery=control.discovered)
            if metrics is not None
            else None
        )

    def live_slots(self, now: float) -> dict[int, int]:
        """``{slot: pid}`` of the workers alive now (by their heartbeat)."""
        out: dict[int, int] = {}
        if self.metrics is None:
            return out
        for slot in range(self.metrics.slots):
            pid, starts, closed, beat = self.metrics.slot_info(slot)
            if starts and not closed and now - beat <= STALE_AFTER:
                out[slot] = pid
        return out


# -- handlers ------------------------------------------------------------------------------
async def get_config(state: AdminState) -> ConfigView:
    """The config this edge runs, with its digest and generation (the token is not part of
    it: only where it is read from)."""
    digest, generation = state.digest, 1
    if state.reload_status is not None:
        snap = state.reload_status.snapshot()
        digest, generation = snap.digest or digest, snap.generation
    return ConfigView(digest=digest, generation=generation, config=state.config)


async def validate_config(state: AdminState, body: str) -> CheckReport:
    """Validate a candidate config (YAML or JSON text) without applying it. Answers what
    `backhaul check --json` prints: 200 when it is valid; 422 with every problem (each at
    its config path) when it is not."""
    from backhaul.config import load_text
    from backhaul.config.check_report import check_report
    from backhaul.errors import ConfigError

    source = "<request body>"
    # relative paths (access_log.path, admin.token_file) as if the file replaced the one
    # the edge runs; validation reads files, so it runs beside the event loop
    folder = os.path.dirname(state.config_file) if state.config_file else None
    try:
        config = await asyncio.to_thread(load_text, body, source, folder)
        report = check_report(config, source)
    except ConfigError as exc:
        report = check_report(exc, source)
        raise ApiError(
            422,
            f"the config has {len(exc.problems)} problem(s); nothing was applied",
            source=source,
            valid=False,
            problems=report["problems"],
        ) from None
    return CheckReport.model_validate(report)


async def reload_config(state: AdminState) -> ReloadResult:
    """Ask the supervisor to reload its config file (as SIGHUP does) and wait, at most 30 s,
    for the outcome: 200 when the new config runs; 422 with the error when it was refused
    (the old config keeps serving)."""
    status = state.reload_status
    if status is None:
        raise ApiError(
            503,
            "this edge cannot reload its config: it was started without"
            " reload support; restart it to change the config",
        )
    before = status.snapshot().attempts
    try:
        os.kill(state.supervisor_pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ApiError(503, "the supervisor is gone; the edge is stopping") from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELOAD_DEADLINE
    while (snap := status.snapshot()).attempts <= before:
        if loop.time() > deadline:
            raise ApiError(
                504,
                f"the supervisor did not finish the reload within {RELOAD_DEADLINE:g}s;"
                " GET /config shows the generation in effect",
            )
        await asyncio.sleep(0.05)
    if not snap.last_ok:
        raise ApiError(
            422,
            f"the new config was refused; the old one keeps serving: {snap.last_error}",
            generation=snap.generation,
        )
    return ReloadResult(
        ok=True,
        generation=snap.generation,
        attempts=snap.attempts,
        digest=snap.digest,
        last_attempt_unix=snap.last_attempt_unix,
        detail=f"generation {snap.generation} runs",
    )


def _active(state: AdminState, i: int, checked: bool) -> ActiveCheck | None:
    if not checked:
        return None
    record = state.control.health.check(i)
    return ActiveCheck(
        verdict=record.verdict,
        checks=record.seq,
        passes_in_a_row=record.passes,
        failures_in_a_row=record.failures,
        last_check_unix=record.last_unix if record.seq else None,
        last_reason=record.reason,
    )


def _discovered(
    state: AdminState, name: str, cfg: Any, live: dict[int, int], rows: dict[int, Any]
) -> tuple[DiscoveryView, list[EndpointView]]:
    """A cluster whose endpoints come from DNS: the set the control process published, each
    endpoint with the checker's verdict and each live worker's view (by the record's tag:
    a worker that has not taken the set yet is not counted)."""
    sets = state.control.discovered
    c = sets.find(name)
    spec = cfg.endpoints_from
    found = sets.read(c) if c is not None else None
    checks = getattr(cfg, "health_checks", None) is not None
    endpoints = []
    for ep in found.endpoints if found is not None else ():
        by_state: dict[str, int] = {}
        flights = {}
        for slot, row in rows.items():
            seen = split_view(row.views[ep.record]) if ep.record < len(row.views) else None
            if seen is None or seen[0] != ep.tag:
                continue
            state_name = HEALTH_STATES[seen[1]] if seen[1] < len(HEALTH_STATES) else "unknown"
            by_state[state_name] = by_state.get(state_name, 0) + 1
            flights[str(live[slot])] = row.in_flight[ep.record]
        states = list(by_state)
        record = state.control.health.check(ep.record)
        endpoints.append(
            EndpointView(
                endpoint=f"[{ep.host}]:{ep.port}" if ":" in ep.host else f"{ep.host}:{ep.port}",
                weight=ep.weight,
                state=states[0] if len(states) == 1 else ("mixed" if states else "unknown"),
                workers_by_state=by_state,
                drain_requested=False,
                in_flight=sum(flights.values()),
                in_flight_by_worker=flights,
                ejections_total=0,
                active_check=_active(state, ep.record, checks and record.tag == ep.tag),
            )
        )
    view = DiscoveryView(
        name=spec.name,
        type=spec.type,
        max_endpoints=int(spec.max_endpoints),
        generation=found.generation if found is not None else 0,
        left_out=found.over_limit if found is not None else 0,
        resolutions=found.resolutions if found is not None else 0,
        failures=found.failures if found is not None else 0,
        last_resolution_unix=found.last_unix if found is not None and found.last_unix else None,
        last_error=found.last_error if found is not None else "",
    )
    return view, endpoints


def _clusters(state: AdminState) -> ClustersView:
    now = time.monotonic()
    totals = state.metrics.totals(now) if state.metrics is not None else None
    live = state.live_slots(now)
    health = state.control.health
    rows = {slot: health.worker(slot) for slot in live if slot < health.slots}
    ejections_at = state.metrics.layout.int_fields["ejections"][0] if state.metrics else 0
    views = []
    flat = 0
    for ci, (name, cfg) in enumerate(state.settings.clusters.items()):
        checks = getattr(cfg, "health_checks", None)
        endpoints = []
        for ep in cfg.endpoints:
            label = state.control.entries[flat][1]
            counts = totals.health[flat] if totals is not None else [0] * len(HEALTH_STATES)
            by_state = {s: n for s, n in zip(HEALTH_STATES, counts, strict=True) if n}
            states = list(by_state)
            flights = {str(live[s]): rows[s].in_flight[flat] for s in rows}
            endpoints.append(
                EndpointView(
                    endpoint=label,
                    weight=int(ep.weight),
                    state=states[0] if len(states) == 1 else ("mixed" if states else "unknown"),
                    workers_by_state=by_state,
                    drain_requested=state.control.drain_wanted(flat),
                    in_flight=sum(flights.values()),
                    in_flight_by_worker=flights,
                    ejections_total=totals.ints[ejections_at + flat] if totals else 0,
                    active_check=_active(
                        state, flat, checks is not None and ep.address is not None
                    ),
                )
            )
            flat += 1
        discovery = None
        if getattr(cfg, "endpoints_from", None) is not None:
            discovery, endpoints = _discovered(state, name, cfg, live, rows)
        views.append(
            ClusterView(
                name=name,
                policy=str(cfg.policy),
                health_checks=(
                    f"{checks.type} every {checks.interval:g}s" if checks is not None else None
                ),
                endpoints_from_dns=discovery is not None,
                discovery=discovery,
                workers=totals.workers if totals is not None else 0,
                workers_in_panic=totals.panic[ci] if totals is not None else 0,
                endpoints=endpoints,
            )
        )
    return ClustersView(
        workers=totals.workers if totals else 0, clusters={v.name: v for v in views}
    )


async def list_clusters(state: AdminState) -> ClustersView:
    """Every cluster and endpoint, merged over all live workers: each worker's health view
    (counted by state), the drain wish, the requests in flight summed, and the machine-wide
    health checker's verdict."""
    return _clusters(state)


async def get_cluster(state: AdminState, cluster: str) -> ClusterView:
    """One cluster, as in GET /clusters."""
    view = _clusters(state).clusters.get(cluster)
    if view is not None:
        return view
    raise ApiError(404, f"no cluster '{cluster}'; GET /clusters lists them")


def _drain(state: AdminState, cluster: str, endpoint: str, drain: bool) -> DrainResult:
    if cluster not in state.settings.clusters:
        raise ApiError(404, f"no cluster '{cluster}'; GET /clusters lists them")
    i = state.control.find(cluster, endpoint)
    if i is None and state.control.discovered.find(cluster) is not None:
        raise ApiError(
            404,
            f"the endpoints of cluster '{cluster}' come from DNS and cannot be drained here;"
            " take the endpoint out of the DNS answer instead",
        )
    if i is None:
        raise ApiError(
            404, f"cluster '{cluster}' has no endpoint '{endpoint}'; GET /clusters lists them"
        )
    state.control.set_drain(i, drain)
    return DrainResult(
        cluster=cluster,
        endpoint=endpoint,
        drain=drain,
        detail="every worker applies it within half a second",
    )


async def drain_endpoint(state: AdminState, cluster: str, endpoint: str) -> DrainResult:
    """Take an endpoint out: no new requests, requests in flight finish. ``endpoint`` is its
    label (``127.0.0.1:9001``, ``[::1]:9100`` percent-encoded or not, ``builtin:web-1``)."""
    return _drain(state, cluster, endpoint, True)


async def restore_endpoint(state: AdminState, cluster: str, endpoint: str) -> DrainResult:
    """Put a drained endpoint back (through slow start when the cluster has it)."""
    return _drain(state, cluster, endpoint, False)


async def list_listeners(state: AdminState) -> ListenersView:
    """Every listener, with its open connections over all workers."""
    totals = state.metrics.totals() if state.metrics is not None else None
    at = state.metrics.layout.int_fields["connections"][0] if state.metrics else 0
    out = []
    for li, lst in enumerate(state.settings.listeners):
        routes = [
            r.name for r in state.settings.routes if not r.listeners or lst.name in r.listeners
        ]
        out.append(
            ListenerView(
                name=lst.name,
                address=str(lst.address),
                scheme="https" if getattr(lst, "tls", None) is not None else "http",
                connections_active=totals.ints[at + li] if totals is not None else 0,
                routes=routes,
            )
        )
    return ListenersView(listeners=out)


async def list_routes(state: AdminState) -> RoutesView:
    """Every route in match order, with its match and action."""
    out = []
    for route in state.settings.routes:
        kind: Literal["proxy", "redirect", "respond"] = (
            "proxy"
            if route.proxy is not None
            else "redirect"
            if route.redirect is not None
            else "respond"
        )
        action = getattr(route, kind)
        out.append(
            RouteView(
                name=route.name,
                listeners=list(route.listeners) if route.listeners else None,
                match=plain_config(route.match),
                action=kind,
                cluster=route.proxy.cluster if route.proxy is not None else None,
                settings=plain_config(action),
            )
        )
    return RoutesView(routes=out)


async def list_workers(state: AdminState) -> WorkersView:
    """The worker processes: pid, start time, restarts, and whether each is alive."""
    now = time.monotonic()
    workers = []
    if state.metrics is not None:
        health = state.control.health
        for slot in range(state.metrics.slots):
            pid, starts, closed, beat = state.metrics.slot_info(slot)
            if not starts:
                continue
            row = health.worker(slot) if slot < health.slots else None
            workers.append(
                WorkerView(
                    slot=slot,
                    pid=pid,
                    started_unix=row.started_unix if row is not None else 0.0,
                    restarts=starts - 1,
                    live=not closed and now - beat <= STALE_AFTER,
                    seconds_since_flush=round(max(0.0, now - beat), 3),
                )
            )
    return WorkersView(
        supervisor_pid=state.supervisor_pid, control_pid=os.getpid(), workers=workers
    )


async def get_version(state: AdminState) -> VersionView:
    """The version of backhaul and Python, and how long this edge has run."""
    return VersionView(
        version=__version__,
        python=platform.python_version(),
        started_unix=state.started_unix,
        uptime_seconds=round(time.time() - state.started_unix, 3),
    )


async def get_metrics(state: AdminState) -> Response:
    """Every worker's counters and the services' figures, in the Prometheus text format."""
    from backhaul.admin.metrics import CONTENT_TYPE

    if state.render_metrics is None:
        raise ApiError(404, "this edge keeps no metrics")
    return Response(200, state.render_metrics(), CONTENT_TYPE.decode())


async def get_healthz(state: AdminState) -> Response:
    """Whether the admin listener answers (200 ``ok``), for load balancers' probes."""
    return Response(200, b"ok\n", "text/plain; charset=utf-8")


async def get_openapi(state: AdminState) -> Response:
    """This document."""
    return Response(200, state.openapi, "application/json")


async def get_docs(state: AdminState) -> Response:
    """A page that lists the operations and schemas of this API, with a form to try each."""
    return Response(200, docs_page(), "text/html; charset=utf-8")


def build_router(metrics_path: str = "/metrics") -> Router:
    """The admin API's operations (``metrics_path``: the config's ``admin.metrics_path``)."""
    r = Router()
    r.route("GET", "/config", summary="The config in effect", tag="config")(get_config)
    r.route(
        "POST",
        "/config/validate",
        summary="Validate a config without applying it",
        tag="config",
        errors=(422,),
    )(validate_config)
    r.route(
        "POST",
        "/config/reload",
        summary="Reload the config file",
        tag="config",
        errors=(422, 503, 504),
    )(reload_config)
    r.route("GET", "/clusters", summary="Clusters, merged over workers", tag="clusters")(
        list_clusters
    )
    r.route("GET", "/clusters/{cluster}", summary="One cluster", tag="clusters", errors=(404,))(
        get_cluster
    )
    for verb, handler, what in (
        ("drain", drain_endpoint, "Drain an endpoint"),
        ("restore", restore_endpoint, "Restore a drained endpoint"),
    ):
        r.route(
            "POST",
            f"/clusters/{{cluster}}/endpoints/{{endpoint}}/{verb}",
            summary=what,
            tag="clusters",
            status=202,
            errors=(404,),
        )(handler)
    r.route("GET", "/listeners", summary="Listeners", tag="edge")(list_listeners)
    r.route("GET", "/routes", summary="Routes", tag="edge")(list_routes)
    r.route("GET", "/workers", summary="Worker processes", tag="edge")(list_workers)
    r.route("GET", "/version", summary="Version and uptime", tag="edge")(get_version)
    r.route(
        "GET",
        metrics_path,
        summary="Prometheus metrics",
        tag="observability",
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )(get_metrics)
    r.route(
        "GET",
        "/healthz",
        summary="Liveness",
        tag="observability",
        media_type="text/plain; charset=utf-8",
    )(get_healthz)
    r.route("GET", "/openapi.json", summary="This API's OpenAPI 3.1 document", tag="docs")(
        get_openapi
    )
    r.route("GET", "/docs", summary="Browsable API page", tag="docs", media_type="text/html")(
        get_docs
    )
    return r


class ControlApi:
    """The application the admin listener serves (:func:`backhaul.admin.server.serve_admin`)."""

    def __init__(
        self,
        state: AdminState,
        metrics_path: str = "/metrics",
        public: tuple[str, ...] = ("healthz",),
    ) -> None:
        self.state = state
        self.router = build_router(metrics_path)
        # Public operations need no token: /healthz by default (load balancers' probes carry
        # none); "metrics" opens the metrics path, "docs" the page and the document.
        names = {
            "healthz": ("/healthz",),
            "metrics": (metrics_path,),
            "docs": ("/docs", "/openapi.json"),
        }
        # the page itself holds nothing secret: it asks for the token
        self.public = frozenset({"/docs", *(p for name in public for p in names.get(name, ()))})
        info = {
            "title": "backhaul admin API",
            "version": __version__,
            "description": "Operate a running backhaul edge: its config, clusters and"
            " endpoints, listeners, routes, workers and metrics.",
        }
        document = self.router.openapi(info, state.token is not None, self.public)
        state.openapi = json.dumps(document, indent=1).encode() + b"\n"

    def _authorized(self, request: Request) -> Response | None:
        token = self.state.token
        if token is None or request.path in self.public:
            return None
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return problem(
                401,
                "this admin API needs a bearer token: send Authorization: Bearer <token>"
                " (the token is in the file or environment variable that admin.token_file"
                " or admin.token_env names)",
                (("WWW-Authenticate", 'Bearer realm="backhaul-admin"'),),
            )
        if not hmac.compare_digest(credentials.strip().encode(), token):
            return problem(
                401,
                "the bearer token is not this edge's",
                (("WWW-Authenticate", 'Bearer realm="backhaul-admin", error="invalid_token"'),),
            )
        return None

    async def __call__(self, request: Request) -> Response:
        refused = self._authorized(request)
        if refused is not None:
            return refused
        op, params, allow = self.router.match(request.method, request.path)
        if op is None:
            if allow:
                return problem(405, f"{request.path} answers {allow}", (("Allow", allow),))
            return problem(404, f"no operation at {request.path}; GET /docs lists them")
        return await self.router.call(op, self.state, params, request)
