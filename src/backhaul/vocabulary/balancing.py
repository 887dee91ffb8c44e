"""Balancing policy names and the numbers their settings must be."""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["HASH_POLICIES", "MAX_MAGLEV_TABLE", "POLICIES", "Policy", "is_prime"]

Policy = Literal[
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "least_request",
    "random",
    "ring_hash",
    "maglev",
]
#: Every balancing policy, in the order the docs list them.
POLICIES: Final[tuple[str, ...]] = get_args(Policy)
#: The policies that keep a request's key on one endpoint (they read ``hash_key``).
HASH_POLICIES: Final[tuple[str, ...]] = ("ring_hash", "maglev")
#: The largest maglev lookup table (a prime).
MAX_MAGLEV_TABLE: Final = 5_000_011


def is_prime(n: int) -> bool:
    """Whether ``n`` is prime (trial division; fine for table sizes)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True
