"""The public surface of backhaul.balance, and that it stays sans-IO."""

from __future__ import annotations

import ast
import pathlib
import random

import pytest

import backhaul.balance as balance
from backhaul.balance import (
    BALANCERS,
    POLICIES,
    BalanceSettings,
    EndpointState,
    OutlierDetection,
    SlowStart,
    make_balancer,
)

PACKAGE = pathlib.Path(balance.__file__).parent


def test_exported_names_are_what_we_mean() -> None:
    assert set(balance.__all__) == {
        "BALANCERS",
        "CONNECT_FAILURE",
        "IDEMPOTENT_METHODS",
        "POLICIES",
        "RESET",
        "TIMEOUT",
        "BalanceSettings",
        "Balancer",
        "BalancerStatistics",
        "CheckSchedule",
        "CheckVerdict",
        "CircuitBreakers",
        "EndpointState",
        "Event",
        "HashKeySpec",
        "HealthEvent",
        "HealthInput",
        "HealthState",
        "HealthThresholds",
        "HealthTransitionError",
        "HttpCheck",
        "LeastConnections",
        "LeastRequest",
        "Limit",
        "LimitReleaseError",
        "Maglev",
        "OutlierDetection",
        "PanicEvent",
        "RandomChoice",
        "RetryBudget",
        "RetryBudgetError",
        "RetryDecision",
        "RetryPolicy",
        "RingHash",
        "RoundRobin",
        "SlowStart",
        "StatusRangeError",
        "StickyCookie",
        "WeightedRoundRobin",
        "key_hash",
        "make_balancer",
        "parse_status_ranges",
    }
    for name in balance.__all__:
        assert getattr(balance, name) is not None


def test_errors_are_backhaul_errors() -> None:
    from backhaul.errors import BackhaulError

    for cls in (balance.HealthTransitionError, balance.LimitReleaseError, balance.RetryBudgetError):
        assert issubclass(cls, BackhaulError)


FORBIDDEN = {"asyncio", "socket", "ssl", "uvloop", "time", "datetime", "selectors", "os"}


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_policy_is_sans_io(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            continue
        assert not FORBIDDEN.intersection(names), f"{path.name} imports {names}"


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_builds_and_picks(policy: str) -> None:
    eps = [EndpointState(f"10.0.0.{i}:80", i + 1) for i in range(4)]
    bal = make_balancer(eps, BalanceSettings(policy=policy), name="api", rng=random.Random(1))  # type: ignore[arg-type]
    assert type(bal) is BALANCERS[policy] and bal.policy == policy
    for i in range(50):
        ep = bal.pick(b"key-%d" % i)
        assert ep in eps
        assert ep is not None
        bal.started(ep)
        assert bal.finished(ep, 1.0, 200, 0.01) == ()
    assert all(ep.in_flight == 0 for ep in eps)
    assert "api" in repr(bal) and "4/4" in repr(bal)
    stats = bal.statistics()
    assert stats.candidates == 4 and stats.total == 4 and not stats.panic


def test_duplicate_endpoint_keys_rejected() -> None:
    eps = [EndpointState("10.0.0.1:80"), EndpointState("10.0.0.1:80")]
    with pytest.raises(ValueError, match=r"endpoint 10\.0\.0\.1:80 is listed twice"):
        make_balancer(eps, name="api")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BalanceSettings(policy="fastest"), "expected one of round_robin"),  # type: ignore[arg-type]
        (lambda: BalanceSettings(panic_threshold=120), "percentage"),
        (lambda: BalanceSettings(virtual_nodes=0), "virtual_nodes"),
        (lambda: BalanceSettings(latency_decay=0), "latency_decay"),
        (lambda: OutlierDetection(base_ejection_time=0), "base_ejection_time"),
        (lambda: OutlierDetection(base_ejection_time=60, max_ejection_time=30), "at least"),
        (lambda: OutlierDetection(max_ejection_percent=101), "percentage"),
        (lambda: OutlierDetection(consecutive_5xx=-1), "consecutive_5xx"),
        (lambda: SlowStart(window=-1), "window"),
        (lambda: SlowStart(window=10, min_weight_percent=0), "min_weight_percent"),
        (lambda: EndpointState("a:1", 0), "weight 0 must be at least 1"),
    ],
)
def test_settings_reject_nonsense(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_set_weight() -> None:
    eps = [EndpointState(f"10.0.0.{i}:80") for i in range(2)]
    bal = make_balancer(eps, BalanceSettings(policy="weighted_round_robin"))
    bal.set_weight(eps[0], 3, now=1.0)
    picks = [bal.pick() for _ in range(40)]
    assert picks.count(eps[0]) == 30
    with pytest.raises(ValueError, match="from 1 to 10000"):
        bal.set_weight(eps[0], 0, now=1.0)
