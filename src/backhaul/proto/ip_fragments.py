"""IP datagrams put back together from their fragments (RFC 791 section 3.2, RFC 8200
section 4.5), sans-IO, as Wireshark does before it counts a datagram's transport layer.

Fragments are kept per (family, source, destination, protocol, identification). A datagram
is complete when the last fragment (no "more fragments") has given its length and the
pieces cover every byte up to it; the frame that completes it is the frame the transport
layer is counted on (Wireshark counts a fragmented UDP datagram once, on its last frame).
Overlaps keep the first copy. Bounded: at most :data:`MAX_PENDING` datagrams wait (the
oldest is given up first) and a datagram above 65,535 bytes is given up; a fragment whose
bytes the capture cut short makes its datagram impossible to rebuild, as in Wireshark.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backhaul.proto.packet import Packet, decode_transport

__all__ = ["MAX_PENDING", "Defragmenter"]

MAX_PENDING = 4096
MAX_DATAGRAM = 65535


@dataclass
class _Pending:
    pieces: dict[int, bytes] = field(default_factory=dict)
    total: int | None = None
    broken: bool = False  # a piece was cut short by the capture, or too big


class Defragmenter:
    """Feed every fragment packet; get ``(packet, buffer)`` back when one completes."""

    def __init__(self) -> None:
        self._pending: dict[tuple[int, bytes, bytes, int, int], _Pending] = {}
        self.given_up = 0  # datagrams dropped for the bounds or a cut-short piece

    def feed(self, packet: Packet, buf: bytes | memoryview) -> tuple[Packet, bytes] | None:
        """Add ``packet`` (which carries ``fragment``); returns the whole datagram decoded
        to its transport layer, with the buffer its offsets point into, or None."""
        assert packet.fragment is not None
        ident, offset, more = packet.fragment
        key = (packet.family, packet.src, packet.dst, packet.proto, ident)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= MAX_PENDING:
                del self._pending[next(iter(self._pending))]
                self.given_up += 1
            pending = self._pending[key] = _Pending()
        start = packet.payload_offset
        if packet.payload_captured < packet.payload_length:
            pending.broken = True
        if offset not in pending.pieces:
            pending.pieces[offset] = bytes(buf[start : start + packet.payload_captured])
        if not more:
            pending.total = offset + packet.payload_length
        if pending.total is None:
            return None
        if pending.total > MAX_DATAGRAM:
            pending.broken = True
        data = self._assemble(pending)
        if data is None:
            return None
        del self._pending[key]
        if pending.broken:
            self.given_up += 1
            return None
        base = packet.stack[:-1]  # the stack without its "fragment" mark
        whole = decode_transport(
            base, packet.family, packet.src, packet.dst, packet.proto, data, 0, len(data), len(data)
        )
        return whole, data

    @staticmethod
    def _assemble(pending: _Pending) -> bytes | None:
        """The datagram's bytes if the pieces cover all of it, else None."""
        assert pending.total is not None
        covered = 0
        parts = []
        for offset in sorted(pending.pieces):
            piece = pending.pieces[offset]
            if offset > covered:
                return None  # a hole
            if offset + len(piece) > covered:
                parts.append(piece[covered - offset :])
                covered = offset + len(piece)
            if covered >= pending.total:
                break
        if covered < pending.total:
            return None
        return b"".join(parts)[: pending.total]
