"""The shared endpoint-health map: a worker that replays the checker's results on its ticks
ends in the same health state as one that ran the checks itself, whatever the ticks."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.config import load_text
from backhaul.edge.cluster import Cluster
from backhaul.edge.settings import freeze, thaw
from backhaul.state.endpoint_control import EndpointControl, endpoint_labels
from backhaul.state.endpoint_health import RING, EndpointHealth

CONFIG = """
listeners: [{address: 127.0.0.1:8080}]
routes: [{match: {prefix: /}, proxy: {cluster: app}}]
clusters:
  app:
    endpoints: [127.0.0.1:9001, 127.0.0.1:9002]
    slow_start: {window: 10s}
    health_checks: {type: tcp, healthy_threshold: %d, unhealthy_threshold: %d}
"""


def cluster_pair(rise: int, fall: int) -> tuple[Cluster, Cluster, EndpointControl]:
    node = thaw(freeze(load_text(CONFIG % (rise, fall))))
    control = EndpointControl(endpoint_labels(node), 2)
    direct = Cluster("app", node.clusters["app"])
    replayed = Cluster("app", node.clusters["app"])
    assert replayed.share_checks("app", control) == []  # both endpoints are shared
    return direct, replayed, control


@settings(max_examples=60, deadline=None)
@given(
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
    steps=st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=60),
)
def test_replaying_on_ticks_matches_checking_directly(
    rise: int, fall: int, steps: list[tuple[bool, bool, bool]]
) -> None:
    direct, replayed, control = cluster_pair(rise, fall)
    health = control.health
    now = 0.0
    for passed, which, tick in steps:
        now += 1.0
        i = int(which)
        ep = direct.endpoints[i]
        direct.balancer.check_result(ep, passed, now)
        health.publish(i, passed, "healthy", 0, 0, "reason")
        if tick:
            replayed.apply_checks(health, now)
    replayed.apply_checks(health, now)
    for a, b in zip(direct.endpoints, replayed.endpoints, strict=True):
        assert (a.state, a.check_passes, a.check_failures) == (
            b.state,
            b.check_passes,
            b.check_failures,
        )


def test_a_late_worker_reaches_the_verdict_at_once() -> None:
    _, replayed, control = cluster_pair(1, 1000)  # the highest threshold allowed
    for n in range(1500):
        control.health.publish(0, False, "unhealthy", 0, n + 1, "connect failed")
    replayed.apply_checks(control.health, 1.0)  # a worker started now
    assert replayed.endpoints[0].state.value == "unhealthy"
    assert replayed.endpoints[0].check_failures == RING
    assert replayed.endpoints[1].state.value == "healthy"


def test_records_and_worker_rows_round_trip() -> None:
    health = EndpointHealth(3, 2)
    assert health.check(1).seq == 0 and health.check(1).verdict == "unknown"
    for n in range(70):
        health.publish(1, n % 3 == 0, "unhealthy", 0, 2, "é" * 100, now_unix=5.0)
    record = health.check(1)
    assert record.seq == 70 == health.check_seq(1)
    assert [record.passed(n) for n in range(1, 71)] == [n % 3 == 0 for n in range(70)]
    assert record.reason == "é" * 60 and record.last_unix == 5.0
    assert record.verdict == "unhealthy" and record.failures == 2
    health.worker_started(1, os.getpid(), now_unix=7.0)
    health.publish_in_flight(1, [4, 0, 2])
    row = health.worker(1)
    assert (row.pid, row.started_unix, row.in_flight) == (os.getpid(), 7.0, (4, 0, 2))
    health.worker_started(1, 42, now_unix=8.0)  # a restarted worker starts from none
    assert health.worker(1).in_flight == (0, 0, 0)
    assert health.worker(0).pid == 0
    pid = os.fork()
    if pid == 0:  # a child writes, the parent reads: the map is shared across fork
        health.publish(2, True, "healthy", 1, 0, "status 200")
        os._exit(0)
    os.waitpid(pid, 0)
    assert health.check(2).verdict == "healthy" and health.check(2).passed(1)


def test_a_record_carried_over_to_a_new_map_replays_the_same() -> None:
    old = EndpointHealth(2)
    for n in range(10):
        old.publish(1, n < 3, "unhealthy", 0, 7, "connect failed", now_unix=9.0)
    new = EndpointHealth(3)
    new.copy_check(0, old, 1)
    a, b = old.check(1), new.check(0)
    assert a == b and new.check_seq(0) == 10
    new.publish(0, True, "unhealthy", 1, 0, "status 200")  # the sequence goes on from there
    assert new.check(0).seq == 11 and new.check(0).passed(11) and not new.check(0).passed(10)
