"""DNS discovery once per machine: the control process's side of ``endpoints_from``.

:class:`DiscoveryPublisher` runs one :class:`~backhaul.services.dns.endpoint_source.
EndpointSource` per cluster whose endpoints come from DNS (the same resolution rules the
workers used to follow each on their own: :mod:`backhaul.proto.dns_discovery`) and
publishes each new set in shared memory (:mod:`backhaul.state.discovered_endpoints`), where
every worker takes it on its tick (:mod:`backhaul.edge.discovery`). So N workers send one
resolver's queries, and the health checker (:mod:`backhaul.admin.checker`) checks each
discovered endpoint once for the machine.

Each cluster has room for ``endpoints_from.max_endpoints`` endpoints (the shared section is
sized when the supervisor maps it). An answer with more keeps the endpoints already in the
set, then the new ones in address order, up to the room; the rest are left out, counted
(``over_limit``: the admin API's cluster view and the metric
``backhaul_cluster_discovery_left_out``) and logged once per change of the count.

An endpoint that stays keeps its place, its check record and that record's tag; a new one
takes a record a removed one left, cleared, under a new tag (the set's new generation).

When the control process restarts (it was killed; a reload), it starts from the set in the
shared map, so nothing changes for the workers until DNS says something new.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backhaul.state.discovered_endpoints import SharedEndpoint
from backhaul.state.endpoint_control import EndpointControl

if TYPE_CHECKING:  # dnspython loads only when a cluster has endpoints_from
    from backhaul.services.dns.endpoint_source import EndpointSource

__all__ = ["DiscoveryPublisher", "OnPublished"]

OnPublished = Callable[[str, tuple[SharedEndpoint, ...]], None]
"""``on_published(cluster, endpoints)``: a cluster's new set, just published."""

_LISTED = 8  # endpoints named in a log line about a change


def _describe(endpoints: tuple[SharedEndpoint, ...]) -> str:
    names = [f"[{e.host}]:{e.port}" if ":" in e.host else f"{e.host}:{e.port}" for e in endpoints]
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return (", ".join(names[:_LISTED]) or "none") + more


class DiscoveryPublisher:
    """The endpoint sources of one control process (start on a running loop; ``cancel``
    and await what it returns)."""

    def __init__(
        self, settings: Any, control: EndpointControl, on_published: OnPublished | None = None
    ) -> None:
        self.sets = control.discovered
        self.health = control.health
        self.on_published = on_published
        self.specs: list[tuple[str, int, Any]] = []
        self.current: dict[str, tuple[SharedEndpoint, ...]] = {}
        self.over: dict[str, int] = {}
        for name, cluster in settings.clusters.items():
            spec = getattr(cluster, "endpoints_from", None)
            c = self.sets.find(name)
            if spec is None or c is None:
                continue
            self.specs.append((name, c, spec))
            # what an earlier control process published (a restart, a reload): kept until
            # DNS says something new
            found = self.sets.read(c)
            self.current[name] = found.endpoints
            self.over[name] = found.over_limit
        self.sources: dict[str, EndpointSource] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start resolving (one task per cluster, owned: :meth:`aclose`)."""
        from backhaul.proto.dns_discovery import DiscoveredEndpoint
        from backhaul.services.dns.endpoint_source import EndpointSource

        loop = asyncio.get_running_loop()
        for name, c, spec in self.specs:

            def on_change(found: list[DiscoveredEndpoint], _now: float, n: str = name) -> None:
                self.found(n, found)

            source = EndpointSource(name, spec, on_change)
            if self.current[name] or self.sets.generation(c):
                source.current = [
                    DiscoveredEndpoint(e.host, e.port, e.weight) for e in self.current[name]
                ]
            self.sources[name] = source
            self.tasks.append(loop.create_task(self._run(name, c, source)))

    async def _run(self, name: str, c: int, source: EndpointSource) -> None:
        sets = self.sets
        while True:
            failures, generation = source.failures, sets.generation(c)
            at = await source.run_once()
            if source.failures != failures:
                sets.failed(c, source.last_error)
            elif sets.generation(c) == generation:  # resolved, nothing new to publish
                sets.resolved(c, self.over[name])
            await asyncio.sleep(max(0.0, at - time.monotonic()))

    def found(self, name: str, found: list[Any], now_unix: float | None = None) -> None:
        """A resolution of ``name``'s cluster found ``found`` (host, port, weight each, in
        address order): publish the set it makes, if it changed (see the module
        docstring)."""
        sets = self.sets
        c = sets.index[name]
        room = sets.rooms[c]
        # the set as the shared map holds it (not a copy kept here: a control process that
        # took over from another starts from what that one published last)
        before = sets.read(c)
        current = {(e.host, e.port): e for e in before.endpoints}
        kept = [d for d in found if (d.host, d.port) in current]
        new = [d for d in found if (d.host, d.port) not in current]
        chosen = {(d.host, d.port) for d in kept + new[: max(0, room - len(kept))]}
        over = len(found) - len(chosen)
        taken = {current[key].record for key in chosen if key in current}
        free = [r for r in sets.records[c] if r not in taken]
        tag = sets.next_generation(c)
        entries: list[SharedEndpoint] = []
        for d in found:
            key = (d.host, d.port)
            if key not in chosen:
                continue
            old = current.get(key)
            if old is not None:
                entries.append(old.replace(weight=d.weight))
                continue
            record = free.pop(0)
            self.health.reset_check(record, tag)  # the results of whoever had it go
            entries.append(SharedEndpoint(d.host, d.port, d.weight, record, tag))
        if over != self.over[name]:
            print(
                f"backhaul: cluster {name}: endpoints_from answered {len(found)} endpoints,"
                f" room for {room} (endpoints_from.max_endpoints):"
                f" {over} left out" + (" (raise max_endpoints to use them)" if over else ""),
                file=sys.stderr,
                flush=True,
            )
        self.over[name] = over
        published = tuple(entries)
        if published == before.endpoints and before.generation:
            return
        sets.publish(c, published, over, now_unix)
        self.current[name] = published
        print(
            f"backhaul: cluster {name}: {len(published)} endpoint(s) from DNS:"
            f" {_describe(published)} (generation {sets.generation(c)})",
            file=sys.stderr,
            flush=True,
        )
        if self.on_published is not None:
            self.on_published(name, published)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Stop resolving; returns the cancelled tasks, for the owner to await."""
        tasks = self.tasks
        self.tasks = []
        for task in tasks:
            task.cancel()
        return tasks
