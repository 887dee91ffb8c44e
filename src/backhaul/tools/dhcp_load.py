"""A DHCP client for many simulated clients at once: the tests' probe and the benchmark's
load generator (``python -m bench.dhcp``).

It speaks from a UDP socket: as clients (port 68, the BROADCAST flag set so servers answer
by broadcast, which a socket can receive before it has an address), or as a relay agent
(port 67 on the relay's address, ``giaddr`` set, option 82 added), which is how one
namespace can stand for a whole remote subnet.

:func:`run_load` keeps ``window`` clients in flight, each doing DISCOVER, OFFER, REQUEST,
ACK with its own MAC and transaction id, and retransmits a step that got no answer.
Everything is bounded: the count, the window, every wait (a deadline per step and for the
whole run).
"""

from __future__ import annotations

import ipaddress
import os
import random
import select
import time
from dataclasses import dataclass, field

from backhaul.proto.dhcp import (
    BOOTREPLY,
    CLIENT_PORT,
    FLAG_BROADCAST,
    SERVER_PORT,
    DhcpFormatError,
    DhcpPacket,
    MessageType,
    Opt,
    decode,
    encode,
)
from backhaul.tools.device_socket import udp_socket_on_device

__all__ = ["DhcpProbe", "LoadResult", "mac_for", "run_load"]

_ZERO = ipaddress.IPv4Address(0)


def mac_for(index: int, salt: int = 0) -> bytes:
    """A locally administered unicast MAC for simulated client ``index``: distinct for each
    index (the multiplication is a bijection on 32 bits) but spread like real MACs, not
    consecutive (servers that hash the MAC to pick an address would collide otherwise)."""
    return bytes((0x02, salt & 0xFF)) + ((index * 2654435761) & 0xFFFFFFFF).to_bytes(4, "big")


class DhcpProbe:
    """One socket speaking DHCP for many clients; see the module docstring."""

    def __init__(
        self,
        interface: str,
        *,
        relay: str | None = None,
        server: str = "255.255.255.255",
        circuit_id: bytes = b"port-1",
    ) -> None:
        self.relay = ipaddress.IPv4Address(relay) if relay is not None else None
        self.server = server
        self.circuit_id = circuit_id
        if self.relay is not None:  # a relay agent listens on the server port
            sock = udp_socket_on_device(interface, SERVER_PORT, str(self.relay), shared=True)
        else:
            sock = udp_socket_on_device(interface, CLIENT_PORT, shared=True)
        self.sock = sock
        self._early: dict[int, list[DhcpPacket]] = {}

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DhcpProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ packets

    def packet(
        self,
        kind: MessageType,
        mac: bytes,
        xid: int,
        *,
        ciaddr: str | None = None,
        options: dict[int, bytes] | None = None,
        broadcast: bool = True,
    ) -> DhcpPacket:
        """A request from client ``mac`` (through the relay when this probe is one)."""
        opts: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes((kind,))}
        opts.update(options or {})
        if self.relay is not None:
            opts[Opt.RELAY_AGENT] = bytes((1, len(self.circuit_id))) + self.circuit_id
        return DhcpPacket(
            xid=xid,
            flags=FLAG_BROADCAST if broadcast else 0,
            ciaddr=ipaddress.IPv4Address(ciaddr) if ciaddr else _ZERO,
            giaddr=self.relay or _ZERO,
            hops=1 if self.relay is not None else 0,
            chaddr=mac,
            options=opts,
        )

    def send(self, packet: DhcpPacket, to: str | None = None) -> None:
        self.sock.sendto(encode(packet), (to or self.server, SERVER_PORT))

    def receive(self, xid: int, timeout: float) -> DhcpPacket | None:
        """The next reply with ``xid`` within ``timeout`` seconds, or ``None``."""
        early = self._early.get(xid)
        if early:
            return early.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            for reply in self._drain():
                if reply.xid == xid:
                    return reply
                queue = self._early.setdefault(reply.xid, [])
                if len(queue) < 16:
                    queue.append(reply)

    def _drain(self, limit: int = 256) -> list[DhcpPacket]:
        replies = []
        for _ in range(limit):
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            try:
                reply = decode(data)
            except DhcpFormatError:
                continue
            if reply.op == BOOTREPLY:
                replies.append(reply)
        return replies

    def exchange(
        self, packet: DhcpPacket, *, timeout: float = 1.0, tries: int = 3, to: str | None = None
    ) -> DhcpPacket | None:
        """Send ``packet`` and wait for its reply, retransmitting up to ``tries`` times."""
        for _ in range(tries):
            self.send(packet, to)
            reply = self.receive(packet.xid, timeout)
            if reply is not None:
                return reply
        return None

    def silent(self, packet: DhcpPacket, *, wait: float = 1.0) -> bool:
        """Send ``packet``; True if no reply came within ``wait`` seconds (for requests the
        server must not answer: RELEASE, DECLINE, an unknown INIT-REBOOT)."""
        self.send(packet)
        return self.receive(packet.xid, wait) is None

    def lease(
        self,
        mac: bytes,
        *,
        requested: str | None = None,
        options: dict[int, bytes] | None = None,
        xid: int | None = None,
    ) -> tuple[DhcpPacket | None, DhcpPacket | None]:
        """A whole DISCOVER/OFFER/REQUEST/ACK exchange: (offer, ack-or-nak)."""
        xid = xid if xid is not None else random.getrandbits(32)
        extra = dict(options or {})
        if requested is not None:
            extra[Opt.REQUESTED_ADDRESS] = ipaddress.IPv4Address(requested).packed
        offer = self.exchange(self.packet(MessageType.DISCOVER, mac, xid, options=extra))
        if offer is None or offer.message_type is not MessageType.OFFER:
            return offer, None
        server_id = offer.options.get(Opt.SERVER_ID, b"")
        extra[Opt.REQUESTED_ADDRESS] = offer.yiaddr.packed
        extra[Opt.SERVER_ID] = server_id
        ack = self.exchange(self.packet(MessageType.REQUEST, mac, xid, options=extra))
        return offer, ack


@dataclass
class LoadResult:
    """What a load run got: ``leases`` (MAC hex -> address), ``seconds`` from the first send
    to the last ACK, NAKs, and the clients that never finished."""

    leases: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    naks: int = 0
    unfinished: int = 0
    retransmits: int = 0

    @property
    def rate(self) -> float:
        return len(self.leases) / self.seconds if self.seconds > 0 else 0.0


def run_load(
    probe: DhcpProbe,
    count: int,
    *,
    window: int = 64,
    salt: int | None = None,
    step_timeout: float = 1.0,
    deadline: float = 60.0,
) -> LoadResult:
    """``count`` new clients each get a lease, ``window`` at a time (see the module doc)."""
    salt = salt if salt is not None else (os.getpid() ^ int(time.time())) & 0xFF
    base_xid = random.getrandbits(31)
    result = LoadResult()
    # per client: [mac, step (0 = waiting OFFER, 1 = waiting ACK), last send, sends, the
    # datagram to resend, index, NAKs so far]
    flying: dict[int, list[object]] = {}
    next_index = 0
    start = time.monotonic()
    end = start + deadline
    last_ack = start
    discover_opts = {Opt.PARAMETER_LIST: bytes((1, 3, 6, 15, 51, 54))}

    def launch(index: int, now: float, naks: int = 0) -> None:
        mac = mac_for(index, salt)
        xid = (base_xid + index + (naks << 24)) & 0xFFFFFFFF
        data = encode(probe.packet(MessageType.DISCOVER, mac, xid, options=discover_opts))
        probe.sock.sendto(data, (probe.server, SERVER_PORT))
        flying[xid] = [mac, 0, now, 1, data, index, naks]

    while (flying or next_index < count) and time.monotonic() < end:
        now = time.monotonic()
        while len(flying) < window and next_index < count:
            launch(next_index, now)
            next_index += 1
        ready, _, _ = select.select([probe.sock], [], [], 0.05)
        now = time.monotonic()
        if ready:
            for reply in probe._drain():
                state = flying.get(reply.xid)
                if state is None:
                    continue
                kind = reply.message_type
                if state[1] == 0 and kind is MessageType.OFFER:
                    opts = {
                        **discover_opts,
                        Opt.REQUESTED_ADDRESS: reply.yiaddr.packed,
                        Opt.SERVER_ID: reply.options.get(Opt.SERVER_ID, b""),
                    }
                    mac = state[0]
                    assert isinstance(mac, bytes)
                    data = encode(probe.packet(MessageType.REQUEST, mac, reply.xid, options=opts))
                    probe.sock.sendto(data, (probe.server, SERVER_PORT))
                    flying[reply.xid] = [mac, 1, now, 1, data, state[5], state[6]]
                elif state[1] == 1 and kind is MessageType.ACK:
                    mac = state[0]
                    assert isinstance(mac, bytes)
                    result.leases[mac.hex()] = str(reply.yiaddr)
                    del flying[reply.xid]
                    last_ack = now
                elif state[1] == 1 and kind is MessageType.NAK:
                    # as a real client does (RFC 2131 §4.4.1): back to INIT, a new DISCOVER
                    result.naks += 1
                    naks = int(str(state[6])) + 1
                    del flying[reply.xid]
                    if naks > 5:
                        result.unfinished += 1
                    else:
                        index = state[5]
                        assert isinstance(index, int)
                        launch(index, now, naks)
        for xid, state in list(flying.items()):
            sent_at, sends = state[2], state[3]
            assert isinstance(sent_at, float) and isinstance(sends, int)
            if now - sent_at > step_timeout:
                if sends >= 4:
                    del flying[xid]
                    result.unfinished += 1
                    continue
                data = state[4]
                assert isinstance(data, bytes)
                probe.sock.sendto(data, (probe.server, SERVER_PORT))
                state[2], state[3] = now, sends + 1
                result.retransmits += 1
    result.unfinished += len(flying) + (count - next_index)
    result.seconds = last_ack - start
    return result
