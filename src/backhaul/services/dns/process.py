"""Running the DNS service: sockets, worker processes and their supervision.

- :func:`check_ports_free` binds every DNS address once *without* SO_REUSEPORT, UDP and
  TCP, before any worker starts: a port another process serves (even one that shares
  ports) is refused with a clear message instead of silently splitting its traffic.
- Each worker process binds its own UDP and TCP sockets with SO_REUSEPORT (the kernel
  spreads queries over the workers) and runs a :class:`~backhaul.services.dns.server.
  DnsServer` on uvloop until SIGTERM; SIGHUP reloads the zone data.
- :class:`DnsProcesses` forks and restarts those workers; the edge's supervisor holds one
  when the config has a ``dns`` section, and :func:`serve` runs one on its own
  (``backhaul dns serve``, or ``backhaul serve`` with only a ``dns`` section).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from typing import Any

from backhaul.errors import NetworkError
from backhaul.services.lifecycle import fork_child, new_event_loop

__all__ = ["DnsProcesses", "bind_dns_sockets", "check_ports_free", "run_worker", "serve"]


def _family(host: str) -> tuple[int, tuple[Any, ...]]:
    infos = socket.getaddrinfo(host or "0.0.0.0", 0, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _bind(host: str, port: int, kind: int, reuse_port: bool) -> socket.socket:
    family, sockaddr = _family(host)
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((sockaddr[0], port, *sockaddr[2:]))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def check_ports_free(addresses: Any, metrics: Any = None) -> None:
    """Raise :class:`NetworkError` when a DNS address cannot be ours (in use, no
    permission, bad host)."""
    wanted = [(a, kind) for a in addresses for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)]
    if metrics is not None:
        wanted.append((metrics, socket.SOCK_STREAM))
    for address, kind in wanted:
        proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
        what = "dns metrics" if address is metrics else "dns"
        try:
            _bind(address.host, address.port, kind, reuse_port=False).close()
        except socket.gaierror as exc:
            raise NetworkError(f"{what}: cannot resolve {address.host!r}: {exc.strerror}") from exc
        except PermissionError as exc:
            raise NetworkError(
                f"{what}: no permission to bind {address} ({proto}; ports below 1024 need root"
                " or CAP_NET_BIND_SERVICE: pick a port >= 1024 such as 5353)"
            ) from exc
        except OSError as exc:
            raise NetworkError(
                f"{what}: {address} ({proto}) is already served by another process"
                f" ({exc.strerror}): stop that server or choose another port"
            ) from exc


def bind_dns_sockets(addresses: Any) -> list[tuple[socket.socket, socket.socket]]:
    """``(udp, tcp)`` sockets for every address, shared between workers (SO_REUSEPORT)."""
    out: list[tuple[socket.socket, socket.socket]] = []
    try:
        for a in addresses:
            udp = _bind(a.host, a.port, socket.SOCK_DGRAM, reuse_port=True)
            try:
                tcp = _bind(a.host, a.port, socket.SOCK_STREAM, reuse_port=True)
            except OSError:
                udp.close()
                raise
            out.append((udp, tcp))
    except OSError:
        for udp, tcp in out:
            udp.close()
            tcp.close()
        raise
    return out


def run_worker(
    dns: Any,
    clusters: Any = None,
    control: Any = None,
    metrics: bool = True,
    shared: Any = None,
    slots: Any = None,
) -> int:
    """Body of one DNS worker process: serve until SIGTERM. ``metrics``: this worker also
    serves the metrics address (the first worker). ``control`` and ``shared`` are the
    edge's endpoint control and shared counters (endpoint health), when an edge runs."""
    import asyncio

    from backhaul.services.dns.server import DnsServer

    loop = new_event_loop()
    asyncio.set_event_loop(loop)

    async def main() -> None:
        stop = asyncio.Event()
        server = DnsServer(dns, loop, clusters, control, shared, slots)
        sockets = bind_dns_sockets(dns.listen)
        metrics_sock = None
        if metrics and dns.metrics is not None:
            metrics_sock = _bind(dns.metrics.host, dns.metrics.port, socket.SOCK_STREAM, True)
        try:
            await server.start(sockets, metrics_sock)
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            loop.add_signal_handler(signal.SIGHUP, server.reload)
            await stop.wait()
        finally:
            await server.aclose()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0


class DnsProcesses:
    """The DNS worker processes of one supervisor (forked, restarted, stopped)."""

    RESTART_LIMIT = 5
    RESTART_WINDOW = 10.0

    def __init__(
        self, dns: Any, clusters: Any = None, control: Any = None, shared: Any = None
    ) -> None:
        self.dns = dns
        self.clusters = clusters
        self.control = control
        self.shared = shared
        from backhaul.state.dns_counters import DnsStatsSlots

        # Mapped before any worker forks, the edge's too (its admin /metrics reads them).
        self.stats = DnsStatsSlots(int(dns.workers), share=True)
        self.children: dict[int, int] = {}  # pid -> worker index
        self.crashes: list[float] = []

    def start(self) -> list[int]:
        return [self._spawn(i) for i in range(int(self.dns.workers))]

    def _spawn(self, index: int) -> int:
        pid = fork_child(
            lambda: run_worker(
                self.dns,
                self.clusters,
                self.control,
                index == 0,
                self.shared,
                (self.stats, index),
            ),
            "dns worker",
        )
        self.children[pid] = index
        return pid

    def owns(self, pid: int) -> bool:
        return pid in self.children

    def reaped(self, pid: int, status: int, restart: bool) -> bool:
        """Account for a dead child; True if it was a DNS worker (restarted if asked)."""
        index = self.children.pop(pid, None)
        if index is None:
            return False
        if restart:
            now = time.monotonic()
            self.crashes = [t for t in self.crashes if now - t < self.RESTART_WINDOW]
            self.crashes.append(now)
            code = os.waitstatus_to_exitcode(status)
            if len(self.crashes) > self.RESTART_LIMIT:
                print(
                    f"backhaul: dns workers keep dying (last exit {code}); not restarting",
                    file=sys.stderr,
                )
                return True
            new = self._spawn(index)
            print(
                f"backhaul: dns worker {pid} exited ({code}); started {new}",
                file=sys.stderr,
                flush=True,
            )
        return True

    def signal_all(self, signum: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self, deadline: float = 5.0) -> None:
        """SIGTERM every worker, wait up to ``deadline`` seconds, then SIGKILL."""
        self.signal_all(signal.SIGTERM)
        end = time.monotonic() + deadline
        while self.children and time.monotonic() < end:
            for pid in list(self.children):  # only our own: the caller reaps its others
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self.children.pop(pid, None)
            time.sleep(0.02)
        self.signal_all(signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()


def describe_listen(dns: Any) -> str:
    return ", ".join(f"udp+tcp {a}" for a in dns.listen)


def serve(dns: Any, clusters: Any = None) -> int:
    """Run the DNS service alone in this process (its supervisor) until SIGTERM/SIGINT."""
    check_ports_free(dns.listen, dns.metrics)
    procs = DnsProcesses(dns, clusters)
    stopping = False

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum: int, frame: object) -> None:
        procs.signal_all(signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    pids = procs.start()
    print(
        f"backhaul: dns on {describe_listen(dns)}; supervisor {os.getpid()}, workers"
        f" {' '.join(map(str, pids))}",
        file=sys.stderr,
        flush=True,
    )
    while not stopping:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 1
        if pid:
            procs.reaped(pid, status, restart=True)
            if not procs.children:
                return 1
            continue
        time.sleep(0.1)
    procs.stop()
    return 0
