"""What the operator asked of each endpoint (serve or drain), shared by every worker.

One byte per endpoint in anonymous shared memory that the supervisor maps before it forks
its workers and its control process. The admin API (served by the control process) writes
a byte; every worker reads them all on its tick and moves its own balancer's endpoint into
or out of the draining state. So a drain applies to all workers within a tick, with no
message passing. Next to the wishes, ``health`` holds what the one health checker found
and what each worker has in flight (:mod:`backhaul.state.endpoint_health`), and
``discovered`` the endpoints the control process found through DNS
(:mod:`backhaul.state.discovered_endpoints`; their check records follow the config
endpoints' in ``health``). Plain data only: no asyncio, no sockets.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable

from backhaul.state.discovered_endpoints import DiscoveredEndpoints
from backhaul.state.endpoint_health import EndpointHealth

__all__ = ["EndpointControl", "endpoint_labels"]

SERVE = 0
DRAIN = 1


def endpoint_labels(settings: object) -> list[tuple[str, str, bool]]:
    """``(cluster, endpoint label, drain at start)`` for every endpoint of a (thawed or
    validated) config, in config order; labels as the edge names endpoints."""
    out: list[tuple[str, str, bool]] = []
    clusters = settings.clusters  # type: ignore[attr-defined]
    for name, cluster in clusters.items():
        for i, ep in enumerate(cluster.endpoints):
            address = ep.address
            if address is None:
                label = f"builtin:{name}-{i + 1}"
            else:
                host, port = address[0], address[1]
                label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            out.append((name, label, bool(getattr(ep, "drain", False))))
    return out


class EndpointControl:
    """The serve/drain wish per endpoint, readable and writable by every worker."""

    def __init__(
        self,
        endpoints: Iterable[tuple[str, str, bool]],
        slots: int = 1,
        discovered: Iterable[tuple[str, int]] = (),
    ) -> None:
        """``slots``: how many worker slots (the metrics store's) the health map holds;
        ``discovered``: ``(cluster, max_endpoints)`` of the clusters whose endpoints come
        from DNS (:func:`~backhaul.state.discovered_endpoints.discovered_clusters`)."""
        entries = list(endpoints)
        self.entries = entries
        self.index: dict[tuple[str, str], int] = {
            (cluster, label): i for i, (cluster, label, _) in enumerate(entries)
        }
        self._map = mmap.mmap(-1, max(1, len(entries)))
        for i, (_, _, drain) in enumerate(entries):
            self._map[i] = DRAIN if drain else SERVE
        self.discovered = DiscoveredEndpoints(list(discovered), first_record=len(entries))
        self.health = EndpointHealth(len(entries) + self.discovered.record_count, slots)

    def find(self, cluster: str, label: str) -> int | None:
        return self.index.get((cluster, label))

    def drain_wanted(self, i: int) -> bool:
        return self._map[i] == DRAIN

    def set_drain(self, i: int, drain: bool) -> None:
        self._map[i] = DRAIN if drain else SERVE
