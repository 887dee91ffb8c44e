"""backhaul's DNS server against dnsmasq, side by side in one run (issue 10).

    python -m bench.dns [--quick] [--rounds 3] [--duration 8]

1. **Authoritative**: the same 1,000 A records (a zone file for backhaul, a hosts file with
   ``--local`` for dnsmasq), queried by dnsperf with 10% NXDOMAIN names. Each server runs
   one process pinned to core 0 (taskset), dnsperf is pinned to core 1; rounds alternate
   the servers and the medians are compared.
2. **Forwarder cache hits**: each server forwards to an upstream dnsmasq holding 1,000
   other names; after one warm-up pass every query is a cache hit.
3. **Single-flight**: N identical concurrent misses to backhaul, forwarded to an upstream
   (written here) that answers after 200 ms and counts what it receives: the proof is
   N answers for 1 upstream query.

Only loopback addresses; every process runs in its own process group and is stopped at the
end. Figures go to stdout and to bench/results/dns-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rrset

from .proxy import Processes, cpu_seconds

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SERVER_CORE, LOAD_CORE = "0", "1"
RECORDS = 1000
NX_SHARE = 0.10
TARGET = 0.8


class BenchError(Exception):
    """Something the benchmark cannot work around; the message says what."""


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        try:
            with socket.socket() as tcp:
                tcp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise BenchError("no free loopback port")


def wait_answering(port: int, name: str, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    query = dns.message.make_query(name, "A")
    while True:
        try:
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.3)
            return
        except (dns.exception.Timeout, OSError) as exc:
            if time.monotonic() > end:
                raise BenchError(f"server on port {port} did not answer: {exc}") from exc
            time.sleep(0.05)


def write_data(workdir: Path) -> dict[str, Path]:
    rng = random.Random(10)
    zone = [
        "$ORIGIN bench.internal.",
        "$TTL 300",
        "@ IN SOA ns hostmaster 1 3600 600 86400 300",
        "@ IN NS ns",
        "ns IN A 10.255.0.1",
    ]
    hosts, upstream_hosts = [], []
    for i in range(RECORDS):
        ip = f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"
        zone.append(f"h{i} IN A {ip}")
        hosts.append(f"{ip} h{i}.bench.internal")
        upstream_hosts.append(f"10.200.{i // 256}.{i % 256} f{i}.fwd.test")
    queries = []
    for _ in range(20_000):
        if rng.random() < NX_SHARE:
            queries.append(f"nx{rng.randrange(RECORDS)}.bench.internal A")
        else:
            queries.append(f"h{rng.randrange(RECORDS)}.bench.internal A")
    forwarded = [f"f{rng.randrange(RECORDS)}.fwd.test A" for _ in range(20_000)]
    warm = [f"f{i}.fwd.test A" for i in range(RECORDS)]
    paths = {
        "zone": workdir / "bench.zone",
        "hosts": workdir / "bench.hosts",
        "upstream_hosts": workdir / "upstream.hosts",
        "queries": workdir / "queries.txt",
        "forwarded": workdir / "forwarded.txt",
        "warm": workdir / "warm.txt",
    }
    paths["zone"].write_text("\n".join(zone) + "\n")
    paths["hosts"].write_text("\n".join(hosts) + "\n")
    paths["upstream_hosts"].write_text("\n".join(upstream_hosts) + "\n")
    paths["queries"].write_text("\n".join(queries) + "\n")
    paths["forwarded"].write_text("\n".join(forwarded) + "\n")
    paths["warm"].write_text("\n".join(warm) + "\n")
    return paths


def dnsmasq_argv(port: int, *extra: str) -> list[str]:
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    return [
        exe,
        "--no-daemon",
        "--conf-file=/dev/null",
        "--pid-file=",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--local-ttl=300",
        "--cache-size=10000",
        *extra,
    ]


def backhaul_argv(port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "backhaul",
        "dns",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        *extra,
    ]


def dnsperf(
    port: int, queries: Path, seconds: float, pgid: int | None = None, passes: int = 0
) -> dict[str, Any]:
    """One dnsperf run (``seconds`` long, or ``passes`` times through the file); with
    ``pgid``, also the server's CPU time per answered query."""
    before = cpu_seconds(pgid) if pgid is not None else (0.0, 0.0)
    out = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CORE,
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-d",
            str(queries),
            *(["-n", str(passes)] if passes else ["-l", str(seconds)]),
            "-q",
            "100",
            "-t",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    after = cpu_seconds(pgid) if pgid is not None else (0.0, 0.0)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out.stdout)
    done = re.search(r"Queries completed:\s+(\d+)", out.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", out.stdout)
    codes = re.search(r"Response codes:\s+(.*)", out.stdout)
    if qps is None:
        raise BenchError(f"dnsperf failed: {out.stdout[-400:]} {out.stderr[-400:]}")
    answered = int(done.group(1)) if done else 0
    per = 1e6 / answered if answered else 0.0
    return {
        "qps": float(qps.group(1)),
        "user_us": (after[0] - before[0]) * per,
        "sys_us": (after[1] - before[1]) * per,
        "lost": int(lost.group(1)) if lost else -1,
        "codes": codes.group(1).strip() if codes else "",
    }


class DelayedUpstream:
    """A loopback UDP DNS server answering every query after ``delay`` seconds, counting
    the queries it receives (one thread per query, bounded by the bench's life)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.count = 0
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        end = time.monotonic() + 300
        while self.running and time.monotonic() < end:
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.count += 1
            threading.Timer(self.delay, self.answer, (data, addr)).start()

    def answer(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "10.1.2.3"))
        try:
            self.sock.sendto(reply.to_wire(), addr)
        except OSError:
            pass

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.sock.close()


def single_flight(procs: Processes, n: int) -> dict[str, Any]:
    upstream = DelayedUpstream(0.2)
    port = free_port()
    proc = procs.start(
        "backhaul-sf", backhaul_argv(port, "--forward", f"127.0.0.1:{upstream.port}"), "0-1"
    )
    try:
        wait_answering(port, "probe.invalid")  # one upstream query for the probe itself
        before = upstream.count
        name = "same.single-flight.test"

        def ask(_: int) -> str:
            reply = dns.query.udp(
                dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5
            )
            return str(reply.answer[0][0]) if reply.answer else "no answer"

        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
            answers = list(pool.map(ask, range(n)))
        return {
            "concurrent_queries": n,
            "answered": sum(a == "10.1.2.3" for a in answers),
            "upstream_queries": upstream.count - before,
        }
    finally:
        procs.stop(proc)
        upstream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dns", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per dnsperf run")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s")
    parser.add_argument("--single-flight", type=int, default=50, help="concurrent misses")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 3.0
    for tool in ("dnsperf", "taskset"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is missing: run `bash scripts/sysdeps.sh bench`")
    results: dict[str, Any] = {"started": datetime.datetime.now(datetime.UTC).isoformat()}
    with tempfile.TemporaryDirectory(prefix="bench-dns-") as tmp, Processes(Path(tmp)) as procs:
        paths = write_data(Path(tmp))
        up_port = free_port()
        procs.start(
            "upstream",
            dnsmasq_argv(up_port, f"--addn-hosts={paths['upstream_hosts']}", "--local=/fwd.test/"),
            LOAD_CORE,
        )
        wait_answering(up_port, "f1.fwd.test")
        servers = {}
        bh_port, dm_port = free_port(), free_port()
        servers["backhaul"] = (
            bh_port,
            procs.start(
                "backhaul",
                backhaul_argv(
                    bh_port, "--zone", str(paths["zone"]), "--forward", f"127.0.0.1:{up_port}"
                ),
                SERVER_CORE,
            ),
        )
        servers["dnsmasq"] = (
            dm_port,
            procs.start(
                "dnsmasq",
                dnsmasq_argv(
                    dm_port,
                    f"--addn-hosts={paths['hosts']}",
                    "--local=/bench.internal/",
                    f"--server=127.0.0.1#{up_port}",
                ),
                SERVER_CORE,
            ),
        )
        for port, _ in servers.values():
            wait_answering(port, "h1.bench.internal")
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            "authoritative": {"backhaul": [], "dnsmasq": []},
            "forwarder_cache_hit": {"backhaul": [], "dnsmasq": []},
        }
        for port, _ in servers.values():  # warm: every name asked once, before measuring
            dnsperf(port, paths["warm"], 0, passes=1)
            dnsperf(port, paths["queries"], 0, passes=1)
        for r in range(args.rounds):
            order = ["backhaul", "dnsmasq"] if r % 2 == 0 else ["dnsmasq", "backhaul"]
            for scenario, queries in (
                ("authoritative", paths["queries"]),
                ("forwarder_cache_hit", paths["forwarded"]),
            ):
                for name in order:
                    port, proc = servers[name]
                    run = dnsperf(port, queries, args.duration, proc.pid)
                    runs[scenario][name].append(run)
                    print(
                        f"round {r + 1} {scenario:20} {name:9} {run['qps']:>10,.0f} qps"
                        f"  cpu {run['user_us']:.1f}+{run['sys_us']:.1f} µs/query"
                        f"  lost {run['lost']}  {run['codes']}",
                        flush=True,
                    )
        results["runs"] = runs
        summary = {}
        for scenario, by_server in runs.items():
            medians = {k: statistics.median(x["qps"] for x in v) for k, v in by_server.items()}
            cpu = {
                k: statistics.median(x["user_us"] + x["sys_us"] for x in v)
                for k, v in by_server.items()
            }
            pairs = zip(by_server["backhaul"], by_server["dnsmasq"], strict=True)
            summary[scenario] = {
                **medians,
                # rounds run the two servers back to back: the ratio of each round, then
                # the median, is steadier than the ratio of medians on a shared machine
                "ratio": statistics.median(b["qps"] / d["qps"] for b, d in pairs),
                "cpu_us": cpu,
                "cpu_ratio": cpu["dnsmasq"] / cpu["backhaul"] if cpu["backhaul"] else 0.0,
            }
        results["summary"] = summary
        for _, proc in servers.values():
            procs.stop(proc)
        results["single_flight"] = single_flight(procs, args.single_flight)
    print()
    print(
        "| scenario | backhaul qps | dnsmasq qps | ratio | target | CPU µs/query backhaul"
        " / dnsmasq | CPU ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for scenario, s in summary.items():
        print(
            f"| {scenario} | {s['backhaul']:,.0f} | {s['dnsmasq']:,.0f} | {s['ratio']:.2f}"
            f" | ≥ {TARGET} {'✓' if s['ratio'] >= TARGET else '✗'}"
            f" | {s['cpu_us']['backhaul']:.1f} / {s['cpu_us']['dnsmasq']:.1f}"
            f" | {s['cpu_ratio']:.2f} |"
        )
    print(
        "(qps: medians over rounds; ratio: median of each round's ratio; CPU ratio:"
        " dnsmasq's CPU time per query over backhaul's, which moves less than qps when"
        " other work shares the core)"
    )
    sf = results["single_flight"]
    print(
        f"\nsingle-flight: {sf['concurrent_queries']} concurrent identical misses →"
        f" {sf['answered']} answered, {sf['upstream_queries']} upstream quer"
        f"{'y' if sf['upstream_queries'] == 1 else 'ies'}"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"dns-{stamp}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"figures: {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench.dns: {exc}", file=sys.stderr)
        sys.exit(1)
