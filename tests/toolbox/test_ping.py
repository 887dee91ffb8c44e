"""``backhaul ping``: the ledger and statistics, then the command on loopback and in the lab."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess

import pytest

from backhaul.cli.ping import format_ms
from backhaul.net.rtt import EchoLedger, ReplyKind, loss_percent, median, summarize

from .conftest import BACKHAUL, assert_one_line_error, run_main

SUMMARY = re.compile(
    r"^(\d+) packets transmitted, (\d+) received,(?: \+\d+ \w+,)* ([\d.]+)% packet loss, "
    r"time \d+ms$",
    re.M,
)
RTT_LINE = re.compile(r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$", re.M)
REPLY = re.compile(r"^64 bytes from (\S+): icmp_seq=(\d+) ttl=(\d+) time=([\d.]+) ms$", re.M)


def _icmp_possible() -> bool:
    for kind in (socket.SOCK_RAW, socket.SOCK_DGRAM):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
            return True
        except OSError:
            continue
    return False


needs_icmp = pytest.mark.skipif(
    not _icmp_possible(),
    reason="no ICMP socket for this user (not root, and ping_group_range excludes the group)",
)


def _targets(done: subprocess.CompletedProcess[str]) -> list[dict]:
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)["targets"]


# ----------------------------------------------------------------------------- pure parts


def test_summary_is_iputils_arithmetic():
    s = summarize([0.001, 0.002, 0.003, 0.004])
    assert (s.min, s.max, s.count) == (0.001, 0.004, 4)
    assert s.avg == pytest.approx(0.0025)
    # iputils: mdev = sqrt(mean(x^2) - mean(x)^2), the population deviation
    assert s.mdev == pytest.approx(math.sqrt(7.5e-6 - 6.25e-6))
    assert summarize([]) is None
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 2.0]) == 1.5 and median([]) is None
    assert loss_percent(3, 2) == pytest.approx(100 / 3) and loss_percent(0, 0) == 0.0


def test_ledger_counts_replies_duplicates_late_unknown_and_errors():
    ledger = EchoLedger(timeout=1.0)
    for seq in (1, 2, 3, 4):
        ledger.sent(seq, now=10.0 + seq)
    assert ledger.reply(1, now=11.5).kind is ReplyKind.REPLY
    verdict = ledger.reply(1, now=11.6)
    assert verdict.kind is ReplyKind.DUPLICATE and verdict.rtt == pytest.approx(0.6)
    assert ledger.reply(2, now=13.5).kind is ReplyKind.LATE  # sent 12.0, deadline 13.0
    assert ledger.reply(99, now=13.5).kind is ReplyKind.UNKNOWN
    assert ledger.error(3) and not ledger.error(3) and not ledger.error(98)
    assert ledger.outstanding(now=14.5) == 1 and ledger.outstanding(now=15.5) == 0
    assert ledger.reply(4, now=14.2, rtt=0.123).rtt == 0.123  # kernel timestamp wins
    stats = ledger.statistics()
    assert (stats.transmitted, stats.received, stats.duplicates, stats.late, stats.errors) == (
        4,
        2,
        1,
        1,
        1,
    )
    assert stats.loss_percent == 50.0
    assert stats.rtts == pytest.approx((0.5, 0.123))


def test_ledger_sequence_wraps_at_16_bits():
    ledger = EchoLedger(timeout=1.0)
    ledger.sent(65536 + 5, now=0.0)
    assert ledger.reply(5, now=0.1).kind is ReplyKind.REPLY


def test_reply_times_print_like_iputils():
    assert [format_ms(x) for x in (0.0000456, 0.0012345, 0.012345, 0.12345)] == [
        "0.046",
        "1.23",
        "12.3",
        "123",
    ]


# ----------------------------------------------------------------------------- loopback


@needs_icmp
def test_ping_loopback_v4_and_v6_at_once(run_cli):
    done = run_cli(["ping", "-c", "3", "-i", "0.01", "--json", "127.0.0.1", "::1"])
    assert done.returncode == 0, done.stderr
    v4, v6 = _targets(done)
    assert (v4["address"], v4["family"], v6["address"], v6["family"]) == ("127.0.0.1", 4, "::1", 6)
    for target in (v4, v6):
        assert (target["transmitted"], target["received"], target["loss_percent"]) == (3, 3, 0)
        assert [e["seq"] for e in target["events"]] == [1, 2, 3]
        assert all(e["kind"] == "reply" and e["ttl"] == 64 for e in target["events"])
        assert all(e["bytes"] == 64 for e in target["events"])
        rtt = target["rtt_ms"]
        assert 0 < rtt["min"] <= rtt["avg"] <= rtt["max"] < 50


@needs_icmp
def test_ping_human_output_has_iputils_shape(run_cli):
    done = run_cli(["ping", "-c", "2", "-i", "0.01", "-s", "100", "127.0.0.1"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("PING 127.0.0.1 (127.0.0.1) 100(128) bytes of data.\n")
    assert re.findall(
        r"^108 bytes from 127\.0\.0\.1: icmp_seq=(\d) ttl=64 ", done.stdout, re.M
    ) == [
        "1",
        "2",
    ]
    assert "--- 127.0.0.1 ping statistics ---" in done.stdout
    assert SUMMARY.search(done.stdout).groups() == ("2", "2", "0")
    assert RTT_LINE.search(done.stdout)
    assert "\x1b[" not in done.stdout  # no colour when not a terminal


@needs_icmp
def test_ping_stops_on_ctrl_c_and_prints_the_summary():
    proc = subprocess.Popen(
        [BACKHAUL, "ping", "-i", "0.02", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith("PING 127.0.0.1")
        for _ in range(5):  # live lines arrive one by one, even into a pipe
            assert REPLY.match(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    sent, received, loss = SUMMARY.search(out).groups()
    assert int(sent) >= 5 and received == sent and loss == "0"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_tcp_ping_times_the_handshake_and_counts_rst_as_an_answer(run_cli):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: the kernel answers RST
    try:
        port, closed_port = listener.getsockname()[1], closed.getsockname()[1]
        done = run_cli(["ping", "--tcp", str(port), "-c", "3", "-i", "0.01", "--json", "127.0.0.1"])
        (target,) = _targets(done)
        assert done.returncode == 0
        assert (target["mode"], target["port"], target["received"]) == ("tcp", port, 3)
        assert {e["kind"] for e in target["events"]} == {"reply"}
        done = run_cli(["ping", "--tcp", str(closed_port), "-c", "2", "-i", "0.01", "::1"])
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(f"port {closed_port} closed (RST) from ::1") == 2
    finally:
        listener.close()
        closed.close()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-c", "0", "127.0.0.1"], "count 0"),
        (["-c", "1", "-i", "0", "127.0.0.1"], "interval"),
        (["-c", "1", "-t", "300", "127.0.0.1"], "ttl 300"),
        (["-c", "1", "-s", "70000", "127.0.0.1"], "size 70000"),
        (["-c", "1", "999.1.2.3"], "not a valid IPv4 address"),
        (["-c", "1", "fe80::zz"], "not a valid IPv6 address"),
        (["-c", "1", "-6", "127.0.0.1"], "-6 was given"),
        (["-c", "1", "--socket", "magic", "127.0.0.1"], "--socket"),
        (["-c", "1", "--tcp", "0", "127.0.0.1"], "TCP port 0"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(capsys, args, needle):
    code, out, err = run_main(["ping", *args], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("backhaul: error: ") and needle in err, err


def test_bad_usage_through_the_installed_command(run_cli):
    line = assert_one_line_error(run_cli(["ping", "-c", "1", "-4", "::1"]), 2)
    assert line == "backhaul: error: ::1 is an IPv6 address but -4 was given"


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privilege needs root to start from")
def test_without_privilege_the_message_says_what_to_do(run_cli):
    with open("/proc/sys/net/ipv4/ping_group_range") as f:
        low, high = (int(x) for x in f.read().split())
    if low <= os.getegid() <= high:
        pytest.skip("ping_group_range lets this group open ping sockets on this host")
    done = run_cli(["ping", "-c", "1", "127.0.0.1"], unprivileged=True)
    line = assert_one_line_error(done, 2)
    assert "run as root" in line and "ping_group_range" in line and "--tcp" in line
    assert "PING" not in done.stdout


# ----------------------------------------------------------------------------- the lab


@pytest.mark.netns
def test_ping_crosses_the_lab_with_raw_and_ping_sockets(lab, run_cli):
    server4, server6 = lab.address("server", 4), lab.address("server", 6)
    for kind in ("raw", "dgram"):
        args = ["ping", "--socket", kind, "-c", "3", "-i", "0.01", "--json"]
        done = run_cli([*args, server4, server6, "router1.lab"], lab=lab)
        assert done.returncode == 0, done.stderr
        t4, t6, r1 = _targets(done)
        assert (t4["received"], t6["received"], r1["received"]) == (3, 3, 3)
        # two routers between client and server: the reply's TTL shows both hops
        assert {e["ttl"] for e in t4["events"]} == {62} == {e["ttl"] for e in t6["events"]}
        assert {e["ttl"] for e in r1["events"]} == {64}
        assert r1["address"] == lab.address("router1", 4)


@pytest.mark.netns
@pytest.mark.parametrize("kind", ["raw", "dgram"])
def test_ttl_expiry_is_reported_from_the_router_that_dropped_it(lab, run_cli, kind):
    targets = [lab.address("server", 4), lab.address("server", 6)]
    args = ["ping", "--socket", kind, "-t", "2", "-c", "2", "-i", "0.01", "-W", "1", *targets]
    done = run_cli(args, lab=lab)
    assert done.returncode == 1, done.stdout + done.stderr
    for family in (4, 6):
        router2 = re.escape(lab.address("router2", family))
        lines = re.findall(rf"^(?:\S+: )?From {router2} icmp_seq=(\d) (.+)$", done.stdout, re.M)
        assert [seq for seq, _ in lines] == ["1", "2"], done.stdout
        assert all("exceeded" in text for _, text in lines)
    assert [m.groups() for m in SUMMARY.finditer(done.stdout)] == [("2", "0", "100")] * 2
    assert done.stdout.count("+2 errors") == 2


@pytest.mark.netns
def test_dont_fragment_meets_a_small_mtu(lab, run_cli):
    targets = [lab.address("server", 4), lab.address("server", 6)]
    lab.set_mtu("r1-r2", 1280)
    try:
        args = ["ping", "-s", "1300", "-c", "2", "-i", "0.05", "-W", "0.5", "--json"]
        done = run_cli([*args, "--df", *targets], lab=lab)
        assert done.returncode == 1, done.stdout + done.stderr
        for target in _targets(done):
            assert target["received"] == 0 and target["errors"] == 2
            messages = [e["message"] for e in target["events"] if e["kind"] == "error"]
            assert all(re.search(r"mtu ?=? ?1280", m) for m in messages), messages
        # without --df the kernel fragments (after learning the path MTU) and replies come
        done = run_cli([*args, "-c", "3", *targets], lab=lab)
        assert done.returncode == 0, done.stdout + done.stderr
        assert all(t["received"] >= 2 for t in _targets(done))
    finally:
        lab.set_mtu("r1-r2", 1500)
        lab.run("client", ["ip", "route", "flush", "cache"])
        lab.run("client", ["ip", "-6", "route", "flush", "cache"])


@pytest.mark.netns
def test_loss_tracks_the_configured_drop_rate(lab, run_cli):
    rate, probes = 25, 400
    lab.set_loss("r1-r2", rate)
    try:
        args = ["ping", "-c", str(probes), "-i", "0.005", "-W", "0.5", "-q", "--json"]
        done = run_cli([*args, lab.address("server", 4)], lab=lab)
    finally:
        lab.set_loss("r1-r2", 0)
    (target,) = _targets(done)
    assert target["transmitted"] == probes and target["late"] == 0
    received = target["received"]
    # binomial: 4.5 standard deviations either side (a false alarm about once in 10^5 runs)
    sd = math.sqrt(probes * rate / 100 * (1 - rate / 100))
    lost = probes - received
    assert abs(lost - probes * rate / 100) <= 4.5 * sd, (lost, target["loss_percent"])
    assert target["loss_percent"] == pytest.approx(100 * lost / probes)
    assert done.returncode == 0


@pytest.mark.netns
def test_rtt_agrees_with_iputils_ping(lab, run_cli):
    count = 50
    targets = [lab.address("server", 4), lab.address("server", 6)]
    done = run_cli(["ping", "-c", str(count), "-i", "0.01", "--json", *targets], lab=lab)
    for family, ours in zip((4, 6), _targets(done), strict=True):
        theirs = lab.run("client", ["ping", "-c", str(count), "-i", "0.01", targets[family // 6]])
        assert theirs.returncode == 0, theirs.stderr
        their_rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", theirs.stdout)]
        our_rtts = [e["rtt_ms"] for e in ours["events"] if e["kind"] == "reply"]
        assert len(their_rtts) == len(our_rtts) == count
        a, b = statistics.median(our_rtts), statistics.median(their_rtts)
        assert abs(a - b) <= max(0.1 * b, 0.1), (family, a, b)
        # and the same order of magnitude: a unit slip (x1000) would show here. Not a tighter
        # factor: the two runs are taken one after the other, and on a loaded machine a veth
        # round trip of tens of microseconds moves by 3x or more between them (seen: 16 vs
        # 56 us), while the absolute check above already bounds the difference.
        assert b / 10 <= a <= b * 10, (family, a, b)


@pytest.mark.netns
def test_tcp_ping_in_the_lab_open_and_closed(lab, run_cli):
    server = lab.address("server", 4)
    listener = lab.popen(
        "server",
        [
            str(BACKHAUL).replace("backhaul", "python"),
            "-c",
            "import socket,sys,time; s=socket.create_server(('::', 8080), family=socket.AF_INET6,"
            " dualstack_ipv6=True); print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout.readline().strip() == "ready"
        done = run_cli(
            ["ping", "--tcp", "8080", "-c", "3", "-i", "0.01", "--json", server], lab=lab
        )
        (target,) = _targets(done)
        assert target["received"] == 3 and {e["kind"] for e in target["events"]} == {"reply"}
        done = run_cli(
            ["ping", "--tcp", "8081", "-c", "2", "-i", "0.01", "--json", server], lab=lab
        )
        (target,) = _targets(done)
        assert target["received"] == 2 and {e["kind"] for e in target["events"]} == {"closed"}
        # a TTL too small for the path: the router's time exceeded is not an answer
        done = run_cli(
            ["ping", "--tcp", "8080", "-t", "1", "-c", "1", "-W", "0.3", "--json", server], lab=lab
        )
        assert done.returncode == 1 and _targets(done)[0]["received"] == 0
    finally:
        listener.kill()
        listener.wait()
        listener.stdout.close()


@pytest.mark.netns
def test_duplicates_are_counted_not_received(lab, run_cli):
    # router2 sends every echo reply twice (nftables dup): iputils' "(DUP!)" case
    router1_side = lab.addresses("router1", 4)[1]
    rules = (
        "table ip bh_dup {\n  chain replies {\n"
        "    type filter hook forward priority 0;\n"
        f'    icmp type echo-reply dup to {router1_side} device "eth0"\n  }}\n}}\n'
    )
    subprocess.run(lab.command("router2", ["nft", "-f", "-"]), input=rules, text=True, check=True)
    try:
        done = run_cli(["ping", "-c", "3", "-i", "0.02", lab.address("server", 4)], lab=lab)
    finally:
        lab.run("router2", ["nft", "delete", "table", "ip", "bh_dup"])
    assert done.returncode == 0, done.stderr
    assert len(re.findall(r"icmp_seq=\d ttl=\d+ time=[\d.]+ ms \(DUP!\)$", done.stdout, re.M)) == 3
    assert "3 packets transmitted, 3 received, +3 duplicates, 0% packet loss" in done.stdout


@pytest.mark.netns
def test_replies_after_the_timeout_are_late(lab, run_cli):
    # a 1 Mbit/s bottleneck queues 1.4 kB probes sent every 2 ms: replies fall behind -W
    lab.set_rate("client-r1", "1mbit")
    try:
        args = ["ping", "-s", "1400", "-c", "60", "-i", "0.002", "-W", "0.02", "--json"]
        done = run_cli([*args, lab.address("server", 4)], lab=lab)
    finally:
        lab.set_rate("client-r1", None)
    (target,) = _targets(done)
    late = [e for e in target["events"] if e["kind"] == "late"]
    on_time = [e for e in target["events"] if e["kind"] == "reply"]
    assert late and on_time and target["late"] == len(late)
    assert target["received"] == len(on_time)
    assert all(e["rtt_ms"] > 20 for e in late)
    assert all(e["rtt_ms"] <= 20 for e in on_time)
    assert target["rtt_ms"]["max"] <= 20  # late replies stay out of the statistics


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privilege needs root to start from")
def test_unprivileged_user_falls_back_to_ping_sockets_where_allowed(lab, run_cli):
    # the lab sets net.ipv4.ping_group_range to every group: no raw socket, a ping socket
    targets = [lab.address("server", 4), lab.address("server", 6)]
    done = run_cli(
        ["ping", "-c", "2", "-i", "0.01", "--json", *targets], lab=lab, unprivileged=True
    )
    assert done.returncode == 0, done.stderr
    assert [t["received"] for t in _targets(done)] == [2, 2]
    done = run_cli(["ping", "--socket", "raw", "-c", "1", *targets], lab=lab, unprivileged=True)
    assert "run as root" in assert_one_line_error(done, 2)
