"""The per-endpoint health state machine: named states, named inputs, one transition table.

An endpoint is in exactly one :class:`HealthState`. Inputs come from three places, and the
:class:`~backhaul.balance.balancer.Balancer` turns raw observations into them:

- active checks: a pass or a failure, with its run of consecutive results measured against
  the thresholds (``CHECK_PASS``/``CHECK_FAIL`` below a threshold, ``CHECK_RISE``/
  ``CHECK_FALL`` at or past it);
- passive outlier detection: ``EJECT`` when consecutive 5xx or connect failures reach their
  limit, ``UNEJECT`` when the ejection time is over;
- the operator and the clock: ``DRAIN``/``RESTORE``, and ``WARMED`` when the slow-start
  window is over.

Inputs that make no sense in a state (``UNEJECT`` of an endpoint that is not ejected,
``DRAIN`` twice, ``WARMED`` outside ``WARMING``) raise :class:`HealthTransitionError`: they
are a bug in the caller, never something a peer can cause.

Each change of state is reported once as a :class:`HealthEvent` (a self-loop is not a change
and reports nothing); a cluster entering or leaving panic is reported as a
:class:`PanicEvent`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from backhaul.errors import BackhaulError

__all__ = [
    "ROUTABLE",
    "TRANSITIONS",
    "TRANSITIONS_NO_SLOW_START",
    "HealthEvent",
    "HealthInput",
    "HealthState",
    "HealthTransitionError",
    "PanicEvent",
    "next_state",
]


class HealthState(enum.Enum):
    """Where an endpoint stands; the value is the name used in logs and metrics."""

    HEALTHY = "healthy"
    """Takes traffic at its full weight."""
    WARMING = "warming"
    """Healthy again (or new); its weight ramps up over the slow-start window."""
    UNHEALTHY = "unhealthy"
    """Failed ``unhealthy_threshold`` active checks in a row; no traffic (except in panic)."""
    EJECTED = "ejected"
    """Ejected by outlier detection until its ejection time is over; no traffic (except in
    panic)."""
    DRAINING = "draining"
    """No new requests; in-flight ones finish. Even panic does not route to it."""


class HealthInput(enum.Enum):
    """What happened to an endpoint, as the table sees it."""

    CHECK_PASS = "check_pass"
    """An active check passed; fewer than ``healthy_threshold`` passes in a row so far."""
    CHECK_RISE = "check_rise"
    """An active check passed with at least ``healthy_threshold`` passes in a row."""
    CHECK_FAIL = "check_fail"
    """An active check failed; fewer than ``unhealthy_threshold`` failures in a row."""
    CHECK_FALL = "check_fall"
    """An active check failed with at least ``unhealthy_threshold`` failures in a row."""
    EJECT = "eject"
    """Outlier detection: too many consecutive 5xx or connect failures."""
    UNEJECT = "uneject"
    """The ejection time is over."""
    DRAIN = "drain"
    """The operator (or a config change) takes the endpoint out: no new requests."""
    RESTORE = "restore"
    """A draining endpoint is put back."""
    WARMED = "warmed"
    """The slow-start window is over."""


class HealthTransitionError(BackhaulError):
    """An input the health table does not allow in the endpoint's state (a caller bug)."""

    def __init__(self, endpoint: str, state: HealthState, event: HealthInput) -> None:
        self.endpoint = endpoint
        self.state = state
        self.event = event
        super().__init__(
            f"endpoint {endpoint}: input {event.value!r} is not allowed in state"
            f" {state.value!r}; see backhaul.balance.health.TRANSITIONS"
        )


_H = HealthState
_I = HealthInput

TRANSITIONS: Final[dict[HealthState, dict[HealthInput, HealthState]]] = {
    _H.HEALTHY: {
        _I.CHECK_PASS: _H.HEALTHY,
        _I.CHECK_RISE: _H.HEALTHY,
        _I.CHECK_FAIL: _H.HEALTHY,
        _I.CHECK_FALL: _H.UNHEALTHY,
        _I.EJECT: _H.EJECTED,
        _I.DRAIN: _H.DRAINING,
    },
    _H.WARMING: {
        _I.CHECK_PASS: _H.WARMING,
        _I.CHECK_RISE: _H.WARMING,
        _I.CHECK_FAIL: _H.WARMING,
        _I.CHECK_FALL: _H.UNHEALTHY,
        _I.EJECT: _H.EJECTED,
        _I.DRAIN: _H.DRAINING,
        _I.WARMED: _H.HEALTHY,
    },
    _H.UNHEALTHY: {
        _I.CHECK_PASS: _H.UNHEALTHY,
        _I.CHECK_RISE: _H.WARMING,
        _I.CHECK_FAIL: _H.UNHEALTHY,
        _I.CHECK_FALL: _H.UNHEALTHY,
        # In panic an unhealthy endpoint takes traffic and may fail it: already out.
        _I.EJECT: _H.UNHEALTHY,
        _I.DRAIN: _H.DRAINING,
    },
    _H.EJECTED: {
        # Ejection is time-based: passing active checks do not cut it short.
        _I.CHECK_PASS: _H.EJECTED,
        _I.CHECK_RISE: _H.EJECTED,
        _I.CHECK_FAIL: _H.EJECTED,
        # Failing active checks take over: the endpoint stays out until checks pass.
        _I.CHECK_FALL: _H.UNHEALTHY,
        _I.UNEJECT: _H.WARMING,
        _I.DRAIN: _H.DRAINING,
    },
    _H.DRAINING: {
        _I.CHECK_PASS: _H.DRAINING,
        _I.CHECK_RISE: _H.DRAINING,
        _I.CHECK_FAIL: _H.DRAINING,
        _I.CHECK_FALL: _H.DRAINING,
        _I.EJECT: _H.DRAINING,
        _I.RESTORE: _H.WARMING,
    },
}
"""``TRANSITIONS[state][input]`` is the next state; a missing input is illegal in that state.

With slow start off, :data:`TRANSITIONS_NO_SLOW_START` is used instead: the same table with
every ``WARMING`` target replaced by ``HEALTHY``."""

TRANSITIONS_NO_SLOW_START: Final[dict[HealthState, dict[HealthInput, HealthState]]] = {
    state: {
        event: (_H.HEALTHY if target is _H.WARMING else target) for event, target in row.items()
    }
    for state, row in TRANSITIONS.items()
}

ROUTABLE: Final[frozenset[HealthState]] = frozenset({_H.HEALTHY, _H.WARMING})
"""States that take traffic outside panic (and count as healthy for the panic threshold)."""


def next_state(
    table: dict[HealthState, dict[HealthInput, HealthState]],
    endpoint: str,
    state: HealthState,
    event: HealthInput,
) -> HealthState:
    """The state after ``event`` in ``state``; raises :class:`HealthTransitionError`."""
    target = table[state].get(event)
    if target is None:
        raise HealthTransitionError(endpoint, state, event)
    return target


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """An endpoint changed state. Log it once; ``detail`` says why in words."""

    endpoint: str
    old: HealthState
    new: HealthState
    cause: HealthInput
    at: float
    detail: str = ""

    def __str__(self) -> str:
        tail = f": {self.detail}" if self.detail else ""
        return f"endpoint {self.endpoint} {self.old.value} -> {self.new.value}{tail}"


@dataclass(frozen=True, slots=True)
class PanicEvent:
    """A cluster entered or left panic (too few healthy endpoints: route to all of them)."""

    cluster: str
    panic: bool
    healthy: int
    total: int
    threshold: float
    at: float

    def __str__(self) -> str:
        if self.panic:
            return (
                f"cluster {self.cluster} in panic: {self.healthy} of {self.total} endpoints"
                f" healthy, below {self.threshold:g}%; balancing over all of them"
            )
        return (
            f"cluster {self.cluster} out of panic: {self.healthy} of {self.total} endpoints healthy"
        )
