"""Waiting on conditions instead of sleeping: the edge tests' synchronisation helpers.

Every wait polls a condition with a deadline and fails saying what it waited for, so a test
never assumes that some time was enough for something to happen (a busy machine makes any
such guess wrong), and never asserts how long something took.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.edge.harness import RawUpstream

T = TypeVar("T")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def wait_until(
    condition: Callable[[], T], what: str, timeout: float = 10.0, every: float = 0.02
) -> T:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(every)


def log_count(path: Path, text: str) -> int:
    return path.read_text().count(text) if path.exists() else 0


def wait_log(path: Path, text: str, count: int = 1, timeout: float = 10.0) -> None:
    """Wait until ``text`` appears ``count`` times in the log file at ``path``."""
    wait_until(lambda: log_count(path, text) >= count, f"{count}x {text!r} in {path.name}", timeout)


def scrape(port: int) -> Samples:
    """The admin listener's /metrics, parsed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_endpoint_state(admin_port: int, cluster: str, endpoint: str, state: str) -> None:
    """Wait until every worker sees ``endpoint`` in ``state`` (the health gauge is the share
    of workers that do)."""

    def agreed() -> bool:
        samples = scrape(admin_port)
        labels = {"cluster": cluster, "endpoint": endpoint, "state": state}
        return metric(samples, "backhaul_endpoint_health", **labels) == 1

    wait_until(agreed, f"every worker to see {endpoint} {state}")


class HeldUpstream:
    """A raw upstream that answers ``{"upstream": PORT}`` as JSON and holds requests for
    ``/slow...`` until :meth:`release`, counting them: a test knows when they are in flight
    instead of guessing it from elapsed time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.held = 0
        self.raw = RawUpstream(self._respond)

    @property
    def port(self) -> int:
        return self.raw.port

    @property
    def address(self) -> str:
        return self.raw.address

    def _respond(self, request: bytes) -> bytes:
        if b" /slow" in request.split(b"\r\n", 1)[0]:
            with self._lock:
                self.held += 1
            self._released.wait(30)
        body = json.dumps({"upstream": self.raw.port}).encode()
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode() + body

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> HeldUpstream:
        self.raw.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.raw.__exit__()
