"""backhaul against nginx as HTTPS-terminating proxies, side by side in one run (issue 8).

    python -m bench.tls [--quick] [--rounds 3] [--duration 8]

Both proxies terminate TLS 1.3 with the same ECDSA P-256 certificate (issued by backhaul's
built-in CA), run one worker pinned to core 0, and forward over plain HTTP with upstream
keep-alive to one nginx origin serving a 13-byte body (pinned to core 1, with wrk). Access
logs are off on both: what is compared is TLS termination plus forwarding. Two loads, each
`wrk -t1 -c50` on core 1, interleaved per round:

- keep-alive: HTTPS requests on 50 persistent connections (per-record cost);
- handshakes: `-H 'Connection: close'`, so every request is a new connection and a TLS 1.3
  handshake. wrk keeps one ``SSL`` per connection slot and ``SSL_clear``s it after its
  ``SSL_shutdown``, so the session (updated by the server's ticket) is offered again: after the
  first connection of each of the 50 slots every handshake is a *resumed* one (PSK with
  X25519, no certificate, no signature), on both servers (measured: 50 full, the rest
  resumed). After a resumption OpenSSL sends one ticket, whatever ``num_tickets`` says.

Medians over rounds; ratios to nginx; the proxy's CPU share shows who the bottleneck was.
When neither proxy saturates its core (a busy machine: wrk and the origin share core 1), the
req/s ratio says little; the CPU-efficiency ratio (nginx's user+sys CPU per request over
backhaul's) is then the steadier figure. Each run also records how busy core 0 was beyond
the proxy itself ("others"): the machine lock keeps other benchmarks and tests away, not
builds; a run where others took more than 10% of the proxy's core is run again (``--retries``,
default 2) and marked if it stays so.

Both sides are configured as they would be run: TLS 1.3 only, the same certificate, the
default groups (X25519 first, then P-256), session tickets on (OpenSSL's two per full
handshake, one per resumed one, on both), nginx with ``ssl_session_cache shared:SSL:10m``
(Mozilla's recommended setting); before the loads, ``openssl s_client`` prints what each
side negotiated (protocol, cipher, key exchange group, tickets sent, ALPN, whether a saved
session resumes).

``--floor`` adds two contestants that answer every request themselves (no routing, no
upstream), both with backhaul's server context: "floor", a minimal server on uvloop's TLS
transport (what that transport and Python's ssl cost without any of backhaul's work), and
"driver", the same answers with its own TLS glue over the plain TCP transport (the C object
of ``SSLContext._wrap_bio`` on memory BIOs, no per-connection timers, one write per event,
closing right after its close_notify as nginx does). The gap between the two is what uvloop's
TLS transport itself costs per connection; backhaul's own downstream TLS is a compiled driver
of the second kind (``backhaul.edge.tlsstream``).

``--instructions`` measures something else, steadily on a busy machine: the user-space
instructions (valgrind's callgrind, Ir) each server runs per new TLS connection, for backhaul,
the floor, and the floor with a proxy leg (it forwards each request to the origin on a
kept-alive connection, as backhaul does), driven by a client that behaves like wrk
(sequential connections resuming the last session, ``Connection: close``, close_notify).
Counts repeat within 0.1%; they see neither kernel time nor cache misses, so they say how much
code runs, not how long it takes (see the helper report of issue 8: backhaul ran 2% more
instructions than the floor per connection while taking 30% more CPU time).

Targets: keep-alive >= 0.85x nginx, handshakes >= 0.8x nginx. Figures go to stdout and to
bench/results/tls-<timestamp>.json. Noise between runs on a shared 2-core VM is about
+-10%: only figures taken side by side in one run are compared.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import yaml

from .proxy import (
    LOAD_CORE,
    PROXY_CORE,
    RESULTS,
    BenchError,
    Processes,
    backhaul_bin,
    cpu_seconds,
    free_ports,
    group_members,
    parse_wrk,
    wait_listening,
)

TARGET_KEEPALIVE, TARGET_HANDSHAKES = 0.85, 0.80
NOISY = 0.10  # share of the proxy's core taken by other processes that marks a run
BODY = b"hello, world\n"

ORIGIN_CONF = """
worker_processes 1;
daemon off;
pid {dir}/origin.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        location /files/ {{ }}
    }}
}}
"""

NGINX_TLS_CONF = """
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {dir}/nginx-tls.pid;
error_log stderr warn;
events {{ worker_connections 16384; }}
http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_session_tickets on;
        ssl_session_cache shared:SSL:10m;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """An ECDSA P-256 leaf for 127.0.0.1/localhost from a throwaway built-in CA."""
    from backhaul.pki import CaStore, issue_leaf

    now = datetime.datetime.now(UTC)
    store = CaStore(directory / "state")
    authority = store.init(now)
    leaf = issue_leaf(authority, ["localhost", "127.0.0.1"], now)
    cert, key = directory / "leaf.pem", directory / "leaf.key"
    cert.write_bytes(leaf.chain_pem)
    key.write_bytes(leaf.key_pem)
    os.chmod(key, 0o600)
    return cert, key, store.root_cert_path


def check_https(port: int, root: Path) -> None:
    """The proxy answers 200 with the body over verified TLS 1.3."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--tlsv1.3",
            "--cacert",
            str(root),
            "--max-time",
            "10",
            f"https://127.0.0.1:{port}/files/13B",
        ],
        capture_output=True,
        timeout=20,
    )
    if out.stdout != BODY:
        raise BenchError(f"https://127.0.0.1:{port}/files/13B: {out.stdout[:100]!r} {out.stderr!r}")


# What the floor servers share: their arguments, the listener's TLS context as backhaul makes
# it, the 13-byte answer; each ends with SERVE_FLOOR (its protocol class, TLS or not).
FLOOR_PRELUDE = """
import asyncio, ssl, sys
from types import SimpleNamespace
import uvloop
from backhaul.edge.tls import server_context

cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = SimpleNamespace(
    min_version="1.3", session_tickets=True, client_auth=None, handshake_timeout=10.0
)
context = server_context(config, (cert, key, None))
ANSWER = b"HTTP/1.1 200 OK\\r\\nContent-Length: 13\\r\\n\\r\\nhello, world\\n"
CLOSE = ANSWER.replace(b"\\r\\n\\r\\n", b"\\r\\nConnection: close\\r\\n\\r\\n", 1)
"""

SERVE_FLOOR = """

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_server({protocol}, "127.0.0.1", port, ssl={ssl}, backlog=4096)
    await asyncio.Event().wait()

uvloop.run(main())
"""


FLOOR_SERVER = (
    FLOOR_PRELUDE
    + """

class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if data.endswith(b"\\r\\n\\r\\n"):  # wrk's requests fit in one read
            if b"Connection: close" in data:
                self.transport.write(CLOSE)
                self.transport.close()
            else:
                self.transport.write(ANSWER)
"""
    + SERVE_FLOOR.format(protocol="Answer", ssl="context")
)


FLOOR_DRIVER = (
    FLOOR_PRELUDE
    + """
WantRead, MemoryBIO = ssl.SSLWantReadError, ssl.MemoryBIO


class Driver(asyncio.Protocol):
    # TLS over the plain TCP transport: the C object of the context's own wrap_bio, no
    # timers, what OpenSSL wrote goes out in one write per event, close right after our
    # close_notify (as nginx does).
    def connection_made(self, transport):
        self.transport = transport
        self.incoming, self.outgoing = MemoryBIO(), MemoryBIO()
        self.tls = context._wrap_bio(
            self.incoming, self.outgoing, server_side=True, server_hostname=None
        )
        self.ready = False

    def data_received(self, data):
        self.incoming.write(data)
        tls = self.tls
        if not self.ready:
            try:
                tls.do_handshake()
            except WantRead:
                self.transport.write(self.outgoing.read())
                return
            except ssl.SSLError:
                self.transport.write(self.outgoing.read())
                self.transport.close()
                return
            self.ready = True
        if not (self.incoming.pending or tls.pending()):
            return
        try:
            request = tls.read(65536)
        except WantRead:
            return
        if request.endswith(b"\\r\\n\\r\\n"):  # wrk's requests fit in one read
            if b"Connection: close" in request:
                tls.write(CLOSE)
                try:
                    tls.shutdown()
                except WantRead:
                    pass
                self.transport.write(self.outgoing.read())
                self.transport.close()
            else:
                tls.write(ANSWER)
                self.transport.write(self.outgoing.read())
"""
    + SERVE_FLOOR.format(protocol="Driver", ssl="None")
)


FLOOR_PROXY = (
    FLOOR_PRELUDE
    + """
origin = int(sys.argv[4])
idle = []  # kept-alive origin connections, last used first


class Upstream(asyncio.Protocol):
    client = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):  # the origin's 13-byte answers fit in one read
        client, self.client = self.client, None
        idle.append(self)
        if client is not None and client.transport is not None:
            head, _, body = data.partition(b"\\r\\n\\r\\n")
            client.transport.write(head + b"\\r\\nConnection: close\\r\\n\\r\\n" + body)
            client.transport.close()

    def connection_lost(self, exc):
        if self in idle:
            idle.remove(self)


class Client(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if data.endswith(b"\\r\\n\\r\\n"):
            request = data.replace(b"Connection: close\\r\\n", b"")
            if idle:
                upstream = idle.pop()
                upstream.client = self
                upstream.transport.write(request)
            else:
                asyncio.get_running_loop().create_task(self.connect(request))

    async def connect(self, request):
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(Upstream, "127.0.0.1", origin)
        upstream.client = self
        upstream.transport.write(request)

    def connection_lost(self, exc):
        self.transport = None
"""
    + SERVE_FLOOR.format(protocol="Client", ssl="context")
)


def wrk_like_client(port: int, count: int) -> int:
    """``count`` sequential HTTPS requests on new connections, as wrk makes them with
    ``Connection: close``: each offers the session of the one before (so all but the first
    resume), reads the answer to the end, sends close_notify and closes. The number of
    resumed handshakes."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    request = b"GET /files/13B HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    session = None
    resumed = 0
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
            tls = context.wrap_socket(raw, server_hostname="localhost", session=session)
            resumed += tls.session_reused
            tls.sendall(request)
            answer = b""
            while True:
                try:
                    chunk = tls.recv(65536)
                except ssl.SSLZeroReturnError:
                    break
                if not chunk:
                    break
                answer += chunk
            if not answer.endswith(BODY):
                raise BenchError(f"127.0.0.1:{port} answered {answer[:200]!r}")
            session = tls.session
            try:
                tls.unwrap()
            except (OSError, ssl.SSLError):
                pass
    return resumed


def callgrind_total(path: Path) -> int:
    """The instruction count (Ir) of one callgrind dump."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise BenchError(f"{path}: no totals line (is it a callgrind dump?)")


def instructions(args: argparse.Namespace) -> int:
    """``--instructions``: user-space instructions per new TLS connection (see the module
    text), backhaul beside the floor and the floor with a proxy leg."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(
                f"bench.tls: --instructions needs {tool} (Debian package valgrind;"
                " scripts/sysdeps.sh bench installs it)",
                file=sys.stderr,
            )
            return 1
    count, warm = args.connections, 20
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tls-ir-") as tmp, Processes(Path(tmp)) as procs:
        os.chmod(tmp, 0o755)
        bench = TlsBench(args, Path(tmp), procs)
        try:
            origin = bench.nginx(
                "origin", ORIGIN_CONF.format(dir=bench.dir, port=bench.origin_port), LOAD_CORE
            )
            wait_listening(procs, "origin", origin, bench.origin_port)
            dumps = Path(tmp) / "callgrind"
            dumps.mkdir()
            valgrind = [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                "--trace-children=yes",
            ]
            config = {
                "workers": 1,
                "access_log": {"enabled": False},
                "listeners": [
                    {
                        "name": "https",
                        "address": f"127.0.0.1:{bench.backhaul_port}",
                        "tls": {
                            "cert": str(bench.cert),
                            "key": str(bench.key),
                            "min_version": "1.3",
                        },
                    }
                ],
                "routes": [{"name": "files", "proxy": {"cluster": "origin"}}],
                "clusters": {
                    "origin": {
                        "endpoints": [f"127.0.0.1:{bench.origin_port}"],
                        "pool": {"max_idle": 64},
                    }
                },
            }
            (Path(tmp) / "backhaul.yaml").write_text(yaml.safe_dump(config))
            floor_script, proxy_script = Path(tmp) / "floor.py", Path(tmp) / "floor_proxy.py"
            floor_script.write_text(FLOOR_SERVER)
            proxy_script.write_text(FLOOR_PROXY)
            proxy_port = free_ports(1)[0]
            tls_args = [str(bench.cert), str(bench.key)]
            origin_port = str(bench.origin_port)
            servers = {
                "backhaul": (
                    [backhaul_bin(), "serve", "-c", str(Path(tmp) / "backhaul.yaml")],
                    bench.backhaul_port,
                ),
                "floor": (
                    [sys.executable, str(floor_script), *tls_args, str(bench.floor_port)],
                    bench.floor_port,
                ),
                "floor+proxy": (
                    [sys.executable, str(proxy_script), *tls_args, str(proxy_port), origin_port],
                    proxy_port,
                ),
            }
            for name, (argv, port) in servers.items():
                out = f"--callgrind-out-file={dumps}/{name.replace('+', '-')}.%p"
                proc = procs.start(name, [*valgrind, out, *argv], PROXY_CORE)
                wait_listening(procs, name, proc, port)
                members = sorted(group_members(proc.pid))
                pid = members[-1]  # backhaul: its one worker (forked after the supervisor)
                wrk_like_client(port, warm)
                control = ["callgrind_control", "-i", "on", str(pid)]
                subprocess.run(control, check=True, capture_output=True, timeout=60)
                resumed = wrk_like_client(port, count)
                for step in (["-d"], ["-i", "off"]):
                    subprocess.run(
                        ["callgrind_control", *step, str(pid)],
                        check=True,
                        capture_output=True,
                        timeout=60,
                    )
                dump = sorted(dumps.glob(f"{name.replace('+', '-')}.{pid}*"))
                if not dump:
                    raise BenchError(f"{name}: callgrind wrote no dump for pid {pid}")
                results[name] = callgrind_total(dump[-1]) / count
                print(
                    f"{name:12} {results[name] / 1000:8.1f} k instructions per connection"
                    f"  ({resumed} of {count} handshakes resumed)",
                    flush=True,
                )
        except (BenchError, subprocess.SubprocessError) as exc:
            print(f"bench.tls: {exc}", file=sys.stderr)
            return 1
    floor = results["floor"]
    print("\n| server | k instructions per new connection | over the floor |")
    print("| --- | --- | --- |")
    for name, value in results.items():
        print(f"| {name} | {value / 1000:,.1f} | {value / floor - 1:+.1%} |")
    return 0


def negotiated(port: int, root: Path, workdir: Path) -> dict[str, str]:
    """What ``openssl s_client`` negotiates with the server on ``port``: protocol, cipher,
    key exchange group, session tickets received, ALPN, and whether the saved session
    resumes on a second connection."""
    saved = workdir / f"session-{port}.pem"
    request = b"GET /files/13B HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"

    def s_client(*args: str) -> str:
        argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3"]
        out = subprocess.run(
            [*argv, "-CAfile", str(root), "-alpn", "http/1.1", "-ign_eof", *args],
            input=request,
            capture_output=True,
            timeout=20,
        )
        return (out.stdout + out.stderr).decode(errors="replace")

    first = s_client("-msg", "-sess_out", str(saved))
    second = s_client("-sess_in", str(saved))

    def field(pattern: str, text: str = first) -> str:
        found = re.search(pattern, text, re.MULTILINE)
        return found.group(1).strip() if found else "?"

    return {
        "protocol": field(r"^\s*Protocol\s*:\s*(\S+)"),
        "cipher": field(r"^\s*Cipher\s*:\s*(\S+)"),
        "group": field(r"^Server Temp Key: (.+)$"),
        "tickets": str(first.count("NewSessionTicket")),
        "alpn": field(r"^ALPN protocol: (.+)$") if "ALPN protocol" in first else "none",
        "verified": "yes" if "Verify return code: 0 (ok)" in first else "no",
        "resumed": "yes" if "Reused, TLSv1.3" in second else "no",
    }


def core_busy(core: int) -> tuple[int, int]:
    """Busy and total jiffies of one CPU so far."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(x) for x in line.split()[1:]]
            return sum(ticks) - ticks[3] - ticks[4], sum(ticks)
    raise BenchError(f"/proc/stat has no cpu{core}")


def wrk(port: int, seconds: float, close: bool) -> dict[str, Any]:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c50", f"-d{seconds:g}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(
        [*argv, f"https://127.0.0.1:{port}/files/13B"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    if out.returncode != 0:
        raise BenchError(f"wrk failed: {out.stderr.strip() or out.stdout}")
    return parse_wrk(out.stdout)


class TlsBench:
    def __init__(self, args: argparse.Namespace, workdir: Path, procs: Processes) -> None:
        self.args = args
        self.dir = workdir
        self.procs = procs
        (workdir / "tmp").mkdir()
        (workdir / "www" / "files").mkdir(parents=True)
        (workdir / "www" / "files" / "13B").write_bytes(BODY)
        self.cert, self.key, self.root = make_certificate(workdir)
        self.origin_port, self.nginx_port, self.backhaul_port, self.floor_port = free_ports(4)
        self.driver_port = free_ports(1)[0]
        self.ports = {"nginx": self.nginx_port, "backhaul": self.backhaul_port}
        self.pgids: dict[str, int] = {}

    def nginx(self, name: str, conf: str, core: str) -> subprocess.Popen[bytes]:
        path = self.dir / f"{name}.conf"
        path.write_text(conf)
        return self.procs.start(
            name, ["nginx", "-p", str(self.dir), "-c", str(path), "-e", "stderr"], core
        )

    def start(self) -> None:
        origin = self.nginx(
            "origin", ORIGIN_CONF.format(dir=self.dir, port=self.origin_port), LOAD_CORE
        )
        wait_listening(self.procs, "origin", origin, self.origin_port)
        conf = NGINX_TLS_CONF.format(
            dir=self.dir,
            port=self.nginx_port,
            origin=self.origin_port,
            cert=self.cert,
            key=self.key,
        )
        nginx = self.nginx("nginx-tls", conf, PROXY_CORE)
        wait_listening(self.procs, "nginx-tls", nginx, self.nginx_port)
        check_https(self.nginx_port, self.root)
        self.pgids["nginx"] = nginx.pid
        config = {
            "workers": 1,
            "access_log": {"enabled": False},
            "listeners": [
                {
                    "name": "https",
                    "address": f"127.0.0.1:{self.backhaul_port}",
                    "tls": {"cert": str(self.cert), "key": str(self.key), "min_version": "1.3"},
                }
            ],
            "routes": [{"name": "files", "proxy": {"cluster": "origin"}}],
            "clusters": {
                "origin": {
                    "endpoints": [f"127.0.0.1:{self.origin_port}"],
                    "pool": {"max_idle": 64},
                }
            },
        }
        path = self.dir / "backhaul.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = self.procs.start(
            "backhaul", [backhaul_bin(), "serve", "-c", str(path), "--workers", "1"], PROXY_CORE
        )
        wait_listening(self.procs, "backhaul", proc, self.backhaul_port)
        check_https(self.backhaul_port, self.root)
        self.pgids["backhaul"] = proc.pid
        if self.args.floor:
            script = self.dir / "floor.py"
            script.write_text(FLOOR_SERVER)
            argv = [sys.executable, str(script), str(self.cert), str(self.key)]
            floor = self.procs.start("floor", [*argv, str(self.floor_port)], PROXY_CORE)
            wait_listening(self.procs, "floor", floor, self.floor_port)
            check_https(self.floor_port, self.root)
            self.pgids["floor"] = floor.pid
            self.ports["floor"] = self.floor_port
            script = self.dir / "driver.py"
            script.write_text(FLOOR_DRIVER)
            argv = [sys.executable, str(script), str(self.cert), str(self.key)]
            driver = self.procs.start("driver", [*argv, str(self.driver_port)], PROXY_CORE)
            wait_listening(self.procs, "driver", driver, self.driver_port)
            check_https(self.driver_port, self.root)
            self.pgids["driver"] = driver.pid
            self.ports["driver"] = self.driver_port

    def run(self, proxy: str, close: bool) -> dict[str, Any]:
        port = self.ports[proxy]
        pgid = self.pgids[proxy]
        user0, sys0 = cpu_seconds(pgid)
        busy0, total0 = core_busy(int(PROXY_CORE))
        start = time.monotonic()
        result = wrk(port, self.args.duration, close)
        wall = time.monotonic() - start
        user1, sys1 = cpu_seconds(pgid)
        busy1, total1 = core_busy(int(PROXY_CORE))
        result["proxy_cpu"] = (user1 - user0 + sys1 - sys0) / wall
        core = (busy1 - busy0) / max(total1 - total0, 1)
        result["others_cpu"] = max(core - result["proxy_cpu"], 0.0)
        result["user_us"] = (user1 - user0) / max(result["requests"], 1) * 1e6
        result["sys_us"] = (sys1 - sys0) / max(result["requests"], 1) * 1e6
        return result


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def per_request(runs: list[dict[str, Any]]) -> float:
    """Median user+sys CPU µs per request."""
    return statistics.median(r["user_us"] + r["sys_us"] for r in runs)


def cost(runs: list[dict[str, Any]]) -> str:
    """``user+sys`` CPU µs per request (medians): less sensitive to a busy machine than
    req/s."""
    return f"{median_of(runs, 'user_us'):.1f}+{median_of(runs, 'sys_us'):.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s (a smoke run)")
    parser.add_argument(
        "--floor", action="store_true", help="also a minimal uvloop TLS server (no proxying)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="run again (at most this often) when other processes took >10%% of the core",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count user-space instructions per new connection under valgrind instead",
    )
    parser.add_argument(
        "--connections", type=int, default=200, help="connections counted by --instructions"
    )
    args = parser.parse_args(argv)
    if args.instructions:
        args.floor = True
        return instructions(args)
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    loads = {"keep-alive": False, "handshakes": True}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp, Processes(Path(tmp)) as procs:
        os.chmod(tmp, 0o755)  # nginx workers run as nobody and read the body
        bench = TlsBench(args, Path(tmp), procs)
        try:
            bench.start()
            contestants = list(bench.ports)
            print("| server | protocol | cipher | group | tickets | ALPN | verified | resumed |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
            for name in contestants:
                n = negotiated(bench.ports[name], bench.root, Path(tmp))
                print(f"| {name} | " + " | ".join(n.values()) + " |")
            print("nginx: ssl_protocols TLSv1.3; ssl_session_tickets on;"
                  " ssl_session_cache shared:SSL:10m; default ssl_ecdh_curve (auto)\n")  # fmt: skip
            for r in range(args.rounds):
                for load, close in loads.items():
                    for proxy in contestants:
                        result = bench.run(proxy, close)
                        for _ in range(args.retries):
                            if result["others_cpu"] <= NOISY:
                                break
                            others = result["others_cpu"]
                            print(f"round {r + 1} {load} {proxy}: again, others took {others:.0%}")
                            result = bench.run(proxy, close)
                        runs.setdefault((load, proxy), []).append(result)
                        noisy = "  (others on the core!)" if result["others_cpu"] > NOISY else ""
                        print(
                            f"round {r + 1} {load:10} {proxy:8} {result['rps']:>10,.0f} req/s"
                            f"  p99 {result['p99_ms']:.2f} ms  proxy CPU"
                            f" {result['proxy_cpu']:.0%}  others {result['others_cpu']:.0%}"
                            f"  errors {result['errors']}{noisy}",
                            flush=True,
                        )
        except BenchError as exc:
            print(f"bench.tls: {exc}", file=sys.stderr)
            return 1
    print()
    print(
        "| load | nginx req/s | backhaul req/s | ratio | target | proxy CPU nginx / backhaul |"
        " user+sys µs per req nginx / backhaul | CPU-efficiency ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    summary: dict[str, Any] = {}
    for load, target in (("keep-alive", TARGET_KEEPALIVE), ("handshakes", TARGET_HANDSHAKES)):
        nginx = median_of(runs[(load, "nginx")], "rps")
        ours = median_of(runs[(load, "backhaul")], "rps")
        ratio = ours / nginx if nginx else 0.0
        efficiency = per_request(runs[(load, "nginx")]) / per_request(runs[(load, "backhaul")])
        summary[load] = {
            "nginx_rps": nginx,
            "backhaul_rps": ours,
            "ratio": ratio,
            "target": target,
            "met": ratio >= target,
            "cpu_efficiency_ratio": efficiency,
        }
        print(
            f"| {load} | {nginx:,.0f} | {ours:,.0f} | {ratio:.2f} | ≥ {target:.2f}"
            f" {'✓' if ratio >= target else '✗'} |"
            f" {median_of(runs[(load, 'nginx')], 'proxy_cpu'):.0%} /"
            f" {median_of(runs[(load, 'backhaul')], 'proxy_cpu'):.0%} |"
            f" {cost(runs[(load, 'nginx')])} / {cost(runs[(load, 'backhaul')])} |"
            f" {efficiency:.2f} |"
        )
    print(
        "\nothers on the proxy's core (median, nginx / backhaul): "
        + ", ".join(
            f"{load} {median_of(runs[(load, 'nginx')], 'others_cpu'):.0%} /"
            f" {median_of(runs[(load, 'backhaul')], 'others_cpu'):.0%}"
            for load in loads
        )
    )
    if args.floor:
        print("\n| load | server | req/s | ratio to nginx | CPU | user+sys µs per req |")
        print("| --- | --- | --- | --- | --- | --- |")
        for load in loads:
            for name in ("floor", "driver"):
                floor = median_of(runs[(load, name)], "rps")
                nginx = median_of(runs[(load, "nginx")], "rps")
                summary[load][f"{name}_rps"] = floor
                summary[load][f"{name}_cpu_efficiency_ratio"] = per_request(
                    runs[(load, "nginx")]
                ) / per_request(runs[(load, name)])
                print(
                    f"| {load} | {name} | {floor:,.0f} | {floor / nginx if nginx else 0:.2f} |"
                    f" {median_of(runs[(load, name)], 'proxy_cpu'):.0%} |"
                    f" {cost(runs[(load, name)])} |"
                )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"tls-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "summary": summary,
                "runs": {f"{k[0]}/{k[1]}": v for k, v in runs.items()},
            },
            indent=2,
        )
    )
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
