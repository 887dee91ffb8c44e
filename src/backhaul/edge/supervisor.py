"""The supervisor: starts N worker processes that share the listeners, restarts a worker
that dies, reloads the config on SIGHUP, and on SIGTERM/SIGINT lets every worker drain, then
exits 0.

``backhaul serve`` validates the config (pydantic), checks that every listener can bind, then
replaces itself (``exec``) with this module's :func:`main`, handing over the config as plain
data (:mod:`backhaul.edge.settings`, inside a :class:`~backhaul.edge.candidate.Prepared`)
through a memory file. The supervisor thus holds no CLI, no pydantic and no toolbox code, and
the workers it forks import only the edge: each process stays small. The supervisor runs no
event loop and no threads, which keeps ``fork`` safe. Services configured next to the edge
(the DHCP server) run as its children too (:mod:`backhaul.services.sidecar`).

Reload (SIGHUP; ``backhaul reload``; the admin API's ``POST /config/reload``, which sends
SIGHUP and waits on :class:`~backhaul.state.reload_status.ReloadStatus`):

1. Workers re-read their certificate files at once (the TLS hook, as before reloads), and
   the DNS processes their zone files.
2. A child process validates the config file again (``python -m backhaul.edge.candidate``):
   the supervisor stays without pydantic. A bad file changes nothing: the error (file,
   config path, what was expected, as ``backhaul check`` says it) is logged and recorded.
3. A file that validates to the config in effect changes nothing either (logged).
4. Otherwise a new :class:`Generation` starts beside the current one: its shared memory
   (metrics: the same store when the layout is the same, so counters continue, else a new
   one, so counters restart; the endpoint control bytes, the operator's drains carried
   over; the endpoints found through DNS, carried over for a cluster that asks the same
   question), its listening sockets (an unchanged address keeps its socket, bound once and
   inherited, so no connection attempt is refused; a new address is bound here, and a bind
   error fails the reload), then its workers. When all of them serve, the old workers get
   SIGTERM: they stop accepting, finish in-flight requests within the drain timeout and
   exit. A new worker that fails to start fails the reload, and the old generation stays.
   The DNS processes restart on the new generation when something they read changed (the
   ``dns:`` section, the clusters, the shared state; new ones start before the old stop);
   a changed ``dhcp:`` section restarts the DHCP sidecar.
5. The outcome goes to :class:`ReloadStatus` (generation, digest, last result and error),
   to the status file ``backhaul reload`` reads (:mod:`backhaul.edge.runfiles`), and to a
   log line with the config's SHA-256.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import socket
import sys
import time

from backhaul.edge.candidate import Candidate, Prepared, max_workers
from backhaul.errors import BackhaulError, NetworkError, UsageError
from backhaul.net.bind_error import explain_bind_error
from backhaul.services.lifecycle import die_with_parent as _die_with_parent
from backhaul.services.lifecycle import new_event_loop as _new_loop
from backhaul.services.lifecycle import watch_parent
from backhaul.state.endpoint_control import EndpointControl
from backhaul.state.reload_status import ReloadStatus
from backhaul.state.shared_counters import SharedCounters

TYPE_CHECKING = False  # without importing typing: this module is the supervisor (RSS)
if TYPE_CHECKING:
    from typing import Any, NoReturn, Protocol

    from backhaul.edge import runtime_config as rt

    class ControlLauncher(Protocol):
        """What the supervisor needs to run a control process (see
        :class:`backhaul.admin.process.ControlProcess`), handed to it by the layer above."""

        def needed(self, config: Any) -> bool:
            """Whether ``config`` asks for a control process."""
            ...

        def create(
            self,
            config: Any,
            admin_socket: socket.socket | None,
            control: EndpointControl,
            metrics: SharedCounters,
            reload_status: ReloadStatus,
            config_file: str | None = None,
        ) -> Any:
            """The control process object (``start``, ``reaped``, ``stop``, ``restart``)."""
            ...


__all__ = [
    "Generation",
    "describe_exit",
    "main",
    "max_workers",
    "run_worker_process",
    "serve",
    "validate_binds",
]

_RESTART_WINDOW = 10.0  # seconds
_RESTART_LIMIT = 5  # crashes within the window before the supervisor gives up
_VALIDATE_DEADLINE = 60.0  # seconds for the child that validates a reloaded config
_START_DEADLINE = 30.0  # seconds for a new generation's workers to serve


def validate_binds(config: Any = None, admin: Any = None) -> None:
    """Fail early, in the supervisor, when a listener address of ``config`` (or the admin
    address ``admin``) cannot be bound."""
    from backhaul.edge.listen import bind_listener_socket

    binds = [(f"listener {lst.name}", lst.address) for lst in getattr(config, "listeners", ())]
    if getattr(config, "admin", None) is not None:
        binds.append(("admin listener", config.admin.address))
    if admin is not None:
        binds.append(("admin listener", admin))
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
    config: rt.EdgeConfig,
    metrics: Any = None,
    control: Any = None,
    sockets: Any = None,
    ready_fd: int | None = None,
    reload_status: Any = None,
    parent_fd: int | None = None,
) -> int:
    """Body of one worker process: serve until SIGTERM, then drain and return.
    ``ready_fd``: where to say ``"<pid> ready"`` once it serves (the supervisor's pipe);
    ``parent_fd``: the supervisor's pidfd (:func:`~backhaul.services.lifecycle.watch_parent`):
    when it exits, the worker drains and returns as on SIGTERM."""
    import asyncio

    from backhaul.edge.worker import Worker

    loop = _new_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()

    def on_term() -> None:
        stop.set()

    def on_parent_exit() -> None:
        assert parent_fd is not None
        loop.remove_reader(parent_fd)  # it stays readable: once is enough
        stop.set()

    async def main() -> None:
        worker = Worker(config, loop, metrics, control, sockets, reload_status=reload_status)
        try:
            await worker.start()
            # The supervisor listens before it forks: this line says the worker takes requests.
            sys.stderr.flush()
            os.write(2, f"backhaul: worker {os.getpid()} serving\n".encode())  # one write
            if ready_fd is not None:
                os.write(ready_fd, f"{os.getpid()} ready\n".encode())
            loop.add_signal_handler(signal.SIGTERM, on_term)
            if parent_fd is not None:
                loop.add_reader(parent_fd, on_parent_exit)
            await stop.wait()
            await worker.wait_drained()
        finally:
            await worker.aclose()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0


class Generation:
    """One config in effect: its settings, the shared memory made for it, its workers.

    A reload makes a new generation beside the current one; once all its workers serve, it
    becomes the current one and the old one retires (its workers drain and exit)."""

    def __init__(
        self,
        number: int,
        prepared: Prepared,
        metrics: SharedCounters,
        control: EndpointControl,
        sockets: dict[str, socket.socket],
    ) -> None:
        self.number = number
        self.prepared = prepared
        self._config: rt.EdgeConfig | None = None
        self.size = prepared.workers
        self.metrics = metrics
        self.control = control
        self.sockets = sockets
        self.workers: dict[int, int] = {}  # pid -> metrics slot
        self.ready: set[int] = set()
        self.deadline = 0.0  # starting: all ready by then; retiring: killed after it
        self.dns: Any = None  # its DnsProcesses, when the config has a dns section
        self.sidecars: list[Any] = []

    @property
    def config(self) -> rt.EdgeConfig:
        """The typed config, thawed on first use: by a worker after fork, and in the
        supervisor only for what reads all of it (TLS, DNS, the control process)."""
        if self._config is None:
            from backhaul.edge.settings import thaw

            self._config = thaw(self.prepared.settings)
        return self._config

    def has(self, *features: str) -> bool:
        """Whether the config turns on any of ``features`` (see candidate.FEATURES)."""
        return not self.prepared.features.isdisjoint(features)

    @property
    def addresses(self) -> set[tuple[str, int]]:
        return {(address.host, address.port) for _, address in self.prepared.listeners}

    def drain_timeout(self) -> float:
        return self.prepared.drain


class _Supervisor:
    def __init__(
        self,
        prepared: Prepared,
        sidecars: tuple[str, ...] = (),
        config_file: str | None = None,
        access_log: str | None = None,
        workers_flag: int | None = None,
        launcher: ControlLauncher | None = None,
    ) -> None:
        """``launcher`` makes the control process (the admin API and the active health
        checks): given by the layer above (:mod:`backhaul.admin.supervise`), which builds
        both it and this supervisor; None runs none."""
        from backhaul.services.sidecar import Sidecar

        self.config_file = config_file
        self.access_log = access_log
        self.workers_flag = workers_flag
        self.stopping = False
        self.crashes: list[float] = []
        self.reload_wanted = False
        self.candidate: tuple[int, int, float] | None = None  # (pid, result fd, deadline)
        self.retired: set[int] = set()  # pids of stopped services (DNS, sidecars) to reap
        # Reload outcomes, readable by every process forked from here (the admin API).
        self.status = ReloadStatus(digest=prepared.digest)
        # Each listener's socket, bound once here and inherited by every worker it forks: a
        # restarted worker never opens a window in which connections are refused, and no
        # other process can join the port (no SO_REUSEPORT on it). A reload keeps the
        # sockets of the addresses it still listens on.
        self.bound: dict[tuple[str, int], socket.socket] = {}
        sockets = self._sockets_for(prepared)
        # Workers say "<pid> ready" here once they serve; signals wake the loop.
        self.ready_r, self.ready_w = os.pipe()
        os.set_blocking(self.ready_r, False)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self._ready_buffer = b""
        self.current = self._generation(1, prepared, sockets, None)
        # TLS hook: the ticket key shared by the workers (mapped before fork), certificate
        # reloads on SIGHUP, renewal of internal-CA certificates. None without TLS.
        self.tls: Any = None
        if self.current.has("tls"):
            from backhaul.edge.tls_supervisor import TlsSupervision

            self.tls = TlsSupervision.before_fork(self.current.config)
        # services next to the edge (the DHCP server), each its own child process
        self.current.sidecars = [Sidecar(spec, _die_with_parent) for spec in sidecars]
        self.starting: Generation | None = None
        self.retiring: list[Generation] = []
        # The control process: the admin API and the active health checks, if configured.
        self.launcher = launcher
        self.admin: Any = None
        self.admin_address: tuple[str, int] | None = None
        self.admin = self._control_process(self.current)

    # -- generations ---------------------------------------------------------------------
    def _sockets_for(self, prepared: Prepared) -> dict[str, socket.socket]:
        """The listening socket of each listener of ``prepared``: the one already bound for
        its address, else a new one (:class:`NetworkError` when it cannot be bound)."""
        from backhaul.edge.listen import bind_listener_socket

        fresh: list[tuple[str, int]] = []
        out: dict[str, socket.socket] = {}
        try:
            for name, address in prepared.listeners:
                key = (address.host, address.port)
                if key not in self.bound:
                    try:
                        self.bound[key] = bind_listener_socket(*key, reuse_port=False)
                    except OSError as exc:
                        reason = explain_bind_error(exc.errno, *key)
                        raise NetworkError(f"listener {name}: {reason}") from exc
                    fresh.append(key)
                out[name] = self.bound[key]
        except BaseException:
            for key in fresh:
                self.bound.pop(key).close()
            raise
        return out

    @staticmethod
    def _check_dns_ports(dns: rt.DnsConfig | None, before: rt.DnsConfig | None) -> None:
        """The DNS addresses a reload adds must be free (:class:`NetworkError` if not): the
        ones in use stay the running DNS processes' until the new ones start."""
        if dns is None:
            return
        from backhaul.services.dns.process import check_ports_free

        held = set(before.listen) if before is not None else set()
        metrics = dns.metrics
        if before is not None and metrics == before.metrics:
            metrics = None
        check_ports_free([a for a in dns.listen if a not in held], metrics)

    def _release_sockets(self) -> None:
        """Close the supervisor's copy of sockets no generation in effect listens on."""
        wanted = self.current.addresses
        if self.starting is not None:
            wanted |= self.starting.addresses
        for key in [k for k in self.bound if k not in wanted]:
            self.bound.pop(key).close()

    def _generation(
        self,
        number: int,
        prepared: Prepared,
        sockets: dict[str, socket.socket],
        previous: Generation | None,
    ) -> Generation:
        """The shared memory of a new generation (mapped here, before its workers fork)."""
        from backhaul.state.discovered_endpoints import carry_over, same_questions
        from backhaul.state.endpoint_control import EndpointControl
        from backhaul.state.shared_counters import SharedCounters

        layout = prepared.layout
        assert layout is not None  # candidate.prepare sets it
        store = None
        # Same listeners, routes, clusters and endpoints: the counters continue (the new
        # workers take slots the old ones do not hold).
        if (
            previous is not None
            and previous.metrics.layout.digest == layout.digest
            and previous.metrics.slots - len(self._slots_in_use(previous.metrics))
            >= prepared.workers
        ):
            store = previous.metrics
        if store is None:
            # Room for two generations at once (the old drains while the new serves).
            store = SharedCounters(layout, 2 * prepared.workers)
        labels = list(prepared.endpoints)
        discovered = list(prepared.discovered)
        # The operator's drain requests and the health checker's results, shared by the
        # workers (see the admin API), and the endpoints found through DNS. The same
        # endpoints and the same metrics store (its slots number the workers' rows): the same
        # map, so nothing is lost. Otherwise an endpoint that stays keeps what the operator
        # asked unless the config changed its drain flag, and what the health checker found;
        # a cluster that asks DNS the same question keeps the endpoints found so far.
        before = list(previous.prepared.endpoints) if previous is not None else None
        if (
            previous is not None
            and before == labels
            and list(previous.prepared.discovered) == discovered
            and store is previous.metrics
        ):
            control = previous.control
        else:
            control = EndpointControl(labels, store.slots, discovered)
        if previous is not None and control is not previous.control:
            carry_over(
                control.discovered,
                control.health,
                previous.control.discovered,
                previous.control.health,
                same_questions(previous.prepared.questions, prepared.questions),
            )
            wished = {(c, label): drain for c, label, drain in before or ()}
            for cluster, label, drain in labels:
                i = previous.control.find(cluster, label)
                j = control.find(cluster, label)
                if i is not None and j is not None and wished.get((cluster, label)) == drain:
                    control.set_drain(j, previous.control.drain_wanted(i))
                if i is not None and j is not None:  # what the health checker found so far
                    control.health.copy_check(j, previous.control.health, i)
        gen = Generation(number, prepared, store, control, sockets)
        if not gen.has("dns"):
            return gen
        config = gen.config
        dns = config.dns
        assert dns is not None
        if (
            previous is not None
            and previous.dns is not None
            and previous.has("dns")
            and previous.config.dns == dns
            and previous.config.clusters == config.clusters
            and previous.metrics is store
            and previous.control is control
        ):
            gen.dns = previous.dns  # nothing the DNS service reads changed: it runs on
        else:
            from backhaul.services.dns.process import DnsProcesses

            gen.dns = DnsProcesses(dns, config.clusters, control, store)
        return gen

    # -- the control process (backhaul.admin.process) -------------------------------------
    def _admin_socket(self, gen: Generation) -> socket.socket | None:
        """The admin address of ``gen``, bound here once (no SO_REUSEPORT: another edge on
        the same admin port is refused); the current socket when the address is the same."""
        address = gen.prepared.admin
        if address is None:
            return None
        current: socket.socket | None = self.admin.admin_socket if self.admin is not None else None
        if current is not None and self.admin_address == (address.host, address.port):
            return current
        from backhaul.edge.listen import bind_listener_socket

        host, port = address.host, address.port
        try:
            sock = bind_listener_socket(host, port, reuse_port=False)
        except OSError as exc:
            reason = explain_bind_error(exc.errno, host, port)
            raise NetworkError(f"admin listener: {reason}") from exc
        self.admin_address = (host, port)
        return sock

    def _wants_control(self, gen: Generation) -> bool:
        """Whether ``gen`` runs a control process (the launcher decides on the config)."""
        return (
            self.launcher is not None
            and gen.has("admin", "health_checks", "endpoints_from")
            and self.launcher.needed(gen.config)
        )

    def _control_process(self, gen: Generation) -> Any:
        if self.launcher is None or not self._wants_control(gen):
            return None
        sock = self._admin_socket(gen)
        return self.launcher.create(
            gen.config, sock, gen.control, gen.metrics, self.status, self.config_file
        )

    def _switch_control(self, gen: Generation) -> None:
        """A new generation is current: its control process takes over (the old one answers
        what it has begun, then exits); a changed admin address is bound anew."""
        proc = self.admin
        old = proc.admin_socket if proc is not None else None
        if not self._wants_control(gen):
            if proc is not None:
                proc.stop()
                if old is not None:
                    old.close()
            self.admin = None
            return
        try:
            sock = self._admin_socket(gen)
        except NetworkError as exc:
            _log(f"{exc}; the admin API stays where it was")
            sock = old
        if proc is None:
            self.admin = self._control_process(gen)
            self.admin.start()
            return
        proc.restart(gen.config, gen.control, gen.metrics, sock)
        if old is not None and sock is not old:
            old.close()

    def _generations(self) -> list[Generation]:
        gens = [self.current, *self.retiring]
        if self.starting is not None:
            gens.append(self.starting)
        return gens

    def _slots_in_use(self, store: SharedCounters) -> set[int]:
        return {
            slot for g in self._generations() if g.metrics is store for slot in g.workers.values()
        }

    def spawn(self, gen: Generation) -> int:
        # A restarted worker takes a free slot (a dead one's: its counters continue there).
        slot = min(set(range(gen.metrics.slots)) - self._slots_in_use(gen.metrics))
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor's signal
            parent_fd = watch_parent(parent)
            code = 1
            try:
                # Sockets of other generations' listeners are not this worker's to hold:
                # a removed listener must close once its old workers exit.
                mine = {id(sock) for sock in gen.sockets.values()}
                for sock in self.bound.values():
                    if id(sock) not in mine:
                        sock.close()
                os.close(self.ready_r)
                os.close(self.wake_r)
                os.close(self.wake_w)
                if self.admin is not None and self.admin.admin_socket is not None:
                    self.admin.admin_socket.close()  # the control process's alone
                code = run_worker_process(
                    gen.config,
                    (gen.metrics, slot),
                    gen.control,
                    gen.sockets,
                    ready_fd=self.ready_w,
                    reload_status=self.status,
                    parent_fd=parent_fd,
                )
            except BaseException as exc:
                reason = f"{exc}" or type(exc).__name__
                print(f"backhaul: worker {os.getpid()} failed: {reason}", file=sys.stderr)
                line = f"{os.getpid()} failed {' '.join(reason.split())}"[:3000] + "\n"
                with contextlib.suppress(OSError):
                    os.write(self.ready_w, line.encode())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        gen.workers[pid] = slot
        return pid

    def _sidecar_pids(self) -> list[int]:
        return [s.pid for s in self.current.sidecars if s.pid is not None]

    def on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def on_reload(self, signum: int, frame: object) -> None:
        """SIGHUP: reload the config (and the certificate files); see :meth:`begin_reload`."""
        self.reload_wanted = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, self.on_reload)
        signal.set_wakeup_fd(self.wake_w)
        gen = self.current
        for sidecar in gen.sidecars:
            sidecar.start()
        if self.admin is not None:  # first: named before any worker says it serves
            self.admin.start()
        for _ in range(gen.size):
            self.spawn(gen)
        if gen.dns is not None:
            gen.dns.start()
        self._write_runfiles()
        pids = " ".join(str(p) for p in gen.workers)
        print(f"backhaul: supervisor {os.getpid()}, workers {pids}", file=sys.stderr, flush=True)
        print(
            f"backhaul: config generation 1, sha256 {gen.prepared.digest}",
            file=sys.stderr,
            flush=True,
        )
        try:
            while not self.stopping:
                if self.tls is not None:  # TLS hook: ticket-key rotation, internal renewal
                    from datetime import UTC, datetime

                    self.tls.tick(time.monotonic(), datetime.now(UTC))
                self.reap(restart=True)
                self._read_ready()
                self._step_reload()
                if not self.current.workers and self.starting is None:
                    print("backhaul: no worker left; stopping", file=sys.stderr)
                    return 1
                self._wait(0.1)
            return self.shutdown()
        finally:
            from backhaul.edge import runfiles

            runfiles.remove(os.getpid(), self.config_file)

    def _wait(self, timeout: float) -> None:
        """Sleep until a worker says it is ready, a signal arrives, or ``timeout``."""
        try:
            select.select([self.ready_r, self.wake_r], [], [], timeout)
        except InterruptedError:
            return
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 512):
                pass

    def _read_ready(self) -> None:
        try:
            data = os.read(self.ready_r, 1 << 16)
        except BlockingIOError:
            return
        self._ready_buffer += data
        *lines, partial = self._ready_buffer.split(b"\n")
        self._ready_buffer = partial[-4096:]  # a line is one short write: never this long
        for line in lines:
            pid_text, _, rest = line.decode(errors="replace").partition(" ")
            word, _, reason = rest.partition(" ")
            try:
                pid = int(pid_text)
            except ValueError:
                continue
            for gen in self._generations():
                if pid in gen.workers:
                    if word == "ready":
                        gen.ready.add(pid)
                    elif gen is self.starting:
                        self._abort(f"worker {pid} failed to start: {reason}")
                    break

    # -- reloads ---------------------------------------------------------------------------
    def _step_reload(self) -> None:
        now = time.monotonic()
        if self.candidate is not None and now > self.candidate[2]:
            pid = self.candidate[0]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.retired.add(pid)
            self._candidate_done(None, f"validating the config took over {_VALIDATE_DEADLINE:g}s")
        starting = self.starting
        if starting is not None:
            if starting.ready >= set(starting.workers) and starting.workers:
                self._switch()
            elif now > starting.deadline:
                self._abort(f"the new workers did not serve within {_START_DEADLINE:g}s")
        for gen in self.retiring:
            if gen.workers and now > gen.deadline:
                for pid in gen.workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if self.reload_wanted and self.candidate is None and self.starting is None:
            self.reload_wanted = False
            try:
                self.begin_reload()
            except OSError as exc:  # no fd, no process, no memory: this attempt fails
                self._fail(f"cannot start the config validator ({exc}); the running config stays")

    def begin_reload(self) -> None:
        """Re-read certificate files at once (TLS hook) and validate the config file again
        in a child process (its answer arrives through :meth:`reap`)."""
        if self.tls is not None:
            self.tls.request_reload()
            _log("SIGHUP: reloading certificate files")
        if self.current.dns is not None:  # zone files (a new generation restarts DNS anyway)
            self.current.dns.signal_all(signal.SIGHUP)
        if self.config_file is None:
            self._record(True, "", None)
            _log("SIGHUP: started without --config: no config file to reload")
            return
        _log(f"SIGHUP: reloading {self.config_file}")
        fd = os.memfd_create("backhaul-candidate", 0)  # inheritable: the child writes it
        argv = [sys.executable, "-m", "backhaul.edge.candidate", "--result-fd", str(fd)]
        argv += ["--config", self.config_file]
        if self.access_log is not None:
            argv += ["--access-log", self.access_log]
        if self.workers_flag is not None:
            argv += ["--workers", str(self.workers_flag)]
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                _die_with_parent(parent)
                os.execv(sys.executable, argv)
            finally:
                os._exit(127)
        self.candidate = (pid, fd, time.monotonic() + _VALIDATE_DEADLINE)

    def _candidate_done(self, status: int | None, problem: str = "") -> None:
        """The validating child ended (``status``) or was given up (``problem``)."""
        assert self.candidate is not None
        _, fd, _ = self.candidate
        self.candidate = None
        try:
            chunks = []
            os.lseek(fd, 0, os.SEEK_SET)
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(fd)
        answer: Candidate | None = None
        if not problem:
            try:
                answer = pickle.loads(b"".join(chunks))  # our own child's bytes
            except Exception:
                why = describe_exit(status) if status is not None else "stopped"
                problem = f"the config validator {why} without an answer"
        if answer is None or answer.prepared is None:
            self._fail(problem or (answer.error if answer is not None else "no answer"))
            return
        try:
            self._apply(answer.prepared)
        except OSError as exc:  # shared memory, fork: the new generation cannot start
            problem = f"cannot start the new generation ({exc})"
            if self.starting is not None:
                self._abort(problem)
            else:
                self._release_sockets()
                self._fail(f"{self.config_file}: {problem}; the running config stays")

    def _apply(self, prepared: Prepared) -> None:
        """Start a generation on ``prepared`` (or note that nothing changed)."""
        cur = self.current
        if (
            prepared.settings == cur.prepared.settings
            and prepared.dhcp == cur.prepared.dhcp
            and prepared.workers == cur.size
        ):
            self.current.prepared = prepared  # the digest may differ (comments, layout)
            self._record(True, "", prepared.digest)
            _log(
                f"config unchanged in effect (sha256 {prepared.digest}); generation"
                f" {cur.number} stays"
            )
            return
        try:
            admin = prepared.admin
            if admin is not None and admin != cur.prepared.admin:
                validate_binds(admin=admin)  # a new admin address: free?
            sockets = self._sockets_for(prepared)
            if "dns" in prepared.features:
                from backhaul.edge.settings import thaw

                before = cur.config.dns if cur.has("dns") else None
                self._check_dns_ports(thaw(prepared.settings).dns, before)
        except NetworkError as exc:
            self._release_sockets()
            self._fail(f"{self.config_file}: {exc}; the running config stays")
            return
        gen = self._generation(cur.number + 1, prepared, sockets, cur)
        if gen.has("tls"):
            from backhaul.edge.tls_supervisor import InternalCertificates, TlsSupervision

            if self.tls is None:
                self.tls = TlsSupervision.before_fork(gen.config)
            else:
                self.tls.internal = InternalCertificates(gen.config)
        if prepared.dhcp == cur.prepared.dhcp:
            gen.sidecars = cur.sidecars
        else:  # the DHCP service restarts on its new section (or stops without one)
            from backhaul.services.sidecar import Sidecar, dhcp_spec
            from backhaul.state import extra_metrics

            for old in cur.sidecars:  # before the new workers fork: they read the list
                with contextlib.suppress(ValueError):
                    extra_metrics.PATHS.remove(old.metrics)
            if prepared.dhcp is not None:
                gen.sidecars = [Sidecar(dhcp_spec(*prepared.dhcp), _die_with_parent)]
        self.starting = gen
        gen.deadline = time.monotonic() + _START_DEADLINE
        for _ in range(gen.size):
            self.spawn(gen)

    def _switch(self) -> None:
        """Every worker of the new generation serves: the old one drains and exits."""
        from backhaul.state.dns_counters import share_slots

        new, old = self.starting, self.current
        assert new is not None
        self.starting = None
        self.current = new
        for pid in old.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        old.deadline = time.monotonic() + old.drain_timeout() + 5.0
        self.retiring.append(old)
        # DNS: the new processes (on the new config and shared state) start beside the old
        # ones (SO_REUSEPORT), then the old ones stop.
        if new.dns is not old.dns:
            if new.dns is not None:
                try:
                    new.dns.start()
                except OSError as exc:  # the edge switched; the DNS service says it did not
                    _log(f"dns: cannot start its processes on generation {new.number}: {exc}")
            if old.dns is not None:
                self.retired.update(old.dns.children)
                old.dns.signal_all(signal.SIGTERM)
            share_slots(new.dns.stats if new.dns is not None else None)
        if new.sidecars is not old.sidecars:
            for sidecar in old.sidecars:
                if sidecar.pid is not None:
                    self.retired.add(sidecar.pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(sidecar.pid, signal.SIGTERM)
            for sidecar in new.sidecars:
                try:
                    sidecar.start()
                except OSError as exc:
                    _log(f"{sidecar.name}: cannot start: {exc}")
        self._release_sockets()
        self._switch_control(new)
        self.status.set_generation(new.number)
        self._record(True, "", new.prepared.digest)
        pids = " ".join(str(p) for p in new.workers)
        summary = "; ".join(new.prepared.summary) or "no listener"
        _log(
            f"config generation {new.number} applied (sha256 {new.prepared.digest}):"
            f" {summary}; workers {pids}; generation {old.number} drains"
        )

    def _abort(self, problem: str) -> None:
        """The new generation failed to start: it stops, the current one keeps serving."""
        from backhaul.state.dns_counters import share_slots

        gen = self.starting
        assert gen is not None
        self.starting = None
        for pid in gen.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        gen.deadline = time.monotonic() + 5.0
        self.retiring.append(gen)
        if gen.dns is not self.current.dns:
            share_slots(self.current.dns.stats if self.current.dns is not None else None)
        if gen.sidecars is not self.current.sidecars:
            from backhaul.state import extra_metrics

            for sidecar in gen.sidecars:
                with contextlib.suppress(ValueError):
                    extra_metrics.PATHS.remove(sidecar.metrics)
            extra_metrics.PATHS.extend(s.metrics for s in self.current.sidecars)
        self._release_sockets()
        self._fail(f"{self.config_file}: {problem}; the running config stays")

    def _fail(self, error: str) -> None:
        cur = self.current
        _log(
            f"config reload failed; generation {cur.number} (sha256 {cur.prepared.digest})"
            f" keeps serving:\n{error}"
        )
        self._record(False, error, None)

    def _record(self, ok: bool, error: str, digest: str | None) -> None:
        self.status.record(ok, error, digest, time.time())
        self._write_runfiles()

    def _write_runfiles(self) -> None:
        from backhaul.edge import runfiles

        try:
            if self.status.snapshot().attempts == 0:
                runfiles.write_pid(self.config_file, os.getpid())
            extra = {
                "pid": os.getpid(),
                "config_file": self.config_file,
                "workers": sorted(self.current.workers),
            }
            runfiles.write_status(os.getpid(), self.status.snapshot(), extra)
        except (OSError, BackhaulError) as exc:
            _log(f"cannot write the run files ({exc}); `backhaul reload` will not find this edge")

    # -- children --------------------------------------------------------------------------
    def reap(self, restart: bool) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.candidate is not None and pid == self.candidate[0]:
                self._candidate_done(status)
                continue
            if pid in self.retired:
                self.retired.discard(pid)
                for gen in self._generations():
                    if gen.dns is not None:
                        gen.dns.children.pop(pid, None)
                continue
            again = restart and not self.stopping
            if self.admin is not None and self.admin.reaped(pid, status, again):
                continue
            dns = self.current.dns
            if dns is not None and dns.reaped(pid, status, again):
                continue
            if any(s.exited(pid, status, again) for s in self.current.sidecars):
                continue
            self._worker_exited(pid, status, again)

    def _worker_exited(self, pid: int, status: int, restart: bool) -> None:
        gen = next((g for g in self._generations() if pid in g.workers), None)
        if gen is None:
            return
        gen.workers.pop(pid, None)
        gen.ready.discard(pid)
        if gen is not self.current:
            if gen is self.starting and restart:
                self._abort(f"worker {pid} {describe_exit(status)} before it served")
            elif gen in self.retiring and not gen.workers:
                self.retiring.remove(gen)
                if all(g.metrics is not gen.metrics for g in self._generations()):
                    gen.metrics.close()  # this process's mapping; no generation uses it
            return
        if not restart:
            return
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
            return
        new = self.spawn(gen)
        print(
            f"backhaul: worker {pid} {code}; started worker {new}",
            file=sys.stderr,
            flush=True,
        )

    def _all_pids(self) -> list[int]:
        pids = [p for g in self._generations() for p in g.workers]
        pids += self._sidecar_pids()
        if self.candidate is not None:
            pids.append(self.candidate[0])
        return pids

    def shutdown(self) -> int:
        # Stop taking connections: once the workers close theirs, no copy of the listening
        # sockets is left open, so new clients are refused rather than left queued.
        for sock in self.bound.values():
            sock.close()
        self.bound.clear()
        for gen in self._generations():
            if gen.dns is not None:
                gen.dns.stop()
        if self.admin is not None:
            self.admin.stop()
            if self.admin.admin_socket is not None:
                self.admin.admin_socket.close()
        drain = max(g.drain_timeout() for g in self._generations())
        for pid in self._all_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + float(drain) + 5.0
        while self._all_pids() and time.monotonic() < deadline:
            self.reap(restart=False)
            time.sleep(0.02)
        for pid in self._all_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.reap(restart=False)
        return 0


def _log(text: str) -> None:
    print(f"backhaul: {text}", file=sys.stderr, flush=True)


def serve(
    config: Any,
    workers: int | None = None,
    config_file: str | os.PathLike[str] | None = None,
    access_log: str | None = None,
    digest: str | None = None,
    entry: str = "backhaul.edge.supervisor",
) -> NoReturn:
    """Run the edge for a validated ``config`` with ``workers`` processes (default: the
    config's, then the CPU count). Does not return on success: the process becomes the
    supervisor (see the module docstring). ``config_file`` is re-read on reload, with
    ``access_log`` (``serve --access-log``) and ``workers`` applied again; ``digest`` is the
    SHA-256 of the file's bytes that ``config`` was validated from; ``entry`` is the module
    the supervisor runs as (``backhaul.admin.supervise``: with the control process)."""
    from backhaul.edge.candidate import prepare, worker_count

    worker_count(config, workers)  # a bad --workers first
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
    if any(getattr(lst, "tls", None) is not None for lst in config.listeners):
        from backhaul.edge.tlsstream import TLS_DRIVER

        print(f"backhaul: downstream TLS {TLS_DRIVER}", file=sys.stderr)
    prepared = prepare(config, workers, digest)  # internal certificates issued here
    if getattr(config, "dns", None) is not None:
        from backhaul.services.dns.process import check_ports_free, describe_listen

        check_ports_free(config.dns.listen, config.dns.metrics)
        print(f"backhaul: dns on {describe_listen(config.dns)}", file=sys.stderr)
    for line in prepared.summary:
        print(f"backhaul: {line}", file=sys.stderr)
    from backhaul.services.sidecar import dhcp_spec

    # the dhcp: section goes to its own process, not the workers
    sidecars = [] if prepared.dhcp is None else ["--sidecar", dhcp_spec(*prepared.dhcp)]
    fd = os.memfd_create("backhaul-settings", 0)  # inheritable across exec
    os.write(fd, pickle.dumps(prepared, protocol=5))
    os.lseek(fd, 0, os.SEEK_SET)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", entry, "--settings-fd", str(fd)]
    if config_file is not None:
        argv += ["--config-file", os.path.abspath(config_file)]
    if access_log is not None:
        argv += ["--access-log", access_log]
    if workers is not None:
        argv += ["--workers-flag", str(workers)]
    os.execv(sys.executable, [*argv, *sidecars])


def main(argv: list[str] | None = None, launcher: ControlLauncher | None = None) -> int:
    """Entry point of the exec'd supervisor: ``--settings-fd FD [--config-file PATH]
    [--access-log X] [--workers-flag N] [--sidecar SPEC]...``; ``launcher`` as for
    :class:`_Supervisor`."""
    # SIGHUP before the loop runs is ignored (the config was just read), not fatal.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    pairs = list(zip(args[::2], args[1::2], strict=False))
    opts = dict(pairs)
    sidecars = tuple(v for k, v in pairs if k == "--sidecar")
    fd = int(opts["--settings-fd"])
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    prepared = pickle.loads(b"".join(chunks))  # our own bytes, handed over by `serve`
    flag = opts.get("--workers-flag")
    return _Supervisor(
        prepared,
        sidecars,
        config_file=opts.get("--config-file"),
        access_log=opts.get("--access-log"),
        workers_flag=int(flag) if flag else None,
        launcher=launcher,
    ).run()


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
