"""backhaul against nginx as reverse proxies, side by side in one run (issue 2, section 6).

    python -m bench.proxy [--quick] [--sizes 13B,100KiB] [--rounds 3] [--duration 8]
                          [--only nginx|backhaul] [--idle-connections 10000]
                          [--scenario foundation|cluster]

One nginx upstream (1 worker) serves static bodies, pinned to core 1 with wrk. Each proxy
(1 worker) is pinned to core 0. For every round, body size and proxy in turn (interleaved)
`wrk -t1 -c50 --latency` runs; medians over rounds are compared. Then each proxy, restarted
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
MIN_RPS_RATIO_SMALL, MAX_P99_RATIO, MIN_RPS_RATIO_100K, MAX_RSS_MB = 0.85, 1.5, 1.8, 50.0

# The 19 routes in front of the benchmarked one, rendered for both proxies: (match kind,
# value, action). Host routes never match wrk's Host, and no path pattern matches /files/.
DECOYS: list[tuple[str, str, str]] = [
    ("host", "api.example.com", "respond"),
    ("host", "*.internal.example.com", "respond"),
    ("host", "admin.example.com", "redirect"),
    ("host", "static.example.net", "respond"),
    ("path", "/healthz", "respond"),
    ("path", "/robots.txt", "respond"),
    ("prefix", "/api/v1/users/", "respond"),
    ("prefix", "/api/v1/orders/", "respond"),
    ("prefix", "/api/v2/", "respond"),
    ("prefix", "/static/", "respond"),
    ("prefix", "/assets/", "respond"),
    ("prefix", "/old/", "redirect"),
    ("prefix", "/graphql", "respond"),
    ("regex", r"/api/v[0-9]+/items/[0-9]+", "respond"),
    ("regex", r"/u/[a-z0-9_-]{3,32}", "respond"),
    ("regex", r"/.*\.(php|asp|aspx|jsp)", "respond"),
    ("regex", r"/(wp-admin|wp-login|xmlrpc).*", "redirect"),
    ("regex", r"/media/[0-9]{4}/[0-9]{2}/.+\.(jpg|png|webp)", "respond"),
    ("regex", r"/reports/[0-9]{4}-[0-9]{2}-[0-9]{2}\.csv", "respond"),
]


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


def nginx_decoys(port: int) -> tuple[str, str]:
    """The decoy routes as nginx server blocks (host) and locations (path, prefix, regex)."""
    servers, locations = [], []
    actions = {"respond": 'return 200 "decoy\\n";', "redirect": "return 301 /moved$request_uri;"}
    for kind, value, action in DECOYS:
        act = actions[action]
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
    """The edge config (config_spec.md): 19 decoy routes, then the benchmarked one."""
    actions = {
        "respond": {"respond": {"status": 200, "body": "decoy\n"}},
        "redirect": {"redirect": {"to": "/moved{path}", "status": 301}},
    }
    routes: list[dict[str, Any]] = [
        {"name": f"decoy-{i}", "match": {kind: value}, **actions[action]}
        for i, (kind, value, action) in enumerate(DECOYS, 1)
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


def wrk(port: int, size: str, seconds: float) -> dict[str, Any]:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds:g}s"]
    url = f"http://127.0.0.1:{port}/files/{size}"
    out = subprocess.run(
        [*argv, "--latency", url], capture_output=True, text=True, timeout=seconds + 30
    )
    if out.returncode != 0:
        raise BenchError(f"wrk failed on {url}: {out.stderr.strip() or out.stdout}")
    return parse_wrk(out.stdout)


def curl(port: int, path: str, expect: str, host: str = "") -> None:
    """One GET through curl; `expect` is "<status> <body bytes>" or just "<status>"."""
    url = f"http://127.0.0.1:{port}{path}"
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"]
    argv += ["--max-time", "10", *(["-H", f"Host: {host}"] if host else []), url]
    out = subprocess.run(argv, capture_output=True, text=True)
    if not f"{out.stdout.strip()} ".startswith(f"{expect} "):
        raise BenchError(
            f"{url}{f' (Host: {host})' if host else ''}: expected '{expect}' (status, body "
            f"bytes), got {out.stdout.strip()!r} {out.stderr.strip()}"
        )


def check_body(port: int, size: str) -> None:
    """The benchmarked route answers 200 with the whole body."""
    curl(port, f"/files/{size}", f"200 {SIZES[size]}")


def check_decoys(port: int) -> None:
    """The route table is live: one request per kind of decoy route."""
    curl(port, "/", "200 6", host="api.example.com")
    curl(port, "/healthz", "200 6")
    curl(port, "/api/v2/things", "200 6")
    curl(port, "/u/alice", "200 6")
    curl(port, "/old/page", "301")


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
        f"log {run['log_bytes_per_request']:.0f} B/req"
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
        if name == "nginx" or self.args.peer_as_backhaul:
            servers, locations = nginx_decoys(port)
            upstream = "\n".join(f"        server 127.0.0.1:{p};" for p in self.upstream_ports)
            text = render(
                "nginx-proxy.conf",
                DIR=str(self.dir),
                NAME=name,
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
        check_decoys(port)
        for size in self.args.sizes:
            check_body(port, size)
        return Proxy(name, port, proc, access_log)

    def load(self, proxies: list[Proxy]) -> list[dict[str, Any]]:
        args = self.args
        for size in args.sizes:  # warm-up: pools, caches, code paths; not recorded
            for proxy in proxies:
                wrk(proxy.port, size, 1)
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
            for size in args.sizes:
                for proxy in proxies:
                    user0, sys0 = cpu_seconds(proxy.proc.pid)
                    run = wrk(proxy.port, size, args.duration)
                    time.sleep(0.3)  # let log buffers drain (nginx's may hold 64 KiB for 1 s)
                    user1, sys1 = cpu_seconds(proxy.proc.pid)
                    run.update(proxy=proxy.name, size=size, round=rnd, background_cpu=background)
                    per_request = 1e6 / max(run["requests"], 1)
                    run["cpu_user_us"] = round((user1 - user0) * per_request, 2)
                    run["cpu_sys_us"] = round((sys1 - sys0) * per_request, 2)
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
        wrk(proxy.port, size, seconds - 1)
        recorder.wait(timeout=30)
        self.procs.stop(recorder)
        if not out.exists():
            raise BenchError(f"py-spy wrote nothing:\n{self.procs.tail('py-spy')}")
        return top_frames(out)

    def rss(self, name: str) -> dict[str, Any]:
        """RSS of a fresh proxy idle, then holding `--idle-connections` keep-alive ones."""
        proxy = self.start_proxy(name)
        time.sleep(1)
        idle = memory(proxy.proc.pid)
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
        time.sleep(1)
        held = memory(proxy.proc.pid)
        client.stdin.close()
        self.procs.stop(client)
        self.procs.stop(proxy.proc)
        if not line.startswith(f"held {count}"):
            print(f"  {name}: idle clients: {line}; {self.procs.tail(name + '-clients')}")
        per_conn = (held["rss_worker"] - idle["rss_worker"]) / max(count, 1)
        return {"idle": idle, "held": held, "clients": line, "per_connection_bytes": per_conn}


# --- reporting ------------------------------------------------------------------------------


MEDIAN_KEYS = ("rps", "p50_ms", "p99_ms", "cpu_user_us", "cpu_sys_us")


def medians(runs: list[dict[str, Any]], proxy: str, size: str) -> dict[str, float] | None:
    mine = [r for r in runs if r["proxy"] == proxy and r["size"] == size]
    if not mine:
        return None
    return {k: statistics.median(r[k] for r in mine) for k in MEDIAN_KEYS}


def summarise(
    runs: list[dict[str, Any]], sizes: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Medians per size and proxy, their ratios, and the issue's targets judged on them."""
    table: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    for size in sizes:
        row: dict[str, Any] = {p: medians(runs, p, size) for p in ("nginx", "backhaul")}
        ngx, bh = row["nginx"], row["backhaul"]
        if ngx and bh:
            row["ratio"] = bh["rps"] / ngx["rps"]
            row["p99_ratio"] = bh["p99_ms"] / ngx["p99_ms"]
            row["cpu_ratio"] = (bh["cpu_user_us"] + bh["cpu_sys_us"]) / max(
                ngx["cpu_user_us"] + ngx["cpu_sys_us"], 1e-9
            )
            if size in SMALL:
                targets.append(target(f"{size} req/s", row["ratio"], ">=", MIN_RPS_RATIO_SMALL))
            if size == "100KiB":
                targets.append(target(f"{size} req/s", row["ratio"], ">=", MIN_RPS_RATIO_100K))
            targets.append(target(f"{size} p99", row["p99_ratio"], "<=", MAX_P99_RATIO))
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

    print(
        "\n| size | nginx req/s | backhaul req/s | ratio | nginx p50 | backhaul p50 "
        "| nginx p99 | backhaul p99 | p99 ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, row in table.items():
        ngx, bh = row["nginx"], row["backhaul"]
        print(
            f"| {size} | {num(ngx and ngx['rps'], ',.0f')} | {num(bh and bh['rps'], ',.0f')} "
            f"| {num(row.get('ratio'), '.2f')} | {ms(ngx, 'p50_ms')} | {ms(bh, 'p50_ms')} "
            f"| {ms(ngx, 'p99_ms')} | {ms(bh, 'p99_ms')} | {num(row.get('p99_ratio'), '.2f')} |"
        )

    def cpu(v: dict[str, float] | None) -> str:
        return f"{v['cpu_user_us']:.1f} + {v['cpu_sys_us']:.1f}" if v else "-"

    print("\nProxy CPU per request, user + system (µs; less sensitive to other load on the box):")
    print("\n| size | nginx | backhaul | ratio |\n| --- | ---: | ---: | ---: |")
    for size, row in table.items():
        ratio = num(row.get("cpu_ratio"), ".2f")
        print(f"| {size} | {cpu(row['nginx'])} | {cpu(row['backhaul'])} | {ratio} |")
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
        print("\nTargets (issue 2, section 6):")
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
    parser.add_argument("--only", choices=("nginx", "backhaul"), help="measure one proxy")
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
    if args.only != "nginx" and not args.peer_as_backhaul:
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
    names = [args.only] if args.only else ["nginx", "backhaul"]
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
                f"checked: {' and '.join(names)} answer the decoy routes and 200 with the "
                f"whole body for {', '.join(args.sizes)}; measuring",
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
            rss = {name: bench.rss(name) for name in names} if args.idle_connections else {}
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
