"""Forwarding decisions: which upstreams a name goes to, in what order, how each is doing,
and single-flight bookkeeping (concurrent identical misses share one upstream query).

- :class:`ForwardPlan` maps names to upstream groups: the deepest configured zone that is a
  suffix of the name wins (conditional forwarding), else the default group.
- :class:`UpstreamHealth` keeps, per upstream, consecutive failures and a smoothed latency;
  ``failures_to_down`` failures in a row mark it down for ``down_for`` seconds, during which
  it is tried only after every healthy one (never skipped: a down list is still a list).
- :class:`Flights` holds the waiters of each question being resolved. The first asker
  becomes the leader (the caller sends one upstream query); later askers wait; ``finish``
  hands every waiter back. Bounded: at most ``max_flights`` questions and
  ``max_waiters`` per question (beyond that, :meth:`Flights.join` refuses).

Pure: time is passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

import dns.name

__all__ = [
    "FlightJoin",
    "Flights",
    "ForwardPlan",
    "UpstreamHealth",
    "UpstreamStatistics",
]

Upstream = tuple[str, int]
K = TypeVar("K")
W = TypeVar("W")


class ForwardPlan:
    """Upstream groups by zone (conditional forwarding) and the default group."""

    def __init__(
        self,
        default: Sequence[Upstream],
        zones: dict[str, Sequence[Upstream]] | None = None,
    ) -> None:
        self.default = tuple(default)
        self.zones: dict[dns.name.Name, tuple[Upstream, ...]] = {
            dns.name.from_text(z.rstrip(".") + "."): tuple(ups) for z, ups in (zones or {}).items()
        }
        self._depths = sorted({len(n) for n in self.zones}, reverse=True)

    def upstreams_for(self, qname: dns.name.Name) -> tuple[Upstream, ...]:
        labels = qname.labels
        for depth in self._depths:
            if depth <= len(labels):
                group = self.zones.get(dns.name.Name(labels[len(labels) - depth :]))
                if group is not None:
                    return group
        return self.default

    def all_upstreams(self) -> list[Upstream]:
        seen: dict[Upstream, None] = dict.fromkeys(self.default)
        for group in self.zones.values():
            seen.update(dict.fromkeys(group))
        return list(seen)


@dataclass
class UpstreamStatistics:
    queries: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    latency_ewma: float = 0.0


class UpstreamHealth:
    """Per-upstream failure counting and ordering."""

    def __init__(self, failures_to_down: int = 3, down_for: float = 5.0) -> None:
        self.failures_to_down = failures_to_down
        self.down_for = down_for
        self.stats: dict[Upstream, UpstreamStatistics] = {}

    def _get(self, upstream: Upstream) -> UpstreamStatistics:
        stats = self.stats.get(upstream)
        if stats is None:
            stats = self.stats[upstream] = UpstreamStatistics()
        return stats

    def order(self, group: Sequence[Upstream], now: float) -> list[Upstream]:
        """``group`` with the upstreams that are up first (config order kept)."""
        up = [u for u in group if self._get(u).down_until <= now]
        down = [u for u in group if self._get(u).down_until > now]
        return up + down

    def is_up(self, upstream: Upstream, now: float) -> bool:
        return self._get(upstream).down_until <= now

    def succeeded(self, upstream: Upstream, latency: float, now: float) -> None:
        stats = self._get(upstream)
        stats.queries += 1
        stats.consecutive_failures = 0
        stats.down_until = 0.0
        alpha = 0.2
        old = stats.latency_ewma
        stats.latency_ewma = latency if old == 0 else (1 - alpha) * old + alpha * latency

    def failed(self, upstream: Upstream, now: float) -> bool:
        """Count a failure; True when this one marked the upstream down."""
        stats = self._get(upstream)
        stats.queries += 1
        stats.failures += 1
        stats.consecutive_failures += 1
        if stats.consecutive_failures >= self.failures_to_down and stats.down_until <= now:
            stats.down_until = now + self.down_for
            return True
        return False


class FlightJoin(Enum):
    LEADER = "leader"
    """First asker: send the upstream query."""
    WAITING = "waiting"
    """A query for this question is on its way: wait for it."""
    REFUSED = "refused"
    """Too many questions or waiters in flight: answer SERVFAIL (or drop)."""


class Flights(Generic[K, W]):
    """Waiters per question being resolved upstream."""

    def __init__(self, max_flights: int = 10_000, max_waiters: int = 256) -> None:
        self.max_flights = max_flights
        self.max_waiters = max_waiters
        self._waiting: dict[K, list[W]] = {}
        self.joined = 0
        self.led = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def join(self, key: K, waiter: W) -> FlightJoin:
        waiters = self._waiting.get(key)
        if waiters is None:
            if len(self._waiting) >= self.max_flights:
                return FlightJoin.REFUSED
            self._waiting[key] = [waiter]
            self.led += 1
            return FlightJoin.LEADER
        if len(waiters) >= self.max_waiters:
            return FlightJoin.REFUSED
        waiters.append(waiter)
        self.joined += 1
        return FlightJoin.WAITING

    def finish(self, key: K) -> list[W]:
        """Every waiter of ``key`` (the leader first); the question is no longer in flight."""
        return self._waiting.pop(key, [])
