"""wrk against ``backhaul bench`` (and hey, when installed) as load generators, side by side
in one run (issue 12).

    python -m bench.loadgen [--rounds 3] [--duration 5] [--connections 50] [--size 13B]

One nginx (1 worker, static files, ``bench/upstream/origin.conf``) is pinned to core 1;
each load generator in turn is pinned to core 0 and drives it closed loop with the same
connection count for the same time: ``wrk -t1 -cN -dS --latency`` and
``backhaul bench -cN -dS --json``. Rounds are interleaved (wrk, backhaul, backhaul, wrk,
...) so that drift on a shared machine falls on both. The ratio of the medians is the
figure the issue sets a target for (>= 0.75 x wrk's max rate). CPU time per request of
each generator and the target's busy share come with it: when nginx is saturated, both
generators measure nginx, not themselves.

Figures go to stdout and to bench/results/loadgen-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .proxy import (
    RESULTS,
    BenchError,
    Processes,
    cpu_seconds,
    free_ports,
    parse_wrk,
    render,
    tool,
    wait_listening,
)

LOAD_CORE, TARGET_CORE = "0", "1"
TARGET_RATIO = 0.75
SIZES = {"13B": 13, "1KiB": 1024, "100KiB": 100 * 1024}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def backhaul_bin() -> str:
    return str(Path(sys.executable).with_name("backhaul"))


def startup_cpu(name: str, url: str) -> float:
    """CPU seconds a generator spends on a 1-request run: start-up and exit, not load."""
    if name != "backhaul":  # wrk and hey are compiled: start-up is negligible
        return 0.0
    argv = [backhaul_bin(), "bench", "-c1", "-n1", "--json", url]
    samples = []
    for _ in range(3):
        cpu0 = children_cpu()
        subprocess.run(["taskset", "-c", LOAD_CORE, *argv], capture_output=True, timeout=60)
        samples.append(children_cpu() - cpu0)
    return statistics.median(samples)


def run_one(
    name: str, url: str, args: argparse.Namespace, target_pgid: int, startup: float
) -> dict[str, Any]:
    seconds = f"{args.duration:g}s"
    if name == "wrk":
        argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}", "--latency", url]
    elif name == "hey":
        argv = ["hey", "-z", seconds, "-c", str(args.connections), url]
    else:
        argv = [backhaul_bin(), "bench", f"-c{args.connections}", f"-d{seconds}", "--json", url]
    cpu0 = children_cpu()
    target0 = sum(cpu_seconds(target_pgid))
    done = subprocess.run(
        ["taskset", "-c", LOAD_CORE, *argv],
        capture_output=True,
        text=True,
        timeout=args.duration + 60,
    )
    target1 = sum(cpu_seconds(target_pgid))
    cpu = children_cpu() - cpu0
    if done.returncode != 0:
        raise BenchError(f"{name} failed: {done.stderr.strip() or done.stdout}")
    if name == "hey":
        parsed = parse_hey(done.stdout)
        rps, requests = parsed["rps"], parsed["requests"]
        p50, p99, errors = parsed["p50_ms"], parsed["p99_ms"], parsed["errors"]
    elif name == "wrk":
        parsed = parse_wrk(done.stdout)
        rps, requests = parsed["rps"], parsed["requests"]
        p50, p99 = parsed["p50_ms"], parsed["p99_ms"]
        errors = parsed["errors"] + parsed["non_2xx"]
    else:
        doc = json.loads(done.stdout)
        rps, requests = doc["requests_per_second"], doc["requests"]
        pct = doc["latency_us"]["percentiles"]
        p50, p99 = pct["50"] / 1000, pct["99"] / 1000
        errors = sum(doc["errors"].values()) + doc["non_2xx_3xx"]
    return {
        "generator": name,
        "rps": rps,
        "requests": requests,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors,
        "generator_cpu_us_per_request": (cpu - startup) / requests * 1e6 if requests else None,
        "generator_startup_cpu_s": startup,
        "generator_busy": cpu / args.duration,
        "target_busy": (target1 - target0) / args.duration,
    }


def parse_hey(text: str) -> dict[str, Any]:
    """req/s, answers, p50/p99 (ms) and errors from hey's summary."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    answers = sum(int(n) for n in re.findall(r"^\s+\[\d{3}\]\s+(\d+) responses", text, re.M))
    pct = dict(re.findall(r"^\s+(50|99)% in ([\d.]+) secs", text, re.M))
    if rps is None or "99" not in pct:
        raise BenchError(f"unexpected hey output:\n{text}")
    errors = (
        sum(
            int(n)
            for n in re.findall(r"^\s+\[(\d+)\]\t", text.split("Error distribution:")[1], re.M)
        )
        if "Error distribution:" in text
        else 0
    )
    non_2xx = sum(
        int(n)
        for code, n in re.findall(r"^\s+\[(\d{3})\]\s+(\d+) responses", text, re.M)
        if not code.startswith(("2", "3"))
    )
    return {
        "rps": float(rps.group(1)),
        "requests": answers,
        "p50_ms": float(pct["50"]) * 1000,
        "p99_ms": float(pct["99"]) * 1000,
        "errors": errors + non_2xx,
    }


def describe(run: dict[str, Any]) -> str:
    return (
        f"{run['generator']:>8}: {run['rps']:>9,.0f} req/s  p50 {run['p50_ms']:6.2f} ms  "
        f"p99 {run['p99_ms']:6.2f} ms  generator {run['generator_cpu_us_per_request']:.1f} "
        f"us/req (busy {run['generator_busy']:.0%})  nginx busy {run['target_busy']:.0%}"
        + (f"  <-- {run['errors']} ERRORS" if run["errors"] else "")
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--connections", type=int, default=50, help="connections (-c)")
    parser.add_argument("--size", choices=sorted(SIZES), default="13B", help="body size")
    parser.add_argument(
        "--no-hey", dest="hey", action="store_false", help="leave hey out (run when installed)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 120:
        parser.error("--rounds 1..20, --duration 1..120 seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    missing = [name for name in ("nginx", "wrk", "taskset") if not tool(name)]
    if missing:
        print(
            f"bench.loadgen: missing {', '.join(missing)}; run: bash scripts/sysdeps.sh bench",
            file=sys.stderr,
        )
        return 2
    if (os.cpu_count() or 1) < 2:
        print("bench.loadgen: needs 2 cores (generator and target pinned apart)", file=sys.stderr)
        return 2
    started = datetime.datetime.now().astimezone()
    with tempfile.TemporaryDirectory(prefix="bh-loadgen-") as tmp, Processes(Path(tmp)) as procs:
        workdir = Path(tmp)
        os.chmod(tmp, 0o755)  # nginx workers run as nobody and read the body
        www = workdir / "www" / "files"
        www.mkdir(parents=True)
        (workdir / "tmp").mkdir()
        size = SIZES[args.size]
        (www / args.size).write_bytes((b"hello, world\n" * (size // 13 + 1))[:size])
        (port,) = free_ports(1)
        conf = workdir / "origin.conf"
        conf.write_text(
            render(
                "origin.conf",
                DIR=str(workdir),
                LISTEN=f"        listen 127.0.0.1:{port};",
                WWW=str(workdir / "www"),
            )
        )
        target = procs.start(
            "nginx",
            [tool("nginx"), "-p", str(workdir), "-c", str(conf), "-e", "stderr"],
            TARGET_CORE,
        )
        wait_listening(procs, "nginx", target, port)
        url = f"http://127.0.0.1:{port}/files/{args.size}"
        check = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check.stdout != "200":
            raise BenchError(f"{url} answered {check.stdout or check.stderr}, not 200")
        print(f"target: nginx 1 worker on core {TARGET_CORE}, {url} ({size} B body)")
        print(
            f"load:   -c {args.connections}, {args.duration:g} s per run, core {LOAD_CORE}, "
            f"{args.rounds} interleaved rounds; noisy shared VM: compare within this run only"
        )
        subprocess.run(
            ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c10", "-d1s", url],
            capture_output=True,
            timeout=30,
        )  # warm-up
        generators = ["wrk", "backhaul"] + (["hey"] if args.hey and tool("hey") else [])
        startup = {name: startup_cpu(name, url) for name in generators}
        print(
            f"backhaul bench start-up and exit: {startup['backhaul']:.2f} s CPU (subtracted "
            "from its us/req)"
        )
        runs: list[dict[str, Any]] = []
        for number in range(args.rounds):
            order = generators[number % len(generators) :] + generators[: number % len(generators)]
            for name in order:
                run = run_one(name, url, args, target.pid, startup[name])
                run["round"] = number + 1
                runs.append(run)
                print(f"round {number + 1} {describe(run)}", flush=True)
    median = {
        name: statistics.median(r["rps"] for r in runs if r["generator"] == name)
        for name in generators
    }
    per_round = [
        next(r["rps"] for r in runs if r["round"] == n and r["generator"] == "backhaul")
        / next(r["rps"] for r in runs if r["round"] == n and r["generator"] == "wrk")
        for n in range(1, args.rounds + 1)
    ]
    ratio = median["backhaul"] / median["wrk"]
    cpu = {
        name: statistics.median(
            r["generator_cpu_us_per_request"] for r in runs if r["generator"] == name
        )
        for name in generators
    }
    cpu_ratio = cpu["wrk"] / cpu["backhaul"]
    print()
    print(f"median req/s: wrk {median['wrk']:,.0f}, backhaul bench {median['backhaul']:,.0f}")
    print(f"per-round ratios: {', '.join(f'{r:.2f}' for r in per_round)}")
    print(
        f"generator CPU per request: wrk {cpu['wrk']:.1f} us, backhaul bench "
        f"{cpu['backhaul']:.1f} us -> rate each could drive from one full core: "
        f"{cpu_ratio:.2f}x wrk's"
    )
    if "hey" in median:
        print(
            f"for reference, hey: {median['hey']:,.0f} req/s = "
            f"{median['hey'] / median['wrk']:.2f}x wrk's, {cpu['hey']:.1f} us CPU per request"
        )
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"ratio backhaul bench / wrk: {ratio:.2f}x ({verdict} the >= {TARGET_RATIO}x target)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"loadgen-{started:%Y%m%d-%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "args": vars(args),
                "runs": runs,
                "median_rps": median,
                "per_round_ratio": per_round,
                "ratio": ratio,
                "median_generator_cpu_us_per_request": cpu,
                "cpu_ratio": cpu_ratio,
                "target_ratio": TARGET_RATIO,
            },
            indent=2,
        )
    )
    print(f"figures: {out}")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench.loadgen: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
