"""iperf3's control protocol, sans-IO: the facts a peer must agree on, as values and bytes.

Learnt from iperf3's documentation and source (esnet/iperf ``iperf_api.c``,
``iperf_client_api.c``, ``iperf_server_api.c``, ``iperf_udp.c``); the code is ours.

The exchange, on one TCP control connection (default port 5201):

1. the client sends a **cookie**: 36 characters from ``a-z2-7`` and a NUL (37 bytes);
2. the server answers with **state bytes** (one signed byte each): ``PARAM_EXCHANGE``;
3. the client sends the test **parameters** as JSON, framed by a 4-byte big-endian length;
4. ``CREATE_STREAMS``: the client opens the data streams. TCP: a connection to the same
   port that first sends the cookie. UDP: a datagram ``"9876"`` to the same port, answered
   ``"6789"`` (old servers answer 987654321 as a host-order integer). In bidirectional mode
   the client opens its sending streams first, the server counts its receiving ones first;
5. ``TEST_START``, ``TEST_RUNNING``: data flows; UDP datagrams start with the send time
   (seconds, microseconds: two 32-bit big-endian words) and a sequence number from 1 (32
   bits, or 64 when ``udp_counters_64bit`` was agreed);
6. the client sends ``TEST_END`` when the time (or byte/block count) is up;
7. ``EXCHANGE_RESULTS``: the client sends its results JSON, then the server its own;
8. ``DISPLAY_RESULTS``; the client answers ``IPERF_DONE`` and closes.

``ACCESS_DENIED`` (-1) goes to a client that comes while a test runs; ``SERVER_ERROR`` (-2)
is followed by two 32-bit big-endian integers (iperf3's error number, then errno).

Stream IDs, which tie the results of the two sides together, are numbered as iperf3 numbers
them: 1 for the first stream, then 3, 4, 5 ... (:func:`stream_ids`).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from backhaul.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "COOKIE_SIZE",
    "DEFAULT_PORT",
    "DEFAULT_TCP_LENGTH",
    "DEFAULT_UDP_LENGTH",
    "DEFAULT_UDP_RATE",
    "LEGACY_UDP_CONNECT_REPLY",
    "MAX_PARAMS_JSON",
    "MAX_RESULTS_JSON",
    "UDP_CONNECT_MSG",
    "UDP_CONNECT_REPLY",
    "IperfParameters",
    "IperfResults",
    "State",
    "StreamResult",
    "decode_json",
    "encode_json",
    "error_text",
    "json_length",
    "make_cookie",
    "pack_udp_header",
    "stream_ids",
    "udp_header_size",
    "unpack_udp_header",
]

DEFAULT_PORT = 5201
COOKIE_SIZE = 37
_COOKIE_ALPHABET = b"abcdefghijklmnopqrstuvwxyz234567"
DEFAULT_TCP_LENGTH = 128 * 1024
DEFAULT_UDP_LENGTH = 1460
DEFAULT_UDP_RATE = 1_000_000  # bits/s, iperf3's default for UDP
MAX_PARAMS_JSON = 8 * 1024  # iperf3's MAX_PARAMS_JSON_STRING
MAX_RESULTS_JSON = 16 * 1024 * 1024  # ours: results carry the server's output at most
MAX_STREAMS = 128
MAX_TIME = 86400
MAX_BLOCKSIZE = 1024 * 1024
MIN_UDP_LENGTH = 16
MAX_UDP_LENGTH = 65507

# Written by iperf3 as a host-order int; the bytes are the same from either byte order.
UDP_CONNECT_MSG = b"9876"
UDP_CONNECT_REPLY = b"6789"
LEGACY_UDP_CONNECT_REPLY = struct.pack("<I", 987654321)


class State(IntEnum):
    """The control connection's state bytes."""

    TEST_START = 1
    TEST_RUNNING = 2
    TEST_END = 4
    PARAM_EXCHANGE = 9
    CREATE_STREAMS = 10
    SERVER_TERMINATE = 11
    CLIENT_TERMINATE = 12
    EXCHANGE_RESULTS = 13
    DISPLAY_RESULTS = 14
    IPERF_START = 15
    IPERF_DONE = 16
    ACCESS_DENIED = -1
    SERVER_ERROR = -2

    def byte(self) -> bytes:
        return struct.pack("b", self.value)

    @classmethod
    def from_byte(cls, raw: bytes) -> State:
        (value,) = struct.unpack("b", raw)
        try:
            return cls(value)
        except ValueError:
            raise RemoteProtocolError(f"iperf3 peer sent unknown state {value}") from None


# iperf3's i_errno values a server reports most often (iperf_error.c), for SERVER_ERROR
_ERRORS = {
    1: "the server is busy running a test",
    100: "unable to read the test parameters",
    103: "unable to receive the cookie",
    111: "unable to receive the results",
    115: "the test parameters are not supported",
    134: "bad stream ID in the results",
}


def error_text(i_errno: int, errno_value: int) -> str:
    """A SERVER_ERROR's two numbers as words."""
    text = _ERRORS.get(i_errno, f"iperf3 error {i_errno}")
    return text if errno_value <= 0 else f"{text} (errno {errno_value})"


def make_cookie(random_bytes: bytes) -> bytes:
    """A cookie from 36 random bytes (the caller draws them): 36 characters and a NUL."""
    if len(random_bytes) < COOKIE_SIZE - 1:
        raise LocalProtocolError("a cookie needs 36 random bytes")
    chars = bytes(_COOKIE_ALPHABET[b % 32] for b in random_bytes[: COOKIE_SIZE - 1])
    return chars + b"\0"


def encode_json(document: dict[str, Any]) -> bytes:
    """A JSON message as iperf3 frames it: 4-byte big-endian length, then the text."""
    text = json.dumps(document, separators=(",", ":")).encode()
    return struct.pack("!I", len(text)) + text


def json_length(header: bytes, limit: int) -> int:
    """The length announced by a 4-byte JSON header, refused above ``limit``."""
    if len(header) != 4:
        raise RemoteProtocolError("iperf3 JSON length header cut short")
    length: int = struct.unpack("!I", header)[0]
    if length > limit:
        raise RemoteProtocolError(f"iperf3 peer announced {length} bytes of JSON (limit {limit})")
    return length


def decode_json(text: bytes) -> dict[str, Any]:
    """The JSON object of a message body (iperf3 may end it with a NUL)."""
    try:
        document = json.loads(text.rstrip(b"\0").decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise RemoteProtocolError(f"iperf3 peer sent invalid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise RemoteProtocolError("iperf3 peer sent JSON that is not an object")
    return document


def stream_ids(count: int) -> list[int]:
    """iperf3's stream IDs for ``count`` streams in creation order: 1, 3, 4, 5 ..."""
    return [1, *range(3, count + 2)] if count else []


def udp_header_size(wide_counters: bool) -> int:
    return 16 if wide_counters else 12


def pack_udp_header(seconds: int, microseconds: int, sequence: int, wide: bool) -> bytes:
    if wide:
        return struct.pack("!IIQ", seconds & 0xFFFFFFFF, microseconds, sequence)
    return struct.pack("!III", seconds & 0xFFFFFFFF, microseconds, sequence & 0xFFFFFFFF)


def unpack_udp_header(data: bytes | memoryview, wide: bool) -> tuple[float, int]:
    """(send time in seconds, sequence number) of a datagram."""
    if wide:
        sec, usec, sequence = struct.unpack_from("!IIQ", data)
    else:
        sec, usec, sequence = struct.unpack_from("!III", data)
    return sec + usec / 1e6, sequence


def _number(document: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RemoteProtocolError(f"iperf3 parameter {key!r} is not a number")
    number = int(value)
    if not low <= number <= high:
        raise RemoteProtocolError(f"iperf3 parameter {key}={number} is out of range")
    return number


@dataclass
class IperfParameters:
    """What the client asks for (the PARAM_EXCHANGE JSON)."""

    protocol: str = "tcp"  # "tcp" or "udp"
    duration: int = 10
    bytes: int = 0  # -n: stop after this many bytes (0: by time)
    blocks: int = 0  # -k: stop after this many blocks
    parallel: int = 1
    reverse: bool = False
    bidirectional: bool = False
    length: int = 0  # 0: the default for the protocol
    window: int = 0
    rate: int | None = None  # bits/s per stream; 0 unlimited; None: 1 Mbit/s for UDP (as
    # iperf3's client), unlimited for TCP. A server takes what the client sent (none: 0).
    pacing_timer: int = 1000
    omit: int = 0
    nodelay: bool = False
    mss: int = 0
    udp_counters_64bit: bool = False
    get_server_output: bool = False
    congestion: str | None = None
    title: str | None = None
    client_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def block_size(self) -> int:
        if self.length:
            return self.length
        return DEFAULT_UDP_LENGTH if self.protocol == "udp" else DEFAULT_TCP_LENGTH

    @property
    def target_rate(self) -> int:
        if self.rate is not None:
            return self.rate
        return DEFAULT_UDP_RATE if self.protocol == "udp" else 0

    def validate(self) -> None:
        """Raise LocalProtocolError for values iperf3 itself would refuse."""
        problems = []
        if self.protocol not in ("tcp", "udp"):
            problems.append(f"protocol {self.protocol!r}")
        if not 1 <= self.parallel <= MAX_STREAMS:
            problems.append(f"parallel streams must be 1..{MAX_STREAMS}")
        if not 0 <= self.duration <= MAX_TIME:
            problems.append(f"duration must be 0..{MAX_TIME} s")
        if (
            self.protocol == "udp"
            and self.length
            and not (MIN_UDP_LENGTH <= self.length <= MAX_UDP_LENGTH)
        ):
            problems.append(f"UDP length must be {MIN_UDP_LENGTH}..{MAX_UDP_LENGTH}")
        if self.protocol == "tcp" and not 0 <= self.length <= MAX_BLOCKSIZE:
            problems.append(f"TCP length must be 1..{MAX_BLOCKSIZE}")
        if not 0 <= self.omit <= 600:
            problems.append("omit must be 0..600 s")
        if self.reverse and self.bidirectional:
            problems.append("reverse and bidirectional exclude each other")
        if problems:
            raise LocalProtocolError("; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {self.protocol: True, "omit": self.omit, "time": self.duration}
        document |= {"num": self.bytes, "blockcount": self.blocks}
        if self.mss:
            document["MSS"] = self.mss
        if self.nodelay:
            document["nodelay"] = True
        document["parallel"] = self.parallel
        if self.reverse:
            document["reverse"] = True
        if self.bidirectional:
            document["bidirectional"] = True
        if self.window:
            document["window"] = self.window
        document["len"] = self.block_size
        if self.target_rate:
            document["bandwidth"] = self.target_rate
        document["pacing_timer"] = self.pacing_timer
        if self.congestion:
            document["congestion"] = self.congestion
        if self.title:
            document["title"] = self.title
        if self.get_server_output:
            document["get_server_output"] = 1
        if self.udp_counters_64bit:
            document["udp_counters_64bit"] = 1
        document["client_version"] = self.client_version or "backhaul"
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> IperfParameters:
        """Parameters from a client's JSON; raises RemoteProtocolError for bad values."""
        if document.get("sctp") is True:
            raise RemoteProtocolError("SCTP tests are not supported")
        protocol = "udp" if document.get("udp") is True else "tcp"
        params = cls(protocol=protocol, rate=0)  # no "bandwidth": unlimited
        for key, attr, low, high in (
            ("time", "duration", 0, MAX_TIME),
            ("num", "bytes", 0, 2**62),
            ("blockcount", "blocks", 0, 2**62),
            ("parallel", "parallel", 1, MAX_STREAMS),
            ("len", "length", 0, MAX_BLOCKSIZE),
            ("window", "window", 0, 1 << 30),
            ("bandwidth", "rate", 0, 2**62),
            ("pacing_timer", "pacing_timer", 0, 10**9),
            ("omit", "omit", 0, 600),
            ("MSS", "mss", 0, 32767),
        ):
            value = _number(document, key, low, high)
            if value is not None:
                setattr(params, attr, value)
        params.reverse = document.get("reverse") is True
        params.bidirectional = document.get("bidirectional") is True
        params.nodelay = document.get("nodelay") is True
        params.udp_counters_64bit = "udp_counters_64bit" in document
        params.get_server_output = "get_server_output" in document
        for key in ("congestion", "title", "client_version"):
            value = document.get(key)
            if isinstance(value, str):
                setattr(params, key, value[:256])
        try:
            params.validate()
        except LocalProtocolError as exc:
            raise RemoteProtocolError(f"iperf3 parameters refused: {exc}") from None
        return params


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass
class StreamResult:
    """One stream's line in the results exchange."""

    id: int
    bytes: int
    retransmits: int = -1
    jitter: float = 0.0  # seconds
    errors: int = 0  # datagrams lost
    packets: int = 0
    start_time: float = 0.0
    end_time: float = 0.0
    omitted_errors: int | None = 0  # None: the peer did not say (iperf3 before 3.13)
    omitted_packets: int | None = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bytes": self.bytes,
            "retransmits": self.retransmits,
            "jitter": self.jitter,
            "errors": self.errors,
            "omitted_errors": self.omitted_errors or 0,
            "packets": self.packets,
            "omitted_packets": self.omitted_packets or 0,
            "start_time": self.start_time,
            "end_time": self.end_time,
        }


@dataclass
class IperfResults:
    """The results JSON each side sends in EXCHANGE_RESULTS."""

    cpu_total: float
    cpu_user: float
    cpu_system: float
    sender_has_retransmits: int
    streams: list[StreamResult]
    congestion_used: str | None = None
    server_output_text: str | None = None
    server_output_json: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "cpu_util_total": self.cpu_total,
            "cpu_util_user": self.cpu_user,
            "cpu_util_system": self.cpu_system,
            "sender_has_retransmits": self.sender_has_retransmits,
        }
        if self.congestion_used:
            document["congestion_used"] = self.congestion_used
        if self.server_output_text is not None:
            document["server_output_text"] = self.server_output_text
        if self.server_output_json is not None:
            document["server_output_json"] = self.server_output_json
        document["streams"] = [s.to_json() for s in self.streams]
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> IperfResults:
        try:
            streams = [
                StreamResult(
                    id=int(s["id"]),
                    bytes=int(s["bytes"]),
                    retransmits=int(s["retransmits"]),
                    jitter=float(s["jitter"]),
                    errors=int(s["errors"]),
                    packets=int(s["packets"]),
                    start_time=float(s.get("start_time", 0.0)),
                    end_time=float(s.get("end_time", 0.0)),
                    omitted_errors=_optional_int(s.get("omitted_errors")),
                    omitted_packets=_optional_int(s.get("omitted_packets")),
                )
                for s in document["streams"]
            ]
            output = document.get("server_output_json")
            return cls(
                cpu_total=float(document["cpu_util_total"]),
                cpu_user=float(document["cpu_util_user"]),
                cpu_system=float(document["cpu_util_system"]),
                sender_has_retransmits=int(document["sender_has_retransmits"]),
                streams=streams,
                congestion_used=document.get("congestion_used"),
                server_output_text=document.get("server_output_text"),
                server_output_json=output if isinstance(output, dict) else None,
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise RemoteProtocolError(f"iperf3 peer sent incomplete results: {exc!r}") from exc
