"""Running real DNS servers on loopback for the DNS service's tests: backhaul (as a
subprocess, through its CLI), dnsmasq (``--no-resolv --no-hosts``, explicit loopback
address, free port) and a small counting upstream. Nothing here asks the machine's resolver
or any outside address."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest
import yaml

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
DIG = shutil.which("dig") or "/usr/bin/dig"
START_DEADLINE = 20.0


def free_port(address: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``address`` (checked, then released)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
            port = int(probe.getsockname()[1])
        if port < 20000:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    stack.enter_context(socket.socket(family, kind)).bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port found on loopback")


def wait_answering(port: int, name: str = "probe.invalid", address: str = "127.0.0.1") -> None:
    """Poll with real queries (any answer counts) until the server answers."""
    deadline = time.monotonic() + START_DEADLINE
    query = dns.message.make_query(name, "A")
    while True:
        try:
            dns.query.udp(query, address, port=port, timeout=0.3)
            return
        except (dns.exception.Timeout, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ask(
    port: int,
    name: str,
    rdtype: str = "A",
    tcp: bool = False,
    address: str = "127.0.0.1",
    **make: object,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **make)  # type: ignore[arg-type]
    if tcp:
        return dns.query.tcp(query, address, port=port, timeout=5)
    return dns.query.udp(query, address, port=port, timeout=5)


def dig(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DIG, *args], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"}
    )


def records(text: str) -> list[str]:
    """dig's record lines, sorted (servers may rotate RRsets)."""
    return sorted(line for line in text.splitlines() if line and not line.startswith(";"))


def status(text: str) -> str:
    for line in text.splitlines():
        if line.startswith(";; ->>HEADER<<-"):
            return line.split("status: ")[1].split(",")[0]
    raise AssertionError(f"no header in {text!r}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    extra: dict[str, object] = field(default_factory=dict)

    def at(self) -> tuple[str, str, str]:
        return ("@127.0.0.1", "-p", str(self.port))

    def stop(self) -> None:
        _stop(self.process)


def start_dnsmasq(workdir: Path, args: Sequence[str], port: int | None = None) -> Server:
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq is not installed (scripts/sysdeps.sh test installs it)")
    last = ""
    for _ in range(3):
        chosen = port or free_port()
        argv = [
            DNSMASQ,
            "--no-daemon",
            "--conf-file=/dev/null",
            "--pid-file=",
            f"--port={chosen}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            *args,
        ]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_answering(chosen)
        except (dns.exception.Timeout, OSError):
            process.kill()
            _, err = process.communicate(timeout=5)
            last = err.decode(errors="replace").strip()
            continue
        return Server(chosen, process, workdir)
    pytest.skip(f"dnsmasq could not start on 127.0.0.1: {last}")


def start_backhaul(
    workdir: Path, dns_section: dict[str, object], extra: dict[str, object] | None = None
) -> Server:
    """``backhaul serve -c`` with a ``dns`` section (and ``extra`` top-level keys) on a
    free port, waited until it answers."""
    listen = dns_section.get("listen")
    port = int(str(listen[0]).rsplit(":", 1)[1]) if isinstance(listen, list) else free_port()
    section = {"listen": [f"127.0.0.1:{port}"], **dns_section}
    config = {"dns": section, **(extra or {})}
    path = workdir / f"backhaul-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "backhaul", "serve", "-c", str(path), "-w", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir,
    )
    try:
        wait_answering(port)
    except (dns.exception.Timeout, OSError):
        _stop(process)
        raise
    return Server(port, process, workdir, {"config": path})


class CountingUpstream:
    """A loopback UDP DNS server that counts queries per name, answers every A query with
    10.9.9.9 (TTL ``ttl``) after ``delay`` seconds, and NXDOMAIN for names under
    ``nx.test``. It is a thread with a bounded life: ``close()`` ends it."""

    def __init__(self, delay: float = 0.0, ttl: int = 60) -> None:
        self.delay = delay
        self.ttl = ttl
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 120
        while self.running and time.monotonic() < deadline:
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            name = query.question[0].name.to_text().lower()
            with self.lock:
                self.counts[name] = self.counts.get(name, 0) + 1
            if self.delay:
                time.sleep(self.delay)
            reply = dns.message.make_response(query)
            if name.endswith("nx.test."):
                reply.set_rcode(dns.rcode.NXDOMAIN)
                reply.authority.append(
                    dns.rrset.from_text("test.", 60, "IN", "SOA", "ns.test. h.test. 1 2 3 4 30")
                )
            else:
                reply.answer.append(
                    dns.rrset.from_text(query.question[0].name, self.ttl, "IN", "A", "10.9.9.9")
                )
            with contextlib.suppress(OSError):
                self.sock.sendto(reply.to_wire(), addr)

    def count(self, name: str) -> int:
        with self.lock:
            return self.counts.get(name.lower().rstrip(".") + ".", 0)

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()


@contextlib.contextmanager
def counting_upstream(delay: float = 0.0, ttl: int = 60) -> Iterator[CountingUpstream]:
    upstream = CountingUpstream(delay, ttl)
    try:
        yield upstream
    finally:
        upstream.close()
