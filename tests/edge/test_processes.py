"""Processes: the supervisor, its workers, graceful SIGTERM, restarts, and the serve modes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.edge.harness import (
    BACKHAUL,
    Edge,
    Upstream,
    exchange,
    free_port,
    parse_responses,
    wait_port,
)
from tests.edge.waiting import HeldUpstream, wait_log, wait_until


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    with HeldUpstream() as held:
        config = {
            "routes": [{"name": "all", "proxy": {"cluster": "app"}}],
            "clusters": {"app": {"endpoints": [held.address]}},
        }
        edge = Edge(tmp_path, config, workers=2).start()
        results: list[int] = []
        errors: list[str] = []
        n = 24

        def slow_request(i: int) -> None:
            try:
                with socket.create_connection(("127.0.0.1", edge.port), timeout=20) as s:
                    s.sendall(f"GET /slow/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    data = b""
                    while b"\r\n\r\n" not in data or not parse_ok(data):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    results.append(parse_responses(data)[0][0])
            except Exception as exc:  # the test counts failures, whatever they are
                errors.append(repr(exc))

        threads = [threading.Thread(target=slow_request, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        # every request is in flight, held by the upstream
        wait_until(lambda: held.held == n, f"{n} requests held upstream")
        assert edge.proc is not None
        edge.proc.send_signal(signal.SIGTERM)
        # Once draining, the listener no longer accepts new connections.
        wait_until(lambda: refused(edge.port), "the listener to close")
        assert results == [] and errors == []  # nothing was cut short by the signal
        held.release()
        for t in threads:
            t.join(15)
        code = edge.stop()
    assert errors == []
    assert results == [200] * n
    assert code == 0


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def parse_ok(data: bytes) -> bool:
    try:
        return len(parse_responses(data)) == 1
    except (ValueError, IndexError):
        return False


def test_dead_worker_is_restarted(upstream: Upstream, tmp_path: Path) -> None:
    config = {
        "routes": [{"name": "all", "proxy": {"cluster": "app"}}],
        "clusters": {"app": {"endpoints": [upstream.address]}},
    }
    with Edge(tmp_path, config, workers=2) as edge:
        before = edge.worker_pids()
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 5
        after = before
        while time.monotonic() < deadline:
            after = edge.worker_pids()
            if len(after) == 2 and before[0] not in after:
                break
            time.sleep(0.05)
        assert len(after) == 2 and before[0] not in after
        wait_log(edge.stderr_path, f"worker {before[0]} was killed by SIGKILL; started worker")
        for _ in range(10):
            raw = exchange(
                edge.port, b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert raw.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("child", "expected"),
    [
        ("os.kill(os.getpid(), signal.SIGKILL)", "was killed by SIGKILL"),
        ("os.kill(os.getpid(), signal.SIGTERM)", "was killed by SIGTERM"),
        ("sys.exit(3)", "exited with status 3"),
        ("pass", "exited with status 0"),
    ],
)
def test_exit_statuses_in_words(child: str, expected: str) -> None:
    from backhaul.edge.supervisor import describe_exit

    proc = subprocess.Popen(
        [sys.executable, "-c", f"import os, signal, sys; {child}"], start_new_session=True
    )
    _, status = os.waitpid(proc.pid, 0)
    proc.returncode = 0  # reaped here, not by Popen
    assert describe_exit(status) == expected


def run_serve(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    err = tmp_path / f"serve-{time.monotonic_ns()}.err"
    with err.open("wb") as stderr:
        return subprocess.Popen(
            [*BACKHAUL, "serve", *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(5)


def test_quick_mode_proxies_to_the_given_upstream(upstream: Upstream, tmp_path: Path) -> None:
    port = free_port()
    proc = run_serve(
        tmp_path, "--to", f"http://{upstream.address}", "--listen", f"127.0.0.1:{port}", "-w", "1"
    )
    try:
        wait_port(port, proc=proc)
        raw = exchange(port, b"GET /quick HTTP/1.1\r\nHost: q\r\nConnection: close\r\n\r\n")
        status, _, body = parse_responses(raw)[0]
        assert status == 200
        assert b'"/quick"' in body
    finally:
        assert stop(proc) == 0


def test_embedded_default_serves_the_demo_cluster(tmp_path: Path) -> None:
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("127.0.0.1", 8080))
    except OSError:
        pytest.skip("port 8080 is taken on this machine")
    finally:
        probe.close()
    proc = run_serve(tmp_path, "-w", "1")
    try:
        wait_port(8080, proc=proc)
        seen = set()
        for _ in range(4):
            raw = exchange(
                8080, b"GET /demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            status, _, body = parse_responses(raw)[0]
            assert status == 200
            assert b"request: GET /demo HTTP/1.1" in body
            seen.add(body.split(b"\n")[0])
        # Round robin over the two demo endpoints.
        assert seen == {b"demo endpoint demo-1 answered", b"demo endpoint demo-2 answered"}
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (
            "listeners: [{name: main, address: '127.0.0.1:99999'}]\n"
            "routes: [{name: r, respond: {}}]\n",
            "listeners[0].address",
        ),
        (
            "listeners: [{name: main, address: '127.0.0.1:8080'}]\n"
            "routes: [{name: r, proxy: {cluster: nope}}]\nclusters: {}\n",
            "routes[0].proxy.cluster",
        ),
    ],
)
def test_bad_config_never_starts(tmp_path: Path, text: str, path: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = subprocess.run(
        [*BACKHAUL, "serve", "-c", str(bad)], capture_output=True, timeout=20, text=True
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "bad.yaml" in out.stderr
    assert path in out.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        out = subprocess.run(
            [*BACKHAUL, "serve", "--to", "127.0.0.1:1", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            timeout=20,
            text=True,
        )
    finally:
        holder.close()
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert f"127.0.0.1:{port} is already in use (another server listens on that port)" in (
        out.stderr
    )


def test_an_address_not_on_this_machine_is_named_so() -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): no interface here has it; bind() fails, no packet
    out = subprocess.run(
        [*BACKHAUL, "serve", "--to", "127.0.0.1:1", "--listen", f"192.0.2.1:{free_port()}"],
        capture_output=True,
        timeout=20,
        text=True,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "192.0.2.1 is not an address of this machine" in out.stderr
    assert "another server" not in out.stderr


def test_workers_do_not_outlive_a_killed_supervisor(upstream: Upstream, tmp_path: Path) -> None:
    config = {
        "routes": [{"name": "all", "proxy": {"cluster": "app"}}],
        "clusters": {"app": {"endpoints": [upstream.address]}},
    }
    edge = Edge(tmp_path, config, workers=2).start()
    workers = edge.worker_pids()
    assert edge.proc is not None
    edge.proc.kill()  # SIGKILL: the supervisor cannot pass anything on
    edge.proc.wait(5)
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        time.sleep(0.05)
    edge.stop()
    assert alive == []


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_too_many_workers_is_a_usage_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [*BACKHAUL, "serve", "--to", "127.0.0.1:1", "--workers", "100000"],
        capture_output=True,
        timeout=20,
        text=True,
    )
    assert out.returncode == 2
    assert "at most" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--listen", "127.0.0.1:18085"], "--listen goes with --to"),
        (
            ["--to", "127.0.0.1:1", "--access-log", "/nonexistent/dir/x.log"],
            "directory does not exist",
        ),
        (["--to", "ftp://127.0.0.1:21"], "--to"),
    ],
)
def test_serve_usage_errors_are_one_clear_line(args: list[str], expected: str) -> None:
    out = subprocess.run([*BACKHAUL, "serve", *args], capture_output=True, timeout=20, text=True)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert "Traceback" not in out.stderr


def test_second_edge_on_a_served_port_is_refused(upstream: Upstream, tmp_path: Path) -> None:
    # The supervisor owns each listening socket (its workers inherit it), without
    # SO_REUSEPORT: another process cannot silently join the port and split its traffic.
    config = {
        "routes": [{"name": "all", "proxy": {"cluster": "app"}}],
        "clusters": {"app": {"endpoints": [upstream.address]}},
    }
    with Edge(tmp_path, config, workers=2) as first:
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        listener = {"name": "main", "address": f"127.0.0.1:{first.port}"}
        second = Edge(second_dir, {**config, "listeners": [listener]})
        proc = subprocess.run(
            [*BACKHAUL, "serve", "-c", str(second.config_path)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode != 0
        assert b"already in use" in proc.stderr, proc.stderr
        assert b"Traceback" not in proc.stderr
        raw = exchange(first.port, b"GET /still HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200")
