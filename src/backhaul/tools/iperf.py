"""``backhaul iperf``'s driver: an iperf3-compatible bandwidth tester (client and server).

The control connection follows :mod:`backhaul.proto.iperf3` step by step, so ``backhaul
iperf -c`` measures against a real ``iperf3 -s`` and ``iperf3 -c`` runs against ``backhaul
iperf -s``. The data path is built for speed in Python:

- one thread per stream on a blocking socket; ``send`` of one preallocated buffer and
  ``recv_into`` one preallocated buffer (no copies, no allocation per call), so the GIL is
  released for nearly all of a stream's time and parallel streams (``-P``) run on several
  cores at once;
- 128 KiB blocks by default (iperf3's), a stream is stopped by ``shutdown`` from the control
  thread, never by polling a timeout;
- UDP is paced to the target rate (``-b``) per stream, each datagram stamped with the send
  time and a sequence number; the receiver keeps RFC 3550 jitter, loss and out-of-order
  counts (:mod:`backhaul.proto.jitter`).

Every control read has a deadline; a peer that stops talking gets a clear error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backhaul import __version__
from backhaul.errors import (
    ConnectError,
    NetworkError,
    ProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    UsageError,
)
from backhaul.proto.iperf3 import (
    COOKIE_SIZE,
    LEGACY_UDP_CONNECT_REPLY,
    MAX_PARAMS_JSON,
    MAX_RESULTS_JSON,
    UDP_CONNECT_MSG,
    UDP_CONNECT_REPLY,
    IperfParameters,
    IperfResults,
    State,
    StreamResult,
    decode_json,
    encode_json,
    error_text,
    json_length,
    make_cookie,
    stream_ids,
    udp_header_size,
)
from backhaul.proto.jitter import DatagramStatistics

__all__ = [
    "IntervalSample",
    "IperfError",
    "IperfReport",
    "StreamReport",
    "run_client",
    "serve",
]

CONTROL_TIMEOUT = 10.0  # seconds a control step may take
STREAM_SETUP_TIMEOUT = 10.0
_TCP_INFO = struct.Struct("B" * 8 + "I" * 24)


class IperfError(NetworkError):
    """The test could not run or finish (the peer refused, went away, or broke protocol)."""


@dataclass
class IntervalSample:
    stream: int  # stream id
    fd: int  # the stream's socket, as iperf3 labels its lines
    start: float
    end: float
    bytes: int
    packets: int = 0
    retransmits: int | None = None
    snd_cwnd: int | None = None
    rtt: int | None = None  # microseconds
    sender: bool = True
    omitted: bool = False  # within the first -O seconds, left out of the results


class _Stream:
    """One data stream: its socket, its thread and its counters."""

    def __init__(self, stream_id: int, sock: socket.socket, sender: bool, params: IperfParameters):
        self.id = stream_id
        self.sock = sock
        self.fd = sock.fileno()
        self.sender = sender
        self.params = params
        self.udp = params.protocol == "udp"
        self.bytes = 0
        self.packets = 0
        self.blocks = 0
        self.send_errors = 0
        self.running = False
        self.thread: threading.Thread | None = None
        self.stats = DatagramStatistics() if self.udp and not sender else None
        self.start = 0.0  # where the measured part began (moves at the end of -O)
        self.paced_from = 0.0  # where the pacing began (never moves)
        self.end = 0.0
        self.final_bytes: int | None = None
        self.retrans_base = 0
        self.local = sock.getsockname()
        self.remote = sock.getpeername()
        self.max_cwnd = 0
        self.rtts: list[int] = []
        self.error: BaseException | None = None
        self.byte_limit = 0  # -n / -k: this sender's share of the test's total
        self.block_limit = 0
        self.omit_bytes = 0  # counts when the -O period ended, left out of the results
        self.omit_packets = 0
        self.omit_lost = 0

    # -- the data path ---------------------------------------------------------------------

    def begin(self) -> None:
        self.start = self.paced_from = time.monotonic()
        if not self.udp and self.sender:
            info = tcp_info(self.sock)
            self.retrans_base = 0 if info is None else info["total_retrans"]
        self.running = True
        target = (
            (self._udp_send if self.sender else self._udp_receive)
            if self.udp
            else (self._tcp_send if self.sender else self._tcp_receive)
        )
        self.thread = threading.Thread(target=self._guard(target), daemon=True)
        self.thread.start()

    def _guard(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except OSError:
                pass  # the peer closed or we shut the socket down: the stream is over
            except BaseException as exc:  # reported by the test's owner
                self.error = exc

        return run

    def _pace(self, rate: int) -> None:
        """Sleep while this stream is ahead of ``rate`` bits per second."""
        ahead = self.bytes * 8 / rate - (time.monotonic() - self.paced_from)
        if ahead > 0:
            time.sleep(min(ahead, 0.05))

    def _tcp_send(self) -> None:
        block = memoryview(bytearray(os.urandom(self.params.block_size)))
        send = self.sock.send
        rate = self.params.target_rate
        byte_limit, block_limit = self.byte_limit, self.block_limit
        while self.running:
            self.bytes += send(block)
            self.blocks += 1
            if rate:
                self._pace(rate)
            if (byte_limit and self.bytes >= byte_limit) or (
                block_limit and self.blocks >= block_limit
            ):
                break

    def _tcp_receive(self) -> None:
        view = memoryview(bytearray(max(self.params.block_size, 256 * 1024)))
        recv_into = self.sock.recv_into
        while True:
            n = recv_into(view)
            if not n:
                break
            self.bytes += n

    def _udp_send(self) -> None:
        size = self.params.block_size
        block = bytearray(os.urandom(size))
        wide = self.params.udp_counters_64bit
        fmt = struct.Struct("!IIQ" if wide else "!III")
        pack_into = fmt.pack_into
        send = self.sock.send
        rate = self.params.target_rate
        sequence = 0
        while self.running:
            if rate:
                ahead = self.bytes * 8 / rate - (time.monotonic() - self.paced_from)
                if ahead > 0:
                    time.sleep(min(ahead, 0.05))
                    continue
            sequence += 1
            now = time.time()
            sec = int(now)
            pack_into(block, 0, sec & 0xFFFFFFFF, int((now - sec) * 1e6), sequence)
            try:
                self.bytes += send(block)
            except OSError as exc:
                # no buffer room (ENOBUFS), or an ICMP unreachable from a peer that is not
                # listening yet or any more: count it and go on, the datagram is not sent
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.ECONNREFUSED):
                    raise
                self.send_errors += 1
                sequence -= 1
                time.sleep(0.001)
                continue
            self.packets += 1
            self.blocks += 1
            if (self.byte_limit and self.bytes >= self.byte_limit) or (
                self.block_limit and self.blocks >= self.block_limit
            ):
                break

    def _udp_receive(self) -> None:
        view = memoryview(bytearray(65536))
        recv_into = self.sock.recv_into
        wide = self.params.udp_counters_64bit
        unpack = struct.Struct("!IIQ" if wide else "!III").unpack_from
        header = udp_header_size(wide)
        stats = self.stats
        assert stats is not None
        while True:
            n = recv_into(view)
            if not n:
                break
            arrived = time.time()
            if n < header:
                continue
            sec, usec, sequence = unpack(view)
            stats.update(sequence, n, sec + usec / 1e6, arrived)
            self.bytes += n
            self.packets = stats.highest

    def shutdown(self) -> None:
        """Wake the stream's thread: its blocked call returns (a receiver sees EOF)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def join(self, timeout: float = 1.0) -> None:
        if self.thread is None:
            return
        self.thread.join(timeout)
        if self.thread.is_alive():  # a sender blocked on a full window: wake it
            self.shutdown()
            self.thread.join(timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    @property
    def counted_bytes(self) -> int:
        return self.bytes if self.final_bytes is None else self.final_bytes

    def result(self, has_retransmits: bool) -> StreamResult:
        retransmits = -1
        if self.sender and has_retransmits:
            info = tcp_info(self.sock)
            if info is not None:
                retransmits = info["total_retrans"] - self.retrans_base
        stats = self.stats
        return StreamResult(
            id=self.id,
            bytes=self.counted_bytes - self.omit_bytes,
            retransmits=retransmits,
            jitter=stats.jitter if stats else 0.0,
            errors=stats.lost if stats else 0,
            packets=stats.highest if stats else self.packets,
            start_time=0.0,
            end_time=max(self.end - self.start, 0.0),
            omitted_errors=self.omit_lost,
            omitted_packets=self.omit_packets,
        )


def tcp_info(sock: socket.socket) -> dict[str, int] | None:
    """The fields of Linux's ``struct tcp_info`` that iperf3 reports, or None."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if len(raw) < _TCP_INFO.size:
        return None
    fields = _TCP_INFO.unpack_from(raw)[8:]
    return {
        "snd_mss": fields[2],
        "rtt": fields[15],
        "rttvar": fields[16],
        "snd_cwnd": fields[18] * fields[2],
        "total_retrans": fields[23],
    }


# -- control connection helpers ------------------------------------------------------------


def _wait_readable(sock: socket.socket, deadline: float, late: str) -> None:
    """Wait until ``sock`` can be read; past ``deadline`` raise ReadTimeout(``late``)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ReadTimeout(late)
        if select.select([sock], [], [], left)[0]:
            return


def _recv_exact(sock: socket.socket, size: int, deadline: float, what: str) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        _wait_readable(sock, deadline, f"iperf3 peer sent no {what} in time")
        try:
            data = sock.recv(size - len(chunks))
        except ConnectionError as exc:
            raise IperfError(f"control connection lost while reading {what}: {exc}") from exc
        if not data:
            raise IperfError(f"the peer closed the control connection (expected {what})")
        chunks += data
    return bytes(chunks)


def _read_state(sock: socket.socket, deadline: float) -> State:
    return State.from_byte(_recv_exact(sock, 1, deadline, "state"))


def _read_json(sock: socket.socket, limit: int, deadline: float) -> dict[str, Any]:
    length = json_length(_recv_exact(sock, 4, deadline, "JSON length"), limit)
    return decode_json(_recv_exact(sock, length, deadline, "JSON"))


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError as exc:
        raise IperfError(f"control connection lost: {exc}") from exc


def _cpu_times() -> tuple[float, float, float]:
    t = os.times()
    return time.monotonic(), t.user + t.children_user, t.system + t.children_system


def _cpu_percent(start: tuple[float, float, float]) -> tuple[float, float, float]:
    now = _cpu_times()
    wall = max(now[0] - start[0], 1e-9)
    user = (now[1] - start[1]) / wall * 100
    system = (now[2] - start[2]) / wall * 100
    return user + system, user, system


def _congestion(sock: socket.socket) -> str | None:
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    except OSError:
        return None
    return raw.split(b"\0", 1)[0].decode() or None


def _apply_options(sock: socket.socket, params: IperfParameters) -> None:
    if params.window:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, params.window)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, params.window)
    if params.protocol == "tcp":
        if params.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if params.mss:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, params.mss)
        if params.congestion:
            try:
                sock.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_CONGESTION, params.congestion.encode()
                )
            except OSError as exc:
                raise UsageError(
                    f"congestion control {params.congestion!r}: {exc.strerror}"
                ) from exc


# -- reports -------------------------------------------------------------------------------


@dataclass
class StreamReport:
    """One stream's end figures, both sides (``None`` where the side did not say)."""

    id: int
    fd: int
    sender_is_local: bool
    local: tuple[Any, ...]
    remote: tuple[Any, ...]
    sent_bytes: int
    sent_seconds: float
    received_bytes: int
    received_seconds: float
    retransmits: int | None = None
    jitter: float | None = None
    lost: int | None = None
    packets: int | None = None
    out_of_order: int | None = None
    max_cwnd: int | None = None
    rtt: tuple[int, int, int] | None = None  # min, mean, max microseconds


@dataclass
class IperfReport:
    """Everything a finished test measured, on this side."""

    role: str  # "client" or "server"
    params: IperfParameters
    cookie: str
    peer: tuple[Any, ...]
    started: float  # wall clock
    duration: float
    intervals: list[list[IntervalSample]] = field(default_factory=list)
    streams: list[StreamReport] = field(default_factory=list)
    cpu_local: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpu_remote: tuple[float, float, float] = (0.0, 0.0, 0.0)
    congestion_local: str | None = None
    congestion_remote: str | None = None
    sndbuf: int = 0
    rcvbuf: int = 0
    server_output_text: str | None = None  # the server's report (--get-server-output)
    server_output_json: dict[str, Any] | None = None


class _Test:
    """The streams and the clock of one running test (shared by client and server)."""

    def __init__(self, params: IperfParameters, interval: float | None,
                 on_interval: Callable[[list[IntervalSample]], None] | None) -> None:  # fmt: skip
        self.params = params
        self.streams: list[_Stream] = []
        self.interval = interval
        self.on_interval = on_interval
        self.intervals: list[list[IntervalSample]] = []
        self._last: dict[int, tuple[int, int, int]] = {}
        self.start = 0.0  # the data phase's start; after -O, the measured part's start
        self.tick_start = 0.0
        self.cpu = _cpu_times()
        self.omitting = False
        self.omit_end = 0.0
        self.next_tick = float("inf")

    def begin(self) -> None:
        senders = [s for s in self.streams if s.sender]
        for s in senders:
            s.byte_limit = -(-self.params.bytes // len(senders))
            s.block_limit = -(-self.params.blocks // len(senders))
        self.cpu = _cpu_times()
        self.start = self.tick_start = time.monotonic()
        self.omitting = self.params.omit > 0
        self.omit_end = self.start + self.params.omit
        if self.interval:
            self.next_tick = self.start + min(self.interval, self.params.omit or self.interval)
        for stream in self.streams:
            stream.begin()
        self._last = {s.id: (0, 0, s.retrans_base) for s in self.streams}

    def on_time(self, now: float) -> float:
        """Take the interval sample (and end the -O period) that is due by ``now``;
        returns when to call again."""
        if self.omitting and now >= self.omit_end:
            self.sample(now)
            self._end_omit(now)
        elif now >= self.next_tick:
            self.sample(now)
            self.next_tick = now + self.interval if self.interval else float("inf")
            if self.omitting:
                self.next_tick = min(self.next_tick, self.omit_end)
        return self.next_tick

    def _end_omit(self, now: float) -> None:
        """The -O seconds are over: what was counted so far is left out, the clock restarts
        (iperf3's iperf_reset_stats)."""
        self.omitting = False
        for s in self.streams:
            s.omit_bytes = s.bytes
            s.start = now
            retrans = s.retrans_base
            if s.stats is not None:
                s.omit_packets = s.stats.highest
                s.omit_lost = s.stats.lost
                s.stats.estimator.jitter = 0.0
            else:
                s.omit_packets = s.packets
            if s.sender and not s.udp:
                info = tcp_info(s.sock)
                if info is not None:
                    retrans = s.retrans_base = info["total_retrans"]
            self._last[s.id] = (s.bytes, s.packets, retrans)
        self.start = self.tick_start = now
        self.next_tick = now + self.interval if self.interval else float("inf")

    def sample(self, now: float) -> None:
        samples = []
        for s in self.streams:
            last_bytes, last_packets, last_retrans = self._last[s.id]
            total = s.counted_bytes
            sample = IntervalSample(
                stream=s.id, fd=s.fd, start=self.tick_start - self.start, end=now - self.start,
                bytes=total - last_bytes, packets=s.packets - last_packets, sender=s.sender,
                omitted=self.omitting,
            )  # fmt: skip
            retrans = last_retrans
            if s.sender and not s.udp:
                info = tcp_info(s.sock)
                if info is not None:
                    retrans = info["total_retrans"]
                    sample.retransmits = retrans - last_retrans
                    sample.snd_cwnd = info["snd_cwnd"]
                    sample.rtt = info["rtt"]
                    s.max_cwnd = max(s.max_cwnd, info["snd_cwnd"])
                    s.rtts.append(info["rtt"])
            self._last[s.id] = (total, s.packets, retrans)
            samples.append(sample)
        self.tick_start = now
        if samples and samples[0].end - samples[0].start > 1e-3:
            self.intervals.append(samples)
            if self.on_interval is not None:
                self.on_interval(samples)

    def finished_by_count(self) -> bool:
        """-n / -k reached, by what was sent or by what was received (as iperf3 checks);
        a receiver counts blocks as whole block sizes received."""
        p = self.params
        sent = sum(s.bytes for s in self.streams if s.sender)
        received = sum(s.bytes for s in self.streams if not s.sender)
        if p.bytes and (sent >= p.bytes or received >= p.bytes):
            return True
        blocks = sum(s.blocks for s in self.streams if s.sender)
        return bool(p.blocks and (blocks >= p.blocks or received >= p.blocks * p.block_size))

    def stop(self, hard: bool = False) -> None:
        """End the data phase: senders finish their current call and every stream's count
        is frozen. ``hard`` (the server, on TEST_END) also cuts every socket off and waits
        for the threads; otherwise (the client) receivers keep draining until the server
        closes its end, as iperf3's client does: the sender must not see a broken pipe."""
        for s in self.streams:
            s.running = False
        if hard:
            for s in self.streams:
                s.shutdown()
        for s in self.streams:
            if s.sender:
                s.join()
        now = time.monotonic()
        for s in self.streams:
            s.end = now
            s.final_bytes = s.bytes
        self.sample(now)
        if hard:
            for s in self.streams:
                s.join()

    def close(self) -> None:
        """Stop every stream's thread (waking it if blocked) and close every socket."""
        for s in self.streams:
            s.running = False
            if s.thread is not None and s.thread.is_alive():
                s.shutdown()
            s.close()

    def results(self) -> IperfResults:
        has_retrans = self.params.protocol == "tcp" and any(s.sender for s in self.streams)
        cpu = _cpu_percent(self.cpu)
        congestion = None
        if self.params.protocol == "tcp" and self.streams:
            congestion = _congestion(self.streams[0].sock)
        return IperfResults(
            cpu_total=cpu[0], cpu_user=cpu[1], cpu_system=cpu[2],
            sender_has_retransmits=(1 if has_retrans else 0)
            if any(s.sender for s in self.streams) else -1,
            streams=[s.result(has_retrans) for s in self.streams],
            congestion_used=congestion,
        )  # fmt: skip


def _stream_reports(test: _Test, ours: IperfResults, theirs: IperfResults) -> list[StreamReport]:
    by_id = {r.id: r for r in theirs.streams}
    mine = {r.id: r for r in ours.streams}
    reports = []
    for s in test.streams:
        local = mine[s.id]
        remote = by_id.get(s.id)
        if remote is None:
            raise RemoteProtocolError(f"the peer's results have no stream {s.id}")
        sender, receiver = (local, remote) if s.sender else (remote, local)
        report = StreamReport(
            id=s.id, fd=s.fd, sender_is_local=s.sender, local=s.local, remote=s.remote,
            sent_bytes=sender.bytes, sent_seconds=sender.end_time - sender.start_time,
            received_bytes=receiver.bytes,
            received_seconds=receiver.end_time - receiver.start_time,
        )  # fmt: skip
        if s.udp:
            report.jitter = receiver.jitter
            # a peer that does not report its -O counts (iperf3 3.12): take ours, as
            # iperf3 does
            omitted_lost = receiver.omitted_errors
            omitted_sent = sender.omitted_packets
            report.lost = receiver.errors - (s.omit_lost if omitted_lost is None else omitted_lost)
            report.packets = sender.packets - (
                s.omit_packets if omitted_sent is None else omitted_sent
            )
            stats = s.stats
            report.out_of_order = stats.out_of_order if stats is not None else 0
        else:
            report.retransmits = sender.retransmits if sender.retransmits >= 0 else None
            if s.sender:
                report.max_cwnd = s.max_cwnd or None
                if s.rtts:
                    report.rtt = (min(s.rtts), sum(s.rtts) // len(s.rtts), max(s.rtts))
        reports.append(report)
    return reports


# -- the client ----------------------------------------------------------------------------


def _connect(host: str, port: int, timeout: float, bind: str | None) -> socket.socket:
    try:
        sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(bind, 0) if bind else None
        )
    except TimeoutError as exc:
        raise ConnectError(f"connect to {host} port {port}: timed out", peer=host) from exc
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    except OSError as exc:
        raise ConnectError(
            f"connect to {host} port {port}: {exc.strerror or exc}", peer=host
        ) from exc
    sock.settimeout(None)
    return sock


def _udp_stream(
    host: str, port: int, family: int, params: IperfParameters, deadline: float
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        _apply_options(sock, params)
        if params.block_size > 200_000:
            raise UsageError("UDP length is larger than a datagram")
        sock.connect((host, port))
        sock.send(UDP_CONNECT_MSG)
        seen = 0
        limit = 4 + 2 * params.block_size if params.reverse or params.bidirectional else 4
        while True:
            late = "the server did not answer the UDP stream's connect message"
            _wait_readable(sock, deadline, late)
            data = sock.recv(65536)
            if data[:4] in (UDP_CONNECT_REPLY, LEGACY_UDP_CONNECT_REPLY) and len(data) == 4:
                return sock
            seen += len(data)
            if seen > limit:
                raise RemoteProtocolError("the server's UDP connect reply never came")
    except BaseException:
        sock.close()
        raise


def run_client(
    host: str,
    port: int,
    params: IperfParameters,
    interval: float | None = 1.0,
    on_interval: Callable[[list[IntervalSample]], None] | None = None,
    on_connected: Callable[[list[tuple[int, int, tuple[Any, ...], tuple[Any, ...]]]], None]
    | None = None,
    bind: str | None = None,
    connect_timeout: float = 10.0,
) -> IperfReport:
    """Run one test against an iperf3 server (``iperf3 -s`` or ``backhaul iperf -s``)."""
    params.validate()
    params.client_version = f"backhaul {__version__}"
    cookie = make_cookie(os.urandom(COOKIE_SIZE - 1))
    ctrl = _connect(host, port, connect_timeout, bind)
    ctrl.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    test = _Test(params, interval, on_interval)
    started = time.time()
    peer = ctrl.getpeername()
    try:
        _send(ctrl, cookie)
        results: IperfResults | None = None
        theirs: IperfResults | None = None
        while True:
            state = _read_state(ctrl, time.monotonic() + CONTROL_TIMEOUT)
            if state == State.PARAM_EXCHANGE:
                _send(ctrl, encode_json(params.to_json()))
            elif state == State.CREATE_STREAMS:
                _create_streams(test, host, port, ctrl.family, cookie, bind)
                if on_connected is not None:
                    on_connected([(s.id, s.fd, s.local, s.remote) for s in test.streams])
            elif state == State.TEST_START:
                pass
            elif state == State.TEST_RUNNING:
                _run_test(test, ctrl)
                _send(ctrl, State.TEST_END.byte())
            elif state == State.EXCHANGE_RESULTS:
                results = test.results()
                _send(ctrl, encode_json(results.to_json()))
                theirs = IperfResults.from_json(
                    _read_json(ctrl, MAX_RESULTS_JSON, time.monotonic() + CONTROL_TIMEOUT)
                )
            elif state == State.DISPLAY_RESULTS:
                with contextlib.suppress(IperfError):
                    _send(ctrl, State.IPERF_DONE.byte())
                break
            elif state == State.ACCESS_DENIED:
                raise IperfError("the server is busy running a test; try again later", peer=host)
            elif state == State.SERVER_ERROR:
                raw = _recv_exact(ctrl, 8, time.monotonic() + CONTROL_TIMEOUT, "error codes")
                code, errno_value = struct.unpack("!ii", raw)
                raise IperfError(f"server error: {error_text(code, errno_value)}", peer=host)
            elif state == State.SERVER_TERMINATE:
                raise IperfError("the server stopped the test", peer=host)
            else:
                raise RemoteProtocolError(f"unexpected iperf3 state {state.name} from the server")
        if results is None or theirs is None:
            raise RemoteProtocolError("the server ended the test without exchanging results")
        report = IperfReport(
            role="client", params=params, cookie=cookie[:-1].decode(), peer=peer,
            started=started, duration=time.monotonic() - test.start,
            intervals=test.intervals, streams=_stream_reports(test, results, theirs),
            cpu_local=(results.cpu_total, results.cpu_user, results.cpu_system),
            cpu_remote=(theirs.cpu_total, theirs.cpu_user, theirs.cpu_system),
            congestion_local=results.congestion_used, congestion_remote=theirs.congestion_used,
            server_output_text=theirs.server_output_text,
            server_output_json=theirs.server_output_json,
        )  # fmt: skip
        if test.streams:
            s = test.streams[0].sock
            report.sndbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            report.rcvbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        return report
    except (ProtocolError, IperfError, KeyboardInterrupt):
        with contextlib.suppress(OSError):
            ctrl.send(State.CLIENT_TERMINATE.byte())
        raise
    finally:
        test.close()
        ctrl.close()


def _create_streams(test: _Test, host: str, port: int, family: int, cookie: bytes,
                    bind: str | None) -> None:  # fmt: skip
    params = test.params
    n = params.parallel
    # iperf3's order: the client opens its sending streams first
    roles = [True] * n + [False] * n if params.bidirectional else [not params.reverse] * n
    deadline = time.monotonic() + STREAM_SETUP_TIMEOUT
    for stream_id, sender in zip(stream_ids(len(roles)), roles, strict=True):
        if params.protocol == "udp":
            sock = _udp_stream(host, port, family, params, deadline)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                _apply_options(sock, params)
                if bind:
                    sock.bind((bind, 0))
                sock.settimeout(max(deadline - time.monotonic(), 0.1))
                sock.connect((host, port))
                sock.settimeout(None)
                sock.sendall(cookie)
            except OSError as exc:
                sock.close()
                raise ConnectError(f"data stream to {host} port {port}: {exc}", peer=host) from exc
        test.streams.append(_Stream(stream_id, sock, sender, params))


def _run_test(test: _Test, ctrl: socket.socket) -> None:
    """Run the data phase until the duration (or byte/block count) is reached."""
    params = test.params
    test.begin()
    end = test.start + params.omit + params.duration if params.duration else float("inf")
    if (params.bytes or params.blocks) and not params.duration:
        end = float("inf")
    wake = min(test.next_tick, test.omit_end if test.omitting else float("inf"))
    while True:
        now = time.monotonic()
        if now >= end or test.finished_by_count():
            break
        if now >= wake:
            wake = test.on_time(now)
            if test.omitting:
                wake = min(wake, test.omit_end)
            continue
        wait = min(end, wake) - now
        if params.bytes or params.blocks:
            wait = min(wait, 0.05)
        ready, _, _ = select.select([ctrl], [], [], max(wait, 0.0))
        if ready:
            state = _read_state(ctrl, time.monotonic() + CONTROL_TIMEOUT)
            if state == State.SERVER_TERMINATE:
                raise IperfError("the server stopped the test")
            if state == State.SERVER_ERROR:
                raw = _recv_exact(ctrl, 8, time.monotonic() + CONTROL_TIMEOUT, "error codes")
                code, errno_value = struct.unpack("!ii", raw)
                raise IperfError(f"server error: {error_text(code, errno_value)}")
            raise RemoteProtocolError(f"unexpected iperf3 state {state.name} during the test")
        for s in test.streams:
            if s.error is not None:
                raise IperfError(f"stream {s.id} failed: {s.error}")
    test.stop()


# -- the server ----------------------------------------------------------------------------


def _listen(bind: str | None, port: int) -> socket.socket:
    """The control/data listener: dual-stack on every address, or on ``bind``."""
    if bind is None:
        candidates: list[tuple[int, tuple[Any, ...]]] = [
            (socket.AF_INET6, ("::", port)),
            (socket.AF_INET, ("0.0.0.0", port)),  # where IPv6 is switched off
        ]
    else:
        try:
            info = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM)[0]
        except socket.gaierror as exc:
            raise UsageError(f"cannot resolve {bind!r}: {exc.strerror}") from exc
        candidates = [(info[0], info[4])]
    last: OSError | None = None
    for family, address in candidates:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            last = exc
            continue
        try:
            if family == socket.AF_INET6 and bind is None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(64)
            return sock
        except OSError as exc:
            last = exc
            sock.close()
    raise UsageError(f"cannot listen on port {port}: {last.strerror if last else 'failed'}")


def _deny(listener: socket.socket) -> None:
    """A connection that came while a test runs: say ACCESS_DENIED and close."""
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(State.ACCESS_DENIED.byte())
    conn.close()


@dataclass
class ServerSession:
    """What the server knows about the test in progress (for reports)."""

    report: IperfReport | None = None
    error: str | None = None


def serve(
    port: int,
    bind: str | None = None,
    one_off: bool = False,
    interval: float | None = 1.0,
    on_listening: Callable[[tuple[Any, ...]], None] | None = None,
    on_test: Callable[[tuple[Any, ...]], None] | None = None,
    on_interval: Callable[[list[IntervalSample]], None] | None = None,
    on_report: Callable[[IperfReport], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    server_output: Callable[[IperfReport], str] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve iperf3 tests one at a time until ``stop`` is set (or after one with ``one_off``)."""
    stop = stop or threading.Event()
    listener = _listen(bind, port)
    if on_listening is not None:
        on_listening(listener.getsockname())
    try:
        while not stop.is_set():
            ready, _, _ = select.select([listener], [], [], 0.2)
            if not ready:
                continue
            try:
                ctrl, peer = listener.accept()
            except OSError:
                continue
            if on_test is not None:
                on_test(peer)
            try:
                report = _serve_one(
                    listener, ctrl, peer, bind, interval, on_interval, server_output
                )
            except (ProtocolError, IperfError, ReadTimeout, ConnectError, OSError) as exc:
                message = str(exc) or exc.__class__.__name__
                if on_error is not None:
                    on_error(message)
            else:
                if on_report is not None:
                    on_report(report)
            finally:
                ctrl.close()
            if one_off:
                break
    finally:
        listener.close()


def _serve_one(
    listener: socket.socket,
    ctrl: socket.socket,
    peer: tuple[Any, ...],
    bind: str | None,
    interval: float | None,
    on_interval: Callable[[list[IntervalSample]], None] | None,
    server_output: Callable[[IperfReport], str] | None,
) -> IperfReport:
    ctrl.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started = time.time()
    cookie = _recv_exact(ctrl, COOKIE_SIZE, time.monotonic() + CONTROL_TIMEOUT, "cookie")
    _send(ctrl, State.PARAM_EXCHANGE.byte())
    try:
        params = IperfParameters.from_json(
            _read_json(ctrl, MAX_PARAMS_JSON, time.monotonic() + CONTROL_TIMEOUT)
        )
    except RemoteProtocolError:
        with contextlib.suppress(OSError):
            ctrl.sendall(State.SERVER_ERROR.byte() + struct.pack("!ii", 115, 0))
        raise
    test = _Test(params, interval, on_interval)
    n = params.parallel
    # iperf3's order: the server takes its receiving streams first
    roles = [False] * n + [True] * n if params.bidirectional else [params.reverse] * n
    udp_listener: socket.socket | None = None
    try:
        if params.protocol == "udp":
            udp_listener = _udp_listener(ctrl, bind, listener.getsockname()[1], params)
        _send(ctrl, State.CREATE_STREAMS.byte())
        deadline = time.monotonic() + STREAM_SETUP_TIMEOUT
        for stream_id, sender in zip(stream_ids(len(roles)), roles, strict=True):
            if params.protocol == "udp":
                assert udp_listener is not None
                sock = _udp_accept(udp_listener, deadline)
                udp_listener = _udp_listener(ctrl, bind, listener.getsockname()[1], params)
            else:
                sock = _tcp_accept(listener, cookie, params, deadline)
            test.streams.append(_Stream(stream_id, sock, sender, params))
        _send(ctrl, State.TEST_START.byte())
        _send(ctrl, State.TEST_RUNNING.byte())
        test.begin()
        limit = params.duration + params.omit + 30 if params.duration else 24 * 3600
        deadline = test.start + limit
        wake = min(test.next_tick, test.omit_end if test.omitting else float("inf"))
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise ReadTimeout("the client never ended the test")
            if now >= wake:
                wake = test.on_time(now)
                if test.omitting:
                    wake = min(wake, test.omit_end)
                continue
            ready, _, _ = select.select([ctrl, listener], [], [], min(wake, deadline) - now)
            if listener in ready:
                _deny(listener)
            if ctrl in ready:
                state = _read_state(ctrl, time.monotonic() + CONTROL_TIMEOUT)
                if state == State.TEST_END:
                    break
                if state in (State.CLIENT_TERMINATE, State.IPERF_DONE):
                    raise IperfError("the client stopped the test")
                raise RemoteProtocolError(f"unexpected iperf3 state {state.name} from the client")
        test.stop(hard=True)
        ours = test.results()  # before closing: TCP_INFO still answers on a shut socket
        test.close()
        _send(ctrl, State.EXCHANGE_RESULTS.byte())
        theirs = IperfResults.from_json(
            _read_json(ctrl, MAX_RESULTS_JSON, time.monotonic() + CONTROL_TIMEOUT)
        )
        report = IperfReport(
            role="server", params=params, cookie=cookie[:-1].decode(errors="replace"), peer=peer,
            started=started, duration=time.monotonic() - test.start, intervals=test.intervals,
            streams=_stream_reports(test, ours, theirs),
            cpu_local=(ours.cpu_total, ours.cpu_user, ours.cpu_system),
            cpu_remote=(theirs.cpu_total, theirs.cpu_user, theirs.cpu_system),
            congestion_local=ours.congestion_used, congestion_remote=theirs.congestion_used,
        )  # fmt: skip
        if params.get_server_output and server_output is not None:
            ours.server_output_text = server_output(report)
        _send(ctrl, encode_json(ours.to_json()))
        _send(ctrl, State.DISPLAY_RESULTS.byte())
        # the client answers IPERF_DONE and closes; wait for it, but not forever
        with contextlib.suppress(IperfError, ReadTimeout, ProtocolError):
            _read_state(ctrl, time.monotonic() + CONTROL_TIMEOUT)
        return report
    finally:
        test.close()
        if udp_listener is not None:
            udp_listener.close()


def _tcp_accept(listener: socket.socket, cookie: bytes, params: IperfParameters,
                deadline: float) -> socket.socket:  # fmt: skip
    while True:
        _wait_readable(listener, deadline, "the client did not open its data streams in time")
        sock, _ = listener.accept()
        try:
            theirs = _recv_exact(sock, COOKIE_SIZE, deadline, "stream cookie")
        except (IperfError, ReadTimeout):
            sock.close()
            continue
        if theirs != cookie:
            with contextlib.suppress(OSError):
                sock.send(State.ACCESS_DENIED.byte())
            sock.close()
            continue
        _apply_options(sock, params)
        return sock


def _udp_listener(ctrl: socket.socket, bind: str | None, port: int,
                  params: IperfParameters) -> socket.socket:  # fmt: skip
    family = ctrl.family
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    _apply_options(sock, params)
    if not params.window:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    host = ctrl.getsockname()[0] if bind is None else bind
    sock.bind((host, port))
    return sock


def _udp_accept(sock: socket.socket, deadline: float) -> socket.socket:
    while True:
        try:
            _wait_readable(sock, deadline, "the client did not open its UDP streams in time")
        except ReadTimeout:
            sock.close()
            raise
        data, peer = sock.recvfrom(65536)
        if data[:4] != UDP_CONNECT_MSG:
            continue
        sock.connect(peer)
        sock.send(UDP_CONNECT_REPLY)
        return sock
