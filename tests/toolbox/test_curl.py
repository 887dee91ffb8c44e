"""``backhaul curl`` against loopback origins (plain, TLS with a test CA, HTTP/2), a stub
DNS resolver the test starts, and real curl for the exit codes of the same failures."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backhaul.tools.client import Exchange, Phases
from backhaul.tools.curl_report import picture, write_out

from .conftest import BACKHAUL, assert_one_line_error
from .origins import DOC, CertAuthority, Origin, StubResolver, make_ca


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BACKHAUL, "curl", *args], capture_output=True, text=True, timeout=timeout
    )


def report(*args: str) -> dict:
    done = curl("--report-json", *args)
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def plain() -> Iterator[Origin]:
    with Origin() as origin:
        yield origin


@pytest.fixture(scope="module")
def tls(ca: CertAuthority) -> Iterator[Origin]:
    with Origin(tls=ca.server_context()) as origin:
        yield origin


@pytest.fixture(scope="module")
def resolver() -> Iterator[StubResolver]:
    with StubResolver({"origin.test": "127.0.0.1"}) as stub:
        yield stub


def test_phases_are_each_measured_and_add_up_to_the_total(
    tls: Origin, ca: CertAuthority, resolver: StubResolver
) -> None:
    doc = report(
        "--dns-servers",
        f"127.0.0.1:{resolver.port}",
        "--cacert",
        str(ca.ca_cert),
        tls.url("/bytes/300000", host="origin.test"),
    )
    assert doc["exitcode"] == 0
    assert "origin.test." in resolver.queries  # the name went to our stub, nowhere else
    (hop,) = doc["hops"]
    phases = hop["phases"]
    assert list(phases) == ["dns", "tcp", "tls", "send", "wait", "transfer"]
    assert all(value > 0 for value in phases.values()), phases
    assert sum(phases.values()) == pytest.approx(hop["times"]["total"], abs=1e-5)
    times = hop["times"]
    order = ["namelookup", "connect", "appconnect", "pretransfer", "starttransfer", "total"]
    assert [times[k] for k in order] == sorted(times[k] for k in order)
    assert hop["size_download"] == 300000 and hop["remote"] == {"ip": "127.0.0.1", "port": tls.port}
    assert hop["tls"]["verified"] and hop["tls"]["subject"] == "CN=origin.test"
    wo = doc["write_out"]
    assert wo["time_total"] == pytest.approx(times["total"], abs=1e-5)
    assert wo["http_code"] == 200 and wo["http_version"] == "2"  # ALPN chose h2


def test_verbose_shows_heads_tls_and_certificate(tls: Origin, ca: CertAuthority) -> None:
    done = curl(
        "-v",
        "--http1.1",
        "--cacert",
        str(ca.ca_cert),
        "-o",
        "/dev/null",
        tls.url("/json", host="localhost"),
        "--resolve",
        f"localhost:{tls.port}:127.0.0.1",
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert f"* Connected to localhost (127.0.0.1) port {tls.port}" in err
    assert "* SSL connection using TLSv1.3 / TLS_" in err
    assert "* ALPN: server accepted http/1.1" in err
    assert "*  subject: CN=origin.test" in err and "*  issuer: CN=backhaul test CA" in err
    assert "*  expire date: " in err and "GMT" in err
    assert "> GET /json HTTP/1.1" in err and f"> Host: localhost:{tls.port}" in err
    assert "< HTTP/1.1 200 OK" in err and "< x-request-id: req-42" in err


def test_exit_codes_refused_unresolvable_timeout_tls_and_fail(
    plain: Origin, tls: Origin, resolver: StubResolver
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]  # bound, never listening: refused
    line = assert_one_line_error(curl(f"http://127.0.0.1:{dead}/"), 7)
    assert f"(7) Failed to connect to 127.0.0.1 port {dead}" in line
    stub = f"127.0.0.1:{resolver.port}"
    line = assert_one_line_error(curl("--dns-servers", stub, "http://nowhere.test/"), 6)
    assert "(6) Could not resolve host: nowhere.test" in line
    assert "nowhere.test." in resolver.queries
    assert_one_line_error(curl("http://host.invalid/"), 6)  # never asked anywhere
    line = assert_one_line_error(curl("-m", "0.5", plain.url("/hang")), 28)
    assert "timed out" in line
    line = assert_one_line_error(curl(tls.url("/")), 60)  # the test CA is not trusted
    assert "certificate" in line and "--cacert" in line
    assert_one_line_error(curl(plain.url("/", scheme="https")), 35)  # TLS to a plain port
    done = curl("-f", plain.url("/status/404"))
    assert_one_line_error(done, 22)
    assert done.stdout == ""  # -f: no body
    assert curl("-s", "-f", plain.url("/status/500")).stderr == ""
    assert "(22)" in curl("-sS", "-f", plain.url("/status/500")).stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_exit_codes_agree_with_real_curl(plain: Origin, tls: Origin) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    cases = [
        [f"http://127.0.0.1:{dead}/"],
        ["-m", "0.5", plain.url("/hang")],
        [tls.url("/")],
        [plain.url("/", scheme="https")],
        ["-f", plain.url("/status/404")],
        ["-L", "--max-redirs", "2", plain.url("/redirect/5")],
        [plain.url("/json")],
    ]
    for args in cases:
        theirs = subprocess.run(["curl", "-s", "-o", "/dev/null", *args], timeout=30)
        ours = curl("-s", "-o", "/dev/null", *args)
        assert ours.returncode == theirs.returncode, (args, ours.stderr)


def test_redirects_hop_by_hop(plain: Origin) -> None:
    doc = report("-L", plain.url("/redirect/3"))
    hops = doc["hops"]
    assert [h["status"] for h in hops] == [302, 302, 302, 200]
    assert hops[-1]["url"].endswith("/json") and hops[1]["reused_connection"]
    assert doc["write_out"]["num_redirects"] == 3
    assert doc["write_out"]["time_redirect"] == pytest.approx(
        sum(h["times"]["total"] for h in hops[:-1]), abs=1e-5
    )
    assert json.loads(doc["body"]) == DOC
    no_follow = report(plain.url("/redirect/3"))
    assert len(no_follow["hops"]) == 1 and no_follow["body"] == ""
    done = curl("-L", "--timings", plain.url("/redirect/2"))
    assert "hop 1: 302 GET" in done.stderr and "hop 3: 200 GET" in done.stderr
    assert "total:" in done.stderr and json.loads(done.stdout) == DOC
    single = curl("--timings", plain.url("/json")).stderr
    assert re.search(
        r"^phases: dns [\d.]+ms  tcp [\d.]+ms  tls 0.0ms  send [\d.]+ms  wait "
        r"[\d.]+ms  transfer [\d.]+ms  = total [\d.]+ms$",
        single,
        re.M,
    ), single
    assert_one_line_error(curl("-L", "--max-redirs", "2", plain.url("/redirect/5")), 47)


def test_request_options_reach_the_server(plain: Origin, tmp_path: Path) -> None:
    body_file = tmp_path / "body.txt"
    body_file.write_text("line1\nline2\n")
    echo = json.loads(curl("-d", "a=1", "-d", f"@{body_file}", plain.url("/echo")).stdout)
    assert echo["method"] == "POST" and echo["body"] == "a=1&line1line2"
    assert echo["headers"]["content-type"] == "application/x-www-form-urlencoded"
    echo = json.loads(curl("--data-binary", f"@{body_file}", plain.url("/echo")).stdout)
    assert echo["body"] == "line1\nline2\n"
    echo = json.loads(curl("--json", '{"x": 1}', plain.url("/echo")).stdout)
    assert echo["headers"]["content-type"] == "application/json"
    assert echo["headers"]["accept"] == "application/json" and echo["body"] == '{"x": 1}'
    echo = json.loads(
        curl(
            "-X",
            "PUT",
            "-u",
            "ada:s3cret",
            "-H",
            "X-One: 1",
            "-H",
            "User-Agent:",
            plain.url("/echo?q=2"),
        ).stdout
    )
    assert echo["method"] == "PUT" and echo["target"] == "/echo?q=2"
    assert echo["headers"]["authorization"] == "Basic " + base64.b64encode(b"ada:s3cret").decode()
    assert echo["headers"]["x-one"] == "1" and "user-agent" not in echo["headers"]
    echo = json.loads(
        curl(
            "-A",
            "probe/2",
            "-e",
            "http://from.example/",
            "-b",
            "a=1",
            "-b",
            "b=2",
            plain.url("/echo"),
        ).stdout
    )
    assert echo["headers"]["user-agent"] == "probe/2"
    assert echo["headers"]["referer"] == "http://from.example/"
    assert echo["headers"]["cookie"] == "a=1; b=2"
    head = curl("-I", plain.url("/json"))
    assert head.stdout.startswith("HTTP/1.1 200 OK\n") and "x-request-id: req-42" in head.stdout
    assert plain.by_path.get("/json", 0) >= 1
    out = tmp_path / "out.bin"
    assert curl("-o", str(out), plain.url("/bytes/1234")).returncode == 0
    assert out.read_bytes() == b"a" * 1234
    # --resolve and --connect-to send a name's traffic to our origin, Host unchanged
    pinned = json.loads(
        curl(
            "--resolve",
            f"api.example:{plain.port}:127.0.0.1",
            f"http://api.example:{plain.port}/echo",
        ).stdout
    )
    assert pinned["headers"]["host"] == f"api.example:{plain.port}"
    routed = json.loads(
        curl(
            "--connect-to", f"api.example:80:127.0.0.1:{plain.port}", "http://api.example/echo"
        ).stdout
    )
    assert routed["headers"]["host"] == "api.example"


def test_write_out_template(plain: Origin) -> None:
    done = curl(
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version} %{size_download} %{content_type} %header{x-request-id}"
        r" %{num_redirects} %{exitcode}\n%{time_namelookup} %{time_total}",
        plain.url("/json"),
    )
    first, second = done.stdout.split("\n")
    size = len(json.dumps(DOC))
    assert first == f"200 1.1 {size} application/json req-42 0 0"
    lookup, total = (float(x) for x in second.split())
    assert 0 <= lookup <= total
    failed = curl("-s", "-w", "%{exitcode} %{http_code}", plain.url("/status/503"), "-f")
    assert failed.returncode == 22 and failed.stdout == "22 503"
    unknown = curl("-s", "-o", "/dev/null", "-w", "%{nonsense}", plain.url("/"))
    assert "unknown --write-out variable: 'nonsense'" in unknown.stderr


def test_http2_by_alpn_and_prior_knowledge(tls: Origin, plain: Origin, ca: CertAuthority) -> None:
    doc = report("--cacert", str(ca.ca_cert), tls.url("/json"))
    assert doc["hops"][0]["http_version"] == "HTTP/2" and doc["hops"][0]["tls"]["alpn"] == "h2"
    doc = report("--http1.1", "--cacert", str(ca.ca_cert), tls.url("/json"))
    assert doc["hops"][0]["http_version"] == "HTTP/1.1"
    doc = report("--http2-prior-knowledge", plain.url("/json"))
    assert doc["hops"][0]["http_version"] == "HTTP/2" and json.loads(doc["body"]) == DOC
    assert doc["hops"][0]["tls"] is None


def test_client_certificate_is_presented(ca: CertAuthority) -> None:
    import ssl

    ctx = ca.server_context(alpn=("http/1.1",))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca.ca_cert)
    with Origin(tls=ctx) as origin:
        ok = curl(
            "--cacert",
            str(ca.ca_cert),
            "--cert",
            str(ca.client_cert),
            "--key",
            str(ca.client_key),
            origin.url("/json"),
        )
        assert ok.returncode == 0 and json.loads(ok.stdout) == DOC
        refused = curl("--cacert", str(ca.ca_cert), origin.url("/json"))
        # TLS 1.3 sends the alert after the handshake: curl says 56, the reply is empty here
        assert refused.returncode in (35, 52, 56), refused.stderr


def test_picture_has_a_column_per_phase_and_the_marks() -> None:
    exchange = Exchange(url="https://x/", method="GET", request_headers=[])
    exchange.phases = Phases(0.001, 0.003, 0.010, 0.0101, 0.011, 0.030, 0.045)
    lines = picture(exchange, https=True)
    assert "DNS Lookup" in lines[0] and "TLS Handshake" in lines[0]
    assert lines[1].startswith("[") and lines[1].endswith("]") and lines[1].count("|") == 4
    assert "1.0ms" in lines[1] and "7.1ms" in lines[1] and "20ms" in lines[1]
    assert [line.strip().split(":")[0] for line in lines[3:]] == [
        "namelookup",
        "connect",
        "pretransfer",
        "starttransfer",
        "total",
    ]
    assert lines[-1].endswith("total:45ms")
    text, warnings = write_out("%{time_total}|%%|%{http_code}", None, 7, "refused")
    assert text == "0.000000|%|000" and warnings == []


def test_bad_usage_is_one_line() -> None:
    assert_one_line_error(curl("--resolve", "nocolons", "http://x/"), 2)
    assert_one_line_error(curl("-H", "bad header", "http://x/"), 2)
    assert_one_line_error(curl("--http1.1", "--http2", "http://x/"), 2)
    line = assert_one_line_error(curl("ftp://127.0.0.1/"), 1)
    assert "not supported" in line
    assert_one_line_error(curl("-d", "@/nonexistent/file", "http://127.0.0.1:1/"), 26)


def test_hanging_server_never_blocks_past_the_deadline() -> None:
    """Accepts and never answers: -m bounds the whole transfer (exit 28)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        assert_one_line_error(curl("-m", "0.3", f"http://127.0.0.1:{port}/"), 28)
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


def test_connect_timeout_on_a_full_accept_queue() -> None:
    """A listener whose accept queue is full drops new SYNs: the connect phase times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # backlog 0 holds one; the rest wait in SYN-SENT
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        line = assert_one_line_error(
            curl("--connect-timeout", "0.5", f"http://127.0.0.1:{port}/"), 28
        )
        assert f"Connection timed out to 127.0.0.1 port {port}" in line
        if shutil.which("curl"):
            theirs = subprocess.run(
                ["curl", "-s", "--connect-timeout", "0.5", f"http://127.0.0.1:{port}/"],
                timeout=30,
            )
            assert theirs.returncode == 28
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_a_body_past_the_memory_bound_is_a_write_error(plain: Origin) -> None:
    from backhaul.tools.client import BoundedBuffer, CurlFailure, RequestSpec, fetch

    with pytest.raises(CurlFailure) as caught:
        fetch(RequestSpec(url=plain.url("/bytes/5000")), BoundedBuffer(limit=1000))
    assert caught.value.exit_code == 23 and "larger than" in caught.value.message
    kept = BoundedBuffer(limit=5000)
    assert fetch(RequestSpec(url=plain.url("/bytes/5000")), kept).last.status == 200
    assert kept.getvalue() == b"a" * 5000


def test_nothing_is_imported_while_a_transfer_is_timed(
    tls: Origin, ca: CertAuthority, resolver: StubResolver
) -> None:
    """An import inside a phase is timed as that phase (the first TLS request once showed a
    60 ms handshake that was cryptography's x509 loading): from the lookup to the last byte
    of an HTTP/2-over-TLS transfer, nothing is imported."""
    code = f"""
import io, sys
from backhaul.tools.client import RequestSpec, Session, _Resolver, fetch
spec = RequestSpec(url={tls.url("/json", host="origin.test")!r}, cacert={str(ca.ca_cert)!r},
                   dns_servers=[("127.0.0.1", {resolver.port})])
imports = []
timing = [False]
sys.addaudithook(lambda event, args: imports.append(args[0])
                 if event == "import" and timing[0] else None)
original = _Resolver.resolve
def resolve(self, *args):
    timing[0] = True  # the clock of the transfer runs from here on
    return original(self, *args)
_Resolver.resolve = resolve
transfer = fetch(spec, io.BytesIO())
timing[0] = False
assert transfer.last.status == 200 and transfer.last.http_version == "HTTP/2", transfer.last
print(sorted(set(imports)))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("script") is None, reason="script (util-linux) is missing")
def test_binary_output_is_not_written_to_a_terminal(plain: Origin, tmp_path: Path) -> None:
    """On a terminal (a pty from script(1)) a binary body is refused, as curl does; text is
    written, and -o - writes the binary anyway."""

    def on_tty(*args: str) -> subprocess.CompletedProcess[bytes]:
        command = " ".join([BACKHAUL, "curl", "--no-timings", *args])
        return subprocess.run(
            ["script", "-qec", command, str(tmp_path / "typescript")],
            capture_output=True,
            timeout=30,
        )

    refused = on_tty(plain.url("/binary"))
    assert refused.returncode == 23
    assert b"Binary output can mess up your terminal" in refused.stdout
    assert on_tty(plain.url("/json")).returncode == 0
    forced = on_tty("-o", "-", plain.url("/binary"))
    assert forced.returncode == 0


def test_terminal_guard() -> None:
    import io

    from backhaul.cli.curl import TerminalGuard

    out = io.BytesIO()
    guard = TerminalGuard(out)
    assert guard.write(b"text\n") == 5 and out.getvalue() == b"text\n"
    with pytest.raises(OSError, match="Binary output"):
        guard.write(b"\x00\x01")
