"""The DNS server's I/O: UDP and TCP drivers, the forwarder, reloads, the query log and
the metrics endpoint. Every decision is :class:`~backhaul.proto.dns_query.QueryEngine`'s.

- UDP (:class:`UdpDriver`): one datagram is one query. The fast path answers a query whose
  exact bytes were answered before (see :class:`~backhaul.proto.dns_query.WireAnswers`)
  with no parsing; everything else goes through the engine.
- TCP (:class:`TcpDriver`, RFC 7766): two-byte length prefixes, pipelined queries answered
  as each is ready (forwarded ones may overtake), at most ``MAX_PIPELINE`` in progress per
  connection (reading pauses beyond), an idle timeout, a bounded buffer, at most
  ``MAX_TCP_CONNECTIONS`` connections per worker.
- The forwarder asks upstreams (:mod:`~backhaul.services.dns.upstream`: UDP, then TCP when
  the answer is truncated), each try within the configured timeout, the next upstream on
  failure; concurrent identical misses share one upstream query (single-flight,
  :class:`~backhaul.proto.dns_forward.Flights`). Every upstream task belongs to the server
  and is cancelled by :meth:`DnsServer.aclose`.
- Reload: SIGHUP (installed by the process runner) or a changed zone/hosts file (checked
  every second when ``watch`` is on) re-reads the data; a file that does not parse leaves
  the old data serving, and the error is logged. Queries never stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import dns.exception
import dns.message
import dns.rcode

from backhaul.guard.dns_rrl import RateLimiter
from backhaul.proto.dns_cache import CacheKey, CacheSettings, ResponseCache
from backhaul.proto.dns_forward import FlightJoin, Flights, ForwardPlan, UpstreamHealth
from backhaul.proto.dns_query import (
    Drop,
    EngineSettings,
    Forward,
    Pending,
    QueryEngine,
    Reply,
)
from backhaul.proto.dns_zone import ZoneDataError
from backhaul.services.dns.metrics import LATENCY_BUCKETS, render_dns_metrics
from backhaul.services.dns.upstream import ask_upstream
from backhaul.services.dns.zones import file_stamps, load_authority, published_endpoints

__all__ = ["DnsServer", "TcpDriver", "UdpDriver"]

TICK = 0.5
MAX_PIPELINE = 32
MAX_TCP_BUFFER = 2 * (65_535 + 2)
MAX_TCP_CONNECTIONS = 1024  # per worker; more are closed at once (and counted)
_UPSTREAM_ERRORS = (dns.exception.DNSException, OSError, EOFError, ValueError, TimeoutError)

Send = Callable[[bytes], None]


class UdpDriver(asyncio.DatagramProtocol):
    """One UDP socket: datagrams in, replies out."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.engine = server.engine
        self.table = server.engine.wire.table  # the kept replies (cleared, never replaced)
        self.fast_ok = server.fast_ok
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.fast_ok:  # the fast path: the same query bytes were answered before
            entry = self.table.get(data[2:])
            if entry is not None:
                if entry[2]:  # forwarded: the engine checks the client, freshness, TTLs
                    entry = self.engine.fast(data, addr[0], time.monotonic())
                if entry is not None:  # from our zones: good until the zones change
                    entry[3] += 1  # type: ignore[operator]
                    self.transport.sendto(data[:2] + entry[0], addr)  # type: ignore[operator,union-attr]
                    return
        transport = self.transport
        self.server.query(data, addr[0], True, lambda wire: transport.sendto(wire, addr))  # type: ignore[union-attr]

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable from a client
        self.server.count_drop("udp_error")


class TcpDriver(asyncio.Protocol):
    """One TCP connection: length-prefixed queries, pipelined."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.peer = ""
        self.pending = 0
        self.paused = False
        self.last_active = time.monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        if len(self.server.tcp_connections) >= MAX_TCP_CONNECTIONS:
            self.server.count_drop("tcp_connections")
            self.close()
            return
        self.server.tcp_connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.tcp_connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_active = time.monotonic()
        buffer = self.buffer
        buffer += data
        if len(buffer) > MAX_TCP_BUFFER:
            self.server.count_drop("tcp_buffer")
            self.close()
            return
        while len(buffer) >= 2:
            size = int.from_bytes(buffer[:2], "big")
            if len(buffer) < 2 + size:
                break
            message = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            self.pending += 1
            self.server.query(message, self.peer, False, self.send)
            if self.pending >= MAX_PIPELINE and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()

    def send(self, wire: bytes) -> None:
        self.pending -= 1
        self.last_active = time.monotonic()
        if self.closed or self.transport is None:
            return
        if wire:
            self.transport.write(len(wire).to_bytes(2, "big") + wire)
        if self.paused and self.pending < MAX_PIPELINE // 2:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


class _MetricsHttp(asyncio.Protocol):
    """``GET /metrics`` (Prometheus text) on the DNS server's metrics address."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer and len(self.buffer) < 8192:
            return
        line = self.buffer.split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
            body = self.server.metrics_text().encode()
            status = b"200 OK"
        else:
            body, status = b"not found: try /metrics\n", b"404 Not Found"
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
        )
        self.transport.close()


class DnsServer:
    """The DNS service of one process."""

    def __init__(
        self,
        config: Any,
        loop: asyncio.AbstractEventLoop,
        clusters: Any = None,
        control: Any = None,
        metrics: Any = None,
        slots: Any = None,
    ) -> None:
        self.config = config
        self.slots = slots  # (DnsStatsSlots, this worker's index) when several workers
        self.loop = loop
        self.clusters = clusters if config.services is not None else None
        self.control = control
        self.metrics = metrics
        self.published = (
            published_endpoints(self.clusters, control, metrics) if self.clusters else None
        )
        authority = load_authority(config, self.published)
        cache = config.cache
        forward = config.forward
        plan = None
        if forward is not None:
            plan = ForwardPlan(
                [(a.host, a.port) for a in forward.upstreams],
                {z: [(a.host, a.port) for a in ups] for z, ups in forward.zones.items()},
            )
        limit = config.rate_limit
        self.engine = QueryEngine(
            authority,
            ResponseCache(
                CacheSettings(
                    max_entries=int(cache.max_entries),
                    max_bytes=int(cache.max_size),
                    min_ttl=int(cache.min_ttl),
                    max_ttl=int(cache.max_ttl),
                    negative_max_ttl=int(cache.negative_max_ttl),
                    stale_for=int(cache.serve_stale),
                    stale_ttl=int(cache.stale_ttl),
                )
            ),
            plan,
            EngineSettings(
                udp_payload=int(config.udp_payload),
                allow_recursion=tuple(config.allow_recursion),
            ),
            RateLimiter(
                limit.responses_per_second,
                limit.burst,
                limit.slip,
                limit.exempt,
                limit.ipv4_prefix,
                limit.ipv6_prefix,
            )
            if limit is not None
            else None,
        )
        self.timeout = float(forward.timeout) if forward is not None else 2.0
        self.health = UpstreamHealth(
            int(forward.failures_to_down) if forward is not None else 3,
            float(forward.down_for) if forward is not None else 5.0,
        )
        self.flights: Flights[CacheKey, tuple[Pending, Send]] = Flights()
        self.tasks: set[asyncio.Task[None]] = set()
        self.tcp_connections: set[TcpDriver] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.transports: list[asyncio.BaseTransport] = []
        self.log: IO[str] | None = None
        self.log_lines: list[str] = []
        log = config.query_log
        if log.enabled:
            self.log = sys.stdout if log.path == "-" else open(log.path, "a", encoding="utf-8")  # noqa: SIM115
        self.fast_ok = self.log is None and self.engine.rate_limiter is None
        self.stamps = file_stamps(config)
        self.reloads = 0
        self.reload_errors = 0
        self.upstream_latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.upstream_latency_sum = 0.0
        self.upstream_queries = 0
        self.upstream_failures = 0
        self.drops: dict[str, int] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self._last_watch = 0.0

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self, sockets: list[tuple[socket.socket, socket.socket]], metrics: socket.socket | None
    ) -> None:
        for udp, tcp in sockets:
            transport, _ = await self.loop.create_datagram_endpoint(
                lambda: UdpDriver(self), sock=udp
            )
            self.transports.append(transport)
            self.servers.append(await self.loop.create_server(lambda: TcpDriver(self), sock=tcp))
        if metrics is not None:
            self.servers.append(
                await self.loop.create_server(lambda: _MetricsHttp(self), sock=metrics)
            )
        self._tick_task = self.loop.create_task(self._ticker())

    async def aclose(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        for server in self.servers:
            server.close()
        for transport in self.transports:
            transport.close()
        for conn in list(self.tcp_connections):
            conn.close()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.flush_log()
        if self.log is not None and self.log is not sys.stdout:
            self.log.close()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        idle = float(self.config.tcp_idle_timeout)
        for conn in list(self.tcp_connections):
            if conn.pending == 0 and now - conn.last_active > idle:
                conn.close()
        self.flush_log()
        if self.clusters is not None:
            published = published_endpoints(self.clusters, self.control, self.metrics)
            if published != self.published:
                self.published = published
                self.reload("health changed")
        if self.config.watch and now - self._last_watch >= 1.0:
            self._last_watch = now
            stamps = file_stamps(self.config)
            if stamps != self.stamps:
                self.stamps = stamps
                self.reload("file changed")
        self.engine.cache.sweep(now)
        self.publish()

    def reload(self, why: str = "SIGHUP") -> bool:
        """Re-read the zone data; on error keep serving the old data."""
        try:
            authority = load_authority(self.config, self.published)
        except (ZoneDataError, OSError, UnicodeDecodeError) as exc:
            self.reload_errors += 1
            print(f"backhaul: dns: reload ({why}) failed, old data kept: {exc}", file=sys.stderr)
            return False
        self.engine.set_authority(authority)
        self.reloads += 1
        return True

    def count_drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    # ------------------------------------------------------------------ queries

    def query(self, packet: bytes, client: str, udp: bool, send: Send) -> None:
        """Handle one query and send its reply through ``send`` (now or later)."""
        start = time.monotonic()
        decision = self.engine.handle(packet, client, start, udp)
        if isinstance(decision, Reply):
            if self.log is not None:
                self._log(client, udp, decision, start)
            send(decision.wire)
        elif isinstance(decision, Forward):
            self._forward(decision, send)
        elif isinstance(decision, Drop) and not udp:
            send(b"")  # TCP: nothing to send, but the pipeline slot is free again

    def _send_reply(self, reply: Reply, waiter: Pending, send: Send, start: float) -> None:
        if self.log is not None:
            self._log(waiter.client, waiter.wire_key is not None, reply, start)
        send(reply.wire)

    def _forward(self, decision: Forward, send: Send) -> None:
        joined = self.flights.join(decision.key, (decision.waiter, send))
        if joined is FlightJoin.LEADER:
            task = self.loop.create_task(self._resolve(decision))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif joined is FlightJoin.REFUSED:
            for reply in self.engine.failed(decision.key, [decision.waiter], time.monotonic()):
                send(reply.wire)

    async def _resolve(self, decision: Forward) -> None:
        start = time.monotonic()
        query = dns.message.make_query(decision.qname, decision.qtype, use_edns=0, payload=1232)
        response: dns.message.Message | None = None
        for host, port in self.health.order(decision.upstreams, start):
            sent = time.monotonic()
            self.upstream_queries += 1
            try:
                response = await ask_upstream(query, host, port, self.timeout)
            except _UPSTREAM_ERRORS:
                response = None
            now = time.monotonic()
            if response is not None and response.rcode() not in (
                dns.rcode.SERVFAIL,
                dns.rcode.REFUSED,
            ):
                self.health.succeeded((host, port), now - sent, now)
                self._observe(now - sent)
                break
            self.upstream_failures += 1
            self.health.failed((host, port), now)
            response = None
        now = time.monotonic()
        waiters = self.flights.finish(decision.key)
        pending = [w for w, _ in waiters]
        if response is not None:
            try:
                size = len(response.to_wire())
            except dns.exception.DNSException:
                size = 512
            replies = self.engine.resolved(decision.key, response, size, pending, now)
        else:
            replies = self.engine.failed(decision.key, pending, now)
        for reply, (waiter, send) in zip(replies, waiters, strict=True):
            self._send_reply(reply, waiter, send, start)

    def _observe(self, latency: float) -> None:
        self.upstream_latency_sum += latency
        for i, bound in enumerate(LATENCY_BUCKETS):
            if latency <= bound:
                self.upstream_latency[i] += 1
                return
        self.upstream_latency[-1] += 1

    # ------------------------------------------------------------------ log and metrics

    def _log(self, client: str, udp: bool, reply: Reply, start: float) -> None:
        self.log_lines.append(
            json.dumps(
                {
                    "time": time.time(),
                    "client": client,
                    "transport": "udp" if udp else "tcp",
                    "qname": reply.qname,
                    "qtype": reply.qtype,
                    "rcode": reply.rcode,
                    "source": reply.source,
                    "size": len(reply.wire),
                    "duration_ms": round((time.monotonic() - start) * 1000, 3),
                },
                separators=(",", ":"),
            )
        )
        if len(self.log_lines) >= 512:
            self.flush_log()

    def flush_log(self) -> None:
        if self.log is not None and self.log_lines:
            self.log.write("\n".join(self.log_lines) + "\n")
            self.log.flush()
            self.log_lines.clear()

    def statistics(self) -> dict[str, Any]:
        """Plain counters of this process (see :meth:`metrics_text`)."""
        engine = self.engine
        by_type = dict(engine.stats.by_type)
        by_rcode = dict(engine.stats.by_rcode)
        by_source = dict(engine.stats.by_source)
        fast = engine.wire.hits()
        for (qtype, rcode, source), hits in fast.items():
            by_type[qtype] = by_type.get(qtype, 0) + hits
            by_rcode[rcode] = by_rcode.get(rcode, 0) + hits
            by_source[source] = by_source.get(source, 0) + hits
        cache = vars(engine.cache.statistics()).copy()
        cache["hits"] += sum(n for (_, _, source), n in fast.items() if source == "cache")
        drops = dict(engine.stats.dropped)
        for k, v in self.drops.items():
            drops[k] = drops.get(k, 0) + v
        return {
            "by_type": by_type,
            "by_rcode": by_rcode,
            "by_source": by_source,
            "drops": drops,
            "cache": cache,
            "fast_entries": len(engine.wire.table),
            "fast_hits": sum(fast.values()),
            "upstream_queries": self.upstream_queries,
            "upstream_failures": self.upstream_failures,
            "single_flight_joined": self.flights.joined,
            "latency": list(self.upstream_latency),
            "latency_sum": self.upstream_latency_sum,
            "reloads": self.reloads,
            "reload_errors": self.reload_errors,
            "upstreams": {
                f"{h}:{p}": {
                    "queries": s.queries,
                    "failures": s.failures,
                    "up": int(self.health.is_up((h, p), time.monotonic())),
                }
                for (h, p), s in self.health.stats.items()
            },
        }

    def publish(self) -> None:
        """Copy this worker's statistics into its shared slot (every tick)."""
        if self.slots is not None:
            slots, index = self.slots
            slots.write(index, self.statistics())

    def metrics_text(self) -> str:
        """Prometheus text exposition of every worker's :meth:`statistics` added up."""
        if self.slots is not None:
            self.publish()
            return render_dns_metrics(self.slots[0].totals())
        return render_dns_metrics(self.statistics())
