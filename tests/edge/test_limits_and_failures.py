"""Limits, deadlines and upstream failures: each answered with the right problem+json status,
and nothing the edge cannot trust is ever reused."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.harness import Edge, RawUpstream, Upstream, exchange, free_port, parse_responses
from tests.edge.waiting import wait_log


def problem(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head, raw[:300]
    status = int(head.split()[1])
    doc = json.loads(body[: int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])])
    assert doc["status"] == status
    assert doc["detail"]
    return status, doc


SILENT_UNTIL_THE_END = threading.Event()


def bad_upstream_response(request: bytes) -> bytes | None:
    path = request.split(b" ", 2)[1]
    if path == b"/cl-te":
        return (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
    if path == b"/dup-cl":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    if path == b"/garbage":
        return b"this is not http\r\n\r\n"
    if path == b"/early-close":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part"
    if path == b"/silent":
        SILENT_UNTIL_THE_END.wait(60)  # never answers while the tests run
        return None
    if path == b"/big-head":  # over the cluster's 1 KiB response-head limit
        return b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 2000 + b"\r\nContent-Length: 0\r\n\r\n"
    if path == b"/read-to-close":
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it until close"
    return b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.fixture(scope="module")
def raw_upstream() -> Iterator[RawUpstream]:
    with RawUpstream(bad_upstream_response) as up:
        yield up
        SILENT_UNTIL_THE_END.set()


@pytest.fixture(scope="module")
def strict_edge(upstream: Upstream, raw_upstream: RawUpstream, edge_tmp: Path) -> Iterator[Edge]:
    dead = free_port()  # nothing listens here
    config = {
        "routes": [
            {
                "name": "bad",
                "match": {"prefix": "/bad/"},
                "proxy": {"cluster": "bad", "strip_prefix": "/bad"},
            },
            {"name": "dead", "match": {"prefix": "/dead/"}, "proxy": {"cluster": "dead"}},
            {"name": "app", "proxy": {"cluster": "app"}},
        ],
        "clusters": {
            "app": {"endpoints": [upstream.address]},
            "bad": {
                "endpoints": [raw_upstream.address],
                "timeouts": {"response_headers": "1s"},
                "limits": {"header_bytes": "1KiB"},
            },
            "dead": {"endpoints": [f"127.0.0.1:{dead}"]},
        },
    }
    listener = {
        "limits": {
            "request_line": "256B",
            "header_bytes": "2KiB",
            "header_count": 20,
            "body": "64KiB",
        },
        "timeouts": {"request_headers": "1s", "body_idle": "1s", "keepalive_idle": "1s"},
    }
    with Edge(edge_tmp, config, listener=listener) as e:
        yield e


def parse_responses_safe(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return parse_responses(data) if len(body) >= length else []


def req(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_request_target_too_long_is_414(strict_edge: Edge) -> None:
    status, _ = problem(exchange(strict_edge.port, req("/" + "a" * 400)))
    assert status == 414


def test_header_section_too_large_is_431(strict_edge: Edge) -> None:
    status, _ = problem(exchange(strict_edge.port, req("/", "X-Big: " + "b" * 3000)))
    assert status == 431


def test_too_many_header_fields_is_431(strict_edge: Edge) -> None:
    status, doc = problem(exchange(strict_edge.port, req("/", *(f"X-H{i}: v" for i in range(30)))))
    assert status == 431
    assert "20" in str(doc["detail"])


def test_body_over_listener_limit_is_413(strict_edge: Edge) -> None:
    raw = exchange(
        strict_edge.port,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000,
    )
    status, _ = problem(raw)
    assert status == 413


def test_slowloris_head_gets_408(strict_edge: Edge) -> None:
    """A header byte every 0.2 s keeps any per-read timer from firing: only the total head
    deadline (1 s) ends it, so the answer must come while the client is still trickling
    (it would trickle for a minute)."""
    trickled = 0
    data = b""
    with socket.create_connection(("127.0.0.1", strict_edge.port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with contextlib.suppress(OSError):
            while trickled < 300:
                readable, _, _ = select.select([s], [], [], 0.2)  # the pace of the trickle
                if readable:
                    break
                s.sendall(b"X")
                trickled += 1
        with contextlib.suppress(OSError):
            while chunk := s.recv(4096):
                data += chunk
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert trickled < 300  # cut short by the edge, not by the end of the trickle


def test_stalled_body_gets_408(strict_edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", strict_edge.port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nabc")
        s.settimeout(30)  # far beyond the 1 s body deadline: a hang fails the test
        data = s.recv(4096)
    # The request head was already forwarded, so either the edge answers 408 itself or it
    # cuts the connection; it must not hang.
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:200]


def test_idle_keepalive_connection_is_closed(strict_edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", strict_edge.port), timeout=5) as s:
        s.sendall(req("/idle"))
        first = b""
        while b"\r\n\r\n" not in first or len(parse_responses_safe(first)) < 1:
            chunk = s.recv(65536)
            assert chunk, "closed before the response was complete"
            first += chunk
        assert first.startswith(b"HTTP/1.1 200")
        s.settimeout(30)  # far beyond keepalive_idle (1 s): the edge must close first
        rest = s.recv(65536)
        assert rest == b""


def test_connection_refused_upstream_is_502(strict_edge: Edge) -> None:
    status, doc = problem(exchange(strict_edge.port, req("/dead/x")))
    assert status == 502
    detail = str(doc["detail"])
    assert "refused" in detail.lower()
    # the client is told the cluster, not the endpoint's address ...
    assert "cluster 'dead'" in detail and "127.0.0.1" not in detail
    # ... which the edge's own log keeps
    wait_log(strict_edge.stderr_path, "upstream endpoint 127.0.0.1:")


def test_endpoint_addresses_are_shown_when_the_listener_says_so(
    upstream: Upstream, edge_tmp: Path
) -> None:
    dead = free_port()
    config = {
        "routes": [{"name": "dead", "proxy": {"cluster": "dead"}}],
        "clusters": {"dead": {"endpoints": [f"127.0.0.1:{dead}"]}},
    }
    listener = {"errors": {"show_endpoints": True}}
    with Edge(edge_tmp, config, listener=listener) as edge:
        status, doc = problem(exchange(edge.port, req("/x")))
    assert status == 502
    assert f"upstream endpoint 127.0.0.1:{dead}" in str(doc["detail"])


def test_upstream_head_over_the_cluster_limit_is_502(strict_edge: Edge) -> None:
    status, doc = problem(exchange(strict_edge.port, req("/bad/big-head")))
    assert status == 502
    detail = str(doc["detail"])
    assert "larger than this cluster's limit of 1024 bytes" in detail
    assert "cluster 'bad'" in detail


@pytest.mark.parametrize("path", ["/bad/cl-te", "/bad/dup-cl", "/bad/garbage"])
def test_bad_upstream_framing_is_502_and_not_reused(
    strict_edge: Edge, raw_upstream: RawUpstream, path: str
) -> None:
    before = len(raw_upstream.requests)
    status, _ = problem(exchange(strict_edge.port, req(path, "Connection: close")))
    assert status == 502
    # A following request must use a new upstream connection and succeed.
    raw = exchange(strict_edge.port, req("/bad/ok", "Connection: close"))
    status2, _, _ = parse_responses(raw)[0]
    assert status2 == 204
    assert len(raw_upstream.requests) == before + 2


def test_upstream_closing_mid_body_cuts_the_client(strict_edge: Edge) -> None:
    raw = exchange(strict_edge.port, req("/bad/early-close"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 100" in head
    assert len(body) < 100  # truncated: the client can tell it was cut


def test_read_until_close_upstream_body_is_rechunked(strict_edge: Edge) -> None:
    raw = exchange(strict_edge.port, req("/bad/read-to-close"))
    status, headers, body = parse_responses(raw)[0]
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"all of it until close"


def test_upstream_response_header_timeout_is_504(strict_edge: Edge) -> None:
    # the upstream never answers: a 504 can only come from the edge's 1 s deadline
    status, doc = problem(exchange(strict_edge.port, req("/bad/silent"), timeout=30))
    assert status == 504
    assert "1s" in str(doc["detail"])


@pytest.mark.parametrize(
    ("raw", "status", "words"),
    [
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "HTTP/2"),
        (b"GET / HTTP/3.7\r\nHost: a\r\n\r\n", 505, "HTTP version"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, "folding"),
        (b"\x16\x03\x01\x00\x05hello", 400, "TLS"),
        (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method"),
    ],
)
def test_refusals_say_what_was_wrong(
    strict_edge: Edge, raw: bytes, status: int, words: str
) -> None:
    got, doc = problem(exchange(strict_edge.port, raw))
    assert got == status
    assert words in str(doc["detail"])
