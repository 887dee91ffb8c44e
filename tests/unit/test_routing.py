"""The compiled route table picks what the routes, tried one by one in order, would pick."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.config import load_text
from backhaul.edge.routing import CompiledRoute, RouteTable

MATCHES: list[dict[str, Any]] = [
    {"prefix": "/api/"},
    {"prefix": "/api/v1/"},
    {"prefix": "/"},
    {"path": "/healthz"},
    {"path": "/api/v1/x"},
    {"regex": "/api/v[0-9]+/items/[0-9]+"},
    {"regex": "/u/[a-z]{1,3}"},
    {"regex": "/.*\\.php"},
    {"regex": "/(a|b)\\1"},  # a backreference: matched alone, never combined
    {"regex": "/api/.*"},
    {"host": "a.test"},
    {"host": "*.b.test", "prefix": "/api/"},
    {"host": "a.test", "regex": "/u/.*"},
    {"methods": ["POST"], "prefix": "/api/"},
    {"methods": ["GET"], "regex": "/api/v2/.*"},
    {"headers": [{"name": "x-a", "exact": "1"}], "prefix": "/api/"},
    {"headers": [{"name": "x-a", "present": False}], "regex": "/u/.*"},
]
HEADER_SETS: list[list[tuple[bytes, bytes]]] = [[], [(b"x-a", b"1")], [(b"X-A", b"2")]]
PATHS = [
    "/",
    "/api/",
    "/api/v1/x",
    "/api/v2/items/7",
    "/api/v9/items/12",
    "/u/ab",
    "/u/abcd",
    "/x/y.php",
    "/aa",
    "/ab",
    "/healthz",
    "/other",
    "/api/v2/z",
]
HOSTS = ["a.test", "x.b.test", "b.test", "c.test", ""]


def table(indices: list[int]) -> tuple[RouteTable, list[CompiledRoute]]:
    routes = [
        {"name": f"r{n}", "match": MATCHES[i], "respond": {"body": str(n)}}
        for n, i in enumerate(indices)
    ]
    doc = {"listeners": [{"name": "main", "address": "127.0.0.1:0"}], "routes": routes}
    config = load_text(yaml.safe_dump(doc), "<test>")
    compiled = [CompiledRoute(i, r) for i, r in enumerate(config.routes)]
    return RouteTable(compiled), compiled


def one_by_one(
    routes: list[CompiledRoute],
    host: str,
    path: str,
    method: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Any:
    for route in routes:
        if route.host_matches(host) and route.rest_matches(path, method, headers):
            return route
    return None


@settings(max_examples=300)
@given(
    indices=st.lists(st.integers(0, len(MATCHES) - 1), min_size=1, max_size=10),
    requests=st.lists(
        st.tuples(
            st.sampled_from(HOSTS),
            st.sampled_from(PATHS),
            st.sampled_from([b"GET", b"POST"]),
            st.sampled_from(HEADER_SETS),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_table_matches_like_routes_in_order(indices: list[int], requests: list[Any]) -> None:
    routes_table, routes = table(indices)
    for host, path, method, headers in requests:
        want = one_by_one(routes, host, path, method, headers)
        assert routes_table.match(host, path, method, headers) is want


def test_consecutive_regex_routes_keep_their_order() -> None:
    routes_table, routes = table([9, 5, 6])  # /api/.* first: it wins over the items regex
    assert routes_table.match("", "/api/v2/items/1", b"GET") is routes[0]
    assert routes_table.match("", "/u/ab", b"GET") is routes[2]
    assert routes_table.match("", "/nothing", b"GET") is None
