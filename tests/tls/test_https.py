"""HTTPS listeners with real clients (curl, openssl s_client, Python's ssl): versions,
ciphers, SNI, ALPN, resumption across workers, plain HTTP on the TLS port, the redirect
listener, HSTS, forwarding headers, and the handshake counters in /metrics."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.harness import Edge, Upstream
from tests.tls.clients import (
    curl,
    metrics,
    peer_subject,
    s_client,
    tls_edge,
    tls_get,
    upstream_headers,
    wait_for,
)
from tests.tls.material import Material, rsa_leaf, write_leaf


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def setup(
    material: Material, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Edge, list[int], int]]:
    m = material
    rsa = write_leaf(m.dir, "rsa", rsa_leaf(m.ca, ["localhost"], m.now))
    certs = [
        {"cert": str(m.localhost.cert), "key": str(m.localhost.key)},
        {"cert": str(m.a.cert), "key": str(m.a.key)},
        {"cert": str(m.wild.cert), "key": str(m.wild.key)},
    ]
    listeners: list[dict[str, object]] = [
        {"tls": {"certificates": certs}},
        {"tls": {"certificates": certs, "unknown_sni": "refuse"}},
        {"tls": {"cert": str(rsa.cert), "key": str(rsa.key)}},
        {"tls": {"cert": str(m.localhost.cert), "key": str(m.localhost.key), "min_version": "1.3"}},
        {"redirect_https": {"port": 8443}},
    ]
    routes = [
        {"match": {"host": "a.test"}, "respond": {"body": "a\n"}, "hsts": {"max_age": "1h"}},
        {
            "match": {"prefix": "/hsts/"},
            "proxy": {"cluster": "app"},
            "hsts": {"max_age": "8760h", "include_subdomains": True},
        },
        {"proxy": {"cluster": "app"}},
    ]
    clusters = {"app": {"endpoints": [upstream.address]}}
    tmp = tmp_path_factory.mktemp("https")
    with tls_edge(tmp, listeners, workers=2, routes=routes, clusters=clusters) as running:
        yield running


def ctx(material: Material) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(material.root))


def test_curl_verifies_the_edge_and_the_upstream_sees_https(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    _, ports, _ = setup
    result = curl("-i", "--cacert", str(material.root), f"https://localhost:{ports[0]}/hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200"), result.stdout
    seen = upstream_headers(result.stdout.encode())
    assert seen["x-forwarded-proto"] == "https"
    assert "strict-transport-security" not in result.stdout.lower()  # only routes that ask


def test_sni_picks_the_certificate_default_for_unknown_or_none(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    _, ports, _ = setup
    root = str(material.root)
    for name, subject in (
        ("a.test", "a.test"),
        ("api.wild.test", "*.wild.test"),
        ("unknown.test", "localhost"),
        ("localhost", "localhost"),
    ):
        out = s_client(ports[0], "-servername", name, "-CAfile", root)
        assert peer_subject(out) == subject, out
    out = s_client(ports[0], "-noservername", "-CAfile", root)
    assert peer_subject(out) == "localhost"
    # Verified by name with Python's ssl too.
    body, _ = tls_get(ports[0], ctx(material), "x.wild.test")
    assert body.startswith(b"HTTP/1.1 200")


def test_unknown_sni_refused_when_configured(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    _, ports, admin = setup
    out = s_client(ports[1], "-servername", "nobody.test", "-CAfile", str(material.root))
    assert "tlsv1 unrecognized name" in out, out  # the alert, and no certificate
    assert "no peer certificate available" in out and peer_subject(out) == ""
    assert peer_subject(s_client(ports[1], "-servername", "a.test")) == "a.test"
    assert peer_subject(s_client(ports[1], "-noservername")) == "localhost"
    wait_for(
        lambda: (
            metrics(admin).get(
                'backhaul_tls_handshake_failures_total{listener="l1",reason="unknown_sni"}', 0
            )
            >= 1
        ),
        what="the unknown_sni counter",
    )


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused(setup: tuple[Edge, list[int], int], version: str) -> None:
    _, ports, admin = setup
    key = 'backhaul_tls_handshake_failures_total{listener="l0",reason="protocol_version"}'
    before = metrics(admin).get(key, 0)
    # SECLEVEL=0 lets this OpenSSL offer the old versions at all: the refusal is the edge's.
    out = s_client(ports[0], version, "-cipher", "DEFAULT:@SECLEVEL=0")
    assert "no protocols available" not in out  # this client did offer the old version
    assert "New, (NONE)" in out and "tlsv1 alert protocol version" in out, out
    wait_for(lambda: metrics(admin).get(key, 0) > before, what="the protocol_version counter")
    python = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    python.check_hostname = False
    python.verify_mode = ssl.CERT_NONE
    python.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # the stdlib warns on TLS 1.1: offering it is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old = ssl.TLSVersion.TLSv1_1 if version == "-tls1_1" else ssl.TLSVersion.TLSv1
        python.minimum_version = python.maximum_version = old
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        tls_get(ports[0], python)


def test_tls_1_2_and_1_3_with_ecdhe_only(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    _, ports, _ = setup
    root = str(material.root)
    out = s_client(ports[0], "-tls1_3", "-CAfile", root)
    assert "New, TLSv1.3" in out and "Verify return code: 0 (ok)" in out
    out = s_client(ports[0], "-tls1_2", "-CAfile", root)
    assert "New, TLSv1.2, Cipher is ECDHE-ECDSA-" in out, out
    # The RSA listener: static-RSA and DHE suites are refused, ECDHE-RSA accepted.
    for suite in ("AES128-GCM-SHA256", "AES256-SHA", "DHE-RSA-AES128-GCM-SHA256"):
        out = s_client(ports[2], "-tls1_2", "-cipher", suite)
        assert "Cipher is (NONE)" in out and "alert handshake failure" in out, (suite, out)
    out = s_client(ports[2], "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert "Cipher is ECDHE-RSA-AES128-GCM-SHA256" in out
    # min_version 1.3 refuses 1.2.
    out = s_client(ports[3], "-tls1_2")
    assert "Cipher is (NONE)" in out and "tlsv1 alert protocol version" in out, out


def test_alpn_http11_and_nothing_else(setup: tuple[Edge, list[int], int]) -> None:
    _, ports, _ = setup
    assert "ALPN protocol: http/1.1" in s_client(ports[0], "-alpn", "h2,http/1.1")
    out = s_client(ports[0], "-alpn", "h2")
    assert "No ALPN negotiated" in out and "New, TLSv1.3" in out


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sessions_resume_on_every_worker(
    setup: tuple[Edge, list[int], int], material: Material, version: ssl.TLSVersion
) -> None:
    edge, ports, _ = setup
    assert len(edge.worker_pids()) == 2
    context = ctx(material)
    context.maximum_version = version
    _, first = tls_get(ports[0], context)
    session = first.session
    assert session is not None
    # Sixteen new connections spread over both workers (SO_REUSEPORT hashes the client
    # port): each resumes with the first worker's ticket, so the key is shared.
    reused = [tls_get(ports[0], context, session=session)[1].reused for _ in range(16)]
    assert all(reused), reused


def test_openssl_resumes_with_a_saved_session(
    setup: tuple[Edge, list[int], int], tmp_path: Path
) -> None:
    _, ports, _ = setup
    saved = str(tmp_path / "session.pem")
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    # -ign_eof: read the answer (and the TLS 1.3 tickets after the handshake) to the end.
    assert "New, TLSv1.3" in s_client(ports[0], "-ign_eof", "-sess_out", saved, data=request)
    assert "Reused, TLSv1.3" in s_client(ports[0], "-ign_eof", "-sess_in", saved, data=request)


def test_plain_http_on_the_tls_port_is_closed_at_once(setup: tuple[Edge, list[int], int]) -> None:
    _, ports, admin = setup
    # The deadline is half the handshake timeout (10 s): a hung connection fails the read.
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        assert data == b"" or not data.startswith(b"HTTP/1.1 200")
    key = 'backhaul_tls_handshake_failures_total{listener="l0",reason="plain_http"}'
    wait_for(lambda: metrics(admin).get(key, 0) >= 1, what="the plain_http counter")


def test_redirect_listener_sends_clients_to_https(setup: tuple[Edge, list[int], int]) -> None:
    _, ports, _ = setup
    result = curl("-i", f"http://127.0.0.1:{ports[4]}/some/path?x=1")
    assert result.stdout.startswith("HTTP/1.1 308")
    assert "Location: https://127.0.0.1:8443/some/path?x=1" in result.stdout
    result = curl("-i", "-H", "Host: example.test:8080", f"http://127.0.0.1:{ports[4]}/")
    assert "Location: https://example.test:8443/" in result.stdout
    bad = curl("-i", "-H", "Host: evil/x", f"http://127.0.0.1:{ports[4]}/")
    assert bad.stdout.startswith("HTTP/1.1 400")


def test_hsts_on_the_routes_that_ask(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    _, ports, _ = setup
    root = str(material.root)
    direct = curl(
        "-i",
        "--cacert",
        root,
        "--resolve",
        f"a.test:{ports[0]}:127.0.0.1",
        f"https://a.test:{ports[0]}/",
    )
    assert "Strict-Transport-Security: max-age=3600\n" in direct.stdout
    proxied = curl("-i", "--cacert", root, f"https://localhost:{ports[0]}/hsts/x")
    assert "Strict-Transport-Security: max-age=31536000; includeSubDomains\n" in proxied.stdout


def test_client_cert_headers_from_clients_are_dropped(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    _, ports, _ = setup
    result = curl(
        "--cacert",
        str(material.root),
        "-H",
        "Client-Cert: :Zm9v:",
        "-H",
        "Client-Cert-Chain: :YmFy:",
        f"https://localhost:{ports[0]}/echo",
    )
    seen = upstream_headers(result.stdout.encode())
    assert "client-cert" not in seen and "client-cert-chain" not in seen


def test_handshakes_are_counted(setup: tuple[Edge, list[int], int], material: Material) -> None:
    _, ports, admin = setup
    tls_get(ports[0], ctx(material))
    key = 'backhaul_tls_handshakes_total{listener="l0"}'
    assert wait_for(lambda: metrics(admin).get(key, 0) >= 1, what="the handshake counter")


def test_a_client_that_distrusts_the_certificate_is_counted(
    setup: tuple[Edge, list[int], int],
) -> None:
    _, ports, admin = setup
    key = 'backhaul_tls_handshake_failures_total{listener="l0",reason="certificate_rejected"}'
    before = metrics(admin).get(key, 0)
    result = curl(f"https://localhost:{ports[0]}/")  # no --cacert: the system store
    assert result.returncode != 0
    wait_for(lambda: metrics(admin).get(key, 0) > before, what="the certificate_rejected count")
