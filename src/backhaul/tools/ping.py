"""``backhaul ping``'s driver: ICMP echo (raw or ping sockets) and TCP connect probes.

The codec is :mod:`backhaul.proto.icmp`, the books are :class:`backhaul.net.rtt.EchoLedger`;
this module owns the sockets and the clock.

Sockets. ``auto`` opens a raw ICMP socket (root or CAP_NET_RAW) and falls back to an ICMP
"ping" socket (``SOCK_DGRAM``, allowed when the caller's group is inside
``net.ipv4.ping_group_range``). On a ping socket the kernel picks the echo id (the socket's
"port") and delivers only our own replies; ICMP errors about our probes come through the
socket's error queue (``IP_RECVERR``). A raw socket sees every ICMP message the host
receives, so replies are matched by id and sequence and errors by the echo header they quote.

Times. A reply's RTT is its kernel receive timestamp (``SO_TIMESTAMPNS``) minus the wall
clock read just before ``sendto``, which is what iputils measures; if the wall clock steps in
between (the difference is negative or far from the monotonic one), the monotonic clock is
used instead. Deadlines use the monotonic clock only.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from backhaul.errors import BackhaulError, NetworkError, PermissionNeeded, ProtocolError, UsageError
from backhaul.net.rtt import EchoLedger, PingStatistics, ReplyKind
from backhaul.proto import icmp

__all__ = [
    "IcmpSocket",
    "PingEvent",
    "PingOptions",
    "PingResult",
    "Received",
    "Target",
    "ping",
    "resolve_targets",
]

SocketKind = Literal["auto", "raw", "dgram"]

# Linux socket option numbers the stdlib does not export.
SO_TIMESTAMPNS = 35
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
IP_RECVERR = 11
IP_RECVTTL = 12
IP_MTU = 14
SOL_IPV6 = 41
IPV6_RECVERR = 25
IPV6_MTU = 24
IPV6_DONTFRAG = 62
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_EXTENDED_ERR = struct.Struct("=IBBBBII")

_PRIVILEGE_HINT = (
    "ICMP needs a raw socket or an ICMP ping socket and this process may open neither: "
    "run as root (or give the interpreter CAP_NET_RAW), or allow ping sockets for your group "
    'with `sysctl -w net.ipv4.ping_group_range="0 2147483647"`; '
    "`backhaul ping --tcp PORT` needs no privilege"
)


# --------------------------------------------------------------------------- sockets


@dataclass(frozen=True, slots=True)
class Received:
    """One ICMP message off a socket, IP header stripped."""

    data: bytes
    source: str
    ttl: int | None
    stamp: float | None  # kernel receive time, wall clock seconds
    monotonic: float
    error_queue: bool = False
    ee_errno: int = 0
    ee_type: int = 0
    ee_code: int = 0
    ee_info: int = 0


class IcmpSocket:
    """A non-blocking ICMP or ICMPv6 socket, raw or ping (``SOCK_DGRAM``)."""

    def __init__(self, family: int, kind: SocketKind = "auto") -> None:
        if family not in (4, 6):
            raise UsageError(f"IP family {family} is not 4 or 6")
        self.family = family
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        proto = socket.IPPROTO_ICMP if family == 4 else socket.IPPROTO_ICMPV6
        order = {"auto": ("raw", "dgram"), "raw": ("raw",), "dgram": ("dgram",)}[kind]
        last: OSError | None = None
        for choice in order:
            stype = socket.SOCK_RAW if choice == "raw" else socket.SOCK_DGRAM
            try:
                self.sock = socket.socket(af, stype, proto)
            except PermissionError as exc:
                last = exc
                continue
            except OSError as exc:
                if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                    raise NetworkError(f"this host has no IPv{family} ICMP sockets: {exc}") from exc
                last = exc
                continue
            self.raw = choice == "raw"
            break
        else:
            raise PermissionNeeded(_PRIVILEGE_HINT) from last
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if family == 6:
            self.sock.setsockopt(SOL_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            if not self.raw:
                self.sock.setsockopt(SOL_IPV6, IPV6_RECVERR, 1)
        elif not self.raw:
            self.sock.setsockopt(socket.SOL_IP, IP_RECVTTL, 1)
            self.sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
        if not self.raw:
            self.sock.bind(("0.0.0.0", 0) if family == 4 else ("::", 0))

    @property
    def ident(self) -> int | None:
        """The echo id the kernel uses on a ping socket (its port); ``None`` on a raw one."""
        return None if self.raw else int(self.sock.getsockname()[1])

    def fileno(self) -> int:
        return self.sock.fileno()

    def set_ttl(self, ttl: int) -> None:
        if self.family == 4:
            self.sock.setsockopt(socket.SOL_IP, socket.IP_TTL, ttl)
        else:
            self.sock.setsockopt(SOL_IPV6, socket.IPV6_UNICAST_HOPS, ttl)

    def set_dont_fragment(self) -> None:
        """Never fragment: DF on IPv4, IPV6_DONTFRAG on IPv6; too big fails with EMSGSIZE."""
        if self.family == 4:
            self.sock.setsockopt(socket.SOL_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        else:
            self.sock.setsockopt(SOL_IPV6, IPV6_DONTFRAG, 1)

    def path_mtu(self, sockaddr: tuple[object, ...]) -> int | None:
        """The kernel's path MTU to ``sockaddr`` (for 'message too long' errors)."""
        probe = socket.socket(self.sock.family, socket.SOCK_DGRAM)
        try:
            probe.connect((sockaddr[0], 9))
            if self.family == 4:
                return int(probe.getsockopt(socket.SOL_IP, IP_MTU))
            return int(probe.getsockopt(SOL_IPV6, IPV6_MTU))
        except OSError:
            return None
        finally:
            probe.close()

    def sendto(self, packet: bytes, sockaddr: tuple[object, ...]) -> None:
        self.sock.sendto(packet, sockaddr)

    def receive_nowait(self) -> list[Received]:
        """Everything waiting on the socket (and its error queue), without blocking."""
        out: list[Received] = []
        while True:
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(65535, 1024)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # a ping socket reports a queued ICMP error once as a failing recv; the
                # details are in the error queue, read below
                break
            got = self._decode(data, ancdata, addr)
            if got is not None:
                out.append(got)
        if not self.raw:
            out += self._drain_error_queue()
        return out

    def _decode(
        self, data: bytes, ancdata: list[tuple[int, int, bytes]], addr: tuple[object, ...]
    ) -> Received | None:
        ttl: int | None = None
        stamp: float | None = None
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                sec, nsec = struct.unpack_from("=qq", value)
                stamp = sec + nsec / 1e9
            elif (level, kind) in (
                (socket.SOL_IP, socket.IP_TTL),
                (SOL_IPV6, socket.IPV6_HOPLIMIT),
            ) and len(value) >= 4:
                ttl = struct.unpack_from("=i", value)[0]
        if self.family == 4 and self.raw:
            try:
                header, data = icmp.parse_ipv4(data)
            except ProtocolError:
                return None
            ttl = header.ttl
        return Received(data, str(addr[0]).split("%")[0], ttl, stamp, time.monotonic())

    def _drain_error_queue(self) -> list[Received]:
        out: list[Received] = []
        level = socket.SOL_IP if self.family == 4 else SOL_IPV6
        kind = IP_RECVERR if self.family == 4 else IPV6_RECVERR
        while True:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(65535, 1024, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            stamp: float | None = None
            for lvl, typ, value in ancdata:
                if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack_from("=qq", value)
                    stamp = sec + nsec / 1e9
            for lvl, typ, value in ancdata:
                if (lvl, typ) != (level, kind) or len(value) < _EXTENDED_ERR.size:
                    continue
                ee_errno, origin, ee_type, ee_code, _pad, info, _data = _EXTENDED_ERR.unpack_from(
                    value
                )
                offender = _sockaddr_address(value[_EXTENDED_ERR.size :])
                if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, SO_EE_ORIGIN_LOCAL):
                    continue
                out.append(
                    Received(
                        data,
                        offender or "",
                        None,
                        stamp,
                        time.monotonic(),
                        error_queue=True,
                        ee_errno=ee_errno,
                        ee_type=ee_type if origin != SO_EE_ORIGIN_LOCAL else -1,
                        ee_code=ee_code,
                        ee_info=info,
                    )
                )
        return out

    def close(self) -> None:
        self.sock.close()


def _sockaddr_address(raw: bytes) -> str | None:
    """The address in a kernel ``struct sockaddr_in``/``sockaddr_in6`` (host-order family)."""
    if len(raw) < 2:
        return None
    fam = struct.unpack_from("=H", raw)[0]
    if fam == socket.AF_INET and len(raw) >= 8:
        return str(ipaddress.IPv4Address(raw[4:8]))
    if fam == socket.AF_INET6 and len(raw) >= 24:
        return str(ipaddress.IPv6Address(raw[8:24]))
    return None


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Target:
    """A name as given and the address it resolved to."""

    name: str
    address: str
    family: int
    sockaddr: tuple[object, ...]


_DOTTED = re.compile(r"^[0-9.]+$")


def _check_literal(name: str, family: int | None) -> None:
    """Reject a malformed address before it reaches the resolver as a 'host name'."""
    if not name or name.startswith("-"):
        raise UsageError(f"{name!r} is not an address or a host name")
    looks_v6 = ":" in name
    if _DOTTED.match(name) or looks_v6:
        try:
            address = ipaddress.ip_address(name.split("%")[0])
        except ValueError as exc:
            kind = "IPv6" if looks_v6 else "IPv4"
            raise UsageError(f"{name!r} is not a valid {kind} address") from exc
        if family is not None and address.version != family:
            raise UsageError(f"{name} is an IPv{address.version} address but -{family} was given")


async def resolve_targets(names: Sequence[str], family: int | None = None) -> list[Target]:
    """Resolve each name (an address or a host name) to one address, IPv4 first by default."""
    loop = asyncio.get_running_loop()
    targets = []
    for name in names:
        _check_literal(name, family)
        fam = {4: socket.AF_INET, 6: socket.AF_INET6, None: socket.AF_UNSPEC}[family]
        try:
            infos = await loop.getaddrinfo(name, None, family=fam, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError) as exc:
            what = f"IPv{family} " if family else ""
            raise UsageError(f"cannot resolve {name!r} to an {what}address: {exc}") from exc
        infos.sort(key=lambda info: 0 if info[0] == socket.AF_INET else 1)
        af, _t, _p, _c, sockaddr = infos[0]
        fam_num = 4 if af == socket.AF_INET else 6
        address = str(sockaddr[0]).split("%")[0]
        targets.append(Target(name, address, fam_num, tuple(sockaddr)))
    return targets


# --------------------------------------------------------------------------- ping


@dataclass(frozen=True)
class PingOptions:
    """What ``backhaul ping`` was asked to do. Times in seconds; ``count=None`` runs until
    stopped."""

    count: int | None = 4
    interval: float = 1.0
    size: int = 56
    ttl: int | None = None
    timeout: float = 2.0
    dont_fragment: bool = False
    socket_kind: SocketKind = "auto"
    tcp_port: int | None = None

    def validate(self, families: Sequence[int] = (4,)) -> None:
        if self.count is not None and self.count < 1:
            raise UsageError(f"count {self.count} must be at least 1")
        if self.interval < 0.001:
            raise UsageError(f"interval {self.interval}s is below the 0.001s minimum")
        if self.timeout <= 0:
            raise UsageError(f"timeout {self.timeout}s must be above 0")
        if self.ttl is not None and not 1 <= self.ttl <= 255:
            raise UsageError(f"ttl {self.ttl} is not within 1-255")
        limit = 65507 if 4 in families else 65527
        if not 0 <= self.size <= limit:
            raise UsageError(f"size {self.size} is not within 0-{limit} bytes")
        if self.tcp_port is not None and not 1 <= self.tcp_port <= 65535:
            raise UsageError(f"TCP port {self.tcp_port} is not within 1-65535")


EventKind = Literal["reply", "duplicate", "late", "error", "closed"]


@dataclass(frozen=True, slots=True)
class PingEvent:
    """Something a target did: a reply (or a duplicate, a late one), an error, or for TCP
    ping a refused connection (``closed``: the host answered with RST)."""

    kind: EventKind
    target: Target
    seq: int
    source: str | None = None
    size: int | None = None
    ttl: int | None = None
    rtt: float | None = None
    message: str | None = None


@dataclass
class PingResult:
    target: Target
    statistics: PingStatistics
    elapsed: float
    events: list[PingEvent] = field(default_factory=list)
    mode: str = "icmp"

    @property
    def answered(self) -> bool:
        return self.statistics.received > 0


def _payload(size: int) -> bytes:
    return bytes((0x10 + i) & 0xFF for i in range(size))


def _rtt(stamp: float | None, sent_wall: float, sent_mono: float, now_mono: float) -> float:
    mono = now_mono - sent_mono
    if stamp is None:
        return mono
    wall = stamp - sent_wall
    # the kernel stamp is the better measurement unless the wall clock stepped in between
    if wall < 0 or abs(wall - mono) > 0.5:
        return mono
    return wall


class _EchoSession:
    """One target's ICMP echo run over its own socket."""

    def __init__(
        self,
        target: Target,
        options: PingOptions,
        on_event: Callable[[PingEvent], None],
    ) -> None:
        self.target = target
        self.options = options
        self.on_event = on_event
        self.sock = IcmpSocket(target.family, options.socket_kind)
        if options.ttl is not None:
            self.sock.set_ttl(options.ttl)
        if options.dont_fragment:
            self.sock.set_dont_fragment()
        self.ident = self.sock.ident if self.sock.ident is not None else _new_ident()
        self.ledger = EchoLedger(options.timeout)
        self.sent_at: dict[int, tuple[float, float]] = {}
        self.events: list[PingEvent] = []
        self.wakeup = asyncio.Event()
        self.payload = _payload(options.size)

    def _emit(self, event: PingEvent) -> None:
        self.events.append(event)
        self.on_event(event)

    def on_readable(self) -> None:
        for got in self.sock.receive_nowait():
            if got.error_queue:
                self._on_queued_error(got)
                continue
            try:
                message = icmp.parse_icmp(self.target.family, got.data)  # type: ignore[arg-type]
            except ProtocolError:
                continue
            if isinstance(message, icmp.Echo):
                self._on_echo(message, got)
            elif isinstance(message, icmp.IcmpError):
                self._on_error(message, got)
        self.wakeup.set()

    def _on_echo(self, message: icmp.Echo, got: Received) -> None:
        if not message.is_reply or (self.sock.raw and message.ident != self.ident):
            return
        sent = self.sent_at.get(message.seq)
        if sent is None:
            return
        rtt = _rtt(got.stamp, sent[0], sent[1], got.monotonic)
        verdict = self.ledger.reply(message.seq, got.monotonic, rtt)
        if verdict.kind is ReplyKind.UNKNOWN:
            return
        kind: EventKind = {
            ReplyKind.REPLY: "reply",
            ReplyKind.DUPLICATE: "duplicate",
            ReplyKind.LATE: "late",
        }[verdict.kind]  # type: ignore[index]
        self._emit(
            PingEvent(
                kind,
                self.target,
                message.seq,
                got.source,
                8 + len(message.payload),
                got.ttl,
                verdict.rtt,
            )
        )

    def _on_error(self, message: icmp.IcmpError, got: Received) -> None:
        quoted = message.quoted
        echo = quoted.transport
        if not isinstance(echo, icmp.EchoHeader) or echo.ident != self.ident:
            return
        if str(quoted.destination) != self.target.address:
            return
        if self.ledger.error(echo.seq):
            self._emit(
                PingEvent("error", self.target, echo.seq, got.source, message=message.describe())
            )

    def _on_queued_error(self, got: Received) -> None:
        if len(got.data) < 8:
            return
        seq = struct.unpack_from("!H", got.data, 6)[0]
        if got.ee_type < 0:  # local error (EMSGSIZE and friends)
            text = f"local error: {os.strerror(got.ee_errno)}"
            if got.ee_errno == errno.EMSGSIZE:
                text += f", mtu={got.ee_info}"
        else:
            text = icmp.describe_error(self.target.family, got.ee_type, got.ee_code, got.ee_info)
        if self.ledger.error(seq):
            self._emit(PingEvent("error", self.target, seq, got.source or None, message=text))

    def send(self, seq: int) -> None:
        packet = icmp.encode_echo(self.target.family, self.ident, seq, self.payload)  # type: ignore[arg-type]
        wall, mono = time.time(), time.monotonic()
        self.sent_at[seq] = (wall, mono)
        self.ledger.sent(seq, mono)
        try:
            self.sock.sendto(packet, self.target.sockaddr)
        except OSError as exc:
            self._on_send_error(seq, exc)

    def _on_send_error(self, seq: int, exc: OSError) -> None:
        if exc.errno == errno.EACCES:
            raise UsageError(
                f"the kernel refused to send to {self.target.address} "
                "(a broadcast address? ping a host address)"
            ) from exc
        text = f"local error: {exc.strerror or exc}"
        if exc.errno == errno.EMSGSIZE:
            mtu = self.sock.path_mtu(self.target.sockaddr)
            text = f"local error: message too long, mtu={mtu}"
        if self.ledger.error(seq):
            self._emit(PingEvent("error", self.target, seq, None, message=text))

    async def run(self, stop: asyncio.Event) -> PingResult:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self.on_readable)
        start = time.monotonic()
        try:
            await _schedule(self.options, stop, self.send)
            await self._drain(stop)
        finally:
            loop.remove_reader(self.sock.fileno())
            self.sock.close()
        return PingResult(
            self.target, self.ledger.statistics(), time.monotonic() - start, self.events
        )

    async def _drain(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            deadline = self.ledger.last_deadline()
            if deadline is None or self.ledger.outstanding(now) == 0:
                return
            self.wakeup.clear()
            await _wait_any(self.wakeup, stop, deadline - now)


def _new_ident() -> int:
    return int.from_bytes(os.urandom(2), "big") or 1


async def _wait_any(event: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    """Until ``event`` or ``stop`` is set, or ``timeout`` passes."""
    if timeout <= 0:
        return
    waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def _schedule(options: PingOptions, stop: asyncio.Event, send: Callable[[int], None]) -> None:
    """Call ``send(seq)`` for seq 1, 2, ... every ``interval`` on a fixed grid (no drift)."""
    start = time.monotonic()
    index = 0
    while options.count is None or index < options.count:
        if stop.is_set():
            return
        send((index + 1) & 0xFFFF)
        index += 1
        if options.count is not None and index >= options.count:
            return
        delay = start + index * options.interval - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass


class _TcpSession:
    """One target's TCP connect probes: time from SYN to SYN-ACK (or RST)."""

    def __init__(
        self, target: Target, options: PingOptions, on_event: Callable[[PingEvent], None]
    ) -> None:
        self.target = target
        self.options = options
        self.on_event = on_event
        self.ledger = EchoLedger(options.timeout)
        self.events: list[PingEvent] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def _emit(self, event: PingEvent) -> None:
        self.events.append(event)
        self.on_event(event)

    def send(self, seq: int) -> None:
        task = asyncio.get_running_loop().create_task(self._probe(seq))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _probe(self, seq: int) -> None:
        port = self.options.tcp_port
        assert port is not None
        af = socket.AF_INET if self.target.family == 4 else socket.AF_INET6
        sock = socket.socket(af, socket.SOCK_STREAM)
        sock.setblocking(False)
        # RST on close: no TIME_WAIT left behind by a fast series of probes
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if self.options.ttl is not None:
            if self.target.family == 4:
                sock.setsockopt(socket.SOL_IP, socket.IP_TTL, self.options.ttl)
            else:
                sock.setsockopt(SOL_IPV6, socket.IPV6_UNICAST_HOPS, self.options.ttl)
        loop = asyncio.get_running_loop()
        sockaddr = (self.target.sockaddr[0], port, *self.target.sockaddr[2:])
        start = time.monotonic()
        self.ledger.sent(seq, start)
        kind: EventKind = "reply"
        try:
            await asyncio.wait_for(loop.sock_connect(sock, sockaddr), self.options.timeout)
        except TimeoutError:
            return
        except ConnectionRefusedError:
            kind = "closed"
        except OSError as exc:
            if self.ledger.error(seq):
                self._emit(PingEvent("error", self.target, seq, message=exc.strerror or str(exc)))
            return
        finally:
            sock.close()
        now = time.monotonic()
        verdict = self.ledger.reply(seq, now)
        if verdict.kind is ReplyKind.REPLY:
            self._emit(PingEvent(kind, self.target, seq, self.target.address, rtt=verdict.rtt))

    async def run(self, stop: asyncio.Event) -> PingResult:
        start = time.monotonic()
        try:
            await _schedule(self.options, stop, self.send)
            stopper = asyncio.ensure_future(stop.wait())
            try:
                while self.tasks and not stop.is_set():
                    await asyncio.wait({*self.tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                await asyncio.gather(stopper, return_exceptions=True)
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        return PingResult(
            self.target, self.ledger.statistics(), time.monotonic() - start, self.events, "tcp"
        )


async def ping(
    targets: Sequence[Target],
    options: PingOptions,
    on_event: Callable[[PingEvent], None] = lambda _event: None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> list[PingResult]:
    """Ping every target at once (fping style); results in the order of ``targets``.

    ``on_ready`` is called once every socket is open, just before the first probe.

    ``stop`` (set on Ctrl-C by the CLI) ends sending and waiting early; the results then
    cover what was sent so far. Raises PermissionNeeded when no ICMP socket can be opened.
    """
    options.validate([t.family for t in targets])
    stop = stop or asyncio.Event()
    sessions: list[_EchoSession | _TcpSession] = []
    try:
        for target in targets:
            if options.tcp_port is not None:
                sessions.append(_TcpSession(target, options, on_event))
            else:
                sessions.append(_EchoSession(target, options, on_event))
    except BaseException:
        for session in sessions:
            if isinstance(session, _EchoSession):
                session.sock.close()
        raise
    on_ready()
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(session.run(stop)) for session in sessions]
    except BaseExceptionGroup as eg:
        for exc in eg.exceptions:
            if isinstance(exc, BackhaulError):
                raise exc from None
        raise
    return [task.result() for task in tasks]
