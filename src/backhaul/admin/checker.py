"""The active health checks of one edge, run once for the whole machine.

The control process runs them (:mod:`backhaul.admin.process`), not each worker: N workers
do not send N times the probe traffic. Each endpoint written in the config of a cluster that
has ``health_checks`` gets one check loop (:func:`backhaul.edge.healthcheck.run_checks`: the
same schedule, connect, request and judgment the workers used to run). Each result goes to
this process's own balancer of the cluster (so the checker has a verdict by the thresholds,
and logs each change once) and into the shared map (:class:`~backhaul.state.endpoint_health.
EndpointHealth`), from which every worker replays it into its own balancer on its tick.

The endpoints found through DNS are resolved here too, once for the machine
(:class:`~backhaul.admin.discovery.DiscoveryPublisher`): each new set is published for the
workers, and each endpoint of a cluster with ``health_checks`` gets its check loop while it
is in the set, its results going to the record the set gives it (stopped when it leaves,
before its record can go to another endpoint).

Built-in origins live inside each worker: those are still checked by the worker that has
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from backhaul.admin.discovery import DiscoveryPublisher
from backhaul.admin.process import checked_clusters
from backhaul.balance import HealthEvent
from backhaul.balance.health import ROUTABLE
from backhaul.edge.cluster import Cluster, Endpoint
from backhaul.edge.discovery import apply_discovered
from backhaul.edge.healthcheck import Report, run_checks, start_check
from backhaul.state.discovered_endpoints import SharedEndpoint
from backhaul.state.endpoint_control import EndpointControl
from backhaul.state.endpoint_health import CheckRecord

__all__ = ["HealthChecker"]


def _resume(cluster: Cluster, ep: Endpoint, record: CheckRecord, ring: int, now: float) -> None:
    """Results already in the map (a restarted control process, a reload that kept the
    endpoint): this checker's verdict starts where they left it."""
    for n in range(max(1, record.seq - ring + 1), record.seq + 1):
        cluster.balancer.check_result(ep, record.passed(n), now)


class HealthChecker:
    """The check loops of every checked endpoint, and the DNS discovery of the clusters that
    have ``endpoints_from`` (start on a running loop; ``aclose``)."""

    def __init__(self, settings: Any, control: EndpointControl) -> None:
        self.settings = settings
        self.control = control
        self.clusters: dict[str, Cluster] = {}
        self.discovery: DiscoveryPublisher | None = None
        # discovered endpoints being checked: the index of their records, their tasks
        self._records: dict[str, dict[int, int]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopped: set[asyncio.Task[None]] = set()

    def _cluster(self, name: str, config: Any, now: float) -> Cluster:
        from backhaul.edge.tls import ClientTls

        builtin = {i: 0 for i, ep in enumerate(config.endpoints) if ep.address is None}
        cluster = Cluster(name, config, builtin, now)
        if getattr(config, "tls", None) is not None:
            cluster.tls = ClientTls(config.tls)
        self.clusters[name] = cluster
        return cluster

    def start(self) -> None:
        now = asyncio.get_running_loop().time()
        for name, config in checked_clusters(self.settings):
            cluster = self._cluster(name, config, now)
            checked = []
            index: dict[int, int] = {}
            health = self.control.health
            for ep in cluster.endpoints:
                i = self.control.find(name, ep.label)
                if i is None or ep.label.startswith("builtin:"):
                    continue
                checked.append(ep)
                index[id(ep)] = i
                _resume(cluster, ep, health.check(i), health.ring, now)
            run_checks(cluster, checked, self._reporter(cluster, index))
        self.discovery = DiscoveryPublisher(self.settings, self.control, self._published)
        for name, _, _ in self.discovery.specs:
            config = self.settings.clusters[name]
            if getattr(config, "health_checks", None) is not None:
                self._cluster(name, config, now)
                self._records[name] = {}
                self._published(name, self.discovery.current[name])
        self.discovery.start()

    def _published(self, name: str, endpoints: tuple[SharedEndpoint, ...]) -> None:
        """A discovered cluster's new set: stop checking who left, check who came."""
        cluster = self.clusters.get(name)
        records = self._records.get(name)
        if cluster is None or records is None:  # no health checks: nothing to do
            return
        now = asyncio.get_running_loop().time()
        added, removed = apply_discovered(cluster, endpoints, now)
        for ep in removed:
            records.pop(id(ep), None)
            task = self._tasks.pop(id(ep), None)
            if task is not None:  # cancelled now: it never reports again
                task.cancel()
                cluster.check_tasks.remove(task)
                self._stopped.add(task)
                task.add_done_callback(self._stopped.discard)
        by_key = {(e.host, e.port): e for e in endpoints}
        health = self.control.health
        report = self._reporter(cluster, records)
        for ep in added:
            shared = by_key[(ep.host, ep.port)]
            records[id(ep)] = shared.record
            record = health.check(shared.record)
            if record.tag == shared.tag:
                _resume(cluster, ep, record, health.ring, now)
            self._tasks[id(ep)] = start_check(cluster, ep, report)

    def _reporter(self, cluster: Cluster, index: dict[int, int]) -> Report:
        health = self.control.health

        def report(ep: Endpoint, passed: bool, reason: str, now: float) -> None:
            i = index.get(id(ep))
            if i is None:  # a discovered endpoint that left the set
                return
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
            health.publish(i, passed, verdict, ep.check_passes, ep.check_failures, reason)

        return report

    async def aclose(self) -> None:
        tasks = list(self._stopped)
        if self.discovery is not None:
            tasks += self.discovery.cancel()
        for cluster in self.clusters.values():
            tasks += cluster.cancel_checks()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
