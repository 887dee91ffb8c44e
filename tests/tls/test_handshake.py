"""Handshake deadlines and refusals: a client that sends nothing, or stops half-way through
its handshake, is closed after the listener's ``handshake_timeout`` (raw sockets that wait
for the end of the connection with a deadline); a refused handshake reaches the client as
its TLS alert (what ``openssl s_client`` and Python's ssl report); every outcome is counted
by reason in /metrics, and the log says it once, not once per failure."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Iterator

import pytest

from tests.edge.harness import Edge
from tests.tls.clients import metrics, s_client, tls_edge, wait_for
from tests.tls.material import Material

HANDSHAKE_TIMEOUT = 2.0  # seconds, the listeners' setting
DEADLINE = 4 * HANDSHAKE_TIMEOUT  # how long a test waits for the edge to close: before the
# default handshake timeout (10 s), so an edge that ignored the setting fails the test
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def failures(admin: int, listener: str, reason: str) -> float:
    series = f'backhaul_tls_handshake_failures_total{{listener="{listener}",reason="{reason}"}}'
    return metrics(admin).get(series, 0)


@pytest.fixture(scope="module")
def setup(
    material: Material, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Edge, list[int], int]]:
    m = material
    timeout = f"{int(HANDSHAKE_TIMEOUT * 1000)}ms"
    certs = [
        {"cert": str(m.localhost.cert), "key": str(m.localhost.key)},
        {"cert": str(m.a.cert), "key": str(m.a.key)},
    ]
    server = {"cert": str(m.localhost.cert), "key": str(m.localhost.key)}
    listeners: list[dict[str, object]] = [
        {"tls": {"certificates": certs, "unknown_sni": "refuse", "handshake_timeout": timeout}},
        {
            "tls": {
                **server,
                "client_auth": {"ca": str(m.root), "mode": "require"},
                "handshake_timeout": timeout,
            }
        },
        {"tls": {**server, "handshake_timeout": timeout}},  # the log test's own
    ]
    routes = [{"respond": {"body": "ok\n"}}]
    tmp = tmp_path_factory.mktemp("handshake")
    with tls_edge(tmp, listeners, routes=routes) as running:
        yield running


def read_to_end(sock: socket.socket) -> bytes:
    """What the edge sends until it closes the connection; a socket timeout (the deadline)
    fails the test."""
    sock.settimeout(DEADLINE)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def client_hello() -> bytes:
    """A real ClientHello (TLS 1.2 and 1.3) from Python's ssl over memory buffers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100
    return hello


def test_a_client_that_sends_nothing_is_closed_after_the_handshake_timeout(
    setup: tuple[Edge, list[int], int],
) -> None:
    _, ports, admin = setup
    before = failures(admin, "l0", "timeout")
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=DEADLINE) as sock:
        assert read_to_end(sock) == b""
    wait_for(lambda: failures(admin, "l0", "timeout") > before, what="the timeout counter")


@pytest.mark.parametrize("part", ["half a ClientHello", "a whole ClientHello"])
def test_a_client_that_stops_mid_handshake_is_closed_after_the_handshake_timeout(
    setup: tuple[Edge, list[int], int], part: str
) -> None:
    _, ports, admin = setup
    hello = client_hello()
    sent = hello[: len(hello) // 2] if part.startswith("half") else hello
    before = failures(admin, "l0", "timeout")
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=DEADLINE) as sock:
        sock.sendall(sent)
        answer = read_to_end(sock)
    if sent is hello:  # the edge answered with its flight (ServerHello ...), then waited
        assert answer[:1] == b"\x16", answer[:20]
    else:
        assert answer == b""
    wait_for(lambda: failures(admin, "l0", "timeout") > before, what="the timeout counter")


def test_a_client_that_closes_mid_handshake_is_counted(
    setup: tuple[Edge, list[int], int],
) -> None:
    _, ports, admin = setup
    before = failures(admin, "l0", "client_closed")
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=DEADLINE) as sock:
        sock.sendall(client_hello())
    wait_for(
        lambda: failures(admin, "l0", "client_closed") > before, what="the client_closed counter"
    )


def python_client(material: Material) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(material.root))


def python_refusal(port: int, context: ssl.SSLContext, server_name: str) -> ssl.SSLError:
    """The error Python's ssl reports for a handshake (and one request) the edge refuses."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw,
        pytest.raises(ssl.SSLError) as caught,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        # TLS 1.3: the client's handshake ends before the edge checks its (missing)
        # certificate; the edge's verdict arrives as the answer to the first read.
        tls.sendall(REQUEST)
        tls.recv(4096)
    return caught.value


def test_tls_1_1_gets_the_protocol_version_alert(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    _, ports, admin = setup
    before = failures(admin, "l0", "protocol_version")
    # SECLEVEL=0 lets this OpenSSL offer TLS 1.1 at all: the refusal is the edge's.
    out = s_client(ports[0], "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert "tlsv1 alert protocol version" in out, out
    context = python_client(material)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # the stdlib warns on TLS 1.1: offering it is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    assert python_refusal(ports[0], context, "localhost").reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    wait_for(
        lambda: failures(admin, "l0", "protocol_version") >= before + 2,
        what="the protocol_version counter",
    )


def test_an_unknown_name_gets_the_unrecognized_name_alert(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    _, ports, admin = setup
    before = failures(admin, "l0", "unknown_sni")
    out = s_client(ports[0], "-servername", "nobody.test", "-CAfile", str(material.root))
    assert "tlsv1 unrecognized name" in out and "no peer certificate available" in out, out
    error = python_refusal(ports[0], python_client(material), "nobody.test")
    assert error.reason == "TLSV1_UNRECOGNIZED_NAME"
    wait_for(
        lambda: failures(admin, "l0", "unknown_sni") >= before + 2, what="the unknown_sni counter"
    )


def test_no_client_certificate_gets_the_certificate_required_alert(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    _, ports, admin = setup
    before = failures(admin, "l1", "no_client_certificate")
    # -ign_eof: keep reading after the request, where TLS 1.3 puts the edge's verdict.
    out = s_client(ports[1], "-CAfile", str(material.root), "-ign_eof", data=REQUEST)
    assert "tlsv13 alert certificate required" in out, out
    error = python_refusal(ports[1], python_client(material), "localhost")
    assert error.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    wait_for(
        lambda: failures(admin, "l1", "no_client_certificate") >= before + 2,
        what="the no_client_certificate counter",
    )


def test_plain_http_is_still_closed_at_once(setup: tuple[Edge, list[int], int]) -> None:
    """No alert to send (OpenSSL sends none to an HTTP request): the edge closes without
    waiting for the handshake timeout, well within the read deadline."""
    _, ports, admin = setup
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=DEADLINE) as sock:
        sock.sendall(REQUEST)
        sock.settimeout(HANDSHAKE_TIMEOUT / 2)  # closed before the handshake timeout
        try:
            assert sock.recv(4096) == b""
        except ConnectionResetError:
            pass
    wait_for(lambda: failures(admin, "l0", "plain_http") >= 1, what="the plain_http counter")


def test_failures_are_logged_once_not_once_each(setup: tuple[Edge, list[int], int]) -> None:
    edge, ports, admin = setup
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", ports[2]), timeout=DEADLINE) as sock:
            sock.sendall(REQUEST)
            read_to_end(sock)
    wait_for(lambda: failures(admin, "l2", "plain_http") >= 20, what="20 plain_http failures")
    wait_for(
        lambda: "listener l2: " in edge.stderr_path.read_text(), what="the failure summary line"
    )
    lines = [
        line
        for line in edge.stderr_path.read_text().splitlines()
        if "listener l2: " in line and "handshake(s) failed" in line
    ]
    assert len(lines) == 1, lines  # the next summary comes a minute later at the earliest
    assert "plain_http" in lines[0]
