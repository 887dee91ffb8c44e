"""The downstream HTTP/1.1 driver: one ``asyncio.Protocol`` per client connection.

It turns httptools callbacks into calls on the http policy (``inspect_request_head``,
``parse_target``), the route table and an :class:`~backhaul.edge.exchange.Exchange` per
request, and enforces the listener's limits and deadlines. Per-connection state lives here;
per-request state lives in the exchange.

Pipelined requests are answered in order: a request that arrives while an earlier one is
still being answered waits in ``pending`` and reading is paused, so at most one read's worth
of bytes is ever held.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from backhaul.edge.exchange import Exchange
from backhaul.errors import RemoteProtocolError
from backhaul.http import inspect_request_head, problem_response
from backhaul.http.target import parse_target

if TYPE_CHECKING:
    from backhaul.edge.upstream import UpstreamConnection
    from backhaul.edge.worker import ListenerRuntime, Worker

__all__ = ["HttpConnection"]

# Reasons reading from the client is paused (a bit mask: read resumes when all are clear).
PAUSE_PIPELINE = 1
PAUSE_UPSTREAM = 2  # upstream not connected yet, or its write buffer is full
PAUSE_DRAIN = 4

# What the connection's deadline means when it passes.
DL_NONE = 0
DL_HEADERS = 1
DL_BODY = 2
DL_IDLE = 3

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


def _parse_failure(exc: Exception, data: bytes) -> tuple[int, str]:
    """Status and detail for a request llhttp refused, in words an operator can act on."""
    reason = str(exc) or type(exc).__name__
    if data[:2] == b"\x16\x03":
        return 400, "this listener speaks plain HTTP; the client sent a TLS handshake (use http://)"
    if data.startswith(b"PRI * HTTP/2.0") or "PRI" in reason:
        return 505, "HTTP/2 with prior knowledge is not served on this listener; use HTTP/1.1"
    if "HTTP version" in reason:
        return 505, "the request's HTTP version is not served here; use HTTP/1.1 or HTTP/1.0"
    if "whitespace after header value" in reason:
        return 400, "header line folding (obs-fold) is not allowed (RFC 9112 5.2)"
    if "CRLF" in reason or "LF" in reason:
        return 400, f"lines must end with CRLF (RFC 9112 2.2): {reason}"
    return 400, f"the request is not valid HTTP/1.1: {reason}"


class HttpConnection(asyncio.Protocol):
    """One downstream (client) connection speaking HTTP/1.1."""

    __slots__ = (
        "bytes_in",
        "client_ip",
        "closing",
        "deadline",
        "deadline_kind",
        "feed_chunks",
        "feed_clean",
        "feed_explained",
        "in_head",
        "header_bytes",
        "headers",
        "listener",
        "parser",
        "paused",
        "pending",
        "request_id_in",
        "rx",
        "transport",
        "tx",
        "up_dirty",
        "url",
        "wbuf",
        "worker",
        "write_paused",
    )

    def __init__(self, worker: Worker, listener: ListenerRuntime) -> None:
        self.worker = worker
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.url = b""
        self.request_id_in: bytes | None = None
        self.rx: Exchange | None = None  # the exchange whose request is being received
        self.tx: Exchange | None = None  # the exchange whose response is being sent
        self.pending: list[Exchange] = []
        self.paused = 0
        self.write_paused = False
        self.closing = False
        self.deadline = 0.0
        self.deadline_kind = DL_NONE
        self.bytes_in = 0
        # Accounting of one read, to bound chunk extensions (see check_chunk_overhead).
        self.feed_chunks = 0
        self.feed_explained = 0
        self.feed_clean = True
        self.in_head = False
        # While a read is being handled, writes are gathered here and sent with one
        # writelines when it is done: one system call per event, not one per piece.
        self.wbuf: list[bytes] | None = None
        # Likewise bytes for upstream connections while a read is handled: sent only once the
        # whole read was accepted, so a request refused at the end of a read (an oversized
        # chunk extension) never reaches the upstream complete.
        self.up_dirty: list[UpstreamConnection] | None = None

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(_HIGH_WATER, _LOW_WATER)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.worker.connections.add(self)
        self.deadline = self.worker.loop.time() + self.listener.headers_timeout
        self.deadline_kind = DL_HEADERS
        if self.worker.draining:
            self.closing = True

    def data_received(self, data: bytes) -> None:
        if self.deadline_kind == DL_IDLE:
            self.deadline = self.worker.loop.time() + self.listener.headers_timeout
            self.deadline_kind = DL_HEADERS
        if self.parser is None:
            self.parser = httptools.HttpRequestParser(self)
        owner = self.wbuf is None
        if owner:
            self.wbuf = []
        self.up_dirty = []
        rx_before = self.rx
        self.feed_chunks = 0
        self.feed_explained = 0
        self.feed_clean = rx_before is None and not self.in_head
        rest = b""
        try:
            self.parser.feed_data(data)
            rx = self.rx
            if self.feed_chunks or (rx is not None and rx.facts.chunked):
                self.check_chunk_overhead(rx, rx_before, data)
        except httptools.HttpParserUpgrade as exc:
            # A request asked to upgrade; the edge does not switch protocols on this path,
            # so the request was handled as plain HTTP (it has no body: see
            # on_headers_complete). What follows it is the next request, for a new parser.
            rest = data[exc.args[0] :] if exc.args else b""
            self.parser = httptools.HttpRequestParser(self)
        except RemoteProtocolError as exc:
            self.reject(exc.status_hint, exc.detail)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, RemoteProtocolError):
                self.reject(cause.status_hint, cause.detail)
            elif isinstance(exc, httptools.HttpParserInvalidMethodError):
                if data[:2] == b"\x16\x03":
                    self.reject(*_parse_failure(exc, data))
                else:
                    self.reject(
                        400,
                        "the request line does not start with a known method in capitals "
                        "(RFC 9110 9.1, RFC 9112 3)",
                    )
            elif isinstance(exc, httptools.HttpParserInvalidURLError):
                self.reject(400, "the request-target is not valid (RFC 9112 §3.2)")
            elif cause is not None and not isinstance(cause, httptools.HttpParserError):
                self.worker.report_bug(cause)
                self.reject(500, "the edge failed on this request; its log has the details")
            else:
                self.reject(*_parse_failure(exc, data))
        finally:
            dirty = self.up_dirty
            self.up_dirty = None
            if dirty:
                for upstream in dirty:
                    upstream.flush()
            if owner:
                self.flush()
        if rest and not self.closing:
            self.data_received(rest)

    def eof_received(self) -> bool | None:
        # The client half-closed. Finish answering what it asked, then close.
        if self.tx is None and self.rx is None:
            return None  # close now
        self.closing = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.connections.discard(self)
        self.closing = True
        tx = self.tx
        self.tx = None
        if tx is not None:
            tx.downstream_lost()
        for ex in self.pending:
            ex.downstream_lost()
        self.pending = []
        self.transport = None

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tx is not None:
            self.tx.downstream_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tx is not None:
            self.tx.downstream_resume_writing()

    # -- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.headers = []
        self.header_bytes = 0
        self.url = b""
        self.request_id_in = None
        if self.deadline_kind != DL_HEADERS:
            self.deadline = self.worker.loop.time() + self.listener.headers_timeout
            self.deadline_kind = DL_HEADERS

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.listener.max_request_line:
            raise RemoteProtocolError(
                f"the request-target is longer than this listener's limit of "
                f"{self.listener.max_request_line} bytes",
                414,
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        headers.append((name, value))
        if len(name) == 12 and name.lower() == b"x-request-id":
            self.request_id_in = value.strip()
        self.header_bytes += len(name) + len(value) + 4
        if not self.in_head:  # a trailer field
            self.feed_explained += len(name) + len(value) + 4
        listener = self.listener
        if self.header_bytes > listener.max_header_bytes:
            raise RemoteProtocolError(
                f"the request header section is larger than this listener's limit of "
                f"{listener.max_header_bytes} bytes",
                431,
            )
        if len(headers) > listener.max_header_count:
            raise RemoteProtocolError(
                f"the request has more than this listener's limit of "
                f"{listener.max_header_count} header fields",
                431,
            )

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        method = parser.get_method()
        self.feed_explained += len(method) + len(self.url) + self.header_bytes + 14
        if method == b"CONNECT":
            raise RemoteProtocolError(
                "this listener is a gateway, not a forward proxy: it opens no CONNECT tunnels",
                501,
                rfc="RFC 9110 9.3.6",
            )
        headers = self.headers
        target = parse_target(method, self.url)
        facts = inspect_request_head(
            parser.get_http_version(), headers, target.authority, values_checked=True
        )
        if (facts.content_length or facts.chunked) and parser.should_upgrade():
            # httptools stops parsing at the head of an Upgrade request (the rest would be
            # the new protocol), so its body could not be framed: refuse rather than read
            # the body as the next request (RFC 9110 7.8 lets a server ignore Upgrade, not
            # the framing).
            raise RemoteProtocolError(
                "this listener does not switch protocols, and an Upgrade request with a body "
                "cannot be relayed as plain HTTP/1.1; send it without Upgrade",
                400,
                rfc="RFC 9110 7.8",
            )
        listener = self.listener
        tls = listener.tls  # TLS hook: routes may match the verified client certificate
        route = listener.routes.match(
            facts.host,
            target.path,
            method,
            headers if tls is None else tls.route_headers(headers, self.transport),
        )
        ex = Exchange(self, method, target, facts, headers, route)
        if self.request_id_in is not None:
            ex.request_id = self.request_id_in
            ex.request_id_foreign = True
        # Trailer fields (after a chunked body) also arrive through on_header: they land in
        # a fresh list and are dropped, never merged into the forwarded head.
        self.headers = []
        self.rx = ex
        if facts.content_length or facts.chunked:
            self.deadline = self.worker.loop.time() + listener.body_idle_timeout
            self.deadline_kind = DL_BODY
        else:
            self.deadline_kind = DL_NONE
        if self.tx is None:
            self.tx = ex
            ex.start()
        else:
            self.pending.append(ex)
            self.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        self.feed_explained += len(body)
        ex = self.rx
        if ex is not None:
            if self.deadline_kind == DL_BODY:
                self.deadline = self.worker.loop.time() + self.listener.body_idle_timeout
            ex.request_body(body)

    def on_chunk_header(self) -> None:
        self.feed_chunks += 1
        self.feed_explained += 5  # the shortest size line and the CRLF after the data
        rx = self.rx
        if rx is not None:
            rx.chunks += 1

    def check_chunk_overhead(
        self, rx: Exchange | None, rx_before: Exchange | None, data: bytes
    ) -> None:
        """Bound what a chunked body may carry besides data (chunk extensions, size lines).

        llhttp reads chunk extensions without a callback, so without this a client could
        stream an endless extension. The bytes of each read that are not explained by heads,
        body data and the shortest chunk framing may be at most 4 KiB plus 64 bytes per chunk
        (RFC 9112 7.1.1 lets a recipient limit extensions).
        """
        if self.feed_clean:
            # The read began between messages: every byte of it belongs to messages that
            # began in it, whose heads and data were counted as they went by.
            partial = len(self.url) + self.header_bytes if self.in_head else 0
            overhead = len(data) - self.feed_explained - partial
            chunks = self.feed_chunks
        elif rx is not None and rx is rx_before:
            overhead = len(data) - (rx.bytes_in - rx.mark_body) - (self.header_bytes - rx.mark_head)
            chunks = rx.chunks
        else:
            overhead = 0
            chunks = 0
        if rx is not None:
            rx.mark_body = rx.bytes_in
            rx.mark_head = self.header_bytes
            if not self.feed_clean:
                rx.chunk_overhead += max(0, overhead)
                overhead = rx.chunk_overhead
        if overhead > 4096 + 64 * chunks:
            raise RemoteProtocolError(
                "the chunked body carries more than 4 KiB of chunk extensions or framing "
                "without data; chunk extensions are limited",
                400,
            )

    def on_message_complete(self) -> None:
        ex = self.rx
        self.rx = None
        if self.deadline_kind == DL_BODY:
            self.deadline_kind = DL_NONE
        if ex is not None:
            ex.request_end()

    # -- used by exchanges and the worker ----------------------------------------------
    def write(self, data: bytes) -> None:
        wbuf = self.wbuf
        if wbuf is not None:
            wbuf.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def send_upstream(
        self, upstream: UpstreamConnection, parts: tuple[bytes, ...] | list[bytes]
    ) -> None:
        """Write to ``upstream`` now, or when the read being handled was accepted."""
        dirty = self.up_dirty
        if dirty is None:
            upstream.write_many(parts)
            return
        if upstream.wbuf is None:
            upstream.wbuf = []
            dirty.append(upstream)
        upstream.wbuf += parts

    def write_many(self, parts: tuple[bytes, ...] | list[bytes]) -> None:
        wbuf = self.wbuf
        if wbuf is not None:
            wbuf += parts
        elif self.transport is not None:
            self.transport.writelines(parts)

    def flush(self) -> None:
        wbuf = self.wbuf
        self.wbuf = None
        if wbuf and self.transport is not None:
            if len(wbuf) == 1:
                self.transport.write(wbuf[0])
            else:
                self.transport.writelines(wbuf)

    def abort(self) -> None:
        self.closing = True
        self.wbuf = None
        if self.transport is not None:
            self.transport.abort()

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and not self.closing:
                self.transport.resume_reading()

    def exchange_done(self, ex: Exchange, keep_alive: bool) -> None:
        """The exchange ``ex`` (the current ``tx``) has answered and read its request."""
        if self.tx is not ex:
            return
        self.tx = None
        if not keep_alive or self.closing or self.worker.draining:
            self.close()
            return
        if self.pending:
            nxt = self.pending.pop(0)
            self.tx = nxt
            if not self.pending:
                self.resume(PAUSE_PIPELINE)
            nxt.start()
        elif self.rx is None:
            self.deadline = self.worker.loop.time() + self.listener.keepalive_timeout
            self.deadline_kind = DL_IDLE

    def reject(self, status: int, detail: str) -> None:
        """A request could not be read: answer ``status`` (if nothing was sent) and close."""
        self.closing = True
        self.rx = None
        tx = self.tx
        transport = self.transport
        if transport is None:
            return
        if tx is not None and tx.head_sent:
            self.abort()
            return
        if tx is not None:
            tx.abandon()
            self.tx = None
        for ex in self.pending:
            ex.abandon()
        self.pending = []
        self.worker.stats.rejected += 1
        body = problem_response(status, detail, server=self.worker.server_header)
        self.write(body)
        self.worker.access_log_reject(self, status, len(body) - body.index(b"\r\n\r\n") - 4)
        self.close()

    def on_deadline(self, now: float) -> None:
        kind = self.deadline_kind
        self.deadline_kind = DL_NONE
        if kind == DL_IDLE:
            self.close()
        elif kind == DL_HEADERS:
            if self.url or self.headers or self.rx is not None or self.tx is not None:
                self.reject(408, "the request head did not arrive in time")
            else:
                # A connection that never sent a byte: close without an answer.
                self.close()
        elif kind == DL_BODY:
            self.reject(408, "the request body stalled: no bytes arrived in time")

    def hibernate(self) -> None:
        """Free what an idle keep-alive connection does not need until its next request
        (the parser, the last URL): with thousands of idle clients this is most of their
        memory. Only called between messages, when the parser holds no state."""
        self.parser = None  # type: ignore[assignment]
        self.url = b""
        self.headers = []

    def close(self) -> None:
        """Send what is gathered, then close once the write buffer is empty."""
        self.closing = True
        if self.wbuf:
            self.flush()
        if self.transport is not None:
            self.transport.close()
