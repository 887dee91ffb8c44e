"""What happened inside each TCP conversation: retransmissions, round-trip times and the
byte streams themselves, sans-IO.

- **Retransmission** (as Wireshark's ``tcp.analysis.retransmission`` family): a segment that
  carries data (or SYN/FIN) and starts below the highest sequence number already sent in its
  direction, unless it is a keep-alive (one byte or none, one below that). Counted per flow.
- **RTT** (as ``tcp.analysis.ack_rtt``): for every ACK that acknowledges outstanding data,
  the time since the highest segment it covers was first sent (like Wireshark, and unlike
  an RTO estimator following Karn's rule, a retransmitted segment is timed from its first
  transmission). The handshake RTT is from the latest SYN to the ACK of the SYN-ACK
  (``tcp.analysis.initial_rtt``).
- **Reassembly** (for ``--follow`` and HTTP): each direction's payload in sequence order,
  duplicates dropped, out-of-order segments held up to a bound, delivered with the time of
  the frame that completed them.

Sequence numbers compare modulo 2**32 (RFC 9293 section 3.4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backhaul.proto.conversations import Conversation
from backhaul.proto.packet import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Packet

__all__ = ["FlowStatistics", "Reassembler", "TcpFlowAnalysis"]

_MASK = 0xFFFFFFFF
_HALF = 0x80000000
MAX_HELD_BYTES = 8 * 1024 * 1024  # out-of-order data held per direction


def _before(a: int, b: int) -> bool:
    """a < b in sequence space."""
    return a != b and ((b - a) & _MASK) < _HALF


class Reassembler:
    """One direction's payload in order. ``deliver(time, data)`` is called for in-order data."""

    __slots__ = ("_held", "_held_bytes", "deliver", "dropped", "next_seq")

    def __init__(self, deliver: Callable[[float, bytes], None]) -> None:
        self.deliver = deliver
        self.next_seq: int | None = None
        self._held: dict[int, bytes] = {}
        self._held_bytes = 0
        self.dropped = 0  # bytes given up (gaps beyond the bound, missing data)

    def feed(self, time: float, seq: int, flags: int, data: bytes) -> None:
        if self.next_seq is None:
            self.next_seq = (seq + 1) & _MASK if flags & TCP_SYN else seq
            if flags & TCP_SYN:
                return self._feed_data(time, (seq + 1) & _MASK, data)
        elif flags & TCP_SYN:
            seq = (seq + 1) & _MASK
        self._feed_data(time, seq, data)

    def _feed_data(self, time: float, seq: int, data: bytes) -> None:
        if not data or self.next_seq is None:
            return
        nxt = self.next_seq
        if _before(seq, nxt):
            skip = (nxt - seq) & _MASK
            if skip >= len(data):
                return  # all of it was delivered already
            data = data[skip:]
            seq = nxt
        if seq != nxt:
            if self._held_bytes + len(data) > MAX_HELD_BYTES:
                self.dropped += len(data)
                return
            if len(data) > len(self._held.get(seq, b"")):
                self._held_bytes += len(data) - len(self._held.get(seq, b""))
                self._held[seq] = data
            return
        self.deliver(time, data)
        nxt = (seq + len(data)) & _MASK
        while self._held:
            ready = [s for s in self._held if not _before(nxt, s)]
            if not ready:
                break
            for s in ready:
                chunk = self._held.pop(s)
                self._held_bytes -= len(chunk)
                skip = (nxt - s) & _MASK
                if skip < len(chunk):
                    self.deliver(time, chunk[skip:])
                    nxt = (nxt + len(chunk) - skip) & _MASK
        self.next_seq = nxt


class _Direction:
    __slots__ = ("max_next", "outstanding", "retransmissions", "segments", "syn_time")

    def __init__(self) -> None:
        self.max_next: int | None = None
        self.outstanding: list[tuple[int, float]] = []  # (end seq, time), in send order
        self.retransmissions = 0
        self.segments = 0
        self.syn_time: float | None = None


class FlowStatistics:
    """Retransmissions and RTT samples of one TCP conversation."""

    __slots__ = ("ab", "ba", "handshake_rtt", "rtt_count", "rtt_max", "rtt_min", "rtt_sum",
                 "synack_seen")  # fmt: skip

    def __init__(self) -> None:
        self.ab = _Direction()
        self.ba = _Direction()
        self.rtt_count = 0
        self.rtt_sum = 0.0
        self.rtt_min = float("inf")
        self.rtt_max = 0.0
        self.handshake_rtt: float | None = None
        self.synack_seen = False

    def add_rtt(self, sample: float) -> None:
        self.rtt_count += 1
        self.rtt_sum += sample
        self.rtt_min = min(self.rtt_min, sample)
        self.rtt_max = max(self.rtt_max, sample)

    def document(self) -> dict[str, Any]:
        rtt: dict[str, Any] | None = None
        if self.rtt_count:
            rtt = {
                "samples": self.rtt_count,
                "min_ms": round(self.rtt_min * 1000, 3),
                "avg_ms": round(self.rtt_sum / self.rtt_count * 1000, 3),
                "max_ms": round(self.rtt_max * 1000, 3),
            }
        return {
            "segments_a_to_b": self.ab.segments,
            "segments_b_to_a": self.ba.segments,
            "retransmissions_a_to_b": self.ab.retransmissions,
            "retransmissions_b_to_a": self.ba.retransmissions,
            "retransmissions": self.ab.retransmissions + self.ba.retransmissions,
            "handshake_rtt_ms": None
            if self.handshake_rtt is None
            else round(self.handshake_rtt * 1000, 3),
            "ack_rtt": rtt,
        }


class TcpFlowAnalysis:
    """Retransmissions and RTT per TCP conversation (keyed by stream index)."""

    def __init__(self) -> None:
        self.flows: dict[int, FlowStatistics] = {}

    def feed(self, time: float, packet: Packet, conv: Conversation) -> None:
        flow = self.flows.get(conv.index)
        if flow is None:
            flow = self.flows[conv.index] = FlowStatistics()
        forward = packet.src == conv.a_addr and packet.sport == conv.a_port
        this, other = (flow.ab, flow.ba) if forward else (flow.ba, flow.ab)
        flags = packet.flags
        seq = packet.seq
        length = packet.payload_length
        occupies = length + (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)
        if occupies:
            this.segments += 1
            end = (seq + occupies) & _MASK
            retransmitted = False
            if this.max_next is not None and _before(seq, this.max_next):
                keepalive = (
                    length <= 1
                    and not flags & (TCP_SYN | TCP_FIN)
                    and ((seq + 1) & _MASK) == this.max_next
                )
                if not keepalive and not flags & TCP_RST:
                    this.retransmissions += 1
                    retransmitted = True
            if this.max_next is None or _before(this.max_next, end):
                this.max_next = end
            if not retransmitted:
                # a retransmission keeps the first transmission's time, as Wireshark's
                # ack_rtt does (so a sample can include a retransmission timeout)
                this.outstanding.append((end, time))
                if len(this.outstanding) > 4096:
                    del this.outstanding[:2048]
            if flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
                this.syn_time = time
            elif flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
                flow.synack_seen = True
        if flags & TCP_ACK and other.outstanding:
            ack = packet.ack
            acked = 0
            for end, _t in other.outstanding:
                if _before(ack, end):
                    break
                acked += 1
            if acked:
                sent = other.outstanding[acked - 1][1]
                flow.add_rtt(time - sent)
                del other.outstanding[:acked]
        if (
            flow.handshake_rtt is None
            and flow.synack_seen
            and flags & (TCP_SYN | TCP_ACK) == TCP_ACK
            and this.syn_time is not None
        ):
            flow.handshake_rtt = time - this.syn_time
