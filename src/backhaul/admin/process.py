"""The edge's control process: the admin API, the machine-wide health checks and DNS
discovery (``endpoints_from``: resolved here once, published to the workers).

One per edge, forked by the supervisor like the DNS processes, next to (not inside) the
workers: the workers import no admin code and no pydantic. The supervisor binds the admin
address once, without ``SO_REUSEPORT`` (a second edge on the same admin port is refused with
"address already in use"), and hands the socket over; the shared state the control process
reads and writes (the metrics store, the endpoint map, the reload status) is mapped before
the fork.

The supervisor's side is :class:`ControlProcess`: ``start()``, ``reaped(pid, status,
restart)`` from its reaping loop, ``stop()`` at shutdown, and ``restart(settings, ...)`` on a
config reload (the new config's shared maps, the admin socket kept unless given a new one).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time

from backhaul.errors import ConfigError

TYPE_CHECKING = False  # without importing typing: the supervisor imports this module (RSS)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "LAUNCHER",
    "PROCESS_NAME",
    "ControlLauncher",
    "ControlProcess",
    "admin_token",
    "checked_clusters",
    "control_needed",
    "run_control",
]


GRACE = 5.0
"""Seconds a stopping control process gives the requests it has begun before it closes."""

PROCESS_NAME = "backhaul-ctl"
"""The control process's name in ``ps`` and ``/proc/PID/comm`` (workers keep python's)."""


def _name_process(name: str) -> None:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def checked_clusters(settings: Any) -> list[tuple[str, Any]]:
    """``(name, cluster)`` of the clusters whose config endpoints the control process
    checks: those with ``health_checks`` and at least one endpoint address."""
    return [
        (name, cluster)
        for name, cluster in settings.clusters.items()
        if getattr(cluster, "health_checks", None) is not None
        and any(ep.address is not None for ep in cluster.endpoints)
    ]


def control_needed(settings: Any) -> bool:
    """Whether an edge with ``settings`` runs a control process: it has an admin listener,
    endpoints with active health checks, or clusters whose endpoints come from DNS (the
    workers take those from the control process alone). (The supervisor asks: this module
    imports nothing heavy until the process runs.)"""
    return (
        getattr(settings, "admin", None) is not None
        or bool(checked_clusters(settings))
        or any(
            getattr(cluster, "endpoints_from", None) is not None
            for cluster in settings.clusters.values()
        )
    )


def admin_token(admin: Any) -> bytes | None:
    """The bearer token ``admin`` names (``token_file`` or ``token_env``), or None.
    Raises :class:`ConfigError` when it cannot be read or is empty."""
    token_file = getattr(admin, "token_file", None)
    token_env = getattr(admin, "token_env", None)
    if token_file is not None:
        try:
            with open(token_file, "rb") as handle:
                raw = handle.read(4097)
        except OSError as exc:
            raise ConfigError(
                "<admin>",
                [("admin.token_file", f"cannot read {token_file}: {exc.strerror}")],
            ) from exc
        where = ("admin.token_file", f"{token_file} holds no token")
    elif token_env is not None:
        raw = os.environb.get(token_env.encode(), b"")
        where = ("admin.token_env", f"the environment variable {token_env} is unset or empty")
    else:
        return None
    token = raw.strip()
    if not token or len(token) > 4096:
        raise ConfigError("<admin>", [where])
    return token


def run_control(
    settings: Any,
    sock: socket.socket | None,
    control: Any,
    metrics: Any,
    *,
    supervisor_pid: int,
    started_unix: float,
    reload_status: Any = None,
    config_file: str | None = None,
) -> int:
    """Body of the control process: run the health checks and DNS discovery, and serve the
    admin API on ``sock`` (if any) until SIGTERM."""
    import asyncio

    from backhaul.admin.api import AdminState, ControlApi
    from backhaul.admin.checker import HealthChecker
    from backhaul.admin.server import serve_admin
    from backhaul.services.lifecycle import new_event_loop

    loop = new_event_loop()
    asyncio.set_event_loop(loop)

    async def main() -> None:
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        checker = HealthChecker(settings, control)
        server = None
        try:
            checker.start()
            admin = getattr(settings, "admin", None)
            if sock is not None and admin is not None:
                state = AdminState(
                    settings,
                    control,
                    metrics,
                    supervisor_pid=supervisor_pid,
                    started_unix=started_unix,
                    reload_status=reload_status,
                    token=admin_token(admin),
                    config_file=config_file,
                )
                app = ControlApi(
                    state, admin.metrics_path, tuple(getattr(admin, "public", ("healthz",)))
                )
                # A config body for POST /config/validate may be large.
                server = await serve_admin(sock, app, max_request_bytes=4 << 20)
                where = sock.getsockname()
                print(
                    f"backhaul: control {os.getpid()}: admin API on"
                    f" http://{where[0]}:{where[1]} (/docs)",
                    file=sys.stderr,
                    flush=True,
                )
            await stop.wait()
            # Checks first: a reload's new control process checks the same endpoints now.
            await checker.aclose()
            if server is not None:  # stop accepting; answer what has begun
                await server.wait_idle(GRACE)
        finally:
            if server is not None:
                await server.aclose()
            await checker.aclose()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0


class ControlProcess:
    """The control process of one supervisor (forked, restarted, stopped)."""

    RESTART_LIMIT = 5
    RESTART_WINDOW = 10.0

    def __init__(
        self,
        settings: Any,
        admin_socket: socket.socket | None,
        control: Any,
        metrics: Any,
        *,
        started_unix: float | None = None,
        reload_status: Any = None,
        config_file: str | None = None,
    ) -> None:
        """``admin_socket``: the admin address, bound by the supervisor (None without an
        ``admin`` section); ``control``: the endpoint map; ``metrics``: the shared counters;
        ``reload_status``: the supervisor's reload status, if it reloads; ``config_file``:
        the file the edge runs (relative paths in a candidate config are read next to it)."""
        self.settings = settings
        self.admin_socket = admin_socket
        self.control = control
        self.metrics = metrics
        self.reload_status = reload_status
        self.config_file = config_file
        self.started_unix = time.time() if started_unix is None else started_unix
        self.pid: int | None = None
        self.retiring: set[int] = set()  # replaced by a reload, finishing their requests
        self.crashes: list[float] = []

    def start(self) -> int:
        """Fork the control process; returns its pid."""
        from backhaul.services.lifecycle import fork_child

        parent = os.getpid()

        def body() -> int:
            _name_process(PROCESS_NAME)  # at once: ps and the tests tell it from workers
            return run_control(
                self.settings,
                self.admin_socket,
                self.control,
                self.metrics,
                supervisor_pid=parent,
                started_unix=self.started_unix,
                reload_status=self.reload_status,
                config_file=self.config_file,
            )

        self.pid = fork_child(body, "control process")
        return self.pid

    def reaped(self, pid: int, status: int, restart: bool) -> bool:
        """Account for a dead child; True if it was a control process (the current one is
        restarted when ``restart``, unless it keeps dying)."""
        if pid in self.retiring:
            self.retiring.discard(pid)
            return True
        if pid != self.pid:
            return False
        self.pid = None
        if restart:
            now = time.monotonic()
            self.crashes = [t for t in self.crashes if now - t < self.RESTART_WINDOW]
            self.crashes.append(now)
            code = os.waitstatus_to_exitcode(status)
            what = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
            if len(self.crashes) > self.RESTART_LIMIT:
                print(
                    f"backhaul: the control process keeps dying ({what}); not restarting:"
                    " no admin API, no active health checks, and no DNS discovery (the"
                    " workers keep the endpoints found so far)",
                    file=sys.stderr,
                    flush=True,
                )
                return True
            new = self.start()
            print(
                f"backhaul: control process {pid} {what}; started {new}",
                file=sys.stderr,
                flush=True,
            )
        return True

    def stop(self, deadline: float = 8.0) -> None:
        """SIGTERM the control processes (they answer the requests they have begun, within
        :data:`GRACE` seconds), wait up to ``deadline`` seconds, then SIGKILL."""
        pids = {p for p in (self.pid, *self.retiring) if p is not None}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + deadline
        while pids and time.monotonic() < end:
            for pid in list(pids):  # only our own: the caller reaps its other children
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    pids.discard(pid)
            time.sleep(0.02)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pid = None
        self.retiring.clear()

    def restart(
        self,
        settings: Any,
        control: Any,
        metrics: Any,
        admin_socket: socket.socket | None,
    ) -> int:
        """A reload: start a control process on ``settings`` with the new config's
        ``control`` and ``metrics`` maps and ``admin_socket`` (the current one when the
        address did not change), then SIGTERM the old one, which stops accepting, answers
        the requests it has begun (a ``POST /config/reload`` waiting for this very reload)
        and exits: the reaping loop hands its pid to :meth:`reaped`."""
        old = self.pid
        self.settings = settings
        self.control = control
        self.metrics = metrics
        self.admin_socket = admin_socket
        self.pid = None
        new = self.start()
        if old is not None:
            self.retiring.add(old)
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGTERM)
        return new


class ControlLauncher:
    """What the edge's supervisor is handed to run a control process
    (:class:`backhaul.edge.supervisor.ControlLauncher`)."""

    def needed(self, config: Any) -> bool:
        return control_needed(config)

    def create(
        self,
        config: Any,
        admin_socket: socket.socket | None,
        control: Any,
        metrics: Any,
        reload_status: Any,
        config_file: str | None = None,
    ) -> ControlProcess:
        return ControlProcess(
            config,
            admin_socket,
            control,
            metrics,
            reload_status=reload_status,
            config_file=config_file,
        )


LAUNCHER = ControlLauncher()
