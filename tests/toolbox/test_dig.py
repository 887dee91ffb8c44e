"""``backhaul dig`` against real servers on loopback, checked against Debian's ``dig``.

- A real ``dnsmasq`` on 127.0.0.1 at a free high port serves a test zone; every query is
  made by ``backhaul dig`` and by ``/usr/bin/dig`` and the outputs are compared (record
  lines byte for byte, header and flags, ``+short``, ``+tcp``, truncation, ``--json``).
- A three-level delegation (root on 127.0.0.2, ``test.`` on 127.0.0.3, ``example.test.`` on
  127.0.0.4, all on one port), served by small authoritative servers built on dnspython in
  this module, is walked with ``+trace`` from ``@127.0.0.2`` and from ``--root-hints``.

Nothing here sends a packet beyond loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
import typer
from typer.testing import CliRunner

from backhaul.cli import dig as dig_cli
from backhaul.tools import dig as driver

DIG = "/usr/bin/dig"
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
START_DEADLINE = 10.0

# --------------------------------------------------------------------------- helpers


def free_port(addresses: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """A port free for both UDP and TCP on every address (checked, then released)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        if port < 20000:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for address in addresses:
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                        sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
                        sock.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port found on loopback")


def wait_until_answering(address: str, port: int, name: str, deadline: float) -> None:
    """Poll with real queries until the server answers or the deadline passes."""
    query = dns.message.make_query(name, "A")
    while True:
        try:
            dns.query.udp(query, address, port=port, timeout=0.2)
            return
        except (dns.exception.Timeout, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def real_dig(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DIG, *args], capture_output=True, text=True, timeout=20, env={"PATH": "/usr/bin:/bin"}
    )


def _test_app() -> typer.Typer:
    """Only the dig command, so other commands' modules cannot disturb these tests."""
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """Test root."""

    dig_cli.register(app)
    return app


APP = _test_app()


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def ours(*args: str) -> Result:
    """``backhaul dig ARGS`` in process (output not on a terminal, as when piped)."""
    result = CliRunner().invoke(APP, ["dig", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def ours_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed entry point, for exit codes and one-line errors."""
    return subprocess.run(
        [sys.executable, "-m", "backhaul", "dig", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )


def records(text: str) -> list[str]:
    """Record lines (not comments, not blank), sorted: servers may rotate RRsets."""
    return sorted(line for line in text.splitlines() if line and not line.startswith(";"))


def without_volatile(text: str) -> list[str]:
    """dig's full output minus what differs run to run or by program name."""
    volatile = ("; <<>>", ";; Query time:", ";; WHEN:", ";; ->>HEADER<<-")
    return [line for line in text.splitlines() if not line.startswith(volatile)]


def header_status(text: str) -> str:
    for line in text.splitlines():
        if line.startswith(";; ->>HEADER<<-"):
            return line.split("status: ")[1].split(",")[0]
    raise AssertionError(f"no header in {text!r}")


# --------------------------------------------------------------------------- dnsmasq

HOSTS = """\
10.0.0.1 web.example.internal
10.0.0.2 db.example.internal
fd00::1 web.example.internal
"""

BIG_TXT = [f"{'x' * 120}{i}" for i in range(8)]


@dataclass
class Dnsmasq:
    port: int
    process: subprocess.Popen[bytes]

    def at(self) -> tuple[str, str, str]:
        return ("@127.0.0.1", "-p", str(self.port))


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq is not installed (scripts/sysdeps.sh test installs it)")
    if not os.path.exists(DIG):
        pytest.skip("Debian's dig is not installed (package bind9-dnsutils)")
    workdir = tmp_path_factory.mktemp("dnsmasq")
    hosts = workdir / "hosts"
    hosts.write_text(HOSTS)
    last_error = ""
    for _attempt in range(3):
        port = free_port()
        argv = [
            DNSMASQ,
            "--no-daemon",
            "--conf-file=/dev/null",
            "--pid-file=",
            f"--port={port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={hosts}",
            "--local=/example.internal/",
            "--host-record=api.example.internal,10.0.0.10,fd00::10",
            "--txt-record=example.internal,v=spf1 -all,second string",
            "--mx-host=example.internal,mail.example.internal,10",
            "--mx-host=example.internal,mail2.example.internal,20",
            "--srv-host=_http._tcp.example.internal,web.example.internal,80,0,5",
            "--cname=www.example.internal,web.example.internal",
            "--ptr-record=99.0.0.10.in-addr.arpa,printer.example.internal",
            *[f"--txt-record=big.example.internal,{text}" for text in BIG_TXT],
        ]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until_answering("127.0.0.1", port, "web.example.internal", time.monotonic() + 5)
        except (dns.exception.Timeout, OSError):
            process.kill()
            _, err = process.communicate(timeout=5)
            last_error = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            last_error = last_error[0]
            continue
        try:
            yield Dnsmasq(port, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        return
    pytest.skip(f"dnsmasq could not start on 127.0.0.1: {last_error}")


ANSWER_CASES = [
    ("web.example.internal",),
    ("web.example.internal", "A"),
    ("web.example.internal", "AAAA"),
    ("api.example.internal", "AAAA"),
    ("example.internal", "MX"),
    ("example.internal", "TXT"),
    ("_http._tcp.example.internal", "SRV"),
    ("www.example.internal",),  # CNAME then A
    ("www.example.internal", "CNAME"),
    ("-x", "10.0.0.1"),
    ("-x", "10.0.0.99"),
    ("-x", "fd00::1"),
    ("big.example.internal", "TXT"),
]


@pytest.mark.parametrize("query", ANSWER_CASES, ids=lambda q: "_".join(q))
def test_answers_equal_debian_dig(dnsmasq: Dnsmasq, query: tuple[str, ...]) -> None:
    theirs = real_dig(*dnsmasq.at(), *query, "+noall", "+answer")
    assert theirs.returncode == 0, theirs.stderr
    mine = ours(*dnsmasq.at(), *query, "+noall", "+answer")
    assert mine.exit_code == 0, mine.stderr
    assert records(theirs.stdout), "the zone should answer this"
    assert records(mine.stdout) == records(theirs.stdout)  # byte for byte, tabs included


@pytest.mark.parametrize(
    "query",
    [
        ("www.example.internal",),
        ("example.internal", "MX"),
        ("example.internal", "TXT"),
        ("_http._tcp.example.internal", "SRV"),
        ("-x", "10.0.0.1"),
        ("api.example.internal", "AAAA"),
    ],
    ids=lambda q: "_".join(q),
)
def test_short_equals_debian_dig(dnsmasq: Dnsmasq, query: tuple[str, ...]) -> None:
    theirs = real_dig(*dnsmasq.at(), *query, "+short")
    mine = ours(*dnsmasq.at(), *query, "+short")
    assert mine.exit_code == 0
    assert theirs.stdout.strip()
    assert sorted(mine.stdout.splitlines()) == sorted(theirs.stdout.splitlines())


def test_words_in_any_order(dnsmasq: Dnsmasq) -> None:
    port = str(dnsmasq.port)
    mine = ours("MX", "+short", "-p", port, "example.internal", "@127.0.0.1")
    theirs = real_dig("@127.0.0.1", "-p", port, "example.internal", "MX", "+short")
    assert sorted(mine.stdout.splitlines()) == sorted(theirs.stdout.splitlines())
    assert "10 mail.example.internal." in mine.stdout


@pytest.mark.parametrize(
    "query",
    [
        ("web.example.internal",),
        ("nope.example.internal",),  # NXDOMAIN
        ("web.example.internal", "MX"),  # NODATA
        ("example.internal", "TXT", "+dnssec"),
        ("web.example.internal", "+norecurse"),
        ("web.example.internal", "+noedns"),
        ("web.example.internal", "+nocomments"),
        ("web.example.internal", "+noall", "+comments"),
        ("www.example.internal", "+noall", "+answer", "+question", "+stats"),
    ],
    ids=lambda q: "_".join(q),
)
def test_full_output_matches_debian_dig(dnsmasq: Dnsmasq, query: tuple[str, ...]) -> None:
    """Header, flags, OPT pseudosection, sections and footer, line for line."""
    theirs = real_dig(*dnsmasq.at(), *query)
    mine = ours(*dnsmasq.at(), *query)
    assert without_volatile(mine.stdout) == without_volatile(theirs.stdout)
    if ";; ->>HEADER<<-" in theirs.stdout:
        assert header_status(mine.stdout) == header_status(theirs.stdout)


def test_tcp(dnsmasq: Dnsmasq) -> None:
    theirs = real_dig(*dnsmasq.at(), "example.internal", "MX", "+tcp")
    mine = ours(*dnsmasq.at(), "example.internal", "MX", "+tcp")
    assert records(mine.stdout) == records(theirs.stdout)
    server_line = f";; SERVER: 127.0.0.1#{dnsmasq.port}(127.0.0.1) (TCP)"
    assert server_line in mine.stdout.splitlines()
    assert server_line in theirs.stdout.splitlines()


def test_truncated_udp_retries_over_tcp_like_dig(dnsmasq: Dnsmasq) -> None:
    theirs = real_dig(*dnsmasq.at(), "big.example.internal", "TXT", "+noedns")
    mine = ours(*dnsmasq.at(), "big.example.internal", "TXT", "+noedns")
    note = ";; Truncated, retrying in TCP mode."
    assert note in theirs.stdout and note in mine.stdout
    assert "(TCP)" in mine.stdout
    assert records(mine.stdout) == records(theirs.stdout)
    assert len(records(mine.stdout)) == len(BIG_TXT)  # all of them, over TCP


def test_json_is_rfc8427_and_agrees_with_dig(dnsmasq: Dnsmasq) -> None:
    mine = ours(*dnsmasq.at(), "example.internal", "MX", "+bufsize=4096", "--json")
    assert mine.exit_code == 0
    doc = json.loads(mine.stdout)
    query, response = doc["queryMessage"], doc["responseMessage"]
    assert (query["QR"], query["RD"], query["QNAME"], query["QTYPEname"]) == (
        0,
        1,
        "example.internal.",
        "MX",
    )
    opt = [rr for rr in query["additionalRRs"] if rr["TYPEname"] == "OPT"]
    assert opt and opt[0]["CLASS"] == 4096  # the EDNS buffer size we advertised
    assert (response["QR"], response["RCODE"], response["ID"]) == (1, 0, query["ID"])
    assert response["ANCOUNT"] == len(response["answerRRs"]) == 2
    # The raw octets are the message; RDATAHEX decodes to the presentation member.
    wire = bytes.fromhex(response["messageOctetsHEX"])
    assert len(wire) == doc["msgSize"]
    assert dns.message.from_wire(wire).id == response["ID"]
    for rr in response["answerRRs"]:
        rdata = dns.rdata.from_wire(
            dns.rdataclass.IN, dns.rdatatype.MX, bytes.fromhex(rr["RDATAHEX"]), 0, rr["RDLENGTH"]
        )
        assert rdata.to_text() == rr["rdataMX"]
    # The same records as dig's.
    theirs = real_dig(*dnsmasq.at(), "example.internal", "MX", "+noall", "+answer")
    from_json = sorted(
        f"{rr['NAME']} {rr['TTL']} {rr['CLASSname']} {rr['TYPEname']} {rr['rdataMX']}"
        for rr in response["answerRRs"]
    )
    assert from_json == sorted(" ".join(line.split()) for line in records(theirs.stdout))
    assert doc["server"] == "127.0.0.1" and doc["port"] == dnsmasq.port
    assert doc["transport"] == "UDP" and doc["answered"] is True


def test_system_resolver_from_resolv_conf(dnsmasq: Dnsmasq, tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.internal\nnameserver 127.0.0.1\n")
    mine = ours("--resolv-conf", str(conf), "-p", str(dnsmasq.port), "web.example.internal")
    assert mine.exit_code == 0
    assert f";; SERVER: 127.0.0.1#{dnsmasq.port}(127.0.0.1) (UDP)" in mine.stdout
    assert "; (1 server found)" not in mine.stdout  # as dig: only said for @server


@pytest.mark.parametrize(
    "words",
    [
        ("mx",),
        ("mx", "mx"),
        ("web.example.internal", "mx", "a"),
        ("mx", "web.example.internal"),
        ("web.example.internal", "db.example.internal", "aaaa"),
        ("aaaa", "web.example.internal", "db.example.internal"),
        ("-t", "mx", "web.example.internal", "txt"),
        ("web.example.internal", "ch"),
        ("type65", "web.example.internal"),
        ("-x", "10.0.0.1", "a"),
        ("-x", "10.0.0.1", "web.example.internal"),
        ("web.example.internal", "-x", "10.0.0.1"),
        ("-tmx", "-q", "web.example.internal"),
    ],
    ids=lambda w: "_".join(w),
)
def test_word_rules_match_dig(dnsmasq: Dnsmasq, words: tuple[str, ...]) -> None:
    """Which word is a name, a type or a class: the question lines dig and we send agree."""
    theirs = real_dig(*dnsmasq.at(), "+noall", "+question", *words)
    mine = ours(*dnsmasq.at(), "+noall", "+question", *words)
    assert mine.stdout.splitlines() == theirs.stdout.splitlines()
    assert mine.stderr.splitlines() == [
        line for line in theirs.stderr.splitlines() if line.startswith(";; Warning")
    ]


def test_exit_codes_and_errors(dnsmasq: Dnsmasq) -> None:
    at = dnsmasq.at()
    assert ours_process(*at, "web.example.internal", "+short").returncode == 0
    nx = ours_process(*at, "nope.example.internal")
    assert nx.returncode == 1 and "status: NXDOMAIN" in nx.stdout
    assert ours_process(*at, "web.example.internal", "MX", "+short").returncode == 1  # NODATA
    for args, needle in [
        (("-t", "BOGUS", "web.example.internal"), "unknown record type 'BOGUS'"),
        (("-x", "10.0.0.300"), "-x needs an IPv4 or IPv6 address"),
        (("+frobnicate", "web.example.internal"), "unknown option '+frobnicate'"),
        (("-p", "http", "web.example.internal"), "the port must be a number"),
        (("bad..name",), "not a valid domain name"),
    ]:
        proc = ours_process(*at, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_no_reply_is_exit_1_with_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        port = str(silent.getsockname()[1])
        proc = ours_process("@127.0.0.1", "-p", port, "x.test", "+time=1", "+tries=2")
        silent.setblocking(False)
        queries = []
        with contextlib.suppress(BlockingIOError):
            while True:
                queries.append(dns.message.from_wire(silent.recv(4096)))
    assert proc.returncode == 1
    assert "no reply" in proc.stderr and "timed out" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # two tries, each one the same question
    assert [str(q.question[0].name) for q in queries] == ["x.test.", "x.test."]


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_a_closed_port_ends_the_try_at_once(address: str) -> None:
    """The ICMP port unreachable a closed port answers with ends the try ("connection
    refused", as dig says) instead of waiting out +time."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((address, 0))
        port = str(probe.getsockname()[1])
    # +time=60 +tries=3 would take three minutes; the run's own deadline is 30 s
    proc = ours_process(f"@{address}", "-p", port, "x.test", "+time=60", "+tries=3")
    assert proc.returncode == 1, proc.stderr
    assert f"{address}#{port}: connection refused" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda tmp: tmp / "missing.conf", "no such file"),
        (lambda tmp: tmp, "is a directory"),
    ],
)
def test_an_unreadable_resolv_conf_is_an_error(tmp_path: Path, make, needle: str) -> None:
    path = make(tmp_path)
    proc = ours_process("--resolv-conf", str(path), "x.test", "+time=60")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # refused before the banner
    assert proc.stderr.startswith(f"backhaul: error: --resolv-conf {path}: {needle}")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- +trace

ROOT_ZONE = """\
$TTL 86400
.                 IN SOA a.root.test. admin.test. 1 1800 900 604800 86400
.                 IN NS  a.root.test.
a.root.test.      IN A   127.0.0.2
test.             172800 IN NS ns.test.
ns.test.          172800 IN A  127.0.0.3
"""

TEST_ZONE = """\
$TTL 3600
test.             IN SOA ns.test. admin.test. 1 1800 900 604800 300
test.             IN NS  ns.test.
ns.test.          IN A   127.0.0.3
a.root.test.      IN A   127.0.0.2
example.test.     IN NS  ns.example.test.
ns.example.test.  IN A   127.0.0.4
dead.test.        IN NS  ns.dead.test.
ns.dead.test.     IN A   127.0.0.5
"""

EXAMPLE_ZONE = """\
$TTL 300
example.test.     IN SOA ns.example.test. admin.example.test. 7 1800 900 604800 60
example.test.     IN NS  ns.example.test.
ns.example.test.  IN A   127.0.0.4
www.example.test. IN A   192.0.2.80
www.example.test. IN AAAA 2001:db8::80
alias.example.test. IN CNAME www.example.test.
example.test.     IN TXT "delegated three levels down"
"""


class ZoneServer:
    """A minimal authoritative server for one zone: answers, referrals with glue, NXDOMAIN."""

    def __init__(self, address: str, port: int, zone_text: str, origin: str) -> None:
        self.zone = dns.zone.from_text(zone_text, origin=origin, relativize=False)
        self.origin = self.zone.origin
        assert self.origin is not None
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data, max_size=512)
                if reply:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(5)
                header = self.request.recv(2)
                if len(header) < 2:
                    return
                (length,) = struct.unpack("!H", header)
                data = b""
                while len(data) < length:
                    chunk = self.request.recv(length - len(data))
                    if not chunk:
                        return
                    data += chunk
                reply = server.answer(data, max_size=65535)
                if reply:
                    self.request.sendall(struct.pack("!H", len(reply)) + reply)

        socketserver.ThreadingUDPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.servers = [
            socketserver.ThreadingUDPServer((address, port), Udp),
            socketserver.ThreadingTCPServer((address, port), Tcp),
        ]
        self.threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in self.servers
        ]
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)

    def _glue(self, response: dns.message.Message, ns_rdataset) -> None:
        for rdata in ns_rdataset:
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                found = self.zone.get_rrset(rdata.target, rdtype)
                if found is not None:
                    response.additional.append(found)

    def answer(self, data: bytes, max_size: int) -> bytes:
        try:
            query = dns.message.from_wire(data)
        except Exception:  # a test server drops what it cannot parse
            return b""
        response = dns.message.make_response(query)
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if not qname.is_subdomain(self.origin):
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire(max_size=max_size)
        # A zone cut between the apex and the name: refer (no AA), with glue.
        labels = len(qname) - len(self.origin)
        for depth in range(1, labels + 1):
            cut = dns.name.Name(qname.labels[labels - depth :])
            node = self.zone.get_node(cut)
            ns = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NS) if node else None
            if ns is not None:
                response.authority.append(self.zone.get_rrset(cut, dns.rdatatype.NS))
                self._glue(response, ns)
                return response.to_wire(max_size=max_size)
        response.flags |= dns.flags.AA
        node = self.zone.get_node(qname)
        soa = self.zone.get_rrset(self.origin, dns.rdatatype.SOA)
        if node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(soa)
            return response.to_wire(max_size=max_size)
        found = self.zone.get_rrset(qname, qtype)
        if found is None:
            found = self.zone.get_rrset(qname, dns.rdatatype.CNAME)
        if found is None:
            response.authority.append(soa)
        else:
            response.answer.append(found)
            if found.rdtype == dns.rdatatype.NS:
                self._glue(response, found)
        return response.to_wire(max_size=max_size)


@dataclass
class Delegation:
    port: int
    hints: Path

    def dig_at_root(self) -> tuple[str, str, str]:
        return ("@127.0.0.2", "-p", str(self.port))


@pytest.fixture(scope="module")
def delegation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delegation]:
    addresses = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    try:
        port = free_port(addresses)
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"cannot bind 127.0.0.2-4 on loopback: {exc}")
    servers = [
        ZoneServer("127.0.0.2", port, ROOT_ZONE, "."),
        ZoneServer("127.0.0.3", port, TEST_ZONE, "test."),
        ZoneServer("127.0.0.4", port, EXAMPLE_ZONE, "example.test."),
    ]
    hints = tmp_path_factory.mktemp("hints") / "named.root"
    hints.write_text(".  3600000 NS a.root.test.\na.root.test. 3600000 A 127.0.0.2\n")
    try:
        for address in addresses:
            wait_until_answering(address, port, "x.test", time.monotonic() + START_DEADLINE)
        yield Delegation(port, hints)
    finally:
        for server in servers:
            server.close()


def test_trace_walks_the_delegation(delegation: Delegation) -> None:
    mine = ours(*delegation.dig_at_root(), "www.example.test", "+trace")
    assert mine.exit_code == 0, mine.stdout + mine.stderr
    received = [line for line in mine.stdout.splitlines() if line.startswith(";; Received")]
    port = delegation.port
    assert [line.split(" from ")[1].split(" in ")[0] for line in received] == [
        f"127.0.0.2#{port}(127.0.0.2)",  # ". NS" from the starting server
        f"127.0.0.2#{port}(a.root.test)",  # referral to test.
        f"127.0.0.3#{port}(ns.test)",  # referral to example.test.
        f"127.0.0.4#{port}(ns.example.test)",  # the answer
    ]
    lines = mine.stdout.splitlines()
    assert "test.\t\t\t172800\tIN\tNS\tns.test." in lines
    assert "example.test.\t\t3600\tIN\tNS\tns.example.test." in lines
    assert "www.example.test.\t300\tIN\tA\t192.0.2.80" in lines


def real_dig_confined(
    workdir: Path, hosts: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Debian's dig in a private mount namespace whose /etc/hosts and /etc/resolv.conf name
    only loopback: dig +trace looks up name-server names with getaddrinfo(), which must not
    reach the machine's real resolver (traffic stays on loopback)."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to confine dig +trace to loopback")
    hosts_file = workdir / "hosts"
    hosts_file.write_text("".join(f"{address} {name}\n" for name, address in hosts.items()))
    resolv_file = workdir / "resolv.conf"
    resolv_file.write_text("nameserver 127.0.0.2\n")
    script = (
        f"mount --bind {hosts_file} /etc/hosts && "
        f'mount --bind {resolv_file} /etc/resolv.conf && exec {DIG} "$@"'
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "dig", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    if proc.returncode != 0 and "DiG" not in proc.stdout:
        pytest.skip(f"cannot confine dig in a private mount namespace: {proc.stderr.strip()}")
    return proc


def trace_lines(text: str) -> list[str]:
    """+trace output minus the banner and the per-step times."""
    out = []
    for line in text.splitlines():
        if line.startswith("; <<>>"):
            continue
        if line.startswith(";; Received"):
            line = line.rsplit(" in ", 1)[0]
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


NAME_SERVERS = {"a.root.test": "127.0.0.2", "ns.test": "127.0.0.3", "ns.example.test": "127.0.0.4"}


@pytest.mark.parametrize(
    "query",
    [
        ("www.example.test",),
        ("www.example.test", "AAAA"),
        ("alias.example.test",),
        ("missing.example.test",),
        ("example.test", "TXT"),
    ],
    ids=lambda q: "_".join(q),
)
def test_trace_matches_debian_dig(
    delegation: Delegation, query: tuple[str, ...], tmp_path: Path
) -> None:
    theirs = real_dig_confined(tmp_path, NAME_SERVERS, *delegation.dig_at_root(), *query, "+trace")
    mine = ours(*delegation.dig_at_root(), *query, "+trace")
    assert ";; Received" in theirs.stdout, theirs.stdout + theirs.stderr
    assert trace_lines(mine.stdout) == trace_lines(theirs.stdout)


def test_trace_from_root_hints(delegation: Delegation) -> None:
    mine = ours(
        "-p",
        str(delegation.port),
        "--root-hints",
        str(delegation.hints),
        "+trace",
        "alias.example.test",
    )
    assert mine.exit_code == 0, mine.stdout + mine.stderr
    lines = mine.stdout.splitlines()
    assert f";; Received the root servers from root hints {delegation.hints}" in lines
    assert "alias.example.test.\t300\tIN\tCNAME\twww.example.test." in lines


def test_trace_json_and_nxdomain(delegation: Delegation) -> None:
    mine = ours(*delegation.dig_at_root(), "www.example.test", "AAAA", "+trace", "--json")
    doc = json.loads(mine.stdout)
    assert [hop["server"] for hop in doc["trace"]] == [
        "127.0.0.2",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
    ]
    last = doc["trace"][-1]["responseMessage"]
    assert last["AA"] == 1 and last["answerRRs"][0]["rdataAAAA"] == "2001:db8::80"
    assert all(hop["queryMessage"]["RD"] == 0 for hop in doc["trace"][1:])
    assert doc["answered"] is True
    missing = ours(*delegation.dig_at_root(), "missing.example.test", "+trace")
    assert missing.exit_code == 1
    assert "status" not in missing.stdout  # trace output has no header, as dig's
    assert "example.test.\t\t300\tIN\tSOA\tns.example.test. admin.example.test. 7" in missing.stdout


def test_trace_to_a_dead_server_shows_the_way_there(delegation: Delegation) -> None:
    proc = ours_process(*delegation.dig_at_root(), "www.dead.test", "+trace", "+time=1", "+tries=1")
    assert proc.returncode == 1
    assert "dead.test.\t\t3600\tIN\tNS\tns.dead.test." in proc.stdout.splitlines()
    assert "+trace stopped at dead.test. (ns.dead.test)" in proc.stderr
    # nothing listens on ns.dead.test's address: the port unreachable ends the try at once
    assert "connection refused" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "+time" not in proc.stderr  # waiting longer would not help


# --------------------------------------------------------------------------- parsing alone


def test_parse_rules_without_network() -> None:
    request = driver.parse_args(["+norec", "@10.9.9.9", "mx", "a.example", "+tcp", "b.example"])
    first, second = request.lookups
    assert (first.name, dns.rdatatype.to_text(first.rdtype)) == ("a.example", "MX")
    assert first.options.recurse is False and first.options.tcp is True
    assert second.options.recurse is False and second.options.tcp is False
    assert request.servers == ["10.9.9.9"]
    short = driver.parse_args(["+short", "x.example"]).lookups[0].options
    assert short.short and short.answer and not short.comments and not short.stats
    assert driver.parse_args(["+bufsize=512", "x"]).lookups[0].options.bufsize == 512
    assert driver.parse_args(["+time=0", "x"]).lookups[0].options.timeout == 1.0
    with pytest.raises(driver.UsageError, match="ambiguous option"):
        driver.parse_args(["+a", "x"])
    with pytest.raises(driver.UsageError, match="zone transfers"):
        driver.parse_args(["example.org", "AXFR"])
    with pytest.raises(driver.HelpRequested):
        driver.parse_args(["-h"])


def test_help_documents_the_json_shape() -> None:
    result = CliRunner().invoke(APP, ["dig", "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    for needle in ("RFC 8427", "queryMessage", "answerRRs", "+short", "--root-hints"):
        assert needle in result.stdout


# --------------------------------------------------------------------------- RFC 8427 shape


def test_rfc8427_shape_of_a_built_message() -> None:
    from backhaul.proto import dns_json

    query = dns.message.make_query("svc.example.", "TXT", use_edns=0, payload=1400)
    response = dns.message.make_response(query, our_payload=1400)
    response.flags |= dns.flags.AA
    response.answer.append(dns.rrset.from_text("svc.example.", 60, "IN", "TXT", '"a b" "c"', '"d"'))
    response.additional.append(
        dns.rrset.from_text("svc.example.", 60, "IN", "TYPE65280", r"\# 2 abcd")
    )
    doc = dns_json.message_to_json(response, date=0.25)
    assert (doc["QR"], doc["AA"], doc["RD"], doc["TC"], doc["RCODE"]) == (1, 1, 1, 0, 0)
    assert (doc["QDCOUNT"], doc["ANCOUNT"], doc["NSCOUNT"], doc["ARCOUNT"]) == (1, 2, 0, 2)
    assert (doc["QNAME"], doc["QTYPE"], doc["QTYPEname"], doc["QCLASSname"]) == (
        "svc.example.",
        16,
        "TXT",
        "IN",
    )
    texts = [rr["rdataTXT"] for rr in doc["answerRRs"]]
    assert sorted(texts) == ['"a b" "c"', '"d"']
    for rr in doc["answerRRs"]:
        raw = bytes.fromhex(rr["RDATAHEX"])
        assert len(raw) == rr["RDLENGTH"]
        back = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.TXT, raw, 0, len(raw))
        assert back.to_text() == rr["rdataTXT"]
    unknown, opt = doc["additionalRRs"]
    assert unknown["TYPEname"] == "TYPE65280" and unknown["RDATAHEX"] == "ABCD"
    assert not any(key.startswith("rdata") for key in unknown)  # no mnemonic, no rdata member
    assert (opt["TYPEname"], opt["CLASS"], opt["NAME"]) == ("OPT", 1400, ".")
    assert doc["dateString"] == "1970-01-01T00:00:00.250000Z" and doc["dateSeconds"] == 0.25
    wire = bytes.fromhex(doc["messageOctetsHEX"])
    assert dns.message.from_wire(wire).answer == response.answer
    pair = dns_json.pair_to_json(query, None)
    assert set(pair) == {"queryMessage"} and pair["queryMessage"]["QR"] == 0
