# cython: annotation_typing=False
"""The balancer of one cluster: which endpoints may take traffic, and which one takes the next
request.

:class:`Balancer` holds what every policy shares — health (the table in
:mod:`backhaul.balance.health`), passive outlier detection, slow start, drain, panic — and
keeps ``candidates``, the endpoints ``pick()`` may return, up to date. Each policy is a
subclass that implements ``pick()`` over them (see :func:`make_balancer`).

Nothing here reads a clock: every method that needs the time takes ``now`` (monotonic
seconds). Methods that change health return the events to log, usually an empty tuple.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Collection, Sequence
from typing import ClassVar, Final

from backhaul.balance.endpoint import EndpointState
from backhaul.balance.health import (
    ROUTABLE,
    TRANSITIONS,
    TRANSITIONS_NO_SLOW_START,
    HealthEvent,
    HealthInput,
    HealthState,
    PanicEvent,
    next_state,
)
from backhaul.balance.settings import BalanceSettings

__all__ = [
    "CONNECT_FAILURE",
    "FAILURE_PENALTY",
    "RESET",
    "TIMEOUT",
    "Balancer",
    "BalancerStatistics",
    "Event",
]

E = EndpointState
"""The endpoints a balancer holds: the edge's own class subclasses EndpointState. (An alias,
not a type variable: a generic class cannot be a C type, and Balancer is one once compiled.)"""

Event = HealthEvent | PanicEvent

CONNECT_FAILURE: Final = -1
"""``finished()`` outcome: the connection to the endpoint failed or timed out (the request
was never sent)."""
RESET: Final = -2
"""``finished()`` outcome: the upstream closed or reset the connection before a complete
response head."""
TIMEOUT: Final = -3
"""``finished()`` outcome: no response head within the deadline."""

FAILURE_PENALTY: Final = 10.0
"""least_request prices a connect failure, reset or timeout as a response this many times
slower than the cluster's average latency (then it decays like any sample)."""

_NO_EVENTS: Final[tuple[Event, ...]] = ()

_HEALTHY = HealthState.HEALTHY
_WARMING = HealthState.WARMING
_EJECTED = HealthState.EJECTED
_DRAINING = HealthState.DRAINING


class BalancerStatistics:
    """A snapshot of a balancer's counters (trio's ``statistics()``)."""

    __slots__ = ("by_state", "candidates", "ejections_refused", "panic", "total")

    def __init__(
        self,
        by_state: dict[HealthState, int],
        candidates: int,
        total: int,
        panic: bool,
        ejections_refused: int,
    ) -> None:
        self.by_state = by_state
        self.candidates = candidates
        self.total = total
        self.panic = panic
        self.ejections_refused = ejections_refused

    def __repr__(self) -> str:
        states = ", ".join(f"{s.value}={n}" for s, n in self.by_state.items() if n)
        return (
            f"<BalancerStatistics {states} candidates={self.candidates}/{self.total}"
            f" panic={self.panic}>"
        )


class Balancer:
    """One cluster's balancing state over the edge's endpoint objects.

    The request path (see the package docstring): ``pick()`` (or ``pick_sticky()`` /
    ``pick_excluding()``), then ``started(ep)`` when the request goes to ``ep``, then
    ``finished(ep, now, outcome, latency)`` exactly once. Health comes in through
    ``check_result()`` and ``tick()``; the operator's drain through ``drain()``.
    """

    policy: ClassVar[str] = ""
    uses_weights: ClassVar[bool] = True
    """Whether endpoint weights count (round_robin ignores them)."""
    uses_slow_start: ClassVar[bool] = True
    """Whether slow start ramps weights (the hashing policies keep keys where they are)."""

    # Its fields are declared in balancer.pxd (a C type once compiled).

    def __init__(
        self,
        endpoints: Sequence[E],
        settings: BalanceSettings | None = None,
        *,
        name: str = "",
        now: float = 0.0,
        rng: _random.Random | None = None,
    ) -> None:
        self.settings = settings if settings is not None else BalanceSettings()
        self.name = name
        self._random = (rng if rng is not None else _random.Random()).random
        slow = self.uses_slow_start and self.settings.slow_start.enabled
        self._table = TRANSITIONS if slow else TRANSITIONS_NO_SLOW_START
        self._track_latency = False
        self._latency_hint = 0.0
        self._ejections_refused = 0
        self.panic = False
        self.endpoints: list[E] = []
        self.candidates: list[E] = []
        """The endpoints ``pick()`` chooses from (routable ones), in member order."""
        self._by_token: dict[str, E] = {}
        self._set_members(endpoints, now)

    # -- picking (subclasses) -------------------------------------------------------------
    def pick(self, key: bytes | None = None) -> E | None:
        """The endpoint for the next request, or None when no endpoint may take it (answer
        503 naming the cluster). ``key`` is the hash key (ring_hash, maglev; the others
        ignore it). Does not count the request: call ``started()``."""
        raise NotImplementedError

    def pick_excluding(self, exclude: Collection[E], key: bytes | None = None) -> E | None:
        """Like ``pick()`` but never one of ``exclude`` (the endpoints a request already
        tried); None when every candidate is excluded. O(n) in the worst case: for retries,
        not for every request."""
        if not exclude:
            return self.pick(key)
        for _ in range(len(self.candidates)):
            ep = self.pick(key)
            if ep is None:
                return None
            if ep not in exclude:
                return ep
        for ep in self.candidates:
            if ep not in exclude:
                return ep
        return None

    def pick_sticky(self, token: str | None, key: bytes | None = None) -> tuple[E | None, bool]:
        """Sticky sessions: the endpoint whose ``token`` the client's cookie carries, if it
        may take traffic; otherwise ``pick(key)``. Returns ``(endpoint, set_cookie)``:
        ``set_cookie`` is True when the edge must (re)set the cookie to ``endpoint.token``
        (no cookie, an unknown token, or its endpoint is down or draining)."""
        if token is not None:
            found = self._by_token.get(token)
            if found is not None:
                return found, False
        ep = self.pick(key)
        return ep, ep is not None

    # -- hooks for policies -----------------------------------------------------------------
    def _members_changed(self) -> None:
        """Membership or configured weights changed (hash tables rebuild here)."""

    def _candidates_changed(self) -> None:
        """``candidates`` changed (a new list), or effective weights did."""

    def _weights_changed(self) -> None:
        """Effective weights moved (slow start); candidates did not."""
        self._candidates_changed()

    # -- request accounting -----------------------------------------------------------------
    def started(self, ep: E) -> None:
        """A request was sent (or is being connected) to ``ep``."""
        ep.in_flight += 1

    def finished(
        self, ep: E, now: float, outcome: int = 200, latency: float | None = None
    ) -> Sequence[Event]:
        """A request to ``ep`` ended: ``outcome`` is the response status, or
        :data:`CONNECT_FAILURE`, :data:`RESET`, :data:`TIMEOUT`; ``latency`` the seconds to
        the response head (None when there was no response). Feeds outlier detection;
        returns the events to log (an ejection)."""
        ep.in_flight -= 1
        if latency is not None and self._track_latency:
            self._observe(ep, now, latency)
        if 0 < outcome < 500:
            if ep.consecutive_5xx or ep.consecutive_connect_failures:
                ep.consecutive_5xx = 0
                ep.consecutive_connect_failures = 0
            return _NO_EVENTS
        return self._failure(ep, now, outcome)

    def _observe(self, ep: E, now: float, latency: float) -> None:
        # Peak-sensitive EWMA (Finagle's peak EWMA): a slower sample is taken at once, a
        # faster one decays in with time constant latency_decay.
        old = ep.latency_ewma
        if latency >= old or old == 0.0:
            ep.latency_ewma = latency
        else:
            dt = now - ep.latency_at
            w = math.exp(-dt / self.settings.latency_decay) if dt > 0.0 else 1.0
            ep.latency_ewma = old * w + latency * (1.0 - w)
        ep.latency_at = now
        hint = self._latency_hint
        self._latency_hint = latency if hint == 0.0 else hint + (latency - hint) * 0.05

    def _failure(self, ep: E, now: float, outcome: int) -> Sequence[Event]:
        if outcome < 0 and self._track_latency:
            # A transport failure answers fast but is no good: price it as a slow answer, so
            # least_request stops favouring a dead endpoint even without outlier detection.
            penalty = FAILURE_PENALTY * max(self._latency_hint, 0.001)
            if ep.latency_ewma < penalty:
                ep.latency_ewma = penalty
                ep.latency_at = now
        od = self.settings.outlier
        if outcome == CONNECT_FAILURE:
            ep.consecutive_connect_failures += 1
            limit = od.consecutive_connect_failures if od is not None else 0
            count = ep.consecutive_connect_failures
            what = "connect failures"
        else:
            ep.consecutive_5xx += 1
            limit = od.consecutive_5xx if od is not None else 0
            count = ep.consecutive_5xx
            what = "5xx responses" if outcome > 0 else "5xx/reset/timeout failures"
        if od is None or limit == 0 or count < limit:
            return _NO_EVENTS
        ep.consecutive_5xx = 0
        ep.consecutive_connect_failures = 0
        if ep.state is _EJECTED:
            return _NO_EVENTS  # in panic an ejected endpoint takes traffic; already out
        if ep.state is _HEALTHY or ep.state is _WARMING:
            ejected = sum(1 for e in self.endpoints if e.state is _EJECTED)
            if ejected and (ejected + 1) * 100 > od.max_ejection_percent * len(self.endpoints):
                self._ejections_refused += 1
                return _NO_EVENTS
            if ep.ejections:
                decayed = int((now - ep.unejected_at) / od.decay_interval)
                ep.ejections = max(0, ep.ejections - decayed)
            ep.ejections += 1
            ep.ejections_total += 1
            duration = min(od.base_ejection_time * ep.ejections, od.max_ejection_time)
            ep.ejected_until = now + duration
            detail = (
                f"{count} consecutive {what}; ejected for {duration:g}s (ejection {ep.ejections})"
            )
        else:
            detail = f"{count} consecutive {what}"
        events: list[Event] = []
        self._apply(ep, HealthInput.EJECT, now, detail, events)
        return self._settle(now, events)

    # -- health -------------------------------------------------------------------------------
    def check_result(self, ep: E, passed: bool, now: float, detail: str = "") -> Sequence[Event]:
        """An active health check of ``ep`` passed or failed (``detail`` says why, for the
        log). Returns the events to log."""
        th = self.settings.health
        if passed:
            ep.check_failures = 0
            ep.check_passes += 1
            if ep.check_passes >= th.healthy_threshold:
                event = HealthInput.CHECK_RISE
                detail = detail or f"{ep.check_passes} active checks passed in a row"
            else:
                event = HealthInput.CHECK_PASS
        else:
            ep.check_passes = 0
            ep.check_failures += 1
            if ep.check_failures >= th.unhealthy_threshold:
                event = HealthInput.CHECK_FALL
                detail = f"{ep.check_failures} active checks failed in a row" + (
                    f", last: {detail}" if detail else ""
                )
            else:
                event = HealthInput.CHECK_FAIL
        events: list[Event] = []
        self._apply(ep, event, now, detail, events)
        return self._settle(now, events)

    def drain(self, ep: E, now: float) -> Sequence[Event]:
        """Take ``ep`` out: no new requests, in-flight ones finish (see ``drained()``)."""
        events: list[Event] = []
        self._apply(ep, HealthInput.DRAIN, now, f"{ep.in_flight} requests in flight", events)
        return self._settle(now, events)

    def restore(self, ep: E, now: float) -> Sequence[Event]:
        """Put a draining ``ep`` back (through slow start when configured)."""
        events: list[Event] = []
        self._apply(ep, HealthInput.RESTORE, now, "", events)
        return self._settle(now, events)

    def drained(self, ep: E) -> bool:
        """Whether ``ep`` is draining and has no request in flight (safe to remove)."""
        return ep.state is _DRAINING and ep.in_flight == 0

    def tick(self, now: float) -> Sequence[Event]:
        """Advance time: end ejections that are over, ramp slow-start weights, end slow
        start. Call it every 0.1-1 s; slow start moves in steps of that size."""
        events: list[Event] = []
        moved = False
        slow = self.settings.slow_start
        for ep in self.endpoints:
            state = ep.state
            if state is _EJECTED:
                if ep.ejected_until <= now:
                    self._apply(ep, HealthInput.UNEJECT, now, "ejection time over", events)
            elif state is _WARMING:
                elapsed = now - ep.warming_since
                if elapsed >= slow.window:
                    self._apply(ep, HealthInput.WARMED, now, "slow start over", events)
                else:
                    weight = self._ramped_weight(ep, elapsed)
                    if weight != ep.effective_weight:
                        ep.effective_weight = weight
                        moved = True
        if events:
            return self._settle(now, events)
        if moved:
            self._weights_changed()
        return _NO_EVENTS

    def _base_weight(self, ep: E) -> float:
        return float(ep.weight) if self.uses_weights else 1.0

    def _ramped_weight(self, ep: E, elapsed: float) -> float:
        slow = self.settings.slow_start
        factor = max(slow.min_weight_percent / 100.0, max(elapsed, 0.0) / slow.window)
        return self._base_weight(ep) * min(factor, 1.0)

    def _apply(
        self, ep: E, event: HealthInput, now: float, detail: str, events: list[Event]
    ) -> None:
        old = ep.state
        new = next_state(self._table, ep.key, old, event)
        if new is old:
            return
        ep.state = new
        if old is _EJECTED:
            ep.unejected_at = now
            ep.ejected_until = 0.0
        if new is _WARMING:
            ep.warming_since = now
            ep.effective_weight = self._ramped_weight(ep, 0.0)
        elif new is _HEALTHY:
            ep.effective_weight = self._base_weight(ep)
        events.append(HealthEvent(ep.key, old, new, event, now, detail))

    def _settle(self, now: float, events: list[Event]) -> Sequence[Event]:
        if not events:
            return _NO_EVENTS
        self._refresh(now, events)
        return events

    def _refresh(self, now: float, events: list[Event]) -> None:
        """Recompute panic, ``routable`` and ``candidates`` after a state change."""
        total = healthy = 0
        for ep in self.endpoints:
            if ep.state is _DRAINING:
                continue
            total += 1
            if ep.state in ROUTABLE:
                healthy += 1
        threshold = self.settings.panic_threshold
        panic = threshold > 0.0 and total > 0 and healthy * 100.0 < threshold * total
        if panic != self.panic:
            self.panic = panic
            events.append(PanicEvent(self.name, panic, healthy, total, threshold, now))
        candidates: list[E] = []
        for ep in self.endpoints:
            routable = ep.state in ROUTABLE or (panic and ep.state is not _DRAINING)
            ep.routable = routable
            if routable:
                ep.slot = len(candidates)
                candidates.append(ep)
            else:
                ep.slot = -1
        self.candidates = candidates
        self._by_token = {ep.token: ep for ep in candidates}
        self._candidates_changed()

    # -- membership and weights -------------------------------------------------------------
    def _set_members(self, endpoints: Sequence[E], now: float) -> list[Event]:
        keys = [ep.key for ep in endpoints]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"cluster {self.name}: endpoint {dup} is listed twice")
        self.endpoints = list(endpoints)
        for ep in self.endpoints:
            if ep.state in ROUTABLE and ep.state is not _WARMING:
                ep.effective_weight = self._base_weight(ep)
        self._members_changed()
        events: list[Event] = []
        self._refresh(now, events)
        return events

    def set_endpoints(self, endpoints: Sequence[E], now: float) -> Sequence[Event]:
        """Replace the membership (config reload, DNS discovery). Endpoints already present
        (the same objects) keep their state; new ones start warming when slow start is on.
        Drain removed endpoints first if their in-flight requests matter. Returns a panic
        event if the change enters or leaves panic."""
        old = {id(ep) for ep in self.endpoints}
        slow = self.uses_slow_start and self.settings.slow_start.enabled
        for ep in endpoints:
            if id(ep) not in old and slow and ep.state is _HEALTHY:
                # A new endpoint's initial state, not a transition: no event.
                ep.state = _WARMING
                ep.warming_since = now
                ep.effective_weight = self._ramped_weight(ep, 0.0)
        return self._set_members(endpoints, now)

    def set_weight(self, ep: E, weight: int, now: float) -> None:
        """Change ``ep``'s configured weight (1-10,000)."""
        if not 1 <= weight <= 10_000:
            raise ValueError(f"endpoint {ep.key}: weight {weight} must be from 1 to 10000")
        ep.weight = weight
        if ep.state is _WARMING:
            ep.effective_weight = self._ramped_weight(ep, now - ep.warming_since)
        else:
            ep.effective_weight = self._base_weight(ep)
        self._members_changed()
        self._candidates_changed()

    def statistics(self) -> BalancerStatistics:
        """Counts by health state, candidates, panic, refused ejections."""
        by_state = dict.fromkeys(HealthState, 0)
        for ep in self.endpoints:
            by_state[ep.state] += 1
        return BalancerStatistics(
            by_state,
            len(self.candidates),
            len(self.endpoints),
            self.panic,
            self._ejections_refused,
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} {len(self.candidates)}/"
            f"{len(self.endpoints)} candidates{' PANIC' if self.panic else ''}>"
        )
