"""``backhaul capture`` against tshark on files the tests write, and its bad-input behaviour."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backhaul.proto.capture_report import ReportRequest, summarise
from backhaul.proto.pcap import CaptureFileError, CaptureReader
from tests.toolbox.capture_files import (
    ACK,
    SYN,
    Recorder,
    ether,
    tcp_frame,
    tshark_fields,
    tshark_stats,
    tshark_streams,
    udp_frame,
    write_mixed,
)
from tests.toolbox.conftest import BACKHAUL, assert_one_line_error
from tests.toolbox.netns_pair import Pair, make_pair

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")

EVERYTHING = ReportRequest(
    conversations=frozenset({"tcp", "udp"}),
    endpoints="ip",
    hierarchy=True,
    tcp_flows=True,
    http=True,
    dns=True,
)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mixed(tmp_path_factory.mktemp("capture") / "mixed.pcap")


@pytest.fixture(scope="module")
def report(mixed: Path) -> dict:
    return summarise(CaptureReader(mixed.read_bytes(), str(mixed)), EVERYTHING)


def _ours_by_stream(rows: list[dict]) -> dict[int, tuple[int, int]]:
    return {r["stream"]: (r["frames"], r["bytes"]) for r in rows}


# ------------------------------------------------------------------ counts equal tshark's


@needs_tshark
def test_tcp_conversations_equal_tsharks_streams_including_port_reuse(mixed, report):
    theirs = tshark_streams(mixed, "tcp")
    assert _ours_by_stream(report["tcp_conversations"]) == theirs
    # the reused port pair is two conversations, the retransmitted SYN is not a third
    pairs = Counter(
        (r["address_a"], r["port_a"], r["address_b"], r["port_b"])
        for r in report["tcp_conversations"]
    )
    assert pairs[("192.0.2.1", 40001, "192.0.2.80", 80)] == 2
    assert pairs[("192.0.2.2", 40002, "192.0.2.80", 8080)] == 1
    table = tshark_stats(mixed, "conv,tcp")
    assert len(re.findall(r"<->", table)) == len(report["tcp_conversations"]) == 6


@needs_tshark
def test_conversation_directions_match_tsharks_table(mixed, report):
    table = tshark_stats(mixed, "conv,tcp")
    rows = re.findall(
        r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+(\d+) bytes\s+(\d+)\s+(\d+) bytes", table, re.M
    )
    theirs = Counter(
        (a, int(pa), b, int(pb), int(f_ba), int(b_ba), int(f_ab), int(b_ab))
        for a, pa, b, pb, f_ba, b_ba, f_ab, b_ab in rows
    )
    ours = Counter(
        (
            r["address_a"],
            r["port_a"],
            r["address_b"],
            r["port_b"],
            r["frames_b_to_a"],
            r["bytes_b_to_a"],
            r["frames_a_to_b"],
            r["bytes_a_to_b"],
        )
        for r in report["tcp_conversations"]
    )
    assert ours == theirs


@needs_tshark
def test_udp_conversations_equal_tsharks(mixed, report):
    assert _ours_by_stream(report["udp_conversations"]) == tshark_streams(mixed, "udp")


@needs_tshark
def test_ip_endpoints_equal_tsharks(mixed, report):
    text = tshark_stats(mixed, "endpoints,ip") + tshark_stats(mixed, "endpoints,ipv6")
    theirs = {
        m[0]: tuple(int(x) for x in m[1:])
        for m in re.findall(
            r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M
        )
    }
    ours = {
        r["address"]: (
            r["frames"],
            r["bytes"],
            r["tx_frames"],
            r["tx_bytes"],
            r["rx_frames"],
            r["rx_bytes"],
        )
        for r in report["endpoints"]["rows"]
    }
    assert ours == theirs


@needs_tshark
def test_protocol_hierarchy_transport_counts_equal_tsharks(mixed, report):
    text = tshark_stats(mixed, "io,phs")
    theirs: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, frames, size in re.findall(r"^\s*(\w+)\s+frames:(\d+) bytes:(\d+)", text, re.M):
        if name in ("tcp", "udp", "ip", "ipv6", "arp", "eth"):
            theirs[name][0] += int(frames)
            theirs[name][1] += int(size)
    ours: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def walk(node: dict) -> None:
        if node["protocol"] in theirs:
            ours[node["protocol"]][0] += node["frames"]
            ours[node["protocol"]][1] += node["bytes"]
        for child in node["children"]:
            walk(child)

    walk(report["protocol_hierarchy"])
    assert ours == theirs


@needs_tshark
def test_retransmissions_and_ack_rtts_equal_tsharks(mixed, report):
    retrans = Counter(
        int(s) for (s,) in tshark_fields(mixed, ["tcp.stream"], "tcp.analysis.retransmission")
    )
    rtts: dict[int, list[float]] = defaultdict(list)
    for stream, value in tshark_fields(
        mixed, ["tcp.stream", "tcp.analysis.ack_rtt"], "tcp.analysis.ack_rtt"
    ):
        rtts[int(stream)].append(float(value))
    fields = ["tcp.stream", "tcp.analysis.initial_rtt"]
    initial = {int(s): float(v) for s, v in tshark_fields(mixed, fields, fields[1])}
    for flow in report["tcp_flows"]:
        stream = flow["stream"]
        assert flow["retransmissions"] == retrans.get(stream, 0), stream
        samples = rtts.get(stream, [])
        if samples:
            assert flow["ack_rtt"]["samples"] == len(samples), stream
            assert flow["ack_rtt"]["max_ms"] == pytest.approx(max(samples) * 1000, abs=0.01)
            assert flow["ack_rtt"]["min_ms"] == pytest.approx(min(samples) * 1000, abs=0.01)
        else:
            assert flow["ack_rtt"] is None
        if stream in initial:
            assert flow["handshake_rtt_ms"] == pytest.approx(initial[stream] * 1000, abs=0.01)
    assert sum(f["retransmissions"] for f in report["tcp_flows"]) == 2


@needs_tshark
def test_dns_response_times_equal_tsharks(mixed, report):
    theirs = sorted(
        round(float(t) * 1000, 3)
        for (t,) in tshark_fields(mixed, ["dns.time"], "dns.flags.response == 1")
    )
    rows = report["dns"]["transactions"]
    assert sorted(r["response_ms"] for r in rows if r["response_ms"] is not None) == theirs
    lost = [r for r in rows if r["name"] == "lost.example.test."]
    assert lost and lost[0]["rcode"] is None
    answered = {r["name"]: r["answers"] for r in rows if r["answers"]}
    assert answered["www.example.test."] == ["www.example.test. A 192.0.2.80"]


@needs_tshark
def test_http_exchanges_equal_tsharks(mixed, report):
    requests = tshark_fields(
        mixed, ["tcp.stream", "http.request.method", "http.request.uri"], "http.request"
    )
    responses = tshark_fields(mixed, ["tcp.stream", "http.response.code"], "http.response")
    ours = report["http"]
    assert [(r["stream"], r["method"], r["uri"]) for r in ours] == [
        (int(s), m, u) for s, m, u in requests
    ]
    assert [(r["stream"], r["status"]) for r in ours] == [(int(s), int(c)) for s, c in responses]
    chunked = next(r for r in ours if r["uri"] == "/b?x=1")
    assert chunked["response_body_bytes"] == 5 and chunked["time_ms"] == pytest.approx(
        3.0, abs=0.01
    )


@needs_tshark
@pytest.mark.parametrize("stream", [0, 1, 4])
def test_followed_stream_equals_tsharks(mixed, stream):
    ours = summarise(CaptureReader(mixed.read_bytes()), ReportRequest(follow=stream))["follow"]
    text = tshark_stats(mixed, f"follow,tcp,raw,{stream}")
    body = text.split("Node 1:", 1)[1].split("\n", 1)[1].split("=====")[0]
    theirs_a = b"".join(bytes.fromhex(x) for x in body.splitlines() if x and not x.startswith("\t"))
    theirs_b = b"".join(bytes.fromhex(x.strip()) for x in body.splitlines() if x.startswith("\t"))
    ours_a = b"".join(bytes.fromhex(c["data"]) for c in ours["chunks"] if c["from"] == "a")
    ours_b = b"".join(bytes.fromhex(c["data"]) for c in ours["chunks"] if c["from"] == "b")
    assert (ours_a, ours_b) == (theirs_a, theirs_b)
    assert ours_a  # the stream has data: the comparison meant something


@needs_tshark
def test_pcapng_and_nanosecond_pcap_read_the_same(tmp_path, mixed):
    rec = Recorder()
    for i in range(30):
        rec.add(tcp_frame("10.0.0.1", "10.0.0.2", 1000 + i % 3, 80, i * 7, 0, SYN), gap=0.000_001)
        rec.add(udp_frame("10.0.0.2", "10.0.0.1", 53, 2000 + i % 5, b"x" * i))
    files = [rec.write(tmp_path / "u.pcap"), rec.write(tmp_path / "n.pcap", nano=True),
             rec.write_pcapng(tmp_path / "g.pcapng")]  # fmt: skip
    request = ReportRequest(conversations=frozenset({"tcp", "udp"}))
    docs = [summarise(CaptureReader(f.read_bytes()), request) for f in files]
    for doc, path in zip(docs, files, strict=True):
        assert _ours_by_stream(doc["tcp_conversations"]) == tshark_streams(path, "tcp")
        assert _ours_by_stream(doc["udp_conversations"]) == tshark_streams(path, "udp")
        assert doc["frames"] == 60
    for a, b in zip(docs[0]["tcp_conversations"], docs[1]["tcp_conversations"], strict=True):
        # the microsecond file rounds the recorder's times, the nanosecond one keeps them
        assert a["relative_start"] == pytest.approx(b["relative_start"], abs=1.01e-6)
        assert {**a, "relative_start": 0} == {**b, "relative_start": 0}
    assert [d["format"] for d in docs] == ["pcap", "pcap", "pcapng"]


def test_big_endian_pcap_is_read(tmp_path):
    frame = tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, 5, 0, SYN)
    data = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    data += struct.pack(">IIII", 100, 5, len(frame), len(frame)) + frame
    doc = summarise(CaptureReader(data), ReportRequest(conversations=frozenset({"tcp"})))
    assert doc["frames"] == 1 and doc["tcp_conversations"][0]["port_b"] == 2


# ------------------------------------------------------------------ bad files


def test_truncated_pcap_names_the_packet(mixed):
    data = mixed.read_bytes()
    reader = CaptureReader(data[: len(data) - 10])
    with pytest.raises(CaptureFileError) as caught:
        list(reader.frames())
    assert caught.value.packet == 54
    assert "packet 54" in str(caught.value) and "cut short" in str(caught.value)


def test_corrupt_record_length_names_the_packet(mixed):
    data = bytearray(mixed.read_bytes())
    # the third record's captured length: skip the header and two records
    offset = 24
    for _ in range(2):
        (caplen,) = struct.unpack_from("<I", data, offset + 8)
        offset += 16 + caplen
    struct.pack_into("<I", data, offset + 8, 0xFFFFFF00)
    with pytest.raises(CaptureFileError, match=r"packet 3 .*corrupt"):
        list(CaptureReader(bytes(data)).frames())


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b"hello world, not a capture", "not a pcap"),
        (b"\xd4\xc3\xb2\xa1\x02", "cut short"),
    ],
)
def test_not_a_capture(content, needle):
    with pytest.raises(CaptureFileError, match=needle):
        list(CaptureReader(content).frames())


@given(st.binary(max_size=400))
def test_random_bytes_after_a_header_are_frames_or_a_capture_error(tail):
    for header in (
        struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1),
        struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28),
    ):
        try:
            summarise(CaptureReader(header + tail), EVERYTHING)
        except CaptureFileError:
            pass


@given(st.binary(min_size=0, max_size=300), st.sampled_from([0, 1, 101, 113, 276]))
def test_random_frames_decode_without_crashing(frame, linktype):
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    data += struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame
    data += struct.pack("<IIII", 1, 5, len(frame), len(frame)) + frame
    doc = summarise(CaptureReader(data), EVERYTHING)
    assert doc["frames"] == 2


# ------------------------------------------------------------------ the command


def test_cli_json_has_tcp_conversations_and_text_ends_with_the_count(run_cli, mixed):
    done = run_cli(["capture", "-r", str(mixed), "--conversations", "tcp", "--json"])
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert len(doc["tcp_conversations"]) == 6
    done = run_cli(["capture", "-r", str(mixed), "--conversations", "tcp"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().splitlines()[-1] == "6 TCP conversations"


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_cli_filter_is_compiled_by_libpcap(run_cli, mixed):
    done = run_cli(["capture", "-r", str(mixed), "--conversations", "udp", "--json", "udp port 53"])
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["filter"] == "udp port 53"
    assert doc["frames"] == 5 and len(doc["udp_conversations"]) == 3
    bad = run_cli(["capture", "-r", str(mixed), "port nonsense"])
    assert "filter 'port nonsense'" in assert_one_line_error(bad, 2)


def test_cli_truncated_file_is_one_line_with_the_packet_number(run_cli, mixed, tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(mixed.read_bytes()[:700])
    line = assert_one_line_error(run_cli(["capture", "-r", str(cut)]), 2)
    assert re.search(r"packet \d+ .*cut short", line), line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["capture"], "-r FILE"),
        (["capture", "-r", "/nonexistent.pcap"], "no such file"),
        (["capture", "-r", "x", "-i", "lo"], "-r FILE"),
        (["capture", "-r", "x", "--conversations", "sctp"], "use tcp or udp"),
        (["capture", "-r", "x", "--follow", "udp", "1"], "only 'tcp N'"),
    ],
)
def test_cli_bad_usage(run_cli, args, needle):
    if args == ["capture"]:
        args = ["capture", "--json"]
    assert needle in assert_one_line_error(run_cli(args), 2)


def test_cli_help_lists_the_summaries(run_cli):
    done = run_cli(["capture", "--help"])
    assert done.returncode == 0
    for flag in ("--conversations", "--follow", "--http", "--dns", "--flows", "--json", "-w"):
        assert flag in done.stdout


# ------------------------------------------------------------------ live capture


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    yield from make_pair()


def _start_capture(argv: list[str]) -> subprocess.Popen[bytes]:
    """A live capture, returned once it says its filter is attached (traffic may start)."""
    capture = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert capture.stderr is not None
    seen = b""
    deadline = time.monotonic() + 15
    while b"capturing on" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or capture.poll() is not None:
            capture.kill()
            raise AssertionError(f"the capture did not start: {seen!r} {capture.communicate()}")
        if select.select([capture.stderr], [], [], left)[0]:
            seen += os.read(capture.stderr.fileno(), 4096)
    return capture


def _finish_capture(capture: subprocess.Popen[bytes]) -> dict:
    """The capture's JSON once it has stopped by itself (killed after 30 s)."""
    try:
        stdout, stderr = capture.communicate(timeout=30)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.communicate()
    assert capture.returncode == 0, stderr
    return json.loads(stdout)


@pytest.mark.netns
@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_live_capture_with_a_bpf_filter_in_a_namespace(pair, tmp_path):
    out = tmp_path / "live.pcap"
    argv = pair.command(pair.a, [BACKHAUL, "capture", "-i", pair.dev_a, "-c", "5", "-w", str(out),
                                 "--conversations", "udp", "--json", "--duration", "30",
                                 "udp and dst port 9999"])  # fmt: skip
    capture = _start_capture(argv)
    try:
        sender = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for i in range(8):\n"
            f"    s.sendto(b'noise', ('{pair.address_a}', 9998))\n"
            f"    s.sendto(b'x' * (10 + i), ('{pair.address_a}', 9999))\n"
        )
        sent = pair.run(pair.b, [sys.executable, "-c", sender])
        assert sent.returncode == 0, sent.stderr
    finally:
        doc = _finish_capture(capture)
    assert doc["capture"] == {"interface": pair.dev_a, "frames": 5, "stopped_by": "count",
                              "written_to": str(out)}  # fmt: skip
    (conv,) = doc["udp_conversations"]
    assert (conv["port_b"], conv["frames"]) == (9999, 5)
    # tshark reads the file we wrote, and agrees
    ports = tshark_fields(out, ["udp.dstport", "frame.len"])
    assert [p for p, _ in ports] == ["9999"] * 5
    assert [int(n) for _, n in ports] == [42 + 10 + i for i in range(5)]


def test_live_capture_without_privilege_says_what_to_do(run_cli):
    done = run_cli(["capture", "-i", "lo", "-c", "1"], unprivileged=True)
    assert "needs root or CAP_NET_RAW" in assert_one_line_error(done, 2)


def test_bulk_conversation_path_agrees_with_the_general_decoder(mixed, tmp_path):
    from bench.capture import generate

    generated = tmp_path / "generated.pcap"
    generate(generated, 5000, seed=3)
    for path in (mixed, generated):
        data = path.read_bytes()
        only = ReportRequest(conversations=frozenset({"tcp", "udp"}))
        general = ReportRequest(conversations=frozenset({"tcp", "udp"}), hierarchy=True)
        fast = summarise(CaptureReader(data), only)
        slow = summarise(CaptureReader(data), general)
        for key in ("tcp_conversations", "udp_conversations"):
            assert fast[key] == slow[key]
            assert fast[key]


@needs_tshark
@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_port_endpoints_equal_tsharks(mixed, kind):
    doc = summarise(CaptureReader(mixed.read_bytes()), ReportRequest(endpoints=kind))
    text = tshark_stats(mixed, f"endpoints,{kind}")
    theirs = {
        (m[0], int(m[1])): tuple(int(x) for x in m[2:])
        for m in re.findall(
            r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M
        )
    }
    ours = {
        (r["address"], r["port"]): (r["frames"], r["bytes"], r["tx_frames"], r["tx_bytes"],
                                    r["rx_frames"], r["rx_bytes"])
        for r in doc["endpoints"]["rows"]
    }  # fmt: skip
    assert ours == theirs and ours


def test_progress_is_reported_up_to_the_end(tmp_path):
    from bench.capture import generate

    path = tmp_path / "big.pcap"
    generate(path, 140_000, seed=5)
    data = path.read_bytes()
    seen: list[int] = []
    summarise(CaptureReader(data), ReportRequest(conversations=frozenset({"tcp"})), seen.append)
    assert len(seen) >= 3
    assert seen == sorted(seen) and seen[-1] == len(data)


def _pcapng_block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", btype, length) + body + struct.pack(order + "I", length)


@needs_tshark
@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_sections_interfaces_resolutions_and_block_kinds(tmp_path, order):
    """Two interfaces (microseconds, and nanoseconds by if_tsresol), enhanced, simple and
    obsolete packet blocks, and a block kind to skip, in either byte order."""
    frames = [tcp_frame("10.0.0.1", "10.0.0.2", 1000 + i, 80, i, 0, SYN) for i in range(4)]
    shb = _pcapng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb_us = _pcapng_block(order, 1, struct.pack(order + "HHI", 1, 0, 65535))
    tsresol = struct.pack(order + "HH", 9, 1) + b"\x09\0\0\0" + struct.pack(order + "HH", 0, 0)
    idb_ns = _pcapng_block(order, 1, struct.pack(order + "HHI", 1, 0, 65535) + tsresol)

    def epb(interface: int, ticks: int, frame: bytes) -> bytes:
        head = struct.pack(
            order + "IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame)
        )
        return _pcapng_block(order, 6, head + frame)

    data = shb + idb_us + idb_ns
    data += epb(0, 1_700_000_000_000_000, frames[0])  # microseconds
    data += epb(1, 1_700_000_000_500_000_000, frames[1])  # nanoseconds, 0.5 s later
    data += _pcapng_block(order, 0x0BAD, b"custom")  # skipped
    data += _pcapng_block(order, 3, struct.pack(order + "I", len(frames[2])) + frames[2])
    obsolete = struct.pack(
        order + "HHIIII", 0, 0, 395812, 1_700_000_000 & 0xFFFFFFFF, len(frames[3]), len(frames[3])
    )
    data += _pcapng_block(order, 2, obsolete + frames[3])
    path = tmp_path / "multi.pcapng"
    path.write_bytes(data)
    doc = summarise(CaptureReader(data), ReportRequest(conversations=frozenset({"tcp"})))
    assert doc["format"] == "pcapng" and doc["frames"] == 4
    assert _ours_by_stream(doc["tcp_conversations"]) == tshark_streams(path, "tcp")
    second = doc["tcp_conversations"][1]
    assert second["relative_start"] == pytest.approx(0.5, abs=1e-9)


def _link_header(linktype: int, v6: bool) -> bytes:
    ethertype = 0x86DD if v6 else 0x0800
    if linktype == 113:  # Linux cooked v1: packet type, ARPHRD, address length/8 bytes, protocol
        return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6 + b"\0\0", ethertype)
    if linktype == 276:  # Linux cooked v2: protocol, reserved, ifindex, ARPHRD, type, len, addr
        return struct.pack("!HHIHBB8s", ethertype, 0, 2, 1, 0, 6, b"\x02" * 6 + b"\0\0")
    if linktype == 0:  # BSD loopback: address family in host order
        return struct.pack("<I", 30 if v6 else 2)
    return b""  # 101: raw IP


@needs_tshark
@pytest.mark.parametrize("linktype", [0, 101, 113, 276])
def test_other_link_types_count_as_tshark_counts(tmp_path, linktype):
    from tests.toolbox.capture_files import ip_packet

    records = []
    for i in range(6):
        v6 = i % 2 == 1
        src, dst = ("2001:db8::1", "2001:db8::2") if v6 else ("10.0.0.1", "10.0.0.2")
        segment = struct.pack("!HHIIBBHHH", 3000 + i % 3, 443, i, 0, 5 << 4, 0x02, 1024, 0, 0)
        records.append(_link_header(linktype, v6) + ip_packet(src, dst, 6, segment))
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for i, frame in enumerate(records):
        data += struct.pack("<IIII", 1000, i, len(frame), len(frame)) + frame
    path = tmp_path / f"link{linktype}.pcap"
    path.write_bytes(data)
    doc = summarise(CaptureReader(data), ReportRequest(conversations=frozenset({"tcp"})))
    assert _ours_by_stream(doc["tcp_conversations"]) == tshark_streams(path, "tcp")
    assert len(doc["tcp_conversations"]) == 6


@pytest.mark.netns
@pytest.mark.parametrize("stop", ["duration", "interrupt"])
def test_live_capture_stops_on_its_deadline_or_on_ctrl_c(pair, stop):
    argv = [
        BACKHAUL,
        "capture",
        "-i",
        "lo",
        "--json",
        "--duration",
        "1" if stop == "duration" else "60",
    ]
    capture = _start_capture(pair.command(pair.a, argv))
    if stop == "interrupt":
        capture.send_signal(signal.SIGINT)
    doc = _finish_capture(capture)
    assert doc["capture"]["stopped_by"] == stop
    assert doc["frames"] == doc["capture"]["frames"]


def _fragments(
    src: str, dst: str, proto: int, transport: bytes, ident: int, size: int
) -> list[bytes]:
    """``transport`` in IPv4 or IPv6 fragments of ``size`` payload bytes (a multiple of 8)."""
    import socket as socket_module

    v6 = ":" in src
    frames = []
    for offset in range(0, len(transport), size):
        piece = transport[offset : offset + size]
        more = offset + size < len(transport)
        if v6:
            fragment = struct.pack("!BBHI", proto, 0, offset | more, ident)
            header = struct.pack(
                "!IHBB16s16s", 6 << 28, 8 + len(piece), 44, 64,
                socket_module.inet_pton(socket_module.AF_INET6, src),
                socket_module.inet_pton(socket_module.AF_INET6, dst),
            ) + fragment  # fmt: skip
        else:
            header = struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, 20 + len(piece), ident, more << 13 | offset // 8,
                64, proto, 0, socket_module.inet_aton(src), socket_module.inet_aton(dst),
            )  # fmt: skip
        frames.append(ether(header + piece, v6=v6))
    return frames


@needs_tshark
def test_fragmented_datagrams_count_once_on_their_last_frame_as_tshark_counts(tmp_path):
    import dns.message
    import dns.rrset
    import dpkt

    rec = Recorder()
    query = dns.message.make_query("big.example.test.", "TXT")
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text(
            "big.example.test.", 60, "IN", "TXT", *[f'"{i:02d}{"x" * 200}"' for i in range(12)]
        )
    )
    wire = response.to_wire()
    assert len(wire) > 2400
    rec.add(udp_frame("192.0.2.1", "192.0.2.53", 5000, 53, query.to_wire()))
    udp = dpkt.udp.UDP(sport=53, dport=5000, data=wire)
    udp.ulen = 8 + len(wire)
    # answered in three fragments, the last one first (reordered on the way)
    pieces = _fragments("192.0.2.53", "192.0.2.1", 17, bytes(udp), ident=77, size=1200)
    for frame in (pieces[2], pieces[0], pieces[1]):
        rec.add(frame, gap=0.002)
    # a TCP segment in two IPv6 fragments
    segment = dpkt.tcp.TCP(sport=4000, dport=80, seq=1, flags=SYN | ACK, data=b"y" * 1500)
    for frame in _fragments("2001:db8::1", "2001:db8::2", 6, bytes(segment), ident=9, size=1000):
        rec.add(frame)
    # a datagram that never completes: one fragment lost
    lost = _fragments("192.0.2.9", "192.0.2.53", 17, bytes(udp), ident=78, size=1200)
    rec.add(lost[0])
    rec.add(lost[2])
    path = rec.write(tmp_path / "fragments.pcap")
    doc = summarise(CaptureReader(path.read_bytes()), EVERYTHING)
    assert _ours_by_stream(doc["udp_conversations"]) == tshark_streams(path, "udp")
    assert _ours_by_stream(doc["tcp_conversations"]) == tshark_streams(path, "tcp")
    (answered,) = [r for r in doc["dns"]["transactions"] if r["rcode"]]
    (their_time,) = tshark_fields(path, ["dns.time"], "dns.flags.response == 1")[0]
    assert answered["response_ms"] == pytest.approx(float(their_time) * 1000, abs=0.001)
    assert len(answered["answers"]) == 12
