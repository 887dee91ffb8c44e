"""Mutual TLS downstream (``client_auth``: require and optional) with curl's --cert, the
client certificate reaching the upstream in RFC 9440's Client-Cert / Client-Cert-Chain; and
TLS to upstreams (verification against a CA file or the system store, the name verified,
a client certificate for upstream mTLS, health checks over TLS)."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from backhaul.pki import issue_leaf
from tests.edge.harness import Edge, Upstream
from tests.tls.clients import curl, metrics, tls_edge, upstream_headers, wait_for
from tests.tls.material import Material, Pair, write_leaf


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def client(material: Material) -> Pair:
    return material.leaf("client-1", ["client-1.test"])


@pytest.fixture(scope="module")
def stranger(material: Material) -> Pair:
    """A client certificate from a CA the edge does not trust."""
    issued = issue_leaf(material.other_ca, ["stranger.test"], material.now)
    return write_leaf(material.dir, "stranger", issued)


def tls_upstream(material: Material, require_client_cert: bool = False) -> Upstream:
    """The test upstream serving HTTPS with a certificate for localhost/127.0.0.1."""
    up = Upstream()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(material.localhost.cert, material.localhost.key)
    if require_client_cert:
        context.load_verify_locations(cafile=material.root)
        context.verify_mode = ssl.CERT_REQUIRED
    up.server.socket = context.wrap_socket(up.server.socket, server_side=True)
    return up


@pytest.fixture(scope="module")
def https_upstream(material: Material) -> Iterator[Upstream]:
    with tls_upstream(material) as up:
        yield up


@pytest.fixture(scope="module")
def mtls_upstream(material: Material) -> Iterator[Upstream]:
    with tls_upstream(material, require_client_cert=True) as up:
        yield up


@pytest.fixture(scope="module")
def checked_upstream(material: Material) -> Iterator[Upstream]:
    with tls_upstream(material) as up:
        yield up


@pytest.fixture(scope="module")
def setup(
    material: Material,
    upstream: Upstream,
    https_upstream: Upstream,
    mtls_upstream: Upstream,
    checked_upstream: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Edge, list[int], int]]:
    m = material
    server = {"cert": str(m.localhost.cert), "key": str(m.localhost.key)}
    listeners: list[dict[str, object]] = [
        {"tls": {**server, "client_auth": {"ca": str(m.root), "mode": "require"}}},
        {"tls": {**server, "client_auth": {"ca": str(m.root), "mode": "optional"}}},
    ]
    routes = [
        {
            "match": {"prefix": "/whoami", "client_cert": {"subject": r"CN=client-1\.test"}},
            "respond": {"body": "client-1\n"},
        },
        {
            "match": {"prefix": "/whoami", "client_cert": {"present": True}},
            "respond": {"body": "someone\n"},
        },
        {"match": {"prefix": "/whoami"}, "respond": {"body": "anonymous\n"}},
        {"match": {"prefix": "/up/good"}, "proxy": {"cluster": "good"}},
        {"match": {"prefix": "/up/system"}, "proxy": {"cluster": "system"}},
        {"match": {"prefix": "/up/wrongname"}, "proxy": {"cluster": "wrongname"}},
        {"match": {"prefix": "/up/plain"}, "proxy": {"cluster": "plain-to-tls"}},
        {"match": {"prefix": "/up/mtls"}, "proxy": {"cluster": "mtls"}},
        {"match": {"prefix": "/up/verifyname"}, "proxy": {"cluster": "verifyname"}},
        {"match": {"prefix": "/up/badverify"}, "proxy": {"cluster": "badverify"}},
        {"match": {"prefix": "/up/nocert"}, "proxy": {"cluster": "nocert"}},
        {"proxy": {"cluster": "app"}},
    ]
    checks = {"type": "http", "interval": "200ms", "http": {"path": "/status/200"}}
    clusters = {
        "app": {"endpoints": [upstream.address]},
        "good": {"endpoints": [https_upstream.address], "tls": {"ca": str(m.root)}},
        "checked": {
            "endpoints": [checked_upstream.address],
            "tls": {"ca": str(m.root)},
            "health_checks": checks,
        },
        "system": {"endpoints": [https_upstream.address], "tls": {}},
        "wrongname": {
            "endpoints": [https_upstream.address],
            "tls": {"ca": str(m.root), "server_name": "other.test"},
        },
        "plain-to-tls": {"endpoints": [https_upstream.address]},
        "mtls": {
            "endpoints": [mtls_upstream.address],
            "tls": {
                "ca": str(m.root),
                "server_name": "localhost",
                "cert": str(m.a.cert),
                "key": str(m.a.key),
            },
        },
        "nocert": {"endpoints": [mtls_upstream.address], "tls": {"ca": str(m.root)}},
        "verifyname": {
            "endpoints": [https_upstream.address],
            "tls": {"ca": str(m.root), "server_name": "sni.test", "verify_name": "localhost"},
        },
        "badverify": {
            "endpoints": [https_upstream.address],
            "tls": {"ca": str(m.root), "verify_name": "elsewhere.test"},
        },
    }
    tmp = tmp_path_factory.mktemp("mtls")
    with tls_edge(tmp, listeners, routes=routes, clusters=clusters) as running:
        yield running


def der_b64(pair: Pair) -> str:
    return base64.b64encode(pair.leaf.public_bytes(serialization.Encoding.DER)).decode()


def test_required_client_certificate_reaches_the_upstream(
    setup: tuple[Edge, list[int], int], material: Material, client: Pair
) -> None:
    _, ports, _ = setup
    result = curl(
        "--cacert",
        str(material.root),
        "--cert",
        str(client.cert),
        "--key",
        str(client.key),
        "-H",
        "Client-Cert: :Zm9yZ2Vk:",
        f"https://localhost:{ports[0]}/who",
    )
    assert result.returncode == 0, result.stderr
    seen = upstream_headers(result.stdout.encode())
    assert seen["client-cert"] == f":{der_b64(client)}:"  # the verified one, not the forged
    # curl sends the chain file as is (leaf, then the root): the rest is the chain.
    chain = seen["client-cert-chain"]
    assert (
        chain
        == ":"
        + base64.b64encode(material.ca.cert.public_bytes(serialization.Encoding.DER)).decode()
        + ":"
    )
    sent = x509.load_der_x509_certificate(base64.b64decode(seen["client-cert"].strip(":")))
    assert sent.subject.rfc4514_string() == "CN=client-1.test"


def test_required_mode_refuses_no_certificate_and_strangers(
    setup: tuple[Edge, list[int], int], material: Material, stranger: Pair
) -> None:
    _, ports, admin = setup
    url = f"https://localhost:{ports[0]}/"
    bare = curl("--cacert", str(material.root), url)
    assert bare.returncode != 0
    odd = curl(
        "--cacert",
        str(material.root),
        "--cert",
        str(stranger.cert),
        "--key",
        str(stranger.key),
        url,
    )
    assert odd.returncode != 0
    series = 'backhaul_tls_handshake_failures_total{{listener="l0",reason="{}"}}'
    wait_for(
        lambda: (
            metrics(admin).get(series.format("no_client_certificate"), 0) >= 1
            and metrics(admin).get(series.format("bad_client_certificate"), 0) >= 1
        ),
        what="client certificate failure counters",
    )


def test_optional_mode_serves_with_and_without(
    setup: tuple[Edge, list[int], int], material: Material, client: Pair
) -> None:
    _, ports, _ = setup
    url = f"https://localhost:{ports[1]}/who"
    without = curl("--cacert", str(material.root), "-H", "Client-Cert: :Zm9yZ2Vk:", url)
    assert without.returncode == 0, without.stderr
    assert "client-cert" not in upstream_headers(without.stdout.encode())
    with_cert = curl(
        "--cacert", str(material.root), "--cert", str(client.cert), "--key", str(client.key), url
    )
    assert upstream_headers(with_cert.stdout.encode())["client-cert"] == f":{der_b64(client)}:"


def get(setup: tuple[Edge, list[int], int], material: Material, path: str) -> tuple[int, str]:
    _, ports, _ = setup
    result = curl(
        "-i",
        "--cacert",
        str(material.root),
        "--cert",
        str(material.a.cert),
        "--key",
        str(material.a.key),
        f"https://localhost:{ports[1]}{path}",
    )
    status = int(result.stdout.split(" ", 2)[1]) if result.stdout.startswith("HTTP/") else 0
    return status, result.stdout


def test_upstream_tls_verified_with_a_ca_file(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    status, text = get(setup, material, "/up/good/x")
    assert status == 200, text
    assert upstream_headers(text.encode())["x-forwarded-proto"] == "https"


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/up/system", "upstream TLS certificate not trusted: self-signed certificate in"),
        ("/up/wrongname", "upstream TLS certificate not trusted: Hostname mismatch"),
        ("/up/nocert", "upstream"),
        ("/up/badverify", "not 'elsewhere.test' (tls.verify_name)"),
    ],
)
def test_upstream_tls_failures_are_502_with_a_clear_detail(
    setup: tuple[Edge, list[int], int], material: Material, path: str, detail: str
) -> None:
    status, text = get(setup, material, path)
    assert status == 502, text
    assert detail in text


def test_plain_http_to_a_tls_upstream_is_a_502(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    status, _ = get(setup, material, "/up/plain")
    assert status == 502


def test_upstream_mtls_presents_the_cluster_certificate(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    status, text = get(setup, material, "/up/mtls/x")
    assert status == 200, text


def test_health_checks_speak_tls(
    setup: tuple[Edge, list[int], int], checked_upstream: Upstream
) -> None:
    _, _, admin = setup
    # Only the checks reach this upstream; it accepts a connection only after a good TLS
    # handshake.
    accepted = checked_upstream.server.accepted  # type: ignore[attr-defined]
    wait_for(lambda: len(accepted) >= 3, what="three health checks over TLS")
    key = (
        f'backhaul_endpoint_health{{cluster="checked",endpoint="{checked_upstream.address}",'
        'state="healthy"}'
    )
    wait_for(lambda: metrics(admin).get(key) == 1, what="the TLS health check to pass")


def test_routes_match_the_client_certificate(
    setup: tuple[Edge, list[int], int], material: Material, client: Pair
) -> None:
    _, ports, _ = setup
    url = f"https://localhost:{ports[1]}/whoami"
    root = ["--cacert", str(material.root)]
    assert curl(*root, "--cert", str(client.cert), "--key", str(client.key), url).stdout == (
        "client-1\n"
    )
    other = curl(*root, "--cert", str(material.a.cert), "--key", str(material.a.key), url)
    assert other.stdout == "someone\n"
    assert curl(*root, url).stdout == "anonymous\n"


def test_upstream_verify_name_differs_from_sni(
    setup: tuple[Edge, list[int], int], material: Material
) -> None:
    status, text = get(setup, material, "/up/verifyname/x")
    assert status == 200, text
