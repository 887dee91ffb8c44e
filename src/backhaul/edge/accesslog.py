"""The access log: one line per exchange, formatted cheaply and written off the event loop.

Lines are appended to an in-memory batch of bytes (the data plane formats JSON lines into it
in C, for exchanges and refusals alike; the combined format is formatted here); ``flush``
(called by the worker's periodic tick, at shutdown, and by the data plane when the batch passes
``max_batch_bytes``) hands the batch to a writer thread, so a slow disk or a full pipe never
blocks the loop. What waits for the thread is bounded: past ``max_pending`` lines a batch is
dropped and counted in ``dropped`` rather than growing without limit; lines lost to write
errors are counted in ``write_errors``. Both counts reach ``/metrics``.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import IO, TYPE_CHECKING

MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
"""English month abbreviations, as the combined log format and HTTP dates write them."""

if TYPE_CHECKING:
    from backhaul.edge.datapath import Exchange

_time = time.time

__all__ = ["AccessLog"]


class _Clock:
    """The combined format's wall-clock stamp, formatted once per second."""

    # Its fields are declared in accesslog.pxd (a C type once compiled).

    def __init__(self) -> None:
        self._second = -1
        self._combined = ""

    def combined(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            t = time.gmtime(second)
            self._combined = (
                f"{t.tm_mday:02d}/{MONTH_NAMES[t.tm_mon - 1]}/{t.tm_year}:"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
            )
        return self._combined


class AccessLog:
    """Formats and batches access-log lines; a thread writes them."""

    # Its fields are declared in accesslog.pxd (a C type once compiled).

    def __init__(
        self,
        path: str = "-",
        fmt: str = "json",
        max_pending: int = 100_000,
        max_batch_bytes: int = 64 << 10,
    ) -> None:
        self.format = fmt
        self.json = fmt == "json"
        self.path = path
        self.max_pending = max_pending
        self.max_batch_bytes = max_batch_bytes
        self.dropped = 0
        self.write_errors = 0
        self.written = 0
        self.batch = bytearray()
        self.lines = 0
        self._clock = _Clock()
        self._queue: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._queued_lines = 0
        self._lock = threading.Lock()
        self._stream: IO[bytes]
        if path == "-":
            sys.stdout.flush()
            self._stream = sys.stdout.buffer
            self._owns_stream = False
        else:
            self._stream = open(path, "ab", buffering=1 << 16)  # noqa: SIM115
            self._owns_stream = True
        self._thread = threading.Thread(target=self._run, name="backhaul-accesslog", daemon=True)
        self._thread.start()
        # JSON lines are formatted by the data plane (one formatter, in C), combined ones here.
        self.exchange = self._combined_exchange

    def refusal(
        self, request_id: bytes, client: str, target: bytes, status: int, nbytes: int
    ) -> None:
        """The line of a request refused before it became an exchange."""
        if self.json:
            # The data plane imports this module (its AccessLog is a C type there), so its
            # JSON formatter is looked up here, on this rare path, not at import.
            from backhaul.edge.datapath import append_refusal_line

            append_refusal_line(self.batch, request_id, client, target, status, nbytes)
            self.lines += 1
            if len(self.batch) > self.max_batch_bytes:
                self.flush()
        else:
            self._combined_line(client, "-", target[:512].decode("latin-1"), status, nbytes)

    def _combined_exchange(self, ex: Exchange, now: float) -> None:
        target = ex.target
        path = target.path + "?" + target.query if target.query else target.path
        agent = referer = ""
        for name, value in ex.headers:
            lname = name.lower()
            if lname == b"user-agent":
                agent = value.decode("latin-1")
            elif lname == b"referer":
                referer = value.decode("latin-1")
        self._combined_line(
            ex.conn.client_ip,
            ex.method.decode("latin-1"),
            path,
            ex.status,
            ex.bytes_out,
            agent,
            referer,
        )

    def _combined_line(
        self,
        client: str,
        method: str,
        target: str,
        status: int,
        bytes_out: int,
        user_agent: str = "",
        referer: str = "",
    ) -> None:
        now = _time()
        ref = referer.replace('"', "%22") or "-"
        ua = user_agent.replace('"', "%22") or "-"
        target = target.replace('"', "%22")
        self._append(
            f'{client} - - [{self._clock.combined(now)}] "{method} {target} HTTP/1.1" '
            f'{status} {bytes_out} "{ref}" "{ua}"\n'
        )

    def _append(self, line: str) -> None:
        self.batch += line.encode("utf-8", "surrogateescape")
        self.lines += 1
        if len(self.batch) > self.max_batch_bytes:
            self.flush()

    def flush(self) -> None:
        """Hand the current batch to the writer thread (never blocks on I/O)."""
        lines = self.lines
        if not lines:
            return
        # The batch itself is handed over (no copy) and a new one begun. Batches stay small
        # (64 KiB) so that the writer thread, which shares the worker's core, never holds
        # it for long: a multi-megabyte write once per tick was milliseconds of p99.
        data = self.batch
        self.batch = bytearray()
        self.lines = 0
        with self._lock:
            if self._queued_lines + lines > self.max_pending:
                self.dropped += lines
                return
            self._queued_lines += lines
        self._queue.put((data, lines))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            data, lines = item
            try:
                self._stream.write(data)
                if self._queue.empty():
                    self._stream.flush()
                self.written += lines
            except (OSError, ValueError):
                self.write_errors += lines
            with self._lock:
                self._queued_lines -= lines

    def close(self, timeout: float = 2.0) -> None:
        """Flush what is batched, stop the writer thread (bounded wait) and close the file."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout)
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass
        if self._owns_stream:
            self._stream.close()
