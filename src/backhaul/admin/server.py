"""The admin listener: a small HTTP/1.1 server on the worker's own event loop.

``GET /metrics`` answers the Prometheus text exposition (the ``render`` callable),
``GET /healthz`` answers ``200 ok``; anything else is an ``application/problem+json`` error
(404 unknown path, 405 other methods, 400 bad HTTP, 408 too slow, 431 too large). Keep-alive
and pipelining are supported, with the edge's habits: an ``asyncio.Protocol`` with httptools
callbacks, a bound on each request's size, a deadline on every read, and reading paused
while the client does not read its answers.

Every worker binds the admin address with ``SO_REUSEPORT`` and serves it: any of them can
answer, since the metrics store holds every worker's counters.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import httptools

from backhaul.admin.metrics import CONTENT_TYPE
from backhaul.http import REASONS, problem_response

__all__ = ["AdminServer", "start_admin"]

MAX_REQUEST_BYTES = 16 * 1024
"""Request line + headers + body of one admin request; beyond it: 431, then close."""
READ_TIMEOUT = 10.0
"""A request (head and body) must arrive within this many seconds of its first byte."""
IDLE_TIMEOUT = 60.0
"""A keep-alive connection with no request for this long is closed."""

_SERVER = b"backhaul-admin"
_ALLOW = b"GET, HEAD"
_IDLE, _READING, _CLOSED = range(3)


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


class AdminConnection(asyncio.Protocol):
    """One admin client connection."""

    def __init__(self, owner: AdminServer) -> None:
        self.owner = owner
        self.limits = owner.limits
        self.loop = owner.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.size = 0
        self.state = _IDLE
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.owner.connections.add(self)
        self._arm(self.limits.idle_timeout)

    def data_received(self, data: bytes) -> None:
        if self.state == _CLOSED:
            return
        if self.state == _IDLE:
            self.state = _READING
            self._arm(self.limits.read_timeout)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()  # answered (if complete); this server switches no protocols
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
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_writing(self) -> None:
        # The client does not read its answers: stop reading its requests.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.state != _CLOSED:
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
        self.size = 0
        if self.state == _IDLE:  # a pipelined request in the same read
            self.state = _READING
            self._arm(self.limits.read_timeout)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)

    def on_body(self, body: bytes) -> None:
        self._count(len(body))

    def on_message_complete(self) -> None:
        if self.state == _CLOSED:
            return
        parser = self.parser
        method = parser.get_method()
        keep_alive = parser.should_keep_alive()
        http10 = parser.get_http_version() == "1.0"
        path = self.url.split(b"?", 1)[0]
        self.state = _IDLE
        self._respond(method, path, keep_alive, http10)

    # -- answers ---------------------------------------------------------------------
    def _respond(self, method: bytes, path: bytes, keep_alive: bool, http10: bool) -> None:
        if path not in (b"/metrics", b"/healthz"):
            actions = self.owner.actions
            answer = None
            if actions is not None:
                try:
                    answer = actions(method, path)
                except Exception as exc:
                    self._bug(exc)
                    return
            if answer is None:
                detail = "the admin listener serves /metrics, /healthz and /clusters"
                self._problem(404, detail, keep_alive, method == b"HEAD")
                return
            status, body = answer
            if status >= 400:
                detail = json.loads(body).get("detail", "") if body else ""
                self._problem(status, detail, keep_alive, method == b"HEAD")
                return
            head = [
                b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"")),
                b"Server: " + _SERVER,
                b"Content-Type: application/json",
                b"Content-Length: %d" % len(body),
                b"Cache-Control: no-store",
            ]
            if not keep_alive:
                head.append(b"Connection: close")
            head.append(b"\r\n")
            self._send(b"\r\n".join(head) + body, keep_alive)
            return
        if method not in (b"GET", b"HEAD"):
            detail = f"{path.decode('latin-1')} answers GET and HEAD only"
            self._problem(405, detail, keep_alive, False, allow=True)
            return
        if path == b"/healthz":
            body, ctype = b"ok\n", b"text/plain; charset=utf-8"
        else:
            try:
                body = self.owner.render()
            except Exception as exc:
                self._bug(exc)
                return
            ctype = CONTENT_TYPE
        head = [
            b"HTTP/1.1 200 OK",
            b"Server: " + _SERVER,
            b"Content-Type: " + ctype,
            b"Content-Length: %d" % len(body),
            b"Cache-Control: no-store",
        ]
        if not keep_alive:
            head.append(b"Connection: close")
        elif http10:
            head.append(b"Connection: keep-alive")
        head.append(b"\r\n")
        data = b"\r\n".join(head)
        self._send(data if method == b"HEAD" else data + body, keep_alive)

    def _problem(
        self, status: int, detail: str, keep_alive: bool, head_only: bool, allow: bool = False
    ) -> None:
        data = problem_response(
            status, detail, close=not keep_alive, server=_SERVER, head_only=head_only
        )
        if allow:
            data = data.replace(b"\r\n", b"\r\nAllow: " + _ALLOW + b"\r\n", 1)
        self._send(data, keep_alive)

    def _send(self, data: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(data)
        if keep_alive:
            if self.state == _IDLE:
                self._arm(self.limits.idle_timeout)
        else:
            self._close()

    def _fail(self, status: int, detail: str) -> None:
        """The request cannot be read: answer ``status`` and close."""
        if self.state == _CLOSED:
            return
        self._problem(status, detail, keep_alive=False, head_only=False)
        self._close()

    def _bug(self, exc: BaseException) -> None:
        """A defect in backhaul (not bad input): log its traceback, answer 500, close."""
        print("backhaul: internal error in the admin listener (please report):", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        self._fail(500, "the admin listener failed on this request; its log has the details")

    # -- deadlines and closing -------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(seconds, self._on_deadline)

    def _on_deadline(self) -> None:
        self.timer = None
        if self.state == _READING:
            self._fail(408, "the request did not arrive in time")
        else:
            self._close()

    def _close(self) -> None:
        self.state = _CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()


class AdminServer:
    """A running admin listener: its ``asyncio.Server`` and its open connections.

    ``close()`` stops listening and closes every client connection (an ``asyncio.Server``
    alone would leave keep-alive scrapers connected); ``await wait_closed()`` afterwards.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        render: Callable[[], bytes],
        limits: _Limits,
        actions: Callable[[bytes, bytes], tuple[int, bytes] | None] | None = None,
    ) -> None:
        self.loop = loop
        self.render = render
        self.actions = actions
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

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()


async def start_admin(
    address: Any,
    render: Callable[[], bytes],
    *,
    reuse_port: bool = True,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    read_timeout: float = READ_TIMEOUT,
    idle_timeout: float = IDLE_TIMEOUT,
    actions: Callable[[bytes, bytes], tuple[int, bytes] | None] | None = None,
) -> AdminServer:
    """Serve the admin API on ``address`` (``(host, port)``, e.g. the config's
    ``admin.address``) on the running loop. ``render()`` returns the ``/metrics`` body.
    The socket is bound with ``SO_REUSEPORT`` so that every worker can serve it.
    ``actions(method, path)`` answers the other paths (``(status, JSON body)``, or None for
    404): the control API of :mod:`backhaul.admin.api`."""
    # Imported here: the admin layer sits above the edge, and the edge's worker imports
    # this module when it starts the admin listener.
    from backhaul.edge.listen import bind_listener_socket

    loop = asyncio.get_running_loop()
    owner = AdminServer(
        loop, render, _Limits(max_request_bytes, read_timeout, idle_timeout), actions
    )
    sock = bind_listener_socket(address[0], int(address[1]), reuse_port=reuse_port)
    try:
        owner.server = await loop.create_server(
            lambda: AdminConnection(owner), sock=sock, backlog=128
        )
    except BaseException:
        sock.close()
        raise
    return owner
