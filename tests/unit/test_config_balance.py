"""Cluster balancing, health and resilience keys: defaults, parsing, cross-checks, and the
hand-over to backhaul.balance and to the running edge (freeze/thaw)."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.balance import (
    CONNECT_FAILURE,
    POLICIES,
    RESET,
    BalanceSettings,
    CheckSchedule,
    CircuitBreakers,
    EndpointState,
    HashKeySpec,
    HealthThresholds,
    HttpCheck,
    OutlierDetection,
    RetryBudget,
    RetryPolicy,
    SlowStart,
    StickyCookie,
    make_balancer,
)
from backhaul.config import (
    Cluster,
    EdgeConfig,
    Retries,
    json_schema,
    load_file,
    load_text,
)
from backhaul.config.load import load_data
from backhaul.config.model import advisories
from backhaul.edge import runtime_config
from backhaul.edge.balancing import balance_settings, retry_policy
from backhaul.edge.settings import SocketAddress, freeze, thaw
from backhaul.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "edge.yaml"


def test_example_survives_freeze_and_thaw() -> None:
    cfg = load_file(EXAMPLE)
    node = thaw(freeze(cfg))
    api = node.clusters["api"]
    assert isinstance(api, runtime_config.Cluster)
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


def test_frozen_bytes_thaw_without_pydantic_or_the_config_package() -> None:
    """The serving processes never import pydantic or backhaul.config (edge/settings.py)."""
    data = freeze(load_file(EXAMPLE))
    code = textwrap.dedent(
        """
        import sys
        from backhaul.edge.settings import thaw
        node = thaw(sys.stdin.buffer.read())
        assert node.clusters["api"].retries.retry_on[0] == "connect-failure"
        for name in ("pydantic", "backhaul.config", "yaml"):
            assert name not in sys.modules, name
        """
    )
    subprocess.run([sys.executable, "-c", code], input=data, check=True, timeout=60)
    assert pickle.loads(data).clusters["api"].retries.retry_on == (
        "connect-failure",
        "reset",
        502,
        503,
        504,
    )


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


# --------------------------------------------------------------------------- helpers

BASE = """\
listeners:
  - name: main
    address: 127.0.0.1:8080
routes:
  - name: api
    proxy: {cluster: api}
clusters:
  api:
    endpoints: ["127.0.0.1:3000", "127.0.0.1:3001"]
"""


def cluster_yaml(extra: str, route: str = "") -> str:
    """BASE with ``extra`` (YAML lines, no indent) under clusters.api and ``route`` lines
    under routes[0].proxy."""
    text = BASE + textwrap.indent(textwrap.dedent(extra), "    ")
    if route:
        text = text.replace(
            "    proxy: {cluster: api}\n",
            "    proxy:\n      cluster: api\n" + textwrap.indent(textwrap.dedent(route), "      "),
        )
    return text


def api(extra: str = "", route: str = "") -> Cluster:
    return load_text(cluster_yaml(extra, route), "edge.yaml").clusters["api"]


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, "edge.yaml")
    return dict(info.value.problems)


# --------------------------------------------------------------------------- defaults


def test_defaults_of_a_bare_cluster() -> None:
    cfg = load_text(BASE, "edge.yaml")
    c = cfg.clusters["api"]
    assert c.policy == "round_robin"
    assert c.hash_key is None and c.sticky is None
    assert c.health_checks is None and c.outlier_detection is None
    assert c.ring_hash.virtual_nodes == 256
    assert c.maglev.table_size == 65537
    assert c.least_request.latency_decay == 10.0
    assert (c.slow_start.window, c.slow_start.min_weight_percent) == (0.0, 10.0)
    assert c.panic_threshold == 50.0
    r = c.retries
    assert (r.max_retries, r.retry_on, r.per_try_timeout) == (1, ("connect-failure", "reset"), None)
    assert (r.backoff.base, r.backoff.max) == (0.025, 0.25)
    assert (r.budget.percent, r.budget.min_retry_concurrency) == (20.0, 3)
    b = c.circuit_breakers
    assert (b.max_connections, b.max_pending, b.max_requests) == (1024, 1024, 1024)
    assert [ep.drain for ep in c.endpoints] == [False, False]
    proxy = cfg.routes[0].proxy
    assert proxy is not None and proxy.retries is None and proxy.retry_non_idempotent is False
    assert cfg.admin is None


def test_admin_metrics_path() -> None:
    cfg = load_text(BASE + "admin: {}\n", "edge.yaml")
    assert cfg.admin is not None
    assert (str(cfg.admin.address), cfg.admin.metrics_path) == ("127.0.0.1:9901", "/metrics")
    cfg = load_text(BASE + "admin: {metrics_path: /stats/prometheus}\n", "edge.yaml")
    assert cfg.admin is not None and cfg.admin.metrics_path == "/stats/prometheus"


def test_defaults_agree_with_balance_where_they_should() -> None:
    c = load_text(BASE, "edge.yaml").clusters["api"]
    assert balance_settings(c) == BalanceSettings()
    full = api("health_checks: {}\noutlier_detection: {}\nsticky: {}\n")
    assert full.health_checks is not None and full.health_checks.http is not None
    assert full.outlier_detection is not None and full.sticky is not None
    assert balance_settings(full).outlier == OutlierDetection()
    checks = full.health_checks
    assert (
        CheckSchedule(checks.interval, checks.timeout, checks.jitter, checks.unhealthy_interval)
        == CheckSchedule()
    )
    assert (checks.healthy_threshold, checks.unhealthy_threshold) == (2, 3)
    http = checks.http
    assert HttpCheck(
        http.path, http.method, http.host, http.expected_statuses, http.body_contains,
        http.body_regex, http.body_limit,
    ) == HttpCheck()  # fmt: skip
    s = full.sticky
    assert (
        StickyCookie(s.cookie, s.path, s.max_age, s.secure, s.http_only, s.same_site)
        == StickyCookie()
    )
    breakers = CircuitBreakers(**dict(c.circuit_breakers))
    assert breakers.statistics() == CircuitBreakers().statistics()
    budget = RetryBudget(c.retries.budget.percent, c.retries.budget.min_retry_concurrency)
    assert (budget.budget_percent, budget.min_retry_concurrency) == (20.0, 3)


def test_default_retries_are_connect_failure_and_reset_once() -> None:
    policy = retry_policy(api().retries)
    assert policy == RetryPolicy(
        max_retries=1, connect_failure=True, reset=True, statuses=frozenset()
    )
    assert policy.decide("GET", 1, RESET).retry
    assert policy.decide("POST", 1, CONNECT_FAILURE).retry  # nothing was sent
    assert not policy.decide("POST", 1, RESET).retry  # not idempotent
    assert not policy.decide("GET", 1, 503).retry  # statuses are opt-in
    assert not policy.decide("GET", 2, RESET).retry  # one retry
    assert retry_policy(api().retries, non_idempotent=True).decide("POST", 1, RESET).retry


# --------------------------------------------------------------------------- values


def test_every_key_reaches_balance() -> None:
    c = api(
        """\
        policy: least_request
        least_request: {latency_decay: 2.5s}
        ring_hash: {virtual_nodes: 100}
        slow_start: {window: 1m, min_weight_percent: 25%}
        panic_threshold: 0
        health_checks:
          interval: 1s
          timeout: 500ms
          jitter: 100ms
          unhealthy_interval: 250ms
          healthy_threshold: 1
          unhealthy_threshold: 5
          http:
            path: /healthz?full=1
            method: head
            host: "api.internal:8443"
            expected_statuses: [200, "204", "300-308"]
            body_regex: '^ok'
            body_limit: 1KiB
        outlier_detection:
          consecutive_5xx: 0
          consecutive_connect_failures: 2
          base_ejection_time: 1s
          max_ejection_time: 1s
          max_ejection_percent: "50%"
          decay_interval: 2s
        retries:
          max_retries: 3
          retry_on: [503, reset]
          per_try_timeout: 1.5
          backoff: {base: 10ms, max: 1s}
          budget: {percent: 12.5, min_retry_concurrency: 0}
        circuit_breakers: {max_connections: 10, max_pending: 1, max_requests: 100}
        """
    )
    settings = balance_settings(c)
    assert settings.policy == "least_request" and settings.latency_decay == 2.5
    assert settings.virtual_nodes == 100
    assert settings.slow_start == SlowStart(60.0, 25.0)
    assert settings.panic_threshold == 0.0
    assert settings.health == HealthThresholds(1, 5)
    assert settings.outlier == OutlierDetection(0, 2, 1.0, 1.0, 50.0, 2.0)
    checks = c.health_checks
    assert checks is not None and checks.http is not None
    assert (checks.interval, checks.timeout, checks.jitter, checks.unhealthy_interval) == (
        1.0, 0.5, 0.1, 0.25,
    )  # fmt: skip
    http = checks.http
    assert (http.path, http.method, http.host) == ("/healthz?full=1", "HEAD", "api.internal:8443")
    assert http.expected_statuses == ((200, 200), (204, 204), (300, 308))
    assert (http.body_regex, http.body_limit) == ("^ok", 1024)
    policy = retry_policy(c.retries)
    assert policy == RetryPolicy(
        max_retries=3, connect_failure=False, reset=True, statuses=frozenset({503}),
        per_try_timeout=1.5, backoff_base=0.01, backoff_max=1.0,
    )  # fmt: skip
    assert c.retries.budget.percent == 12.5 and c.retries.budget.min_retry_concurrency == 0
    assert dict(c.circuit_breakers) == {
        "max_connections": 10, "max_pending": 1, "max_requests": 100,
    }  # fmt: skip


def test_tcp_checks_have_no_http_block() -> None:
    checks = api("health_checks: {type: tcp, interval: 2s}").health_checks
    assert checks is not None and checks.type == "tcp" and checks.http is None
    checks = api("health_checks: {type: http}").health_checks
    assert checks is not None and checks.http is not None and checks.http.path == "/"


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("[connect-failure, reset, 502, 503, 504]", ("connect-failure", "reset", 502, 503, 504)),
        ("[504, '503', RESET, Connect-Failure, 503]", ("connect-failure", "reset", 503, 504)),
        ("'reset, 503'", ("reset", 503)),
        ("[]", ()),
    ],
)
def test_retry_on_is_normalised(written: str, stored: tuple[object, ...]) -> None:
    assert api(f"retries: {{retry_on: {written}}}").retries.retry_on == stored


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ('"200-399"', ((200, 399),)),
        ("204", ((204, 204),)),
        ('"200, 204, 300-308"', ((200, 200), (204, 204), (300, 308))),
        ('[200, "300-399"]', ((200, 200), (300, 399))),
    ],
)
def test_expected_statuses_forms(written: str, stored: tuple[tuple[int, int], ...]) -> None:
    checks = api(f"health_checks: {{http: {{expected_statuses: {written}}}}}").health_checks
    assert checks is not None and checks.http is not None
    assert checks.http.expected_statuses == stored


def test_hash_key_header_names_are_lower_case_cookie_names_kept() -> None:
    key = api("policy: ring_hash\nhash_key: {source: header, name: X-User-Id}").hash_key
    assert key is not None and (key.source, key.name) == ("header", "x-user-id")
    key = api("policy: maglev\nhash_key: {source: cookie, name: SessionID}").hash_key
    assert key is not None and key.name == "SessionID"
    for source in ("client_ip", "path"):
        key = api(f"policy: maglev\nhash_key: {{source: {source}}}").hash_key
        assert key is not None and key.name == ""
        assert HashKeySpec(key.source, key.name).source == source


def test_sticky_values() -> None:
    s = api("sticky: {cookie: SRV, max_age: 1h30m, same_site: strict, secure: true}").sticky
    assert s is not None
    assert (s.cookie, s.max_age, s.same_site, s.secure) == ("SRV", 5400, "Strict", True)
    s = api("sticky: {same_site: null}").sticky
    assert s is not None and s.same_site is None
    s = api("sticky: {same_site: None, secure: true}").sticky
    assert s is not None and s.same_site == "None"


def test_drain_per_endpoint() -> None:
    c = load_text(
        BASE.replace(
            '["127.0.0.1:3000", "127.0.0.1:3001"]',
            '["127.0.0.1:3000", {address: "127.0.0.1:3001", drain: true, weight: 3}]',
        ),
        "edge.yaml",
    ).clusters["api"]
    assert [(ep.drain, ep.weight) for ep in c.endpoints] == [(False, 1), (True, 3)]


def test_percentages_accept_numbers_and_percent_strings() -> None:
    assert api("panic_threshold: 12.5").panic_threshold == 12.5
    assert api("panic_threshold: '30%'").panic_threshold == 30.0
    assert api("panic_threshold: ' 100 % '").panic_threshold == 100.0


# --------------------------------------------------------------------------- route overrides


def route_retries(extra: str, route: str) -> Retries:
    proxy = load_text(cluster_yaml(extra, route), "edge.yaml").routes[0].proxy
    assert proxy is not None and proxy.retries is not None
    return proxy.retries


def test_route_retries_override_the_cluster_key_by_key() -> None:
    cluster = """\
        retries:
          max_retries: 2
          retry_on: [connect-failure, 503]
          per_try_timeout: 3s
          backoff: {base: 5ms, max: 50ms}
        """
    r = route_retries(cluster, "retries: {max_retries: 4, backoff: {max: 1s}}\n")
    assert type(r) is Retries  # the budget stays the cluster's
    assert (r.max_retries, r.retry_on, r.per_try_timeout) == (4, ("connect-failure", 503), 3.0)
    assert (r.backoff.base, r.backoff.max) == (0.005, 1.0)
    r = route_retries(cluster, "retries: {retry_on: [reset]}\nretry_non_idempotent: true\n")
    assert (r.max_retries, r.retry_on) == (2, ("reset",))
    r = route_retries(cluster, "retries: {}\n")
    cfg = load_text(cluster_yaml(cluster), "edge.yaml")
    base = cfg.clusters["api"].retries
    assert r == Retries(**{name: getattr(base, name) for name in Retries.model_fields})


def test_route_backoff_is_checked_after_the_merge() -> None:
    # valid alone would be base 25ms (the default) > max 10ms; with the cluster's 1ms it is fine
    r = route_retries(
        "retries: {backoff: {base: 1ms, max: 5ms}}", "retries: {backoff: {max: 10ms}}\n"
    )
    assert (r.backoff.base, r.backoff.max) == (0.001, 0.01)
    found = problems(cluster_yaml("", "retries: {backoff: {max: 10ms}}\n"))
    assert list(found) == ["routes[0].proxy.retries.backoff.base"]
    assert "found 25ms, above backoff.max (10ms)" in found["routes[0].proxy.retries.backoff.base"]
    assert "with the cluster's retries" in found["routes[0].proxy.retries.backoff.base"]


# --------------------------------------------------------------------------- problems

CASES = [
    # (cluster lines, route lines, path, words)
    ("policy: maglve", "", "clusters.api.policy", "did you mean 'maglev'?"),
    ("policy: fastest", "", "clusters.api.policy",
     "expected 'round_robin', 'weighted_round_robin', 'least_connections', 'least_request',"
     " 'random', 'ring_hash' or 'maglev'"),
    ("maglev: {table_size: 65536}", "", "clusters.api.maglev.table_size",
     "found 65536: expected a prime table size, such as 65537 (the nearest primes: 65521, 65537)"),
    ("maglev: {table_size: 1}", "", "clusters.api.maglev.table_size", "expected a number >= 2"),
    ("maglev: {table_size: 5000012}", "", "clusters.api.maglev.table_size", "<= 5000011"),
    ("ring_hash: {virtual_nodes: 0}", "", "clusters.api.ring_hash.virtual_nodes", ">= 1"),
    ("least_request: {latency_decay: 0s}", "", "clusters.api.least_request.latency_decay",
     "greater than zero"),
    ("policy: ring_hash\nhash_key: {source: header}", "", "clusters.api.hash_key.name",
     "found nothing: expected the header name to hash on, such as 'x-user-id'"),
    ("policy: ring_hash\nhash_key: {source: cookie, name: 'a b'}", "",
     "clusters.api.hash_key.name", "expected a cookie name"),
    ("policy: ring_hash\nhash_key: {source: client_ip, name: x}", "",
     "clusters.api.hash_key.name", "expected no name with source client_ip"),
    ("policy: ring_hash\nhash_key: {source: query}", "", "clusters.api.hash_key.source",
     "found 'query': expected 'header', 'cookie', 'client_ip' or 'path'"),
    ("policy: ring_hash\nhash_key: {source: cookie, name: s}\nsticky: {}", "",
     "clusters.api.sticky", "found sticky with policy ring_hash: expected one way to pin clients"),
    ("sticky: {same_site: None}", "", "clusters.api.sticky.same_site",
     "found 'None' without secure: true"),
    ("sticky: {same_site: loose}", "", "clusters.api.sticky.same_site",
     "expected 'Lax', 'Strict' or 'None'"),
    ("sticky: {cookie: 'a;b'}", "", "clusters.api.sticky.cookie", "expected a cookie name"),
    ("sticky: {path: app}", "", "clusters.api.sticky.path", "starting with '/'"),
    ("sticky: {max_age: 1.5s}", "", "clusters.api.sticky.max_age", "(whole seconds)"),
    ("sticky: {name: s}", "", "clusters.api.sticky.name",
     "found the unknown key 'name': expected one of: cookie, path"),
    ("slow_start: {min_weight_percent: 0}", "", "clusters.api.slow_start.min_weight_percent",
     "found 0: expected a percentage greater than 0"),
    ("slow_start: {window: -1s}", "", "clusters.api.slow_start.window", "(not negative)"),
    ("panic_threshold: 150", "", "clusters.api.panic_threshold",
     "found 150: expected a percentage from 0 to 100"),
    ("panic_threshold: true", "", "clusters.api.panic_threshold", "found true"),
    ("health_checks: {type: udp}", "", "clusters.api.health_checks.type",
     "expected 'http' or 'tcp'"),
    ("health_checks: {intervall: 5s}", "", "clusters.api.health_checks.intervall",
     "did you mean 'interval'?"),
    ("health_checks: {interval: 0}", "", "clusters.api.health_checks.interval",
     "greater than zero"),
    ("health_checks: {healthy_threshold: 0}", "", "clusters.api.health_checks.healthy_threshold",
     "found 0: expected a number >= 1"),
    ("health_checks: {unhealthy_threshold: 0}", "",
     "clusters.api.health_checks.unhealthy_threshold", "expected a number >= 1"),
    ("health_checks: {type: tcp, http: {path: /x}}", "", "clusters.api.health_checks.http",
     "found http settings with type tcp"),
    ("health_checks: {http: {path: healthz}}", "", "clusters.api.health_checks.http.path",
     "expected a path starting with '/'"),
    ("health_checks: {http: {path: '/a b'}}", "", "clusters.api.health_checks.http.path",
     "without spaces"),
    ("health_checks: {http: {method: 'GE T'}}", "", "clusters.api.health_checks.http.method",
     "expected a method"),
    ("health_checks: {http: {host: 'a b'}}", "", "clusters.api.health_checks.http.host",
     "expected a host"),
    ("health_checks: {http: {expected_statuses: '200-99'}}", "",
     "clusters.api.health_checks.http.expected_statuses", "expected statuses or ranges"),
    ("health_checks: {http: {expected_statuses: '399-200'}}", "",
     "clusters.api.health_checks.http.expected_statuses", "first status is not above its last"),
    ("health_checks: {http: {expected_statuses: [200, 700]}}", "",
     "clusters.api.health_checks.http.expected_statuses", "from 100 to 599"),
    ("health_checks: {http: {expected_statuses: []}}", "",
     "clusters.api.health_checks.http.expected_statuses", "found an empty list"),
    ("health_checks: {http: {pathh: /x}}", "", "clusters.api.health_checks.http.pathh",
     "did you mean 'path'?"),
    ("sticky: {max_age: 0}", "", "clusters.api.sticky.max_age",
     "omit max_age for a session cookie"),
    ("health_checks: {http: {body_regex: '(ok'}}", "",
     "clusters.api.health_checks.http.body_regex", "expected a regular expression that compiles"),
    ("health_checks: {http: {body_regex: '(?u)ok'}}", "",
     "clusters.api.health_checks.http.body_regex", "compiles"),
    ("health_checks: {http: {body_contains: ''}}", "",
     "clusters.api.health_checks.http.body_contains", "expected a non-empty string"),
    ("outlier_detection: {max_ejection_percent: 101}", "",
     "clusters.api.outlier_detection.max_ejection_percent", "percentage from 0 to 100"),
    ("outlier_detection: {max_ejection_time: 10s}", "",
     "clusters.api.outlier_detection.max_ejection_time",
     "found 10s: expected at least base_ejection_time (30s)"),
    ("outlier_detection: {consecutive_5xx: -1}", "",
     "clusters.api.outlier_detection.consecutive_5xx", "expected a number >= 0"),
    ("outlier_detection: {base_ejection_time: 0s}", "",
     "clusters.api.outlier_detection.base_ejection_time", "greater than zero"),
    ("retries: {retry_on: [connect_failure]}", "", "clusters.api.retries.retry_on[0]",
     "found 'connect_failure': expected connect-failure, reset or a 5xx status such as 503;"
     " did you mean 'connect-failure'?"),
    ("retries: {retry_on: [reset, rest]}", "", "clusters.api.retries.retry_on[1]",
     "did you mean 'reset'?"),
    ("retries: {retry_on: [404]}", "", "clusters.api.retries.retry_on[0]",
     "found 404: expected connect-failure, reset or a 5xx status"),
    ("retries: {retry_on: [timeout]}", "", "clusters.api.retries.retry_on[0]",
     "a try that times out is retried when 504 is listed"),
    ("retries: {retry_on: [5xx]}", "", "clusters.api.retries.retry_on[0]",
     "list the statuses, such as 502, 503, 504"),
    ("retries: {retry_on: 'connect-failure, rest'}", "", "clusters.api.retries.retry_on",
     "did you mean 'reset'?"),
    ("retries: {retry_on: [true]}", "", "clusters.api.retries.retry_on[0]", "found true"),
    ("retries: {retry_on: 5}", "", "clusters.api.retries.retry_on", "expected a list"),
    ("retries: {max_retries: 11}", "", "clusters.api.retries.max_retries", "<= 10"),
    ("retries: {per_try_timeout: 0}", "", "clusters.api.retries.per_try_timeout",
     "greater than zero"),
    ("retries: {backoff: {base: 1s, max: 100ms}}", "", "clusters.api.retries.backoff.base",
     "found 1s, above backoff.max (100ms): expected base <= max"),
    ("retries: {budget: {percent: 120}}", "", "clusters.api.retries.budget.percent",
     "percentage from 0 to 100"),
    ("retries: {budget: {min_retry_concurrency: -1}}", "",
     "clusters.api.retries.budget.min_retry_concurrency", ">= 0"),
    ("retries: null", "", "clusters.api.retries", "expected a mapping"),
    ("circuit_breakers: {max_requests: 0}", "", "clusters.api.circuit_breakers.max_requests",
     "found 0: expected a number >= 1"),
    ("circuit_breakers: {max_request: 10}", "", "clusters.api.circuit_breakers.max_request",
     "did you mean 'max_requests'?"),
    ("", "retries: {budget: {percent: 5}}\n", "routes[0].proxy.retries.budget",
     "found a retry budget on a route: expected it on the cluster"),
    ("", "retries: {retry_on: [502, '600']}\n", "routes[0].proxy.retries.retry_on[1]",
     "found 600"),
    ("", "retry_non_idempotent: sometimes\n", "routes[0].proxy.retry_non_idempotent",
     "expected true or false"),
]  # fmt: skip


@pytest.mark.parametrize(("cluster", "route", "path", "words"), CASES)
def test_problems_have_path_words_and_line(cluster: str, route: str, path: str, words: str) -> None:
    found = problems(cluster_yaml(cluster, route))
    assert path in found, found
    assert words in found[path], found[path]
    assert "(line " in found[path], found[path]
    assert "refused by the balancer" not in found[path]


def test_duplicate_endpoint_address() -> None:
    found = problems(BASE.replace('"127.0.0.1:3001"', '"127.0.0.1:3001", "127.0.0.1:3000"'))
    assert list(found) == ["clusters.api.endpoints[2].address"]
    message = found["clusters.api.endpoints[2].address"]
    assert "found '127.0.0.1:3000' again (endpoints[0] has it)" in message
    assert "raise its weight instead" in message


def test_admin_metrics_path_must_be_a_path() -> None:
    found = problems(BASE + "admin: {metrics_path: metrics}\n")
    assert "expected a path starting with '/'" in found["admin.metrics_path"]
    assert "(line 10)" in found["admin.metrics_path"]


def test_endpoint_drain_must_be_a_boolean() -> None:
    found = problems(BASE.replace('"127.0.0.1:3001"', "{address: '127.0.0.1:3001', drain: maybe}"))
    assert "found 'maybe': expected true or false" in found["clusters.api.endpoints[1].drain"]


def test_every_problem_of_a_cluster_at_once() -> None:
    found = problems(
        cluster_yaml(
            """\
            policy: maglev
            maglev: {table_size: 100}
            health_checks: {interval: 0, http: {path: x}}
            retries: {retry_on: [reset, nope, 404]}
            """
        )
    )
    assert set(found) == {
        "clusters.api.maglev.table_size",
        "clusters.api.health_checks.interval",
        "clusters.api.health_checks.http.path",
        "clusters.api.retries.retry_on[1]",
        "clusters.api.retries.retry_on[2]",
    }
    lines = [int(m.rsplit("(line ", 1)[1].rstrip(")")) for m in found.values()]
    assert lines == sorted(lines)  # in file order


# --------------------------------------------------------------------------- advisories


@pytest.mark.parametrize(
    ("cluster", "route", "path", "words"),
    [
        ("hash_key: {source: path}", "", "clusters.api.hash_key",
         "policy round_robin ignores it"),
        ("policy: maglev", "", "clusters.api.policy", "maglev without hash_key spreads requests"),
        ("policy: least_request\nring_hash: {virtual_nodes: 10}", "", "clusters.api.ring_hash",
         "is used only by policy ring_hash; least_request ignores it"),
        ("maglev: {table_size: 7}", "", "clusters.api.maglev", "used only by policy maglev"),
        ("policy: maglev\nhash_key: {source: path}\nmaglev: {table_size: 101}", "",
         "clusters.api.maglev.table_size", "under 100 slots per endpoint"),
        ("policy: ring_hash\nhash_key: {source: path}\nslow_start: {window: 10s}", "",
         "clusters.api.slow_start", "slow_start is ignored"),
        ("outlier_detection: {consecutive_5xx: 0, consecutive_connect_failures: 0}", "",
         "clusters.api.outlier_detection", "nothing is ever ejected"),
        ("retries: {per_try_timeout: 30s}", "", "clusters.api.retries.per_try_timeout",
         "is not shorter than the cluster's timeouts.response_headers (30s)"),
        ("", "retries: {per_try_timeout: 1m}\n", "routes[0].proxy.retries.per_try_timeout",
         "never ends a try first"),
        ("", "retry_non_idempotent: true\nretries: {max_retries: 0}\n",
         "routes[0].proxy.retry_non_idempotent", "has no effect"),
    ],
)  # fmt: skip
def test_advisories(cluster: str, route: str, path: str, words: str) -> None:
    notes = dict(advisories(load_text(cluster_yaml(cluster, route), "edge.yaml")))
    assert path in notes, notes
    assert words in notes[path]


def test_advisories_for_weights_and_drain() -> None:
    text = BASE.replace(
        '["127.0.0.1:3000", "127.0.0.1:3001"]',
        '[{address: "127.0.0.1:3000", weight: 2, drain: true},'
        ' {address: "127.0.0.1:3001", drain: true}]',
    )
    notes = dict(advisories(load_text(text, "edge.yaml")))
    assert "round_robin ignores endpoint weights" in notes["clusters.api.policy"]
    assert "every endpoint drains" in notes["clusters.api.endpoints"]
    text = text.replace("drain: true}]", "drain: false}]") + "    policy: weighted_round_robin\n"
    assert not [p for p, _ in advisories(load_text(text, "edge.yaml")) if "clusters.api" in p]


def test_the_example_has_no_advisories() -> None:
    assert advisories(load_file(EXAMPLE)) == []


# --------------------------------------------------------------------------- builds


class _Ep(EndpointState):
    __slots__ = ()


def test_every_example_cluster_builds_and_balances() -> None:
    cfg = load_file(EXAMPLE)
    for name, cluster in cfg.clusters.items():
        endpoints = [
            _Ep(str(ep.address) if ep.address else f"builtin:{i}", ep.weight)
            for i, ep in enumerate(cluster.endpoints)
        ]
        balancer = make_balancer(endpoints, balance_settings(cluster), name=name)
        for cfg_ep, ep in zip(cluster.endpoints, endpoints, strict=True):
            if cfg_ep.drain:
                balancer.drain(ep, 0.0)
        key = None
        if cluster.hash_key is not None:
            spec = HashKeySpec(cluster.hash_key.source, cluster.hash_key.name)
            key = spec.extract("127.0.0.1", "/", [(b"x-user-id", b"42")])
        picked = {balancer.pick(key) for _ in range(20)}
        assert picked and None not in picked
        drained = {ep for c, ep in zip(cluster.endpoints, endpoints, strict=True) if c.drain}
        assert not picked & drained
    api_cfg = cfg.clusters["api"]
    assert balance_settings(api_cfg).slow_start.enabled


def test_thawed_config_builds_the_same_objects() -> None:
    """What the edge reads (thawed plain data) gives the balance objects the model gives."""
    cfg = load_file(EXAMPLE)
    node = thaw(freeze(cfg))
    model_http = cfg.clusters["api"].health_checks.http  # type: ignore[union-attr]
    node_http = node.clusters["api"].health_checks.http

    def build(http: object) -> HttpCheck:
        return HttpCheck(
            path=http.path,  # type: ignore[attr-defined]
            method=http.method,  # type: ignore[attr-defined]
            host=http.host,  # type: ignore[attr-defined]
            statuses=http.expected_statuses,  # type: ignore[attr-defined]
            body_contains=http.body_contains,  # type: ignore[attr-defined]
            body_regex=http.body_regex,  # type: ignore[attr-defined]
            body_limit=http.body_limit,  # type: ignore[attr-defined]
        )

    assert build(model_http) == build(node_http)
    assert build(node_http).judge(204, b"ok").passed
    assert not build(node_http).judge(500, b"ok").passed
    # balance_settings and retry_policy read attributes only: they take thawed nodes too
    for name, cluster in cfg.clusters.items():
        thawed = node.clusters[name]
        assert balance_settings(thawed) == balance_settings(cluster)  # type: ignore[arg-type]
        assert retry_policy(thawed.retries) == retry_policy(cluster.retries)
    assert retry_policy(node.routes[1].proxy.retries, True) == RetryPolicy(
        max_retries=2, statuses=frozenset({502, 503, 504}), non_idempotent=True,
        per_try_timeout=5.0,
    )  # fmt: skip


def test_freeze_a_config_with_every_optional_block() -> None:
    cfg = load_text(
        cluster_yaml(
            """\
            policy: ring_hash
            hash_key: {source: cookie, name: sid}
            health_checks: {type: tcp, unhealthy_interval: 1s}
            outlier_detection: {}
            """,
            "retries: {retry_on: []}\n",
        )
        + "admin: {address: '[::1]:9901'}\n",
        "edge.yaml",
    )
    node = thaw(freeze(cfg))
    assert node.admin.address == SocketAddress("::1", 9901)
    assert node.clusters["api"].health_checks.http is None
    assert node.routes[0].proxy.retries.retry_on == ()
    assert node.clusters["api"].sticky is None


# --------------------------------------------------------------------------- schema, dump, check


def test_json_schema_has_the_new_keys() -> None:
    schema = json_schema()
    json.dumps(schema)
    defs = schema["$defs"]
    cluster = defs["Cluster"]["properties"]
    for key in (
        "policy", "hash_key", "ring_hash", "maglev", "least_request", "sticky", "slow_start",
        "panic_threshold", "health_checks", "outlier_detection", "retries", "circuit_breakers",
    ):  # fmt: skip
        assert key in cluster, key
    assert cluster["policy"]["enum"] == list(POLICIES)
    assert defs["Endpoint"]["anyOf"][1]["properties"]["drain"]["default"] is False
    assert defs["Admin"]["properties"]["metrics_path"]["default"] == "/metrics"
    proxy = defs["ProxyAction"]["properties"]
    assert "retries" in proxy and proxy["retry_non_idempotent"]["default"] is False
    retries = defs["ClusterRetries"]["properties"]
    assert retries["retry_on"]["default"] == ["connect-failure", "reset"]
    assert retries["retry_on"]["items"]["anyOf"][0] == {"enum": ["connect-failure", "reset"]}
    assert "budget" in retries and "budget" not in defs["Retries"]["properties"]
    http = defs["HttpHealthCheck"]["properties"]
    assert http["expected_statuses"]["default"] == "200-399"
    assert http["body_limit"]["default"] == "64KiB"
    checks = defs["HealthChecks"]["properties"]
    assert checks["interval"]["default"] == "5s"
    assert checks["healthy_threshold"]["minimum"] == 1
    assert {x.get("type") for x in cluster["panic_threshold"]["anyOf"]} == {"number", "string"}
    assert defs["Sticky"]["properties"]["max_age"]["anyOf"][-1] == {"type": "null"}


def test_json_dump_loads_back_to_the_same_config() -> None:
    cfg = load_file(EXAMPLE)
    dumped = json.loads(json.dumps(cfg.model_dump(mode="json")))
    assert dumped["clusters"]["api"]["health_checks"]["http"]["expected_statuses"] == (
        "200-299, 304"
    )
    assert dumped["clusters"]["web"]["sticky"]["max_age"] == "1h"
    assert load_data(dumped, "dump") == cfg


def test_check_shows_the_new_keys() -> None:
    from rich.console import Console

    from backhaul.cli.check import render

    out = io.StringIO()
    render(load_file(EXAMPLE), "edge.yaml", Console(file=out, width=250, highlight=False))
    text = out.getvalue()
    for words in (
        "admin: 127.0.0.1:9901 (metrics /metrics)",
        "least_request",
        "latency decay 10s",
        "slow start 30s from 10%",
        "panic under 50% healthy",
        "127.0.0.1:9003 (drain)",
        "http GET /healthz → 200-299, 304",
        "Host api.internal, body has 'ok'",
        "every 5s +≤1s (sick 2s), timeout 2s",
        "up after 2, down after 3",
        "eject on 5×5xx, 3×connect failure",
        "for 30s..5m, ≤34% of endpoints",
        "retries 1: connect-failure, reset, 502-504",
        "per try 5s, backoff 25ms..250ms",
        "budget 20% (min 3)",
        "caps 1024 conn/1024 pending/1024 req",
        "key: header x-user-id",
        "table 65537",
        "sticky: cookie backhaul_sticky, 1h",
        "proxy → api (strip /v2); retries 2: connect-failure, reset, 502-504; non-idempotent",
        "no active checks",
    ):
        assert words in text, words


# --------------------------------------------------------------------------- fuzz

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(
        ["5s", "0s", "250ms", "20%", "200-399", "/x", "x", "GET", "(", "header", "cookie",
         "client_ip", "path", "tcp", "http", "None", "Lax", "reset", "connect-failure", 503,
         65537, 0, 1, 100, 101]
    ),
)  # fmt: skip
_keys = st.sampled_from(
    ["policy", "hash_key", "source", "name", "ring_hash", "virtual_nodes", "maglev",
     "table_size", "least_request", "latency_decay", "sticky", "cookie", "path", "max_age",
     "secure", "same_site", "slow_start", "window", "min_weight_percent", "panic_threshold",
     "health_checks", "type", "interval", "timeout", "jitter", "unhealthy_interval",
     "healthy_threshold", "unhealthy_threshold", "http", "method", "host", "expected_statuses",
     "body_contains", "body_regex", "body_limit", "outlier_detection", "consecutive_5xx",
     "max_ejection_time", "base_ejection_time", "max_ejection_percent", "retries",
     "max_retries", "retry_on", "per_try_timeout", "backoff", "base", "max", "budget",
     "percent", "min_retry_concurrency", "circuit_breakers", "max_requests"]
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5), st.dictionaries(_keys, _values, max_size=2))
def test_random_cluster_keys_load_or_raise_config_error(
    cluster: dict[str, object], proxy: dict[str, object]
) -> None:
    data = {
        "listeners": [{"address": "127.0.0.1:8080"}],
        "routes": [{"proxy": {**proxy, "cluster": "api"}}],
        "clusters": {"api": {**cluster, "endpoints": ["127.0.0.1:1", "127.0.0.1:2"]}},
    }
    try:
        cfg = load_text(yaml.safe_dump(data), "random.yaml")
    except ConfigError as exc:
        assert exc.problems
        for _, message in exc.problems:
            assert "refused by the balancer" not in message, message  # a check we lack
        return
    thaw(freeze(cfg))
    json.dumps(cfg.model_dump(mode="json"))
    advisories(cfg)
    c = cfg.clusters["api"]
    balance_settings(c)
    retry_policy(c.retries)
