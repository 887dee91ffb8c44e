"""The admin listener over real loopback sockets, and /metrics of a running edge matching the
traffic sent through it (two workers)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backhaul.admin import AdminServer, start_admin
from tests.edge.harness import Edge, Upstream, exchange, free_port, parse_responses, wait_port
from tests.edge.waiting import HeldUpstream, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- the admin listener, in-process ----------------------------------------------------------
class LoopThread:
    """An event loop running in a thread, so the test can use blocking clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 5.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


METRICS_BODY = b"# TYPE x_total counter\nx_total 7\n"


@pytest.fixture
def admin(loop_thread: LoopThread) -> Iterator[Callable[..., AdminServer]]:
    servers: list[AdminServer] = []

    def start(render: Callable[[], bytes] = lambda: METRICS_BODY, **opts: float) -> AdminServer:
        server: AdminServer = loop_thread.run(start_admin(("127.0.0.1", 0), render, **opts))
        servers.append(server)
        return server

    yield start
    for server in servers:
        loop_thread.run(server.aclose())


def recv_all(sock: socket.socket, limit: float = 3.0) -> bytes:
    sock.settimeout(limit)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except TimeoutError:
        pass
    return out


def test_metrics_and_healthz_with_curl(admin: Callable[..., AdminServer]) -> None:
    server = admin()
    out = subprocess.run(
        ["curl", "-sS", "-D", "-", f"http://127.0.0.1:{server.port}/metrics"],
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert body == METRICS_BODY
    assert parse(body.decode())[("x_total", frozenset())] == 7
    out = subprocess.run(
        ["curl", "-sS", "-i", f"http://127.0.0.1:{server.port}/healthz"],
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"\r\n\r\nok\n")


def test_keep_alive_pipelining_404_405_head(admin: Callable[..., AdminServer]) -> None:
    server = admin()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(
            b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
            b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        data = b""
        s.settimeout(3)
        while data.count(b"HTTP/1.1 ") < 4 or not data.endswith(b"ok\n"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        # The HEAD answer has a Content-Length but no body: split it out before parsing.
        first, _, after = data.partition(b"HTTP/1.1 200 OK")
        head, _, rest = after.partition(b"\r\n\r\n")
        assert f"Content-Length: {len(METRICS_BODY)}".encode() in head
        responses = parse_responses(first) + parse_responses(b"HTTP/1.1 200 OK" + rest)
        assert [r[0] for r in responses] == [404, 405, 200]
        problem = json.loads(responses[0][2])
        assert problem["status"] == 404 and "/metrics" in problem["detail"]
        assert responses[0][1]["content-type"] == "application/problem+json"
        assert responses[1][1]["allow"] == "GET, HEAD"
        assert responses[2][2] == b"ok\n"
        assert all("connection" not in r[1] for r in responses)
        # Still open: one more request on the same connection.
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        (status, headers, body), *_ = parse_responses(recv_all(s))
        assert (status, headers["connection"], body) == (200, "close", METRICS_BODY)


def test_http10_closes_unless_asked(admin: Callable[..., AdminServer]) -> None:
    server = admin()
    out = exchange(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in out
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        s.settimeout(3)
        data = s.recv(65536)
        assert b"Connection: keep-alive" in data and data.endswith(b"ok\n")


def test_bad_request_is_400_and_closes(admin: Callable[..., AdminServer]) -> None:
    server = admin()
    out = exchange(server.port, b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n")
    (status, headers, body), *rest = parse_responses(out)
    assert status == 400 and headers["connection"] == "close" and not rest
    assert json.loads(body)["status"] == 400
    out = exchange(server.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")


def test_request_size_is_bounded(admin: Callable[..., AdminServer]) -> None:
    server = admin(max_request_bytes=4096)
    big = b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 5000 + b"\r\n\r\n"
    (status, headers, body), *_ = parse_responses(exchange(server.port, big))
    assert status == 431 and headers["connection"] == "close"
    assert "4096 bytes" in json.loads(body)["detail"]
    body_req = b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 8000\r\n\r\n" + b"b" * 8000
    (status, _, _), *_ = parse_responses(exchange(server.port, body_req))
    assert status == 431


def until_closed(sock: socket.socket, limit: float = 30.0) -> bytes:
    """Everything the server sends until it closes; the test fails if it has not closed
    within ``limit`` seconds (far beyond the deadlines under test)."""
    sock.settimeout(limit)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_read_deadline_and_idle_timeout(admin: Callable[..., AdminServer]) -> None:
    server = admin(read_timeout=0.3, idle_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")  # the head never ends
        out = until_closed(s)
    assert out.startswith(b"HTTP/1.1 408 "), out  # the server's deadline, not the client's
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        assert until_closed(s) == b""  # idle: closed without an answer


def test_render_failure_is_500_and_logged(
    admin: Callable[..., AdminServer], capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> bytes:
        raise RuntimeError("boom")

    server = admin(broken)
    (status, _, body), *_ = parse_responses(
        exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
    )
    assert status == 500 and "boom" not in body.decode()
    err = capsys.readouterr().err
    assert "internal error in the admin listener" in err and "RuntimeError: boom" in err


def test_a_second_server_on_the_port_is_refused(loop_thread: LoopThread) -> None:
    first = loop_thread.run(start_admin(("127.0.0.1", 0), lambda: b"one\n"))
    try:
        with pytest.raises(OSError) as refused:
            loop_thread.run(start_admin(("127.0.0.1", first.port), lambda: b"two\n"))
        assert "already in use" in str(refused.value)
        conn = http.client.HTTPConnection("127.0.0.1", first.port, timeout=3)
        conn.request("GET", "/metrics")
        assert conn.getresponse().read() == b"one\n"
        conn.close()
    finally:
        loop_thread.run(first.aclose())


# -- the running edge ----------------------------------------------------------------------


def scrape(port: int) -> Samples:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        return parse(resp.read().decode())
    finally:
        conn.close()


def wait_metrics(port: int, done: Callable[[Samples], bool], timeout: float = 5.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def request(port: int, method: str, path: str, body: bytes | None = None) -> int:
    """One request on its own connection (so that both workers get some)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def edge_config(upstream: Upstream, admin_port: int) -> dict[str, object]:
    return {
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "routes": [
            {"name": "hello", "match": {"path": "/hello"}, "respond": {"body": "hi\n"}},
            {
                "name": "api",
                "match": {"prefix": "/api/"},
                "proxy": {"cluster": "app", "strip_prefix": "/api"},
            },
        ],
        "clusters": {"app": {"endpoints": [upstream.address]}},
    }


REQ = "backhaul_downstream_requests_total"
API = {"listener": "main", "route": "api", "cluster": "app"}
HELLO = {"listener": "main", "route": "hello", "cluster": ""}
NONE = {"listener": "main", "route": "", "cluster": ""}


def total_requests(s: Samples) -> float:
    return sum(v for (name, _), v in s.items() if name == REQ)


def test_metrics_match_the_traffic_two_workers(upstream: Upstream, tmp_path: Path) -> None:
    admin_port = free_port()
    with Edge(tmp_path, edge_config(upstream, admin_port), workers=2) as edge:
        wait_port(admin_port, timeout=2, proc=edge.proc)
        sent: list[int] = []
        for _ in range(20):
            sent.append(request(edge.port, "GET", "/api/x"))
        for _ in range(6):
            sent.append(request(edge.port, "GET", "/api/status/503"))
        for _ in range(3):
            sent.append(request(edge.port, "POST", "/api/upload", b"u" * 1000))
        for _ in range(5):
            sent.append(request(edge.port, "GET", "/hello"))
        for _ in range(4):
            sent.append(request(edge.port, "GET", "/nothing"))
        assert sent.count(200) == 28 and sent.count(503) == 6 and sent.count(404) == 4
        n = len(sent)
        s = wait_metrics(admin_port, lambda s: total_requests(s) >= n)
        assert total_requests(s) == n
        assert value(s, REQ, **API, status_class="2xx") == 23
        assert value(s, REQ, **API, status_class="5xx") == 6
        assert value(s, REQ, **HELLO, status_class="2xx") == 5
        assert value(s, REQ, **NONE, status_class="4xx") == 4
        dur = "backhaul_downstream_request_duration_seconds"
        assert value(s, dur + "_count", listener="main", route="api") == 29
        assert value(s, dur + "_bucket", listener="main", route="api", le="+Inf") == 29
        assert value(s, dur + "_count", listener="main", route="hello") == 5
        assert 0 < value(s, dur + "_sum", listener="main", route="api") < 29 * 5
        up = "backhaul_upstream_request_duration_seconds"
        assert value(s, up + "_count", cluster="app") == 29
        received = "backhaul_downstream_received_bytes_total"
        assert value(s, received, listener="main", route="api") == 3000
        sent_bytes = "backhaul_downstream_sent_bytes_total"
        assert value(s, sent_bytes, listener="main", route="hello") == 5 * len(b"hi\n")
        assert value(s, "backhaul_workers") == 2
        ep = {"cluster": "app", "endpoint": upstream.address}
        assert value(s, "backhaul_endpoint_health", **ep, state="healthy") == 1
        # Nothing is counted twice by later flushes: more requests, on connections that
        # reach both workers, show up once and the totals stay exact.
        for _ in range(20):
            assert request(edge.port, "GET", "/hello") == 200
        s = wait_metrics(admin_port, lambda s: total_requests(s) >= n + 20)
        assert total_requests(s) == n + 20
        assert value(s, REQ, **HELLO, status_class="2xx") == 5 + 20
        assert value(s, REQ, **API, status_class="2xx") == 23


def test_bad_requests_are_counted_without_a_route(upstream: Upstream, tmp_path: Path) -> None:
    admin_port = free_port()
    with Edge(tmp_path, edge_config(upstream, admin_port), workers=2) as edge:
        wait_port(admin_port, timeout=2, proc=edge.proc)
        for _ in range(3):
            out = exchange(edge.port, b"GET /hello HTTP/1.1\r\nBad Header\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 400 ")
        s = wait_metrics(admin_port, lambda s: total_requests(s) >= 3)
        assert value(s, REQ, **NONE, status_class="4xx") == 3
        assert total_requests(s) == 3


def test_counters_survive_a_killed_worker(upstream: Upstream, tmp_path: Path) -> None:
    admin_port = free_port()
    with Edge(tmp_path, edge_config(upstream, admin_port), workers=2) as edge:
        wait_port(admin_port, timeout=2, proc=edge.proc)
        for _ in range(20):
            assert request(edge.port, "GET", "/hello") == 200
        s = wait_metrics(admin_port, lambda s: total_requests(s) >= 20)
        assert value(s, REQ, **HELLO, status_class="2xx") == 20  # all 20 in shared memory
        before = set(edge.worker_pids())
        os.kill(sorted(before)[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = set(edge.worker_pids())
            if len(now) == 2 and now != before:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the supervisor did not restart the killed worker")
        s = wait_metrics(admin_port, lambda s: value(s, "backhaul_workers") == 2)
        assert value(s, "backhaul_workers") == 2
        assert value(s, REQ, **HELLO, status_class="2xx") == 20  # monotonic: nothing lost
        for _ in range(10):
            assert request(edge.port, "GET", "/hello") == 200
        s = wait_metrics(admin_port, lambda s: total_requests(s) >= 30)
        assert value(s, REQ, **HELLO, status_class="2xx") == 30


def test_cluster_metrics_follow_the_balancer(tmp_path: Path) -> None:
    """One worker (balancing state is per worker): a dead endpoint is ejected after one
    connect failure and that try is retried on another endpoint; a breaker of one request
    refuses concurrent ones."""
    admin_port = free_port()
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    with Upstream() as up1, Upstream() as up2, HeldUpstream() as held:
        config = {
            "admin": {"address": f"127.0.0.1:{admin_port}"},
            "routes": [
                {
                    "name": "api",
                    "match": {"prefix": "/api/"},
                    "proxy": {"cluster": "app", "strip_prefix": "/api"},
                },
                {
                    "name": "slow",
                    "match": {"prefix": "/slow/"},
                    "proxy": {"cluster": "slow", "strip_prefix": "/slow"},
                },
            ],
            "clusters": {
                "app": {
                    "endpoints": [up1.address, up2.address, dead],
                    "outlier_detection": {
                        "consecutive_connect_failures": 1,
                        "consecutive_5xx": 0,
                        "max_ejection_percent": 100,
                        "base_ejection_time": "60s",
                    },
                    "retries": {"max_retries": 2, "retry_on": ["connect-failure"]},
                },
                "slow": {
                    "endpoints": [held.address],
                    "circuit_breakers": {"max_requests": 1},
                },
            },
        }
        with Edge(tmp_path, config, workers=1) as edge:
            wait_port(admin_port, timeout=2, proc=edge.proc)
            assert [request(edge.port, "GET", "/api/x") for _ in range(6)] == [200] * 6
            statuses: list[int] = []
            first = threading.Thread(
                target=lambda: statuses.append(request(edge.port, "GET", "/slow/slow"))
            )
            first.start()
            wait_until(lambda: held.held == 1, "the first slow request to be held upstream")
            # while it is held, the breaker (one request) refuses the others at once
            for _ in range(3):
                statuses.append(request(edge.port, "GET", "/slow/slow"))
            held.release()
            first.join(10)
            refused = statuses.count(503)
            assert sorted(statuses) == [200, 503, 503, 503]
            over = "backhaul_circuit_breaker_overflows_total"

            def synced(s: Samples) -> bool:
                # request counters are flushed as they go; the cluster's (retries, ejections,
                # health, breakers) are synced on the worker's tick
                return (
                    total_requests(s) >= 10
                    and value(s, "backhaul_retries_total", cluster="app") >= 1
                    and value(s, over, cluster="slow", breaker="max_requests") >= refused
                )

            s = wait_metrics(admin_port, synced)
            assert total_requests(s) == 10
            assert value(s, "backhaul_retries_total", cluster="app") == 1
            ejections = "backhaul_endpoint_ejections_total"
            assert value(s, ejections, cluster="app", endpoint=dead) == 1
            assert value(s, ejections, cluster="app", endpoint=up1.address) == 0
            health = "backhaul_endpoint_health"
            assert value(s, health, cluster="app", endpoint=dead, state="ejected") == 1
            assert value(s, health, cluster="app", endpoint=dead, state="healthy") == 0
            assert value(s, health, cluster="app", endpoint=up2.address, state="healthy") == 1
            assert value(s, "backhaul_cluster_panic", cluster="app") == 0
            assert value(s, over, cluster="slow", breaker="max_requests") == refused
            assert value(s, over, cluster="app", breaker="max_requests") == 0
            slow = {"listener": "main", "route": "slow", "cluster": "slow"}
            assert value(s, REQ, **slow, status_class="5xx") == refused


def test_access_log_write_errors_reach_metrics(upstream: Upstream, tmp_path: Path) -> None:
    # /dev/full takes the open but fails every write (ENOSPC): the lines are lost, and
    # /metrics says how many.
    admin_port = free_port()
    config = edge_config(upstream, admin_port)
    config["access_log"] = {"path": "/dev/full"}
    with Edge(tmp_path, config) as edge:
        wait_port(admin_port, timeout=2, proc=edge.proc)
        for _ in range(5):
            assert request(edge.port, "GET", "/hello") == 200
        errors = "backhaul_access_log_write_errors_total"
        s = wait_metrics(admin_port, lambda s: value(s, errors) >= 5)
        assert value(s, errors) == 5
        assert value(s, "backhaul_access_log_dropped_lines_total") == 0
        assert edge.proc is not None and edge.proc.poll() is None  # still serving
        assert request(edge.port, "GET", "/hello") == 200
