"""``backhaul bench``'s driver: an HTTP load generator on ``asyncio.Protocol`` + uvloop.

Two ways to load a target:

- **Closed loop** (wrk, hey): ``connections`` connections each send a request as soon as the
  previous answer is complete. Latency is measured from the moment a request is written.
- **Constant rate** (wrk2, oha ``-q``): request *i* is due at ``start + i / rate``. A due
  request goes out on the first free connection; if none is free it waits, and its latency
  is measured **from the time it was due**, not from when it could be written. A server
  stall therefore shows in the percentiles for every request that was due during it
  (coordinated omission cannot hide it).

HTTP/1.1 connections keep alive and parse answers with httptools (llhttp), one Python
callback per answer; HTTP/2 (``http2=True``) runs ``max_streams`` streams per connection on
the h2 library, over TLS with ALPN or as h2c with prior knowledge on ``http://``.

Latencies go into a plain integer array on the hot path and are folded into an HDR
histogram (hdrhistogram, 1 µs to 1 h, 3 significant digits) every 100 ms, which also yields
the latency-over-time series for the plot. Every load is bounded: by ``duration``, by
``requests``, and each request by ``timeout``.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import itertools
import math
import socket
import ssl
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import numpy as np  # imported here, not at the first tick: an import would stall the loop
from hdrh.histogram import HdrHistogram

from backhaul import __version__
from backhaul.errors import UsageError

__all__ = [
    "BenchOptions",
    "BenchResult",
    "Progress",
    "Sample",
    "bench",
    "h2_send_pending",
    "prepare",
    "run_bench",
]

TICK = 0.1  # seconds between histogram folds, timeout checks and progress updates
HIST_MAX_US = 3_600_000_000  # one hour
ERROR_KINDS = ("connect", "tls", "read", "write", "timeout", "protocol")
_clock = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux, as the loop's own time


@dataclass(frozen=True)
class Origin:
    """Where a group of connections goes: scheme, host, port and the requests it cycles."""

    scheme: str
    host: str
    port: int
    requests: tuple[bytes, ...]  # HTTP/1.1 heads (+ body), ready to write
    h2_requests: tuple[tuple[list[tuple[bytes, bytes]], bytes], ...]  # (headers, body)


@dataclass
class BenchOptions:
    """What to load and how (see ``backhaul bench --help``)."""

    urls: list[str]
    connections: int = 10
    duration: float | None = None  # seconds; default 10 when requests is not given
    requests: int | None = None
    rate: float | None = None  # requests per second over all connections; None: closed loop
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    http2: bool = False
    max_streams: int = 10  # HTTP/2 concurrent streams per connection
    timeout: float = 2.0  # per request, as wrk's --timeout
    insecure: bool = False
    cacert: str | None = None

    def check(self) -> None:
        """Raise :class:`UsageError` for values that cannot run."""
        if not self.urls:
            raise UsageError("bench needs at least one URL, e.g. http://127.0.0.1:8080/")
        if self.connections < 1 or self.connections > 100_000:
            raise UsageError(f"-c {self.connections}: give between 1 and 100000 connections")
        if self.duration is not None and not (0 < self.duration <= 86_400):
            raise UsageError(f"-d {self.duration}: give a duration between 0 and 24h")
        if self.requests is not None and self.requests < 1:
            raise UsageError(f"-n {self.requests}: give at least 1 request")
        if self.rate is not None and not (0 < self.rate <= 10_000_000):
            raise UsageError(f"--rate {self.rate}: give a rate above 0 requests per second")
        if not (0 < self.timeout <= 3600):
            raise UsageError(f"--timeout {self.timeout}: give a timeout between 0 and 3600 s")
        if self.max_streams < 1 or self.max_streams > 1000:
            raise UsageError(f"-m {self.max_streams}: give between 1 and 1000 streams")
        if self.duration is None and self.requests is None:
            self.duration = 10.0
        servers = len(_origins(self))
        if self.connections < servers:
            raise UsageError(
                f"-c {self.connections}: the URLs name {servers} servers; give at least one "
                "connection per server"
            )


@dataclass
class Sample:
    """One 100 ms interval: when it ended (s since start), answers, latency p50/p99/max (µs)."""

    t: float
    count: int
    p50: int
    p99: int
    max: int


@dataclass
class Progress:
    """What a live progress line shows."""

    elapsed: float
    completed: int
    errors: int
    rps: float
    p99_us: int
    in_flight: int


@dataclass
class BenchResult:
    """Everything a run measured."""

    options: BenchOptions
    mode: str  # "closed" or "rate"
    protocol: str  # "HTTP/1.1" or "HTTP/2"
    elapsed: float
    completed: int  # answers received (any status)
    bytes_read: int
    statuses: dict[int, int]
    errors: dict[str, int]
    histogram: HdrHistogram
    timeline: list[Sample]
    connects: int
    not_sent: int = 0  # constant rate: requests that were due but never went out

    @property
    def requests_per_second(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def bytes_per_second(self) -> float:
        return self.bytes_read / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def non_2xx_3xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 400)

    def percentile_us(self, p: float) -> int:
        return int(self.histogram.get_value_at_percentile(p)) if self.completed else 0


# ----------------------------------------------------------------------------- requests


def _origins(opts: BenchOptions) -> list[Origin]:
    """Group the URLs by origin, keeping their order; build each request once."""
    grouped: dict[tuple[str, str, int], list[str]] = {}
    for url in opts.urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"{url!r}: give an http:// or https:// URL with a host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise UsageError(f"{url!r}: bad port ({exc})") from None
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        grouped.setdefault((parts.scheme, parts.hostname, port), []).append(target)
    method = opts.method.upper()
    names = {name.lower() for name, _ in opts.headers}
    origins = []
    for (scheme, host, port), targets in grouped.items():
        authority = host if ":" not in host else f"[{host}]"
        default_port = 443 if scheme == "https" else 80
        if port != default_port:
            authority += f":{port}"
        # -H 'Host: name' names the virtual host, as with wrk and curl
        authority = next((v for n, v in opts.headers if n.lower() == "host"), authority)
        h1, h2 = [], []
        for target in targets:
            head = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
            if "user-agent" not in names:
                head.append(f"User-Agent: backhaul-bench/{__version__}")
            head += [f"{name}: {value}" for name, value in opts.headers if name.lower() != "host"]
            if opts.body or method in ("POST", "PUT", "PATCH"):
                head.append(f"Content-Length: {len(opts.body)}")
            h1.append(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + opts.body)
            pseudo = [
                (b":method", method.encode()),
                (b":scheme", scheme.encode()),
                (b":authority", authority.encode()),
                (b":path", target.encode()),
            ]
            rest = [
                (name.lower().encode(), value.encode("latin-1"))
                for name, value in opts.headers
                if name.lower() not in ("host", "connection", "keep-alive", "transfer-encoding")
            ]
            if "user-agent" not in names:
                rest.append((b"user-agent", f"backhaul-bench/{__version__}".encode()))
            if opts.body:
                rest.append((b"content-length", str(len(opts.body)).encode()))
            h2.append((pseudo + rest, opts.body))
        origins.append(Origin(scheme, host, port, tuple(h1), tuple(h2)))
    return origins


def _tls_context(opts: BenchOptions, http2: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=opts.cacert)
    if opts.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"] if http2 else ["http/1.1"])
    return ctx


# ----------------------------------------------------------------------------- the run


class _Run:
    """Books and scheduling shared by every connection of one run."""

    def __init__(self, opts: BenchOptions, loop: asyncio.AbstractEventLoop) -> None:
        self.opts = opts
        self.loop = loop
        self.lat = array("q")
        self.lat_append = self.lat.append
        self.statuses: dict[int, int] = {}
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.bytes_read = 0
        self.completed = 0
        self.issued = 0
        self.limit = opts.requests if opts.requests is not None else math.inf
        self.issuing = True
        # closed loop without -n: HTTP/1.1 answers send the next request themselves, with
        # no books beyond the latency and the status (the hot path; see on_message_complete)
        self.fast = not opts.rate and opts.requests is None
        self.connects = 0
        self.connections: list[Any] = []
        self.idle: list[Any] = []  # constant rate: free slots (a connection once per slot)
        self.rate_ns = 1e9 / opts.rate if opts.rate else 0.0
        self.rate_started = False
        self.start_ns = 0
        self.next_index = 0  # constant rate: the next request to go out
        self.timer: asyncio.TimerHandle | None = None
        self.done = loop.create_future()
        self.last_done_ns = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.timeout_ns = int(opts.timeout * 1e9)
        self.deadline_ns: int | None = None  # constant rate: nothing due after it goes out
        # one round-robin over each origin's URLs, shared by its connections
        self.h1_cycles: dict[tuple[str, str, int], Any] = {}
        self.h2_cycles: dict[tuple[str, str, int], Any] = {}

    def cycles(self, origin: Origin) -> tuple[Any, Any]:
        key = (origin.scheme, origin.host, origin.port)
        if key not in self.h1_cycles:
            self.h1_cycles[key] = itertools.cycle(origin.requests)
            self.h2_cycles[key] = itertools.cycle(origin.h2_requests)
        return self.h1_cycles[key], self.h2_cycles[key]

    # --- closing down

    def stop_issuing(self) -> None:
        self.issuing = self.fast = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.check_done()

    def in_flight(self) -> int:
        return sum(c.in_flight() for c in self.connections)

    def check_done(self) -> None:
        if not self.issuing and not self.done.done() and self.in_flight() == 0:
            self.done.set_result(None)

    def count_issued(self) -> None:
        self.issued += 1
        if self.issued >= self.limit:
            self.issuing = self.fast = False

    def failed(self, kind: str) -> None:
        """A request in flight ended in an error of ``kind``."""
        self.errors[kind] += 1
        self.last_done_ns = _clock()
        if not self.issuing:
            self.check_done()

    # --- slots: a connection with room for one more request

    def slot_free(self, conn: Any, now: int) -> None:
        if not self.issuing:
            self.check_done()
            return
        if not self.rate_ns:
            conn.send(now)
            self.count_issued()
            return
        if not self.rate_started:  # constant rate: the schedule starts when all are up
            self.idle.append(conn)
            return
        due = self.start_ns + int(self.next_index * self.rate_ns)
        if self.deadline_ns is not None and due >= self.deadline_ns:
            self.stop_issuing()
            return
        if due <= now:
            self.next_index += 1
            conn.send(due)
            self.count_issued()
        else:
            self.idle.append(conn)
            self._arm(due)

    def _arm(self, due_ns: int) -> None:
        if self.timer is None and self.issuing:
            delay = max(0.0, (due_ns - _clock()) / 1e9)
            self.timer = self.loop.call_later(delay, self.dispatch)

    def dispatch(self) -> None:
        """Constant rate: send every request that is due, on free slots."""
        self.timer = None
        now = _clock()
        idle = self.idle
        while self.issuing and idle:
            due = self.start_ns + int(self.next_index * self.rate_ns)
            if self.deadline_ns is not None and due >= self.deadline_ns:
                self.stop_issuing()
                return
            if due > now:
                self._arm(due)
                return
            conn = idle.pop()
            if not conn.usable():
                continue
            self.next_index += 1
            conn.send(due)
            self.count_issued()

    def not_sent(self, end_ns: int) -> int:
        """Constant rate: requests due before ``end_ns`` that never went out."""
        if not self.rate_ns:
            return 0
        due = math.ceil((end_ns - self.start_ns) / self.rate_ns)  # due strictly before the end
        if self.limit != math.inf:
            due = min(due, int(self.limit))
        return max(0, due - self.next_index)

    # --- connections

    def spawn_connect(self, origin: Origin, delay: float = 0.0) -> None:
        task = self.loop.create_task(self._connect(origin, delay))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, origin: Origin, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if not self.issuing:
            self.check_done()
            return
        http2 = self.opts.http2
        tls = _tls_context(self.opts, http2) if origin.scheme == "https" else None
        factory: Callable[[], asyncio.Protocol]
        if http2:
            factory = lambda: _H2Connection(self, origin)  # noqa: E731
        else:
            kind = _H1HeadConnection if self.opts.method.upper() == "HEAD" else _H1Connection
            factory = lambda: kind(self, origin)  # noqa: E731
        self.connects += 1
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    factory,
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                ),
                timeout=self.opts.timeout,
            )
        except ssl.SSLError:
            self.connect_failed(origin, "tls")
        except (TimeoutError, OSError):
            self.connect_failed(origin, "connect")

    def connect_failed(self, origin: Origin, kind: str) -> None:
        # A failed connect stands for a request that could not be made: it counts toward -n,
        # so a run against a dead target still ends.
        self.errors[kind] += 1
        if self.issuing:
            self.count_issued()
        if self.issuing:
            self.spawn_connect(origin, delay=0.01)
        else:
            self.check_done()

    def connection_gone(self, conn: Any) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        if self.issuing:
            self.spawn_connect(conn.origin)
        else:
            self.check_done()

    # --- every tick

    def fold(self, hist: HdrHistogram, timeline: list[Sample], elapsed: float) -> None:
        """Move the latencies recorded since the last tick into the histogram."""
        lat = self.lat
        self.lat = array("q")
        self.lat_append = self.lat.append
        if not lat:
            timeline.append(Sample(round(elapsed, 3), 0, 0, 0, 0))
            return

        values = np.frombuffer(lat, dtype=np.int64)
        np.clip(values, 1, HIST_MAX_US, out=values)
        p50, p99 = np.percentile(values, [50, 99])
        timeline.append(
            Sample(round(elapsed, 3), len(values), int(p50), int(p99), int(values.max()))
        )
        uniq, counts = np.unique(values, return_counts=True)
        record = hist.record_value
        for value, count in zip(uniq.tolist(), counts.tolist(), strict=True):
            record(value, count)

    def expire(self, now: int) -> None:
        for conn in list(self.connections):
            conn.expire(now)


class _Connection(asyncio.Protocol):
    """What the run asks of a connection, whatever its protocol."""

    __slots__ = ("closing", "transport")
    transport: asyncio.Transport | None
    closing: bool

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


class _H1Connection(_Connection):
    """One HTTP/1.1 keep-alive connection with at most one request in flight."""

    __slots__ = (
        "busy",
        "closing",
        "cycle",
        "head_done",
        "origin",
        "parser",
        "run",
        "sent_at",
        "stamp",
        "transport",
    )

    def __init__(self, run: _Run, origin: Origin) -> None:
        self.run = run
        self.origin = origin
        self.cycle = run.cycles(origin)[0]
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.stamp = 0  # when the request in flight was sent (closed) or due (rate)
        self.sent_at = 0
        self.closing = False
        self.head_done = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.run.connections.append(self)
        self.run.slot_free(self, _clock())

    def data_received(self, data: bytes) -> None:
        self.run.bytes_read += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abandon("protocol")
        except httptools.HttpParserUpgrade:
            self.abandon("protocol")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy and not self.closing:
            self.busy = False
            self.run.failed("read")
        self.transport = None
        self.run.connection_gone(self)

    # httptools callback
    def on_message_complete(self) -> None:
        now = _clock()
        run = self.run
        run.lat_append((now - self.stamp) // 1000)
        status = self.parser.get_status_code()
        statuses = run.statuses
        statuses[status] = statuses.get(status, 0) + 1
        run.completed += 1
        if not self.parser.should_keep_alive():
            self.busy = False
            run.last_done_ns = now
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        if run.fast:  # closed loop with no request limit: the next request goes out now
            self.stamp = self.sent_at = now
            self.transport.write(next(self.cycle))  # type: ignore[union-attr]
            return
        self.busy = False
        run.last_done_ns = now
        run.slot_free(self, now)

    # the run's calls
    def send(self, stamp: int) -> None:
        self.busy = True
        self.stamp = stamp
        self.sent_at = _clock()
        self.transport.write(next(self.cycle))  # type: ignore[union-attr]

    def usable(self) -> bool:
        return self.transport is not None and not self.closing and not self.busy

    def in_flight(self) -> int:
        return 1 if self.busy else 0

    def expire(self, now: int) -> None:
        if self.busy and now - self.sent_at > self.run.timeout_ns:
            self.abandon("timeout")

    def abandon(self, kind: str) -> None:
        """Give up on the request in flight (counted as ``kind``) and close."""
        if self.busy:
            self.busy = False
            self.run.failed(kind)
        self.close()


class _H1HeadConnection(_H1Connection):
    """HEAD: an answer ends with its head whatever its Content-Length says (RFC 9110
    section 9.3.2); the parser, which cannot know the method, is replaced after each one."""

    __slots__ = ()

    def on_headers_complete(self) -> None:
        self.head_done = True
        super().on_message_complete()

    def on_message_complete(self) -> None:
        if not self.head_done:  # Content-Length: 0 ends the message right after the head
            super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        self.head_done = False
        super().data_received(data)
        if self.head_done:
            self.parser = httptools.HttpResponseParser(self)


def h2_send_pending(conn: Any, pending: dict[int, bytes], stream_id: int) -> None:
    """Queue DATA frames for ``pending[stream_id]`` on an h2 connection as far as flow control
    allows, in frames no larger than the peer takes; what is left stays in ``pending`` (the
    stream ends with the last byte)."""
    data = pending.get(stream_id)
    while data:
        room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
        if room <= 0:
            break
        chunk, data = data[:room], data[room:]
        conn.send_data(stream_id, chunk, end_stream=not data)
    if data:
        pending[stream_id] = data
    else:
        pending.pop(stream_id, None)


class _H2Connection(_Connection):
    """One HTTP/2 connection carrying up to ``max_streams`` requests at once (h2)."""

    def __init__(self, run: _Run, origin: Origin) -> None:
        import h2.config
        import h2.connection

        self.run = run
        self.origin = origin
        self.cycle = run.cycles(origin)[1]
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[int, int, int]] = {}  # id -> (stamp, sent_at, status)
        self.pending: dict[int, bytes] = {}  # request body bytes waiting for window
        self.refused = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.origin.scheme == "https":
            ssl_object = self.transport.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                # the server does not speak HTTP/2: a failed connect, counted toward -n
                self.closing = self.refused = True
                self.transport.abort()
                self.run.connect_failed(self.origin, "protocol")
                return
        self.h2.initiate_connection()
        self.transport.write(self.h2.data_to_send())
        self.run.connections.append(self)
        now = _clock()
        for _ in range(self.run.opts.max_streams):
            self.run.slot_free(self, now)

    def data_received(self, data: bytes) -> None:
        import h2.events
        import h2.exceptions

        run = self.run
        run.bytes_read += len(data)
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.abandon("protocol")
            return
        freed = 0
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                entry = self.streams.get(event.stream_id)
                if entry is not None:
                    status = int(dict(event.headers).get(b":status", b"0"))
                    self.streams[event.stream_id] = (entry[0], entry[1], status)
            elif isinstance(event, h2.events.WindowUpdated):
                for stream_id in [event.stream_id] if event.stream_id else list(self.pending):
                    if stream_id in self.pending:
                        self._flush(stream_id)
            elif isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                entry = self.streams.pop(event.stream_id, None)
                if entry is not None:
                    now = _clock()
                    run.lat_append((now - entry[0]) // 1000)
                    run.statuses[entry[2]] = run.statuses.get(entry[2], 0) + 1
                    run.completed += 1
                    run.last_done_ns = now
                    freed += 1
            elif isinstance(event, h2.events.StreamReset):
                self.pending.pop(event.stream_id, None)
                if self.streams.pop(event.stream_id, None) is not None:
                    run.failed("protocol")
                    freed += 1
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.abandon("read")
                return
        if self.transport is not None:
            self.transport.write(self.h2.data_to_send())
        now = _clock()
        for _ in range(freed):
            if self.closing:
                break
            run.slot_free(self, now)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:  # already counted and replaced
            return
        if self.streams and not self.closing:
            for _ in self.streams:
                self.run.failed("read")
            self.streams.clear()
        self.transport = None
        self.closing = True
        self.run.connection_gone(self)

    def send(self, stamp: int) -> None:
        headers, body = next(self.cycle)
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.pending[stream_id] = body
            self._flush(stream_id)
        self.streams[stream_id] = (stamp, _clock(), 0)
        self.transport.write(self.h2.data_to_send())  # type: ignore[union-attr]

    def _flush(self, stream_id: int) -> None:
        """Send as much of a request body as flow control allows."""
        h2_send_pending(self.h2, self.pending, stream_id)

    def usable(self) -> bool:
        return (
            self.transport is not None
            and not self.closing
            and len(self.streams) < self.run.opts.max_streams
        )

    def in_flight(self) -> int:
        return len(self.streams)

    def expire(self, now: int) -> None:
        limit = self.run.timeout_ns
        if any(now - sent > limit for _, sent, _ in self.streams.values()):
            self.abandon("timeout")

    def abandon(self, kind: str) -> None:
        """Give up on every stream in flight (counted as ``kind``) and close."""
        self.pending.clear()
        for _ in self.streams:
            self.run.failed(kind)
        self.streams.clear()
        self.close()


# ----------------------------------------------------------------------------- entry points


def prepare(opts: BenchOptions) -> None:
    """Load every module a run will use before its clock starts: an import in the middle of
    a run stops the loop (numpy's first percentile alone took ~150 ms here) and shows up as
    latency that the server never caused."""
    if opts.http2:
        for name in ("h2.config", "h2.connection", "h2.events", "h2.exceptions"):
            importlib.import_module(name)
    sample = np.array([1, 2, 3], dtype=np.int64)
    np.percentile(sample, [50, 99])
    np.unique(sample, return_counts=True)
    HdrHistogram(1, HIST_MAX_US, 3).record_value(1, 1)


async def run_bench(
    opts: BenchOptions, progress: Callable[[Progress], None] | None = None
) -> BenchResult:
    """Run the load described by ``opts`` on the running loop and return what it measured."""
    opts.check()
    origins = _origins(opts)
    loop = asyncio.get_running_loop()
    run = _Run(opts, loop)
    hist = HdrHistogram(1, HIST_MAX_US, 3)
    timeline: list[Sample] = []
    # The hot path allocates and frees (by reference count) a few objects per answer; the
    # cyclic collector would walk the heap every few hundred answers for nothing (5% of the
    # generator's time in a profile). It is off for the run and back on after.
    prepare(opts)
    gc_was_on = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    run.start_ns = _clock()
    run.last_done_ns = run.start_ns
    stopper: asyncio.TimerHandle | None = None
    drain_deadline: int | None = None
    previous = (0, 0)
    try:
        for i in range(opts.connections):
            run.spawn_connect(origins[i % len(origins)])
        if opts.rate:
            # The schedule starts once the connections are up (as wrk2's does): requests due
            # while the first handshakes run would count set-up time as latency.
            wait_until = _clock() + run.timeout_ns
            while len(run.connections) < opts.connections and run.tasks:
                if _clock() >= wait_until:
                    break
                await asyncio.sleep(0.002)
            run.start_ns = run.last_done_ns = _clock()
            run.rate_started = True
        deadline = run.start_ns + int(opts.duration * 1e9) if opts.duration else None
        run.deadline_ns = deadline
        if opts.duration:
            stopper = loop.call_later(opts.duration, run.stop_issuing)
        if opts.rate:
            run.dispatch()
        while not run.done.done():
            try:
                await asyncio.wait_for(asyncio.shield(run.done), TICK)
            except TimeoutError:
                pass
            now = _clock()
            run.expire(now)
            elapsed = (now - run.start_ns) / 1e9
            run.fold(hist, timeline, elapsed)
            if run.issuing and deadline is not None and now >= deadline:
                run.stop_issuing()
            if not run.issuing and drain_deadline is None:
                drain_deadline = now + run.timeout_ns
            if drain_deadline is not None and now >= drain_deadline:
                for conn in list(run.connections):
                    conn.abandon("timeout")
                break
            if progress is not None:
                done, t0 = previous
                rps = (run.completed - done) / max(1e-9, elapsed - t0 / 1e9)
                previous = (run.completed, now - run.start_ns)
                progress(
                    Progress(
                        elapsed,
                        run.completed,
                        sum(run.errors.values()),
                        rps,
                        timeline[-1].p99,
                        run.in_flight(),
                    )
                )
    finally:
        if gc_was_on:
            gc.enable()
        gc.unfreeze()
        run.issuing = run.fast = False
        if stopper is not None:
            stopper.cancel()
        if run.timer is not None:
            run.timer.cancel()
        for conn in list(run.connections):
            conn.close()
        for task in list(run.tasks):
            task.cancel()
        if run.tasks:
            await asyncio.gather(*run.tasks, return_exceptions=True)
    end = max(run.last_done_ns, run.start_ns + 1)
    if deadline is not None and run.rate_ns:
        end = max(end, min(deadline, _clock()))
    run.fold(hist, timeline, (end - run.start_ns) / 1e9)
    return BenchResult(
        options=opts,
        mode="rate" if opts.rate else "closed",
        protocol="HTTP/2" if opts.http2 else "HTTP/1.1",
        elapsed=(end - run.start_ns) / 1e9,
        completed=run.completed,
        bytes_read=run.bytes_read,
        statuses=dict(sorted(run.statuses.items())),
        errors=run.errors,
        histogram=hist,
        timeline=timeline,
        connects=run.connects,
        not_sent=run.not_sent(min(deadline, end) if deadline else end),
    )


def bench(opts: BenchOptions, progress: Callable[[Progress], None] | None = None) -> BenchResult:
    """Run :func:`run_bench` on a fresh uvloop loop (asyncio's where uvloop is missing)."""
    opts.check()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    with runner:
        return runner.run(run_bench(opts, progress))
