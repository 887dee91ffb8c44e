"""The three HTTP tools against the edge (``backhaul serve``) in front of the test origin:
what the tools count is what the origin behind the edge counts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import BACKHAUL
from .origins import DOC, Origin


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with Origin() as served:
        yield served


@pytest.fixture(scope="module")
def edge(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``backhaul serve`` proxying everything to the origin; yields its port."""
    tmp = tmp_path_factory.mktemp("edge")
    port = _free_port()
    config = {
        "listeners": [{"name": "main", "address": f"127.0.0.1:{port}"}],
        "access_log": {"path": str(tmp / "access.log")},
        "routes": [{"name": "all", "proxy": {"cluster": "app"}}],
        "clusters": {"app": {"endpoints": [f"127.0.0.1:{origin.port}"]}},
    }
    path = tmp / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    with (tmp / "edge.err").open("wb") as err:
        proc = subprocess.Popen(
            [BACKHAUL, "serve", "-c", str(path), "--workers", "1"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the edge exited: {(tmp / 'edge.err').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the edge is not listening after 20 s")
                time.sleep(0.05)
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BACKHAUL, *args], capture_output=True, text=True, timeout=60)


def test_bench_counts_through_the_edge_equal_the_origins(edge: int, origin: Origin) -> None:
    before = origin.by_path.get("/bytes/64", 0)
    done = run("bench", "--json", "-n", "400", "-c", "4", f"http://127.0.0.1:{edge}/bytes/64")
    doc = json.loads(done.stdout)
    assert doc["requests"] == 400 and doc["status_codes"] == {"200": 400}
    assert origin.by_path["/bytes/64"] - before == 400


def test_curl_phases_through_the_edge(edge: int) -> None:
    done = run("curl", "--report-json", f"http://127.0.0.1:{edge}/json")
    doc = json.loads(done.stdout)
    (hop,) = doc["hops"]
    assert hop["status"] == 200 and json.loads(doc["body"]) == DOC
    assert hop["remote"]["port"] == edge
    assert sum(hop["phases"].values()) == pytest.approx(hop["times"]["total"], abs=1e-5)


def test_api_file_through_the_edge(edge: int, tmp_path: Path) -> None:
    path = tmp_path / "edge.hurl"
    path.write_text(
        f"GET http://127.0.0.1:{edge}/json\nHTTP 200\n[Captures]\nsku: jsonpath "
        '"$.items[0].sku"\n\n'
        f"GET http://127.0.0.1:{edge}/echo?sku={{{{sku}}}}\nHTTP 200\n[Asserts]\n"
        'jsonpath "$.target" == "/echo?sku=a1"\n'
    )
    done = run("api", "run", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
