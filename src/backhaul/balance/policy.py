"""Policy names to balancer classes."""

from __future__ import annotations

import random as _random
from collections.abc import Sequence
from typing import Final

from backhaul.balance.balancer import Balancer, E
from backhaul.balance.consistent_hash import Maglev, RingHash
from backhaul.balance.least import LeastConnections, LeastRequest
from backhaul.balance.random_choice import RandomChoice
from backhaul.balance.rotation import RoundRobin, WeightedRoundRobin
from backhaul.balance.settings import POLICIES, BalanceSettings

__all__ = ["BALANCERS", "make_balancer"]

BALANCERS: Final[dict[str, type[Balancer]]] = {
    cls.policy: cls
    for cls in (
        RoundRobin,
        WeightedRoundRobin,
        LeastConnections,
        LeastRequest,
        RandomChoice,
        RingHash,
        Maglev,
    )
}
"""``settings.policy`` → the class implementing it."""
assert set(BALANCERS) == set(POLICIES)


def make_balancer(
    endpoints: Sequence[E],
    settings: BalanceSettings | None = None,
    *,
    name: str = "",
    now: float = 0.0,
    rng: _random.Random | None = None,
) -> Balancer:
    """The balancer for ``settings.policy`` over ``endpoints`` (the edge's objects, in
    config order). ``name`` is the cluster's name (for events); ``now`` the monotonic time;
    ``rng`` the random source (round robin's start, random, least_request)."""
    settings = settings if settings is not None else BalanceSettings()
    cls: type[Balancer] = BALANCERS[settings.policy]
    return cls(endpoints, settings, name=name, now=now, rng=rng)
