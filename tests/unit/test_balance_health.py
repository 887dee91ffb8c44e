"""The health table (every state x input), active thresholds, outlier ejection, panic, and a
random walk over the balancer's health API."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.balance import (
    BalanceSettings,
    EndpointState,
    HealthEvent,
    HealthInput,
    HealthState,
    HealthThresholds,
    HealthTransitionError,
    OutlierDetection,
    PanicEvent,
    SlowStart,
    make_balancer,
)
from backhaul.balance.balancer import CONNECT_FAILURE, RESET, TIMEOUT
from backhaul.balance.health import (
    ROUTABLE,
    TRANSITIONS,
    TRANSITIONS_NO_SLOW_START,
    next_state,
)

H, U, W, J, D = (
    HealthState.HEALTHY,
    HealthState.UNHEALTHY,
    HealthState.WARMING,
    HealthState.EJECTED,
    HealthState.DRAINING,
)
X = None  # illegal
I = HealthInput  # noqa: E741

# The specification, written out independently of the module: rows are states, columns
# inputs in this order.
COLUMNS = [
    I.CHECK_PASS,
    I.CHECK_RISE,
    I.CHECK_FAIL,
    I.CHECK_FALL,
    I.EJECT,
    I.UNEJECT,
    I.DRAIN,
    I.RESTORE,
    I.WARMED,
]
EXPECTED = {
    #    pass rise fail fall eject uneject drain restore warmed
    H: [H, H, H, U, J, X, D, X, X],
    W: [W, W, W, U, J, X, D, X, H],
    U: [U, W, U, U, U, X, D, X, X],
    J: [J, J, J, U, X, W, D, X, X],
    D: [D, D, D, D, D, X, X, W, X],
}


@pytest.mark.parametrize("state", list(HealthState))
@pytest.mark.parametrize("event", list(HealthInput))
def test_every_state_input_pair(state: HealthState, event: HealthInput) -> None:
    assert set(COLUMNS) == set(HealthInput)
    expected = EXPECTED[state][COLUMNS.index(event)]
    if expected is None:
        with pytest.raises(HealthTransitionError) as info:
            next_state(TRANSITIONS, "10.0.0.1:80", state, event)
        assert info.value.state is state and info.value.event is event
        assert "10.0.0.1:80" in str(info.value) and "not allowed" in str(info.value)
        with pytest.raises(HealthTransitionError):
            next_state(TRANSITIONS_NO_SLOW_START, "10.0.0.1:80", state, event)
    else:
        assert next_state(TRANSITIONS, "e", state, event) is expected
        plain = H if expected is W else expected
        assert next_state(TRANSITIONS_NO_SLOW_START, "e", state, event) is plain


def test_table_is_complete_over_states() -> None:
    assert set(TRANSITIONS) == set(HealthState)
    assert {H, W} == ROUTABLE


def eps(n: int) -> list[EndpointState]:
    return [EndpointState(f"10.0.0.{i}:80") for i in range(n)]


def transitions(events: object) -> list[tuple[str, HealthState, HealthState]]:
    return [(e.endpoint, e.old, e.new) for e in events if isinstance(e, HealthEvent)]  # type: ignore[attr-defined]


def test_active_thresholds_and_events_once() -> None:
    members = eps(3)
    conf = BalanceSettings(health=HealthThresholds(healthy_threshold=2, unhealthy_threshold=3))
    bal = make_balancer(members, conf, name="api")
    ep = members[0]
    assert bal.check_result(ep, False, 1.0) == ()
    assert bal.check_result(ep, False, 2.0) == ()
    events = bal.check_result(ep, False, 3.0, "status 500, expected 200-399")
    assert transitions(events) == [(ep.key, H, U)]
    assert "3 active checks failed in a row, last: status 500" in events[0].detail  # type: ignore[union-attr]
    assert str(events[0]).startswith("endpoint 10.0.0.0:80 healthy -> unhealthy")
    assert ep not in bal.candidates and not ep.routable
    assert bal.check_result(ep, False, 4.0) == ()  # logged once
    assert bal.check_result(ep, True, 5.0) == ()
    assert bal.check_result(ep, False, 6.0) == ()  # a failure resets the pass run
    assert bal.check_result(ep, True, 7.0) == ()
    events = bal.check_result(ep, True, 8.0)
    assert transitions(events) == [(ep.key, U, H)]  # no slow start configured
    assert ep in bal.candidates


def test_outlier_ejection_grows_and_decays() -> None:
    members = eps(4)
    od = OutlierDetection(
        consecutive_5xx=3,
        consecutive_connect_failures=2,
        base_ejection_time=10.0,
        max_ejection_time=25.0,
        max_ejection_percent=50.0,
        decay_interval=100.0,
    )
    bal = make_balancer(members, BalanceSettings(outlier=od), name="api")
    ep = members[1]

    def fail(now: float, outcome: int, n: int) -> list[object]:
        out: list[object] = []
        for _ in range(n):
            bal.started(ep)
            out += bal.finished(ep, now, outcome, 0.01 if outcome > 0 else None)
        return out

    assert fail(1.0, 503, 2) == []
    bal.started(ep)
    assert bal.finished(ep, 1.0, 404, 0.01) == ()  # a non-5xx answer resets the run
    assert fail(1.0, 500, 2) == []
    events = fail(1.0, 502, 1)
    assert transitions(events) == [(ep.key, H, J)]
    assert "3 consecutive 5xx responses; ejected for 10s (ejection 1)" in events[0].detail  # type: ignore[attr-defined]
    assert ep.ejected_until == 11.0 and ep not in bal.candidates
    assert bal.tick(10.9) == ()
    assert transitions(bal.tick(11.0)) == [(ep.key, J, H)]
    # connect failures eject too, and the second ejection in a row lasts twice as long
    events = fail(12.0, CONNECT_FAILURE, 2)
    assert "2 consecutive connect failures; ejected for 20s (ejection 2)" in events[0].detail  # type: ignore[attr-defined]
    bal.tick(32.0)
    events = fail(33.0, TIMEOUT, 2) + fail(33.0, RESET, 1)
    assert "ejected for 25s (ejection 3)" in events[0].detail  # capped at max_ejection_time  # type: ignore[attr-defined]
    bal.tick(58.0)
    # after 2 decay intervals un-ejected the multiplier has dropped by 2
    events = fail(258.0, 503, 3)
    assert "ejected for 20s (ejection 2)" in events[0].detail  # type: ignore[attr-defined]
    assert ep.ejections_total == 4


def test_max_ejection_percent() -> None:
    members = eps(10)
    od = OutlierDetection(consecutive_5xx=1, max_ejection_percent=20.0)
    bal = make_balancer(members, BalanceSettings(outlier=od, panic_threshold=0))
    ejected = []
    for ep in members:
        bal.started(ep)
        ejected += transitions(bal.finished(ep, 1.0, 500, 0.01))
    assert len(ejected) == 2  # 20% of 10
    assert bal.statistics().ejections_refused == 8
    # one endpoint may always be ejected, even when the percentage rounds to none
    small = eps(3)
    bal = make_balancer(small, BalanceSettings(outlier=OutlierDetection(consecutive_5xx=1)))
    got = []
    for ep in small:
        bal.started(ep)
        got += transitions(bal.finished(ep, 1.0, 500, 0.01))
    assert len(got) == 1


def test_ejected_endpoint_that_fails_checks_becomes_unhealthy() -> None:
    members = eps(3)
    conf = BalanceSettings(
        outlier=OutlierDetection(consecutive_5xx=1), health=HealthThresholds(1, 1)
    )
    bal = make_balancer(members, conf)
    ep = members[0]
    bal.started(ep)
    bal.finished(ep, 1.0, 500, 0.01)
    assert ep.state is J
    assert bal.check_result(ep, True, 2.0) == ()  # ejection is time-based
    assert transitions(bal.check_result(ep, False, 3.0)) == [(ep.key, J, U)]
    assert bal.tick(1000.0) == ()  # no stale un-ejection of an unhealthy endpoint
    assert transitions(bal.check_result(ep, True, 1001.0)) == [(ep.key, U, H)]


def test_panic_balances_over_all_and_says_so() -> None:
    members = eps(4)
    conf = BalanceSettings(health=HealthThresholds(1, 1), panic_threshold=50.0)
    bal = make_balancer(members, conf, name="api")
    bal.check_result(members[0], False, 1.0)
    bal.check_result(members[1], False, 1.0)
    assert not bal.panic and len(bal.candidates) == 2  # 2 of 4 is not below 50%
    events = bal.check_result(members[2], False, 2.0)
    panic = [e for e in events if isinstance(e, PanicEvent)]
    assert len(panic) == 1 and panic[0].panic and (panic[0].healthy, panic[0].total) == (1, 4)
    assert "cluster api in panic: 1 of 4 endpoints healthy, below 50%" in str(panic[0])
    assert bal.panic and bal.candidates == members  # balance over all of them
    bal.drain(members[3], 3.0)  # the healthy one: draining still excluded in panic
    assert members[3] not in bal.candidates and len(bal.candidates) == 3
    bal.restore(members[3], 4.0)
    events = bal.check_result(members[0], True, 5.0)
    assert [e.panic for e in events if isinstance(e, PanicEvent)] == [False]
    assert bal.candidates == [members[0], members[3]]
    # panic off (threshold 0): nothing healthy means nothing to pick
    bal = make_balancer(eps(2), BalanceSettings(health=HealthThresholds(1, 1), panic_threshold=0))
    for ep in bal.endpoints:
        bal.check_result(ep, False, 1.0)
    assert not bal.panic and bal.pick() is None


def test_illegal_inputs_raise() -> None:
    members = eps(2)
    bal = make_balancer(members)
    with pytest.raises(HealthTransitionError, match="'restore' is not allowed in state 'healthy'"):
        bal.restore(members[0], 1.0)
    bal.drain(members[0], 1.0)
    with pytest.raises(HealthTransitionError, match="'drain' is not allowed"):
        bal.drain(members[0], 2.0)


def test_slow_start_after_recovery_and_for_new_members() -> None:
    members = eps(3)
    conf = BalanceSettings(
        policy="weighted_round_robin",
        health=HealthThresholds(1, 1),
        slow_start=SlowStart(window=30.0, min_weight_percent=20.0),
    )
    bal = make_balancer(members, conf)
    ep = members[0]
    bal.check_result(ep, False, 0.0)
    assert transitions(bal.check_result(ep, True, 10.0)) == [(ep.key, U, W)]
    assert ep.effective_weight == pytest.approx(0.2)
    bal.tick(25.0)
    assert ep.effective_weight == pytest.approx(0.5)
    assert transitions(bal.tick(40.0)) == [(ep.key, W, H)]
    assert ep.effective_weight == 1.0
    newcomer = EndpointState("10.0.0.9:80", 4)
    bal.set_endpoints([*members, newcomer], now=100.0)
    assert newcomer.state is W and newcomer.effective_weight == pytest.approx(0.8)
    bal.tick(115.0)
    assert newcomer.effective_weight == pytest.approx(2.0)


# --------------------------------------------------------------------------- random walk

OPS = ["pass", "fail", "5xx", "connect", "ok", "drain", "restore", "tick"]


@settings(max_examples=120, deadline=None)
@given(
    st.sampled_from(["round_robin", "least_connections", "maglev", "least_request"]),
    st.booleans(),
    st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 4)), max_size=80),
)
def test_random_walk_keeps_candidates_consistent(
    policy: str, slow: bool, ops: list[tuple[str, int]]
) -> None:
    members = eps(5)
    conf = BalanceSettings(
        policy=policy,  # type: ignore[arg-type]
        health=HealthThresholds(2, 2),
        outlier=OutlierDetection(
            consecutive_5xx=2,
            consecutive_connect_failures=2,
            base_ejection_time=3.0,
            max_ejection_percent=40.0,
        ),
        slow_start=SlowStart(window=5.0 if slow else 0.0),
        panic_threshold=50.0,
        maglev_table_size=251,
    )
    bal = make_balancer(members, conf, name="c", rng=random.Random(0))
    now = 0.0
    for op, i in ops:
        ep = members[i]
        now += 1.0
        before = ep.state
        try:
            if op == "pass":
                events = bal.check_result(ep, True, now)
            elif op == "fail":
                events = bal.check_result(ep, False, now)
            elif op in ("5xx", "connect", "ok"):
                bal.started(ep)
                outcome = {"5xx": 503, "connect": CONNECT_FAILURE, "ok": 200}[op]
                events = bal.finished(ep, now, outcome, 0.01)
            elif op == "drain":
                events = bal.drain(ep, now)
            elif op == "restore":
                events = bal.restore(ep, now)
            else:
                events = bal.tick(now)
        except HealthTransitionError as exc:
            assert op in ("drain", "restore")
            assert TRANSITIONS[before].get(exc.event) is None
            continue
        for e in events:
            if isinstance(e, HealthEvent):
                assert e.old is not e.new and e.at == now
                assert slow or e.new is not W
        healthy = sum(1 for m in members if m.state in ROUTABLE)
        total = sum(1 for m in members if m.state is not D)
        assert bal.panic == (total > 0 and healthy * 100 < 50 * total)
        expected = [m for m in members if m.state in ROUTABLE or (bal.panic and m.state is not D)]
        assert bal.candidates == expected
        assert all(m.routable == (m in expected) for m in members)
        picked = bal.pick(b"k%d" % i)
        assert (picked is None) == (not expected)
        assert picked is None or picked in expected
        assert all(m.in_flight == 0 for m in members)
