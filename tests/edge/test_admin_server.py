"""The admin listener's HTTP server with an application that answers asynchronously:
pipelined requests answered in order, bodies, deadlines while an answer is being made."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from backhaul.admin.server import AdminServer, Request, Response, serve_admin
from tests.edge.harness import parse_responses


class SlowEcho:
    """Answers ``/slow`` only when released, everything else at once, echoing the body."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.release = asyncio.Event()
        self.loop = loop
        self.seen: list[str] = []

    async def __call__(self, request: Request) -> Response:
        self.seen.append(request.path)
        if request.path == "/slow":
            await self.release.wait()
        doc = {
            "path": request.path,
            "query": request.query,
            "body": request.body.decode(),
            "type": request.headers.get("content-type"),
        }
        return Response(200, json.dumps(doc).encode())


@pytest.fixture
def server() -> Iterator[tuple[AdminServer, SlowEcho, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app = SlowEcho(loop)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    srv = asyncio.run_coroutine_threadsafe(
        serve_admin(sock, app, read_timeout=0.5, idle_timeout=5), loop
    ).result(5)
    yield srv, app, loop
    asyncio.run_coroutine_threadsafe(srv.aclose(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def read_until(sock: socket.socket, count: int) -> bytes:
    sock.settimeout(10)
    data = b""
    while data.count(b"HTTP/1.1 ") < count or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_pipelined_requests_are_answered_in_order(
    server: tuple[AdminServer, SlowEcho, asyncio.AbstractEventLoop],
) -> None:
    srv, app, loop = server
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(
            b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /fast?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/yaml\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )
        # the slow answer is awaited; the next request waits its turn
        loop.call_soon_threadsafe(app.release.set)
        responses = parse_responses(read_until(s, 2))
    assert [json.loads(body)["path"] for _, _, body in responses] == ["/slow", "/fast"]
    fast = json.loads(responses[1][2])
    assert fast == {"path": "/fast", "query": "x=1", "body": "hello", "type": "application/yaml"}


def test_a_bad_request_after_a_good_one_is_refused_after_its_answer(
    server: tuple[AdminServer, SlowEcho, asyncio.AbstractEventLoop],
) -> None:
    srv, app, loop = server
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nBROKEN\r\n\r\n")
        loop.call_soon_threadsafe(app.release.set)
        s.settimeout(10)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    (ok, _, body), (refused, headers, _) = parse_responses(data)
    assert (ok, json.loads(body)["path"], refused) == (200, "/slow", 400)
    assert (
        headers["connection"] == "close" and headers["content-type"] == "application/problem+json"
    )
