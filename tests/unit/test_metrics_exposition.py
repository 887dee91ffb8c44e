"""The /metrics text exposition, read back with prometheus_client's own parser."""

from __future__ import annotations

import platform
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

import backhaul
import backhaul.admin as admin_pkg
from backhaul.admin.metrics import MetricsExposition, metrics_renderer, render_metrics
from backhaul.balance import HealthState
from backhaul.state.shared_counters import (
    DEFAULT_BUCKETS,
    STALE_AFTER,
    Layout,
    SharedCounters,
    WorkerMetrics,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """All samples by (name, labels), and the type of each family."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def layout() -> Layout:
    return Layout(
        listeners=("main", "admin-ish"),
        routes=("api", 'odd "name"\\with\nnewline', "static"),
        route_clusters=("app", None, None),
        route_listeners=(None, None, ("main",)),
        clusters=("app", "spare"),
        endpoints=(("127.0.0.1:3000", "[::1]:3001"), ("builtin:spare-1",)),
    )


World = tuple[Layout, SharedCounters, WorkerMetrics, WorkerMetrics]


@pytest.fixture
def world() -> World:
    lay = layout()
    store = SharedCounters(lay, 2)
    a = WorkerMetrics(lay, store, 0)
    b = WorkerMetrics(lay, store, 1)
    api = lay.series("main", "api")
    odd = lay.series("admin-ish", 'odd "name"\\with\nnewline')
    none = lay.series("main", None)
    a.record(api, 200, 0.0004, 0.0003, 100, 1000)  # first bucket, both histograms
    a.record(api, 201, 0.003, 0.002, 0, 10)
    b.record(api, 502, 0.2, 0.15, 0, 50)
    b.record(api, 404, 0.02, None, 0, 20)  # answered by the edge: no upstream time
    b.record(odd, 302, 0.0001, None, 0, 0)
    b.record_reject(none, 400, 0, 120)
    a.set_active_connections(0, 2)
    b.set_active_connections(0, 3, 2)
    b.set_active_connections(1, 1)
    # The workers disagree on [::1]:3001 and on panic.
    a.sync_cluster(
        0,
        retries=4,
        budget_exhausted=0,
        overflows=(0, 0, 3),
        ejections=(0, 1),
        health=("healthy", "ejected"),
        panic=True,
    )
    b.sync_cluster(
        0,
        retries=0,
        budget_exhausted=1,
        overflows=(0, 0, 0),
        ejections=(0, 2),
        health=(HealthState.HEALTHY, HealthState.HEALTHY),
        panic=False,
    )
    for m, over in ((a, (0, 0, 0)), (b, (1, 0, 0))):
        m.sync_cluster(
            1,
            retries=0,
            budget_exhausted=0,
            overflows=over,
            ejections=(0,),
            health=("draining",),
            panic=False,
        )
    a.sync_access_log(dropped=5, write_errors=0)
    b.sync_access_log(dropped=2, write_errors=3)
    a.flush()
    b.flush()
    return lay, store, a, b


def test_exposition_parses_back_with_exact_values(world: World) -> None:
    lay, store, _, _ = world
    text = render_metrics(lay, store.totals()).decode()
    samples, types = parse(text)

    req = "backhaul_downstream_requests_total"
    api = {"listener": "main", "route": "api", "cluster": "app"}
    assert value(samples, req, **api, status_class="2xx") == 2
    assert value(samples, req, **api, status_class="5xx") == 1
    assert value(samples, req, **api, status_class="4xx") == 1
    assert value(samples, req, **api, status_class="1xx") == 0
    odd = {"listener": "admin-ish", "route": 'odd "name"\\with\nnewline', "cluster": ""}
    assert value(samples, req, **odd, status_class="3xx") == 1
    none = {"listener": "main", "route": "", "cluster": ""}
    assert value(samples, req, **none, status_class="4xx") == 1
    # 'static' is limited to main: no series for it on the other listener.
    assert ("static", "admin-ish") not in {
        (dict(k[1]).get("route"), dict(k[1]).get("listener")) for k in samples
    }
    assert value(samples, req, listener="main", route="static", cluster="", status_class="2xx") == 0

    dur = "backhaul_downstream_request_duration_seconds"
    lr = {"listener": "main", "route": "api"}
    assert value(samples, dur + "_count", **lr) == 4
    assert value(samples, dur + "_sum", **lr) == pytest.approx(0.2234)
    assert value(samples, dur + "_bucket", **lr, le="0.0005") == 1
    assert value(samples, dur + "_bucket", **lr, le="0.005") == 2
    assert value(samples, dur + "_bucket", **lr, le="0.025") == 3
    assert value(samples, dur + "_bucket", **lr, le="0.25") == 4
    assert value(samples, dur + "_bucket", **lr, le="+Inf") == 4
    # A reject is counted as a request but has no latency.
    assert value(samples, dur + "_count", listener="main", route="") == 0

    up = "backhaul_upstream_request_duration_seconds"
    assert value(samples, up + "_count", cluster="app") == 3
    assert value(samples, up + "_sum", cluster="app") == pytest.approx(0.1523)
    assert value(samples, up + "_bucket", cluster="app", le="0.0005") == 1
    assert value(samples, up + "_bucket", cluster="app", le="0.1") == 2
    assert value(samples, up + "_count", cluster="spare") == 0

    assert value(samples, "backhaul_downstream_received_bytes_total", **lr) == 100
    assert value(samples, "backhaul_downstream_sent_bytes_total", **lr) == 1080
    assert value(samples, "backhaul_downstream_sent_bytes_total", listener="main", route="") == 120
    conns = "backhaul_downstream_connections_active"
    assert value(samples, conns, listener="main") == 5
    assert value(samples, conns, listener="admin-ish") == 1
    parked = "backhaul_downstream_connections_parked"
    assert value(samples, parked, listener="main") == 2
    assert value(samples, parked, listener="admin-ish") == 0

    health = "backhaul_endpoint_health"
    ep0 = {"cluster": "app", "endpoint": "127.0.0.1:3000"}
    assert value(samples, health, **ep0, state="healthy") == 1
    assert value(samples, health, **ep0, state="ejected") == 0
    ep1 = {"cluster": "app", "endpoint": "[::1]:3001"}
    assert value(samples, health, **ep1, state="healthy") == 0.5
    assert value(samples, health, **ep1, state="ejected") == 0.5
    spare = {"cluster": "spare", "endpoint": "builtin:spare-1"}
    assert value(samples, health, **spare, state="draining") == 1
    for ep in (ep0, ep1, spare):
        states = ("healthy", "warming", "unhealthy", "ejected", "draining")
        assert sum(value(samples, health, **ep, state=s) for s in states) == 1

    assert value(samples, "backhaul_endpoint_ejections_total", **ep1) == 3
    assert value(samples, "backhaul_endpoint_ejections_total", **ep0) == 0
    assert value(samples, "backhaul_retries_total", cluster="app") == 4
    assert value(samples, "backhaul_retry_budget_exhausted_total", cluster="app") == 1
    over = "backhaul_circuit_breaker_overflows_total"
    assert value(samples, over, cluster="app", breaker="max_requests") == 3
    assert value(samples, over, cluster="spare", breaker="max_connections") == 1
    assert value(samples, over, cluster="app", breaker="max_pending") == 0
    assert value(samples, "backhaul_cluster_panic", cluster="app") == 0.5
    assert value(samples, "backhaul_cluster_panic", cluster="spare") == 0
    assert value(samples, "backhaul_workers") == 2
    assert value(samples, "backhaul_access_log_dropped_lines_total") == 7
    assert value(samples, "backhaul_access_log_write_errors_total") == 3
    build = {"version": backhaul.__version__, "python": platform.python_version()}
    assert value(samples, "backhaul_build_info", **build) == 1

    assert types == {
        "backhaul_downstream_requests": "counter",
        "backhaul_downstream_request_duration_seconds": "histogram",
        "backhaul_downstream_received_bytes": "counter",
        "backhaul_downstream_sent_bytes": "counter",
        "backhaul_downstream_connections_active": "gauge",
        "backhaul_downstream_connections_parked": "gauge",
        "backhaul_upstream_request_duration_seconds": "histogram",
        "backhaul_endpoint_health": "gauge",
        "backhaul_endpoint_ejections": "counter",
        "backhaul_retries": "counter",
        "backhaul_retry_budget_exhausted": "counter",
        "backhaul_circuit_breaker_overflows": "counter",
        "backhaul_cluster_panic": "gauge",
        "backhaul_access_log_dropped_lines": "counter",
        "backhaul_access_log_write_errors": "counter",
        "backhaul_workers": "gauge",
        "backhaul_build_info": "gauge",
    }


def test_text_format_shape(world: World) -> None:
    lay, store, _, _ = world
    text = render_metrics(lay, store.totals()).decode()
    assert text.endswith("\n")
    lines = text.splitlines()
    helps = [ln.split()[2] for ln in lines if ln.startswith("# HELP")]
    type_lines = [ln.split()[2:] for ln in lines if ln.startswith("# TYPE")]
    assert helps == [name for name, _ in type_lines]
    for name, kind in type_lines:
        assert name.startswith("backhaul_")
        assert re.fullmatch(r"[a-z_]+", name)
        assert name.endswith("_total") == (kind == "counter"), name
        if kind == "histogram":
            assert name.endswith("_seconds")
    # Label values are escaped (backslash, quote, newline), so every sample is one line.
    assert 'route="odd \\"name\\"\\\\with\\nnewline"' in text
    samples = [ln for ln in lines if not ln.startswith("#")]
    assert all(re.fullmatch(r"backhaul_[a-z_]+(\{.*\})? \S+", ln) for ln in samples)
    # Histograms: cumulative buckets ending in +Inf equal to _count.
    buckets = [ln for ln in samples if ln.startswith("backhaul_downstream_request_duration")]
    per_series = len(DEFAULT_BUCKETS) + 1 + 2
    assert len(buckets) == lay.keys * per_series


def test_histogram_buckets_are_cumulative(world: World) -> None:
    lay, store, _, _ = world
    samples, _ = parse(render_metrics(lay, store.totals()).decode())
    name = "backhaul_downstream_request_duration_seconds_bucket"
    les = [repr(b) for b in DEFAULT_BUCKETS] + ["+Inf"]
    for key in range(lay.keys):
        listener, route, _ = lay.series_names(key)
        counts = [value(samples, name, listener=listener, route=route, le=le) for le in les]
        assert counts == sorted(counts)


def test_gauges_leave_out_dead_workers_counters_keep_them(world: World) -> None:
    lay, store, _, _ = world
    _, floats = store.slot_views(1)
    b_beat = floats[0]
    text = render_metrics(lay, store.totals(now=b_beat + STALE_AFTER + 1)).decode()
    samples, _ = parse(text)
    # Slot 0 flushed before slot 1 and is staler still: no worker is live.
    assert value(samples, "backhaul_workers") == 0
    assert value(samples, "backhaul_downstream_connections_active", listener="main") == 0
    ep = {"cluster": "app", "endpoint": "[::1]:3001"}
    assert value(samples, "backhaul_endpoint_health", **ep, state="healthy") == 0
    api = {"listener": "main", "route": "api", "cluster": "app"}
    assert value(samples, "backhaul_downstream_requests_total", **api, status_class="2xx") == 2


def test_renderer_flushes_its_own_worker_first(world: World) -> None:
    lay, store, a, _ = world
    render = metrics_renderer(store, a)
    a.record(lay.series("main", "api"), 200, 0.001, None, 0, 0)  # not flushed yet
    samples, _ = parse(render().decode())
    api = {"listener": "main", "route": "api", "cluster": "app"}
    assert value(samples, "backhaul_downstream_requests_total", **api, status_class="2xx") == 3


def test_empty_config_renders() -> None:
    lay = Layout(("main",), (), (), (), (), ())
    store = SharedCounters(lay, 1)
    WorkerMetrics(lay, store, 0)
    samples, _ = parse(MetricsExposition(lay).render(store.totals()).decode())
    assert value(samples, "backhaul_workers") == 1
    req = "backhaul_downstream_requests_total"
    assert value(samples, req, listener="main", route="", cluster="", status_class="2xx") == 0


def test_admin_exports_are_what_we_mean() -> None:
    assert set(admin_pkg.__all__) == {
        "CONTENT_TYPE",
        "AdminServer",
        "MetricsExposition",
        "metrics_renderer",
        "render_metrics",
        "serve_admin",
        "start_admin",
    }
    for name in admin_pkg.__all__:  # loaded on first use (the supervisor imports the package)
        assert getattr(admin_pkg, name) is not None
