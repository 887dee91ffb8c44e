"""Who talked to whom in a capture: conversations, endpoints and the protocol hierarchy.

Counted as Wireshark counts them, so ``backhaul capture`` agrees with ``tshark -z conv,tcp``,
``-z conv,udp``, ``-z endpoints,ip`` and ``-z io,phs`` on the same file:

- frames and bytes are whole frames (their original length on the wire);
- a TCP conversation is a ``tcp.stream``: one per address/port pair, except that a SYN
  (without ACK) whose sequence number differs from the first sequence number seen in its
  direction starts a new conversation on the same pair (a reused port: Wireshark's
  ``TCP_A_REUSED_PORTS`` rule in ``packet-tcp.c``). The first sequence number of a direction
  is the SYN's, or one less than the first segment's when the SYN was not captured;
- a UDP conversation is one per address/port pair;
- side A of a conversation is the source of its first frame.

Everything here is pure: values in (decoded :class:`~backhaul.proto.packet.Packet`, frame
number, time, length), tables out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backhaul.proto.packet import TCP_ACK, TCP_SYN, Packet, address_text

__all__ = [
    "Conversation",
    "ConversationTable",
    "EndpointTable",
    "ProtocolHierarchy",
]

_MASK32 = 0xFFFFFFFF


class Conversation:
    """One conversation: side A (the first frame's source) and side B, counts each way."""

    __slots__ = (
        "a_addr",
        "a_port",
        "b_addr",
        "b_port",
        "base_ab",
        "base_ba",
        "bytes_ab",
        "bytes_ba",
        "first",
        "first_frame",
        "frames_ab",
        "frames_ba",
        "index",
        "last",
    )

    def __init__(
        self, index: int, src: bytes, sport: int, dst: bytes, dport: int, frame: int, time: float
    ) -> None:
        self.index = index
        self.a_addr = src
        self.a_port = sport
        self.b_addr = dst
        self.b_port = dport
        self.frames_ab = self.frames_ba = 0
        self.bytes_ab = self.bytes_ba = 0
        self.first = self.last = time
        self.first_frame = frame
        self.base_ab: int | None = None
        self.base_ba: int | None = None

    def document(self, origin: float) -> dict[str, Any]:
        """The conversation as JSON-ready values; times relative to ``origin``."""
        return {
            "stream": self.index,
            "address_a": address_text(self.a_addr),
            "port_a": self.a_port,
            "address_b": address_text(self.b_addr),
            "port_b": self.b_port,
            "frames_a_to_b": self.frames_ab,
            "bytes_a_to_b": self.bytes_ab,
            "frames_b_to_a": self.frames_ba,
            "bytes_b_to_a": self.bytes_ba,
            "frames": self.frames_ab + self.frames_ba,
            "bytes": self.bytes_ab + self.bytes_ba,
            "relative_start": round(self.first - origin, 6),
            "duration": round(self.last - self.first, 6),
        }


class ConversationTable:
    """TCP (``proto=6``) or UDP (``proto=17``) conversations, numbered from 0 in order of
    their first frame (Wireshark's ``tcp.stream`` / ``udp.stream``)."""

    def __init__(self, proto: int) -> None:
        self.proto = proto
        self.conversations: list[Conversation] = []
        self._current: dict[tuple[bytes, int, bytes, int], Conversation] = {}

    def feed(self, frame: int, time: float, length: int, packet: Packet) -> Conversation:
        """Count one frame of this table's protocol; returns its conversation."""
        return self.feed_fields(
            frame, time, length, packet.src, packet.sport, packet.dst, packet.dport,
            packet.flags, packet.seq,
        )  # fmt: skip

    def feed_fields(
        self, frame: int, time: float, length: int, src: bytes, sport: int, dst: bytes,
        dport: int, flags: int, seq: int,
    ) -> Conversation:  # fmt: skip
        """:meth:`feed` from the header fields themselves (the bulk path decodes in place)."""
        if src < dst or (src == dst and sport <= dport):
            key = (src, sport, dst, dport)
        else:
            key = (dst, dport, src, sport)
        conv = self._current.get(key)
        tcp = self.proto == 6
        if conv is not None:
            forward = sport == conv.a_port and src == conv.a_addr
            if tcp and flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
                base = conv.base_ab if forward else conv.base_ba
                if base is not None and base != seq:
                    conv = None  # a new SYN with a new ISN: a new conversation
        if conv is None:
            conv = Conversation(len(self.conversations), src, sport, dst, dport, frame, time)
            self.conversations.append(conv)
            self._current[key] = conv
            forward = True
        if forward:
            conv.frames_ab += 1
            conv.bytes_ab += length
            if tcp and conv.base_ab is None:
                conv.base_ab = seq if flags & TCP_SYN else (seq - 1) & _MASK32
        else:
            conv.frames_ba += 1
            conv.bytes_ba += length
            if tcp and conv.base_ba is None:
                conv.base_ba = seq if flags & TCP_SYN else (seq - 1) & _MASK32
        conv.last = time
        return conv

    def documents(self, origin: float) -> list[dict[str, Any]]:
        return [c.document(origin) for c in self.conversations]


@dataclass
class _Endpoint:
    tx_frames: int = 0
    tx_bytes: int = 0
    rx_frames: int = 0
    rx_bytes: int = 0


class EndpointTable:
    """Endpoints as ``tshark -z endpoints,ip`` (``kind="ip"``: addresses, v4 and v6) or
    ``endpoints,tcp`` / ``endpoints,udp`` (address and port)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.proto = {"ip": 0, "tcp": 6, "udp": 17}[kind]
        self._table: dict[tuple[bytes, int], _Endpoint] = {}

    def feed(self, length: int, packet: Packet) -> None:
        if not packet.family or (self.proto and packet.proto != self.proto):
            return
        if self.proto and not (packet.sport or packet.dport):
            return
        table = self._table
        src_key = (packet.src, packet.sport if self.proto else 0)
        dst_key = (packet.dst, packet.dport if self.proto else 0)
        src = table.get(src_key)
        if src is None:
            src = table[src_key] = _Endpoint()
        src.tx_frames += 1
        src.tx_bytes += length
        dst = table.get(dst_key)
        if dst is None:
            dst = table[dst_key] = _Endpoint()
        dst.rx_frames += 1
        dst.rx_bytes += length

    def documents(self) -> list[dict[str, Any]]:
        rows = []
        for (addr, port), e in self._table.items():
            row: dict[str, Any] = {"address": address_text(addr)}
            if self.proto:
                row["port"] = port
            row |= {
                "frames": e.tx_frames + e.rx_frames,
                "bytes": e.tx_bytes + e.rx_bytes,
                "tx_frames": e.tx_frames,
                "tx_bytes": e.tx_bytes,
                "rx_frames": e.rx_frames,
                "rx_bytes": e.rx_bytes,
            }
            rows.append(row)
        rows.sort(key=lambda r: (-r["bytes"], r["address"], r.get("port", 0)))
        return rows


@dataclass
class _Node:
    frames: int = 0
    bytes: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


class ProtocolHierarchy:
    """Frames and bytes per protocol path, as ``tshark -z io,phs`` arranges them
    (``frame`` at the root)."""

    def __init__(self) -> None:
        self.root = _Node()
        self._paths: dict[tuple[str, ...], list[_Node]] = {}

    def feed(self, length: int, packet: Packet) -> None:
        nodes = self._paths.get(packet.stack)
        if nodes is None:
            nodes = [self.root]
            node = self.root
            for name in packet.stack:
                node = node.children.setdefault(name, _Node())
                nodes.append(node)
            self._paths[packet.stack] = nodes
        for node in nodes:
            node.frames += 1
            node.bytes += length

    def document(self) -> dict[str, Any]:
        def walk(name: str, node: _Node) -> dict[str, Any]:
            children = sorted(node.children.items(), key=lambda kv: -kv[1].frames)
            return {
                "protocol": name,
                "frames": node.frames,
                "bytes": node.bytes,
                "children": [walk(n, c) for n, c in children],
            }

        return walk("frame", self.root)
