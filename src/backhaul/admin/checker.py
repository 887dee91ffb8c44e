"""The active health checks of one edge, run once for the whole machine.

The control process runs them (:mod:`backhaul.admin.process`), not each worker: N workers
do not send N times the probe traffic. Each endpoint written in the config of a cluster that
has ``health_checks`` gets one check loop (:func:`backhaul.edge.healthcheck.run_checks`: the
same schedule, connect, request and judgment the workers used to run). Each result goes to
this process's own balancer of the cluster (so the checker has a verdict by the thresholds,
and logs each change once) and into the shared map (:class:`~backhaul.state.endpoint_health.
EndpointHealth`), from which every worker replays it into its own balancer on its tick.

Built-in origins live inside each worker, and endpoints found through DNS differ per worker:
those are still checked by the worker that has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from backhaul.admin.process import checked_clusters
from backhaul.balance import HealthEvent
from backhaul.balance.health import ROUTABLE
from backhaul.edge.cluster import Cluster, Endpoint
from backhaul.edge.healthcheck import Report, run_checks
from backhaul.state.endpoint_control import EndpointControl

__all__ = ["HealthChecker"]


class HealthChecker:
    """The check loops of every checked endpoint (start on a running loop; ``aclose``)."""

    def __init__(self, settings: Any, control: EndpointControl) -> None:
        self.settings = settings
        self.control = control
        self.clusters: dict[str, Cluster] = {}

    def start(self) -> None:
        from backhaul.edge.tls import ClientTls

        now = asyncio.get_running_loop().time()
        for name, config in checked_clusters(self.settings):
            builtin = {i: 0 for i, ep in enumerate(config.endpoints) if ep.address is None}
            cluster = Cluster(name, config, builtin, now)
            if getattr(config, "tls", None) is not None:
                cluster.tls = ClientTls(config.tls)
            checked = []
            index: dict[int, int] = {}
            health = self.control.health
            for ep in cluster.endpoints:
                i = self.control.find(name, ep.label)
                if i is None or ep.label.startswith("builtin:"):
                    continue
                checked.append(ep)
                index[id(ep)] = i
                # Results already in the map (a restarted control process, a reload that
                # kept the endpoint): this checker's verdict starts where they left it.
                record = health.check(i)
                for n in range(max(1, record.seq - health.ring + 1), record.seq + 1):
                    cluster.balancer.check_result(ep, record.passed(n), now)
            self.clusters[name] = cluster
            run_checks(cluster, checked, self._reporter(cluster, index))

    def _reporter(self, cluster: Cluster, index: dict[int, int]) -> Report:
        health = self.control.health

        def report(ep: Endpoint, passed: bool, reason: str, now: float) -> None:
            was = ep.state in ROUTABLE
            events = cluster.balancer.check_result(ep, passed, now, reason)
            verdict = "healthy" if ep.state in ROUTABLE else "unhealthy"
            if (ep.state in ROUTABLE) != was:
                # The checker's verdict, once per machine; each worker logs its own state
                # change ("endpoint ... healthy -> unhealthy") when it replays the result.
                detail = next((e.detail for e in events if isinstance(e, HealthEvent)), reason)
                print(
                    f"backhaul: health checks: {cluster.name}: {ep.label} now {verdict} ({detail})",
                    file=sys.stderr,
                    flush=True,
                )
            health.publish(
                index[id(ep)], passed, verdict, ep.check_passes, ep.check_failures, reason
            )

        return report

    async def aclose(self) -> None:
        tasks = []
        for cluster in self.clusters.values():
            tasks += cluster.cancel_checks()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
