"""The lease state machine, pair by pair, against a spec written out separately."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from backhaul.services.dhcp.lease import (
    Lease,
    LeaseEvent,
    LeaseState,
    LeaseTransitionError,
    dotted,
    next_state,
)

# The RFC 2131 life of an address, as read from §4.3 and §4.4 (not copied from the table).
SPEC = {
    ("free", "offer"): "offered",
    ("free", "ack"): "bound",
    ("free", "reclaim"): "free",
    ("offered", "offer"): "offered",
    ("offered", "ack"): "bound",
    ("offered", "release"): "free",
    ("offered", "decline"): "declined",
    ("offered", "expire"): "free",
    ("offered", "reclaim"): "free",
    ("bound", "offer"): "bound",
    ("bound", "ack"): "bound",
    ("bound", "release"): "released",
    ("bound", "decline"): "declined",
    ("bound", "expire"): "expired",
    ("released", "offer"): "offered",
    ("released", "ack"): "bound",
    ("released", "reclaim"): "free",
    ("expired", "offer"): "offered",
    ("expired", "ack"): "bound",
    ("expired", "reclaim"): "free",
    ("declined", "expire"): "free",
}


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(LeaseState, LeaseEvent)), ids=str
)
def test_every_state_event_pair(state, event):
    expected = SPEC.get((state.value, event.value))
    if expected is None:
        with pytest.raises(LeaseTransitionError, match=f"{state.value} lease"):
            next_state(state, event)
    else:
        assert next_state(state, event).value == expected


def test_the_clock_applies_without_changing_the_lease():
    lease = Lease(address=1, subnet="s", state=LeaseState.BOUND, expires=100.0)
    assert lease.held(99.0) and not lease.held(100.0)
    assert lease.effective_state(100.0) is LeaseState.EXPIRED
    assert lease.state is LeaseState.BOUND
    lease.move(LeaseEvent.RELEASE)
    assert lease.state is LeaseState.RELEASED and not lease.held(0.0)


@pytest.mark.parametrize("value", [0, 1, 167772260, 0xC0A80101, 0xFFFFFFFF, 0x7F000001])
def test_dotted_matches_ipaddress(value):
    assert dotted(value) == str(ipaddress.IPv4Address(value))
