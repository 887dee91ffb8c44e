"""Endpoint health and load shared by the processes of one edge, without messages.

One anonymous shared memory map, created by the supervisor before it forks, holds:

- **check records**, one per config endpoint: the results of the active health checks that
  the control process runs once for the whole machine (:mod:`backhaul.admin.checker`). A
  record keeps a sequence number (how many results so far), the last :data:`RING` results as
  bits, the checker's own verdict (``healthy``/``unhealthy``), the runs of passes and
  failures, the wall time and the reason of the last result. Each worker replays the results
  it has not seen yet into its own balancer on its tick (``Balancer.check_result``), so every
  worker's state machine gets the same inputs as if it had run the checks itself, while the
  upstream sees one checker's probes. :data:`RING` covers the highest threshold the config
  allows, so a worker started late replays enough to reach the checker's verdict at once.
- **worker rows**, one per worker slot (the metrics slot): the worker's pid, its start time,
  and each endpoint's requests in flight in that worker, written on the worker's tick; the
  admin API adds them up for its merged view. For the endpoints found through DNS (whose
  states the metrics store has no series for) the row also holds each one's state as that
  worker sees it, with the tag of the record it holds (see below).

The records of endpoints found through DNS (:mod:`backhaul.state.discovered_endpoints`)
follow the config endpoints'. Such a record changes hands when its endpoint leaves and a new
one comes: :meth:`EndpointHealth.reset_check` clears it and gives it a new **tag**, which
each result then carries, so a reader that holds the old endpoint ignores the new one's
results.

Records are written by one process each (the checker; a slot's worker) under a sequence
lock (odd while writing), so a reader gets a whole record. Plain data only: no asyncio, no
sockets (the supervisor imports this module).
"""

from __future__ import annotations

import mmap
import time
from array import array

from backhaul.state.record import Record

TYPE_CHECKING = False  # without importing typing: the supervisor imports this module (RSS)
if TYPE_CHECKING:
    from typing import Final

__all__ = ["RING", "CheckRecord", "EndpointHealth", "WorkerRow", "split_view", "state_view"]

RING = 1024
"""Results kept per endpoint: at least the highest healthy/unhealthy threshold (1000)."""

VERDICTS = ("unknown", "healthy", "unhealthy")
"""The checker's verdict codes: no result yet, passing, failing (by the thresholds)."""

_REASON_BYTES = 120
_RING_WORDS = RING // 64
# check record, in int64 words: lock, seq, verdict, passes, failures, tag, ring words, then
# the wall time of the last result (a double) and the reason (UTF-8, NUL padded)
_C_LOCK, _C_SEQ, _C_VERDICT, _C_PASSES, _C_FAILURES, _C_TAG = range(6)
_C_RING = 6
_C_TIME = _C_RING + _RING_WORDS
_C_REASON = _C_TIME + 1
_CHECK_WORDS = _C_REASON + _REASON_BYTES // 8
# worker row, in int64 words: lock, pid, start time (double), then one in-flight count per
# endpoint, then one state view per endpoint (see state_view)
_W_LOCK, _W_PID, _W_STARTED = range(3)
_W_FLIGHT = 3
_WAIT = 0.05  # seconds a reader retries a record its writer left mid-write (killed)


class CheckRecord(Record):
    """One endpoint's active-check state, as the checker last wrote it."""

    __slots__ = ("seq", "verdict", "passes", "failures", "last_unix", "reason", "ring", "tag")

    def __init__(
        self,
        seq: int,
        verdict: str,
        passes: int,
        failures: int,
        last_unix: float,
        reason: str,
        ring: tuple[int, ...],
        tag: int = 0,
    ) -> None:
        self.seq: Final = seq
        """Results so far (0: not checked yet)."""
        self.verdict: Final = verdict
        self.passes: Final = passes
        self.failures: Final = failures
        self.last_unix: Final = last_unix
        self.reason: Final = reason
        self.ring: Final = ring
        self.tag: Final = tag
        """Who the record belongs to (endpoints found through DNS; 0 for config endpoints)."""

    def passed(self, n: int) -> bool:
        """Whether result number ``n`` (1-based, within the last :data:`RING`) passed."""
        i = (n - 1) % RING
        return bool((self.ring[i // 64] >> (i % 64)) & 1)


class WorkerRow(Record):
    """One worker slot's row."""

    __slots__ = ("pid", "started_unix", "in_flight", "views")

    def __init__(
        self,
        pid: int,
        started_unix: float,
        in_flight: tuple[int, ...],
        views: tuple[int, ...] = (),
    ) -> None:
        self.pid: Final = pid
        self.started_unix: Final = started_unix
        self.in_flight: Final = in_flight
        self.views: Final = views
        """Per endpoint: :func:`state_view` of the endpoint this worker holds there, or 0."""


def state_view(tag: int, state_code: int) -> int:
    """One word for a worker's view of a discovered endpoint: the record's ``tag`` and the
    state's index in :data:`backhaul.state.shared_counters.HEALTH_STATES`; 0 is none.
    :func:`split_view` undoes it."""
    return tag * 8 + state_code + 1


def split_view(view: int) -> tuple[int, int] | None:
    """``(tag, state_code)`` of a :func:`state_view` word, None for 0."""
    return None if view <= 0 else divmod(view - 1, 8)


class EndpointHealth:
    """The shared map for ``endpoints`` config endpoints and ``slots`` workers (see the
    module docstring). Create it before forking; children inherit the mapping."""

    ring = RING

    def __init__(self, endpoints: int, slots: int = 1) -> None:
        if endpoints < 0 or slots < 1:
            raise ValueError(f"need endpoints >= 0 and slots >= 1, not {endpoints}, {slots}")
        self.endpoints = endpoints
        self.slots = slots
        self._row_words = _W_FLIGHT + 2 * endpoints
        words = endpoints * _CHECK_WORDS + slots * self._row_words
        self._map = mmap.mmap(-1, max(8, words * 8))
        view = memoryview(self._map)
        self._q = view.cast("q")
        self._d = view.cast("d")
        self._b = view
        self._rows_at = endpoints * _CHECK_WORDS

    # -- the checker's side ------------------------------------------------------------------
    def publish(
        self,
        i: int,
        passed: bool,
        verdict: str,
        passes: int,
        failures: int,
        reason: str,
        now_unix: float | None = None,
    ) -> int:
        """Record one result of endpoint ``i``; returns its sequence number."""
        q = self._q
        at = i * _CHECK_WORDS
        seq = q[at + _C_SEQ] + 1
        lock = q[at + _C_LOCK]
        q[at + _C_LOCK] = lock + 1  # odd: writing
        bit = (seq - 1) % RING
        word = at + _C_RING + bit // 64
        mask = 1 << (bit % 64)
        value = q[word] & ~mask | (mask if passed else 0)
        q[word] = value - (1 << 64) if value >= 1 << 63 else value
        q[at + _C_VERDICT] = VERDICTS.index(verdict)
        q[at + _C_PASSES] = passes
        q[at + _C_FAILURES] = failures
        self._d[at + _C_TIME] = time.time() if now_unix is None else now_unix
        raw = reason.encode("utf-8", "replace")[:_REASON_BYTES]
        start = (at + _C_REASON) * 8
        self._b[start : start + _REASON_BYTES] = raw.ljust(_REASON_BYTES, b"\0")
        q[at + _C_SEQ] = seq
        q[at + _C_LOCK] = lock + 2  # even: whole
        return seq

    def copy_check(self, i: int, source: EndpointHealth, j: int) -> None:
        """Make endpoint ``i``'s record a copy of ``source``'s endpoint ``j`` (a reload: an
        endpoint that stays keeps its results, so new workers know at once it is down)."""
        record = source.check(j)
        q = self._q
        at = i * _CHECK_WORDS
        lock = q[at + _C_LOCK]
        q[at + _C_LOCK] = lock + 1
        for w, word in enumerate(record.ring):
            q[at + _C_RING + w] = word - (1 << 64) if word >= 1 << 63 else word
        q[at + _C_VERDICT] = VERDICTS.index(record.verdict)
        q[at + _C_PASSES] = record.passes
        q[at + _C_FAILURES] = record.failures
        q[at + _C_TAG] = record.tag
        self._d[at + _C_TIME] = record.last_unix
        raw = record.reason.encode()[:_REASON_BYTES]
        start = (at + _C_REASON) * 8
        self._b[start : start + _REASON_BYTES] = raw.ljust(_REASON_BYTES, b"\0")
        q[at + _C_SEQ] = record.seq
        q[at + _C_LOCK] = lock + 2

    def reset_check(self, i: int, tag: int) -> None:
        """Clear endpoint ``i``'s record and give it to the owner ``tag`` (a discovered
        endpoint taking a record a removed one left)."""
        q = self._q
        at = i * _CHECK_WORDS
        lock = q[at + _C_LOCK]
        q[at + _C_LOCK] = lock + 1 + (lock & 1)
        for w in range(_C_SEQ, _CHECK_WORDS):
            q[at + w] = 0
        q[at + _C_TAG] = tag
        q[at + _C_LOCK] = q[at + _C_LOCK] + 1

    # -- readers -----------------------------------------------------------------------------
    def check_seq(self, i: int) -> int:
        """How many results endpoint ``i`` has had (one read: for the worker's tick)."""
        return int(self._q[i * _CHECK_WORDS + _C_SEQ])

    def _copy(self, at: int, words: int) -> bytes:
        """Words ``at .. at + words`` (the first one a sequence lock), copied whole: retried
        while their writer is at work, taken as they stand after a bounded wait (a writer
        killed mid-write)."""
        q = self._q
        deadline = 0.0
        while True:
            lock = q[at]
            raw = bytes(self._b[at * 8 : (at + words) * 8])
            if not lock & 1 and q[at] == lock:
                return raw
            now = time.monotonic()
            if not deadline:
                deadline = now + _WAIT
            elif now > deadline:
                return raw
            time.sleep(0)

    def check(self, i: int) -> CheckRecord:
        """A consistent copy of endpoint ``i``'s record."""
        raw = self._copy(i * _CHECK_WORDS, _CHECK_WORDS)
        words = memoryview(raw).cast("q")
        code = words[_C_VERDICT]
        reason = raw[_C_REASON * 8 : _C_REASON * 8 + _REASON_BYTES].rstrip(b"\0")
        return CheckRecord(
            seq=words[_C_SEQ],
            verdict=VERDICTS[code] if 0 <= code < len(VERDICTS) else "unknown",
            passes=words[_C_PASSES],
            failures=words[_C_FAILURES],
            last_unix=memoryview(raw).cast("d")[_C_TIME],
            reason=reason.decode("utf-8", "replace"),
            ring=tuple(w & ((1 << 64) - 1) for w in words[_C_RING : _C_RING + _RING_WORDS]),
            tag=words[_C_TAG],
        )

    # -- the workers' side -------------------------------------------------------------------
    def _row(self, slot: int) -> int:
        if not 0 <= slot < self.slots:
            raise ValueError(f"worker slot {slot} is outside 0..{self.slots - 1}")
        return self._rows_at + slot * self._row_words

    def worker_started(self, slot: int, pid: int, now_unix: float | None = None) -> None:
        """A worker took ``slot``: its pid and start time; its in-flight counts start at 0."""
        at = self._row(slot)
        q = self._q
        lock = q[at + _W_LOCK]
        q[at + _W_LOCK] = lock + 1 + (lock & 1)  # odd, past a row a killed owner left odd
        q[at + _W_PID] = pid
        self._d[at + _W_STARTED] = time.time() if now_unix is None else now_unix
        for e in range(2 * self.endpoints):
            q[at + _W_FLIGHT + e] = 0
        q[at + _W_LOCK] = q[at + _W_LOCK] + 1

    def publish_in_flight(
        self, slot: int, counts: list[int], views: list[int] | None = None
    ) -> None:
        """This worker's requests in flight per endpoint (record order), from its tick, and
        its :func:`state_view` of each (``views``: the same length; 0 where none)."""
        at = self._row(slot)
        q = self._q
        lock = q[at + _W_LOCK]
        q[at + _W_LOCK] = lock + 1
        q[at + _W_FLIGHT : at + _W_FLIGHT + len(counts)] = memoryview(array("q", counts))
        if views is not None:
            start = at + _W_FLIGHT + self.endpoints
            q[start : start + len(views)] = memoryview(array("q", views))
        q[at + _W_LOCK] = lock + 2

    def worker(self, slot: int) -> WorkerRow:
        """A consistent copy of one worker slot's row."""
        raw = self._copy(self._row(slot), self._row_words)
        words = memoryview(raw).cast("q")
        return WorkerRow(
            pid=words[_W_PID],
            started_unix=memoryview(raw).cast("d")[_W_STARTED],
            in_flight=tuple(words[_W_FLIGHT : _W_FLIGHT + self.endpoints]),
            views=tuple(words[_W_FLIGHT + self.endpoints :]),
        )

    def close(self) -> None:
        """Unmap (in this process only)."""
        for view in (self._q, self._d, self._b):
            view.release()
        self._map.close()
