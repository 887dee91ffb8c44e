"""Retry decisions, backoff, the retry budget under a simulated outage, circuit breakers."""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backhaul.balance import (
    CONNECT_FAILURE,
    RESET,
    TIMEOUT,
    BalanceSettings,
    CircuitBreakers,
    EndpointState,
    LimitReleaseError,
    RetryBudget,
    RetryBudgetError,
    RetryPolicy,
    make_balancer,
)


@pytest.mark.parametrize(
    ("method", "tries", "outcome", "retry", "why"),
    [
        ("GET", 1, CONNECT_FAILURE, True, "connect failure; retry 1 of 2"),
        ("POST", 1, CONNECT_FAILURE, True, "connect failure"),  # never sent: any method
        ("GET", 1, RESET, True, "reset before the response"),
        ("POST", 1, RESET, False, "POST is not idempotent"),
        ("PUT", 2, 503, True, "status 503; retry 2 of 2"),
        ("DELETE", 1, 502, True, "status 502"),
        ("GET", 1, TIMEOUT, True, "per-try timeout"),
        ("GET", 3, 503, False, "retries exhausted (2 of 2)"),
        ("GET", 1, 500, False, "outcome 500 is not retried"),
        ("GET", 1, 200, False, "outcome 200 is not retried"),
        ("PATCH", 1, 504, False, "PATCH is not idempotent"),
        ("get", 1, 504, True, "status 504"),
    ],
)
def test_retry_decisions(method: str, tries: int, outcome: int, retry: bool, why: str) -> None:
    decision = RetryPolicy().decide(method, tries, outcome)
    assert decision.retry is retry
    assert why in decision.reason


def test_retry_policy_options() -> None:
    route = RetryPolicy(non_idempotent=True, statuses=frozenset({503}), reset=False)
    assert route.decide("POST", 1, 503).retry
    assert not route.decide("GET", 1, 504).retry
    assert not route.decide("GET", 1, TIMEOUT).retry  # 504 not listed
    assert "retries on reset are off" in route.decide("GET", 1, RESET).reason
    off = RetryPolicy(connect_failure=False)
    assert not off.decide("GET", 1, CONNECT_FAILURE).retry
    assert not RetryPolicy(max_retries=0).decide("GET", 1, CONNECT_FAILURE).retry
    unreplayable = RetryPolicy().decide("PUT", 1, 503, replayable=False)
    assert not unreplayable.retry and "cannot be replayed" in unreplayable.reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": 11}, "expected 0 to 10"),
        ({"statuses": frozenset({404})}, "expected 5xx statuses"),
        ({"per_try_timeout": 0.0}, "greater than 0"),
        ({"backoff_base": 1.0, "backoff_max": 0.5}, "0 < base <= max"),
    ],
)
def test_retry_policy_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@given(st.integers(1, 12), st.floats(0.0, 0.999999))
def test_backoff_full_jitter(retry: int, draw: float) -> None:
    policy = RetryPolicy(backoff_base=0.025, backoff_max=0.25)
    ceiling = min(0.25, 0.025 * 2 ** (retry - 1))
    wait = policy.backoff(retry, lambda: draw)
    assert 0.0 <= wait < ceiling or wait == 0.0
    assert wait == pytest.approx(draw * ceiling)


def test_backoff_grows_then_caps() -> None:
    policy = RetryPolicy()
    top = [policy.backoff(n, lambda: 0.999999) for n in range(1, 8)]
    assert top[:4] == pytest.approx([0.025, 0.05, 0.1, 0.2], rel=1e-5)
    assert top[4:] == pytest.approx([0.25] * 3, rel=1e-5)


def test_retry_exclusion_finds_a_different_endpoint_each_try() -> None:
    eps = [EndpointState(f"10.0.0.{i}:80") for i in range(3)]
    bal = make_balancer(eps, BalanceSettings(policy="least_request"), rng=random.Random(3))
    policy = RetryPolicy(max_retries=5)
    tried: list[EndpointState] = []
    tries = 0
    while True:
        ep = bal.pick_excluding(tried)
        if ep is None:
            break
        tried.append(ep)
        tries += 1
        if not policy.decide("GET", tries, 503).retry:
            break
    assert len(tried) == 3 and len(set(tried)) == 3  # then no endpoint left to try


def test_budget_counts() -> None:
    budget = RetryBudget(budget_percent=20.0, min_retry_concurrency=3)
    assert budget.limit(0) == 3 and budget.limit(100) == 20
    assert [budget.try_acquire(10) for _ in range(4)] == [True, True, True, False]
    assert budget.exhausted_total == 1 and budget.active == 3
    assert budget.try_acquire(20)  # 20% of 20 = 4
    for _ in range(4):
        budget.release()
    with pytest.raises(RetryBudgetError):
        budget.release()
    with pytest.raises(ValueError, match="percentage"):
        RetryBudget(budget_percent=120)


def simulate_outage(budget: RetryBudget | None, seed: int = 7) -> tuple[int, int, float]:
    """A cluster whose 3 endpoints all answer 503 in 5-15 ms; 2,000 GET requests arrive at
    500/s, each retried up to 3 times (with backoff) when the policy and the budget allow.
    Returns (requests, upstream tries, the largest retries-in-flight / allowance seen)."""
    rng = random.Random(seed)
    policy = RetryPolicy(max_retries=3)
    active_requests = 0
    tries_total = 0
    worst = 0.0
    queue: list[tuple[float, int, str, int]] = []  # (time, seq, kind, tries so far)
    seq = 0
    t = 0.0
    for _ in range(2000):
        t += rng.expovariate(500.0)
        seq += 1
        heapq.heappush(queue, (t, seq, "arrive", 0))
    while queue:
        now, _, kind, tries = heapq.heappop(queue)
        if kind == "arrive":
            active_requests += 1
            kind = "try"
        if kind == "try":
            tries_total += 1
            seq += 1
            heapq.heappush(queue, (now + rng.uniform(0.005, 0.015), seq, "done", tries + 1))
            continue
        # a try ended with 503
        if tries > 1 and budget is not None:
            budget.release()  # that try was a retry
        decision = policy.decide("GET", tries, 503)
        if decision.retry and (budget is None or budget.try_acquire(active_requests)):
            if budget is not None:
                worst = max(worst, budget.active / budget.limit(active_requests))
            seq += 1
            heapq.heappush(queue, (now + policy.backoff(tries, rng.random), seq, "try", tries))
        else:
            active_requests -= 1
    assert active_requests == 0
    return 2000, tries_total, worst


def test_retry_budget_caps_retries_under_outage() -> None:
    requests, unbudgeted, _ = simulate_outage(None)
    assert unbudgeted == 4 * requests  # every request tried 1 + 3 times: load x4
    budget = RetryBudget(budget_percent=20.0, min_retry_concurrency=3)
    requests, tries, worst = simulate_outage(budget)
    assert worst <= 1.0  # retries in flight never above max(3, 20% of active requests)
    assert tries <= 1.25 * requests, tries  # the outage sees about +20%, not x4
    assert tries > requests  # but retries still happen
    assert budget.exhausted_total > 0 and budget.active == 0


def test_circuit_breakers() -> None:
    breakers = CircuitBreakers(max_connections=2, max_pending=1, max_requests=3)
    req = breakers.requests
    assert [req.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert req.overflows_total == 1
    assert (
        req.overflow_detail("api") == "cluster api has 3 requests in flight, its limit"
        " (circuit_breakers.max_requests: 3); try again shortly"
    )
    req.release()
    assert req.try_acquire()
    assert breakers.pending.try_acquire() and not breakers.pending.try_acquire()
    assert breakers.statistics() == {
        "max_connections": (0, 2, 0),
        "max_pending": (1, 1, 1),
        "max_requests": (3, 3, 1),
    }
    breakers.connections.try_acquire()
    breakers.connections.release()
    with pytest.raises(LimitReleaseError):
        breakers.connections.release()
    with pytest.raises(ValueError, match="expected 1 or more"):
        CircuitBreakers(max_requests=0)
