"""Bodies stream with backpressure: 1 GiB up and down keeps the worker's RSS bounded."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.edge.harness import Edge, Upstream

GIB = 1 << 30
RSS_BUDGET = 64 << 20


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RssWatch:
    """Samples a process's RSS every 50 ms while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.05)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


@pytest.fixture(scope="module")
def big_edge(upstream: Upstream, edge_tmp: Path):  # type: ignore[no-untyped-def]
    config = {
        "access_log": {"enabled": False},
        "routes": [{"name": "all", "proxy": {"cluster": "app"}}],
        "clusters": {"app": {"endpoints": [upstream.address]}},
    }
    with Edge(edge_tmp, config, listener={"limits": {"body": "2GiB"}}) as e:
        yield e


def recv_head(s: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "closed before the head"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


@pytest.mark.slow
def test_one_gib_download_keeps_rss_bounded(big_edge: Edge) -> None:
    pid = big_edge.worker_pids()[0]
    idle = rss(pid)
    with RssWatch(pid) as watch, socket.create_connection(("127.0.0.1", big_edge.port)) as s:
        s.settimeout(30)
        s.sendall(f"GET /bytes/{GIB} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head, rest = recv_head(s)
        assert head.startswith(b"HTTP/1.1 200")
        got = len(rest)
        buf = bytearray(1 << 20)
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            got += n
    assert got == GIB
    assert watch.peak - idle < RSS_BUDGET, f"RSS grew by {(watch.peak - idle) >> 20} MiB"


@pytest.mark.slow
def test_one_gib_upload_keeps_rss_bounded(big_edge: Edge) -> None:
    pid = big_edge.worker_pids()[0]
    idle = rss(pid)
    block = b"u" * (1 << 20)
    digest = hashlib.sha256()
    with RssWatch(pid) as watch, socket.create_connection(("127.0.0.1", big_edge.port)) as s:
        s.settimeout(30)
        s.sendall(
            f"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        for _ in range(GIB // len(block)):
            s.sendall(block)
            digest.update(block)
        head, rest = recv_head(s)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    assert head.startswith(b"HTTP/1.1 200")
    info = json.loads(rest)
    assert info["bytes"] == GIB
    assert info["sha256"] == digest.hexdigest()
    assert watch.peak - idle < RSS_BUDGET, f"RSS grew by {(watch.peak - idle) >> 20} MiB"
