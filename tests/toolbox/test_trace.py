"""``backhaul trace``: report aggregation, loopback, and the path through the namespace lab."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import socket
import subprocess

import pytest

from backhaul.cli.trace import hop_line
from backhaul.net.rtt import HopSample, aggregate_hops
from backhaul.tools.ping import resolve_targets
from backhaul.tools.trace import Hop, Probe, TraceOptions, trace

from .conftest import assert_one_line_error, run_main

MODES = {"udp": [], "icmp": ["--icmp"], "tcp": ["--tcp", "80"]}
FINAL_KIND = {"udp": "unreachable", "icmp": "reply", "tcp": "closed"}


def _raw_icmp_possible() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except OSError:
        return False
    return True


needs_raw = pytest.mark.skipif(
    not _raw_icmp_possible(), reason="trace needs a raw ICMP socket (root or CAP_NET_RAW)"
)


# ----------------------------------------------------------------------------- pure parts


def test_report_aggregates_rounds_per_hop_like_mtr():
    rounds = [
        [HopSample(1, "a", 0.001), HopSample(2, None, None), HopSample(3, "d", 0.003, True)],
        [HopSample(1, "a", 0.003), HopSample(2, "b", 0.002), HopSample(3, "d", 0.004, True)],
        [HopSample(1, "a", 0.002), HopSample(2, "c", 0.004), HopSample(3, "d", 0.005, True)],
        # a probe with more TTL than needed reached the target too: not a hop of its own
        [HopSample(1, "a", 0.002), HopSample(2, "b", 0.006), HopSample(4, "d", 0.005, True)],
    ]
    hop1, hop2, hop3 = aggregate_hops(rounds)
    assert (hop1.ttl, hop1.sent, hop1.received, hop1.loss_percent) == (1, 4, 4, 0.0)
    assert (hop1.best, hop1.worst, hop1.last) == (0.001, 0.003, 0.002)
    assert hop1.avg == pytest.approx(0.002)
    assert hop1.stdev == pytest.approx(math.sqrt(0.5e-6))
    assert (hop2.sent, hop2.received, hop2.loss_percent) == (4, 3, 25.0)
    assert hop2.addresses == ("b", "c") and hop2.address == "b"
    assert (hop3.ttl, hop3.sent, hop3.received) == (3, 3, 3)
    silent = aggregate_hops([[HopSample(1, None, None)]])[0]
    assert (silent.loss_percent, silent.avg, silent.address) == (100.0, None, None)


def test_hop_line_prints_like_traceroute():
    hop = Hop(
        2,
        [
            Probe(2, "198.51.100.2", 0.000061, "time-exceeded"),
            Probe(2, "198.51.100.2", 0.000048, "time-exceeded"),
            Probe(2, None, None),
            Probe(2, "198.51.100.9", 0.0123, "unreachable", annotation="!H"),
        ],
        {"198.51.100.2": "router2.lab", "198.51.100.9": None},
    )
    line = re.sub(r"\[/?[a-z ]+\]", "", hop_line(hop))
    assert line == (
        " 2  router2.lab (198.51.100.2)  0.061 ms  0.048 ms  *  198.51.100.9  12.3 ms !H"
    )


# ----------------------------------------------------------------------------- loopback


@needs_raw
@pytest.mark.parametrize("mode", ["udp", "icmp", "tcp"])
@pytest.mark.parametrize("paris", [False, True])
def test_trace_loopback_in_one_hop(mode, paris):
    async def both():
        out = []
        for name in ("127.0.0.1", "::1"):
            (target,) = await resolve_targets([name])
            out.append(await trace(target, TraceOptions(mode=mode, paris=paris, wait=1.0)))
        return out

    for result, address in zip(asyncio.run(both()), ("127.0.0.1", "::1"), strict=True):
        assert result.reached
        (hop,) = result.hops
        assert [p.address for p in hop.probes] == [address] * 3
        assert {p.kind for p in hop.probes} == {FINAL_KIND[mode]}
        assert all(0 < p.rtt < 0.5 for p in hop.probes)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--icmp", "--tcp", "80", "127.0.0.1"], "not both"),
        (["-m", "0", "127.0.0.1"], "max hops 0"),
        (["-f", "5", "-m", "3", "127.0.0.1"], "first TTL 5"),
        (["-q", "11", "127.0.0.1"], "probes per hop 11"),
        (["-w", "0", "127.0.0.1"], "wait 0"),
        (["--icmp", "-p", "40000", "127.0.0.1"], "--port"),
        (["--tcp", "70000", "127.0.0.1"], "port 70000"),
        (["300.1.1.1"], "not a valid IPv4 address"),
        (["--report", "0", "127.0.0.1"], "rounds 0"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(capsys, args, needle):
    code, out, err = run_main(["trace", *args], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("backhaul: error: ") and needle in err, err


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privilege needs root to start from")
def test_without_privilege_the_message_says_what_to_do(run_cli):
    done = run_cli(["trace", "127.0.0.1"], unprivileged=True)
    line = assert_one_line_error(done, 2)
    assert "raw ICMP socket" in line and "root" in line


# ----------------------------------------------------------------------------- the lab

FLOW_TABLE = """
table inet bh_flows {
  set udp_flows { typeof udp sport . udp dport; flags dynamic; }
  set tcp_flows { typeof tcp sport . tcp dport; flags dynamic; }
  set icmp_flows { typeof icmp checksum; flags dynamic; }
  set icmpv6_flows { typeof icmpv6 checksum; flags dynamic; }
  chain probes {
    type filter hook prerouting priority -300; policy accept;
    iifname "eth0" meta l4proto udp add @udp_flows { udp sport . udp dport }
    iifname "eth0" tcp flags & (syn | ack) == syn add @tcp_flows { tcp sport . tcp dport }
    iifname "eth0" icmp type echo-request add @icmp_flows { icmp checksum }
    iifname "eth0" icmpv6 type echo-request add @icmpv6_flows { icmpv6 checksum }
  }
}
"""


@pytest.fixture(scope="module")
def flows(lab):
    """Count the distinct flow identifiers router1 sees from the client, per protocol."""
    subprocess.run(
        lab.command("router1", ["nft", "-f", "-"]), input=FLOW_TABLE, text=True, check=True
    )

    def count(set_name: str) -> int:
        listed = lab.run(
            "router1", ["nft", "-j", "list", "set", "inet", "bh_flows", f"{set_name}_flows"]
        )
        (entry,) = [x["set"] for x in json.loads(listed.stdout)["nftables"] if "set" in x]
        return len(entry.get("elem", []))

    def reset() -> None:
        for name in ("udp", "tcp", "icmp", "icmpv6"):
            lab.run("router1", ["nft", "flush", "set", "inet", "bh_flows", f"{name}_flows"])

    yield count, reset
    lab.run("router1", ["nft", "delete", "table", "inet", "bh_flows"])


def _check_path(lab, document, family, mode):
    assert document["reached"] and document["mode"] == mode, document
    hops = document["hops"]
    assert [h["ttl"] for h in hops] == [1, 2, 3]
    expected = [
        lab.addresses("router1", family),
        lab.addresses("router2", family),
        [lab.address("server", family)],
    ]
    for hop, allowed in zip(hops, expected, strict=True):
        assert len(hop["probes"]) == 3
        for probe in hop["probes"]:
            assert probe["address"] in allowed, (hop, allowed)
            assert probe["rtt_ms"] is not None and 0 < probe["rtt_ms"] < 500
    assert [p["kind"] for p in hops[0]["probes"]] == ["time-exceeded"] * 3
    assert [p["kind"] for p in hops[2]["probes"]] == [FINAL_KIND[mode]] * 3
    assert all(p["reached"] for p in hops[2]["probes"])


@pytest.mark.netns
@pytest.mark.parametrize("mode", ["udp", "icmp", "tcp"])
def test_trace_v4_shows_both_routers_then_the_server_and_paris_keeps_one_flow(
    lab, run_cli, flows, mode
):
    count, reset = flows
    set_name = {"udp": "udp", "icmp": "icmp", "tcp": "tcp"}[mode]
    seen = {}
    for paris in (False, True):
        reset()
        args = ["trace", *MODES[mode], "-w", "1", "--json", lab.address("server", 4)]
        done = run_cli(args + (["--paris"] if paris else []), lab=lab)
        assert done.returncode == 0, done.stdout + done.stderr
        document = json.loads(done.stdout)
        assert document["paris"] is paris
        _check_path(lab, document, 4, mode)
        seen[paris] = count(set_name)
    # nine probes crossed router1: one flow identifier with --paris, several without
    assert seen[True] == 1, seen
    assert seen[False] >= 3, seen


@pytest.mark.netns
@pytest.mark.parametrize("mode", ["udp", "icmp", "tcp"])
def test_trace_v6_shows_both_routers_then_the_server(lab, run_cli, flows, mode):
    count, reset = flows
    reset()
    args = ["trace", *MODES[mode], "-w", "1", "--paris", "--json", lab.address("server", 6)]
    done = run_cli(args, lab=lab)
    assert done.returncode == 0, done.stdout + done.stderr
    _check_path(lab, json.loads(done.stdout), 6, mode)
    assert count({"udp": "udp", "icmp": "icmpv6", "tcp": "tcp"}[mode]) == 1


@pytest.mark.netns
def test_human_output_with_reverse_names(lab, run_cli):
    done = run_cli(["trace", "--resolve", "-q", "2", "server.lab"], lab=lab)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "trace to server.lab (203.0.113.2), 30 hops max, udp probes"
    pattern = r"^ {n}  {name}\.lab \({addr}\)  [\d.]+ ms  [\d.]+ ms$"
    for n, role in ((1, "router1"), (2, "router2"), (3, "server")):
        regex = pattern.format(n=n, name=role, addr=re.escape(lab.address(role, 4)))
        assert re.match(regex, lines[n]), lines[n]
    assert len(lines) == 4


@pytest.mark.netns
def test_silent_hops_show_stars_and_exit_1(lab, run_cli):
    lab.set_loss("r1-r2", 100)
    try:
        args = ["trace", "-f", "2", "-m", "3", "-q", "2", "-w", "0.2", lab.address("server", 4)]
        done = run_cli(args, lab=lab)
    finally:
        lab.set_loss("r1-r2", 0)
    assert done.returncode == 1
    assert done.stdout.splitlines()[1:] == [" 2  *  *", " 3  *  *"]
    assert done.stderr.strip() == "backhaul: 203.0.113.2 did not answer"


@pytest.mark.netns
def test_report_shows_loss_where_it_happens(lab, run_cli):
    rounds, rate = 40, 50
    lab.set_loss("r2-server", rate)
    try:
        args = ["trace", "--report", str(rounds), "-i", "0.01", "-w", "0.1", "--json"]
        done = run_cli([*args, lab.address("server", 4)], lab=lab, timeout=60)
    finally:
        lab.set_loss("r2-server", 0)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["rounds"] == rounds and document["reached"]
    hop1, hop2, hop3 = document["hops"]
    assert (hop1["address"], hop2["address"], hop3["address"]) == (
        lab.address("router1"),
        lab.address("router2", 4),
        lab.address("server"),
    )
    assert hop1["sent"] == hop2["sent"] == hop3["sent"] == rounds
    assert hop1["loss_percent"] == hop2["loss_percent"] == 0.0
    # binomial, 4.5 standard deviations: only the last link drops, at about the set rate
    sd = math.sqrt(rounds * 0.25)
    lost = rounds - hop3["received"]
    assert abs(lost - rounds * rate / 100) <= 4.5 * sd, hop3
    assert hop3["loss_percent"] == pytest.approx(100 * lost / rounds)
    assert 0 < hop3["best_ms"] <= hop3["avg_ms"] <= hop3["worst_ms"]
