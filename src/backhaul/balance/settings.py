"""Balancing settings of one cluster, as plain frozen values.

The config layer (``backhaul.config``) validates YAML and maps a cluster onto a
:class:`BalanceSettings`; these classes check their own ranges too (``ValueError`` with a
"found ..., expected ..." message) so the policy never runs on nonsense.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backhaul.vocabulary.balancing import MAX_MAGLEV_TABLE, POLICIES, Policy, is_prime

__all__ = [
    "POLICIES",
    "BalanceSettings",
    "HealthThresholds",
    "OutlierDetection",
    "Policy",
    "SlowStart",
    "is_prime",
]


def _at_least(name: str, value: float, low: float) -> None:
    if not value >= low:
        raise ValueError(f"{name}: found {value!r}, expected at least {low:g}")


def _percent(name: str, value: float) -> None:
    if not 0.0 <= value <= 100.0:
        raise ValueError(f"{name}: found {value!r}, expected a percentage from 0 to 100")


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """Active-check thresholds: consecutive passes to become healthy, failures to become
    unhealthy (HAProxy's rise and fall)."""

    healthy_threshold: int = 2
    unhealthy_threshold: int = 3

    def __post_init__(self) -> None:
        _at_least("healthy_threshold", self.healthy_threshold, 1)
        _at_least("unhealthy_threshold", self.unhealthy_threshold, 1)


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive health: eject an endpoint after consecutive failures seen on real traffic.

    The n-th ejection in a row lasts ``base_ejection_time * n`` seconds, at most
    ``max_ejection_time``; ``n`` drops by one for every ``decay_interval`` seconds the
    endpoint spends un-ejected. At most ``max_ejection_percent`` of the cluster is ejected at
    once (but one endpoint always may be). A limit of 0 turns that trigger off.
    """

    consecutive_5xx: int = 5
    consecutive_connect_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: float = 10.0
    decay_interval: float = 10.0

    def __post_init__(self) -> None:
        _at_least("consecutive_5xx", self.consecutive_5xx, 0)
        _at_least("consecutive_connect_failures", self.consecutive_connect_failures, 0)
        if not self.base_ejection_time > 0:
            raise ValueError(
                f"base_ejection_time: found {self.base_ejection_time!r}, expected a duration"
                " greater than zero"
            )
        if not self.max_ejection_time >= self.base_ejection_time:
            raise ValueError(
                f"max_ejection_time: found {self.max_ejection_time!r}, expected at least"
                f" base_ejection_time ({self.base_ejection_time:g}s)"
            )
        _percent("max_ejection_percent", self.max_ejection_percent)
        if not self.decay_interval > 0:
            raise ValueError(
                f"decay_interval: found {self.decay_interval!r}, expected a duration greater"
                " than zero"
            )


@dataclass(frozen=True, slots=True)
class SlowStart:
    """After an endpoint becomes healthy (or is added), its weight ramps linearly from
    ``min_weight_percent`` to 100% over ``window`` seconds. ``window`` 0 turns it off."""

    window: float = 0.0
    min_weight_percent: float = 10.0

    def __post_init__(self) -> None:
        _at_least("window", self.window, 0.0)
        if not 0.0 < self.min_weight_percent <= 100.0:
            raise ValueError(
                f"min_weight_percent: found {self.min_weight_percent!r}, expected a"
                " percentage greater than 0 and at most 100"
            )

    @property
    def enabled(self) -> bool:
        return self.window > 0.0


@dataclass(frozen=True, slots=True)
class BalanceSettings:
    """Everything a :class:`~backhaul.balance.balancer.Balancer` needs besides its
    endpoints.

    ``panic_threshold``: when fewer than this percentage of the (non-draining) endpoints are
    healthy, balance over all of them; 0 turns panic off. ``virtual_nodes``: ring_hash points per
    unit of weight (an endpoint's points stay put when others join or leave; the ring is
    scaled down if it would pass ``MAX_RING_POINTS``). ``maglev_table_size``: a
    prime, much larger than the number of endpoints. ``latency_decay``: the time constant
    in seconds of least_request's latency average.
    """

    policy: Policy = "round_robin"
    health: HealthThresholds = field(default_factory=HealthThresholds)
    outlier: OutlierDetection | None = None
    slow_start: SlowStart = field(default_factory=SlowStart)
    panic_threshold: float = 50.0
    virtual_nodes: int = 256
    maglev_table_size: int = 65537
    latency_decay: float = 10.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(
                f"policy: found {self.policy!r}, expected one of {', '.join(POLICIES)}"
            )
        _percent("panic_threshold", self.panic_threshold)
        if not 1 <= self.virtual_nodes <= 65_536:
            raise ValueError(f"virtual_nodes: found {self.virtual_nodes!r}, expected 1 to 65536")
        if not (is_prime(self.maglev_table_size) and self.maglev_table_size <= MAX_MAGLEV_TABLE):
            raise ValueError(
                f"maglev_table_size: found {self.maglev_table_size!r}, expected a prime up to"
                " 5000011, such as 65537 (much larger than the number of endpoints)"
            )
        if not self.latency_decay > 0:
            raise ValueError(
                f"latency_decay: found {self.latency_decay!r}, expected seconds greater than 0"
            )
