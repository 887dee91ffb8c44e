"""Upstream side of the edge: clusters, endpoints, their connection pools, and the
``asyncio.Protocol`` that speaks HTTP/1.1 to one upstream connection.

Pools are per endpoint, LIFO (the warmest connection first), bounded by ``max_idle`` and
swept by the worker's tick after ``idle_timeout``. A connection goes back to the pool only
when its last exchange ended cleanly: a complete response with keep-alive, no framing doubt,
no stray bytes. Anything else closes it.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import httptools

from backhaul.errors import ConnectError, ConnectTimeout

if TYPE_CHECKING:
    from backhaul.edge.exchange import Exchange

__all__ = ["Cluster", "Endpoint", "UpstreamConnection"]

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to an upstream endpoint; serves one exchange at a time."""

    __slots__ = (
        "closed",
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


class Endpoint:
    """An upstream address of a cluster, with its own LIFO pool of idle connections."""

    __slots__ = (
        "active",
        "address",
        "cluster",
        "connect_timeout",
        "host",
        "idle",
        "idle_timeout",
        "label",
        "log_name",
        "max_idle",
        "port",
        "weight",
    )

    def __init__(self, cluster: Cluster, host: str, port: int, weight: int = 1) -> None:
        self.cluster = cluster
        self.host = host
        self.port = port
        self.weight = weight
        self.label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.address = self.label
        self.log_name = f'"{self.label}"'
        self.idle: list[UpstreamConnection] = []
        self.max_idle: int = cluster.max_idle
        self.idle_timeout: float = cluster.idle_timeout
        self.connect_timeout: float = cluster.connect_timeout
        self.active = 0

    def acquire_nowait(self) -> UpstreamConnection | None:
        """The warmest idle connection, or None."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def wait_connected(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        """A new connection, within the cluster's connect timeout."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port
                )
        except TimeoutError as exc:
            raise ConnectTimeout(
                f"connecting to upstream endpoint {self.label} took longer than "
                f"{self.connect_timeout:g}s"
            ) from exc
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConnectError(
                f"upstream endpoint {self.label} refused or failed the connection: {reason}",
                peer=self.label,
            ) from exc
        return proto

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Return a clean connection to the pool (or close it when the pool is full)."""
        conn.exchange = None
        if conn.closed:
            return
        if len(self.idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        if conn.transport is not None:
            conn.transport.resume_reading()
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def sweep(self, now: float) -> None:
        """Close idle connections older than the idle timeout (oldest are at the front)."""
        idle = self.idle
        limit = now - self.idle_timeout
        while idle and (idle[0].closed or idle[0].idle_since < limit):
            idle.pop(0).close()

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()


class Cluster:
    """A named pool of endpoints; balancing is round robin (weighted by repetition)."""

    __slots__ = (
        "body_idle",
        "connect_timeout",
        "endpoints",
        "idle_timeout",
        "max_idle",
        "name",
        "response_headers_timeout",
        "_ring",
        "_next",
    )

    def __init__(self, name: str, config: Any, builtin_ports: dict[int, int] | None = None):
        self.name = name
        timeouts = config.timeouts
        self.connect_timeout = float(timeouts.connect)
        self.response_headers_timeout = float(timeouts.response_headers)
        self.body_idle = float(timeouts.body_idle)
        self.max_idle = int(config.pool.max_idle)
        self.idle_timeout = float(config.pool.idle_timeout)
        self.endpoints: list[Endpoint] = []
        for i, ep in enumerate(config.endpoints):
            if ep.address is not None:
                host, port = ep.address.host, ep.address.port
            else:
                host, port = "127.0.0.1", (builtin_ports or {})[i]
            self.endpoints.append(Endpoint(self, host, port, ep.weight))
        self._ring = [ep for ep in self.endpoints for _ in range(max(1, ep.weight))]
        # Each worker starts its rotation at its own place, so that N workers together
        # spread the first requests instead of all sending them to the first endpoint.
        self._next = int.from_bytes(os.urandom(2), "big") % len(self._ring)

    def pick(self) -> Endpoint:
        ring = self._ring
        i = self._next
        self._next = (i + 1) % len(ring)
        return ring[i]

    def sweep(self, now: float) -> None:
        for ep in self.endpoints:
            ep.sweep(now)

    def close_idle(self) -> None:
        for ep in self.endpoints:
            ep.close_idle()
