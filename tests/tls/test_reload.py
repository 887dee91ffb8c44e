"""Certificates that change while the edge serves: files re-read on SIGHUP (a bad set is
refused and the old one kept), no request lost meanwhile; internal-CA certificates issued
on a fresh machine and renewed before expiry, with a clock the test drives."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from backhaul.config import load_text
from backhaul.edge.settings import freeze, thaw
from backhaul.edge.tls import EdgeTls
from backhaul.edge.tls_supervisor import InternalCertificates, TlsSupervision
from backhaul.pki import CaStore
from tests.edge.harness import BACKHAUL, Upstream, free_port, wait_port
from tests.tls.clients import curl, tls_edge, tls_get, wait_for
from tests.tls.material import Material


def serial_of(der: bytes | None) -> int:
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_sighup_reloads_certificates_without_losing_requests(
    material: Material, tmp_path: Path
) -> None:
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(material.localhost.cert, cert)
    shutil.copy(material.localhost.key, key)
    listeners: list[dict[str, object]] = [{"tls": {"cert": str(cert), "key": str(key)}}]
    routes = [{"respond": {"body": "ok\n"}}]
    context = ssl.create_default_context(cafile=str(material.root))
    with tls_edge(tmp_path, listeners, workers=2, routes=routes) as (edge, ports, _):
        port = ports[0]
        old_serial = material.localhost.leaf.serial_number
        assert serial_of(tls_get(port, context)[1].cert) == old_serial
        # A keep-alive connection made before the reload.
        kept = context.wrap_socket(
            __import__("socket").create_connection(("127.0.0.1", port), timeout=10),
            server_hostname="localhost",
        )
        request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
        kept.sendall(request)
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")

        failures: list[str] = []
        done = 0
        stop = threading.Event()

        def load() -> None:
            nonlocal done
            for _ in range(2000):  # bounded; stops when the test says so
                if stop.is_set():
                    return
                try:
                    body, _ = tls_get(port, context)
                    if not body.startswith(b"HTTP/1.1 200"):
                        failures.append(repr(body[:80]))
                except (OSError, ssl.SSLError) as exc:
                    failures.append(repr(exc))
                done += 1

        loader = threading.Thread(target=load)
        loader.start()
        try:
            assert edge.proc is not None
            for i in range(3):
                fresh = material.leaf(f"fresh-{i}", ["localhost", "127.0.0.1"])
                shutil.copy(fresh.cert, cert)
                shutil.copy(fresh.key, key)
                edge.proc.send_signal(signal.SIGHUP)
                # Each of the two workers logs its reload once.
                wait_for(
                    lambda n=2 * (i + 1): (
                        edge.stderr_path.read_text().count("certificates reloaded") >= n
                    ),
                    what="both workers to reload",
                )
                assert serial_of(tls_get(port, context)[1].cert) == fresh.leaf.serial_number
            before = done
            wait_for(lambda: done >= before + 20, what="requests after the reloads")
        finally:
            stop.set()
            loader.join(30)
        assert failures == [], failures[:5]
        # The connection made before the reloads still works on its old session.
        kept.sendall(request)
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        kept.close()

        # A bad set (key of another certificate) is refused; the last good one keeps serving.
        served = fresh.leaf.serial_number
        shutil.copy(material.a.key, key)
        edge.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                "new certificates refused, the old ones still serve" in edge.stderr_path.read_text()
                and "does not match" in edge.stderr_path.read_text()
            ),
            what="the refusal in the log",
        )
        wait_for(
            lambda: edge.stderr_path.read_text().count("new certificates refused") >= 2,
            what="both workers to refuse",
        )
        assert {serial_of(tls_get(port, context)[1].cert) for _ in range(8)} == {served}


def _internal_config(state: Path, lifetime: str = "168h") -> str:
    return f"""
listeners:
  - name: web
    address: 127.0.0.1:8443
    tls: {{internal: true, state_dir: {state}, lifetime: {lifetime}}}
routes:
  - match: {{host: api.internal}}
    respond: {{body: api}}
  - respond: {{body: ok}}
"""


def memory_handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> list:
    """A TLS connection through memory BIOs (no socket): the client and server objects,
    after the handshake, and the four BIOs."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client.wrap_bio(c_in, c_out, server_hostname=name)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(20):
        for i, obj in enumerate((cli, srv)):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done):
            break
    assert all(done)
    return [cli, srv, c_in, c_out, s_in, s_out]


def roundtrip(pair: list, data: bytes) -> bytes:
    cli, srv, c_in, c_out, s_in, s_out = pair
    cli.write(data)
    s_in.write(c_out.read())
    got = srv.read(1024)
    srv.write(got.upper())
    c_in.write(s_out.read())
    return bytes(cli.read(1024))


def test_internal_certificates_renew_before_expiry(tmp_path: Path) -> None:
    state = tmp_path / "state"
    model = load_text(_internal_config(state))
    config = thaw(freeze(model))
    supervision = TlsSupervision.before_fork(config)
    assert supervision is not None
    internal = supervision.internal
    t0 = datetime.now(UTC)
    clock = [t0]
    assert internal.ensure(t0) == ["web"]  # a fresh machine: CA created, leaf issued
    store = CaStore(state)
    assert store.root_key_path.exists()
    edge_tls = EdgeTls(config, supervision.tickets, clock=lambda: clock[0])
    server = edge_tls.server("web")
    assert server is not None
    client = ssl.create_default_context(cafile=str(store.root_cert_path))
    first = memory_handshake(server.context, client, "api.internal")
    leaf = x509.load_der_x509_certificate(first[0].getpeercert(binary_form=True))
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"api.internal", "localhost"}
    assert internal.ensure(t0 + timedelta(days=4)) == []  # more than a third left
    # The supervisor's tick, with the test's clock: due at 5 days of 7.
    generation = supervision.tickets.cert_generation
    clock[0] = t0 + timedelta(days=5)
    supervision.tick(1e9, clock[0])
    assert supervision.tickets.cert_generation == generation + 1
    edge_tls.tick(1e9)  # the worker's tick sees the generation and reloads
    # Issued at the test's clock (days ahead of the real one): check it at that time.
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    second = memory_handshake(server.context, unverified, "localhost")
    renewed = x509.load_der_x509_certificate(second[0].getpeercert(binary_form=True))
    assert renewed.serial_number != leaf.serial_number
    assert renewed.not_valid_after_utc > leaf.not_valid_after_utc
    root = x509.load_pem_x509_certificate(store.root_cert_path.read_bytes())
    PolicyBuilder().store(Store([root])).time(clock[0]).build_server_verifier(
        x509.DNSName("localhost")
    ).verify(renewed, [])
    # The connection made before the renewal goes on.
    assert roundtrip(first, b"still here") == b"STILL HERE"


def test_internal_names_follow_the_routes_and_listener() -> None:
    model = load_text(_internal_config(Path("/nonexistent")))
    assert InternalCertificates(thaw(freeze(model))).wanted[0][1] == (
        "api.internal",
        "localhost",
        "127.0.0.1",
    )


def test_quick_mode_with_the_internal_ca_serves_curl_with_verification(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = dict(os.environ, BACKHAUL_STATE_DIR=str(tmp_path / "state"), PYTHONUNBUFFERED="1")
    with Upstream() as up:
        err = open(tmp_path / "err.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                *BACKHAUL,
                "serve",
                "--to",
                f"http://{up.address}",
                "--listen",
                f"127.0.0.1:{port}",
                "--tls-internal",
                "-w",
                "1",
                "--access-log",
                "off",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        try:
            wait_port(port, proc=proc)
            root = subprocess.run(
                [*BACKHAUL, "ca", "root"], env=env, capture_output=True, text=True, timeout=30
            ).stdout
            (tmp_path / "root.pem").write_text(root)
            result = curl("--cacert", str(tmp_path / "root.pem"), f"https://localhost:{port}/x")
            assert result.returncode == 0, result.stderr
            assert '"path": "/x"' in result.stdout
            result = curl("--cacert", str(tmp_path / "root.pem"), f"https://127.0.0.1:{port}/")
            assert result.returncode == 0, result.stderr
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
            err.close()
        log = (tmp_path / "err.log").read_text()
        assert "created the built-in CA" in log and "https://127.0.0.1" in log


def test_ticket_key_rotation_reaches_the_contexts(material: Material, tmp_path: Path) -> None:
    """Two workers' contexts built apart share tickets through the shared key; after a
    rotation, a ticket minted before it gets a full handshake, a new one resumes."""
    text = f"""
listeners:
  - name: web
    address: 127.0.0.1:8443
    tls: {{cert: {material.localhost.cert}, key: {material.localhost.key}}}
routes: [{{respond: {{body: ok}}}}]
"""
    config = thaw(freeze(load_text(text)))
    supervision = TlsSupervision.before_fork(config)
    assert supervision is not None
    one = EdgeTls(config, supervision.tickets).server("web")
    two = EdgeTls(config, supervision.tickets).server("web")
    assert one is not None and two is not None and one.ticket_keys_shared
    client = ssl.create_default_context(cafile=str(material.root))
    client.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is there after the handshake

    def connect(server: ssl.SSLContext, session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        cli = client.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
        srv = server.wrap_bio(s_in, s_out, server_side=True)
        for _ in range(20):
            for obj in (cli, srv):
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        return cli

    old = connect(one.context).session
    assert connect(two.context, old).session_reused  # minted by one, read by two
    supervision.tickets.rotate(0.0)
    one.install_ticket_key()
    two.install_ticket_key()
    assert not connect(two.context, old).session_reused  # the old key is gone
    fresh = connect(two.context).session
    assert connect(one.context, fresh).session_reused
