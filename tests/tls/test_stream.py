"""The downstream TLS driver (``backhaul.edge.tlsstream``) on real loopback sockets with
uvloop, under a small application protocol, and through the edge with curl: back pressure
both ways (the TCP transport's ``pause_writing`` reaches the application; the
application's ``pause_reading`` stops the bytes at the client), the handshake deadline with
a clock the test gives, close with close_notify, the end of input, what ``get_extra_info``
answers, and large bodies, keep-alive and pipelining through the edge."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop

from backhaul.edge.tls import (
    _CLIENT_CLOSED,
    _OTHER,
    _REASON_INDEX,
    _REASONS,
    _TIMEOUT,
    HANDSHAKE_FAILURES,
    server_context,
)
from backhaul.edge.tlsstream import TlsListener, TlsStreamFactory
from tests.edge.harness import Edge, Upstream
from tests.tls.clients import curl, tls_edge
from tests.tls.material import Material

DEADLINE = 20.0  # seconds any wait of these tests may take
CHUNK = 64 * 1024


class App(asyncio.Protocol):
    """What the data plane's HttpConnection is to the driver, reduced to what the tests
    watch: every callback is recorded; ``on_data`` decides what to do with input."""

    def __init__(self, on_data: Callable[[App, bytes], None] | None = None) -> None:
        self.transport: Any = None
        self.received = bytearray()
        self.events: list[str] = []
        self.on_data = on_data
        self.keep_open_on_eof = False
        self.lost = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.on_data is not None:
            self.on_data(self, data)

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.keep_open_on_eof

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set()


class Served:
    """A TLS driver listener on a loopback port, its apps in order of connection."""

    def __init__(self, material: Material, loop: asyncio.AbstractEventLoop) -> None:
        config = SimpleNamespace(
            min_version="1.2", session_tickets=True, client_auth=None, handshake_timeout=5.0
        )
        pair = (str(material.localhost.cert), str(material.localhost.key), None)
        context = server_context(config, pair)
        self.counts = [0] * (len(HANDSHAKE_FAILURES) + 1)
        reasons = {name: _REASON_INDEX[reason] for name, reason in _REASONS.items()}
        self.listener = TlsListener(
            context, self.counts, 5.0, loop, reasons, _OTHER, _TIMEOUT, _CLIENT_CLOSED
        )
        self.apps: list[App] = []
        self.on_data: Callable[[App, bytes], None] | None = None
        self.server: Any = None
        self.port = 0

    def app(self) -> App:
        app = App(self.on_data)
        self.apps.append(app)
        return app

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        factory = TlsStreamFactory(self.listener, self.app)
        self.server = await loop.create_server(factory, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]


async def until(condition: Callable[[], Any], what: str) -> None:
    """Let the loop run until ``condition()`` holds, within the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def run(material: Material, test: Callable[[Served], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        served = Served(material, loop)
        await served.start(loop)
        try:
            await asyncio.wait_for(test(served), DEADLINE * 2)
        finally:
            for app in served.apps:
                if app.transport is not None:
                    app.transport.abort()
            served.server.close()

    uvloop.run(main())


def client_context(material: Material) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(material.root))


def test_the_tcp_transports_back_pressure_reaches_the_application(material: Material) -> None:
    """The application writes one chunk per loop pass while it may; the client does not
    read at first: the driver passes pause_writing on, and resume_writing once the client
    reads; every byte arrives in order."""
    total = 16 * 1024 * 1024
    block = bytes(range(256)) * (CHUNK // 256)

    async def test(served: Served) -> None:
        loop = asyncio.get_running_loop()
        sent = 0

        def pump() -> None:
            nonlocal sent
            app = served.apps[0]
            if app.transport.is_closing() or sent >= total:
                return
            paused = app.events.count("pause_writing") > app.events.count("resume_writing")
            if not paused:
                app.transport.write(block)
                sent += len(block)
            loop.call_soon(pump)

        reader, writer = await asyncio.open_connection(
            "127.0.0.1", served.port, ssl=client_context(material), server_hostname="localhost"
        )
        await until(lambda: served.apps and served.apps[0].transport, "the application")
        loop.call_soon(pump)
        await until(lambda: "pause_writing" in served.apps[0].events, "pause_writing")
        assert sent < total
        buffered = served.apps[0].transport.get_write_buffer_size()
        assert buffered > 0
        digest, got = hashlib.sha256(), 0
        while got < total:
            data = await reader.read(1 << 20)
            assert data
            digest.update(data)
            got += len(data)
        assert got == total
        assert digest.hexdigest() == hashlib.sha256(block * (total // CHUNK)).hexdigest()
        assert "resume_writing" in served.apps[0].events
        writer.close()
        await served.apps[0].lost.wait()

    run(material, test)


def test_pause_reading_stops_the_client_and_resume_delivers_the_rest(material: Material) -> None:
    """The application pauses reading after its first bytes: it gets nothing more while
    paused, until the client cannot send any more (its sends time out: the kernel's buffers
    are full), and everything once it resumes."""
    total = 48 * 1024 * 1024
    payload = hashlib.sha256(b"seed").digest() * (total // 32)

    async def test(served: Served) -> None:
        loop = asyncio.get_running_loop()
        blocked: asyncio.Future[None] = loop.create_future()
        resumed = threading.Event()

        def pause_once(app: App, data: bytes) -> None:
            if "paused" not in app.events:
                app.events.append("paused")
                app.transport.pause_reading()

        def client() -> bool:
            raw = socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE)
            with client_context(material).wrap_socket(raw, server_hostname="localhost") as tls:
                tls.settimeout(0.5)  # a send that makes no progress for this long: blocked
                was_blocked = False
                view = memoryview(payload)
                for at in range(0, total, CHUNK):
                    while True:
                        try:
                            tls.sendall(view[at : at + CHUNK])
                            break
                        except TimeoutError:  # retried with the same bytes, as TLS needs
                            if not was_blocked:
                                was_blocked = True
                                loop.call_soon_threadsafe(blocked.set_result, None)
                                resumed.wait(DEADLINE)
                                tls.settimeout(DEADLINE)
                tls.recv(1)  # the server closes once it has everything
                return was_blocked

        served.on_data = pause_once
        sender = asyncio.ensure_future(asyncio.to_thread(client))
        await until(lambda: served.apps and "paused" in served.apps[0].events, "the pause")
        app = served.apps[0]
        at_pause = len(app.received)
        await asyncio.wait_for(blocked, DEADLINE)
        assert len(app.received) == at_pause < total
        assert not app.transport.is_reading()
        app.transport.resume_reading()
        resumed.set()
        await until(lambda: len(app.received) >= total, "the whole upload")
        assert bytes(app.received) == payload
        app.transport.close()
        assert await sender

    run(material, test)


def blocking_client(
    material: Material, port: int, send: bytes, half_close: bool
) -> tuple[bytes, str]:
    """Send ``send`` over TLS (then a TCP FIN when ``half_close``), read to the end: what
    came, and how it ended (``close_notify`` or the error)."""
    context = client_context(material)
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    with context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls:
        tls.sendall(send)
        if half_close:
            socket.socket.shutdown(tls, socket.SHUT_WR)  # a TCP FIN under the TLS
        data = b""
        try:
            while chunk := tls.recv(65536):
                data += chunk
        except ssl.SSLError as exc:
            return data, type(exc).__name__
        return data, "close_notify"


def test_close_sends_what_is_left_then_close_notify(material: Material) -> None:
    async def test(served: Served) -> None:
        def answer(app: App, data: bytes) -> None:
            if app.received.endswith(b"\n"):
                app.transport.writelines([b"hello ", bytes(app.received)])
                app.transport.close()
                assert app.transport.is_closing()
                app.transport.write(b"not sent")  # after close: dropped

        served.on_data = answer
        data, end = await asyncio.to_thread(
            blocking_client, material, served.port, b"world\n", False
        )
        assert (data, end) == (b"hello world\n", "close_notify")
        await served.apps[0].lost.wait()
        assert served.apps[0].events == ["made", "lost"]
        assert served.counts[-1] == 1  # one completed handshake, no failures
        assert sum(served.counts[:-1]) == 0

    run(material, test)


def test_the_end_of_input_reaches_the_application_which_may_still_answer(
    material: Material,
) -> None:
    async def test(served: Served) -> None:
        loop = asyncio.get_running_loop()

        def later(app: App, data: bytes) -> None:
            app.keep_open_on_eof = True

        def answer_after_eof() -> None:
            app = served.apps[0]
            app.transport.write(b"answer to " + bytes(app.received))
            app.transport.close()

        served.on_data = later
        client = asyncio.ensure_future(
            asyncio.to_thread(blocking_client, material, served.port, b"question", True)
        )
        await until(lambda: served.apps and "eof" in served.apps[0].events, "eof_received")
        assert not served.apps[0].transport.is_closing()  # the application kept it open
        loop.call_soon(answer_after_eof)
        assert await client == (b"answer to question", "close_notify")

    run(material, test)


def test_without_an_answer_the_end_of_input_closes(material: Material) -> None:
    async def test(served: Served) -> None:
        data, end = await asyncio.to_thread(
            blocking_client, material, served.port, b"question", True
        )
        assert (data, end) == (b"", "close_notify")
        assert served.apps[0].events == ["made", "eof", "lost"]
        assert served.apps[0].received == b"question"

    run(material, test)


def test_the_handshake_deadline_follows_the_clock_it_is_given(material: Material) -> None:
    async def test(served: Served) -> None:
        loop = asyncio.get_running_loop()
        listener = served.listener
        silent = socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE)
        silent.setblocking(False)
        try:
            await until(lambda: listener.statistics()["handshaking"] == 1, "the connection")
            assert listener.expire(loop.time()) == 0  # young: it stays
            assert listener.expire(loop.time() + 5.1) == 1
            assert listener.statistics()["handshaking"] == 0
            assert served.counts[_TIMEOUT] == 1
            try:  # the edge's end of it is gone: the client reads the end (or a reset)
                assert await asyncio.wait_for(loop.sock_recv(silent, 100), DEADLINE) == b""
            except ConnectionResetError:
                pass
        finally:
            silent.close()
        assert served.apps == []  # no application for a connection without a handshake

    run(material, test)


def test_extra_info_answers_what_the_data_plane_and_tls_ask(material: Material) -> None:
    async def test(served: Served) -> None:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", served.port, ssl=client_context(material), server_hostname="localhost"
        )
        await until(lambda: served.apps and served.apps[0].transport, "the application")
        transport = served.apps[0].transport
        local = writer.get_extra_info("sockname")
        assert transport.get_extra_info("peername") == local
        assert transport.get_extra_info("sockname") == writer.get_extra_info("peername")
        assert isinstance(transport.get_extra_info("socket"), (socket.socket, object))
        sslobj = transport.get_extra_info("ssl_object")
        assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
        assert sslobj.selected_alpn_protocol() is None  # the client offered none
        assert transport.get_extra_info("peercert") is None  # no client certificate
        assert transport.get_extra_info("sslcontext") is not None
        assert transport.get_extra_info("cipher")[1] in ("TLSv1.2", "TLSv1.3")
        assert transport.get_extra_info("nothing", "default") == "default"
        transport.set_write_buffer_limits(high=1 << 20)
        assert transport.get_write_buffer_limits()[1] == 1 << 20
        writer.close()
        await served.apps[0].lost.wait()
        assert transport.is_closing()

    run(material, test)


# -- through the edge ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge(
    material: Material, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Edge, int, Upstream]]:
    m = material
    with Upstream() as upstream:
        listeners: list[dict[str, object]] = [
            {"tls": {"cert": str(m.localhost.cert), "key": str(m.localhost.key)}}
        ]
        clusters = {"app": {"endpoints": [upstream.address]}}
        routes = [{"proxy": {"cluster": "app"}}]
        tmp = tmp_path_factory.mktemp("stream")
        with tls_edge(tmp, listeners, routes=routes, clusters=clusters) as (running, ports, _):
            yield running, ports[0], upstream


def test_large_bodies_both_ways_through_the_edge(
    edge: tuple[Edge, int, Upstream], material: Material, tmp_path: Any
) -> None:
    _, port, _ = edge
    size = 32 * 1024 * 1024
    root = str(material.root)
    url = f"https://127.0.0.1:{port}"
    out = curl("--cacert", root, "-o", "/dev/null", "-w", "%{size_download}", f"{url}/bytes/{size}")
    assert out.returncode == 0 and out.stdout == str(size), out.stderr
    upload = tmp_path / "upload"
    upload.write_bytes(hashlib.sha256(b"up").digest() * (size // 32))
    out = curl("--cacert", root, "--data-binary", f"@{upload}", f"{url}/sink")
    assert out.returncode == 0, out.stderr
    assert f'"bytes": {size}' in out.stdout
    assert hashlib.sha256(upload.read_bytes()).hexdigest() in out.stdout


def test_keep_alive_and_pipelining_over_tls(
    edge: tuple[Edge, int, Upstream], material: Material
) -> None:
    _, port, _ = edge
    request = b"GET /bytes/%d HTTP/1.1\r\nHost: localhost\r\n\r\n"
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    with client_context(material).wrap_socket(raw, server_hostname="localhost") as tls:
        answers = b""
        for n in (10, 20000):  # one after the other on the connection
            tls.sendall(request % n)
            answers += read_answer(tls, n)
        # three at once: answered in order
        tls.sendall(request % 1 + request % 300000 + request % 2)
        answers += read_answer(tls, 1) + read_answer(tls, 300000) + read_answer(tls, 2)
    assert answers.count(b"HTTP/1.1 200 OK") == 5


def read_answer(tls: ssl.SSLSocket, size: int) -> bytes:
    """One response of ``size`` body bytes (Content-Length framing), whole."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(1)
        assert chunk, head
        head += chunk
    assert b"content-length: %d\r\n" % size in head.lower(), head
    body = b""
    while len(body) < size:
        chunk = tls.recv(size - len(body))
        assert chunk
        body += chunk
    assert body == b"x" * size
    return head
