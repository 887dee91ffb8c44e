"""The DNS server's own data, asked by Debian's dig and dnspython, compared record by
record with dnsmasq serving the same data; protocol behaviour on the wire (EDNS sizes and
TC, TCP pipelining and idle timeout, FORMERR/NOTIMP/REFUSED/BADVERS, ANY), reloads, the
port-in-use refusal, and ``backhaul serve`` with only a ``dns`` section."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.services.dns_harness import (
    DIG,
    Server,
    ask,
    dig,
    free_port,
    records,
    start_backhaul,
    start_dnsmasq,
    status,
    wait_answering,
)

pytestmark = pytest.mark.skipif(not os.path.exists(DIG), reason="Debian's dig is not installed")

ZONE = """\
$ORIGIN example.internal.
$TTL 300
@     IN SOA ns hostmaster 1 3600 600 86400 300
@     IN NS  ns
ns    IN A   10.0.0.53
web   IN A   10.0.0.1
web   IN AAAA fd00::1
db    IN A   10.0.0.2
@     IN TXT "v=spf1 -all" "second string"
@     IN MX  10 mail
mail  IN A   10.0.0.25
_http._tcp IN SRV 0 5 80 web
www   IN CNAME web
*.apps IN A 10.0.1.1
@     IN CAA 0 issue "letsencrypt.org"
big   IN TXT {big}
""".format(big=" ".join(f'"{"x" * 200}{i}"' for i in range(8)))

DNSMASQ_DATA = [
    "--local=/example.internal/",
    "--local-ttl=300",
    "--host-record=web.example.internal,10.0.0.1,fd00::1",
    "--host-record=db.example.internal,10.0.0.2",
    "--host-record=mail.example.internal,10.0.0.25",
    "--txt-record=example.internal,v=spf1 -all,second string",
    "--mx-host=example.internal,mail.example.internal,10",
    "--srv-host=_http._tcp.example.internal,web.example.internal,80,0,5",
    "--cname=www.example.internal,web.example.internal",
    "--ptr-record=99.0.0.10.in-addr.arpa,printer.example.internal",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("dnsdata")
    (workdir / "example.zone").write_text(ZONE)
    (workdir / "extra.hosts").write_text("10.0.0.77 printer2.example.internal\n")
    return workdir


@pytest.fixture(scope="module")
def ours(data_dir: Path) -> Iterator[Server]:
    server = start_backhaul(
        data_dir,
        {
            "zones": [
                {"file": str(data_dir / "example.zone")},
                {
                    "origin": "0.0.10.in-addr.arpa",
                    "records": ["99 300 IN PTR printer.example.internal."],
                },
            ],
            "hosts": [str(data_dir / "extra.hosts")],
            "local": ["corp.internal"],
            "tcp_idle_timeout": "1s",
        },
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def theirs(data_dir: Path) -> Iterator[Server]:
    server = start_dnsmasq(data_dir, DNSMASQ_DATA)
    yield server
    server.stop()


CASES = [
    ("web.example.internal", "A"),
    ("web.example.internal", "AAAA"),
    ("WEB.Example.INTERNAL", "A"),
    ("db.example.internal", "A"),
    ("example.internal", "TXT"),
    ("example.internal", "MX"),
    ("_http._tcp.example.internal", "SRV"),
    ("www.example.internal", "A"),
    ("-x", "10.0.0.1"),
    ("-x", "10.0.0.99"),
    ("nope.example.internal", "A"),
    ("web.example.internal", "MX"),
]


@pytest.mark.parametrize("query", CASES, ids=lambda q: "-".join(q))
def test_answers_equal_dnsmasq(ours: Server, theirs: Server, query: tuple[str, str]) -> None:
    mine = dig(*ours.at(), *query, "+noall", "+answer", "+comments")
    other = dig(*theirs.at(), *query, "+noall", "+answer", "+comments")
    assert status(mine.stdout) == status(other.stdout)
    assert records(mine.stdout) == records(other.stdout)


def test_negative_answers_carry_the_soa(ours: Server) -> None:
    nx = ask(ours.port, "nope.example.internal")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.flags & dns.flags.AA
    soa = nx.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 300
    nodata = ask(ours.port, "web.example.internal", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    # a local domain (--domain): a missing name is NXDOMAIN, never forwarded
    local = ask(ours.port, "anything.corp.internal")
    assert local.rcode() == dns.rcode.NXDOMAIN and local.flags & dns.flags.AA


def test_wildcards_hosts_caa_any_and_compression(ours: Server) -> None:
    wild = ask(ours.port, "x.y.apps.example.internal")
    assert [r.to_text() for r in wild.answer[0]] == ["10.0.1.1"]
    assert wild.answer[0].name.to_text() == "x.y.apps.example.internal."
    assert ask(ours.port, "printer2.example.internal").answer[0][0].address == "10.0.0.77"
    caa = ask(ours.port, "example.internal", "CAA")
    assert caa.answer[0][0].to_text() == '0 issue "letsencrypt.org"'
    any_reply = ask(ours.port, "example.internal", "ANY")
    assert len(any_reply.answer) == 1  # RFC 8482: one RRset
    # names in the answer are compressed: the reply is far smaller than the names spelled out
    wire = dns.query.udp(
        dns.message.make_query("example.internal", "MX"), "127.0.0.1", port=ours.port, timeout=5
    ).to_wire()
    assert wire.count(b"example") == 1


def test_dnspython_resolver(ours: Server) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = ours.port
    answer = resolver.resolve("www.example.internal", "A", lifetime=5)
    assert [r.address for r in answer] == ["10.0.0.1"]
    assert answer.canonical_name.to_text() == "web.example.internal."
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("missing.example.internal", "A", lifetime=5)


def test_tcp_fallback_on_truncation(ours: Server) -> None:
    small = ask(ours.port, "big.example.internal", "TXT", use_edns=False)
    assert small.flags & dns.flags.TC and not small.answer  # 512 bytes without EDNS
    sized = ask(ours.port, "big.example.internal", "TXT", use_edns=0, payload=1232)
    assert sized.flags & dns.flags.TC  # 1.6 kB does not fit 1232 either
    out = dig(*ours.at(), "big.example.internal", "TXT", "+noedns")
    assert "Truncated, retrying in TCP mode" in out.stdout
    assert len(records(out.stdout)) == 1 and "(TCP)" in out.stdout
    assert ask(ours.port, "big.example.internal", "TXT", tcp=True).answer


def test_edns_size_is_advertised_and_honoured(ours: Server) -> None:
    reply = ask(ours.port, "web.example.internal", use_edns=0, payload=4096)
    assert reply.edns == 0 and reply.payload == 1232


def _raw_udp(port: int, packet: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(packet, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def test_error_rcodes(ours: Server) -> None:
    query = dns.message.make_query("web.example.internal", "A")
    wire = bytearray(query.to_wire())
    # opcode NOTIFY (4) -> NOTIMP
    notify = bytearray(wire)
    notify[2] = (notify[2] & 0x87) | (4 << 3)
    reply = _raw_udp(ours.port, bytes(notify))
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.NOTIMP
    # QDCOUNT 0 and 2 -> REFUSED
    empty = dns.message.Message(id=7)
    reply = _raw_udp(ours.port, empty.to_wire())
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.REFUSED
    two = dns.message.make_query("web.example.internal", "A")
    two.question.append(dns.message.make_query("db.example.internal", "A").question[0])
    reply = _raw_udp(ours.port, two.to_wire())
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.REFUSED
    # a header and garbage -> FORMERR with the query's ID
    reply = _raw_udp(ours.port, bytes(wire[:12]) + b"\xff\xff\xff")
    assert reply is not None and reply[:2] == bytes(wire[:2])
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
    # less than a header, or a response: dropped
    assert _raw_udp(ours.port, b"\x01\x02\x03") is None
    # EDNS version 1 -> BADVERS
    v1 = dns.message.make_query("web.example.internal", "A", use_edns=1)
    reply = _raw_udp(ours.port, v1.to_wire())
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.BADVERS
    # class CH -> REFUSED
    chaos = dns.message.make_query("version.bind", "TXT", rdclass="CH")
    reply = _raw_udp(ours.port, chaos.to_wire())
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.REFUSED
    # and the server still answers
    assert ask(ours.port, "web.example.internal").answer


def test_tcp_pipelining_and_idle_timeout(ours: Server) -> None:
    names = ["web.example.internal", "db.example.internal", "mail.example.internal"]
    blob = b""
    for i, name in enumerate(names):
        q = dns.message.make_query(name, "A", id=100 + i).to_wire()
        blob += len(q).to_bytes(2, "big") + q
    with socket.create_connection(("127.0.0.1", ours.port), timeout=5) as sock:
        sock.sendall(blob)  # three queries in one segment
        got: dict[int, str] = {}
        buffer = b""
        while len(got) < 3:
            buffer += sock.recv(65535)
            while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                size = int.from_bytes(buffer[:2], "big")
                msg = dns.message.from_wire(buffer[2 : 2 + size])
                buffer = buffer[2 + size :]
                got[msg.id] = msg.answer[0][0].address
        assert got == {100: "10.0.0.1", 101: "10.0.0.2", 102: "10.0.0.25"}
        sock.settimeout(10)  # tcp_idle_timeout is 1s: the server closes
        assert sock.recv(10) == b""


def test_port_in_use_is_refused(ours: Server, theirs: Server) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "backhaul", "dns", "serve", "--listen", f"127.0.0.1:{theirs.port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "already served by another process" in out.stderr
    assert "Traceback" not in out.stderr


def test_reload_on_file_change_and_sighup(data_dir: Path) -> None:
    zone = data_dir / "reload.zone"
    zone.write_text("$ORIGIN r.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\nold A 10.1.0.1\n")
    metrics_port = free_port()
    server = start_backhaul(
        data_dir,
        {"zones": [{"file": str(zone)}], "watch": True, "metrics": f"127.0.0.1:{metrics_port}"},
    )
    try:
        assert ask(server.port, "old.r.test").answer
        zone.write_text("$ORIGIN r.test.\n$TTL 60\n@ SOA ns h 2 2 3 4 5\nnew A 10.1.0.2\n")
        os.utime(zone, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
        deadline = time.monotonic() + 15
        while ask(server.port, "new.r.test").rcode() != dns.rcode.NOERROR:
            assert time.monotonic() < deadline, "the changed file was not reloaded"
            time.sleep(0.1)
        assert ask(server.port, "old.r.test").rcode() == dns.rcode.NXDOMAIN
        # a broken file keeps the old data serving
        zone.write_text("$ORIGIN r.test.\nthis is not a record\n")
        os.utime(zone, ns=(time.time_ns(), time.time_ns() + 10_000_000_000))
        deadline = time.monotonic() + 15
        while "backhaul_dns_reload_errors_total 1" not in scrape(metrics_port):
            assert time.monotonic() < deadline, "the broken file was not noticed"
            time.sleep(0.1)
        assert ask(server.port, "new.r.test").rcode() == dns.rcode.NOERROR
        text = scrape(metrics_port)
        assert 'backhaul_dns_queries_total{qtype="A"}' in text
        assert "backhaul_dns_reloads_total 1" in text
    finally:
        server.stop()


def scrape(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    return body.decode()


def test_sighup_reloads(data_dir: Path) -> None:
    zone = data_dir / "hup.zone"
    zone.write_text("$ORIGIN h.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\na A 10.2.0.1\n")
    server = start_backhaul(data_dir, {"zones": [{"file": str(zone)}], "watch": False})
    try:
        assert ask(server.port, "a.h.test").answer
        mtime = zone.stat().st_mtime_ns
        zone.write_text("$ORIGIN h.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\nb A 10.2.0.2\n")
        os.utime(zone, ns=(mtime, mtime))
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while ask(server.port, "b.h.test").rcode() != dns.rcode.NOERROR:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.1)
    finally:
        server.stop()


def test_quick_mode(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backhaul",
            "dns",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--zone",
            str(data_dir / "example.zone"),
            "--hosts",
            str(data_dir / "extra.hosts"),
            "--domain",
            "corp.internal",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    server = Server(port, process, tmp_path)
    try:
        wait_answering(port)
        out = dig("@127.0.0.1", "-p", str(port), "printer2.example.internal", "+short")
        assert out.stdout.strip() == "10.0.0.77"
        assert ask(port, "x.corp.internal").rcode() == dns.rcode.NXDOMAIN
        assert ask(port, "example.com").rcode() == dns.rcode.REFUSED  # no forwarder
    finally:
        server.stop()


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    packet=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda at, junk: _mutated(at, junk),
            st.integers(min_value=0, max_value=60),
            st.binary(min_size=1, max_size=6),
        ),
    )
)
def test_fuzzed_packets_never_crash_the_server(ours: Server, packet: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(packet or b"\x00", ("127.0.0.1", ours.port))
    with socket.create_connection(("127.0.0.1", ours.port), timeout=5) as sock:
        sock.sendall(len(packet).to_bytes(2, "big") + packet)
    assert ours.process.poll() is None


def test_server_still_answers_after_fuzzing(ours: Server) -> None:
    """Runs last in this module: stops the server and reads everything it printed."""
    assert ask(ours.port, "web.example.internal").answer
    assert ask(ours.port, "web.example.internal", tcp=True).answer
    assert ours.process.poll() is None
    ours.process.send_signal(signal.SIGTERM)
    _, err = ours.process.communicate(timeout=20)
    text = err.decode(errors="replace")
    assert "Traceback" not in text and "Exception" not in text, text
    assert "exited" not in text, text  # no worker died and was restarted


def _mutated(at: int, junk: bytes) -> bytes:
    wire = bytearray(dns.message.make_query("web.example.internal", "A", use_edns=0).to_wire())
    wire[at : at + len(junk)] = junk
    return bytes(wire)
