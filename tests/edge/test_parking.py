"""Idle keep-alive connections parked without a transport (edge/parking.pyx), over real
loopback sockets: parked after a tick of idleness, served again on their next request,
closed when their client closes or their keep-alive deadline passes."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.harness import Edge, Upstream, free_port, parse_responses
from tests.edge.waiting import metric, scrape, wait_until

PARKED = "backhaul_downstream_connections_parked"
ACTIVE = "backhaul_downstream_connections_active"


@pytest.fixture
def edge(upstream: Upstream, tmp_path: Path) -> Iterator[Edge]:
    admin_port = free_port()
    config = {
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "routes": [
            {"name": "hello", "match": {"path": "/hello"}, "respond": {"body": "hi\n"}},
            {"name": "api", "match": {"prefix": "/api/"}, "proxy": {"cluster": "app"}},
        ],
        "clusters": {"app": {"endpoints": [upstream.address]}},
    }
    listener = {"timeouts": {"keepalive_idle": "60s"}}
    with Edge(tmp_path, config, listener=listener) as e:
        e.admin_port = admin_port  # type: ignore[attr-defined]
        yield e


def gauges(edge: Edge) -> tuple[float, float]:
    samples = scrape(edge.admin_port)  # type: ignore[attr-defined]
    return metric(samples, PARKED, listener="main"), metric(samples, ACTIVE, listener="main")


def wait_parked(edge: Edge, parked: int, active: int | None = None) -> None:
    want = (parked, parked if active is None else active)
    wait_until(lambda: gauges(edge) == want, f"{parked} parked connections ({want})")


def ask(sock: socket.socket, path: str) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, f"the edge closed the connection before answering {path}"
        data += chunk
        try:
            responses = parse_responses(data)
        except (ValueError, IndexError):
            continue
        if responses and len(responses[0][2]) == int(responses[0][1]["content-length"]):
            return responses[0]


def sockets_of(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except FileNotFoundError:
            pass  # closed while listed
    return count


def test_an_idle_connection_is_parked_and_serves_its_next_requests(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as s:
        assert ask(s, "/hello")[0] == 200
        wait_parked(edge, 1)
        # Woken by its next request: answered on the same connection, by the proxy too.
        status, headers, body = ask(s, "/api/after-parking")
        assert status == 200 and b"/api/after-parking" in body
        assert headers.get("connection") != "close"
        assert ask(s, "/hello")[2] == b"hi\n"
        wait_parked(edge, 1)  # and parked again once idle
        assert ask(s, "/hello")[2] == b"hi\n"
    lines = edge.access_log(lambda x: x.get("target") == "/api/after-parking")
    assert lines and lines[0]["client"] == "127.0.0.1"


def test_a_request_split_across_the_wake_up_is_read_whole(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as s:
        assert ask(s, "/hello")[0] == 200
        wait_parked(edge, 1)
        s.sendall(b"GET /api/split HTTP/1.1\r\n")
        wait_parked(edge, 0, active=1)  # the first bytes gave it a transport again
        status, _, body = ask_rest(s, b"Host: 127.0.0.1\r\n\r\n")
        assert status == 200 and b"/api/split" in body


def ask_rest(sock: socket.socket, rest: bytes) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(rest)
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "the edge closed the connection before answering"
        data += chunk
        if b"\r\n\r\n" in data:
            responses = parse_responses(data)
            if len(responses[0][2]) == int(responses[0][1]["content-length"]):
                return responses[0]


def test_a_parked_connection_its_client_closes_is_closed(edge: Edge) -> None:
    (worker,) = edge.worker_pids()
    before = sockets_of(worker)
    s = socket.create_connection(("127.0.0.1", edge.port), timeout=10)
    assert ask(s, "/hello")[0] == 200
    wait_parked(edge, 1)
    # The parked socket: one descriptor.
    wait_until(lambda: sockets_of(worker) == before + 1, "one descriptor for the parked socket")
    s.close()
    wait_parked(edge, 0, active=0)
    wait_until(lambda: sockets_of(worker) == before, "the parked socket to be closed")


def test_a_parked_connection_closes_at_its_keepalive_deadline(
    upstream: Upstream, tmp_path: Path
) -> None:
    config = {"routes": [{"name": "hello", "respond": {"body": "hi\n"}}]}
    listener = {"timeouts": {"keepalive_idle": "2s"}}
    with Edge(tmp_path, config, listener=listener) as edge:
        (worker,) = edge.worker_pids()
        before = sockets_of(worker)
        with socket.create_connection(("127.0.0.1", edge.port), timeout=30) as s:
            assert ask(s, "/")[0] == 200
            # The edge ends the connection with a FIN (a reset would raise here).
            assert s.recv(65536) == b""
        wait_until(lambda: sockets_of(worker) == before, "the edge to close its socket")


def test_many_parked_connections_are_all_served_again(edge: Edge) -> None:
    count = 200
    socks = [socket.create_connection(("127.0.0.1", edge.port), timeout=10) for _ in range(count)]
    try:
        for s in socks:
            assert ask(s, "/hello")[0] == 200
        wait_parked(edge, count)
        for s in socks:  # all woken at once, then read
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for s in socks:
            status, _, body = ask_rest(s, b"")
            assert status == 200 and body == b"hi\n"
    finally:
        for s in socks:
            s.close()
    wait_parked(edge, 0, active=0)


def test_parked_connections_are_closed_when_the_edge_stops(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=30) as s:
        assert ask(s, "/hello")[0] == 200
        wait_parked(edge, 1)
        assert edge.stop() == 0
        assert s.recv(65536) == b""
