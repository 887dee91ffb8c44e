"""A DHCP lease: its states and the one table of moves between them (sans-IO).

One lease is one address of a pool and what the server has said about it. Its states::

    FREE      never handed out, or reclaimed (no client owns it)
    OFFERED   offered to a client, held for ``offer_hold`` so no other client gets it
    BOUND     acknowledged: the client owns it until ``expires``
    RELEASED  the client gave it back (RFC 2131 §4.4.6); it is remembered for that client
    EXPIRED   the lease ran out; remembered for that client like RELEASED
    DECLINED  a client found it in use (RFC 2131 §4.4.1): quarantined until ``expires``

The events are the server's decisions: ``offer``, ``ack``, ``release``, ``decline``,
``expire`` (the time in ``expires`` passed) and ``reclaim`` (the address goes to another
client or back to the pool). :data:`TRANSITIONS` is the whole machine; an event that a state
does not accept raises :class:`LeaseTransitionError`.

Times are wall-clock seconds (``time.time()``): a lease must outlive the process that granted
it, and a monotonic clock restarts with the machine. ``now`` is always passed in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from backhaul.errors import BackhaulError

__all__ = [
    "TRANSITIONS",
    "Lease",
    "LeaseEvent",
    "LeaseState",
    "LeaseTransitionError",
    "dotted",
    "next_state",
]


class LeaseState(enum.Enum):
    FREE = "free"
    OFFERED = "offered"
    BOUND = "bound"
    RELEASED = "released"
    EXPIRED = "expired"
    DECLINED = "declined"


class LeaseEvent(enum.Enum):
    OFFER = "offer"
    ACK = "ack"
    RELEASE = "release"
    DECLINE = "decline"
    EXPIRE = "expire"
    RECLAIM = "reclaim"


class LeaseTransitionError(BackhaulError):
    """An event that the lease's state does not accept (a bug in the caller)."""

    def __init__(self, state: LeaseState, event: LeaseEvent) -> None:
        self.state = state
        self.event = event
        super().__init__(f"a {state.value} lease cannot take the event {event.value!r}")


S, E = LeaseState, LeaseEvent

TRANSITIONS: dict[LeaseState, dict[LeaseEvent, LeaseState]] = {
    S.FREE: {E.OFFER: S.OFFERED, E.ACK: S.BOUND, E.RECLAIM: S.FREE},
    S.OFFERED: {
        E.OFFER: S.OFFERED,
        E.ACK: S.BOUND,
        E.RELEASE: S.FREE,  # the client chose another server (RFC 2131 §4.3.2)
        E.DECLINE: S.DECLINED,
        E.EXPIRE: S.FREE,  # the offer hold ran out
        E.RECLAIM: S.FREE,
    },
    S.BOUND: {
        E.OFFER: S.BOUND,  # a bound client that starts over is offered its own address
        E.ACK: S.BOUND,  # renew, rebind, init-reboot
        E.RELEASE: S.RELEASED,
        E.DECLINE: S.DECLINED,
        E.EXPIRE: S.EXPIRED,
    },
    S.RELEASED: {E.OFFER: S.OFFERED, E.ACK: S.BOUND, E.RECLAIM: S.FREE},
    S.EXPIRED: {E.OFFER: S.OFFERED, E.ACK: S.BOUND, E.RECLAIM: S.FREE},
    S.DECLINED: {E.EXPIRE: S.FREE},
}

del S, E


def dotted(address: int) -> str:
    """``167772260`` -> ``"10.0.0.100"``; what ``str(IPv4Address(...))`` gives, at a fifth
    of the cost (it runs for every log line and journal record)."""
    return f"{address >> 24}.{(address >> 16) & 255}.{(address >> 8) & 255}.{address & 255}"


def next_state(state: LeaseState, event: LeaseEvent) -> LeaseState:
    """The state after ``event``; :class:`LeaseTransitionError` when it is not allowed."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise LeaseTransitionError(state, event) from None


@dataclass(slots=True)
class Lease:
    """One address and what the server said about it. ``client`` is the client key (option
    61 client-id with a ``id:`` prefix, else ``hw:`` and the MAC in hex); ``expires`` is when
    the current state ends (offer hold, lease end, quarantine end)."""

    address: int
    subnet: str
    state: LeaseState = LeaseState.FREE
    client: str = ""
    mac: str = ""
    client_id: str = ""
    hostname: str = ""
    expires: float = 0.0
    granted: float = 0.0

    def move(self, event: LeaseEvent) -> LeaseState:
        """Apply ``event`` (see :data:`TRANSITIONS`); returns the new state."""
        self.state = next_state(self.state, event)
        return self.state

    def held(self, now: float) -> bool:
        """True while no other client may be given this address."""
        if self.state in (LeaseState.OFFERED, LeaseState.BOUND, LeaseState.DECLINED):
            return now < self.expires
        return False

    def effective_state(self, now: float) -> LeaseState:
        """The state with the clock applied (an OFFERED lease past its hold is FREE, a BOUND
        one past its end EXPIRED...), without changing the lease."""
        if self.state in (LeaseState.OFFERED, LeaseState.BOUND, LeaseState.DECLINED) and (
            now >= self.expires
        ):
            return next_state(self.state, LeaseEvent.EXPIRE)
        return self.state
