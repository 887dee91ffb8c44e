"""The supervisor: starts N worker processes that share the listeners through SO_REUSEPORT,
restarts a worker that dies, and on SIGTERM/SIGINT lets every worker drain, then exits 0.

``backhaul serve`` validates the config (pydantic), checks that every listener can bind, then
replaces itself (``exec``) with this module's :func:`main`, handing over the config as plain
data (:mod:`backhaul.edge.settings`) through a memory file. The supervisor thus holds no CLI,
no pydantic and no toolbox code, and the workers it forks import only the edge: each process
stays small. The supervisor runs no event loop and no threads, which keeps ``fork`` safe.
Services configured next to the edge (the DHCP server) run as its children too
(:mod:`backhaul.services.sidecar`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

from backhaul.errors import NetworkError, UsageError
from backhaul.net.bind_error import explain_bind_error
from backhaul.services.lifecycle import die_with_parent as _die_with_parent
from backhaul.services.lifecycle import new_event_loop as _new_loop

__all__ = ["describe_exit", "main", "run_worker_process", "serve", "validate_binds"]

_RESTART_WINDOW = 10.0  # seconds
_RESTART_LIMIT = 5  # crashes within the window before the supervisor gives up


def validate_binds(config: Any) -> None:
    """Fail early, in the supervisor, when a listener address cannot be bound."""
    from backhaul.edge.listen import bind_listener_socket

    binds = [(f"listener {lst.name}", lst.address) for lst in config.listeners]
    if getattr(config, "admin", None) is not None:
        binds.append(("admin listener", config.admin.address))
    for what, address in binds:
        try:
            sock = bind_listener_socket(address.host, address.port)
        except socket.gaierror as exc:
            raise NetworkError(f"{what}: cannot resolve {address.host!r}: {exc.strerror}") from exc
        except OSError as exc:
            reason = explain_bind_error(exc.errno, address.host, address.port)
            raise NetworkError(f"{what}: {reason}") from exc
        sock.close()


def run_worker_process(
    config: Any, metrics: Any = None, control: Any = None, sockets: Any = None
) -> int:
    """Body of one worker process: serve until SIGTERM, then drain and return."""
    import asyncio

    from backhaul.edge.worker import Worker

    loop = _new_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()

    def on_term() -> None:
        stop.set()

    async def main() -> None:
        worker = Worker(config, loop, metrics, control, sockets)
        try:
            await worker.start()
            # The supervisor listens before it forks: this line says the worker takes requests.
            sys.stderr.flush()
            os.write(2, f"backhaul: worker {os.getpid()} serving\n".encode())  # one write
            loop.add_signal_handler(signal.SIGTERM, on_term)
            await stop.wait()
            await worker.wait_drained()
        finally:
            await worker.aclose()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0


def max_workers() -> int:
    """More worker processes than this only add memory (8 per CPU, at least 16)."""
    return max(16, 8 * (os.cpu_count() or 1))


class _Supervisor:
    def __init__(self, config: Any, workers: int, sidecars: tuple[str, ...] = ()) -> None:
        self.config = config
        self.size = workers
        from backhaul.services.sidecar import Sidecar

        # services next to the edge (the DHCP server), each its own child process
        self.sidecars = [Sidecar(spec, _die_with_parent) for spec in sidecars]
        self.children: dict[int, float] = {}  # pid -> start time
        self.stopping = False
        self.crashes: list[float] = []
        from backhaul.state.shared_counters import SharedCounters, build_layout

        # One metrics slot per worker, in memory the forked workers share.
        self.metrics = SharedCounters(build_layout(config), workers)
        self.slots: dict[int, int] = {}  # pid -> metrics slot
        from backhaul.state.endpoint_control import EndpointControl, endpoint_labels

        # The operator's drain requests, shared by the workers (see the admin API).
        self.control = EndpointControl(endpoint_labels(config), workers)
        # Each listener's socket, bound once here and inherited by every worker it forks: a
        # restarted worker never opens a window in which connections are refused, and no
        # other process can join the port (no SO_REUSEPORT on it).
        from backhaul.edge.listen import bind_listener_socket

        self.sockets = {
            lst.name: bind_listener_socket(lst.address.host, lst.address.port, reuse_port=False)
            for lst in config.listeners
        }
        from backhaul.edge.tls_supervisor import TlsSupervision

        # TLS hook: the ticket key shared by the workers (mapped before fork), certificate
        # reloads on SIGHUP, renewal of internal-CA certificates. None without TLS.
        self.tls = TlsSupervision.before_fork(config)
        self.dns = None  # the DNS service's processes (backhaul.services.dns), if configured
        if getattr(config, "dns", None) is not None:
            from backhaul.services.dns.process import DnsProcesses

            self.dns = DnsProcesses(config.dns, config.clusters, self.control, self.metrics)
        self.admin = self._control_process(config)  # admin API + health checks, if any

    def _control_process(self, config: Any) -> Any:
        """The control process (backhaul.admin.process), with the admin address bound here
        once (no SO_REUSEPORT: another edge on the same admin port is refused)."""
        from backhaul.admin.process import ControlProcess, control_needed

        if not control_needed(config):
            return None
        admin = getattr(config, "admin", None)
        sock = None
        if admin is not None:
            from backhaul.edge.listen import bind_listener_socket

            sock = bind_listener_socket(admin.address.host, admin.address.port, reuse_port=False)
        # The reload status (when the supervisor keeps one) lets POST /config/reload report.
        status = getattr(self, "reload_status", None)
        return ControlProcess(config, sock, self.control, self.metrics, reload_status=status)

    def spawn(self) -> int:
        # A restarted worker takes the dead one's slot (its counters continue from there).
        slot = min(set(range(self.size)) - set(self.slots.values()))
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # TLS hook: the supervisor's signal
            _die_with_parent(parent)
            code = 1
            try:
                code = run_worker_process(
                    self.config, (self.metrics, slot), self.control, self.sockets
                )
            except BaseException as exc:
                print(f"backhaul: worker {os.getpid()} failed: {exc}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children[pid] = time.monotonic()
        self.slots[pid] = slot
        return pid

    def _sidecar_pids(self) -> list[int]:
        return [s.pid for s in self.sidecars if s.pid is not None]

    def on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def on_reload(self, signum: int, frame: object) -> None:
        """SIGHUP: workers re-read their certificate files (TLS hook)."""
        if self.tls is not None:
            self.tls.request_reload()
            print("backhaul: SIGHUP: reloading certificate files", file=sys.stderr, flush=True)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, self.on_reload)  # TLS hook
        for sidecar in self.sidecars:
            sidecar.start()
        for _ in range(self.size):
            self.spawn()
        if self.dns is not None:
            self.dns.start()
        if self.admin is not None:
            self.admin.start()
        pids = " ".join(str(p) for p in self.children)
        print(f"backhaul: supervisor {os.getpid()}, workers {pids}", file=sys.stderr, flush=True)
        while not self.stopping:
            if self.tls is not None:  # TLS hook: ticket-key rotation, internal renewal
                self.tls.tick(time.monotonic(), datetime.now(UTC))
            self.reap(restart=True)
            if not self.children:
                print("backhaul: no worker left; stopping", file=sys.stderr)
                return 1
            time.sleep(0.1)
        return self.shutdown()

    def reap(self, restart: bool) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.dns is not None and self.dns.reaped(pid, status, restart and not self.stopping):
                continue
            if self.admin is not None and self.admin.reaped(
                pid, status, restart and not self.stopping
            ):
                continue
            if any(s.exited(pid, status, restart and not self.stopping) for s in self.sidecars):
                continue
            self.children.pop(pid, None)
            self.slots.pop(pid, None)
            if not restart or self.stopping:
                continue
            code = describe_exit(status)
            now = time.monotonic()
            self.crashes = [t for t in self.crashes if now - t < _RESTART_WINDOW]
            self.crashes.append(now)
            if len(self.crashes) > _RESTART_LIMIT:
                print(
                    f"backhaul: workers keep dying ({len(self.crashes)} in "
                    f"{_RESTART_WINDOW:g}s, the last {code}); not restarting",
                    file=sys.stderr,
                )
                continue
            new = self.spawn()
            print(
                f"backhaul: worker {pid} {code}; started worker {new}",
                file=sys.stderr,
                flush=True,
            )

    def shutdown(self) -> int:
        # Stop taking connections: once the workers close theirs, no copy of the listening
        # sockets is left open, so new clients are refused rather than left queued.
        for sock in self.sockets.values():
            sock.close()
        if self.dns is not None:
            self.dns.stop()
        if self.admin is not None:
            self.admin.stop()
            if self.admin.admin_socket is not None:
                self.admin.admin_socket.close()
        drain = max((lst.timeouts.drain for lst in self.config.listeners), default=30.0)
        for pid in [*self.children, *self._sidecar_pids()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + float(drain) + 5.0
        while (self.children or self._sidecar_pids()) and time.monotonic() < deadline:
            self.reap(restart=False)
            time.sleep(0.02)
        for pid in [*self.children, *self._sidecar_pids()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.reap(restart=False)
        return 0


def serve(config: Any, workers: int | None = None) -> NoReturn:
    """Run the edge for a validated ``config`` with ``workers`` processes (default: the
    config's, then the CPU count). Does not return on success: the process becomes the
    supervisor (see the module docstring)."""
    from backhaul.edge.settings import freeze

    count = workers or config.workers or os.cpu_count() or 1
    if count < 1:
        raise UsageError("--workers must be at least 1")
    if count > max_workers():
        raise UsageError(
            f"{count} workers is more than this machine can use: at most {max_workers()} "
            f"(8 per CPU); one per CPU is the usual choice"
        )
    validate_binds(config)
    try:
        from backhaul.edge.datapath import DATA_PLANE
    except ImportError as exc:
        raise UsageError(
            "the edge's compiled data plane is not built in this installation "
            f"({exc}); build it with `make run` or `pip install -e .` "
            "(needs a C compiler and Python's headers: apt-get install gcc python3-dev)"
        ) from exc
    print(f"backhaul: data plane {DATA_PLANE}", file=sys.stderr)
    if any(lst.tls is not None and lst.tls.internal for lst in config.listeners):
        from backhaul.edge.tls_supervisor import InternalCertificates

        InternalCertificates(config).ensure(datetime.now(UTC))  # TLS hook: before workers
    if getattr(config, "dns", None) is not None:
        from backhaul.services.dns.process import check_ports_free, describe_listen

        check_ports_free(config.dns.listen, config.dns.metrics)
        print(f"backhaul: dns on {describe_listen(config.dns)}", file=sys.stderr)
    for lst in config.listeners:
        scheme = "https" if lst.tls is not None else "http"  # TLS hook
        print(f"backhaul: listener {lst.name} on {scheme}://{lst.address}", file=sys.stderr)
    from backhaul.services.sidecar import handoff

    sidecars = handoff(config)  # the dhcp: section goes to its own process, not the workers
    fd = os.memfd_create("backhaul-settings", 0)  # inheritable across exec
    os.write(fd, freeze(config.model_copy(update={"dhcp": None}) if sidecars else config))
    os.lseek(fd, 0, os.SEEK_SET)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "backhaul.edge.supervisor", "--settings-fd", str(fd)]
    os.execv(sys.executable, [*argv, "--workers", str(count), *sidecars])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the exec'd supervisor: ``--settings-fd FD --workers N``."""
    from backhaul.edge.settings import thaw

    args = sys.argv[1:] if argv is None else argv
    opts = dict(zip(args[::2], args[1::2], strict=False))
    sidecars = tuple(v for k, v in zip(args[::2], args[1::2], strict=False) if k == "--sidecar")
    fd = int(opts["--settings-fd"])
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    settings = thaw(b"".join(chunks))
    return _Supervisor(settings, int(opts["--workers"]), sidecars).run()


def describe_exit(status: int) -> str:
    """A ``waitpid`` status in words: ``exited with status 3``, ``was killed by SIGKILL``."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"was killed by {name}{core}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"changed state ({status:#x})"


if __name__ == "__main__":
    sys.exit(main())
