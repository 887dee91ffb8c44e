"""The shared sets of endpoints found through DNS: bounded sections, generations, records
that change hands under a new tag, the carry-over of a reload, and a worker's side (it never
replays a record's results into an endpoint the record no longer belongs to). No sockets:
the publisher's ``found`` is fed answers directly."""

from __future__ import annotations

import pytest

from backhaul.admin.discovery import DiscoveryPublisher
from backhaul.config import load_text
from backhaul.edge.cluster import Cluster
from backhaul.edge.discovery import SharedDiscovery
from backhaul.edge.settings import freeze, thaw
from backhaul.errors import ConfigError
from backhaul.proto.dns_discovery import DiscoveredEndpoint
from backhaul.state.discovered_endpoints import (
    MAX_ENDPOINTS_LIMIT,
    DiscoveredEndpoints,
    SharedEndpoint,
    carry_over,
    discovered_clusters,
    same_dns_question,
)
from backhaul.state.endpoint_control import EndpointControl, endpoint_labels
from backhaul.state.endpoint_health import split_view, state_view

CONFIG = """
listeners: [{address: 127.0.0.1:8080}]
routes: [{match: {prefix: /}, proxy: {cluster: app}}]
clusters:
  static:
    endpoints: [127.0.0.1:9001]
  app:
    endpoints_from: {name: _http._tcp.app.test, type: SRV, resolvers: [127.0.0.1:5353],
                     max_endpoints: %d}
    health_checks: {type: tcp, healthy_threshold: 1, unhealthy_threshold: 2}
"""


def node(room: int = 2) -> object:
    return thaw(freeze(load_text(CONFIG % room)))


def control_of(settings: object) -> EndpointControl:
    return EndpointControl(endpoint_labels(settings), 2, discovered_clusters(settings))


def found(*ports: int) -> list[DiscoveredEndpoint]:
    return [DiscoveredEndpoint("127.0.0.1", p, 1) for p in ports]


def test_the_config_bound_is_the_shared_memory_bound() -> None:
    assert discovered_clusters(node(MAX_ENDPOINTS_LIMIT)) == [("app", MAX_ENDPOINTS_LIMIT)]
    with pytest.raises(ConfigError) as info:
        load_text(CONFIG % (MAX_ENDPOINTS_LIMIT + 1))
    assert info.value.problems[0][0] == "clusters.app.endpoints_from.max_endpoints"
    with pytest.raises(ValueError, match="outside"):
        DiscoveredEndpoints([("app", MAX_ENDPOINTS_LIMIT + 1)])


def test_sections_are_bounded_and_read_whole() -> None:
    sets = DiscoveredEndpoints([("a", 2), ("b", 3)], first_record=5)
    assert list(sets.records[0]) == [5, 6] and list(sets.records[1]) == [7, 8, 9]
    assert sets.read(1).generation == 0 and sets.read(1).endpoints == ()
    eps = (SharedEndpoint("::1", 80, 2, 7, 1), SharedEndpoint("127.0.0.1", 81, 1, 8, 1))
    assert sets.publish(1, eps, over_limit=4, now_unix=10.0) == 1
    got = sets.read_nowait(1)
    assert got is not None and got.endpoints == eps and got.over_limit == 4
    assert got.resolutions == 1 and got.last_unix == 10.0
    assert sets.read(0).generation == 0  # the other section is untouched
    with pytest.raises(ValueError, match="room for 2"):
        sets.publish(0, (*eps, eps[0]), 0)
    sets.failed(1, "Timeout: no answer")
    got = sets.read(1)
    assert got.failures == 1 and got.last_error == "Timeout: no answer" and got.generation == 1
    sets.resolved(1, 0)
    assert sets.read(1).last_error == "" and sets.read(1).resolutions == 2


def test_a_reader_never_waits_for_the_writer() -> None:
    sets = DiscoveredEndpoints([("a", 2)])
    sets.publish(0, (SharedEndpoint("127.0.0.1", 80, 1, 0, 1),), 0)
    sets._q[0] += 1  # a writer at work (or killed mid-write): the lock word is odd
    assert sets.read_nowait(0) is None
    assert sets.read(0).generation == 1  # the bounded reader takes it as it stands
    # the next writer (a restarted control process) makes the section whole again
    sets.publish(0, (SharedEndpoint("127.0.0.1", 81, 1, 0, 2),), 0)
    got = sets.read_nowait(0)
    assert got is not None and got.generation == 2 and got.endpoints[0].port == 81


def test_views_round_trip() -> None:
    assert split_view(0) is None
    assert split_view(state_view(7, 2)) == (7, 2)


def test_the_publisher_keeps_places_and_gives_freed_records_a_new_tag() -> None:
    settings = node(room=2)
    control = control_of(settings)
    published: list[tuple[str, tuple[SharedEndpoint, ...]]] = []
    pub = DiscoveryPublisher(settings, control, lambda n, eps: published.append((n, eps)))
    sets, health = control.discovered, control.health
    c = sets.find("app")
    assert c is not None and list(sets.records[c]) == [1, 2]  # after the config endpoint

    pub.found("app", found(9001, 9002, 9003))  # one more than the room
    first = sets.read(c)
    assert [e.port for e in first.endpoints] == [9001, 9002] and first.over_limit == 1
    assert published[-1] == ("app", first.endpoints)
    a, b = first.endpoints
    health.publish(a.record, False, "unhealthy", 0, 2, "connect failed")

    pub.found("app", found(9002, 9003))  # 9001 left: 9003 takes its record, cleared
    second = sets.read(c)
    assert second.generation == 2 and second.over_limit == 0
    kept, new = second.endpoints
    assert kept == b  # same place, record and tag
    assert new.port == 9003 and new.record == a.record and new.tag == 2
    record = health.check(new.record)
    assert record.seq == 0 and record.tag == 2

    pub.found("app", found(9002, 9003))  # nothing new: no new generation
    assert sets.read(c).generation == 2 and len(published) == 2


def test_a_worker_never_replays_a_record_into_its_old_endpoint() -> None:
    settings = node(room=1)
    control = control_of(settings)
    pub = DiscoveryPublisher(settings, control)
    cluster = Cluster("app", settings.clusters["app"])  # type: ignore[attr-defined]
    worker = SharedDiscovery({"app": cluster}, control)
    health = control.health
    pub.found("app", found(9001))
    worker.tick(0.0)
    (ep,) = cluster.endpoints
    assert ep.port == 9001 and cluster.discovered
    # 9001 leaves and 9002 takes its record; the checker fails 9002 twice before this
    # worker takes the new set: those results are 9002's, never 9001's
    pub.found("app", found(9002))
    record = control.discovered.read(0).endpoints[0].record
    for _ in range(2):
        health.publish(record, False, "unhealthy", 0, 1, "refused")
    worker._replay(cluster, worker.bound[0], 1.0)  # a tick that has not seen the set yet
    assert ep.state.value == "healthy"
    worker.tick(2.0)
    (new,) = cluster.endpoints
    assert new.port == 9002 and new.state.value == "unhealthy"
    in_flight, views = [0] * health.endpoints, [0] * health.endpoints
    worker.views(in_flight, views)
    assert split_view(views[record]) == (2, 2)  # its tag, "unhealthy"


def test_a_reload_carries_the_set_and_its_results_over() -> None:
    before = node(room=3)
    old = control_of(before)
    DiscoveryPublisher(before, old).found("app", found(9001, 9002, 9003))
    eps = old.discovered.read(0).endpoints
    old.health.publish(eps[0].record, False, "unhealthy", 0, 1, "refused")
    after = thaw(freeze(load_text(CONFIG.replace("static", "other") % 2)))
    assert same_dns_question(before, after) == ["app"]
    new = EndpointControl(endpoint_labels(after), 2, discovered_clusters(after))
    carry_over(new.discovered, new.health, old.discovered, old.health, ["app"])
    got = new.discovered.read(0)
    assert [e.port for e in got.endpoints] == [9001, 9002] and got.over_limit == 1
    assert got.generation == 1 and [e.tag for e in got.endpoints] == [1, 1]
    assert [e.record for e in got.endpoints] == list(new.discovered.records[0])
    record = new.health.check(got.endpoints[0].record)
    assert record.tag == 1 and record.seq == 1 and record.reason == "refused"
    # a different question starts empty
    other = thaw(freeze(load_text(CONFIG.replace("app.test", "b.test") % 2)))
    assert same_dns_question(before, other) == []
