"""``backhaul capture``'s driver: map a capture file, or capture live with AF_PACKET.

- Files are mapped with ``mmap`` and read in place by :mod:`backhaul.proto.pcap`; the
  summaries come from :func:`backhaul.proto.capture_report.summarise`.
- Filters use tcpdump's syntax and are compiled by libpcap, never by us: ``tcpdump -ddd``
  prints the classic BPF program, which is attached to the AF_PACKET socket with
  ``SO_ATTACH_FILTER`` (so the kernel drops what the filter rejects). For a file,
  ``tcpdump -r FILE -w OUT FILTER`` writes the matching frames to a temporary file first.
- Live capture needs root or CAP_NET_RAW. The socket starts with a drop-everything filter,
  is bound to the interface, drained, and only then gets the real filter, so no frame from
  before the filter leaks in. On loopback each frame is seen once (the outgoing copy is
  skipped, as libpcap does). Every wait has a deadline: a capture stops at ``count`` frames,
  after ``duration`` seconds, or on Ctrl-C, and writes a pcap with nanosecond timestamps.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backhaul.errors import PermissionNeeded, UsageError
from backhaul.proto.capture_report import ReportRequest, summarise
from backhaul.proto.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    CaptureReader,
    pcap_file_header,
    pcap_record,
)

__all__ = [
    "LiveResult",
    "capture_live",
    "compile_filter",
    "filter_file",
    "mapped",
    "summarise_file",
]

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
SNAPLEN = 262144
TCPDUMP_TIMEOUT = 20.0


def _tcpdump() -> str:
    path = shutil.which("tcpdump") or (
        "/usr/sbin/tcpdump" if os.path.exists("/usr/sbin/tcpdump") else None
    )
    if path is None:
        raise UsageError(
            "a capture filter needs tcpdump (libpcap compiles the filter); "
            "install it: apt-get install tcpdump"
        )
    return path


def compile_filter(expression: str, interface: str) -> list[tuple[int, int, int, int]]:
    """The classic BPF program for a tcpdump-syntax ``expression`` on ``interface``."""
    try:
        done = subprocess.run(
            [_tcpdump(), "-i", interface, "-ddd", expression],
            capture_output=True,
            text=True,
            timeout=TCPDUMP_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise UsageError(f"tcpdump took over {TCPDUMP_TIMEOUT:g}s to compile the filter") from exc
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise UsageError(f"filter {expression!r}: {message.removeprefix('tcpdump: ')}")
    lines = done.stdout.split()
    count = int(lines[0])
    program = []
    rest = done.stdout.strip().splitlines()[1:]
    for line in rest:
        code, jt, jf, k = (int(x) for x in line.split())
        program.append((code, jt, jf, k))
    if len(program) != count:
        raise UsageError(f"tcpdump printed {len(program)} instructions, expected {count}")
    return program


def _attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    blob = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(blob)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


@contextlib.contextmanager
def mapped(path: str) -> Iterator[memoryview | bytes]:
    """The file's bytes, mapped read-only (an empty file gives ``b""``)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such file") from exc
    except (IsADirectoryError, PermissionError) as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            yield b""
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                yield view
            finally:
                view.release()


def filter_file(path: str, expression: str, out: str) -> None:
    """Write the frames of ``path`` that match ``expression`` to ``out`` (libpcap does it)."""
    try:
        done = subprocess.run(
            [_tcpdump(), "-r", path, "-w", out, expression],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except subprocess.TimeoutExpired as exc:
        raise UsageError("tcpdump took over 600s to filter the file") from exc
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise UsageError(f"filter {expression!r} on {path}: {message.removeprefix('tcpdump: ')}")


def summarise_file(
    path: str,
    request: ReportRequest,
    expression: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The summaries of a pcap/pcapng file; ``progress(done_bytes, total_bytes)``."""
    with contextlib.ExitStack() as stack:
        source = path
        if expression:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="backhaul-capture-"))
            source = str(Path(tmp) / "filtered.pcap")
            filter_file(path, expression, source)
        buffer = stack.enter_context(mapped(source))
        reader = CaptureReader(buffer, name=path)
        total = reader.size
        document = summarise(
            reader, request, None if progress is None else lambda done: progress(done, total)
        )
        document["filter"] = expression
        return document


@dataclass
class LiveResult:
    interface: str
    frames: int
    path: str
    stopped_by: str  # "count", "duration" or "interrupt"


def _linktype(interface: str) -> int:
    try:
        kind = int(Path(f"/sys/class/net/{interface}/type").read_text())
    except FileNotFoundError as exc:
        raise UsageError(f"no interface {interface!r} here (see `ip link`)") from exc
    if kind in (1, 772):  # ARPHRD_ETHER, ARPHRD_LOOPBACK: frames carry an Ethernet header
        return LINKTYPE_ETHERNET
    if kind in (65534, 778):  # ARPHRD_NONE (tun), ARPHRD_IPGRE: bare IP
        return LINKTYPE_RAW
    raise UsageError(f"interface {interface!r} has link type {kind}, which capture cannot read")


def capture_live(
    interface: str,
    path: str,
    expression: str | None = None,
    count: int | None = None,
    duration: float | None = None,
    on_frame: Callable[[int], None] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> LiveResult:
    """Capture on ``interface`` into the pcap file ``path`` until ``count`` frames,
    ``duration`` seconds or SIGINT/SIGTERM."""
    linktype = _linktype(interface)
    program = compile_filter(expression, interface) if expression else None
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except PermissionError as exc:
        raise PermissionNeeded(
            "live capture needs root or CAP_NET_RAW (try sudo, or read a file with -r)"
        ) from exc
    stop_reason = ""
    interrupted = False

    def interrupt(_signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    frames = 0
    try:
        with sock, open(path, "wb") as out:
            _attach(sock, [(0x06, 0, 0, 0)])  # ret #0: drop everything until bound
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((interface, ETH_P_ALL))
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.recv(SNAPLEN)
            if program is not None:
                _attach(sock, program)
            else:
                _attach(sock, [(0x06, 0, 0, SNAPLEN)])  # ret #snaplen: keep everything
            with contextlib.suppress(BlockingIOError):  # frames queued before the filter
                while True:
                    sock.recv(SNAPLEN)
            out.write(pcap_file_header(linktype, SNAPLEN))
            out.flush()
            if on_ready is not None:
                on_ready()
            buffer = bytearray(SNAPLEN)
            view = memoryview(buffer)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            deadline = None if duration is None else time.monotonic() + duration
            ancillary = socket.CMSG_SPACE(16)
            while True:
                if count is not None and frames >= count:
                    stop_reason = "count"
                    break
                if interrupted:
                    stop_reason = "interrupt"
                    break
                wait = 0.2
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        stop_reason = "duration"
                        break
                    wait = min(wait, left)
                if not poller.poll(wait * 1000):
                    continue
                try:
                    length, anc, _flags, address = sock.recvmsg_into(
                        [view], ancillary, socket.MSG_TRUNC
                    )
                except BlockingIOError:
                    continue
                except InterruptedError:
                    continue
                if address[2] == PACKET_OUTGOING and address[0] == "lo":
                    continue
                stamp = time.time_ns()
                for level, kind, data in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                        sec, nsec = struct.unpack("qq", data[:16])
                        stamp = sec * 1_000_000_000 + nsec
                captured = min(length, SNAPLEN)
                out.write(pcap_record(stamp, view[:captured], length))
                out.write(view[:captured])
                frames += 1
                if on_frame is not None:
                    on_frame(frames)
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise PermissionNeeded("live capture needs root or CAP_NET_RAW") from exc
        raise UsageError(f"capture on {interface}: {exc.strerror or exc}") from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return LiveResult(interface, frames, path, stop_reason)
