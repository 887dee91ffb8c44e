"""Config reloads of the real edge (``backhaul serve`` as a subprocess, ``backhaul reload``):
20 reloads under load lose no request, a bad config changes nothing and is reported, a
listener is added and removed, a route change shows, the DNS service answers on after a
reload, and /metrics reports the generation. Every wait polls a condition with a deadline."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.edge.harness import BACKHAUL, Edge, Upstream, free_port

LOAD_LIMIT = 200_000  # requests per client thread at most (the test stops them sooner)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pid and status files of these edges in the test's own directory."""
    path = tmp_path / "run"
    monkeypatch.setenv("BACKHAUL_RUN_DIR", str(path))
    return path


def reload(edge: Edge, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BACKHAUL, "reload", "-c", str(edge.config_path), "--timeout", "60", *extra],
        capture_output=True,
        text=True,
        timeout=90,
    )


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def scrape(port: int) -> str:
    status, body = get(port, "/metrics")
    assert status == 200
    return body.decode()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def write_config(edge: Edge, config: dict[str, Any]) -> None:
    edge.config_path.write_text(yaml.safe_dump(config))


class Load:
    """Client threads: keep-alive ones (http.client reconnects after ``Connection: close``)
    and ones that open a new connection per request; every failure is kept."""

    def __init__(self, port: int, paths: list[str]) -> None:
        self.port = port
        self.paths = paths
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.done = 0
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(keep,), daemon=True)
            for keep in (True, True, False, False)
        ]

    def _check(self, path: str, status: int, body: bytes) -> None:
        if status != 200 or (path.startswith("/up/") and b'"upstream"' not in body):
            self.failures.append(f"{path}: {status} {body[:100]!r}")

    def _run(self, keep_alive: bool) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        for i in range(LOAD_LIMIT):
            if self.stop.is_set():
                break
            path = self.paths[i % len(self.paths)]
            try:
                if not keep_alive:
                    conn.close()
                conn.request("GET", path)
                response = conn.getresponse()
                self._check(path, response.status, response.read())
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{path} (keep-alive {keep_alive}): {exc!r}")
                conn.close()
            with self.lock:
                self.done += 1
        conn.close()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def versioned(upstream: Upstream, admin: int, version: str) -> dict[str, Any]:
    return {
        "admin": {"address": f"127.0.0.1:{admin}"},
        "routes": [
            {"name": "version", "match": {"path": "/version"}, "respond": {"body": version}},
            {"name": "up", "match": {"prefix": "/up/"}, "proxy": {"cluster": "app"}},
        ],
        "clusters": {"app": {"endpoints": [upstream.address]}},
        "access_log": {"enabled": False},
    }


def version_is(port: int, version: str) -> bool:
    """A new connection gets ``version`` (old workers may answer until they stop)."""
    return get(port, "/version") == (200, version.encode())


def test_twenty_reloads_under_load_lose_nothing(tmp_path: Path) -> None:
    admin = free_port()
    with Upstream() as upstream:
        edge = Edge(tmp_path, versioned(upstream, admin, "v0"), workers=2)
        listeners = [{"name": "main", "address": f"127.0.0.1:{edge.port}"}]
        with edge:
            assert version_is(edge.port, "v0")
            with Load(edge.port, ["/version", "/up/a", "/up/b"]) as load:
                generation = 1
                for i in range(1, 21):
                    if i == 10:  # a bad config in between: nothing changes, the error says why
                        bad = versioned(upstream, admin, "bad")
                        bad["routes"][1]["proxy"]["cluster"] = "missing"
                        write_config(edge, {**bad, "listeners": listeners})
                        result = reload(edge)
                        assert result.returncode == 2, result
                        assert "reload refused" in result.stderr
                        assert "routes[1].proxy.cluster: found 'missing'" in result.stderr
                        assert str(edge.config_path) in result.stderr
                        assert version_is(edge.port, f"v{i - 1}")
                        continue
                    write_config(
                        edge, {**versioned(upstream, admin, f"v{i}"), "listeners": listeners}
                    )
                    before = load.done
                    result = reload(edge)
                    assert result.returncode == 0, result
                    generation += 1
                    assert f"reloaded: generation {generation}," in result.stdout
                    wait_for(lambda v=f"v{i}": version_is(edge.port, v), f"v{i} served")
                    # requests flow between reloads too
                    wait_for(lambda b=before: load.done > b + 20, "requests after the reload")
            assert load.failures == [], load.failures[:5]
            assert load.done > 200, load.done
            print(f"{load.done} requests, 0 failed, over 20 reloads")
            text = scrape(admin)
            assert metric(text, "backhaul_config_generation") == 20  # 19 applied + the first
            assert metric(text, "backhaul_config_last_reload_success") == 1
            assert metric(text, "backhaul_config_last_reload_timestamp_seconds") > 1e9
            # the old generations drained and exited: only the two current workers are left
            wait_for(lambda: len(edge.worker_pids()) == 2, "old workers to exit")
            log = edge.stderr_path.read_text()
            assert "config generation 20 applied (sha256 " in log
            assert "config reload failed; generation 10 " in log


def test_bad_config_reported_and_old_kept(tmp_path: Path) -> None:
    """SIGHUP alone (no CLI) with a file that is not even YAML: the status file and the log
    carry the error; /metrics says the last reload failed; the old config serves."""
    admin = free_port()
    with Upstream() as upstream:
        edge = Edge(tmp_path, versioned(upstream, admin, "good"), workers=1)
        with edge:
            assert edge.proc is not None
            edge.config_path.write_text("listeners: [\n")
            edge.proc.send_signal(signal.SIGHUP)
            status_file = Path(os.environ["BACKHAUL_RUN_DIR"]) / f"edge-{edge.proc.pid}.status.json"
            wait_for(lambda: json.loads(status_file.read_text())["attempts"] == 1, "the attempt")
            status = json.loads(status_file.read_text())
            assert status["last_ok"] is False
            assert status["generation"] == 1
            assert "YAML syntax error" in status["last_error"]
            assert version_is(edge.port, "good")
            assert metric(scrape(admin), "backhaul_config_last_reload_success") == 0
            assert "config reload failed; generation 1" in edge.stderr_path.read_text()
            # pydantic ran in the validating child only: neither the supervisor nor a worker
            # has it (its compiled core would be mapped), nor the YAML parser
            for pid in [edge.proc.pid, *edge.worker_pids()]:
                maps = Path(f"/proc/{pid}/maps").read_text()
                assert "pydantic_core" not in maps, pid
                assert "_yaml" not in maps, pid


def test_listener_added_then_removed(tmp_path: Path) -> None:
    admin = free_port()
    with Upstream() as upstream:
        edge = Edge(tmp_path, versioned(upstream, admin, "one"), workers=1)
        main = {"name": "main", "address": f"127.0.0.1:{edge.port}"}
        extra_port = free_port()
        extra = {"name": "extra", "address": f"127.0.0.1:{extra_port}"}
        with edge:
            write_config(edge, {**versioned(upstream, admin, "two"), "listeners": [main, extra]})
            result = reload(edge)
            assert result.returncode == 0, result
            assert get(extra_port, "/version") == (200, b"two")
            wait_for(lambda: version_is(edge.port, "two"), "the main listener on the new config")
            write_config(edge, {**versioned(upstream, admin, "three"), "listeners": [extra]})
            assert reload(edge).returncode == 0
            assert get(extra_port, "/version") == (200, b"three")

            def refused() -> bool:
                try:
                    with socket.create_connection(("127.0.0.1", edge.port), timeout=2):
                        return False
                except ConnectionRefusedError:
                    return True

            wait_for(refused, "the removed listener to close")


def test_unchanged_config_keeps_the_generation(tmp_path: Path) -> None:
    admin = free_port()
    with Upstream() as upstream:
        edge = Edge(tmp_path, versioned(upstream, admin, "same"), workers=1)
        with edge:
            pids = edge.worker_pids()
            edge.config_path.write_text(edge.config_path.read_text() + "# a comment\n")
            result = reload(edge, "--json")
            assert result.returncode == 0, result
            outcome = json.loads(result.stdout)
            assert (outcome["generation"], outcome["last_ok"], outcome["attempts"]) == (1, True, 1)
            assert outcome["changed"] is False
            assert "unchanged in effect: generation 1," in reload(edge).stdout
            assert edge.proc is not None
            by_pid = subprocess.run(
                [*BACKHAUL, "reload", "--pid", str(edge.proc.pid)],
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert by_pid.returncode == 0 and "generation 1," in by_pid.stdout, by_pid
            assert edge.worker_pids() == pids
            assert "config unchanged in effect" in edge.stderr_path.read_text()


def test_an_address_in_use_fails_the_reload(tmp_path: Path) -> None:
    """A new listener or admin address that another process holds: refused, said why."""
    admin = free_port()
    with Upstream() as upstream, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        edge = Edge(tmp_path, versioned(upstream, admin, "kept"), workers=1)
        main = {"name": "main", "address": f"127.0.0.1:{edge.port}"}
        with edge:
            for change in (
                {"admin": {"address": f"127.0.0.1:{busy}"}},
                {"listeners": [main, {"name": "busy", "address": f"127.0.0.1:{busy}"}]},
            ):
                config = {**versioned(upstream, admin, "new"), "listeners": [main], **change}
                write_config(edge, config)
                result = reload(edge)
                assert result.returncode == 2, result
                assert f"127.0.0.1:{busy}" in result.stderr and "in use" in result.stderr
                assert version_is(edge.port, "kept")
            assert metric(scrape(admin), "backhaul_config_generation") == 1


def test_quick_mode_has_no_file_to_reload(tmp_path: Path) -> None:
    """``serve --to``: SIGHUP re-reads certificates only; ``backhaul reload`` (no -c) finds
    the edge by its pid file and says nothing changed."""
    port = free_port()
    with Upstream() as upstream:
        err = tmp_path / "quick.err"
        with open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [*BACKHAUL, "serve", "--to", f"http://{upstream.address}", "--listen",
                 f"127.0.0.1:{port}", "-w", "1"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )  # fmt: skip
            try:
                wait_for(lambda: b" serving" in err.read_bytes(), "the quick edge")
                result = subprocess.run(
                    [*BACKHAUL, "reload"], capture_output=True, text=True, timeout=90
                )
                assert result.returncode == 0, result
                assert "unchanged in effect: generation 1," in result.stdout
                assert b"no config file to reload" in err.read_bytes()
                assert get(port, "/")[0] == 200
            finally:
                proc.terminate()
                proc.wait(30)


def test_reload_without_a_running_edge(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("listeners: []\n")
    result = subprocess.run(
        [*BACKHAUL, "reload", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "no running edge was started -c" in result.stderr
    assert "Traceback" not in result.stderr


def test_dns_answers_after_reloads(tmp_path: Path) -> None:
    dns_port = free_port()
    admin = free_port()
    first, second = free_port(), free_port()

    def config(endpoints: list[str], body: str) -> dict[str, Any]:
        return {
            "admin": {"address": f"127.0.0.1:{admin}"},
            "routes": [{"respond": {"body": body}}],
            "clusters": {"api": {"endpoints": endpoints}},
            "dns": {
                "listen": [f"127.0.0.1:{dns_port}"],
                "services": {"domain": "service.internal", "ttl": 1},
            },
            "access_log": {"enabled": False},
        }

    import dns.exception
    import dns.message
    import dns.query

    def answers() -> list[str] | None:
        query = dns.message.make_query("_http._tcp.api.service.internal", "SRV")
        try:
            reply = dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=0.5)
        except (dns.exception.Timeout, OSError):
            return None  # not answering (yet): the caller's deadline decides
        return sorted(str(r.port) for rrset in reply.answer for r in rrset)

    edge = Edge(tmp_path, config([f"127.0.0.1:{first}"], "a"), workers=1)
    main = {"name": "main", "address": f"127.0.0.1:{edge.port}"}
    with edge:
        wait_for(lambda: answers() == [str(first)], "the first answer")
        endpoints = [f"127.0.0.1:{first}", f"127.0.0.1:{second}"]
        write_config(edge, {**config(endpoints, "b"), "listeners": [main]})
        assert reload(edge).returncode == 0
        wait_for(lambda: answers() == sorted([str(first), str(second)]), "the new endpoint")
        write_config(edge, {**config([f"127.0.0.1:{second}"], "c"), "listeners": [main]})
        assert reload(edge).returncode == 0
        wait_for(lambda: answers() == [str(second)], "the endpoint removed")
        wait_for(lambda: get(edge.port, "/") == (200, b"c"), "the new route")
        # a DNS address another process holds: refused before anything restarts
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            busy = taken.getsockname()[1]
            bad = config([f"127.0.0.1:{second}"], "d")
            bad["dns"]["listen"] = [f"127.0.0.1:{busy}"]
            write_config(edge, {**bad, "listeners": [main]})
            result = reload(edge)
            assert result.returncode == 2, result
            assert f"dns: 127.0.0.1:{busy} (UDP) is already served" in result.stderr
        assert answers() == [str(second)]
