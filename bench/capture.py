"""``backhaul capture --conversations tcp`` against ``tshark -q -z conv,tcp``:
``python -m bench.capture``.

Writes a pcap of about a million frames (``--frames``) made of short TCP connections
(handshake, request, response, close) between a few hundred clients and servers, some of
them reusing a port pair with a new initial sequence number, plus a share of UDP. Then
times, interleaved (``--rounds``, alternating which goes first), tshark's conversation
summary and backhaul's on the same file, checks that both count the same conversations,
and prints the ratio of speeds (target: backhaul at least 2x tshark's speed), wall-clock
and in CPU time (user + system; steadier when other work shares the machine).
Figures go to ``bench/results/capture.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results")
TARGET = 2.0


def _ipv4_tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
              flags: int, payload: bytes) -> bytes:  # fmt: skip
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 6, 0, src, dst)
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + payload


def _ipv4_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    total = 20 + 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0, src, dst)
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + udp + payload


def generate(path: Path, frames: int, seed: int = 7) -> int:
    """Write ``path`` with about ``frames`` frames; returns the number written."""
    rng = random.Random(seed)
    out = open(path, "wb")  # noqa: SIM115
    out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    record = struct.Struct("<IIII").pack
    clients = [bytes([10, 1, i // 250, i % 250 + 1]) for i in range(400)]
    servers = [bytes([10, 2, 0, i + 1]) for i in range(40)]
    written = 0
    t = 1_700_000_000.0
    request = b"GET /item HTTP/1.1\r\nHost: bench\r\n\r\n"
    body = b"x" * 1200
    used: list[tuple[bytes, int, bytes]] = []
    chunk: list[bytes] = []

    def emit(frame: bytes) -> None:
        nonlocal written, t
        t += 0.00001
        sec = int(t)
        usec = int((t - sec) * 1e6)
        chunk.append(record(sec, usec, len(frame), len(frame)))
        chunk.append(frame)
        written += 1
        if len(chunk) > 20000:
            out.write(b"".join(chunk))
            chunk.clear()

    while written < frames:
        if used and rng.random() < 0.05:
            client, sport, server = rng.choice(used)  # port reuse with a new ISN
        else:
            client, sport, server = (
                rng.choice(clients),
                rng.randrange(1024, 65535),
                rng.choice(servers),
            )
            used.append((client, sport, server))
            if len(used) > 5000:
                used.pop(0)
        if rng.random() < 0.1:
            emit(_ipv4_udp(client, server, sport, 53, b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 20))
            emit(_ipv4_udp(server, client, 53, sport, b"\x12\x34\x81\x80\x00\x01" + b"\x00" * 30))
            continue
        cs, ss = rng.getrandbits(32), rng.getrandbits(32)
        emit(_ipv4_tcp(client, server, sport, 80, cs, 0, 0x02, b""))
        emit(_ipv4_tcp(server, client, 80, sport, ss, cs + 1, 0x12, b""))
        emit(_ipv4_tcp(client, server, sport, 80, cs + 1, ss + 1, 0x10, b""))
        cseq, sseq = cs + 1, ss + 1
        for _ in range(rng.randrange(1, 8)):
            emit(_ipv4_tcp(client, server, sport, 80, cseq, sseq, 0x18, request))
            cseq += len(request)
            for _ in range(rng.randrange(1, 4)):
                emit(
                    _ipv4_tcp(
                        server, client, 80, sport, sseq & 0xFFFFFFFF, cseq & 0xFFFFFFFF, 0x18, body
                    )
                )
                sseq += len(body)
            emit(
                _ipv4_tcp(
                    client, server, sport, 80, cseq & 0xFFFFFFFF, sseq & 0xFFFFFFFF, 0x10, b""
                )
            )
        emit(_ipv4_tcp(client, server, sport, 80, cseq & 0xFFFFFFFF, sseq & 0xFFFFFFFF, 0x11, b""))
        emit(
            _ipv4_tcp(
                server, client, 80, sport, sseq & 0xFFFFFFFF, (cseq + 1) & 0xFFFFFFFF, 0x11, b""
            )
        )
        emit(
            _ipv4_tcp(
                client,
                server,
                sport,
                80,
                (cseq + 1) & 0xFFFFFFFF,
                (sseq + 1) & 0xFFFFFFFF,
                0x10,
                b"",
            )
        )
    out.write(b"".join(chunk))
    out.close()
    return written


def _time(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds user+system, stdout) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def _tshark_count(text: str) -> int:
    return len(re.findall(r"^\S+:\d+\s+<->\s+\S+:\d+", text, re.M))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--file", type=Path, default=RESULTS / "bench-1m.pcap")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if not args.file.exists() or args.file.stat().st_size < args.frames * 60:
        print(f"writing {args.file} ({args.frames} frames)...", flush=True)
        generate(args.file, args.frames)
    backhaul = str(Path(sys.executable).with_name("backhaul"))
    tshark_argv = ["tshark", "-n", "-r", str(args.file), "-q", "-z", "conv,tcp"]
    ours_argv = [backhaul, "capture", "-r", str(args.file), "--conversations", "tcp", "--json"]
    tshark_times, ours_times, tshark_cpu, ours_cpu = [], [], [], []
    tshark_count = ours_count = -1
    for round_ in range(args.rounds):
        order = ("tshark", "ours") if round_ % 2 == 0 else ("ours", "tshark")
        for kind in order:
            if kind == "tshark":
                wall, cpu, text = _time(tshark_argv)
                tshark_times.append(wall)
                tshark_cpu.append(cpu)
                tshark_count = _tshark_count(text)
            else:
                wall, cpu, text = _time(ours_argv)
                ours_times.append(wall)
                ours_cpu.append(cpu)
                ours_count = len(json.loads(text)["tcp_conversations"])
        print(
            f"round {round_ + 1}: tshark {tshark_times[-1]:.2f} s ({tshark_cpu[-1]:.2f} s CPU), "
            f"backhaul {ours_times[-1]:.2f} s ({ours_cpu[-1]:.2f} s CPU), "
            f"ratio {tshark_times[-1] / ours_times[-1]:.2f}x",
            flush=True,
        )
    t_med, o_med = statistics.median(tshark_times), statistics.median(ours_times)
    t_cpu, o_cpu = statistics.median(tshark_cpu), statistics.median(ours_cpu)
    ratio = t_med / o_med
    cpu_ratio = t_cpu / o_cpu
    verdict = "meets" if ratio >= TARGET else "MISSES"
    print(
        f"tshark -z conv,tcp: {t_med:.2f} s ({t_cpu:.2f} s CPU), {tshark_count} TCP conversations\n"
        f"backhaul capture:   {o_med:.2f} s ({o_cpu:.2f} s CPU), {ours_count} TCP conversations\n"
        f"speed ratio (tshark time / backhaul time): {ratio:.2f}x wall-clock "
        f"({verdict} the {TARGET:g}x target), {cpu_ratio:.2f}x in CPU time"
        + ("" if tshark_count == ours_count else "  COUNTS DIFFER")
    )
    (RESULTS / "capture.json").write_text(
        json.dumps(
            {
                "frames": args.frames,
                "tshark_seconds": tshark_times,
                "backhaul_seconds": ours_times,
                "tshark_cpu_seconds": tshark_cpu,
                "backhaul_cpu_seconds": ours_cpu,
                "cpu_ratio": cpu_ratio,
                "tshark_conversations": tshark_count,
                "backhaul_conversations": ours_count,
                "ratio": ratio,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
