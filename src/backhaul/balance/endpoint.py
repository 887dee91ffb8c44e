"""What the balancing policy knows about one upstream endpoint.

The edge owns its endpoint objects; the simplest wiring is to subclass
:class:`EndpointState` (it has ``__slots__``, so a subclass adds its own slots and pays no
dict), then a :class:`~backhaul.balance.balancer.Balancer` returns the edge's own objects
from ``pick()``.

The edge may read every attribute. It writes none of them directly: counters go through
``Balancer.started()``/``Balancer.finished()`` (least_connections keeps an index over
them), weights through ``Balancer.set_weight()``, states through the balancer's health
methods.
"""

from __future__ import annotations

import hashlib

from backhaul.balance.health import HealthState

__all__ = ["EndpointState", "sticky_token"]


def sticky_token(key: str) -> str:
    """The sticky-cookie value naming the endpoint ``key``: 16 hex digits, the same in every
    worker and across restarts, and not the address itself."""
    return hashlib.blake2b(key.encode(), digest_size=8, person=b"bh-sticky").hexdigest()


class EndpointState:
    """Balancing and health state of one endpoint.

    ``key`` names the endpoint (its address label, ``"10.0.0.5:8080"``): logs, hash-ring
    points and the sticky token derive from it, so it must be stable and unique within the
    cluster. ``weight`` is the configured weight (1-10,000); ``effective_weight`` is what
    balancing uses (lower while slow start ramps it up).
    """

    # Its fields are declared in endpoint.pxd (a C type once compiled).

    def __init__(self, key: str, weight: int = 1) -> None:
        if weight < 1:
            raise ValueError(f"endpoint {key}: weight {weight} must be at least 1")
        self.key = key
        self.weight = weight
        self.effective_weight: float = float(weight)
        self.state = HealthState.HEALTHY
        self.routable = True
        """Whether ``pick()`` may return it now (health, drain and panic folded in)."""
        self.in_flight = 0
        """Requests sent and not finished."""
        self.latency_ewma = 0.0
        """Peak-sensitive moving average of response latency in seconds; 0.0 = no sample."""
        self.latency_at = 0.0
        self.token = sticky_token(key)
        self.check_passes = 0
        self.check_failures = 0
        self.consecutive_5xx = 0
        self.consecutive_connect_failures = 0
        self.ejections = 0
        """Ejection multiplier: grows with each ejection, decays while not ejected."""
        self.ejections_total = 0
        self.ejected_until = 0.0
        self.unejected_at = 0.0
        self.warming_since = 0.0
        self.slot = -1
        """Index among the balancer's candidates, -1 when not a candidate (internal)."""
        self.last_started = 0

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.key} {self.state.value} w={self.effective_weight:g}"
            f" in_flight={self.in_flight}>"
        )
