"""Metrics text that a sibling process publishes for the admin listener to serve.

The DHCP service runs in its own process next to the edge's workers (see
:mod:`backhaul.edge.supervisor`); the admin listener is served by the edge's control process.
The service writes its Prometheus text to a file every second (:func:`publish`: a temporary
file renamed over the old one, so a reader sees a whole text or the previous one), and the
admin ``/metrics`` appends the fresh ones (:func:`collect`). The supervisor lists the files in
:data:`PATHS` before it forks its children. A file not rewritten for :data:`STALE_AFTER`
seconds belongs to a process that is gone and is left out.
"""

from __future__ import annotations

import contextlib
import os
import time

__all__ = ["MAX_BYTES", "PATHS", "STALE_AFTER", "collect", "publish"]

PATHS: list[str] = []
MAX_BYTES = 1 << 20
STALE_AFTER = 10.0


def publish(path: str, text: bytes) -> None:
    """Replace ``path``'s content by ``text`` atomically (no fsync: metrics need none)."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(text[:MAX_BYTES])
    os.replace(tmp, path)


def collect(now: float | None = None) -> bytes:
    """The fresh texts of :data:`PATHS`, concatenated."""
    now = time.time() if now is None else now
    parts = []
    for path in PATHS:
        with contextlib.suppress(OSError):
            if now - os.stat(path).st_mtime > STALE_AFTER:
                continue
            with open(path, "rb") as handle:
                parts.append(handle.read(MAX_BYTES))
    return b"".join(parts)
