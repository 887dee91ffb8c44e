"""``backhaul iperf`` against iperf3, one TCP stream on loopback: ``python -m bench.iperf``.

Each round runs, back to back, iperf3's client against iperf3's server and backhaul's
client against backhaul's server (``-t --duration`` seconds each, one stream), so the two
see the same machine; rounds alternate which goes first. The ratio of the medians is
printed (target: backhaul at least 0.7x iperf3), then one ``-P 2`` run of backhaul with
its CPU use (each stream is a thread that releases the GIL in ``send``/``recv_into``; on a
2-core box the client and the server already share both cores, so two streams scale only
where cores are free). Figures go to
``bench/results/iperf.json``.

Loopback throughput on a shared 2-core VM moves by tens of percent between runs: compare
only the figures of one run, and run it a few times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results")
TARGET = 0.7
BACKHAUL = str(Path(sys.executable).with_name("backhaul"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        listed = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        )
        if listed.stdout.strip():
            return
        time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start")


def _run(kind: str, duration: int, parallel: int = 1) -> dict:
    port = _free_port()
    server_argv = (
        ["iperf3", "-s", "-1", "-p", str(port)]
        if kind == "iperf3"
        else [BACKHAUL, "iperf", "-s", "-1", "-p", str(port)]
    )
    client = ["iperf3"] if kind == "iperf3" else [BACKHAUL, "iperf"]
    server = subprocess.Popen(server_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, server)
        done = subprocess.run(
            [*client, "-c", "127.0.0.1", "-p", str(port), "-t", str(duration),
             "-P", str(parallel), "--json"],
            capture_output=True, text=True, timeout=duration + 60,
        )  # fmt: skip
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    end = json.loads(done.stdout)["end"]
    return {
        "bits_per_second": end["sum_received"]["bits_per_second"],
        "cpu_client": end["cpu_utilization_percent"]["host_total"],
        "cpu_server": end["cpu_utilization_percent"]["remote_total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is missing: bash scripts/sysdeps.sh bench")
    RESULTS.mkdir(exist_ok=True)
    figures: dict[str, list[float]] = {"iperf3": [], "backhaul": []}
    for round_ in range(args.rounds):
        order = ("iperf3", "backhaul") if round_ % 2 == 0 else ("backhaul", "iperf3")
        for kind in order:
            figures[kind].append(_run(kind, args.duration)["bits_per_second"])
        ratio = figures["backhaul"][-1] / figures["iperf3"][-1]
        print(
            f"round {round_ + 1}: iperf3 {figures['iperf3'][-1] / 1e9:.1f} Gbit/s, "
            f"backhaul {figures['backhaul'][-1] / 1e9:.1f} Gbit/s, ratio {ratio:.2f}x",
            flush=True,
        )
    theirs = statistics.median(figures["iperf3"])
    mine = statistics.median(figures["backhaul"])
    ratio = mine / theirs
    verdict = "meets" if ratio >= TARGET else "MISSES"
    parallel = _run("backhaul", args.duration, parallel=2)
    print(
        f"iperf3 (1 TCP stream):   {theirs / 1e9:.1f} Gbit/s (median of {args.rounds})\n"
        f"backhaul (1 TCP stream): {mine / 1e9:.1f} Gbit/s\n"
        f"ratio backhaul / iperf3: {ratio:.2f}x ({verdict} the {TARGET:g}x target)\n"
        f"backhaul -P 2: {parallel['bits_per_second'] / 1e9:.1f} Gbit/s "
        f"({parallel['bits_per_second'] / mine:.2f}x one stream), CPU client "
        f"{parallel['cpu_client']:.0f}% + server {parallel['cpu_server']:.0f}% of one core"
    )
    (RESULTS / "iperf.json").write_text(
        json.dumps(
            {"duration": args.duration, **figures, "ratio": ratio, "parallel_2": parallel},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
