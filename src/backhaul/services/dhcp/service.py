"""The DHCPv4 service: sockets, the lease journal's group commit, signals, logs (the driver).

One UDP socket per interface, bound to port 67 and tied to the interface
(``SO_BINDTODEVICE``), receives requests; :class:`~backhaul.services.dhcp.responder.Responder`
decides; the driver writes the reply where RFC 2131 §4.1 says. A reply to a client that has no
address yet and did not ask for a broadcast goes out through a packet socket (``AF_PACKET``)
straight to its hardware address, as the RFC asks of servers that cannot fill the ARP cache.

Durability: a reply that grants or changes a lease waits until the lease's record is on
stable storage. Records are appended to the journal and committed by one worker thread, one
``fdatasync`` per group: while one group syncs, the loop keeps answering and gathers the next
group (group commit). Only when the sync returns are that group's ACKs sent; if it fails the
service stops rather than grant leases it could lose.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from backhaul.config.dhcp import DhcpConfig
from backhaul.errors import BackhaulError, PermissionNeeded, UsageError
from backhaul.proto.dhcp import (
    CLIENT_PORT,
    SERVER_PORT,
    DhcpFormatError,
    decode,
    encode,
)
from backhaul.proto.icmp import encode_udp, internet_checksum
from backhaul.services.dhcp import metrics
from backhaul.services.dhcp.lease import Lease, LeaseState, dotted
from backhaul.services.dhcp.responder import Destination, Outcome, Responder, plan_subnets
from backhaul.state import extra_metrics
from backhaul.state.dhcp_leases import LeaseJournal, LeaseRecord
from backhaul.tools.device_socket import udp_socket_on_device

__all__ = ["DhcpService", "check_interfaces", "interface_addresses", "run"]

ETH_P_IP = 0x0800
_SWEEP_EVERY = 5.0  # seconds between expiry sweeps
_MAX_WAITING = 4096  # replies waiting for a commit; beyond this, requests are dropped


def interface_addresses(
    names: list[str] | tuple[str, ...],
) -> dict[str, list[ipaddress.IPv4Interface]]:
    """Each named interface's IPv4 addresses; :class:`UsageError` if one does not exist."""
    found: dict[str, list[ipaddress.IPv4Interface]] = {}
    for name in names:
        try:
            done = subprocess.run(
                ["ip", "-j", "-4", "addr", "show", "dev", name],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except FileNotFoundError as exc:
            raise UsageError(
                "the `ip` command (iproute2) is needed: apt-get install iproute2"
            ) from exc
        if done.returncode != 0 or not os.path.exists(f"/sys/class/net/{name}"):
            raise UsageError(f"interface {name!r} does not exist here; see `ip link` for the names")
        addresses: list[ipaddress.IPv4Interface] = []
        for entry in json.loads(done.stdout or "[]"):
            for info in entry.get("addr_info", []):
                if info.get("family") == "inet":
                    addresses.append(
                        ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
                    )
        found[name] = addresses
    return found


def check_interfaces(config: DhcpConfig) -> dict[str, list[ipaddress.IPv4Interface]]:
    """Each interface's addresses, after checking that it exists and has an address in one
    of the subnets (:class:`UsageError` saying what to fix otherwise)."""
    addresses = interface_addresses(config.interfaces)
    for name in config.interfaces:
        local = [a for a in addresses[name] if any(a.ip in s.subnet for s in config.subnets)]
        if not addresses[name]:
            raise UsageError(
                f"interface {name} has no IPv4 address; give it one in a dhcp subnet"
                f" (e.g. `ip addr add 10.0.0.1/24 dev {name}`)"
            )
        if not local:
            have = ", ".join(str(a) for a in addresses[name])
            nets = ", ".join(str(s.subnet) for s in config.subnets)
            raise UsageError(
                f"interface {name} has no address in a dhcp subnet (it has {have}; the"
                f" subnets are {nets}); add an address or fix dhcp.subnets"
            )
    return addresses


def _ipv4_udp(
    source: ipaddress.IPv4Address, destination: ipaddress.IPv4Address, payload: bytes
) -> bytes:
    udp = encode_udp(source, destination, SERVER_PORT, CLIENT_PORT, payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0x10,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        source.packed,
        destination.packed,
    )
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + udp


_SAME_FIELDS = ("subnet", "client", "mac", "client_id", "hostname", "expires", "granted")


def _record(lease: Lease) -> LeaseRecord:
    same = {name: getattr(lease, name) for name in _SAME_FIELDS}
    return LeaseRecord(address=dotted(lease.address), state=lease.state.value, **same)


def _lease(record: LeaseRecord) -> Lease | None:
    try:
        state = LeaseState(record.state)
        address = int(ipaddress.IPv4Address(record.address))
    except ValueError:
        return None
    same = {name: getattr(record, name) for name in _SAME_FIELDS}
    return Lease(address=address, state=state, **same)


class _Endpoint(asyncio.DatagramProtocol):
    """Port 67 on one interface: hands each datagram to the service."""

    def __init__(self, service: DhcpService, interface: str) -> None:
        self.service = service
        self.interface = interface
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.service.on_datagram(self.interface, data)

    def error_received(self, exc: Exception) -> None:
        self.service.count("socket_errors")


class DhcpService:
    """The running server. ``start()`` binds and replays the journal, ``aclose()`` stops."""

    def __init__(
        self,
        config: DhcpConfig,
        *,
        log: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        metrics_file: str | None = None,
    ) -> None:
        self.config = config
        self.metrics_file = metrics_file
        self.clock = clock
        self._log_sink = log or _stderr_lines
        self.counters: dict[str, int] = {}
        self.journal = LeaseJournal(config.state_dir)
        self.responder: Responder | None = None
        self._endpoints: dict[str, _Endpoint] = {}
        self._packet_sockets: dict[str, socket.socket] = {}
        self._source: dict[str, ipaddress.IPv4Address] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dhcp-commit")
        self._waiting: list[tuple[str, Outcome]] = []
        self._committing: asyncio.Future[Any] | None = None
        self._compacting: asyncio.Future[Any] | None = None
        self._lines: list[str] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._admin: Any = None
        self.failed: BaseException | None = None
        self.stopped = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        config = self.config
        addresses = check_interfaces(config)
        for name in config.interfaces:
            self._source[name] = next(
                a.ip for a in addresses[name] if any(a.ip in s.subnet for s in config.subnets)
            )
        plans = plan_subnets(config, addresses)
        self.responder = Responder(
            plans, offer_hold=config.offer_hold, decline_quarantine=config.decline_quarantine
        )
        now = self.clock()
        for record in self.journal.open():
            lease = _lease(record)
            if lease is None or self.responder.subnet_of(lease.subnet) is None:
                continue
            self.responder.table.restore(lease)
        ended = self.responder.expire(now)  # leases that ran out while the server was down
        loop = asyncio.get_running_loop()
        for name in config.interfaces:
            sock = udp_socket_on_device(name, SERVER_PORT)
            _, protocol = await loop.create_datagram_endpoint(
                functools.partial(_Endpoint, self, name), sock=sock
            )
            self._endpoints[name] = protocol
            self._packet_sockets[name] = _packet_socket(name)
        if self.config.metrics_address is not None:
            from backhaul.admin.server import start_admin

            address = self.config.metrics_address
            self._admin = await start_admin(
                (address.host, address.port), self.render_metrics, reuse_port=False
            )
            self.log(f"metrics on http://{address}/metrics")
        self._sweeper = asyncio.create_task(self._sweep())
        bound = sum(1 for lease in self.responder.table if lease.state is LeaseState.BOUND)
        for plan in plans:
            where = f"on {plan.interface}" if plan.interface else "through relays"
            self.log(
                f"serving {plan.name} {where}, server id {plan.server_id},"
                f" pool of {plan.pool.size} addresses"
            )
        self.log(
            f"lease store {self.journal.path}: {len(self.responder.table)} leases, {bound} bound,"
            f" {len(ended)} ended while stopped"
        )

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._admin is not None:
            await self._admin.aclose()
        for pending in (self._committing, self._compacting):
            if pending is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending)
        for endpoint in self._endpoints.values():
            if endpoint.transport is not None:
                endpoint.transport.close()
        for sock in self._packet_sockets.values():
            sock.close()
        self._executor.shutdown(wait=True)
        self.journal.close()
        self._flush_log()

    # ------------------------------------------------------------------ packets

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def statistics(self) -> dict[str, int]:
        """The responder's counters plus the driver's (malformed, commits, socket errors)."""
        stats = dict(self.counters)
        if self.responder is not None:
            stats.update(self.responder.statistics())
        stats["commits"] = self.journal.commits
        return stats

    def render_metrics(self) -> bytes:
        assert self.responder is not None
        now = self.clock()
        used = self.responder.table.in_use(now)
        pools = {
            plan.name: (plan.pool.size, used.get(plan.name, 0)) for plan in self.responder.subnets
        }
        return metrics.render(self.statistics(), pools)

    def on_datagram(self, interface: str, data: bytes) -> None:
        responder = self.responder
        if responder is None or self.failed is not None:
            return
        try:
            packet = decode(data)
        except DhcpFormatError:
            self.count("dropped_malformed")
            return
        if len(self._waiting) >= _MAX_WAITING:
            self.count("dropped_overload")
            return
        try:
            out = responder.handle(packet, interface, self.clock())
        except Exception as exc:
            # A request that trips a bug must not stop the service for every other client:
            # it is dropped, counted (dropped_error on /metrics) and logged with its cause.
            self.count("dropped_error")
            self.log(
                f"error handling a request from {packet.chaddr.hex(':')}:"
                f" {type(exc).__name__}: {exc}"
            )
            return
        for line in out.log:
            self.log(line)
        if out.durable:
            for lease in out.durable:
                self.journal.append(_record(lease))
            self._waiting.append((interface, out))
            self._commit_next()
        elif out.reply is not None:
            self._send(interface, out)

    def _commit_next(self) -> None:
        if self._committing is not None or not self._waiting:
            return
        loop = asyncio.get_running_loop()
        batch, self._waiting = self._waiting, []
        lines = self.journal.take_pending()
        future = loop.run_in_executor(self._executor, self.journal.commit_lines, lines)
        self._committing = future
        future.add_done_callback(lambda f: self._committed(f, batch))

    def _committed(self, future: asyncio.Future[Any], batch: list[tuple[str, Outcome]]) -> None:
        self._committing = None
        error = future.exception()
        if error is not None:
            self.failed = error
            self.log(f"lease store failed, stopping (no unsaved lease is acknowledged): {error}")
            self.stopped.set()
            return
        for interface, out in batch:
            if out.reply is not None:
                self._send(interface, out)
        assert self.responder is not None
        if self.journal.wants_compaction(len(self.responder.table)):
            live = [
                _record(lease)
                for lease in self.responder.table
                if lease.state is not LeaseState.FREE
            ]
            loop = asyncio.get_running_loop()
            self._compacting = loop.run_in_executor(self._executor, self.journal.compact, live)
            self._compacting.add_done_callback(self._compacted)
        self._commit_next()

    def _compacted(self, future: asyncio.Future[Any]) -> None:
        self._compacting = None
        error = future.exception()
        if error is not None:
            self.failed = error
            self.log(f"lease store compaction failed, stopping: {error}")
            self.stopped.set()
        else:
            self.log(f"lease store compacted to {self.journal.records} records")

    def _send(self, interface: str, out: Outcome) -> None:
        assert out.reply is not None and out.destination is not None
        reply = out.reply
        try:
            data = encode(reply, max_size=out.max_size)
        except BackhaulError as exc:
            self.count("dropped_reply_too_large")
            self.log(f"reply to {reply.chaddr.hex(':')} not sent: {exc}")
            return
        endpoint = self._endpoints[interface]
        assert endpoint.transport is not None
        try:
            if out.destination is Destination.RELAY:
                endpoint.transport.sendto(data, (str(reply.giaddr), SERVER_PORT))
            elif out.destination is Destination.UNICAST:
                endpoint.transport.sendto(data, (str(reply.ciaddr), CLIENT_PORT))
            elif out.destination is Destination.BROADCAST:
                endpoint.transport.sendto(data, ("255.255.255.255", CLIENT_PORT))
            else:
                frame = _ipv4_udp(self._source[interface], reply.yiaddr, data)
                self._packet_sockets[interface].sendto(
                    frame, (interface, ETH_P_IP, 0, 0, reply.chaddr)
                )
        except OSError as exc:
            self.count("send_errors")
            self.log(f"reply to {reply.chaddr.hex(':')} not sent: {exc.strerror}")
            return
        self.count("sent")

    # ------------------------------------------------------------------ housekeeping

    async def _sweep(self) -> None:
        """Every second: publish the metrics (when asked to); every few: expire leases."""
        last_sweep = time.monotonic()
        while True:
            if self.metrics_file is not None:
                try:
                    extra_metrics.publish(self.metrics_file, self.render_metrics())
                except OSError as exc:
                    self.count("metrics_publish_errors")
                    self.log(f"cannot publish metrics to {self.metrics_file}: {exc.strerror}")
            await asyncio.sleep(1.0)
            if time.monotonic() - last_sweep >= _SWEEP_EVERY:
                last_sweep = time.monotonic()
                assert self.responder is not None
                for line in self.responder.expire(self.clock()):
                    self.log(line)

    def log(self, line: str) -> None:
        if not self._lines:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon(self._flush_log)
        self._lines.append(line)

    def _flush_log(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._log_sink("".join(f"{stamp} backhaul: dhcp {line}\n" for line in lines))


def _stderr_lines(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _packet_socket(interface: str) -> socket.socket:
    try:
        # protocol 0: this socket receives nothing, it only sends
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    except PermissionError as exc:
        raise PermissionNeeded(
            "replies to clients without an address need a packet socket (CAP_NET_RAW); run as root"
        ) from exc
    sock.setblocking(False)
    return sock


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(config: DhcpConfig, *, metrics_file: str | None = None) -> int:
    """Serve in the foreground until SIGTERM or SIGINT; the exit code. ``metrics_file``:
    publish the metrics there every second (for the edge's admin listener)."""
    loop = _new_loop()
    asyncio.set_event_loop(loop)

    async def main() -> int:
        service = DhcpService(config, metrics_file=metrics_file)
        try:
            await service.start()
        except BaseException:
            await service.aclose()  # what was opened (journal, sockets) is closed
            raise
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, service.stopped.set)
        try:
            await service.stopped.wait()
        finally:
            await service.aclose()
        return 1 if service.failed is not None else 0

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()
