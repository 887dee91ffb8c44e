"""backhaul against nginx as reverse proxies, side by side in one run (issue 2, section 6).

    python -m bench.proxy [--quick] [--sizes 13B,100KiB] [--rounds 3] [--duration 8]
                          [--only nginx|nginx-big|backhaul] [--idle-connections 10000]
                          [--scenario foundation|cluster] [--urls spread|one]
                          [--no-big-buffers]

One nginx upstream (1 worker) serves static bodies, pinned to core 1 with wrk. Each proxy
(1 worker) is pinned to core 0: nginx with default buffers, nginx with buffers sized for the
body (100 KiB and 1 MiB only) and backhaul. For every round, body size and proxy in turn
(interleaved, the order of the proxies alternating between rounds) `wrk -t1 -c50 --latency`
runs with a Lua script that spreads the requests over all 20 routes; medians over rounds are
compared, with wrk's own CPU and the spread between rounds. Then each proxy, restarted
fresh, is measured for RSS idle and holding 10,000 idle keep-alive connections. Figures go
to stdout (Markdown tables) and to bench/results/proxy-<timestamp>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .idle_clients import raise_nofile_limit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PROXY_CORE, LOAD_CORE = "0", "1"
WRK_CONNECTIONS = 50  # wrk -c
SIZES = {"13B": 13, "1KiB": 1024, "100KiB": 100 * 1024, "1MiB": 1024 * 1024}
SMALL = ("13B", "1KiB")
# Issue 7's targets: small bodies (13 B, 1 KiB) at >= 0.85x nginx's req/s with p99 <= 1.5x
# nginx's and <= 5 us user CPU per request (system time within 1.1x nginx's); 100 KiB and
# 1 MiB at >= 1.2x nginx with buffers sized for the body; <= 50 MB RSS for all processes
# holding 10,000 idle keep-alive connections.
MIN_RPS_RATIO_SMALL, MAX_P99_RATIO, MIN_RPS_RATIO_BIG, MAX_RSS_MB = 0.85, 1.5, 1.2, 50.0
MAX_USER_US_SMALL, MAX_SYS_RATIO_SMALL = 5.0, 1.1
# The proxies: nginx with its default proxy buffers, nginx with buffers sized for the body
# (run at the sizes in BIG only), backhaul.
PROXIES = ("nginx", "nginx-big", "backhaul")
BIG = ("100KiB", "1MiB")
NGINX_BUFFERS = {
    "nginx": "",  # nginx's defaults: proxy_buffer_size and 8 proxy_buffers of one page
    # a whole 1 MiB body fits in the buffers: nginx never waits on a full buffer
    "nginx-big": "proxy_buffer_size 64k;\nproxy_buffers 32 64k;\nproxy_busy_buffers_size 1m;\n",
}
NGINX_PROXY = """proxy_pass http://origin;
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header Host $http_host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;
proxy_set_header X-Forwarded-Host $host;
proxy_set_header X-Request-Id $request_id;
proxy_set_header Via "1.1 nginx";
"""
# Distinct (Host, path) pairs per route in the spread request mix: 20 routes x 256, more than
# a cache of routing results would hold, so routing is done, not remembered, by either proxy.
SPREAD_VARIANTS = 256

# The 19 routes in front of /files/, rendered for both proxies, each proxying to the origin:
# (match kind, value, sample). A sample is "[HOST ]PATH" with {n} (0..), {m} (01-12) and
# {d} (01-28): a request this route matches and no route above it does (for nginx too,
# whose regex locations win over prefixes). wrk spreads its requests over every route.
DECOYS: list[tuple[str, str, str]] = [
    ("host", "api.example.com", "api.example.com /v/{n}"),
    ("host", "*.internal.example.com", "s{m}.internal.example.com /v/{n}"),
    ("host", "admin.example.com", "admin.example.com /v/{n}"),
    ("host", "static.example.net", "static.example.net /v/{n}"),
    ("path", "/healthz", "/healthz"),
    ("path", "/robots.txt", "/robots.txt"),
    ("prefix", "/api/v1/users/", "/api/v1/users/{n}"),
    ("prefix", "/api/v1/orders/", "/api/v1/orders/{n}"),
    ("prefix", "/api/v2/", "/api/v2/things/{n}"),
    ("prefix", "/static/", "/static/{n}.css"),
    ("prefix", "/assets/", "/assets/{n}.js"),
    ("prefix", "/old/", "/old/{n}"),
    ("prefix", "/graphql", "/graphql/{n}"),
    ("regex", r"/api/v[0-9]+/items/[0-9]+", "/api/v3/items/{n}"),
    ("regex", r"/u/[a-z0-9_-]{3,32}", "/u/user{n}"),
    ("regex", r"/.*\.(php|asp|aspx|jsp)", "/x/{n}/index.php"),
    ("regex", r"/(wp-admin|wp-login|xmlrpc).*", "/wp-admin/{n}"),
    ("regex", r"/media/[0-9]{4}/[0-9]{2}/.+\.(jpg|png|webp)", "/media/2024/{m}/{n}.jpg"),
    ("regex", r"/reports/[0-9]{4}-[0-9]{2}-[0-9]{2}\.csv", "/reports/2024-{m}-{d}.csv"),
]
BENCH_ROUTE = ("prefix", "/files/", "/files/{n}")


@dataclass(frozen=True)
class Scenario:
    """What the proxies are asked to do beyond plain forwarding."""

    endpoints: int = 1  # upstream ports (all served by the one origin nginx worker)
    nginx_balance: str = ""  # a directive for nginx's upstream block, e.g. "least_conn;"
    backhaul_cluster: dict[str, Any] = field(default_factory=dict)  # extra cluster keys
    admin: bool = False  # give backhaul an admin listener (metrics)


SCENARIOS = {
    "foundation": Scenario(),
    # Issue 3: three endpoints, least_request with active HTTP health checks and metrics on;
    # nginx gets the nearest it has without a paid edition (least_conn, passive checks only).
    "cluster": Scenario(
        endpoints=3,
        nginx_balance="least_conn;",
        admin=True,
        backhaul_cluster={
            "policy": "least_request",
            "health_checks": {"type": "http", "interval": "1s", "http": {"path": "/files/13B"}},
        },
    ),
}


class BenchError(Exception):
    """Something the benchmark cannot work around; the message says what."""


@dataclass
class Proxy:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    access_log: Path


class Processes:
    """Starts pinned children, each in its own process group, and stops them all on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], core: str, **kw: Any) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.out").open("ab") as out:
            kw.setdefault("stdout", out)
            proc = subprocess.Popen(
                ["taskset", "-c", core, *argv],
                stdin=kw.pop("stdin", subprocess.DEVNULL),
                stderr=out,
                cwd=ROOT,
                start_new_session=True,
                **kw,
            )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if group_members(proc.pid):  # children left behind by a leader that died
            os.killpg(proc.pid, signal.SIGKILL)
        self.running.remove(proc)

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.running[:]):
            self.stop(proc)


# --- /proc readings -------------------------------------------------------------------------


def group_stats(pgid: int) -> dict[int, list[str]]:
    """/proc/PID/stat fields (those after the command name) of the live processes in `pgid`."""
    stats = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            stats[int(entry.name)] = fields
    return stats


def group_members(pgid: int) -> list[int]:
    return list(group_stats(pgid))


def cpu_seconds(pgid: int) -> tuple[float, float]:
    """User and system CPU time used so far by the live processes of group `pgid`."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = group_stats(pgid).values()
    return sum(int(f[11]) for f in stats) / tick, sum(int(f[12]) for f in stats) / tick


def kb_field(path: str, name: str) -> int:
    """A "Name:  123 kB" line of a /proc file, in bytes (0 when absent)."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(name):
            return int(line.split()[1]) * 1024
    return 0


def socket_count(pid: int) -> int:
    count = 0
    for entry in os.scandir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(entry.path).startswith("socket:")
        except OSError:
            pass
    return count


def busy_fraction(seconds: float = 0.5) -> float:
    """Share of all CPUs busy over `seconds` (taken while our own processes are idle)."""

    def sample() -> tuple[int, int]:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def memory(pgid: int) -> dict[str, int]:
    """RSS of a process group, all of it and of its worker; PSS counts pages shared after
    fork once."""
    pids = group_members(pgid)
    worker = worker_pid(pgid)
    return {
        "processes": len(pids),
        "rss_total": sum(kb_field(f"/proc/{pid}/status", "VmRSS:") for pid in pids),
        "rss_worker": kb_field(f"/proc/{worker}/status", "VmRSS:"),
        "pss_total": sum(kb_field(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids),
        "worker_sockets": socket_count(worker),
    }


def settled_memory(pgid: int, limit: float = 15.0) -> dict[str, int]:
    """:func:`memory` once it has settled: two readings a second apart within 0.5% of each
    other (a proxy may free what idle connections held a moment after they went idle;
    backhaul parks them after a tick), or after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    last = memory(pgid)
    while True:
        time.sleep(1)
        now = memory(pgid)
        if abs(now["rss_total"] - last["rss_total"]) <= 0.005 * last["rss_total"]:
            return now
        if time.monotonic() > deadline:
            return now
        last = now


def worker_pid(pgid: int) -> int:
    """The worker of a process group: the non-leader holding the most sockets (the leader
    itself when it is alone)."""
    others = [pid for pid in group_members(pgid) if pid != pgid]
    return max(others, key=socket_count) if others else pgid


def top_frames(raw: Path, count: int = 15) -> list[tuple[float, str]]:
    """The frames with the most own time in py-spy's raw (collapsed stacks) output, in %."""
    own: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        own[stack.rsplit(";", 1)[-1] or "(no Python frame)"] += int(samples)
    total = sum(own.values()) or 1
    return [(round(100 * n / total, 1), frame) for frame, n in own.most_common(count)]


# --- rendering the configs ------------------------------------------------------------------


def render(template: str, **values: str) -> str:
    text = (HERE / "upstream" / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    if "@" in re.sub(r"#.*", "", text):
        raise BenchError(f"{template}: a placeholder was left unfilled")
    return text


def sample(template: str, n: int) -> tuple[str, str]:
    """(Host or "", path) of one request from a route's sample template."""
    text = template.format(n=n, m=f"{n % 12 + 1:02d}", d=f"{n % 28 + 1:02d}")
    host, _, path = text.rpartition(" ")
    return host, path


def spread_requests(variants: int = SPREAD_VARIANTS) -> list[tuple[str, str]]:
    """The request mix over all 20 routes, consecutive requests on different routes."""
    routes = [*DECOYS, BENCH_ROUTE]
    return [sample(template, n) for n in range(variants) for _, _, template in routes]


def wrk_script(path: Path, size: str) -> Path:
    """A wrk Lua script that cycles through the spread request mix, asking for `size`."""
    rows = ",\n".join(f'  {{"{host}", "{req_path}"}}' for host, req_path in spread_requests())
    path.write_text(
        f"""-- generated by bench/proxy.py: the request mix over every route, body {size}
local samples = {{
{rows}
}}
local requests = {{}}
local i = 0
init = function(args)
  for k, s in ipairs(samples) do
    local headers = {{["X-Bench-Size"] = "{size}"}}
    if s[1] ~= "" then headers["Host"] = s[1] end
    requests[k] = wrk.format("GET", s[2], headers)
  end
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
"""
    )
    return path


def nginx_decoys(port: int, name: str, workdir: Path) -> tuple[str, str]:
    """The routes in front of /files/ as nginx server blocks (host) and locations (path,
    prefix, regex), each proxying with the directives of ``NAME-proxy.inc``."""
    (workdir / f"{name}-proxy.inc").write_text(NGINX_PROXY + NGINX_BUFFERS[name])
    act = f"include {workdir}/{name}-proxy.inc;"
    servers, locations = [], []
    for kind, value, _ in DECOYS:
        if kind == "host":
            servers.append(
                f"    server {{\n        listen 127.0.0.1:{port};\n        server_name {value};\n"
                f"        location / {{ {act} }}\n    }}"
            )
        else:
            where = {"path": f"= {value}", "prefix": value, "regex": f'~ "^{value}$"'}[kind]
            locations.append(f"        location {where} {{ {act} }}")
    return "\n".join(servers), "\n".join(locations)


def backhaul_config(
    port: int, upstream_ports: list[int], access_log: Path, scenario: Scenario, admin_port: int
) -> dict[str, Any]:
    """The edge config (config_spec.md): 19 routes, then /files/, all to the origin."""
    routes: list[dict[str, Any]] = [
        {"name": f"decoy-{i}", "match": {kind: value}, "proxy": {"cluster": "origin"}}
        for i, (kind, value, _) in enumerate(DECOYS, 1)
    ]
    routes.append({"name": "bench", "match": {"prefix": "/files/"}, "proxy": {"cluster": "origin"}})
    config: dict[str, Any] = {
        "workers": 1,
        "access_log": {"enabled": True, "path": str(access_log), "format": "json"},
        "listeners": [
            {
                "name": "bench",
                "address": f"127.0.0.1:{port}",
                "timeouts": {"keepalive_idle": "300s", "drain": "2s"},
            }
        ],
        "routes": routes,
        "clusters": {
            "origin": {
                "endpoints": [f"127.0.0.1:{p}" for p in upstream_ports],
                "pool": {"max_idle": 64, "idle_timeout": "300s"},
                **scenario.backhaul_cluster,
            }
        },
    }
    if scenario.admin:
        config["admin"] = {"address": f"127.0.0.1:{admin_port}"}
    return config


# --- load -----------------------------------------------------------------------------------

_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = r"([\d.]+)(us|ms|s|m|h)\b"


def parse_wrk(text: str) -> dict[str, Any]:
    """req/s, latency percentiles (ms) and error counts from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    percentiles = {
        f"p{p}_ms": float(v) * _MS[unit]
        for p, v, unit in re.findall(rf"^\s+(50|75|90|99)%\s+{_DURATION}", text, re.MULTILINE)
    }
    if rps is None or total is None or "p99_ms" not in percentiles:
        raise BenchError(f"unexpected wrk output:\n{text}")
    socket_errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        **percentiles,
        "errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def wrk(port: int, size: str, seconds: float, script: Path | None = None) -> dict[str, Any]:
    """One wrk run: on /files/SIZE alone, or with `script` spreading over every route.
    Also the CPU time wrk itself used (``wrk_cpu_s``): the load side must not be the limit."""
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds:g}s"]
    url = f"http://127.0.0.1:{port}/files/{size}"
    extra = ["-s", str(script)] if script is not None else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # taskset execs wrk: same process
    out = subprocess.run(
        [*argv, "--latency", *extra, url], capture_output=True, text=True, timeout=seconds + 30
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise BenchError(f"wrk failed on {url}: {out.stderr.strip() or out.stdout}")
    result = parse_wrk(out.stdout)
    result["wrk_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def curl(port: int, path: str, expect: str, host: str = "", size: str = "") -> None:
    """One GET through curl; `expect` is "<status> <body bytes>" or just "<status>"; `size`
    asks the origin for that body whatever the path (X-Bench-Size)."""
    url = f"http://127.0.0.1:{port}{path}"
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
    argv += ["--max-time", "10", *(["-H", f"Host: {host}"] if host else [])]
    argv += [*(["-H", f"X-Bench-Size: {size}"] if size else []), url]
    out = subprocess.run(argv, capture_output=True, text=True)
    if not f"{out.stdout.strip()} ".startswith(f"{expect} "):
        raise BenchError(
            f"{url}{f' (Host: {host})' if host else ''}: expected '{expect}' (status, body "
            f"bytes), got {out.stdout.strip()!r} {out.stderr.strip()}"
        )


def check_body(port: int, size: str) -> None:
    """The benchmarked route answers 200 with the whole body."""
    curl(port, f"/files/{size}", f"200 {SIZES[size]}")


ROUTE_NAMES = [*(f"decoy-{i}" for i in range(1, len(DECOYS) + 1)), "bench"]


def check_routes(port: int, size: str) -> None:
    """Every route answers its sample request with the whole body of `size`."""
    for _, _, template in [*DECOYS, BENCH_ROUTE]:
        host, path = sample(template, 1)
        curl(port, path, f"200 {SIZES[size]}", host=host, size=size)


def check_route_names(access_log: Path) -> None:
    """backhaul logged the route each sample was meant for, in order (after check_routes)."""
    deadline = time.monotonic() + 10
    routes: list[str] = []
    while time.monotonic() < deadline:
        if access_log.exists():
            lines = access_log.read_text().splitlines()
            routes = [json.loads(line).get("route") for line in lines if line.strip()]
            if len(routes) >= len(ROUTE_NAMES):
                break
        time.sleep(0.1)
    if routes[: len(ROUTE_NAMES)] != ROUTE_NAMES:
        raise BenchError(f"backhaul routed the samples to {routes}, expected {ROUTE_NAMES}")


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_listening(procs: Processes, name: str, proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with {proc.returncode}:\n{procs.tail(name)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"{name} is not listening on 127.0.0.1:{port}") from None
            time.sleep(0.05)


def backhaul_bin() -> str:
    return str(Path(sys.executable).with_name("backhaul"))


def take_log_bytes(path: Path) -> int:
    """Bytes the access log grew by since the last call; empties it to bound disk use."""
    size = path.stat().st_size if path.exists() else 0
    if size:
        os.truncate(path, 0)
    return size


def describe(run: dict[str, Any]) -> str:
    """One wrk run on one line."""
    errors = run["errors"] + run["non_2xx"]
    return (
        f"{run['size']:>6} {run['proxy']:>8}: {run['rps']:>9,.0f} req/s  "
        f"p50 {run['p50_ms']:6.2f} ms  p99 {run['p99_ms']:6.2f} ms  "
        f"cpu {run['cpu_user_us']:.1f}+{run['cpu_sys_us']:.1f} us/req  "
        f"log {run['log_bytes_per_request']:.0f} B/req  "
        f"load core {run['load_core_busy']:.0%} (wrk {run['wrk_cpu_us']:.1f} us/req)"
        + (f"  <-- {errors} ERRORS (socket errors or non-2xx)" if errors else "")
    )


# --- the run --------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, procs: Processes) -> None:
        self.args = args
        self.dir = workdir
        self.procs = procs
        self.scenario = SCENARIOS[args.scenario]
        self.upstream_ports = free_ports(self.scenario.endpoints)
        self.origin: subprocess.Popen[bytes] | None = None
        self.scripts: dict[str, Path | None] = {
            size: wrk_script(workdir / f"spread-{size}.lua", size)
            if args.urls == "spread"
            else None
            for size in args.sizes
        }

    def start_origin(self) -> None:
        www = self.dir / "www" / "files"
        www.mkdir(parents=True)
        pattern = b"hello, world\n"  # 13 bytes
        for label, size in SIZES.items():
            (www / label).write_bytes((pattern * (size // len(pattern) + 1))[:size])
        listen = "\n".join(f"        listen 127.0.0.1:{p};" for p in self.upstream_ports)
        conf = self.write(
            "origin.conf",
            render("origin.conf", DIR=str(self.dir), LISTEN=listen, WWW=str(self.dir / "www")),
        )
        proc = self.procs.start("origin", self.nginx_argv(conf), LOAD_CORE)
        self.origin = proc
        for port in self.upstream_ports:
            wait_listening(self.procs, "origin", proc, port)
            for size in self.args.sizes:
                check_body(port, size)

    def nginx_argv(self, conf: Path) -> list[str]:
        (self.dir / "tmp").mkdir(exist_ok=True)
        return [tool("nginx"), "-p", str(self.dir), "-c", str(conf), "-e", "stderr"]

    def write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        return path

    def start_proxy(self, name: str) -> Proxy:
        port, admin_port = free_ports(2)
        access_log = self.dir / f"{name}-access.log"
        if name.startswith("nginx") or self.args.peer_as_backhaul:
            kind = name if name.startswith("nginx") else "nginx"
            servers, locations = nginx_decoys(port, kind, self.dir)
            upstream = "\n".join(f"        server 127.0.0.1:{p};" for p in self.upstream_ports)
            text = render(
                "nginx-proxy.conf",
                DIR=str(self.dir),
                NAME=kind,
                PID=name,
                PORT=str(port),
                ACCESS_LOG=str(access_log),
                BALANCE=f"        {self.scenario.nginx_balance}",
                UPSTREAM_SERVERS=upstream,
                DECOY_SERVERS=servers,
                DECOY_LOCATIONS=locations,
            )
            argv = self.nginx_argv(self.write(f"{name}.conf", text))
        else:
            config = backhaul_config(
                port, self.upstream_ports, access_log, self.scenario, admin_port
            )
            path = self.write(f"{name}.yaml", yaml.safe_dump(config, sort_keys=False))
            argv = [backhaul_bin(), "serve", "-c", str(path), "--workers", "1"]
        proc = self.procs.start(name, argv, PROXY_CORE)
        wait_listening(self.procs, name, proc, port)
        take_log_bytes(access_log)  # a restarted proxy appends to its old log
        check_routes(port, self.args.sizes[0])
        if name == "backhaul" and not self.args.peer_as_backhaul:
            check_route_names(access_log)
        for size in self.args.sizes:
            check_body(port, size)
        return Proxy(name, port, proc, access_log)

    def load(self, proxies: list[Proxy]) -> list[dict[str, Any]]:
        args = self.args

        def runs_at(size: str, order: list[Proxy]) -> list[Proxy]:
            return [p for p in order if p.name != "nginx-big" or size in BIG]

        for size in args.sizes:  # warm-up: pools, caches, code paths; not recorded
            for proxy in runs_at(size, proxies):
                wrk(proxy.port, size, 1, self.scripts[size])
        for proxy in proxies:
            take_log_bytes(proxy.access_log)
        runs = []
        for rnd in range(1, args.rounds + 1):
            background = busy_fraction()
            if background > 0.1:
                print(
                    f"warning: {background:.0%} of the CPUs are busy with other work while "
                    "the proxies are idle; figures will be noisy",
                    flush=True,
                )
            # every other round the other way round, so neither proxy always goes first
            order = proxies if rnd % 2 else proxies[::-1]
            for size in args.sizes:
                for proxy in runs_at(size, order):
                    user0, sys0 = cpu_seconds(proxy.proc.pid)
                    origin0 = sum(cpu_seconds(self.origin.pid)) if self.origin else 0.0
                    run = wrk(proxy.port, size, args.duration, self.scripts[size])
                    origin1 = sum(cpu_seconds(self.origin.pid)) if self.origin else 0.0
                    time.sleep(0.3)  # let log buffers drain (nginx's may hold 64 KiB for 1 s)
                    user1, sys1 = cpu_seconds(proxy.proc.pid)
                    run.update(proxy=proxy.name, size=size, round=rnd, background_cpu=background)
                    per_request = 1e6 / max(run["requests"], 1)
                    run["cpu_user_us"] = round((user1 - user0) * per_request, 2)
                    run["cpu_sys_us"] = round((sys1 - sys0) * per_request, 2)
                    run["wrk_cpu_us"] = round(run["wrk_cpu_s"] * per_request, 2)
                    run["origin_cpu_us"] = round((origin1 - origin0) * per_request, 2)
                    # share of the load core (wrk + origin) in use: near 100% means the
                    # load side, not the proxy, set the pace
                    run["load_core_busy"] = round(
                        (run["wrk_cpu_s"] + origin1 - origin0) / args.duration, 3
                    )
                    run["log_bytes_per_request"] = round(
                        take_log_bytes(proxy.access_log) / max(run["requests"], 1), 1
                    )
                    runs.append(run)
                    print(f"round {rnd}/{args.rounds} {describe(run)}", flush=True)
        return runs

    def profile(self, proxy: Proxy, size: str, out: Path) -> list[tuple[float, str]]:
        """py-spy on backhaul's worker during one extra wrk run; raw stacks go to `out`."""
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        spy = shutil.which("py-spy", path=path)
        if not spy:
            raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
        seconds = int(self.args.duration) + 1
        argv = [spy, "record", "--nonblocking", "--function", "--format", "raw", "--rate", "250",
                "--duration", str(seconds), "--pid", str(worker_pid(proxy.proc.pid)),
                "--output", str(out)]  # fmt: skip
        recorder = self.procs.start("py-spy", argv, LOAD_CORE)
        time.sleep(0.5)
        wrk(proxy.port, size, seconds - 1, self.scripts.get(size))
        recorder.wait(timeout=30)
        self.procs.stop(recorder)
        if not out.exists():
            raise BenchError(f"py-spy wrote nothing:\n{self.procs.tail('py-spy')}")
        return top_frames(out)

    def rss(self, name: str) -> dict[str, Any]:
        """RSS of a fresh proxy idle, then holding `--idle-connections` keep-alive ones."""
        proxy = self.start_proxy(name)
        idle = settled_memory(proxy.proc.pid)
        count = self.args.idle_connections
        budget = 90
        argv = [
            sys.executable,
            "-m",
            "bench.idle_clients",
            "127.0.0.1",
            str(proxy.port),
            str(count),
            "/files/13B",
            str(budget),
        ]
        client = self.procs.start(
            f"{name}-clients", argv, LOAD_CORE, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert client.stdout is not None and client.stdin is not None
        ready, _, _ = select.select([client.stdout], [], [], budget + 10)
        line = client.stdout.readline().decode().strip() if ready else "no answer"
        held = settled_memory(proxy.proc.pid)
        client.stdin.close()
        self.procs.stop(client)
        self.procs.stop(proxy.proc)
        if not line.startswith(f"held {count}"):
            print(f"  {name}: idle clients: {line}; {self.procs.tail(name + '-clients')}")
        per_conn = (held["rss_worker"] - idle["rss_worker"]) / max(count, 1)
        return {"idle": idle, "held": held, "clients": line, "per_connection_bytes": per_conn}


# --- reporting ------------------------------------------------------------------------------


MEDIAN_KEYS = (
    "rps",
    "p50_ms",
    "p99_ms",
    "cpu_user_us",
    "cpu_sys_us",
    "wrk_cpu_us",
    "origin_cpu_us",
    "load_core_busy",
)


def medians(runs: list[dict[str, Any]], proxy: str, size: str) -> dict[str, float] | None:
    mine = [r for r in runs if r["proxy"] == proxy and r["size"] == size]
    if not mine:
        return None
    out = {k: statistics.median(r[k] for r in mine) for k in MEDIAN_KEYS}
    rps = [r["rps"] for r in mine]
    # the spread between rounds: how far apart the same measurement landed
    out["rps_min"], out["rps_max"] = min(rps), max(rps)
    out["rps_spread"] = (max(rps) - min(rps)) / max(out["rps"], 1e-9)
    return out


def summarise(
    runs: list[dict[str, Any]], sizes: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Medians per size and proxy, their ratios, and issue 7's targets judged on them."""
    table: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    for size in sizes:
        row: dict[str, Any] = {p: medians(runs, p, size) for p in PROXIES}
        ngx, big, bh = row["nginx"], row["nginx-big"], row["backhaul"]
        if ngx and bh:
            row["ratio"] = bh["rps"] / ngx["rps"]
            row["p99_ratio"] = bh["p99_ms"] / ngx["p99_ms"]
            row["cpu_ratio"] = (bh["cpu_user_us"] + bh["cpu_sys_us"]) / max(
                ngx["cpu_user_us"] + ngx["cpu_sys_us"], 1e-9
            )
            if size in SMALL:
                targets.append(target(f"{size} req/s", row["ratio"], ">=", MIN_RPS_RATIO_SMALL))
                targets.append(target(f"{size} p99", row["p99_ratio"], "<=", MAX_P99_RATIO))
                user = bh["cpu_user_us"]
                targets.append(target(f"{size} user CPU", user, "<=", MAX_USER_US_SMALL, " us"))
                sys_ratio = bh["cpu_sys_us"] / max(ngx["cpu_sys_us"], 1e-9)
                targets.append(target(f"{size} system CPU", sys_ratio, "<=", MAX_SYS_RATIO_SMALL))
        if big and bh:
            row["ratio_big"] = bh["rps"] / big["rps"]
            what = f"{size} req/s (nginx with body-sized buffers)"
            targets.append(target(what, row["ratio_big"], ">=", MIN_RPS_RATIO_BIG))
        table[size] = row
    return table, targets


def target(what: str, value: float, op: str, limit: float, unit: str = "x nginx") -> dict[str, Any]:
    met = value >= limit if op == ">=" else value <= limit
    return {
        "what": what,
        "value": round(value, 3),
        "op": op,
        "limit": limit,
        "unit": unit,
        "met": met,
    }


def print_report(table: dict[str, Any], rss: dict[str, Any], targets: list[dict[str, Any]]) -> None:
    def ms(v: dict[str, float] | None, key: str) -> str:
        return f"{v[key]:.2f} ms" if v else "-"

    def num(v: float | None, spec: str) -> str:
        return format(v, spec) if v is not None else "-"

    def rps(v: dict[str, float] | None) -> str:
        return num(v and v["rps"], ",.0f")

    print(
        "\n| size | nginx req/s | nginx, body-sized buffers | backhaul req/s | ratio "
        "| ratio to body-sized |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for size, row in table.items():
        print(
            f"| {size} | {rps(row['nginx'])} | {rps(row['nginx-big'])} | {rps(row['backhaul'])} "
            f"| {num(row.get('ratio'), '.2f')} | {num(row.get('ratio_big'), '.2f')} |"
        )
    print(
        "\n| size | nginx p50 | backhaul p50 | nginx p99 | backhaul p99 | p99 ratio "
        "| body-sized nginx p99 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, row in table.items():
        ngx, bh = row["nginx"], row["backhaul"]
        print(
            f"| {size} | {ms(ngx, 'p50_ms')} | {ms(bh, 'p50_ms')} | {ms(ngx, 'p99_ms')} "
            f"| {ms(bh, 'p99_ms')} | {num(row.get('p99_ratio'), '.2f')} "
            f"| {ms(row['nginx-big'], 'p99_ms')} |"
        )

    def cpu(v: dict[str, float] | None) -> str:
        return f"{v['cpu_user_us']:.1f} + {v['cpu_sys_us']:.1f}" if v else "-"

    print("\nProxy CPU per request, user + system (µs; less sensitive to other load on the box):")
    print(
        "\n| size | nginx | nginx, body-sized | backhaul | ratio |"
        "\n| --- | ---: | ---: | ---: | ---: |"
    )
    for size, row in table.items():
        ratio = num(row.get("cpu_ratio"), ".2f")
        print(
            f"| {size} | {cpu(row['nginx'])} | {cpu(row['nginx-big'])} | {cpu(row['backhaul'])} "
            f"| {ratio} |"
        )
    print(
        "\nLoad side (core 1: wrk and the origin): CPU per request and how busy the core was"
        " (near 100%: the load side, not the proxy, set the pace); spread between rounds:"
        " (max - min) / median of req/s."
    )
    print(
        "\n| size | proxy | wrk µs/req | origin µs/req | load core busy | req/s min..max "
        "| spread |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |"
    )
    for size, row in table.items():
        for name in PROXIES:
            v = row[name]
            if not v:
                continue
            print(
                f"| {size} | {name} | {v['wrk_cpu_us']:.1f} | {v['origin_cpu_us']:.1f} "
                f"| {v['load_core_busy']:.0%} | {v['rps_min']:,.0f}..{v['rps_max']:,.0f} "
                f"| {v['rps_spread']:.0%} |"
            )
    if rss:
        print(
            "\n| proxy | idle RSS: all / worker | held RSS: all / worker | held PSS: all "
            "| sockets in worker | per connection (worker) |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, m in rss.items():
            idle, held = m["idle"], m["held"]
            print(
                f"| {name} ({idle['processes']} processes) "
                f"| {idle['rss_total'] / 1e6:.1f} / {idle['rss_worker'] / 1e6:.1f} MB "
                f"| {held['rss_total'] / 1e6:.1f} / {held['rss_worker'] / 1e6:.1f} MB "
                f"| {held['pss_total'] / 1e6:.1f} MB | {held['worker_sockets']:,} "
                f"| {m['per_connection_bytes'] / 1e3:.1f} kB |"
            )
    if targets:
        print("\nTargets (issue 7):")
        for t in targets:
            verdict = "met" if t["met"] else "NOT met"
            print(
                f"- {t['what']} {t['op']} {t['limit']:g}{t['unit']}: "
                f"{t['value']:g}{t['unit']} -> {verdict}"
            )


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except OSError:
            return "missing"
        return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]

    git = ["git", "-C", str(ROOT)]
    dirty = subprocess.run([*git, "status", "--porcelain", "-uno"], capture_output=True).stdout
    return {
        "nginx": first_line([tool("nginx"), "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "backhaul": first_line([backhaul_bin(), "--version"]),
        "python": platform.python_version(),
        "git": first_line([*git, "rev-parse", "--short", "HEAD"]) + ("+dirty" if dirty else ""),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy",
        description="\n\n".join(__doc__.split("\n\n")[::2]),  # without the usage block
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s, 1 round")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated body sizes")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--only", choices=PROXIES, help="measure one proxy")
    parser.add_argument(
        "--urls",
        choices=("spread", "one"),
        default="spread",
        help="spread: wrk cycles over every route with 5,120 distinct host/paths (a Lua"
        " script); one: every request to /files/SIZE (one route, the same every time)",
    )
    parser.add_argument(
        "--no-big-buffers",
        action="store_true",
        help="skip nginx with body-sized buffers (run at 100KiB and 1MiB otherwise)",
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=10_000,
        help="idle keep-alive connections for the RSS figure (0: skip)",
    )
    parser.add_argument(
        "--profile",
        choices=SIZES,
        help="after the rounds, py-spy the backhaul worker during one run of this size",
    )
    parser.add_argument(
        "--scenario", choices=SCENARIOS, default="foundation", help="see bench/README.md"
    )
    # Debug: a second nginx fills the backhaul slot, to test the harness without the edge.
    parser.add_argument("--peer-as-backhaul", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = 2.0, 1
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in args.sizes if s not in SIZES]
    if unknown or not args.sizes:
        parser.error(f"--sizes: unknown {unknown}; choose from {', '.join(SIZES)}")
    if args.rounds < 1 or args.duration <= 0:
        parser.error("--rounds must be >= 1 and --duration > 0")
    return args


def preflight(args: argparse.Namespace) -> None:
    missing = [t for t in ("nginx", "wrk", "taskset", "curl") if not tool(t)]
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: run `bash scripts/sysdeps.sh bench`")
    if (os.cpu_count() or 1) < 2:
        raise BenchError("needs 2 cores: the proxy runs on core 0, wrk and the upstream on 1")
    if args.only in (None, "backhaul") and not args.peer_as_backhaul:
        # Bytecode written ahead, as `make run` and `make bench` do: where
        # PYTHONDONTWRITEBYTECODE is set, each edge process would otherwise compile every
        # module it imports at start (CPU, and ~2 MB of RSS per process).
        package = ROOT / "src" / "backhaul"
        if package.is_dir():
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=False)
        out = subprocess.run([backhaul_bin(), "serve", "--help"], capture_output=True, text=True)
        if out.returncode != 0 or "--config" not in out.stdout + out.stderr:
            raise BenchError(
                "`backhaul serve -c` is not available in this checkout; "
                "run with --only nginx until it is"
            )
    limit = raise_nofile_limit()
    if limit < args.idle_connections + 1024:
        raise BenchError(
            f"open-files hard limit {limit} is too low for --idle-connections "
            f"{args.idle_connections}; raise it (ulimit -Hn) or lower --idle-connections"
        )


def tool(name: str) -> str:
    """The full path of a system tool ("" when missing); nginx lives in /usr/sbin."""
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin") or ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.only:
        names = [args.only]
    else:
        big = not args.no_big_buffers and any(size in BIG for size in args.sizes)
        names = ["nginx", *(["nginx-big"] if big else []), "backhaul"]
    started = datetime.datetime.now().astimezone()
    try:
        preflight(args)
        if args.peer_as_backhaul:
            print("debug: the backhaul slot is filled by a second nginx (--peer-as-backhaul)")
        with (
            tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp,
            Processes(Path(tmp)) as procs,
        ):
            os.chmod(tmp, 0o755)  # nginx workers run as nobody and read the bodies
            bench = Bench(args, Path(tmp), procs)
            bench.start_origin()
            proxies = [bench.start_proxy(name) for name in names]
            print(
                f"checked: {', '.join(names)} answer every route and 200 with the "
                f"whole body for {', '.join(args.sizes)}; measuring ({args.urls} URLs)",
                flush=True,
            )
            runs = bench.load(proxies)
            profile: dict[str, Any] = {}
            if args.profile and "backhaul" in names and not args.peer_as_backhaul:
                out = RESULTS / f"proxy-{started:%Y%m%d-%H%M%S}-{args.profile}.pyspy.txt"
                RESULTS.mkdir(exist_ok=True)
                backhaul = next(p for p in proxies if p.name == "backhaul")
                top = bench.profile(backhaul, args.profile, out)
                profile = {"size": args.profile, "raw_stacks": str(out.relative_to(ROOT)),
                           "top_own_time_percent": top}  # fmt: skip
            for proxy in proxies:
                procs.stop(proxy.proc)
            held = [name for name in names if name != "nginx-big"]
            rss = {name: bench.rss(name) for name in held} if args.idle_connections else {}
    except BenchError as exc:
        print(f"bench.proxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.proxy: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    table, targets = summarise(runs, args.sizes)
    if "backhaul" in rss:
        held_mb = rss["backhaul"]["held"]["rss_total"] / 1e6
        what = f"RSS, {args.idle_connections:,} idle connections (all processes)"
        targets.append(target(what, held_mb, "<=", MAX_RSS_MB, unit=" MB"))
    print_report(table, rss, targets)
    if profile:
        print(f"\npy-spy on the backhaul worker at {profile['size']}, own time (with the C "
              "code each frame calls: the loop's frame holds uvloop, a write's frame its send)\n"
              f"Raw stacks: {profile['raw_stacks']}")  # fmt: skip
        for percent, frame in profile["top_own_time_percent"]:
            print(f"  {percent:5.1f}%  {frame}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"proxy-{started:%Y%m%d-%H%M%S}.json"
    document = {
        "benchmark": "proxy",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "params": vars(args) | {"wrk_connections": WRK_CONNECTIONS},
        "versions": versions(),
        "medians": table,
        "targets": targets,
        "rss": rss,
        "profile": profile,
        "runs": runs,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
