"""Cluster balancing, health and resilience keys: defaults, parsing, cross-checks, and the
hand-over to backhaul.balance and to the running edge (freeze/thaw)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backhaul.balance import POLICIES
from backhaul.config import EdgeConfig, load_file, load_text
from backhaul.edge.settings import Node, SocketAddress, freeze, thaw

EXAMPLE = Path(__file__).parents[2] / "examples" / "edge.yaml"


def test_example_survives_freeze_and_thaw() -> None:
    cfg = load_file(EXAMPLE)
    node = thaw(freeze(cfg))
    api = node.clusters["api"]
    assert isinstance(api, Node)
    assert api.policy == "least_request"
    assert api.least_request.latency_decay == 10.0
    assert api.endpoints[2].drain is True and api.endpoints[0].drain is False
    assert api.endpoints[1].address == SocketAddress("127.0.0.1", 9002)
    assert api.slow_start.window == 30.0 and api.slow_start.min_weight_percent == 10.0
    assert api.panic_threshold == 50.0
    checks = api.health_checks
    assert (checks.type, checks.interval, checks.timeout, checks.jitter) == ("http", 5.0, 2.0, 1.0)
    assert checks.unhealthy_interval == 2.0
    assert (checks.healthy_threshold, checks.unhealthy_threshold) == (2, 3)
    assert checks.http.expected_statuses == ((200, 299), (304, 304))
    assert checks.http.body_limit == 65536
    outlier = api.outlier_detection
    assert (outlier.base_ejection_time, outlier.max_ejection_time) == (30.0, 300.0)
    assert outlier.max_ejection_percent == 34.0
    retries = api.retries
    assert retries.retry_on == ("connect-failure", "reset", 502, 503, 504)
    assert (retries.backoff.base, retries.backoff.max) == (0.025, 0.25)
    assert (retries.budget.percent, retries.budget.min_retry_concurrency) == (20.0, 3)
    assert api.circuit_breakers.max_requests == 1024
    canary = node.clusters["api-canary"]
    assert (canary.hash_key.source, canary.hash_key.name) == ("header", "x-user-id")
    assert canary.maglev.table_size == 65537
    web = node.clusters["web"]
    assert web.sticky.cookie == "backhaul_sticky" and web.sticky.max_age == 3600
    assert node.clusters["tools"].sticky is None
    assert node.clusters["tools"].health_checks is None
    assert node.admin.metrics_path == "/metrics"
    route = node.routes[1]
    assert route.proxy.retry_non_idempotent is True
    # the route's override is merged with its cluster's retries at load
    assert route.proxy.retries.max_retries == 2
    assert route.proxy.retries.retry_on == ("connect-failure", "reset", 502, 503, 504)
    assert route.proxy.retries.per_try_timeout == 5.0
    assert node.routes[5].proxy.retries is None


def test_frozen_bytes_unpickle_without_backhaul() -> None:
    """The serving processes never import pydantic or backhaul.config (edge/settings.py)."""
    data = freeze(load_file(EXAMPLE))
    code = textwrap.dedent(
        """
        import pickle, sys
        sys.modules["backhaul"] = None  # any import of backhaul fails
        pickle.loads(sys.stdin.buffer.read())
        """
    )
    subprocess.run([sys.executable, "-c", code], input=data, check=True, timeout=60)
    assert pickle.loads(data)["clusters"]["api"]["retries"]["retry_on"] == [
        "connect-failure",
        "reset",
        502,
        503,
        504,
    ]


def test_policies_are_balance_policies() -> None:
    from backhaul.config.model import Policy

    assert Policy.__args__ == POLICIES  # type: ignore[attr-defined]


def test_loaded_config_is_an_edge_config() -> None:
    assert isinstance(load_text(EXAMPLE.read_text(), "x"), EdgeConfig)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_loads(policy: str) -> None:
    load_text(
        f"listeners: [{{address: ':1'}}]\nclusters:\n  a:\n    policy: {policy}\n"
        "    endpoints: ['127.0.0.1:2']\n",
        "t",
    )
