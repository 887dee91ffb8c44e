"""Two network namespaces joined by a veth pair, made by the tests that need layer 2 or an
nftables rule of their own (names unique to this pytest process, always removed).

    a (192.0.2.1/24, dev <name>a0) ── veth ── b (192.0.2.2/24, dev <name>b0)
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from backhaul.tools.lab import lab_unavailable_reason


@dataclass
class Pair:
    name: str

    @property
    def a(self) -> str:
        return f"{self.name}a"

    @property
    def b(self) -> str:
        return f"{self.name}b"

    @property
    def dev_a(self) -> str:
        return f"{self.name}a0"

    @property
    def dev_b(self) -> str:
        return f"{self.name}b0"

    address_a = "192.0.2.1"
    address_b = "192.0.2.2"

    def command(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def run(
        self, ns: str, argv: Sequence[str], **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(ns, argv), capture_output=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True, timeout=20)


def _down(pair: Pair) -> None:
    for ns in (pair.a, pair.b):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def make_pair() -> Iterator[Pair]:
    """Build the pair (skipping the test where namespaces cannot be made), yield it, remove
    it; wrap it in a fixture where it is needed."""
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no network namespaces: {reason}")
    made = Pair(f"bhq{os.getpid()}")
    _down(made)
    try:
        _ip("netns", "add", made.a)
        _ip("netns", "add", made.b)
        _ip("link", "add", made.dev_a, "netns", made.a, "type", "veth", "peer", "name", made.dev_b,
            "netns", made.b)  # fmt: skip
        for ns, dev, address in (
            (made.a, made.dev_a, made.address_a),
            (made.b, made.dev_b, made.address_b),
        ):
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        _down(made)
        pytest.skip(f"cannot build the namespace pair: {exc.stderr.strip()}")
    try:
        yield made
    finally:
        _down(made)
