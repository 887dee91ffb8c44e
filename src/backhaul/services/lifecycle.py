"""What every serving process of backhaul does the same way: its event loop (uvloop where
installed), being forked by its supervisor, and dying with it."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

TYPE_CHECKING = False  # without importing typing: the supervisor imports this module (RSS)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["die_with_parent", "fork_child", "new_event_loop", "watch_parent"]


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


def watch_parent(parent: int) -> int | None:
    """A pidfd of the supervisor ``parent``, readable once it exits, however it exits: the
    child's event loop watches it (``loop.add_reader``) to drain and exit then, as
    :func:`die_with_parent` makes it do, without loading ctypes for ``prctl`` (0.4 MB of RSS
    in every worker). Where pidfds are missing (Linux before 5.3) :func:`die_with_parent`
    takes over and None is returned. Exits at once when the supervisor died already."""
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfd here, or the parent is gone (ESRCH)
        die_with_parent(parent)
        return None
    if os.getppid() != parent:  # the supervisor died before the pidfd was opened
        os._exit(0)
    return fd


def fork_child(body: Callable[[], int], what: str) -> int:
    """Fork a child of this supervisor that runs ``body()`` and exits with what it returns;
    returns the child's pid. In the child: SIGTERM at its default (``body`` sets its own),
    SIGINT and SIGHUP ignored (the supervisor's to handle), death with the supervisor; an
    exception is one line ``backhaul: <what> <pid> failed: ...`` and exit status 1."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    die_with_parent(parent)
    code = 1
    try:
        code = body()
    except BaseException as exc:
        print(f"backhaul: {what} {os.getpid()} failed: {exc}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
