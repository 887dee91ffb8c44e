"""The admin listener's HTTP/1.1 server: requests in, an application's responses out.

An ``asyncio.Protocol`` with httptools callbacks, with the edge's habits: a bound on each
request's size (request line, headers and body), a deadline on every read, keep-alive and
pipelining (requests are answered in order, one at a time: reading pauses while one is being
answered), and errors as ``application/problem+json`` (400 bad HTTP, 408 too slow, 431 too
large, 500 a defect, logged with its traceback).

What a request means is the application's business: an async callable taking a
:class:`Request` and returning a :class:`Response` (:class:`MetricsApp` answers ``/metrics``
and ``/healthz``; :mod:`backhaul.admin.api` the whole admin API). :func:`serve_admin` serves
one on a listening socket that the caller bound (the edge's supervisor binds the admin
address once, without ``SO_REUSEPORT``); :func:`start_admin` binds one itself.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import httptools

from backhaul.admin.metrics import CONTENT_TYPE
from backhaul.http import REASONS, problem_response

__all__ = [
    "AdminServer",
    "App",
    "MetricsApp",
    "Request",
    "Response",
    "problem",
    "serve_admin",
    "start_admin",
]

MAX_REQUEST_BYTES = 16 * 1024
"""Request line + headers + body of one admin request; beyond it: 431, then close."""
READ_TIMEOUT = 10.0
"""A request (head and body) must arrive within this many seconds of its first byte."""
IDLE_TIMEOUT = 60.0
"""A keep-alive connection with no request for this long is closed."""

_SERVER = b"backhaul-admin"
_IDLE, _READING, _CLOSED = range(3)
_PROBLEM = "application/problem+json"


class Request:
    """One admin request: method, path and query (split, undecoded), the headers (names in
    lower case; a repeated header keeps its last value) and the whole body."""

    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body


class Response:
    """An answer: status, body, media type and extra headers."""

    __slots__ = ("body", "headers", "media_type", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        media_type: str = "application/json",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.media_type = media_type
        self.headers = headers


App = Callable[[Request], Awaitable[Response]]


def problem(
    status: int, detail: str, headers: tuple[tuple[str, str], ...] = (), **extra: Any
) -> Response:
    """An ``application/problem+json`` answer (RFC 9457): ``type`` about:blank, ``title``
    the status phrase, ``detail`` what went wrong and what to do; ``extra`` members added."""
    doc: dict[str, Any] = {
        "type": "about:blank",
        "title": REASONS.get(status, b"Error").decode("ascii"),
        "status": status,
        "detail": detail,
        **extra,
    }
    return Response(status, json.dumps(doc, indent=1).encode() + b"\n", _PROBLEM, headers)


class _TooLarge(Exception):
    """Raised from a parser callback when a request passes the size bound."""


class _Stop(Exception):
    """Raised from a parser callback to stop parsing what follows a closing answer."""


class _Limits:
    __slots__ = ("idle_timeout", "max_request_bytes", "read_timeout")

    def __init__(self, max_request_bytes: int, read_timeout: float, idle_timeout: float):
        self.max_request_bytes = max_request_bytes
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout


class _Pending:
    """A parsed request waiting for its answer (``ready``: an answer made already, the
    refusal of a request that could not be read, sent after those before it)."""

    __slots__ = ("http10", "keep_alive", "ready", "request")

    def __init__(
        self, request: Request, keep_alive: bool, http10: bool, ready: Response | None = None
    ) -> None:
        self.request = request
        self.keep_alive = keep_alive
        self.http10 = http10
        self.ready = ready


class AdminConnection(asyncio.Protocol):
    """One admin client connection."""

    def __init__(self, owner: AdminServer) -> None:
        self.owner = owner
        self.limits = owner.limits
        self.loop = owner.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.state = _IDLE
        self.timer: asyncio.TimerHandle | None = None
        self.queue: collections.deque[_Pending] = collections.deque()
        self.runner: asyncio.Task[None] | None = None

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.owner.connections.add(self)
        self._arm(self.limits.idle_timeout)

    def data_received(self, data: bytes) -> None:
        if self.state == _CLOSED:
            return
        if self.state == _IDLE and not self.queue:
            self.state = _READING
            self._arm(self.limits.read_timeout)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish_then_close()  # this server switches no protocols
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _TooLarge):
                self._fail(
                    431,
                    f"an admin request may carry at most {self.limits.max_request_bytes}"
                    " bytes of request line, headers and body",
                )
            elif isinstance(exc.__context__, _Stop):
                pass  # the connection is closing; pipelined requests after it are dropped
            elif exc.__context__ is not None:
                self._bug(exc.__context__)
            else:
                self._fail(400, f"the request is not valid HTTP/1.1: {exc or type(exc).__name__}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
        self.transport = None
        self.owner.connections.discard(self)
        self.queue.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.runner is not None:
            self.runner.cancel()

    def pause_writing(self) -> None:
        # The client does not read its answers: stop reading its requests.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.state != _CLOSED and not self.queue:
            self.transport.resume_reading()

    # -- httptools callbacks -----------------------------------------------------------
    def _count(self, n: int) -> None:
        self.size += n
        if self.size > self.limits.max_request_bytes:
            raise _TooLarge

    def on_message_begin(self) -> None:
        if self.state == _CLOSED:
            raise _Stop
        self.url = b""
        self.headers = {}
        self.body = []
        self.size = 0
        if self.state == _IDLE:  # a pipelined request in the same read
            self.state = _READING
            self._arm(self.limits.read_timeout)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._count(len(body))
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.state == _CLOSED:
            return
        parser = self.parser
        path, _, query = self.url.decode("latin-1").partition("?")
        request = Request(parser.get_method().decode("latin-1"), path, query, self.headers, b"")
        request.body = b"".join(self.body)
        self.body = []
        pending = _Pending(request, parser.should_keep_alive(), parser.get_http_version() == "1.0")
        self.state = _IDLE
        if self.timer is not None:
            self.timer.cancel()  # no read deadline while the answer is being made
            self.timer = None
        self.queue.append(pending)
        if self.transport is not None:
            self.transport.pause_reading()
        if self.runner is None:
            self.runner = self.loop.create_task(self._answer_all())

    # -- answers ---------------------------------------------------------------------
    async def _answer_all(self) -> None:
        try:
            while self.queue and self.state != _CLOSED:
                pending = self.queue.popleft()
                response = pending.ready
                if response is None:
                    try:
                        response = await self.owner.app(pending.request)
                    except Exception as exc:
                        self._bug(exc)
                        return
                self._send(response, pending)
        finally:
            self.runner = None
        if self.state != _CLOSED and self.transport is not None:
            self.transport.resume_reading()
            if self.state == _IDLE:
                self._arm(self.limits.idle_timeout)

    def _send(self, response: Response, pending: _Pending) -> None:
        transport = self.transport
        if transport is None:
            return
        body = response.body
        head = [
            b"HTTP/1.1 %d %s" % (response.status, REASONS.get(response.status, b"Unknown")),
            b"Server: " + _SERVER,
            b"Content-Type: " + response.media_type.encode("latin-1"),
            b"Content-Length: %d" % len(body),
            b"Cache-Control: no-store",
        ]
        head += [f"{name}: {value}".encode("latin-1") for name, value in response.headers]
        if not pending.keep_alive:
            head.append(b"Connection: close")
        elif pending.http10:
            head.append(b"Connection: keep-alive")
        head.append(b"\r\n")
        data = b"\r\n".join(head)
        transport.write(data if pending.request.method == "HEAD" else data + body)
        if not pending.keep_alive:
            self._close()

    def _finish_then_close(self) -> None:
        """Answer what is queued, then close (an upgrade request ends the connection)."""
        if self.queue and self.queue[-1].keep_alive:
            self.queue[-1].keep_alive = False
        elif not self.queue and self.runner is None:
            self._close()

    def _fail(self, status: int, detail: str, now: bool = False) -> None:
        """The request cannot be read: answer ``status`` and close (after answering the
        requests read before it, unless ``now``)."""
        if self.state == _CLOSED:
            return
        if self.runner is not None and not now:
            refusal = _Pending(
                Request("GET", "", "", {}, b""), False, False, problem(status, detail)
            )
            self.queue.append(refusal)
            if self.transport is not None:
                self.transport.pause_reading()
            self.state = _IDLE  # what follows the bad request is not read
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.parser = httptools.HttpRequestParser(self)
            return
        if self.transport is not None:
            self.transport.write(problem_response(status, detail, close=True, server=_SERVER))
        self._close()

    def _bug(self, exc: BaseException) -> None:
        """A defect in backhaul (not bad input): log its traceback, answer 500, close."""
        print("backhaul: internal error in the admin listener (please report):", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        self._fail(500, "the admin listener failed on this request; its log has the details", True)

    # -- deadlines and closing -------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(seconds, self._on_deadline)

    def _on_deadline(self) -> None:
        self.timer = None
        if self.state == _READING:
            self._fail(408, "the request did not arrive in time")
        elif self.runner is None:
            self._close()

    def _close(self) -> None:
        self.state = _CLOSED
        self.queue.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()


class MetricsApp:
    """``GET /metrics`` (``render()``'s Prometheus text) and ``GET /healthz`` (``ok``)."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self.render = render

    async def __call__(self, request: Request) -> Response:
        if request.path not in ("/metrics", "/healthz"):
            return problem(404, "this admin listener serves /metrics and /healthz")
        if request.method not in ("GET", "HEAD"):
            return problem(
                405, f"{request.path} answers GET and HEAD only", (("Allow", "GET, HEAD"),)
            )
        if request.path == "/healthz":
            return Response(200, b"ok\n", "text/plain; charset=utf-8")
        return Response(200, self.render(), CONTENT_TYPE.decode())


class AdminServer:
    """A running admin listener: its ``asyncio.Server`` and its open connections.

    ``close()`` stops listening and closes every client connection (an ``asyncio.Server``
    alone would leave keep-alive scrapers connected); ``await wait_closed()`` afterwards.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, app: App, limits: _Limits) -> None:
        self.loop = loop
        self.app = app
        self.limits = limits
        self.connections: set[AdminConnection] = set()
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()

    async def wait_idle(self, timeout: float) -> None:
        """Stop accepting, then wait (at most ``timeout`` seconds) until no connection has a
        request being answered; ``aclose()`` afterwards closes what is left."""
        if self.server is not None:
            self.server.close()
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline and any(
            c.runner is not None or c.queue for c in self.connections
        ):
            await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()


async def serve_admin(
    sock: socket.socket,
    app: App,
    *,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    read_timeout: float = READ_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
) -> AdminServer:
    """Serve ``app`` on the listening socket ``sock`` on the running loop."""
    loop = asyncio.get_running_loop()
    owner = AdminServer(loop, app, _Limits(max_request_bytes, read_timeout, idle_timeout))
    owner.server = await loop.create_server(lambda: AdminConnection(owner), sock=sock, backlog=128)
    return owner


async def start_admin(
    address: Any,
    render: Callable[[], bytes],
    *,
    reuse_port: bool = False,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    read_timeout: float = READ_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
) -> AdminServer:
    """Bind ``address`` (``(host, port)``), by default without ``SO_REUSEPORT`` (a port
    another process serves is refused: ``OSError`` EADDRINUSE), and serve ``/metrics``
    (``render()``) and ``/healthz`` on it (the DHCP service's metrics listener)."""
    from backhaul.edge.listen import bind_listener_socket

    sock = bind_listener_socket(address[0], int(address[1]), reuse_port=reuse_port)
    try:
        return await serve_admin(
            sock,
            MetricsApp(render),
            max_request_bytes=max_request_bytes,
            read_timeout=read_timeout,
            idle_timeout=idle_timeout,
        )
    except BaseException:
        sock.close()
        raise
