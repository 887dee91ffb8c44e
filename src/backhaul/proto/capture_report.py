"""One pass over a capture, computing the summaries asked for (sans-IO: the caller maps the
file and shows progress).

Each frame is decoded once (:func:`~backhaul.proto.packet.decode`), IP fragments are put
back together (:mod:`backhaul.proto.ip_fragments`: a fragmented datagram counts once, on
the frame that completes it, as in Wireshark), and the result is handed to the analyses
asked for; an analysis nobody asked for costs nothing. The result is a JSON-ready document
whose keys are stable (``tcp_conversations``, ``udp_conversations``, ``endpoints``,
``protocol_hierarchy``, ``tcp_flows``, ``http``, ``dns``, ``follow``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backhaul.proto.conversations import ConversationTable, EndpointTable, ProtocolHierarchy
from backhaul.proto.ip_fragments import Defragmenter
from backhaul.proto.packet import address_text, decode, endpoint_text
from backhaul.proto.pcap import CaptureReader
from backhaul.proto.tcp_flows import TcpFlowAnalysis
from backhaul.proto.transactions import DnsTransactions, FollowedStream, HttpTransactions

__all__ = ["ReportRequest", "summarise"]

PROGRESS_EVERY = 1 << 16  # frames between progress calls

# The bulk path: Ethernet + option-less IPv4 read in one call (type, version/IHL, total
# length, fragment field, protocol, addresses), then the transport header in one more.
_ETH_IPV4 = struct.Struct("!12xHBxH2xHxB2x4s4s").unpack_from  # not a fragment: 0x3FFF clear
_TCP_FIELDS = struct.Struct("!HHI4xxB").unpack_from
_UDP_PORTS = struct.Struct("!HH").unpack_from


@dataclass(frozen=True)
class ReportRequest:
    """What to compute. ``conversations`` holds ``"tcp"`` and/or ``"udp"``; ``endpoints`` is
    ``"ip"``, ``"tcp"``, ``"udp"`` or None; ``follow`` a TCP stream index or None."""

    conversations: frozenset[str] = frozenset()
    endpoints: str | None = None
    hierarchy: bool = False
    tcp_flows: bool = False
    http: bool = False
    dns: bool = False
    follow: int | None = None


def summarise(
    reader: CaptureReader,
    request: ReportRequest,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Read every frame of ``reader`` once and return the requested summaries."""
    need_tcp = bool("tcp" in request.conversations or request.tcp_flows or request.http) or (
        request.follow is not None
    )
    tcp_table = ConversationTable(6) if need_tcp else None
    udp_table = ConversationTable(17) if "udp" in request.conversations else None
    endpoints = EndpointTable(request.endpoints) if request.endpoints else None
    hierarchy = ProtocolHierarchy() if request.hierarchy else None
    flows = TcpFlowAnalysis() if request.tcp_flows else None
    http = HttpTransactions() if request.http else None
    dns_rows = DnsTransactions() if request.dns else None
    follow = FollowedStream(request.follow) if request.follow is not None else None
    payload_users = http is not None or follow is not None
    defragmenter = Defragmenter()

    buf = reader.buffer
    # Only conversation tables asked for: frames of the common shape (Ethernet, IPv4 without
    # options, not a fragment, the whole transport header captured) skip the general
    # decoder; everything else takes it. Both feed the same tables (tested to agree).
    bulk = (
        not (endpoints or hierarchy or flows or http or dns_rows or follow)
        and request.conversations
    )
    frames = 0
    total_bytes = 0
    origin: float | None = None
    last = 0.0
    for number, time, linktype, caplen, origlen, offset in reader.frames():
        if origin is None:
            origin = time
        frames += 1
        total_bytes += origlen
        last = time
        if progress is not None and not frames % PROGRESS_EVERY:
            progress(reader.position)
        if bulk and linktype == 1 and caplen >= 54:
            etype, vihl, total, frag, proto, src, dst = _ETH_IPV4(buf, offset)
            if etype == 0x0800 and vihl == 0x45 and not frag & 0x3FFF:
                if proto == 6 and total >= 40:
                    if tcp_table is not None:
                        sport, dport, seq, flags = _TCP_FIELDS(buf, offset + 34)
                        if sport or dport:
                            tcp_table.feed_fields(
                                number, time, origlen, src, sport, dst, dport, flags, seq
                            )
                    continue
                if proto == 17 and total >= 28:
                    if udp_table is not None:
                        sport, dport = _UDP_PORTS(buf, offset + 34)
                        if sport or dport:
                            udp_table.feed_fields(
                                number, time, origlen, src, sport, dst, dport, 0, 0
                            )
                    continue
        packet = decode(linktype, buf, offset, caplen)
        source = buf
        if packet.fragment is not None:
            whole = defragmenter.feed(packet, buf)
            if whole is not None:  # this frame completes a datagram: count it here
                packet, source = whole
        if hierarchy is not None:
            hierarchy.feed(origlen, packet)
        if endpoints is not None:
            endpoints.feed(origlen, packet)
        if packet.fragment is not None:
            continue  # a piece of a datagram not yet whole
        proto = packet.proto
        if proto == 6:
            if tcp_table is None or not (packet.sport or packet.dport):
                continue
            conv = tcp_table.feed(number, time, origlen, packet)
            if flows is not None:
                flows.feed(time, packet, conv)
            if payload_users and packet.payload_captured:
                start = packet.payload_offset
                payload = bytes(source[start : start + packet.payload_captured])
                if http is not None:
                    http.feed(time, packet, conv, payload)
                if follow is not None:
                    follow.feed(time, packet, conv, payload)
            elif payload_users and packet.flags & 0x02:
                if http is not None:
                    http.feed(time, packet, conv, b"")
                if follow is not None:
                    follow.feed(time, packet, conv, b"")
        elif proto == 17 and packet.family:
            if udp_table is not None and (packet.sport or packet.dport):
                udp_table.feed(number, time, origlen, packet)
            if dns_rows is not None and packet.payload_captured:
                start = packet.payload_offset
                payload = bytes(source[start : start + packet.payload_captured])
                dns_rows.feed(number, time, origin, packet, payload)
    if progress is not None:
        progress(reader.position)

    origin = origin if origin is not None else 0.0
    document: dict[str, Any] = {
        "file": reader.name,
        "format": reader.format,
        "frames": frames,
        "bytes": total_bytes,
        "duration": round(last - origin, 9) if frames else 0.0,
    }
    if "tcp" in request.conversations and tcp_table is not None:
        document["tcp_conversations"] = tcp_table.documents(origin)
    if udp_table is not None:
        document["udp_conversations"] = udp_table.documents(origin)
    if endpoints is not None:
        document["endpoints"] = {"kind": endpoints.kind, "rows": endpoints.documents()}
    if hierarchy is not None:
        document["protocol_hierarchy"] = hierarchy.document()
    if flows is not None and tcp_table is not None:
        rows = []
        for conv in tcp_table.conversations:
            flow = flows.flows.get(conv.index)
            if flow is None:
                continue
            row = {
                "stream": conv.index,
                "address_a": address_text(conv.a_addr),
                "port_a": conv.a_port,
                "address_b": address_text(conv.b_addr),
                "port_b": conv.b_port,
            }
            row |= flow.document()
            rows.append(row)
        document["tcp_flows"] = rows
    if http is not None:
        document["http"] = http.documents(origin)
        document["http_summary"] = {
            "requests": http.total,
            "rows_kept": len(document["http"]),
            "unmatched_responses": http.unmatched_responses,
        }
    if dns_rows is not None:
        document["dns"] = {
            "transactions": dns_rows.rows,
            "malformed": dns_rows.malformed,
            "unmatched_responses": dns_rows.unmatched_responses,
        }
    if follow is not None:
        document["follow"] = _follow_document(follow, origin)
    return document


def _follow_document(follow: FollowedStream, origin: float) -> dict[str, Any]:
    conv = follow.conv
    if conv is None:
        return {"stream": follow.index, "found": False, "chunks": []}
    return {
        "stream": follow.index,
        "found": True,
        "node_a": endpoint_text(conv.a_addr, conv.a_port),
        "node_b": endpoint_text(conv.b_addr, conv.b_port),
        "bytes_a_to_b": sum(len(c[2]) for c in follow.chunks if c[0]),
        "bytes_b_to_a": sum(len(c[2]) for c in follow.chunks if not c[0]),
        "truncated": follow.truncated,
        "chunks": [
            {
                "from": "a" if forward else "b",
                "time": round(time - origin, 6),
                "data": bytes(data).hex(),
            }
            for forward, time, data in follow.chunks
        ],
    }
