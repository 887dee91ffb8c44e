"""Requests and their answers found in a capture: HTTP/1.1 exchanges and DNS queries, and a
followed TCP stream. Sans-IO: fed decoded packets, they return JSON-ready rows.

- HTTP/1.1: each TCP conversation's two directions are reassembled
  (:class:`~backhaul.proto.tcp_flows.Reassembler`) and parsed with httptools (llhttp); a
  direction whose first bytes are neither a request line nor a status line is left alone.
  Responses pair with requests in order (RFC 9112 section 9.3: responses come in request
  order on a connection). ``time_ms`` is from the frame that completed the request to the
  first frame of the response (Wireshark's ``http.time`` counts from the request frame).
- DNS over UDP (port 53): messages decoded by dnspython; a response pairs with the query of
  the same client address and port, server, and ID. ``response_ms`` is Wireshark's
  ``dns.time``. A message dnspython cannot decode is counted as malformed, never raised.
"""

from __future__ import annotations

import re
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import httptools

from backhaul.proto.conversations import Conversation
from backhaul.proto.packet import Packet, endpoint_text
from backhaul.proto.tcp_flows import Reassembler

__all__ = ["DnsTransactions", "FollowedStream", "HttpTransactions"]

_REQUEST_START = re.compile(rb"[A-Z][A-Z-]{1,19} ")
MAX_TRANSACTIONS = 100_000  # rows kept; more are counted, not stored


class _Message:
    """Callbacks for httptools: collects one message's parts and times."""

    def __init__(self, side: _HttpSide) -> None:
        self.side = side

    def on_message_begin(self) -> None:
        self.side.current = {"start": self.side.now, "url": b"", "headers": {}, "body": 0}

    def on_url(self, url: bytes) -> None:
        if len(self.side.current["url"]) < 8192:
            self.side.current["url"] += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key in ("host", "content-type"):  # the only ones a row shows
            self.side.current["headers"][key] = value.decode("latin-1")[:256]

    def on_body(self, body: bytes) -> None:
        self.side.current["body"] += len(body)

    def on_message_complete(self) -> None:
        message = self.side.current
        message["end"] = self.side.now
        parser = self.side.parser
        if self.side.is_request:
            message["method"] = parser.get_method().decode("latin-1")
        else:
            message["status"] = parser.get_status_code()
        self.side.completed(message)


class _HttpSide:
    def __init__(self, first: bytes, forward: bool, owner: _HttpConversation) -> None:
        self.now = 0.0
        self.current: dict[str, Any] = {}
        self.dead = False
        self.forward = forward
        self.owner = owner
        self.is_request = not first.startswith(b"HTTP/")
        self.parser: Any
        if self.is_request:
            self.parser = httptools.HttpRequestParser(_Message(self))
        else:
            self.parser = httptools.HttpResponseParser(_Message(self))

    def completed(self, message: dict[str, Any]) -> None:
        self.owner.completed(self.forward, self.is_request, message)

    def feed(self, now: float, data: bytes) -> None:
        if self.dead:
            return
        self.now = now
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.dead = True  # a tunnel or WebSocket follows: no more HTTP/1.1 here
        except httptools.HttpParserError:
            self.dead = True


class _HttpConversation:
    """One TCP conversation's HTTP: requests wait for their responses, in order."""

    def __init__(self, conv: Conversation, table: HttpTransactions) -> None:
        self.conv = conv
        self.table = table
        self.sides: dict[bool, _HttpSide | None] = {}
        self.pending: list[tuple[bool, dict[str, Any]]] = []  # requests not yet answered
        self.reassemblers = {
            True: Reassembler(lambda t, d: self._deliver(True, t, d)),
            False: Reassembler(lambda t, d: self._deliver(False, t, d)),
        }

    def _deliver(self, forward: bool, time: float, data: bytes) -> None:
        if forward not in self.sides:
            looks_http = data.startswith(b"HTTP/1.") or _REQUEST_START.match(data) is not None
            self.sides[forward] = _HttpSide(data, forward, self) if looks_http else None
        side = self.sides[forward]
        if side is not None:
            side.feed(time, data)

    def completed(self, forward: bool, is_request: bool, message: dict[str, Any]) -> None:
        if is_request:
            if len(self.pending) < 1024:
                self.pending.append((forward, message))
        elif self.pending:
            self.table.add(self.conv, *self.pending.pop(0), message)
        else:
            self.table.unmatched_responses += 1

    def flush(self) -> None:
        for forward, request in self.pending:
            self.table.add(self.conv, forward, request, None)
        self.pending.clear()


class HttpTransactions:
    """HTTP/1.1 requests and responses with their timings, per TCP conversation. A row is
    made when a response completes (or, for a request never answered, at the end); up to
    :data:`MAX_TRANSACTIONS` rows are kept, all are counted."""

    def __init__(self) -> None:
        self._conversations: dict[int, _HttpConversation] = {}
        self._dead: set[int] = set()
        self.rows: list[dict[str, Any]] = []
        self.total = 0
        self.unmatched_responses = 0

    def feed(self, time: float, packet: Packet, conv: Conversation, payload: bytes) -> None:
        if conv.index in self._dead:
            return
        state = self._conversations.get(conv.index)
        if state is None:
            state = self._conversations[conv.index] = _HttpConversation(conv, self)
        forward = packet.src == conv.a_addr and packet.sport == conv.a_port
        state.reassemblers[forward].feed(time, packet.seq, packet.flags, payload)
        if len(state.sides) == 2 and all(s is None for s in state.sides.values()):
            self._dead.add(conv.index)
            del self._conversations[conv.index]

    def add(self, conv: Conversation, forward: bool, request: dict[str, Any],
            response: dict[str, Any] | None) -> None:  # fmt: skip
        self.total += 1
        if len(self.rows) >= MAX_TRANSACTIONS:
            return
        client = (conv.a_addr, conv.a_port) if forward else (conv.b_addr, conv.b_port)
        server = (conv.b_addr, conv.b_port) if forward else (conv.a_addr, conv.a_port)
        self.rows.append(
            {
                "stream": conv.index,
                "client": endpoint_text(*client),
                "server": endpoint_text(*server),
                "method": request["method"],
                "uri": request["url"].decode("latin-1"),
                "host": request["headers"].get("host"),
                "request_time": request["start"],
                "request_body_bytes": request["body"],
                "status": None if response is None else response["status"],
                "response_time": None if response is None else response["start"],
                "response_body_bytes": None if response is None else response["body"],
                "content_type": None
                if response is None
                else response["headers"].get("content-type"),
                "time_ms": None
                if response is None
                else round((response["start"] - request["end"]) * 1000, 3),
            }
        )

    def documents(self, origin: float) -> list[dict[str, Any]]:
        """The rows, in request order, times relative to ``origin``."""
        for state in self._conversations.values():
            state.flush()
        rows = sorted(self.rows, key=lambda r: (r["request_time"], r["stream"]))
        for row in rows:
            row["request_time"] = round(row["request_time"] - origin, 6)
            if row["response_time"] is not None:
                row["response_time"] = round(row["response_time"] - origin, 6)
        return rows


class DnsTransactions:
    """DNS queries over UDP and their responses, with response times."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.malformed = 0
        self.unmatched_responses = 0
        self._pending: dict[tuple[bytes, int, bytes, int, int], dict[str, Any]] = {}

    def feed(self, frame: int, time: float, origin: float, packet: Packet, payload: bytes) -> None:
        if packet.dport != 53 and packet.sport != 53:
            return
        try:
            message = dns.message.from_wire(payload, ignore_trailing=True)
        except (dns.exception.DNSException, ValueError, IndexError, UnicodeError):
            self.malformed += 1
            return
        question = message.question[0] if message.question else None
        qname = question.name.to_text() if question is not None else None
        qtype = dns.rdatatype.to_text(question.rdtype) if question is not None else None
        if not message.flags & dns.flags.QR:
            row: dict[str, Any] = {
                "frame": frame,
                "time": round(time - origin, 6),
                "client": endpoint_text(packet.src, packet.sport),
                "server": endpoint_text(packet.dst, packet.dport),
                "id": message.id,
                "name": qname,
                "type": qtype,
                "rcode": None,
                "answers": [],
                "response_frame": None,
                "response_ms": None,
            }
            self._pending[(packet.src, packet.sport, packet.dst, packet.dport, message.id)] = row
            if len(self.rows) < MAX_TRANSACTIONS:
                self.rows.append(row)
            return
        key = (packet.dst, packet.dport, packet.src, packet.sport, message.id)
        query = self._pending.pop(key, None)
        if query is None:
            self.unmatched_responses += 1
            return
        query["rcode"] = dns.rcode.to_text(message.rcode())
        query["answers"] = [
            f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}"
            for rrset in message.answer
            for rdata in rrset
        ][:32]
        query["response_frame"] = frame
        query["response_ms"] = round((time - origin - query["time"]) * 1000, 3)


class FollowedStream:
    """The payload of one TCP conversation, both directions, as chunks in arrival order
    (``tshark -z follow,tcp,raw,N``)."""

    MAX_BYTES = 64 * 1024 * 1024

    def __init__(self, index: int) -> None:
        self.index = index
        self.conv: Conversation | None = None
        self.chunks: list[tuple[bool, float, bytearray]] = []
        self.total = 0
        self.truncated = False
        self._reassemblers = {
            True: Reassembler(lambda t, d: self._deliver(True, t, d)),
            False: Reassembler(lambda t, d: self._deliver(False, t, d)),
        }

    def _deliver(self, forward: bool, time: float, data: bytes) -> None:
        if self.total + len(data) > self.MAX_BYTES:
            self.truncated = True
            return
        self.total += len(data)
        if self.chunks and self.chunks[-1][0] == forward:
            self.chunks[-1][2].extend(data)
        else:
            self.chunks.append((forward, time, bytearray(data)))

    def feed(self, time: float, packet: Packet, conv: Conversation, payload: bytes) -> None:
        if conv.index != self.index:
            return
        self.conv = conv
        forward = packet.src == conv.a_addr and packet.sport == conv.a_port
        self._reassemblers[forward].feed(time, packet.seq, packet.flags, payload)
