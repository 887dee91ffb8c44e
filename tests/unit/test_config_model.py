"""The config models: defaults, typed values, immutability, default/quick configs, schema."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pydantic
import pytest

import backhaul.config as config_pkg
from backhaul.config import (
    Address,
    EdgeConfig,
    Endpoint,
    Listener,
    default_config,
    json_schema,
    load_text,
    quick_config,
)
from backhaul.config.model import advisories
from backhaul.errors import ConfigError

MINIMAL = """
listeners:
  - address: 127.0.0.1:8080
routes:
  - proxy: {cluster: api}
clusters:
  api:
    endpoints: ["127.0.0.1:3000"]
"""


def test_exported_names_are_what_we_mean() -> None:
    assert set(config_pkg.__all__) == {
        "DEFAULT_YAML", "AccessLog", "Address", "Admin", "Backoff", "CircuitBreakerSettings",
        "Cluster", "ClusterRetries", "ClusterTimeouts", "EdgeConfig", "Endpoint", "Forwarding",
        "HashKey", "HeaderMatch", "HealthChecks", "HttpHealthCheck", "LeastRequestSettings",
        "Listener", "ListenerLimits", "ListenerTimeouts", "MaglevSettings",
        "OutlierDetectionSettings", "Pool", "ProxyAction", "RedirectAction", "RespondAction",
        "Retries", "RetryBudgetSettings", "RingHashSettings", "Route", "RouteLimits",
        "RouteMatch", "SlowStartSettings", "Sticky", "default_config",
        "format_duration", "format_size", "json_schema", "load_file", "load_text",
        "parse_address", "parse_duration", "parse_size", "quick_config", "units",
    }  # fmt: skip
    for name in config_pkg.__all__:
        assert hasattr(config_pkg, name), name


def test_minimal_config_gets_every_default() -> None:
    cfg = load_text(MINIMAL, "minimal.yaml")
    assert cfg.server_header == "backhaul"
    assert cfg.workers is None
    assert (cfg.access_log.enabled, cfg.access_log.path, cfg.access_log.format) == (
        True,
        "-",
        "json",
    )
    assert cfg.admin is None
    (listener,) = cfg.listeners
    assert listener.name == "listener-0"
    assert listener.address == Address("127.0.0.1", 8080)
    assert listener.protocol == "http"
    assert listener.limits.request_line == 8 * 1024
    assert listener.limits.header_bytes == 64 * 1024
    assert listener.limits.header_count == 100
    assert listener.limits.body == 1024**3
    t = listener.timeouts
    assert (t.request_headers, t.body_idle, t.keepalive_idle, t.drain) == (10.0, 30.0, 60.0, 30.0)
    f = listener.forwarding
    assert (f.x_forwarded, f.forwarded, f.via, f.request_id) == (True, False, True, True)
    (route,) = cfg.routes
    assert route.name == "route-0"
    assert route.listeners is None
    assert route.match.host is None and route.match.headers == ()
    assert route.proxy is not None and route.proxy.cluster == "api"
    assert route.redirect is None and route.respond is None and route.limits is None
    cluster = cfg.clusters["api"]
    assert cluster.policy == "round_robin"
    assert cluster.endpoints == (Endpoint(address=Address("127.0.0.1", 3000)),)
    assert cluster.endpoints[0].weight == 1
    ct = cluster.timeouts
    assert (ct.connect, ct.response_headers, ct.body_idle) == (5.0, 30.0, 60.0)
    assert (cluster.pool.max_idle, cluster.pool.idle_timeout) == (64, 60.0)


def test_units_are_typed_values() -> None:
    cfg = load_text(
        MINIMAL.replace(
            "  - address: 127.0.0.1:8080",
            "  - address: '[::1]:8080'\n    limits: {body: 10MB, request_line: 4KiB}\n"
            "    timeouts: {drain: 1m30s, body_idle: 250ms}",
        ),
        "t",
    )
    listener = cfg.listeners[0]
    assert listener.address == Address("::1", 8080)
    assert str(listener.address) == "[::1]:8080"
    assert listener.limits.body == 10_000_000 and type(listener.limits.body) is int
    assert listener.limits.request_line == 4096
    assert listener.timeouts.drain == 90.0 and type(listener.timeouts.drain) is float
    assert listener.timeouts.body_idle == 0.25


def test_config_is_frozen_and_lists_are_tuples() -> None:
    cfg = load_text(MINIMAL, "t")
    with pytest.raises(pydantic.ValidationError):
        cfg.server_header = "x"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        cfg.listeners[0].limits.body = 1  # type: ignore[misc]
    assert isinstance(cfg.listeners, tuple)
    assert isinstance(cfg.routes, tuple)
    assert isinstance(cfg.clusters["api"].endpoints, tuple)


def test_models_forbid_unknown_fields_when_built_directly() -> None:
    with pytest.raises(pydantic.ValidationError):
        Listener(address="127.0.0.1:1", nmae="x")


def test_match_values_are_normalised() -> None:
    cfg = load_text(
        """
listeners: [{address: ":8080"}]
routes:
  - match:
      host: API.Example.COM
      methods: [get, Post]
      headers: [{name: X-Env, exact: prod}, {name: x-debug, present: false}]
    respond: {}
  - match: {host: ["a.example", "*.B.example."], regex: "/v[0-9]+/.*"}
    redirect: {to: "https://example.com{path}"}
""",
        "t",
    )
    first, second = cfg.routes
    assert first.match.host == "api.example.com"
    assert first.match.methods == ("GET", "POST")
    assert first.match.headers[0].name == "x-env"
    assert first.match.headers[1].present is False
    assert first.respond is not None and first.respond.status == 200
    assert first.respond.content_type == "text/plain; charset=utf-8"
    assert second.match.host == ("a.example", "*.b.example")
    assert second.match.regex == "/v[0-9]+/.*"  # kept as text; proven to compile at load
    assert second.redirect is not None and second.redirect.status == 302


def test_route_and_listener_names_default_by_index_but_keep_given_ones() -> None:
    cfg = load_text(
        """
listeners: [{address: ":1"}, {name: b, address: ":2"}, {address: ":3"}]
routes: [{respond: {}}, {name: x, respond: {}}, {respond: {}, match: {path: /z}}]
""",
        "t",
    )
    assert [x.name for x in cfg.listeners] == ["listener-0", "b", "listener-2"]
    assert [x.name for x in cfg.routes] == ["route-0", "x", "route-2"]


def test_port_zero_is_allowed_for_listeners_and_not_duplicate() -> None:
    cfg = load_text("listeners: [{address: '127.0.0.1:0'}, {address: '127.0.0.1:0'}]", "t")
    assert [x.address.port for x in cfg.listeners] == [0, 0]


def test_default_config_is_the_documented_one() -> None:
    cfg = default_config()
    assert [(x.name, str(x.address)) for x in cfg.listeners] == [("main", "127.0.0.1:8080")]
    (route,) = cfg.routes
    assert route.name == "default"
    assert route.match == type(route.match)()
    assert route.proxy is not None and route.proxy.cluster == "demo"
    endpoints = cfg.clusters["demo"].endpoints
    assert [e.builtin for e in endpoints] == ["echo", "echo"]
    assert [e.address for e in endpoints] == [None, None]
    assert default_config() is cfg  # parsed once


@pytest.mark.parametrize(
    ("to", "listen", "upstream", "listener"),
    [
        ("http://127.0.0.1:3000", "127.0.0.1:8080", "127.0.0.1:3000", "127.0.0.1:8080"),
        ("127.0.0.1:3000", ":8080", "127.0.0.1:3000", "0.0.0.0:8080"),
        ("http://localhost", "[::1]:9000", "localhost:80", "[::1]:9000"),
        ("HTTP://[::1]/", "127.0.0.1:1", "[::1]:80", "127.0.0.1:1"),
    ],
)
def test_quick_config(to: str, listen: str, upstream: str, listener: str) -> None:
    cfg = quick_config(to, listen)
    assert [str(x.address) for x in cfg.listeners] == [listener]
    (route,) = cfg.routes
    assert route.match == type(route.match)()
    assert route.proxy is not None and route.proxy.cluster == "upstream"
    (endpoint,) = cfg.clusters["upstream"].endpoints
    assert str(endpoint.address) == upstream


def test_quick_config_default_listen() -> None:
    assert str(quick_config("127.0.0.1:3000").listeners[0].address) == "127.0.0.1:8080"


@pytest.mark.parametrize(
    ("to", "listen", "path", "text"),
    [
        ("gopher://127.0.0.1:3000", ":8080", "--to", "expected http:// or https://"),
        ("ftp://x:1", ":8080", "--to", "expected http://"),
        ("http://127.0.0.1:3000/api", ":8080", "--to", "found the path '/api'"),
        ("127.0.0.1", ":8080", "--to", "port is missing"),
        ("http://127.0.0.1:0", ":8080", "--to", "port 1-65535"),
        ("http://127.0.0.1:3000", "8080", "--listen", "port is missing"),
    ],
)
def test_quick_config_rejects(to: str, listen: str, path: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        quick_config(to, listen)
    assert info.value.source == "<command line>"
    [(got_path, message)] = info.value.problems
    assert got_path == path
    assert text in message


def test_json_schema_describes_the_input_shape() -> None:
    schema = json_schema()
    json.dumps(schema)  # serialisable
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["anyOf"] == [
        {"required": ["listeners"]},
        {"required": ["dns"]},
        {"required": ["dhcp"]},
    ]
    defs = schema["$defs"]
    timeouts = defs["ListenerTimeouts"]["properties"]
    kinds = {x["type"] for x in timeouts["request_headers"]["anyOf"]}
    assert kinds == {"string", "number"}
    assert timeouts["request_headers"]["default"] == "10s"
    limits = defs["ListenerLimits"]["properties"]
    assert {x["type"] for x in limits["body"]["anyOf"]} == {"string", "integer"}
    assert limits["body"]["default"] == "1GiB"
    listener = defs["Listener"]["properties"]
    assert listener["address"]["type"] == "string"
    assert defs["Admin"]["properties"]["address"]["default"] == "127.0.0.1:9901"
    # an endpoint may be written as a bare address string
    assert defs["Cluster"]["properties"]["endpoints"]["items"] == {"$ref": "#/$defs/Endpoint"}
    shapes = defs["Endpoint"]["anyOf"]
    assert [x["type"] for x in shapes] == ["string", "object"]
    assert shapes[1]["additionalProperties"] is False
    host = defs["RouteMatch"]["properties"]["host"]
    assert {x["type"] for x in host["anyOf"]} == {"string", "array", "null"}


def test_schema_patterns_accept_what_the_parsers_accept() -> None:
    import re

    defs = json_schema()["$defs"]
    dur = defs["ListenerTimeouts"]["properties"]["drain"]["anyOf"][0]["pattern"]
    size = defs["ListenerLimits"]["properties"]["body"]["anyOf"][0]["pattern"]
    addr = defs["Listener"]["properties"]["address"]["pattern"]
    for text in ["5s", "250ms", "1m30s", "1.5s", "10"]:
        assert re.search(dur, text), text
    for text in ["64KiB", "10MB", "512", "1 GiB"]:
        assert re.search(size, text), text
    for text in ["127.0.0.1:8080", "[::1]:8080", ":8080", "localhost:80"]:
        assert re.search(addr, text), text
    assert not re.search(dur, "forever")
    assert not re.search(size, "lots")
    assert not re.search(addr, "localhost")


def test_advisories_name_unused_clusters_and_shadowed_routes() -> None:
    cfg = load_text(
        """
listeners: [{address: ":1"}]
routes:
  - {name: all, proxy: {cluster: a}}
  - {name: late, match: {path: /x}, respond: {}}
clusters:
  a: {endpoints: ["127.0.0.1:2"]}
  spare: {endpoints: [{builtin: echo}]}
""",
        "t",
    )
    notes = dict(advisories(cfg))
    assert "routes[1]" in notes and "'all'" in notes["routes[1]"]
    assert "clusters.spare" in notes
    assert "clusters.a" not in notes


def test_importing_config_does_not_import_asyncio() -> None:
    code = textwrap.dedent(
        """
        import sys
        import backhaul.config
        backhaul.config.default_config()
        assert "asyncio" not in sys.modules, "asyncio imported"
        assert "uvloop" not in sys.modules, "uvloop imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def python_calls(function: Callable[[], object]) -> int:
    """How many Python functions run during ``function()``: a measure of the work done that,
    unlike elapsed time, does not depend on how busy the machine is."""
    calls = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profile)
    try:
        function()
    finally:
        sys.setprofile(None)
    return calls


def routes_config(count: int) -> str:
    routes = "".join(
        f"  - {{name: r{i}, match: {{prefix: /p{i}/}}, proxy: {{cluster: c{i % 5}}}}}\n"
        for i in range(count)
    )
    clusters = "".join(f"  c{i}: {{endpoints: ['127.0.0.1:{1000 + i}']}}\n" for i in range(5))
    return f"listeners: [{{address: '127.0.0.1:8080'}}]\nroutes:\n{routes}clusters:\n{clusters}"


def test_load_is_cheap_and_linear() -> None:
    """Loading does no per-load set-up (loader classes, schema builds) and no work that grows
    faster than the config: the example takes ~3,800 Python calls, a route ~120."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "examples" / "edge.yaml").read_text()
    load_text(text, "warm-up")
    assert isinstance(load_text(text, "edge.yaml"), EdgeConfig)
    assert python_calls(lambda: load_text(text, "edge.yaml")) < 8_000
    sizes = {n: routes_config(n) for n in (100, 200, 400)}
    calls = {n: python_calls(lambda t=t: load_text(t)) for n, t in sizes.items()}
    per_route = (calls[200] - calls[100]) / 100
    assert per_route < 300, calls
    # twice the routes, twice the work (not four times)
    assert calls[400] - calls[200] <= 2.2 * (calls[200] - calls[100]), calls
