"""Clusters whose endpoints come from DNS (``endpoints_from``), in a running worker.

Under the supervisor, the names are resolved once for the whole machine, by the control
process (:mod:`backhaul.admin.discovery`), which publishes each cluster's endpoint set in
shared memory (:mod:`backhaul.state.discovered_endpoints`) and health-checks the endpoints
into the shared health map. Each worker's :class:`SharedDiscovery` reads a cluster's set on
its tick when the set's generation moved (one read of shared memory per cluster and tick,
never a wait), rebuilds the cluster's endpoints from it with :func:`apply_discovered`, and
replays the checker's results for them into its own balancer, as it does for the config's
endpoints. A worker started later (a restart, a reload) serves the set found so far at once.

A worker without a supervisor (tests, benchmarks) resolves its clusters itself
(:class:`Discovery`, one :class:`~backhaul.services.dns.endpoint_source.EndpointSource` per
cluster) and checks what it found.

:func:`apply_discovered` keeps the endpoints that stay (same objects: their health, pool and
counters carry on), creates the new ones, and hands the new membership to the balancer
(``set_endpoints``). A removed endpoint takes no new request; requests already on it finish
normally, and its connections are closed as they come back instead of pooled.

Per-endpoint metrics series exist only for endpoints written in the config; discovered
endpoints are counted in their cluster's series, and the admin API's merged view reads each
worker's view of them from the shared health map's worker rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

from backhaul.edge.cluster import Cluster, Endpoint
from backhaul.state.endpoint_control import EndpointControl
from backhaul.state.endpoint_health import state_view
from backhaul.state.shared_counters import HEALTH_STATES

__all__ = [
    "Discovery",
    "SharedDiscovery",
    "apply_discovered",
    "metered",
    "start_discovery",
]


class Found(Protocol):
    """An endpoint as a resolution found it (a ``DiscoveredEndpoint``, a ``SharedEndpoint``)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def weight(self) -> int: ...


def metered(cluster: Cluster) -> list[Endpoint]:
    """The endpoints with their own metrics series: the config's (none when the cluster's
    endpoints come from DNS)."""
    return [] if cluster.discovered else cluster.endpoints


def apply_discovered(
    cluster: Cluster, found: Sequence[Found], now: float
) -> tuple[list[Endpoint], list[Endpoint]]:
    """Make ``cluster``'s endpoints the ``found`` ones; returns ``(added, removed)``."""
    current = {(ep.host, ep.port): ep for ep in cluster.endpoints}
    members: list[Endpoint] = []
    added: list[Endpoint] = []
    for d in found:
        ep = current.get((d.host, d.port))
        if ep is None:
            ep = Endpoint(cluster, d.host, d.port, d.weight)
            added.append(ep)
        members.append(ep)
    wanted = {(d.host, d.port) for d in found}
    removed = [ep for key, ep in current.items() if key not in wanted]
    cluster.endpoints[:] = members
    cluster.log_events(cluster.balancer.set_endpoints(members, now))
    for d, ep in zip(found, members, strict=True):
        if ep.weight != d.weight:
            cluster.balancer.set_weight(ep, d.weight, now)
    for ep in removed:
        ep.max_idle = 0  # connections of in-flight requests close when they come back
        ep.close_idle()
    return added, removed


class _Bound:
    """A worker's endpoint tied to its check record in the shared health map."""

    __slots__ = ("ep", "record", "seen", "tag")

    def __init__(self, ep: Endpoint, record: int, tag: int, seen: int) -> None:
        self.ep = ep
        self.record = record
        self.tag = tag
        self.seen = seen  # the last of the record's results replayed into the balancer


class SharedDiscovery:
    """The discovered clusters of a worker under a supervisor: their endpoint sets come from
    the control process through shared memory (see the module docstring)."""

    def __init__(self, clusters: dict[str, Cluster], control: EndpointControl) -> None:
        self.sets = control.discovered
        self.health = control.health
        self.clusters: list[tuple[Cluster, int]] = []
        self.generations: list[int] = []
        self.bound: list[list[_Bound]] = []
        for name, cluster in clusters.items():
            c = self.sets.find(name)
            if c is None:
                continue
            cluster.discovered = True
            self.clusters.append((cluster, c))
            self.generations.append(0)
            self.bound.append([])

    def tick(self, now: float) -> None:
        """Take the sets published since the last tick, then the checker's new results."""
        sets = self.sets
        for k, (cluster, c) in enumerate(self.clusters):
            if sets.generation(c) != self.generations[k]:
                found = sets.read_nowait(c)
                if found is not None:  # else its writer is at work: next tick
                    self._rebuild(k, cluster, found.endpoints, now)
                    self.generations[k] = found.generation
            self._replay(cluster, self.bound[k], now)

    def _rebuild(self, k: int, cluster: Cluster, found: Sequence[Any], now: float) -> None:
        apply_discovered(cluster, found, now)
        before = {id(b.ep): b for b in self.bound[k]}
        by_key = {(d.host, d.port): d for d in found}
        bound = []
        for ep in cluster.endpoints:
            shared = by_key[(ep.host, ep.port)]
            old = before.get(id(ep))
            same = old is not None and (old.record, old.tag) == (shared.record, shared.tag)
            bound.append(_Bound(ep, shared.record, shared.tag, old.seen if same and old else 0))
        self.bound[k] = bound

    def _replay(self, cluster: Cluster, bound: list[_Bound], now: float) -> None:
        health = self.health
        balancer = cluster.balancer
        for b in bound:
            if health.check_seq(b.record) == b.seen:
                continue
            record = health.check(b.record)
            if record.tag != b.tag:  # the record went to another endpoint: not ours now
                continue
            last = record.seq
            for n in range(max(b.seen + 1, last - health.ring + 1), last + 1):
                detail = record.reason if n == last else ""
                cluster.log_events(balancer.check_result(b.ep, record.passed(n), now, detail))
            b.seen = last

    def views(self, in_flight: list[int], views: list[int]) -> None:
        """Write this worker's requests in flight and state of each discovered endpoint at
        its record's place (the worker row of the shared health map)."""
        for bound in self.bound:
            for b in bound:
                in_flight[b.record] = b.ep.in_flight
                state = getattr(b.ep.state, "value", str(b.ep.state))
                code = HEALTH_STATES.index(state) if state in HEALTH_STATES else 0
                views[b.record] = state_view(b.tag, code)

    async def aclose(self) -> None:
        """Nothing runs on its own: the worker's tick drives it."""


class Discovery:
    """A worker without a supervisor: its own endpoint sources and their tasks (owned:
    :meth:`aclose`); the endpoints it finds are checked by this worker."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tasks: list[asyncio.Task[None]] = []
        self.sources: dict[str, Any] = {}
        self._check_restarts: set[asyncio.Task[None]] = set()

    def add(self, cluster: Cluster, spec: Any) -> None:
        from backhaul.services.dns.endpoint_source import EndpointSource

        def on_change(found: list[Any], _now: float) -> None:
            added, removed = apply_discovered(cluster, found, self.loop.time())
            if (added or removed) and cluster.check_schedule is not None:
                self._restart_checks(cluster)

        cluster.discovered = True
        source = EndpointSource(cluster.name, spec, on_change)
        self.sources[cluster.name] = source
        self.tasks.append(self.loop.create_task(source.run()))

    def _restart_checks(self, cluster: Cluster) -> None:
        from backhaul.edge.healthcheck import run_checks

        old = cluster.cancel_checks()
        run_checks(cluster)

        async def reap() -> None:
            for task in old:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        task = self.loop.create_task(reap())
        self._check_restarts.add(task)
        task.add_done_callback(self._check_restarts.discard)

    def tick(self, now: float) -> None:
        """Nothing to take: the sources apply what they find at once."""

    def views(self, in_flight: list[int], views: list[int]) -> None:
        """No shared map holds discovered endpoints without a supervisor."""

    async def aclose(self) -> None:
        tasks = [*self.tasks, *self._check_restarts]
        self.tasks = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def start_discovery(
    clusters: dict[str, Cluster],
    config: Any,
    loop: asyncio.AbstractEventLoop,
    control: EndpointControl | None = None,
) -> SharedDiscovery | Discovery:
    """The discovery of a worker: the sets the control process publishes in ``control``
    (taken at once), or, without a supervisor (``control`` None), a resolver per cluster of
    ``config`` that has ``endpoints_from``."""
    if control is not None:
        shared = SharedDiscovery(clusters, control)
        shared.tick(loop.time())
        return shared
    discovery = Discovery(loop)
    for name, cluster_cfg in config.clusters.items():
        spec = getattr(cluster_cfg, "endpoints_from", None)
        if spec is not None:
            discovery.add(clusters[name], spec)
    return discovery
