"""``backhaul iperf``: the protocol and jitter code on their own, then real runs against
Debian's iperf3 in both directions on loopback, and UDP loss through an nft drop rule in a
namespace pair the tests make."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backhaul.errors import LocalProtocolError, RemoteProtocolError
from backhaul.proto.iperf3 import (
    IperfParameters,
    IperfResults,
    State,
    StreamResult,
    decode_json,
    encode_json,
    json_length,
    make_cookie,
    pack_udp_header,
    stream_ids,
    unpack_udp_header,
)
from backhaul.proto.jitter import DatagramStatistics, JitterEstimator
from tests.toolbox.conftest import BACKHAUL, assert_one_line_error
from tests.toolbox.netns_pair import Pair, make_pair


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    yield from make_pair()


needs_iperf3 = pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")

# --------------------------------------------------------------------------- pure code


def test_cookie_is_36_base32_characters_and_a_nul():
    cookie = make_cookie(bytes(range(36)))
    assert len(cookie) == 37 and cookie.endswith(b"\0")
    assert re.fullmatch(rb"[a-z2-7]{36}", cookie[:-1])
    with pytest.raises(LocalProtocolError):
        make_cookie(b"short")


def test_json_messages_are_length_framed_and_bounded():
    wire = encode_json({"tcp": True, "time": 3})
    (length,) = struct.unpack("!I", wire[:4])
    assert length == len(wire) - 4
    assert decode_json(wire[4:] + b"\0") == {"tcp": True, "time": 3}
    with pytest.raises(RemoteProtocolError, match="limit"):
        json_length(struct.pack("!I", 9000), 8192)
    for bad in (b"not json", b"[1, 2]", b"\xff\xfe"):
        with pytest.raises(RemoteProtocolError):
            decode_json(bad)


def test_parameters_round_trip_and_refuse_bad_values():
    params = IperfParameters(
        protocol="udp",
        duration=5,
        parallel=3,
        reverse=True,
        rate=2_000_000,
        length=1200,
        window=65536,
        udp_counters_64bit=True,
    )
    document = params.to_json()
    assert (
        document["udp"] is True and document["bandwidth"] == 2_000_000 and document["len"] == 1200
    )
    back = IperfParameters.from_json(document)
    assert (
        back.protocol,
        back.duration,
        back.parallel,
        back.reverse,
        back.rate,
        back.length,
        back.window,
        back.udp_counters_64bit,
    ) == ("udp", 5, 3, True, 2_000_000, 1200, 65536, True)
    for bad in (
        {"tcp": True, "parallel": 0},
        {"tcp": True, "time": "ten"},
        {"udp": True, "len": 70000},
        {"sctp": True},
        {"tcp": True, "reverse": True, "bidirectional": True},
    ):
        with pytest.raises(RemoteProtocolError):
            IperfParameters.from_json(bad)
    assert IperfParameters(protocol="udp").to_json()["bandwidth"] == 1_000_000  # iperf3's default
    # a server takes a UDP test without "bandwidth" as unlimited (iperf3 -u -b 0)
    assert IperfParameters.from_json({"udp": True}).target_rate == 0


def test_results_round_trip_and_missing_fields_are_a_protocol_error():
    results = IperfResults(
        1.5,
        1.0,
        0.5,
        1,
        [
            StreamResult(
                id=1, bytes=10, retransmits=2, jitter=0.001, errors=3, packets=9, end_time=1.0
            )
        ],
    )
    assert IperfResults.from_json(json.loads(json.dumps(results.to_json()))) == results
    with pytest.raises(RemoteProtocolError):
        IperfResults.from_json({"cpu_util_total": 1, "streams": []})


def test_stream_ids_follow_iperf3():
    assert stream_ids(1) == [1]
    assert stream_ids(4) == [1, 3, 4, 5]


def test_states_and_udp_header():
    assert State.from_byte(b"\xff") is State.ACCESS_DENIED
    assert State.TEST_END.byte() == b"\x04"
    with pytest.raises(RemoteProtocolError):
        State.from_byte(b"\x63")
    assert unpack_udp_header(pack_udp_header(100, 250000, 7, False), False) == (100.25, 7)
    assert unpack_udp_header(pack_udp_header(1, 0, 2**40, True), True) == (1.0, 2**40)


def test_jitter_follows_rfc3550():
    estimator = JitterEstimator()
    # transit times 10, 12, 11, 15 ms: |D| = 2, 1, 4 ms
    for i, transit in enumerate((0.010, 0.012, 0.011, 0.015)):
        estimator.update(i * 0.1, i * 0.1 + transit)
    expected = 0.0
    for d in (0.002, 0.001, 0.004):
        expected += (d - expected) / 16
    assert estimator.jitter == pytest.approx(expected)
    constant = JitterEstimator()
    for i in range(50):
        constant.update(i, i + 0.5)  # clocks offset by 0.5 s: no jitter at all
    assert constant.jitter == 0.0


def test_loss_and_reordering_follow_iperf3():
    stats = DatagramStatistics()
    for seq in (1, 2, 5):  # 3 and 4 missing when 5 comes
        stats.update(seq, 100, 0.0, 0.0)
    assert (stats.highest, stats.lost, stats.out_of_order) == (5, 2, 0)
    stats.update(3, 100, 0.0, 0.0)  # 3 was late, not lost
    assert (stats.lost, stats.out_of_order) == (1, 1)
    stats.update(6, 100, 0.0, 0.0)
    stats.update(6, 100, 0.0, 0.0)  # a duplicate counts as late, as iperf3 counts it
    assert (stats.highest, stats.lost, stats.out_of_order, stats.received) == (6, 0, 2, 6)


# --------------------------------------------------------------------------- helpers


class Server:
    """A server process that is ready once its output says so."""

    def __init__(self, argv: Sequence[str], ready: str, stream: str = "stdout") -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        assert pipe is not None
        self.seen = b""
        deadline = time.monotonic() + 15
        while ready.encode() not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.proc.kill()
                out, err = self.proc.communicate()
                raise AssertionError(f"server not ready: {self.seen!r} {out!r} {err!r}")
            readable, _, _ = select.select([pipe], [], [], left)
            if readable:
                self.seen += os.read(pipe.fileno(), 65536)
        self.stream = stream

    def finish(self, timeout: float = 30) -> tuple[str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise
        if self.stream == "stdout":
            out = self.seen + out
        else:
            err = self.seen + err
        return out.decode(), err.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(
    port: int, prefix: Sequence[str] = (), proc: subprocess.Popen | None = None
) -> None:
    """Poll until a TCP socket listens on ``port`` (in the namespace ``prefix`` enters)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        done = run([*prefix, "ss", "-Hltn", f"sport = :{port}"], timeout=10)
        if done.stdout.strip():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)  # polling a condition, with a deadline
    raise AssertionError(f"nothing listens on port {port}")


def iperf3_server(port: int, prefix: Sequence[str] = (), extra: Sequence[str] = ()) -> Server:
    """``iperf3 -s -1``, ready to accept (with --json it prints nothing until the end)."""
    server = Server.__new__(Server)
    server.proc = subprocess.Popen(
        [*prefix, "iperf3", "-s", "-1", "-p", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server.seen = b""
    server.stream = "stdout"
    try:
        wait_listening(port, prefix, server.proc)
    except AssertionError:
        server.kill()
        raise
    return server


def backhaul_server(
    prefix: Sequence[str] = (), port: int = 0, extra: Sequence[str] = ()
) -> tuple[Server, int]:
    server = Server(
        [*prefix, BACKHAUL, "iperf", "-s", "-1", "-p", str(port), "--json", *extra],
        "Server listening",
        stream="stderr",
    )
    match = re.search(rb"Server listening on (\d+)", server.seen)
    assert match is not None
    return server, int(match.group(1))


def _swap(key: str) -> str:
    return key.replace("_bidir_reverse", "") if "bidir" in key else key + "_bidir_reverse"


def run(argv: Sequence[str], timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def ours(args: Sequence[str], prefix: Sequence[str] = ()) -> dict:
    done = run([*prefix, BACKHAUL, "iperf", *args, "--json"])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# --------------------------------------------------------------------------- against iperf3


@needs_iperf3
@pytest.mark.parametrize(
    "args",
    [
        ["-t", "1"],
        ["-t", "1", "-R"],
        ["-t", "1", "--bidir"],
        ["-t", "1", "-P", "2"],
        ["-t", "1", "-w", "256K", "-l", "64K", "-N"],
    ],
    ids=["tcp", "reverse", "bidir", "parallel", "window-length-nodelay"],
)
def test_backhaul_client_against_iperf3_server(args):
    port = free_port()
    server = iperf3_server(port, extra=["--json"])
    try:
        doc = ours(["-c", "127.0.0.1", "-p", str(port), *args])
        theirs = json.loads(server.finish()[0])
    finally:
        server.kill()
    assert doc["end"]["sum_received"]["bytes"] > 1_000_000
    # iperf3 3.12's server JSON has only what it measured itself (the other side is 0);
    # those counts crossed the results exchange intact into our report
    compared = 0
    for key in ("sum_sent", "sum_received", "sum_sent_bidir_reverse", "sum_received_bidir_reverse"):
        if key in theirs["end"] and theirs["end"][key]["bytes"]:
            # a bidirectional server files each direction under the other name than we do
            candidates = {doc["end"][k]["bytes"] for k in (key, _swap(key)) if k in doc["end"]}
            assert theirs["end"][key]["bytes"] in candidates, key
            compared += 1
    assert compared >= 1
    assert doc["end"]["sum_sent"]["bytes"] >= doc["end"]["sum_received"]["bytes"]
    assert len(doc["end"]["streams"]) == len(theirs["end"]["streams"])
    assert doc["start"]["cookie"] == theirs["start"]["cookie"]
    if "--bidir" in args:
        assert doc["end"]["sum_received_bidir_reverse"]["bytes"] > 1_000_000


@needs_iperf3
@pytest.mark.parametrize(
    "args",
    [["-t", "1"], ["-t", "1", "-R", "-P", "2"], ["-t", "1", "--bidir"]],
    ids=["tcp", "reverse-parallel", "bidir"],
)
def test_iperf3_client_against_backhaul_server(args):
    server, port = backhaul_server()
    try:
        done = run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "--json", *args])
        out, _ = server.finish()
    finally:
        server.kill()
    assert done.returncode == 0, done.stdout + done.stderr
    theirs = json.loads(done.stdout)
    doc = json.loads(out)
    assert "error" not in theirs
    assert theirs["end"]["sum_received"]["bytes"] > 1_000_000
    assert theirs["end"]["sum_received"]["bytes"] == doc["end"]["sum_received"]["bytes"]
    assert theirs["end"]["sum_sent"]["bytes"] == doc["end"]["sum_sent"]["bytes"]
    if "-R" in args:  # our server sent: iperf3 got real retransmit counts from TCP_INFO
        assert 0 <= theirs["end"]["sum_sent"]["retransmits"] < 2**31


@needs_iperf3
def test_udp_both_ways_reports_jitter_and_loss():
    port = free_port()
    server = iperf3_server(port, extra=["--json"])
    try:
        doc = ours(["-c", "127.0.0.1", "-p", str(port), "-u", "-b", "20M", "-l", "1200", "-t", "1"])
        theirs_server = json.loads(server.finish()[0])["end"]["sum_received"]
    finally:
        server.kill()
    received = doc["end"]["sum_received"]
    expected = 20_000_000 / 8 / 1200  # datagrams in one second at the target rate
    assert abs(received["packets"] - expected) < expected * 0.1
    # loopback loses a datagram only when a busy machine lets the receive buffer fill
    assert received["lost_percent"] < 5 and received["jitter_ms"] >= 0
    assert received["lost_packets"] == theirs_server["lost_packets"]
    assert received["jitter_ms"] == pytest.approx(theirs_server["jitter_ms"])
    assert doc["end"]["streams"][0]["udp"]["bits_per_second"] == pytest.approx(20e6, rel=0.1)

    server, port = backhaul_server()
    try:
        done = run(
            [
                "iperf3",
                "-c",
                "127.0.0.1",
                "-p",
                str(port),
                "-u",
                "-R",
                "-b",
                "10M",
                "-t",
                "1",
                "--json",
            ]
        )
        server.finish()
    finally:
        server.kill()
    assert done.returncode == 0, done.stdout
    theirs = json.loads(done.stdout)["end"]["sum_received"]
    # iperf3 asks for its own datagram size (32 KiB on loopback): about 38 a second
    assert theirs["packets"] > 20 and theirs["lost_percent"] < 5
    assert theirs["bits_per_second"] == pytest.approx(10e6, rel=0.1)  # our sender was paced


@needs_iperf3
def test_json_keys_are_iperf3s():
    shapes = []
    for client in (["iperf3"], [BACKHAUL, "iperf"]):
        port = free_port()
        server = iperf3_server(port)
        try:
            done = run([*client, "-c", "127.0.0.1", "-p", str(port), "-t", "1", "--json"])
        finally:
            server.finish()
        shapes.append(json.loads(done.stdout))
    theirs, mine = shapes
    assert set(mine) == set(theirs) == {"start", "intervals", "end"}
    for path in (("end", "sum_sent"), ("end", "sum_received"), ("start", "test_start")):
        a, b = mine, theirs
        for key in path:
            a, b = a[key], b[key]
        assert set(a) == set(b), path
    assert set(mine["end"]) == set(theirs["end"])
    assert set(mine["end"]["streams"][0]) == {"sender", "receiver"}
    assert set(mine["end"]["streams"][0]["receiver"]) == set(
        theirs["end"]["streams"][0]["receiver"]
    )
    assert set(mine["end"]["cpu_utilization_percent"]) == set(
        theirs["end"]["cpu_utilization_percent"]
    )
    assert set(mine["intervals"][0]["sum"]) == set(theirs["intervals"][0]["sum"])
    assert set(mine["intervals"][0]["streams"][0]) <= set(theirs["intervals"][0]["streams"][0])


@needs_iperf3
def test_busy_server_denies_a_second_client():
    server, port = backhaul_server()
    try:
        # the first client is running once its data stream is connected
        first = Server(
            ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "3", "--forceflush"],
            "connected to",
        )
        second = run([BACKHAUL, "iperf", "-c", "127.0.0.1", "-p", str(port), "-t", "1"])
        out, _ = first.finish()
    finally:
        server.kill()
    assert "busy" in assert_one_line_error(second, 1)
    assert first.proc.returncode == 0 and "iperf Done" in out


def test_plot_and_text_output(tmp_path):
    server, port = backhaul_server()
    png = tmp_path / "out.png"
    try:
        done = run(
            [
                BACKHAUL,
                "iperf",
                "-c",
                "127.0.0.1",
                "-p",
                str(port),
                "-t",
                "1",
                "-i",
                "0.5",
                "-P",
                "2",
                "--plot",
                str(png),
            ]
        )
    finally:
        server.finish()
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"\[SUM\]\s+0\.00-\d+\.\d+\s+sec .* receiver", done.stdout)
    assert done.stdout.rstrip().endswith("iperf Done.")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["iperf"], "-s to serve or -c HOST"),
        (["iperf", "-s", "-c", "x"], "-s to serve or -c HOST"),
        (["iperf", "-c", "127.0.0.1", "-R", "--bidir"], "exclude each other"),
        (["iperf", "-c", "127.0.0.1", "-b", "fast"], "-b 'fast'"),
        (["iperf", "-c", "127.0.0.1", "-u", "-l", "8"], "UDP length"),
        (["iperf", "-c", "127.0.0.1", "-p", "1", "--connect-timeout", "2"], "connect to 127.0.0.1"),
    ],
)
def test_bad_usage_and_refused_connections_are_one_line(args, needle):
    if args == ["iperf"]:
        args = ["iperf", "--json"]
    done = run([BACKHAUL, *args])
    line = assert_one_line_error(done, done.returncode)
    assert done.returncode in (1, 2)
    assert needle in line


# --------------------------------------------------------------------------- loss in a namespace


# 6 Mbit/s of 1000-byte datagrams for 2 s: about 1500, with room in every buffer
LOSS_RUN = ["-u", "-b", "6M", "-l", "1000", "-t", "2"]


def _drop_every_tenth_udp(pair: Pair, port: int) -> None:
    """In namespace b: drop every tenth UDP datagram to ``port`` (the first, the stream's
    connect message, always passes)."""
    rules = (
        "table inet bhtest {\n  chain input {\n    type filter hook input priority 0;\n"
        f"    udp dport {port} numgen inc mod 10 == 9 drop\n  }}\n}}\n"
    )
    done = pair.run(pair.b, ["nft", "-f", "-"], input=rules, timeout=20)
    assert done.returncode == 0, done.stderr


def _clear_rules(pair: Pair) -> None:
    pair.run(pair.b, ["nft", "delete", "table", "inet", "bhtest"], timeout=20)


@needs_iperf3
@pytest.mark.netns
def test_udp_loss_through_an_nft_drop_rule_backhaul_client(pair):
    port = 5201  # inside the test's own namespace: nothing else can hold it
    _drop_every_tenth_udp(pair, port)
    server = iperf3_server(port, prefix=pair.command(pair.b, []), extra=["--json"])
    try:
        doc = ours(
            ["-c", pair.address_b, "-p", str(port), *LOSS_RUN, "-w", "2M"],
            prefix=pair.command(pair.a, []),
        )
        theirs = json.loads(server.finish()[0])
    finally:
        server.kill()
        _clear_rules(pair)
    received = doc["end"]["sum_received"]
    assert received["packets"] > 1200
    expected = received["packets"] // 10
    assert abs(received["lost_packets"] - expected) <= 1, received
    assert received["lost_percent"] == pytest.approx(10.0, abs=0.2)
    assert received["lost_packets"] == theirs["end"]["sum_received"]["lost_packets"]


@needs_iperf3
@pytest.mark.netns
def test_udp_loss_through_an_nft_drop_rule_backhaul_server(pair):
    server, port = backhaul_server(prefix=pair.command(pair.b, []), port=5202)
    _drop_every_tenth_udp(pair, port)
    try:
        done = pair.run(
            pair.a,
            ["iperf3", "-c", pair.address_b, "-p", str(port), *LOSS_RUN, "--json"],
            timeout=40,
        )
        out, _ = server.finish()
    finally:
        server.kill()
        _clear_rules(pair)
    assert done.returncode == 0, done.stdout
    theirs = json.loads(done.stdout)["end"]["sum_received"]  # what our receiver reported
    assert theirs["packets"] > 1200
    assert abs(theirs["lost_packets"] - theirs["packets"] // 10) <= 1, theirs
    assert json.loads(out)["end"]["sum_received"]["lost_packets"] == theirs["lost_packets"]


def test_help_lists_iperf3s_flags():
    done = run([BACKHAUL, "iperf", "--help"])
    assert done.returncode == 0
    for flag in (
        "-c",
        "-s",
        "-u",
        "-P",
        "-R",
        "--bidir",
        "-b",
        "-l",
        "-w",
        "-i",
        "--json",
        "--plot",
    ):
        assert flag in done.stdout


def test_tools_module_imports_without_matplotlib_side_effects():
    # --plot imports matplotlib lazily: the command starts fast without it
    done = run(
        [sys.executable, "-c", "import backhaul.cli.iperf, sys; print('matplotlib' in sys.modules)"]
    )
    assert done.stdout.strip() == "False"


@needs_iperf3
def test_byte_and_block_counts_end_the_test_exactly():
    for count, expected in ((["-n", "64M"], 64 * 1024 * 1024), (["-k", "300"], 300 * 128 * 1024)):
        port = free_port()
        server = iperf3_server(port)
        try:
            doc = ours(["-c", "127.0.0.1", "-p", str(port), *count, "-t", "30"])
        finally:
            server.finish()
        assert doc["end"]["sum_sent"]["bytes"] == expected, count

    # our server is the sender: it stops at the count, and iperf3 waits for every byte
    server, port = backhaul_server()
    try:
        done = run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-n", "40M", "-R", "--json"])
        server.finish()
    finally:
        server.kill()
    assert done.returncode == 0, done.stdout
    end = json.loads(done.stdout)["end"]
    assert end["sum_sent"]["bytes"] == end["sum_received"]["bytes"] == 40 * 1024 * 1024


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)
_param_keys = st.sampled_from(
    ["tcp", "udp", "time", "num", "blockcount", "parallel", "len", "window", "bandwidth",
     "reverse", "bidirectional", "omit", "MSS", "congestion", "title", "udp_counters_64bit"]
)  # fmt: skip


@given(st.dictionaries(_param_keys, _json_values, max_size=10))
def test_any_parameters_json_is_accepted_or_refused_cleanly(document):
    try:
        params = IperfParameters.from_json(document)
    except RemoteProtocolError:
        return
    params.validate()  # what was accepted is valid


@given(_json_values)
def test_any_results_json_is_parsed_or_refused_cleanly(document):
    try:
        IperfResults.from_json(document if isinstance(document, dict) else {"x": document})
    except RemoteProtocolError:
        pass


@given(st.binary(max_size=64))
def test_any_json_body_is_an_object_or_a_protocol_error(body):
    try:
        assert isinstance(decode_json(body), dict)
    except RemoteProtocolError:
        pass


@needs_iperf3
def test_omitted_seconds_are_left_out_on_both_sides():
    port = free_port()
    server = iperf3_server(port, extra=["--json"])
    try:
        doc = ours(["-c", "127.0.0.1", "-p", str(port), "-t", "1", "-O", "1", "-i", "0.5"])
        theirs = json.loads(server.finish()[0])
    finally:
        server.kill()
    flags = [i["sum"]["omitted"] for i in doc["intervals"]]
    assert flags[:2] == [True, True] and not any(flags[2:]) and len(flags) >= 4
    assert doc["end"]["sum_received"]["bytes"] == theirs["end"]["sum_received"]["bytes"] > 0

    # our server paces UDP across the end of the omitted second and leaves it out
    server, port = backhaul_server()
    try:
        done = run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-u", "-R", "-b", "10M",
                    "-l", "1250", "-t", "2", "-O", "1", "--json"])  # fmt: skip
        out, _ = server.finish()
    finally:
        server.kill()
    assert done.returncode == 0, done.stdout
    end = json.loads(done.stdout)["end"]
    assert end["sum_received"]["bits_per_second"] == pytest.approx(10e6, rel=0.1)
    assert end["sum_received"]["packets"] == pytest.approx(2000, rel=0.1)  # 2 s, 1000 a second
    # what our server sent after the omitted second is what it told iperf3
    assert json.loads(out)["end"]["sum_sent"]["bytes"] == end["sum_sent"]["bytes"] > 0
