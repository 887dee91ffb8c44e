"""Handshake counters in the shared metrics: one series per TLS listener and reason, summed
over workers, monotonic across a worker restart (no sockets)."""

from __future__ import annotations

import pytest

from backhaul.admin.metrics import render_metrics
from backhaul.state.shared_counters import (
    TLS_HANDSHAKE_FAILURES,
    SharedCounters,
    WorkerMetrics,
    build_layout,
)

CONFIG = {
    "listeners": [
        {"name": "plain", "address": ("127.0.0.1", 80)},
        {"name": "web", "address": ("127.0.0.1", 443), "tls": {"internal": True}},
    ],
    "routes": [],
    "clusters": {},
}


def test_tls_listeners_get_handshake_series() -> None:
    layout = build_layout(CONFIG)
    assert layout.tls_listeners == ("web",)
    store = SharedCounters(layout, 2)
    one, two = WorkerMetrics(layout, store, 0), WorkerMetrics(layout, store, 1)
    n = len(TLS_HANDSHAKE_FAILURES)
    one.sync_tls(0, [1] + [0] * (n - 1) + [10])
    plain = TLS_HANDSHAKE_FAILURES.index("plain_http")
    two.sync_tls(0, [2 if i == plain else 0 for i in range(n)] + [5])  # plain_http x2
    one.flush()
    two.flush()
    text = render_metrics(layout, store.totals()).decode()
    assert 'backhaul_tls_handshakes_total{listener="web"} 15' in text
    assert 'reason="protocol_version"} 1' in text
    assert 'backhaul_tls_handshake_failures_total{listener="web",reason="plain_http"} 2' in text
    assert 'listener="plain"' not in text.split("backhaul_tls_handshakes_total")[1]
    # A restarted worker in slot 0 counts from what the slot held.
    one.close()
    again = WorkerMetrics(layout, store, 0)
    again.sync_tls(0, [0] * n + [1])
    again.flush()
    text = render_metrics(layout, store.totals()).decode()
    assert 'backhaul_tls_handshakes_total{listener="web"} 16' in text
    with pytest.raises(ValueError):
        again.sync_tls(0, [1, 2])


def test_no_tls_no_series() -> None:
    layout = build_layout({**CONFIG, "listeners": CONFIG["listeners"][:1]})  # type: ignore[index]
    store = SharedCounters(layout, 1)
    assert b"tls_handshake" not in render_metrics(layout, store.totals())
