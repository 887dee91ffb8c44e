"""Services that run next to the edge as children of its supervisor (the DHCP server).

``backhaul serve`` validates the whole config, then hands each service section to the
supervisor as JSON in a memory file (:func:`handoff`); the supervisor starts each
:class:`Sidecar` as ``python -m MODULE --config-fd FD [--metrics-file PATH]``, which
validates its section again and serves. A sidecar that exits is restarted, at most
:data:`RESTART_LIMIT` times a minute; on shutdown it gets SIGTERM with the workers, and it
dies with the supervisor however that dies (the supervisor's ``in_child`` sets that up).

Its metrics reach the edge's admin listener through a file it rewrites every second
(:mod:`backhaul.state.extra_metrics`), which the workers' ``/metrics`` append.

Kept small and free of pydantic and asyncio: the supervisor imports it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

TYPE_CHECKING = False  # without importing typing: the supervisor imports this module (RSS)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["RESTART_LIMIT", "Sidecar", "dhcp_section", "dhcp_spec", "handoff"]

RESTART_LIMIT = 5  # exits within a minute before the supervisor stops restarting a sidecar


def handoff(config: Any) -> list[str]:
    """The supervisor's arguments for the services ``config`` has (``--sidecar`` each):
    the DHCP section, as JSON in an inheritable memory file."""
    section = dhcp_section(config)
    return [] if section is None else ["--sidecar", dhcp_spec(*section)]


def dhcp_section(config: Any) -> tuple[bytes, str] | None:
    """The DHCP section of a validated ``config`` as JSON, and its metrics file; None
    without one."""
    dhcp = getattr(config, "dhcp", None)
    if dhcp is None:
        return None
    metrics = os.path.join(dhcp.state_dir, "dhcp-metrics.prom")
    import json  # here: the supervisor imports this module, `serve` calls this

    return json.dumps(dhcp.model_dump(mode="json")).encode(), metrics


def dhcp_spec(section: bytes, metrics: str) -> str:
    """A :class:`Sidecar` spec for the DHCP service: ``section`` in an inheritable memory
    file (the supervisor makes a new one when a reload changes the section)."""
    fd = os.memfd_create("backhaul-dhcp", 0)  # inheritable across exec
    os.write(fd, section)
    return f"dhcp,backhaul.services.dhcp,{fd},{metrics}"


class Sidecar:
    """One service process: ``name``, its module, the fd of its config, its metrics file."""

    def __init__(self, spec: str, in_child: Callable[[int], None]) -> None:
        """``spec``: what :func:`handoff` wrote; ``in_child(parent_pid)`` runs in the forked
        child before it execs (the supervisor ties the child's life to its own there)."""
        self.in_child = in_child
        name, module, fd, metrics = spec.split(",", 3)
        self.name, self.module, self.fd, self.metrics = name, module, int(fd), metrics
        self.pid: int | None = None
        self.exits: list[float] = []
        from backhaul.state import extra_metrics

        extra_metrics.PATHS.append(metrics)  # before the workers fork: they add it

    def start(self) -> None:
        os.lseek(self.fd, 0, os.SEEK_SET)
        argv = [sys.executable, "-m", self.module, "--config-fd", str(self.fd)]
        argv += ["--metrics-file", self.metrics]
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self.in_child(parent)
            os.execv(sys.executable, argv)
        self.pid = pid

    def exited(self, pid: int, status: int, restart: bool) -> bool:
        """True if ``pid`` was this sidecar's; restarts it when ``restart`` (within limits)."""
        if pid != self.pid:
            return False
        self.pid = None
        now = time.monotonic()
        self.exits = [t for t in self.exits if now - t < 60.0] + [now]
        code = os.waitstatus_to_exitcode(status)
        if not restart:
            return True
        if len(self.exits) > RESTART_LIMIT:
            print(f"backhaul: {self.name} keeps exiting ({code}); not restarting", file=sys.stderr)
            return True
        print(f"backhaul: {self.name} exited ({code}); restarting", file=sys.stderr, flush=True)
        self.start()
        return True
