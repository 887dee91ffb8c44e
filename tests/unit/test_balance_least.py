"""least_connections and least_request (P2C over a latency EWMA), the latter in a
discrete-event simulation of a cluster with one slow endpoint."""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque

import pytest

from backhaul.balance import (
    Balancer,
    BalanceSettings,
    EndpointState,
    LeastConnections,
    LeastRequest,
    make_balancer,
)
from backhaul.balance.balancer import CONNECT_FAILURE, FAILURE_PENALTY
from backhaul.balance.least import SCAN_LIMIT


def endpoints(n: int, weights: list[int] | None = None) -> list[EndpointState]:
    return [EndpointState(f"10.0.0.{i}:80", weights[i] if weights else 1) for i in range(n)]


@pytest.mark.parametrize("n", [3, SCAN_LIMIT + 5])  # scan and tournament tree
def test_least_connections_prefers_fewest_in_flight(n: int) -> None:
    eps = endpoints(n)
    lc = LeastConnections(eps, BalanceSettings(policy="least_connections"))
    # equal loads: rotates through all of them (least recently started first)
    first = []
    for _ in range(n):
        ep = lc.pick()
        assert ep is not None
        lc.started(ep)
        first.append(ep)
    assert set(first) == set(eps)
    # finish one: it is now the least loaded
    lc.finished(eps[1], 1.0, 200, 0.01)
    assert lc.pick() is eps[1]
    # excluding it gives the least recently started of the rest
    assert lc.pick_excluding({eps[1]}) is next(e for e in first if e is not eps[1])


@pytest.mark.parametrize("n", [3, SCAN_LIMIT + 5])
def test_least_connections_weighted(n: int) -> None:
    weights = [3] + [1] * (n - 1)
    eps = endpoints(n, weights)
    lc = LeastConnections(eps, BalanceSettings(policy="least_connections"))
    for _ in range(30 * (n + 2)):  # requests that never finish
        ep = lc.pick()
        assert ep is not None
        lc.started(ep)
    heavy = eps[0].in_flight
    for ep in eps[1:]:
        assert abs(heavy - 3 * ep.in_flight) <= 3


@pytest.mark.parametrize("n", [4, SCAN_LIMIT + 5])
def test_least_connections_follows_health(n: int) -> None:
    eps = endpoints(n)
    lc = LeastConnections(eps, BalanceSettings(policy="least_connections", panic_threshold=0))
    lc.drain(eps[0], 1.0)
    seen = set()
    for _ in range(3 * n):
        ep = lc.pick()
        assert ep is not None
        lc.started(ep)
        seen.add(ep)
    assert eps[0] not in seen and len(seen) == n - 1


def test_least_request_prefers_fewer_in_flight_and_lower_latency() -> None:
    eps = endpoints(2)
    lr = LeastRequest(eps, BalanceSettings(policy="least_request"), rng=random.Random(1))
    lr.started(eps[0])
    assert all(lr.pick() is eps[1] for _ in range(20))
    lr.finished(eps[0], 1.0, 200, 0.5)  # slow answer
    lr.started(eps[1])
    lr.finished(eps[1], 1.0, 200, 0.01)
    assert all(lr.pick() is eps[1] for _ in range(20))
    assert eps[0].latency_ewma == 0.5  # peak: a slower sample is taken at once
    lr.started(eps[0])
    lr.finished(eps[0], 11.0, 200, 0.01)  # faster samples decay in (time constant 10 s)
    assert 0.01 < eps[0].latency_ewma < 0.5
    assert eps[0].latency_ewma == pytest.approx(0.5 * 0.3679 + 0.01 * 0.6321, rel=1e-3)


# --------------------------------------------------------------------------- simulation


def simulate(policy: str, seed: int, requests: int = 20_000) -> tuple[Counter[str], float]:
    """Poisson arrivals at 60% of the cluster's capacity; five endpoints with 4 workers each,
    exponential service times, FIFO queues; endpoint 4 is 10x slower. Simulated time only.
    Returns requests per endpoint and the p99 latency (arrival to completion)."""
    rng = random.Random(seed)
    eps = endpoints(5)
    slow = eps[4]
    mean_service = {ep.key: 0.010 for ep in eps}
    mean_service[slow.key] = 0.100
    workers = 4
    capacity = sum(workers / m for m in mean_service.values())
    rate = 0.6 * capacity
    bal: Balancer = make_balancer(
        eps,
        BalanceSettings(policy=policy),
        name="sim",
        rng=random.Random(seed + 1),  # type: ignore[arg-type]
    )
    busy = Counter[str]()
    queues: dict[str, deque[float]] = {ep.key: deque() for ep in eps}
    by_key = {ep.key: ep for ep in eps}
    events: list[tuple[float, int, str, float]] = []  # (time, seq, endpoint key, arrival)
    seq = 0
    sent = Counter[str]()
    latencies: list[float] = []
    now = 0.0
    next_arrival = rng.expovariate(rate)
    arrived = 0

    def start(key: str, arrival: float, at: float) -> None:
        nonlocal seq
        busy[key] += 1
        seq += 1
        heapq.heappush(events, (at + rng.expovariate(1 / mean_service[key]), seq, key, arrival))

    while arrived < requests or events:
        if arrived < requests and (not events or next_arrival <= events[0][0]):
            now = next_arrival
            arrived += 1
            next_arrival = now + rng.expovariate(rate)
            ep = bal.pick()
            assert ep is not None
            bal.started(ep)
            sent[ep.key] += 1
            if busy[ep.key] < workers:
                start(ep.key, now, now)
            else:
                queues[ep.key].append(now)
        else:
            now, _, key, arrival = heapq.heappop(events)
            busy[key] -= 1
            latency = now - arrival
            latencies.append(latency)
            bal.finished(by_key[key], now, 200, latency)
            if queues[key]:
                start(key, queues[key].popleft(), now)
    latencies.sort()
    return sent, latencies[int(0.99 * len(latencies))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_p2c_avoids_a_slow_endpoint_and_beats_round_robin_p99(seed: int) -> None:
    sent, p99 = simulate("least_request", seed)
    rr_sent, rr_p99 = simulate("round_robin", seed)
    total = sum(sent.values())
    slow_share = sent["10.0.0.4:80"] / total
    assert slow_share < 0.05, slow_share
    assert rr_sent["10.0.0.4:80"] / total == pytest.approx(0.2, abs=0.01)
    assert p99 < rr_p99, (p99, rr_p99)
    assert p99 < 0.5 * rr_p99  # not by a hair: round robin overloads the slow endpoint


def test_least_request_finds_a_recovered_endpoint_again() -> None:
    eps = endpoints(3)
    lr = LeastRequest(
        eps, BalanceSettings(policy="least_request", latency_decay=2.0), rng=random.Random(4)
    )
    now = 0.0
    for ep in eps:  # warm-up samples: 10 ms, except one hiccup of 1 s
        lr.started(ep)
        lr.finished(ep, now, 200, 1.0 if ep is eps[2] else 0.01)

    def share(rounds: int) -> float:
        nonlocal now
        got = 0
        for _ in range(rounds):  # low load: one request at a time, all answer in 10 ms
            now += 0.01
            ep = lr.pick()
            assert ep is not None
            lr.started(ep)
            lr.finished(ep, now, 200, 0.01)
            got += ep is eps[2]
        return got / rounds

    assert share(300) == 0.0  # shunned
    for _ in range(20):  # 10 s of ticks: its average drifts back towards the cluster's
        now += 0.5
        lr.tick(now)
    assert share(600) > 0.25  # picked again, and its fresh samples keep it in


def test_least_request_shuns_an_endpoint_that_refuses_connections() -> None:
    eps = endpoints(3)
    lr = LeastRequest(eps, BalanceSettings(policy="least_request"), rng=random.Random(5))
    dead = eps[0]
    now = 0.0
    for _ in range(30):
        for ep in eps:
            lr.started(ep)
            lr.finished(ep, now, 200, 0.01)
    lr.started(dead)
    lr.finished(dead, now, CONNECT_FAILURE)  # no outlier detection configured
    assert dead.latency_ewma == pytest.approx(FAILURE_PENALTY * 0.01)
    picks = Counter(lr.pick() for _ in range(1000))
    assert picks[dead] == 0
