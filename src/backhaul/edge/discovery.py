"""Clusters whose endpoints come from DNS (``endpoints_from``), in a running worker.

:func:`start_discovery` starts one :class:`~backhaul.services.dns.endpoint_source.
EndpointSource` per such cluster; each change of the resolved set goes through
:func:`apply_discovered`, which keeps the endpoints that stay (same objects: their health,
pool and counters carry on), creates the new ones, and hands the new membership to the
balancer (``set_endpoints``). A removed endpoint takes no new request; requests already on
it finish normally, and its connections are closed as they come back instead of pooled. When
the cluster has active health checks they are restarted over the new membership.

Per-endpoint metrics series exist only for endpoints written in the config; discovered
endpoints are counted in their cluster's series.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from backhaul.edge.cluster import Cluster, Endpoint

if TYPE_CHECKING:  # at run time only a cluster with DNS discovery loads the DNS package
    from backhaul.proto.dns_discovery import DiscoveredEndpoint

__all__ = ["Discovery", "apply_discovered", "metered", "start_discovery"]


def metered(cluster: Cluster) -> list[Endpoint]:
    """The endpoints with their own metrics series: the config's (none when the cluster's
    endpoints come from DNS)."""
    return [] if cluster.discovered else cluster.endpoints


def apply_discovered(
    cluster: Cluster, found: list[DiscoveredEndpoint], now: float
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


class Discovery:
    """The endpoint sources of one worker, and their tasks (owned: :meth:`aclose`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tasks: list[asyncio.Task[None]] = []
        self.sources: dict[str, Any] = {}
        self._check_restarts: set[asyncio.Task[None]] = set()

    def add(self, cluster: Cluster, spec: Any) -> None:
        from backhaul.services.dns.endpoint_source import EndpointSource

        def on_change(found: list[DiscoveredEndpoint], _now: float) -> None:
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

    async def aclose(self) -> None:
        tasks = [*self.tasks, *self._check_restarts]
        self.tasks = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def start_discovery(
    clusters: dict[str, Cluster], config: Any, loop: asyncio.AbstractEventLoop
) -> Discovery:
    """Start resolving every cluster of ``config`` that has ``endpoints_from``."""
    discovery = Discovery(loop)
    for name, cluster_cfg in config.clusters.items():
        spec = getattr(cluster_cfg, "endpoints_from", None)
        if spec is not None:
            discovery.add(clusters[name], spec)
    return discovery
