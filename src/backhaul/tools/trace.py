"""``backhaul trace``'s driver: traceroute with UDP, ICMP echo or TCP SYN probes.

Probes go out with a growing TTL (hop limit); routers answer "time exceeded" quoting the
probe, which the raw ICMP listener hands to :func:`backhaul.proto.icmp.parse_icmp` and
matches back to the probe by what the quote holds:

- UDP (default): sent on a raw socket with a header built by
  :func:`~backhaul.proto.icmp.encode_udp`; matched by (source port, destination port,
  checksum). Classic mode counts the destination port up (33434, 33435, ...); the target
  answers "port unreachable".
- ICMP echo (``--icmp``): matched by (id, seq); the target answers with an echo reply.
- TCP SYN (``--tcp PORT``): the kernel sends the SYN of a non-blocking ``connect`` made
  with the TTL set; matched by (source port, destination port). The target answers SYN-ACK
  (``open``) or RST (``closed``).

Paris mode (``--paris``) keeps every field a per-flow load balancer hashes the same for all
probes, so they all follow one path: UDP keeps both ports and varies a payload word so the
UDP checksum tells probes apart; ICMP varies seq up and id down so the checksum never
changes; TCP keeps the source port and sends one probe at a time.

A raw ICMP socket is needed to hear routers (root or CAP_NET_RAW).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from backhaul.errors import NetworkError, PermissionNeeded, ProtocolError, UsageError
from backhaul.net.rtt import HopSample, HopStats, aggregate_hops
from backhaul.proto import icmp
from backhaul.tools.ping import SOL_IPV6, IcmpSocket, Received, Target

__all__ = [
    "Hop",
    "Probe",
    "ReportResult",
    "TraceOptions",
    "TraceResult",
    "report",
    "trace",
]

Mode = Literal["udp", "icmp", "tcp"]
UDP_BASE_PORT = 33434

_RAW_HINT = (
    "trace needs a raw ICMP socket to hear the routers: run as root "
    "(or give the interpreter CAP_NET_RAW)"
)


@dataclass(frozen=True)
class TraceOptions:
    """What ``backhaul trace`` was asked to do; times in seconds."""

    mode: Mode = "udp"
    port: int | None = None  # udp: first destination port (33434); tcp: destination port (80)
    first_ttl: int = 1
    max_hops: int = 30
    probes: int = 3
    wait: float = 2.0
    paris: bool = False
    resolve: bool = False
    size: int = 32  # UDP/ICMP payload bytes: 60-byte IPv4 probes, as traceroute sends

    @property
    def dest_port(self) -> int:
        if self.port is not None:
            return self.port
        return 80 if self.mode == "tcp" else UDP_BASE_PORT

    def validate(self) -> None:
        if self.mode not in ("udp", "icmp", "tcp"):
            raise UsageError(f"probe mode {self.mode!r}: use udp, icmp or tcp")
        if not 1 <= self.max_hops <= 255:
            raise UsageError(f"max hops {self.max_hops} is not within 1-255")
        if not 1 <= self.first_ttl <= self.max_hops:
            raise UsageError(f"first TTL {self.first_ttl} is not within 1-{self.max_hops}")
        if not 1 <= self.probes <= 10:
            raise UsageError(f"probes per hop {self.probes} is not within 1-10")
        if not 0 < self.wait <= 60:
            raise UsageError(f"wait {self.wait}s is not within (0, 60]")
        if not 1 <= self.dest_port <= 65535:
            raise UsageError(f"port {self.dest_port} is not within 1-65535")
        if not 2 <= self.size <= 1400:
            raise UsageError(f"probe size {self.size} is not within 2-1400 bytes")


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe's outcome. ``address`` is None (and ``rtt`` None) when nothing answered.

    ``kind``: ``time-exceeded``, ``reply`` (echo reply), ``unreachable``, ``open`` /
    ``closed`` (TCP SYN-ACK / RST from the target); ``reached`` when the target answered.
    ``annotation`` is traceroute's ``!H``, ``!N``, ``!P``, ``!X``, ``!F`` for unreachables.
    """

    ttl: int
    address: str | None
    rtt: float | None
    kind: str | None = None
    reached: bool = False
    annotation: str = ""


@dataclass
class Hop:
    ttl: int
    probes: list[Probe]
    names: dict[str, str | None] = field(default_factory=dict)

    @property
    def reached(self) -> bool:
        return any(p.reached for p in self.probes)

    @property
    def halted(self) -> bool:
        """The target or an unreachable answered: no point going further."""
        return any(p.reached or p.annotation for p in self.probes)


@dataclass
class TraceResult:
    target: Target
    options: TraceOptions
    hops: list[Hop]

    @property
    def reached(self) -> bool:
        return any(h.reached for h in self.hops)


@dataclass
class ReportResult:
    target: Target
    options: TraceOptions
    rounds: int
    hops: list[HopStats]
    names: dict[str, str | None]
    reached: bool


_ANNOTATIONS4 = {0: "!N", 1: "!H", 2: "!P", 4: "!F", 5: "!S", 9: "!X", 10: "!X", 13: "!X"}
_ANNOTATIONS6 = {0: "!N", 1: "!X", 2: "!S", 3: "!H", 5: "!X", 6: "!X"}


@dataclass
class _Pending:
    ttl: int
    sent_wall: float
    sent_mono: float
    future: asyncio.Future[Probe]


class _Prober:
    """Sends probes and matches answers; one per trace."""

    def __init__(self, target: Target, options: TraceOptions) -> None:
        self.target = target
        self.options = options
        self.family = target.family
        self.af = socket.AF_INET if self.family == 4 else socket.AF_INET6
        self.dst_ip = ipaddress.ip_address(target.address)
        self.pending: dict[tuple[int, ...], _Pending] = {}
        self.counter = 0
        self.closing: list[socket.socket] = []
        try:
            self.listener = IcmpSocket(self.family, "raw")
        except PermissionNeeded as exc:
            raise PermissionNeeded(_RAW_HINT) from exc
        self.src_ip, self.sport, self.port_holder = self._source()
        self.udp_sock: socket.socket | None = None
        if options.mode == "udp":
            try:
                self.udp_sock = socket.socket(self.af, socket.SOCK_RAW, socket.IPPROTO_UDP)
            except PermissionError as exc:
                self.close()
                raise PermissionNeeded(_RAW_HINT) from exc
            # this socket only sends; keep what it would receive to a minimum
            self.udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            self.udp_sock.setblocking(False)
        rand = int.from_bytes(os.urandom(2), "big")
        self.ident = 0x8000 | rand  # ICMP classic id; Paris counts down from here
        self.payload = bytes(options.size)

    def _source(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, socket.socket]:
        """Our source address towards the target, and a UDP/TCP port held for the trace."""
        kind = socket.SOCK_STREAM if self.options.mode == "tcp" else socket.SOCK_DGRAM
        holder = socket.socket(self.af, kind)
        try:
            finder = socket.socket(self.af, socket.SOCK_DGRAM)
            try:
                finder.connect((self.target.address, 9, *self.target.sockaddr[2:]))
                src = str(finder.getsockname()[0]).split("%")[0]
            finally:
                finder.close()
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind((src, 0))
        except OSError as exc:
            holder.close()
            self.listener.close()
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise NetworkError(
                    f"no route to {self.target.address}: check `ip route`", self.target.address
                ) from exc
            raise NetworkError(f"cannot trace {self.target.address}: {exc}") from exc
        return ipaddress.ip_address(src), int(holder.getsockname()[1]), holder

    def close(self) -> None:
        self.listener.close()
        self.port_holder.close()
        if self.udp_sock is not None:
            self.udp_sock.close()
        for sock in self.closing:
            sock.close()
        self.closing.clear()

    # ------------------------------------------------------------------ receiving

    def on_readable(self) -> None:
        for got in self.listener.receive_nowait():
            try:
                message = icmp.parse_icmp(self.family, got.data)  # type: ignore[arg-type]
            except ProtocolError:
                continue
            if isinstance(message, icmp.Echo):
                if message.is_reply and got.source == self.target.address:
                    self._resolve(("icmp", message.ident, message.seq), got, "reply", True)
            elif isinstance(message, icmp.IcmpError):
                self._on_error(message, got)

    def _on_error(self, message: icmp.IcmpError, got: Received) -> None:
        quoted = message.quoted
        if quoted.destination != self.dst_ip:
            return
        t = quoted.transport
        if isinstance(t, icmp.UdpHeader) and quoted.protocol == icmp.PROTO_UDP:
            key: tuple[int | str, ...] = ("udp", t.source_port, t.destination_port, t.checksum)
        elif isinstance(t, icmp.EchoHeader):
            key = ("icmp", t.ident, t.seq)
        elif isinstance(t, icmp.TcpHeader) and quoted.protocol == icmp.PROTO_TCP:
            key = ("tcp", t.source_port, t.destination_port)
        else:
            return
        if message.kind == "time-exceeded":
            self._resolve(key, got, "time-exceeded", False)
            return
        if message.kind != "unreachable" and message.kind != "packet-too-big":
            return
        port_unreach = (self.family == 4 and message.code == icmp.ICMP4.PORT_UNREACH) or (
            self.family == 6 and message.code == icmp.ICMP6.PORT_UNREACH
        )
        if message.kind == "unreachable" and port_unreach:
            # the target's UDP stack answered: we are there (also the end for ICMP/TCP)
            self._resolve(key, got, "unreachable", True)
            return
        table = _ANNOTATIONS4 if self.family == 4 else _ANNOTATIONS6
        note = "!F" if message.kind == "packet-too-big" else table.get(message.code, "!U")
        if got.source == self.target.address and note in ("!P",):
            self._resolve(key, got, "unreachable", True)
            return
        self._resolve(key, got, "unreachable", False, note)

    def _resolve(
        self,
        key: tuple[int | str, ...],
        got: Received,
        kind: str,
        reached: bool,
        annotation: str = "",
    ) -> None:
        pending = self.pending.get(key)  # type: ignore[arg-type]
        if pending is None or pending.future.done():
            return
        rtt = got.monotonic - pending.sent_mono
        if got.stamp is not None:
            wall = got.stamp - pending.sent_wall
            if wall >= 0 and abs(wall - rtt) < 0.5:
                rtt = wall
        pending.future.set_result(Probe(pending.ttl, got.source, rtt, kind, reached, annotation))

    # ------------------------------------------------------------------ sending

    def _set_ttl(self, sock: socket.socket, ttl: int) -> None:
        if self.family == 4:
            sock.setsockopt(socket.SOL_IP, socket.IP_TTL, ttl)
        else:
            sock.setsockopt(SOL_IPV6, socket.IPV6_UNICAST_HOPS, ttl)

    def _register(self, key: tuple[int | str, ...], ttl: int) -> _Pending:
        loop = asyncio.get_running_loop()
        pending = _Pending(ttl, time.time(), time.monotonic(), loop.create_future())
        self.pending[key] = pending  # type: ignore[index]
        return pending

    def send(self, ttl: int) -> _Pending:
        """Send one probe with ``ttl``; its future resolves when something answers."""
        index = self.counter
        self.counter += 1
        mode = self.options.mode
        if mode == "udp":
            return self._send_udp(ttl, index)
        if mode == "icmp":
            return self._send_icmp(ttl, index)
        return self._send_tcp(ttl)

    def _send_udp(self, ttl: int, index: int) -> _Pending:
        assert self.udp_sock is not None
        base = self.options.dest_port
        if self.options.paris:
            dport = base
            # the checksum numbers the probe; 0 and 0xFFFF cannot be forced
            payload = icmp.paris_udp_payload(
                self.src_ip, self.dst_ip, self.sport, dport, self.options.size, 1 + index % 0xFFFE
            )
        else:
            dport = base + index
            if dport > 0xFFFF:
                raise UsageError(f"ran out of UDP ports above {base}; lower --port")
            payload = self.payload
        datagram = icmp.encode_udp(self.src_ip, self.dst_ip, self.sport, dport, payload)
        checksum = struct.unpack_from("!H", datagram, 6)[0]
        pending = self._register(("udp", self.sport, dport, checksum), ttl)
        self._set_ttl(self.udp_sock, ttl)
        self._sendto(self.udp_sock, datagram, pending)
        return pending

    def _send_icmp(self, ttl: int, index: int) -> _Pending:
        if self.options.paris:
            ident, seq = icmp.paris_echo_ids(self.ident, 1, index % 0x7FFF)
        else:
            ident, seq = self.ident, (index + 1) & 0xFFFF
        packet = icmp.encode_echo(self.family, ident, seq, self.payload)  # type: ignore[arg-type]
        pending = self._register(("icmp", ident, seq), ttl)
        self._set_ttl(self.listener.sock, ttl)
        self._sendto(self.listener.sock, packet, pending)
        return pending

    def _sendto(self, sock: socket.socket, packet: bytes, pending: _Pending) -> None:
        sockaddr = (self.target.address, 0, *self.target.sockaddr[2:])
        pending.sent_wall, pending.sent_mono = time.time(), time.monotonic()
        try:
            sock.sendto(packet, sockaddr)
        except OSError as exc:
            self._local_failure(pending, exc)

    def _local_failure(self, pending: _Pending, exc: OSError) -> None:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            note = "!N" if exc.errno == errno.ENETUNREACH else "!H"
            pending.future.set_result(Probe(pending.ttl, None, None, "unreachable", False, note))
        elif exc.errno == errno.EACCES:
            raise UsageError(f"the kernel refused to send to {self.target.address}") from exc
        else:
            raise NetworkError(f"sending a probe failed: {exc}", self.target.address) from exc

    def _send_tcp(self, ttl: int) -> _Pending:
        sock = socket.socket(self.af, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        port = self.sport if self.options.paris else 0
        try:
            sock.bind((str(self.src_ip), port))
        except OSError as exc:
            sock.close()
            raise NetworkError(f"cannot bind a TCP probe to port {port}: {exc}") from exc
        sport = int(sock.getsockname()[1])
        dport = self.options.dest_port
        pending = self._register(("tcp", sport, dport), ttl)
        self._set_ttl(sock, ttl)
        pending.sent_wall, pending.sent_mono = time.time(), time.monotonic()
        err = sock.connect_ex((self.target.address, dport, *self.target.sockaddr[2:]))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._local_failure(pending, OSError(err, os.strerror(err)))
            return pending
        loop = asyncio.get_running_loop()
        self.closing.append(sock)

        def on_writable() -> None:
            loop.remove_writer(sock.fileno())
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if pending.future.done():
                return
            rtt = time.monotonic() - pending.sent_mono
            if code == 0:
                pending.future.set_result(Probe(ttl, self.target.address, rtt, "open", True))
            elif code == errno.ECONNREFUSED:
                pending.future.set_result(Probe(ttl, self.target.address, rtt, "closed", True))
            # other errors (host unreachable ...) arrive as ICMP on the listener too

        loop.add_writer(sock.fileno(), on_writable)

        def done(_future: asyncio.Future[Probe]) -> None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_writer(sock.fileno())
            sock.close()
            if sock in self.closing:
                self.closing.remove(sock)

        pending.future.add_done_callback(done)
        return pending

    async def wait(self, pendings: Sequence[_Pending], stop: asyncio.Event) -> list[Probe]:
        """The outcome of each probe once all are answered or ``wait`` has passed."""
        futures = {p.future for p in pendings if not p.future.done()}
        if futures:
            stopper = asyncio.ensure_future(stop.wait())
            deadline = time.monotonic() + self.options.wait
            try:
                while futures and not stop.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    _done, futures = await asyncio.wait(
                        futures | {stopper}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
                    futures.discard(stopper)  # type: ignore[arg-type]
            finally:
                stopper.cancel()
                await asyncio.gather(stopper, return_exceptions=True)
        out = []
        for p in pendings:
            if not p.future.done():
                p.future.set_result(Probe(p.ttl, None, None))
            out.append(p.future.result())
        for key in [k for k, v in self.pending.items() if v in pendings]:
            del self.pending[key]
        return out

    async def probe_ttls(self, ttls: Sequence[int], count: int, stop: asyncio.Event) -> list[Probe]:
        """``count`` probes at each TTL; in Paris TCP mode one at a time (one 4-tuple)."""
        if self.options.mode == "tcp" and self.options.paris:
            results = []
            for ttl in ttls:
                for _ in range(count):
                    if stop.is_set():
                        break
                    results += await self.wait([self.send(ttl)], stop)
            return results
        pendings = [self.send(ttl) for ttl in ttls for _ in range(count)]
        return await self.wait(pendings, stop)


async def _names(addresses: Sequence[str], cache: dict[str, str | None]) -> None:
    """Fill ``cache`` with reverse names (``None`` when there is none), 2 s at most each."""
    loop = asyncio.get_running_loop()
    todo = [a for a in dict.fromkeys(addresses) if a not in cache]

    async def one(address: str) -> None:
        try:
            name, _port = await asyncio.wait_for(
                loop.getnameinfo((address, 0), socket.NI_NAMEREQD), 2.0
            )
        except (OSError, TimeoutError, UnicodeError):
            cache[address] = None
            return
        cache[address] = name

    await asyncio.gather(*(one(a) for a in todo))


def _open(target: Target, options: TraceOptions) -> _Prober:
    options.validate()
    return _Prober(target, options)


async def trace(
    target: Target,
    options: TraceOptions,
    on_hop: Callable[[Hop], None] = lambda _hop: None,
    stop: asyncio.Event | None = None,
) -> TraceResult:
    """Trace the path to ``target`` hop by hop; stops at the target, an unreachable, or
    ``max_hops``."""
    stop = stop or asyncio.Event()
    prober = _open(target, options)
    loop = asyncio.get_running_loop()
    loop.add_reader(prober.listener.fileno(), prober.on_readable)
    hops: list[Hop] = []
    names: dict[str, str | None] = {}
    try:
        for ttl in range(options.first_ttl, options.max_hops + 1):
            if stop.is_set():
                break
            probes = await prober.probe_ttls([ttl], options.probes, stop)
            hop = Hop(ttl, probes)
            if options.resolve:
                await _names([p.address for p in probes if p.address], names)
                hop.names = {p.address: names.get(p.address) for p in probes if p.address}
            hops.append(hop)
            on_hop(hop)
            if hop.halted:
                break
    finally:
        loop.remove_reader(prober.listener.fileno())
        prober.close()
    return TraceResult(target, options, hops)


async def report(
    target: Target,
    options: TraceOptions,
    rounds: int,
    interval: float = 1.0,
    on_round: Callable[[int], None] = lambda _n: None,
    stop: asyncio.Event | None = None,
) -> ReportResult:
    """mtr's report: ``rounds`` rounds of one probe per TTL, folded into per-hop statistics.

    The first round probes every TTL up to ``max_hops`` at once; later rounds stop at the
    TTL where the target first answered.
    """
    if not 1 <= rounds <= 10_000:
        raise UsageError(f"report rounds {rounds} is not within 1-10000")
    if not 0 <= interval <= 60:
        raise UsageError(f"interval {interval}s is not within 0-60")
    stop = stop or asyncio.Event()
    prober = _open(target, options)
    loop = asyncio.get_running_loop()
    loop.add_reader(prober.listener.fileno(), prober.on_readable)
    collected: list[list[HopSample]] = []
    last_ttl = options.max_hops
    try:
        for number in range(rounds):
            if stop.is_set():
                break
            started = time.monotonic()
            ttls = list(range(options.first_ttl, last_ttl + 1))
            probes = await prober.probe_ttls(ttls, 1, stop)
            samples = [HopSample(p.ttl, p.address, p.rtt, p.reached) for p in probes]
            collected.append(samples)
            ends = [p.ttl for p in probes if p.reached or p.annotation]
            if ends:
                last_ttl = min(last_ttl, min(ends))
            on_round(number + 1)
            pause = interval - (time.monotonic() - started)
            if pause > 0 and number + 1 < rounds:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
    finally:
        loop.remove_reader(prober.listener.fileno())
        prober.close()
    hops = aggregate_hops(collected)
    names: dict[str, str | None] = {}
    if options.resolve:
        await _names([a for h in hops for a in h.addresses], names)
    reached = any(s.reached for samples in collected for s in samples)
    return ReportResult(target, options, len(collected), hops, names, reached)
