"""What every serving process of backhaul does the same way: its event loop (uvloop where
installed) and dying with its supervisor."""

from __future__ import annotations

import os
import signal
from typing import Any

__all__ = ["die_with_parent", "new_event_loop"]


def new_event_loop() -> Any:
    """A uvloop event loop (asyncio's on a platform without uvloop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        import asyncio

        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def die_with_parent(parent: int) -> None:
    """Ask the kernel to send this process SIGTERM (so it drains and exits) when the
    supervisor ``parent`` dies, however it dies: no worker outlives its supervisor."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(0)
