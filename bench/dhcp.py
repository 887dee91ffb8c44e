"""backhaul's DHCP server against dnsmasq and ISC Kea, side by side in one run (issue 11).

    python -m bench.dhcp [--leases 5000] [--rounds 3] [--window 64] [--only backhaul,kea]
                         [--profile]

Two namespaces joined by a veth pair (:class:`backhaul.tools.lab.Segment`): the server side
holds 10.0.0.1/16 and runs one DHCP server at a time, pinned to core 0; the load generator
(:func:`backhaul.tools.dhcp_load.run_load`, this process, pinned to core 1) plays ``--leases``
new clients from its own socket in the client namespace, ``--window`` in flight, each doing a
full DISCOVER/OFFER/REQUEST/ACK with its own MAC. Every run starts the server on a fresh
lease file on the machine's disk. Figures: new leases per second (first DISCOVER to last
ACK), and the leases found in the server's lease file afterwards (all must be there).

The peers, as configured here:

- dnsmasq (``--no-ping``: it would otherwise ping each address before offering it, which
  backhaul does not do; ``--quiet-dhcp``): it rewrites its whole lease file after each
  change;
- Kea (memfile lease database, ``persist: true``, no lease file cleanup during the run): it
  appends each lease to a CSV file, without an fsync per lease;
- backhaul (``backhaul dhcp serve``): each ACK is sent after its lease is on disk
  (``fdatasync`` of the journal, in groups).

``--profile`` records the backhaul server with py-spy during one extra run and prints the
functions that take the most time. Only the namespaces this benchmark creates carry traffic.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from backhaul.tools.dhcp_load import DhcpProbe, run_load
from backhaul.tools.lab import Segment, lab_unavailable_reason

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SERVER_CORE, LOAD_CORE = "0", "1"
POOL = ("10.0.0.10", "10.0.255.250")
TARGET = 1000.0  # durable new leases per second
BACKHAUL = str(Path(sys.executable).with_name("backhaul"))
SERVERS = ("backhaul", "dnsmasq", "kea")
METRICS_PORT = 9967  # inside the benchmark's own namespace: no other process can hold it


def _kea_config(state: Path) -> dict[str, Any]:
    return {
        "Dhcp4": {
            "interfaces-config": {"interfaces": ["srv0"], "dhcp-socket-type": "raw"},
            "lease-database": {
                "type": "memfile",
                "persist": True,
                "name": str(state / "kea-leases4.csv"),
                "lfc-interval": 0,
            },
            "valid-lifetime": 3600,
            "subnet4": [
                {"id": 1, "subnet": "10.0.0.0/16", "pools": [{"pool": f"{POOL[0]} - {POOL[1]}"}]}
            ],
            "loggers": [
                {
                    "name": "kea-dhcp4",
                    "output_options": [{"output": "stderr"}],
                    "severity": "WARN",
                }
            ],
        }
    }


def server_command(name: str, state: Path) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if name == "backhaul":
        config = state / "backhaul.yaml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "dhcp": {
                        "interfaces": ["srv0"],
                        "state_dir": str(state),
                        "metrics_address": f"127.0.0.1:{METRICS_PORT}",
                        "subnets": [
                            {
                                "subnet": "10.0.0.0/16",
                                "pools": [f"{POOL[0]}-{POOL[1]}"],
                                "options": {"routers": ["10.0.0.1"], "dns_servers": ["10.0.0.1"]},
                            }
                        ],
                    }
                }
            )
        )
        argv = [BACKHAUL, "serve", "-c", str(config)]
    elif name == "dnsmasq":
        argv = [
            *("dnsmasq", "--keep-in-foreground", "--port=0", "--conf-file=/dev/null"),
            *("--interface=srv0", "--bind-interfaces", "--no-ping", "--quiet-dhcp"),
            f"--dhcp-range={POOL[0]},{POOL[1]},255.255.0.0,1h",
            *("--dhcp-authoritative", "--dhcp-lease-max=200000", "--log-facility=-"),
            f"--dhcp-leasefile={state / 'dnsmasq.leases'}",
            f"--pid-file={state / 'dnsmasq.pid'}",
            "--dhcp-option=3,10.0.0.1",
            "--dhcp-option=6,10.0.0.1",
        ]
    else:
        config = state / "kea-dhcp4.json"
        config.write_text(json.dumps(_kea_config(state)))
        env["KEA_PIDFILE_DIR"] = str(state)
        env["KEA_LOCKFILE_DIR"] = str(state)
        argv = ["kea-dhcp4", "-c", str(config)]
    return ["taskset", "-c", SERVER_CORE, *argv], env


def stored_leases(name: str, state: Path) -> int:
    """How many distinct addresses the server's lease file holds."""
    if name == "backhaul":
        from backhaul.state.dhcp_leases import read_leases

        return sum(1 for r in read_leases(state) if r.state == "bound")
    if name == "dnsmasq":
        path = state / "dnsmasq.leases"
        lines = path.read_text().splitlines() if path.exists() else []
        return len({line.split()[2] for line in lines if len(line.split()) > 2})
    path = state / "kea-leases4.csv"
    lines = path.read_text().splitlines()[1:] if path.exists() else []
    return len({line.split(",")[0] for line in lines if line})


def wait_ready(segment: Segment, proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """Until something listens on UDP port 67 in the server namespace (or raw, for Kea)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        udp = segment.run("server", ["ss", "-H", "-lnu", "sport", "= :67"]).stdout.strip()
        raw = segment.run("server", ["ss", "-H", "-a", "-0"]).stdout.strip()
        if udp or ("kea" in " ".join(map(str, proc.args)) and raw):
            time.sleep(0.3)  # the socket is bound a moment before the loop reads it
            return
        time.sleep(0.05)
    raise SystemExit("server did not start listening on port 67 in time")


def one_run(
    segment: Segment, name: str, leases: int, window: int, salt: int, profile: Path | None = None
) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix=f"bench-dhcp-{name}-", dir="/var/tmp"))
    argv, env = server_command(name, state)
    log = open(state / "server.log", "w")  # noqa: SIM115 - closed below
    proc = segment.popen("server", argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    spy: subprocess.Popen[Any] | None = None
    try:
        wait_ready(segment, proc)
        cpu_ready = _cpu_seconds(proc.pid)
        if profile is not None:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    *("record", "--pid", str(proc.pid), "--format", "raw", "--threads"),
                    *("--output", str(profile), "--rate", "1000", "--nonblocking"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        probe = segment.call("client", lambda: DhcpProbe("cli0"))
        with probe:
            load_cpu = time.process_time()
            result = run_load(probe, leases, window=window, salt=salt, deadline=120.0)
            load_cpu = time.process_time() - load_cpu
        time.sleep(0.2)
        cpu = _cpu_seconds(proc.pid) - cpu_ready
        commits = _commits(segment) if name == "backhaul" else None
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    stored = stored_leases(name, state)
    shutil.rmtree(state, ignore_errors=True)
    return {
        "server": name,
        "leases": len(result.leases),
        "rate": result.rate,
        "seconds": result.seconds,
        "naks": result.naks,
        "unfinished": result.unfinished,
        "retransmits": result.retransmits,
        "stored": stored,
        "cpu_seconds": cpu,
        "cpu_us_per_lease": 1e6 * cpu / max(1, len(result.leases)),
        # the load generator's share of its core: near 1.0 means it, not the server, set the pace
        "generator_busy": load_cpu / result.seconds if result.seconds > 0 else 0.0,
        "commits": commits,
    }


def _commits(segment: Segment) -> int | None:
    """The backhaul server's journal syncs so far, from its /metrics (in the namespace)."""
    import socket

    def fetch() -> bytes:
        with socket.create_connection(("127.0.0.1", METRICS_PORT), timeout=5) as conn:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            body = b""
            while chunk := conn.recv(65536):
                body += chunk
            return body

    for line in segment.call("server", fetch).decode().splitlines():
        if line.startswith("backhaul_dhcp_store_commits_total "):
            return int(line.split()[1])
    return None


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


_CATEGORIES = (
    ("journal fdatasync (commit thread)", ("commit_lines (backhaul/state/dhcp_leases.py",)),
    ("idle", ("_worker (concurrent/futures/thread.py",)),  # the commit thread waiting
    ("uvloop: epoll, recvfrom, sendto (C)", ("run (backhaul/services/dhcp/service.py",)),
    ("thread hand-off (executor submit)", ("concurrent/futures/", "threading.py")),
    ("codec (proto/dhcp.py, IP/UDP headers)", ("backhaul/proto/",)),
    (
        "server decisions (responder, allocation)",
        (
            "backhaul/services/dhcp/responder.py",
            "backhaul/services/dhcp/allocation.py",
            "backhaul/services/dhcp/lease.py",
        ),
    ),
    ("journal records (text, CRC)", ("backhaul/state/dhcp_leases.py",)),
    ("driver (service.py: dispatch, send)", ("backhaul/services/dhcp/service.py",)),
)


def print_profile(path: Path) -> None:
    """Where the server's time goes: py-spy samples by the leaf frame's part of the code."""
    if not path.exists():
        print("py-spy wrote nothing (is it installed? pip install py-spy)")
        return
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        leaf = stack.split(";")[-1]
        total += int(count_text)
        label = next(
            (name for name, needles in _CATEGORIES if any(n in leaf for n in needles)),
            "other: " + leaf.split(" (")[0],
        )
        if label == "idle":
            total -= int(count_text)
            continue
        counts[label] = counts.get(label, 0) + int(count_text)
    print(f"\npy-spy of the backhaul server, {total} busy samples (both threads), by leaf frame:")
    for label, count in sorted(counts.items(), key=lambda kv: -kv[1])[:16]:
        print(f"  {100 * count / total:5.1f}%  {label}")


def micro(count: int = 20000) -> dict[str, float]:
    """Python µs per lease for each step the server runs, without sockets or disk: the part
    of the server's CPU per lease that is its own code (the rest is system calls, uvloop and
    the commit thread)."""
    import ipaddress

    from backhaul.config.dhcp import DhcpConfig
    from backhaul.proto.dhcp import MessageType, Opt, decode, encode
    from backhaul.services.dhcp.responder import Responder, plan_subnets
    from backhaul.services.dhcp.service import _record
    from backhaul.state.dhcp_leases import _line
    from backhaul.tools.dhcp_load import DhcpProbe, mac_for

    config = DhcpConfig.model_validate(
        {
            "interfaces": ["srv0"],
            "subnets": [{"subnet": "10.0.0.0/16", "pools": [f"{POOL[0]}-{POOL[1]}"]}],
        }
    )
    plans = plan_subnets(config, {"srv0": [ipaddress.IPv4Interface("10.0.0.1/16")]})
    responder = Responder(plans)
    builder = DhcpProbe.__new__(DhcpProbe)  # only its packet builder: no socket
    builder.relay = None
    prl = {Opt.PARAMETER_LIST: bytes((1, 3, 6, 15, 51, 54))}
    discovers = [
        encode(builder.packet(MessageType.DISCOVER, mac_for(i, 0x77), i, options=prl))
        for i in range(count)
    ]
    steps = dict.fromkeys(("decode", "decide", "encode", "journal record", "log line"), 0.0)
    now = time.time()
    clock = time.process_time  # CPU time: the machine is shared, wall time is not ours

    def timed(step: str, work: Any) -> Any:
        start = clock()
        result = work()
        steps[step] += clock() - start
        return result

    def exchange(datagrams: list[bytes]) -> list[Any]:
        packets = timed("decode", lambda: [decode(d) for d in datagrams])
        outs = timed("decide", lambda: [responder.handle(p, "srv0", now) for p in packets])
        timed("encode", lambda: [encode(o.reply) for o in outs])
        return outs

    offers = exchange(discovers)
    requests = []
    for i, out in enumerate(offers):
        options = {**prl, Opt.REQUESTED_ADDRESS: out.reply.yiaddr.packed,
                   Opt.SERVER_ID: out.reply.options[Opt.SERVER_ID]}  # fmt: skip
        requests.append(
            encode(builder.packet(MessageType.REQUEST, mac_for(i, 0x77), i, options=options))
        )
    acks = exchange(requests)
    assert all(o.durable for o in acks)
    timed("journal record", lambda: [_line(_record(o.durable[0])) for o in acks])
    lines = [line for o in offers + acks for line in o.log]
    timed(
        "log line",
        lambda: "".join(f"2026-01-01T00:00:00Z backhaul: dhcp {line}\n" for line in lines),
    )
    return {name: 1e6 * total / count for name, total in steps.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dhcp", description=__doc__)
    parser.add_argument("--leases", type=int, default=5000, help="new clients per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=64, help="clients in flight")
    parser.add_argument("--only", default=",".join(SERVERS), help="comma-separated servers")
    parser.add_argument("--profile", action="store_true", help="py-spy the backhaul server")
    parser.add_argument(
        "--micro", action="store_true", help="only the server's Python µs per lease, no sockets"
    )
    args = parser.parse_args(argv)
    if args.micro:
        figures = micro()
        print("backhaul's own Python time per new lease (DISCOVER + REQUEST), no sockets:")
        for name, value in figures.items():
            print(f"  {value:6.1f} µs  {name}")
        print(f"  {sum(figures.values()):6.1f} µs  in all")
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(names) - set(SERVERS)
    if unknown:
        parser.error(f"unknown server(s) {', '.join(sorted(unknown))}; use {', '.join(SERVERS)}")
    if not 1 <= args.leases <= 60000:
        parser.error("--leases must be 1-60000 (the pool holds 65,000 addresses)")
    reason = lab_unavailable_reason()
    if reason is not None:
        raise SystemExit(f"bench.dhcp needs network namespaces: {reason}")
    for tool in ("taskset", "ss", *(["dnsmasq"] if "dnsmasq" in names else [])):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: bash scripts/sysdeps.sh bench")
    if "kea" in names and shutil.which("kea-dhcp4") is None:
        raise SystemExit("kea-dhcp4 is missing: bash scripts/sysdeps.sh bench")
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    runs: list[dict[str, Any]] = []
    segment = Segment(f"bhb{os.getpid()}", server_address="10.0.0.1/16")
    with segment:
        for round_ in range(args.rounds):
            for i, name in enumerate(names):
                salt = (round_ * len(names) + i + 1) & 0xFF
                run = one_run(segment, name, args.leases, args.window, salt)
                run["round"] = round_
                runs.append(run)
                print(
                    f"round {round_ + 1} {name:9s} {run['rate']:9.0f} leases/s"
                    f"  ({run['leases']} leases, {run['stored']} in its lease file,"
                    f" {run['retransmits']} retransmits, {run['naks']} NAKs, {run['unfinished']}"
                    f" unfinished, server CPU {run['cpu_us_per_lease']:.0f} µs/lease,"
                    f" generator {100 * run['generator_busy']:.0f}% busy"
                    + (
                        f", {run['leases'] / run['commits']:.1f} leases per fdatasync)"
                        if run["commits"]
                        else ")"
                    ),
                    flush=True,
                )
        profile_path = None
        if args.profile and "backhaul" in names:
            profile_path = Path(tempfile.mkdtemp(prefix="bench-dhcp-spy-")) / "profile.txt"
            one_run(segment, "backhaul", args.leases, args.window, 0xEE, profile_path)
    medians = {
        name: statistics.median(r["rate"] for r in runs if r["server"] == name) for name in names
    }
    base = medians.get("backhaul")
    cpu = {
        name: statistics.median(r["cpu_us_per_lease"] for r in runs if r["server"] == name)
        for name in names
    }
    print(
        "\n| server | new leases/s (median) | ratio to backhaul | server CPU µs per lease"
        " | all leases stored |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        ratio = f"{medians[name] / base:.2f}" if base else "-"
        stored = all(r["stored"] >= r["leases"] for r in runs if r["server"] == name)
        print(
            f"| {name} | {medians[name]:,.0f} | {ratio} | {cpu[name]:.0f} |"
            f" {'yes' if stored else 'NO'} |"
        )
    if base is not None:
        verdict = "meets" if base >= TARGET else "MISSES"
        print(
            f"\nbackhaul {base:,.0f} durable new leases/s {verdict} the target of {TARGET:,.0f}/s"
        )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"dhcp-{stamp}.json"
    out.write_text(json.dumps({"runs": runs, "medians": medians, "args": vars(args)}, indent=2))
    print(f"figures in {out}")
    if profile_path is not None:
        print_profile(profile_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
