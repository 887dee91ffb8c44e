"""Fixtures for the DHCP tests: a veth segment between two namespaces, and the server.

Every segment's namespaces are named ``bhd<pid>x<n>-srv`` / ``-cli`` (unique per run and per
test) and torn down after the test; only they carry test traffic. Segments left by a killed
run (its pid gone) are removed first.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backhaul.tools.lab import Lab, Segment, lab_unavailable_reason

BACKHAUL = str(Path(sys.executable).with_name("backhaul"))
_numbers = itertools.count()

needs_netns = pytest.mark.skipif(
    lab_unavailable_reason() is not None, reason=f"no namespaces: {lab_unavailable_reason()}"
)


def _remove_stale() -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name, pid in set(re.findall(r"^(bhd(\d+)x\d+)-(?:srv|cli)", listed, re.M)):
        if int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            Segment(name).down()
    for name, pid in set(re.findall(r"^(bhr(\d+))-(?:client|r1|r2|server)", listed, re.M)):
        if int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            Lab(name).down(missing_ok=True)


class Server:
    """A ``backhaul`` process in the server namespace; its stderr lines are collected."""

    def __init__(self, segment: Segment | Lab, argv: list[str], role: str = "server") -> None:
        self.proc = segment.popen(
            role,
            [BACKHAUL, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 20.0, count: int = 1) -> str:
        """The ``count``-th output line containing ``text``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.lines if text in line]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line with {text!r}; output:\n" + self.output())
                self._changed.wait(min(left, 0.5))

    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=20)
        self._reader.join(timeout=10)
        return code


@pytest.fixture
def make_segment() -> Iterator[Callable[..., Segment]]:
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no namespaces: {reason}")
    _remove_stale()
    made: list[Segment] = []

    def make(**kwargs: Any) -> Segment:
        segment = Segment(f"bhd{os.getpid()}x{next(_numbers)}", **kwargs)
        made.append(segment)
        return segment.up()

    try:
        yield make
    finally:
        for segment in made:
            segment.down()


@pytest.fixture
def routed_lab() -> Iterator[Lab]:
    """client - router1 - router2 - server (:class:`backhaul.tools.lab.Lab`), for relays."""
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no namespaces: {reason}")
    _remove_stale()
    lab = Lab(f"bhr{os.getpid()}")
    with lab:
        yield lab


def quick_server(
    segment: Segment, state: Path, *extra: str, pool: str = "10.0.0.100-10.0.0.199"
) -> Server:
    server = Server(
        segment,
        [
            *("dhcp", "serve", "--interface", "srv0", "--pool", pool),
            *("--router", "10.0.0.1", "--dns", "10.0.0.53", "--state", str(state)),
            *extra,
        ],
    )
    server.wait_for("lease store")
    return server
