from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.harness import Edge, Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def edge_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge")


@pytest.fixture(scope="module")
def edge(upstream: Upstream, edge_tmp: Path) -> Iterator[Edge]:
    """The edge with a small but realistic route table in front of ``upstream``."""
    config = {
        "routes": [
            {"name": "health", "match": {"path": "/healthz"}, "respond": {"body": "ok\n"}},
            {
                "name": "old",
                "match": {"prefix": "/old/"},
                "redirect": {"to": "https://example.test/new{path}", "status": 301},
            },
            {
                "name": "api",
                "match": {"prefix": "/api/"},
                "proxy": {"cluster": "app", "strip_prefix": "/api", "rewrite_prefix": "/v1"},
            },
            {
                "name": "small-body",
                "match": {"prefix": "/small/"},
                "proxy": {"cluster": "app"},
                "limits": {"body": "1KiB"},
            },
            {
                "name": "wild",
                "match": {"host": "*.wild.test", "methods": ["GET"]},
                "respond": {"status": 202, "body": "wild\n"},
            },
            {
                "name": "canary",
                "match": {"prefix": "/", "headers": [{"name": "x-canary", "exact": "1"}]},
                "respond": {"status": 203, "body": "canary\n"},
            },
            {"name": "only-host", "match": {"host": "none.test"}, "proxy": {"cluster": "app"}},
            {
                "name": "default",
                "match": {"host": ["127.0.0.1", "localhost"]},
                "proxy": {"cluster": "app"},
            },
        ],
        "clusters": {"app": {"endpoints": [upstream.address]}},
    }
    with Edge(edge_tmp, config) as e:
        yield e
