"""Balancing, health and resilience end to end: real upstreams on loopback, the real edge."""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.edge.harness import Edge, Upstream, exchange, parse_responses, wait_port
from tests.edge.waiting import HeldUpstream, wait_endpoint_state, wait_log, wait_until


def get(port: int, path: str = "/", *headers: str) -> tuple[int, dict[str, str], bytes]:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close"]
    raw = exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode(), timeout=5)
    return parse_responses(raw)[0]


def served_by(body: bytes) -> int:
    return int(json.loads(body)["upstream"])


def cluster_config(upstreams: list[Upstream], **cluster: object) -> dict[str, object]:
    return {
        "access_log": {"enabled": False},
        "routes": [{"name": "all", "proxy": {"cluster": "app"}}],
        "clusters": {"app": {"endpoints": [u.address for u in upstreams], **cluster}},
    }


class Load:
    """Steady keep-alive GET load from a few threads, counting every outcome."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.results: list[tuple[float, int | str, int | None]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def wait_results(self, count: int, where: Callable[[int | str, int | None], bool]) -> int:
        """Wait until ``count`` results (after the first ``len`` already seen) satisfy
        ``where(status, served_by)``; returns the index the count started at."""
        start = len(self.results)
        wait_until(
            lambda: sum(1 for r in self.results[start:] if where(r[1], r[2])) >= count,
            f"{count} more load results",
            timeout=20,
        )
        return start

    def run(self) -> None:
        deadline = time.monotonic() + 30  # bounded, whatever happens
        sock: socket.socket | None = None
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.sendall(b"GET /load HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                data = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    data += chunk
                    try:
                        responses = parse_responses(data)
                    except (ValueError, IndexError):
                        continue
                    if responses and len(data) >= len(data.partition(b"\r\n\r\n")[0]) + 4:
                        status, headers, body = responses[0]
                        if len(body) >= int(headers.get("content-length", len(body))):
                            break
                who = served_by(body) if status == 200 else None
                self.results.append((time.monotonic(), status, who))
                if headers.get("connection", "").lower() == "close":
                    sock.close()
                    sock = None
            except (OSError, ConnectionError, ValueError) as exc:
                self.results.append((time.monotonic(), type(exc).__name__, None))
                if sock is not None:
                    sock.close()
                sock = None
                time.sleep(0.002)  # pacing the load, not waiting for anything
        if sock is not None:
            sock.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_round_robin_spreads_evenly(tmp_path: Path) -> None:
    with (
        Upstream() as a,
        Upstream() as b,
        Upstream() as c,
        Edge(tmp_path, cluster_config([a, b, c])) as edge,
    ):
        seen = collections.Counter(served_by(get(edge.port)[2]) for _ in range(30))
    assert sorted(seen.values()) == [10, 10, 10]


def test_weighted_round_robin_keeps_proportions(tmp_path: Path) -> None:
    with Upstream() as a, Upstream() as b:
        config = cluster_config([a, b], policy="weighted_round_robin")
        config["clusters"]["app"]["endpoints"] = [  # type: ignore[index]
            {"address": a.address, "weight": 3},
            {"address": b.address, "weight": 1},
        ]
        with Edge(tmp_path, config) as edge:
            seen = collections.Counter(served_by(get(edge.port)[2]) for _ in range(40))
    assert seen[a.port] == 30 and seen[b.port] == 10


def test_killed_endpoint_is_retried_then_ejected_without_client_errors(tmp_path: Path) -> None:
    with Upstream() as a, Upstream() as b:
        c = Upstream().__enter__()
        config = cluster_config(
            [a, b, c],
            outlier_detection={
                "consecutive_connect_failures": 2,
                "consecutive_5xx": 5,
                "base_ejection_time": "30s",
                "max_ejection_percent": 50,
            },
            retries={"max_retries": 2, "retry_on": ["connect-failure", "reset", 502, 503]},
        )
        with Edge(tmp_path, config) as edge, Load(edge.port) as load:
            load.wait_results(5, lambda status, who: who == c.port)  # c takes its share
            c.kill()  # endpoint c dies under load: no listener, open connections cut
            killed = load.wait_results(150, lambda status, who: True)
        errors = [r for r in load.results if r[1] != 200]
        after = load.results[killed:]
    assert errors == [], errors[:5]
    # once dead, c answers nothing but what each load thread had in flight at the kill
    assert sum(1 for r in after if r[2] == c.port) <= len(load.threads)
    assert sum(1 for r in after if r[2] in (a.port, b.port)) >= 150 - len(load.threads)


def test_flapping_endpoint_is_ejected_and_readmitted_by_health_checks(tmp_path: Path) -> None:
    with Upstream() as a, Upstream() as b:
        config = cluster_config(
            [a, b],
            health_checks={
                "type": "http",
                "interval": "0.1s",
                "timeout": "0.5s",
                "healthy_threshold": 1,
                "unhealthy_threshold": 1,
                "http": {"path": "/status/200"},
            },
        )
        with Edge(tmp_path, config) as edge:
            a.fail_health = True  # /status/* answers 503 from now on
            wait_log(edge.stderr_path, f"endpoint {a.address} healthy -> unhealthy")
            down = collections.Counter(served_by(get(edge.port)[2]) for _ in range(10))
            a.fail_health = False
            wait_log(edge.stderr_path, f"endpoint {a.address} unhealthy -> healthy")
            up = collections.Counter(served_by(get(edge.port)[2]) for _ in range(10))
    assert down == {b.port: 10}
    assert up[a.port] >= 4


def test_sticky_cookie_keeps_a_client_on_one_endpoint(tmp_path: Path) -> None:
    with Upstream() as a, Upstream() as b, Upstream() as c:
        config = cluster_config([a, b, c], sticky={"cookie": "bh"})
        with Edge(tmp_path, config) as edge:
            status, headers, body = get(edge.port)
            cookie = headers["set-cookie"].split(";")[0]
            first = served_by(body)
            again = [get(edge.port, "/", f"Cookie: {cookie}") for _ in range(9)]
    assert status == 200 and cookie.startswith("bh=")
    assert {served_by(r[2]) for r in again} == {first}
    assert all("set-cookie" not in r[1] for r in again)


def test_no_healthy_endpoint_is_503_naming_the_cluster(tmp_path: Path) -> None:
    with Upstream() as a:
        config = cluster_config(
            [a],
            health_checks={
                "type": "tcp",
                "interval": "0.1s",
                "timeout": "0.3s",
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
            },
            panic_threshold=0,
        )
        edge = Edge(tmp_path, config).start()
    try:
        # the upstream is gone: its checks fail
        wait_log(edge.stderr_path, f"endpoint {a.address} healthy -> unhealthy")
        status, headers, body = get(edge.port)
    finally:
        edge.stop()
    assert status == 503
    assert headers["content-type"] == "application/problem+json"
    assert "cluster 'app'" in json.loads(body)["detail"]


def test_circuit_breaker_overflow_is_503_at_once(tmp_path: Path) -> None:
    with HeldUpstream() as a:
        config = cluster_config([a], circuit_breakers={"max_requests": 1})
        with Edge(tmp_path, config) as edge:
            slow = threading.Thread(target=get, args=(edge.port, "/slow"))
            slow.start()
            wait_until(lambda: a.held == 1, "the first request to be held upstream")
            status, _, body = get(edge.port)
            # answered while the first request is still held: the breaker did not queue it
            still_in_flight = slow.is_alive()
            a.release()
            slow.join(10)
    assert status == 503
    assert "max_requests" in json.loads(body)["detail"]
    assert still_in_flight


def test_without_retries_errors_stop_once_the_dead_endpoint_is_ejected(tmp_path: Path) -> None:
    with Upstream() as a, Upstream() as b:
        c = Upstream().__enter__()
        config = cluster_config(
            [a, b, c],
            outlier_detection={
                "consecutive_connect_failures": 1,
                "consecutive_5xx": 1,
                "base_ejection_time": "30s",
                "max_ejection_percent": 50,
            },
            retries={"max_retries": 0},
        )
        with Edge(tmp_path, config) as edge, Load(edge.port) as load:
            load.wait_results(5, lambda status, who: who == c.port)
            c.kill()
            killed = load.wait_results(150, lambda status, who: status == 200)
    after = load.results[killed:]
    errors = [i for i, r in enumerate(after) if r[1] != 200]
    # The balancer ejects c after its first failure: at most what each load thread had in
    # flight and one failed try each, and then a long run of answers with no error at all.
    assert len(errors) <= 4 * 2, [after[i] for i in errors]
    clean = after[errors[-1] + 1 :] if errors else after
    assert len(clean) >= 100 and all(r[1] == 200 and r[2] != c.port for r in clean)


def test_slow_start_ramps_a_recovered_endpoint(tmp_path: Path) -> None:
    with Upstream() as a, Upstream() as b:
        config = cluster_config(
            [a, b],
            policy="weighted_round_robin",
            slow_start={"window": "3s", "min_weight_percent": 10},
            health_checks={
                "type": "http",
                "interval": "0.1s",
                "timeout": "0.5s",
                "healthy_threshold": 1,
                "unhealthy_threshold": 1,
                "http": {"path": "/status/200"},
            },
        )
        b.fail_health = True
        with Edge(tmp_path, config) as edge:
            wait_log(edge.stderr_path, f"endpoint {b.address} healthy -> unhealthy")
            b.fail_health = False
            # b passes a check: it warms up from 10% of its weight
            wait_log(edge.stderr_path, f"endpoint {b.address} unhealthy -> warming")
            early = collections.Counter(served_by(get(edge.port)[2]) for _ in range(40))

            def even_share() -> collections.Counter[int]:
                late = collections.Counter(served_by(get(edge.port)[2]) for _ in range(40))
                return late if late[b.port] >= 16 else collections.Counter()

            # past the 3 s window b takes an even share (20 of 40) again
            late = wait_until(even_share, "b to take an even share", timeout=15, every=0.2)
    assert early[b.port] <= 10, early  # ~10-30% of an even share while ramping
    assert late[b.port] >= 16, late


def test_hash_policies_keep_a_key_on_one_endpoint(tmp_path: Path) -> None:
    with Upstream() as a, Upstream() as b, Upstream() as c:
        for policy in ("ring_hash", "maglev"):
            config = cluster_config(
                [a, b, c], policy=policy, hash_key={"source": "header", "name": "x-user"}
            )
            with Edge(tmp_path, config) as edge:
                homes = {}
                for user in range(12):
                    seen = {served_by(get(edge.port, "/", f"X-User: u{user}")[2]) for _ in range(3)}
                    assert len(seen) == 1, (policy, user, seen)
                    homes[user] = seen.pop()
            assert len(set(homes.values())) >= 2, (policy, homes)


def admin_call(port: int, method: str, path: str) -> tuple[int, dict[str, object]]:
    raw = exchange(
        port, f"{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode()
    )
    status, _, body = parse_responses(raw)[0]
    return status, json.loads(body)


def test_drain_lets_in_flight_requests_finish_and_takes_no_new_ones(tmp_path: Path) -> None:
    from tests.edge.harness import free_port

    admin_port = free_port()
    with HeldUpstream() as a, HeldUpstream() as b:
        config = cluster_config([a, b])
        config["admin"] = {"address": f"127.0.0.1:{admin_port}"}
        with Edge(tmp_path, config, workers=2) as edge:
            wait_port(admin_port, proc=edge.proc)
            slow: list[tuple[int, dict[str, str], bytes]] = []
            threads = [
                threading.Thread(target=lambda: slow.append(get(edge.port, "/slow")), daemon=True)
                for _ in range(4)
            ]
            for t in threads:
                t.start()
            # four slow requests in flight, spread over both endpoints
            wait_until(lambda: a.held + b.held == 4, "four requests held upstream")
            status, doc = admin_call(
                admin_port, "POST", f"/clusters/app/endpoints/{a.address}/drain"
            )
            assert status == 202, doc
            wait_endpoint_state(admin_port, "app", a.address, "draining")
            quick = collections.Counter(served_by(get(edge.port)[2]) for _ in range(12))
            view_status, view = admin_call(admin_port, "GET", "/clusters")
            held_during_drain = (a.held, b.held, len(slow))
            a.release()
            b.release()
            for t in threads:
                t.join(10)
            missing = admin_call(admin_port, "POST", "/clusters/app/endpoints/nope:1/drain")
            status, _ = admin_call(
                admin_port, "POST", f"/clusters/app/endpoints/{a.address}/restore"
            )
            wait_endpoint_state(admin_port, "app", a.address, "healthy")
            back = collections.Counter(served_by(get(edge.port)[2]) for _ in range(12))
    assert held_during_drain[2] == 0 and min(held_during_drain[:2]) >= 1, held_during_drain
    assert [r[0] for r in slow] == [200] * 4
    assert {served_by(r[2]) for r in slow} == {a.port, b.port}
    assert quick == {b.port: 12}
    assert view_status == 200
    endpoints = view["clusters"]["app"]["endpoints"]  # type: ignore[index]
    assert any(e["endpoint"] == a.address and e["state"] == "draining" for e in endpoints)
    assert missing[0] == 404 and "no endpoint" in str(missing[1]["detail"])
    assert status == 202 and back[a.port] >= 4
