"""Upstream side of the edge: clusters, endpoints, their connection pools, and the
``asyncio.Protocol`` that speaks HTTP/1.1 to one upstream connection.

Pools are per endpoint, LIFO (the warmest connection first), bounded by ``max_idle`` and
swept by the worker's tick after ``idle_timeout``. A connection goes back to the pool only
when its last exchange ended cleanly: a complete response with keep-alive, no framing doubt,
no stray bytes. Anything else closes it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from backhaul.edge.cluster import Endpoint
    from backhaul.edge.exchange import Exchange

__all__ = ["UpstreamConnection"]

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to an upstream endpoint; serves one exchange at a time."""

    __slots__ = (
        "closed",
        "counted",
        "endpoint",
        "exchange",
        "headers",
        "idle_since",
        "parser",
        "reused",
        "transport",
        "wbuf",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.idle_since = 0.0
        self.reused = False
        self.closed = False
        self.counted = False  # holds a slot of the cluster's max_connections breaker
        self.wbuf: list[bytes] | None = None

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(_HIGH_WATER, _LOW_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            # Bytes from an idle upstream connection: nothing asked for them.
            self.close()
            return
        conn = ex.conn
        owner = conn.wbuf is None
        if owner:
            conn.wbuf = []
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            ex.upstream_failed(self, "upstream endpoint switched protocols unasked", True)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if cause is not None:
                # An exception raised by our own callback code: a defect, not bad input.
                ex.worker.report_bug(cause)
                ex.upstream_failed(self, "the edge failed on this response", True)
            elif self.exchange is ex:
                ex.upstream_failed(self, f"upstream response is not valid HTTP/1.1 ({exc})", True)
            else:
                # Garbage after a complete response: never reuse this connection.
                self.close()
        finally:
            if owner:
                conn.flush()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.counted:
            self.counted = False
            self.endpoint.cluster.breakers.connections.release()
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.upstream_lost(self)
        else:
            self.endpoint.forget(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_resume_writing()

    # -- httptools callbacks -----------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.exchange is None:
            # A second response in the same read, after the exchange was released: nothing
            # asked for it, so this connection cannot be trusted again.
            self.close()
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is not None:
            parser = self.parser
            ex.upstream_head(
                self, parser.get_status_code(), parser.get_http_version(), self.headers
            )

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self.close()
        else:
            ex.upstream_body(body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.upstream_end(self, self.parser.should_keep_alive())

    # -- used by the exchange ----------------------------------------------------------
    def reset_parser(self) -> None:
        """Start a fresh parser: after a response whose body llhttp cannot know is absent
        (the answer to HEAD), so the next response on this connection parses from its start."""
        self.parser = httptools.HttpResponseParser(self)

    def write_many(self, parts: tuple[bytes, ...] | list[bytes]) -> None:
        if self.transport is not None and not self.closed:
            if len(parts) == 1:
                self.transport.write(parts[0])
            else:
                self.transport.writelines(parts)

    def flush(self) -> None:
        """Send what the downstream side gathered during one read."""
        wbuf = self.wbuf
        self.wbuf = None
        if wbuf:
            self.write_many(wbuf)

    def close(self) -> None:
        self.closed = True
        self.wbuf = None
        self.exchange = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.wbuf = None
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()
