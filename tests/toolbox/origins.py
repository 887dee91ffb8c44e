"""Loopback servers for the application-layer toolbox tests (curl, api run, bench).

- :class:`Origin`: an HTTP/1.1 and HTTP/2 (h2c prior knowledge, or ALPN on TLS) server in a
  thread of its own, on 127.0.0.1 port 0. It counts every request it answers, and can stall:
  every ``stall_every`` seconds after its first request, answers are held for ``stall_for``
  seconds (all of them, as a stop-the-world pause would).
- :func:`make_ca`: a test CA and a server certificate for ``origin.test``, ``localhost`` and
  127.0.0.1, made with ``cryptography``.
- :class:`StubResolver`: a DNS server on loopback (dnspython messages) that knows a few names
  and answers NXDOMAIN for every other one, so no test ever asks the machine's resolver.

Paths the origin serves: ``/bytes/N`` (N bytes of "a"), ``/binary`` (bytes 0 to 255),
``/status/NNN``, ``/json`` (a JSON document), ``/echo`` (method, target, headers and body back
as JSON), ``/redirect/N`` (302 to ``/redirect/N-1``, then ``/json``), ``/hang`` (never
answers), ``/close`` (answers with ``Connection: close``), anything else 200 ``hello``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import h2.config
import h2.connection
import h2.events
import httptools
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backhaul.tools.loadgen import h2_send_pending

DOC = {"name": "Ada", "id": 7, "items": [{"sku": "a1", "price": 3}, {"sku": "b2", "price": 5}]}
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def respond(method: str, target: str, headers: dict[str, str], body: bytes) -> tuple:
    """(status, headers, body, close) for one request."""
    path = target.split("?", 1)[0]
    if path.startswith("/bytes/"):
        size = int(path.rsplit("/", 1)[1])
        return 200, [("content-type", "application/octet-stream")], b"a" * size, False
    if path == "/binary":
        return 200, [("content-type", "application/octet-stream")], bytes(range(256)), False
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        return code, [("content-type", "text/plain")], f"status {code}\n".encode(), False
    if path == "/json":
        return (
            200,
            [("content-type", "application/json"), ("x-request-id", "req-42")],
            json.dumps(DOC).encode(),
            False,
        )
    if path == "/echo":
        doc = {"method": method, "target": target, "headers": headers, "body": body.decode()}
        return 200, [("content-type", "application/json")], json.dumps(doc).encode(), False
    if path.startswith("/redirect/"):
        left = int(path.rsplit("/", 1)[1])
        where = f"/redirect/{left - 1}" if left > 1 else "/json"
        return 302, [("location", where)], b"", False
    if path == "/close":
        return 200, [("content-type", "text/plain")], b"bye\n", True
    return 200, [("content-type", "text/plain")], b"hello\n", False


def _head(status: int, headers: list[tuple[str, str]], body: bytes, close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"content-length: {len(body)}")
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


_REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 404: "Not Found", 500: "Server Error"}


class _Server(asyncio.Protocol):
    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.mode: str | None = None
        self.buffer = b""
        self.parser = httptools.HttpRequestParser(self)
        self.h2: h2.connection.H2Connection | None = None
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.pending: dict[int, bytes] = {}  # HTTP/2 answer bytes waiting for window
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = bytearray()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._start_h2()
        self.origin.connections += 1

    def _start_h2(self) -> None:
        self.mode = "h2"
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        if self.mode is None:
            self.buffer += data
            if len(self.buffer) < len(H2_PREFACE) and H2_PREFACE.startswith(self.buffer):
                return
            data, self.buffer = self.buffer, b""
            if data.startswith(H2_PREFACE):
                self._start_h2()
            else:
                self.mode = "h1"
        if self.mode == "h2":
            self._h2_data(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    # HTTP/1.1
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        target, headers, body = self.url.decode(), self.headers, bytes(self.body)
        self.url, self.headers, self.body = b"", {}, bytearray()
        self.origin.answer(self, 0, method, target, headers, body)

    # HTTP/2
    def _h2_data(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except Exception:
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = (dict(event.headers), bytearray())
            elif isinstance(event, h2.events.DataReceived):
                self.streams[event.stream_id][1].extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                for stream_id in [event.stream_id] if event.stream_id else list(self.pending):
                    self._flush(stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                headers, body = self.streams.pop(event.stream_id)
                self.origin.answer(
                    self,
                    event.stream_id,
                    headers.get(":method", "GET"),
                    headers.get(":path", "/"),
                    {
                        **{k: v for k, v in headers.items() if not k.startswith(":")},
                        "host": headers.get(":authority", ""),
                    },
                    bytes(body),
                )
        self.transport.write(self.h2.data_to_send())

    def send(self, stream_id: int, method: str, answer: tuple) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        status, headers, body, close = answer
        sent_body = b"" if method == "HEAD" else body
        if stream_id == 0:
            self.transport.write(_head(status, headers, body, close) + sent_body)
            if close:
                self.transport.close()
            return
        h2_headers = [(":status", str(status)), *headers, ("content-length", str(len(body)))]
        self.h2.send_headers(stream_id, h2_headers, end_stream=not sent_body)
        if sent_body:
            self.pending[stream_id] = sent_body
            self._flush(stream_id)
        self.transport.write(self.h2.data_to_send())

    def _flush(self, stream_id: int) -> None:
        h2_send_pending(self.h2, self.pending, stream_id)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class Origin:
    """An HTTP origin on loopback in its own thread and loop (see the module docstring)."""

    def __init__(
        self,
        tls: ssl.SSLContext | None = None,
        stall_every: float = 0.0,
        stall_for: float = 0.0,
    ) -> None:
        self.tls = tls
        self.stall_every = stall_every
        self.stall_for = stall_for
        self.requests = 0
        self.by_path: dict[str, int] = {}
        self.stalled_answers = 0
        self.connections = 0
        self.first_request: float | None = None
        self.last_request: tuple[str, str, dict, bytes] | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = threading.Event()
        self.port = 0
        self.server: asyncio.base_events.Server | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Server(self), "127.0.0.1", 0, ssl=self.tls)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.started.set()
        self.loop.run_forever()
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        self.loop.close()

    def __enter__(self) -> Origin:
        self.thread.start()
        if not self.started.wait(10):
            raise RuntimeError("origin did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def url(self, path: str = "/", scheme: str | None = None, host: str = "127.0.0.1") -> str:
        scheme = scheme or ("https" if self.tls else "http")
        return f"{scheme}://{host}:{self.port}{path}"

    def answer(
        self, conn: _Server, stream_id: int, method: str, target: str, headers: dict, body: bytes
    ) -> None:
        path = target.split("?", 1)[0]
        self.requests += 1
        self.by_path[path] = self.by_path.get(path, 0) + 1
        self.last_request = (method, target, headers, body)
        if path == "/hang":
            return
        now = time.monotonic()
        if self.first_request is None:
            self.first_request = now
        reply = respond(method, target, headers, body)
        hold = self._hold(now)
        if hold > 0:
            self.stalled_answers += 1
            self.loop.call_later(hold, conn.send, stream_id, method, reply)
        else:
            conn.send(stream_id, method, reply)

    def _hold(self, now: float) -> float:
        """How long an answer made at ``now`` waits: until the end of a stall window."""
        if not self.stall_every:
            return 0.0
        phase = (now - self.first_request) % self.stall_every
        start = self.stall_every - self.stall_for  # each period ends with its stall
        return self.stall_every - phase if phase >= start else 0.0


# ----------------------------------------------------------------------------- the test CA


@dataclass
class CertAuthority:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        ctx.set_alpn_protocols(list(alpn))
        return ctx


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(directory: Path) -> CertAuthority:
    """A CA, a server certificate (origin.test, localhost, 127.0.0.1) and a client one."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("backhaul test CA"))
        .issuer_name(_name("backhaul test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common: str, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return (
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    server = leaf(
        "origin.test",
        [
            x509.DNSName("origin.test"),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
    )
    client = leaf("client.test", [])
    paths = CertAuthority(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )
    paths.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server[0])
    paths.server_key.write_bytes(server[1])
    paths.client_cert.write_bytes(client[0])
    paths.client_key.write_bytes(client[1])
    return paths


# ----------------------------------------------------------------------------- stub resolver


class StubResolver:
    """A UDP DNS server on 127.0.0.1: A records for ``names``, NXDOMAIN for anything else."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = {name.rstrip(".").lower() + ".": address for name, address in names.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries: list[str] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            reply = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().lower()
            self.queries.append(name)
            address = self.names.get(name)
            if address is None:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == 1:  # A
                reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", address))
            self.sock.sendto(reply.to_wire(), peer)

    def __enter__(self) -> StubResolver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join(5)
        self.sock.close()
