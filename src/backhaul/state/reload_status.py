"""What became of the edge's config reloads, readable by every process the supervisor forks.

A fixed-size page of anonymous shared memory (``MAP_SHARED | MAP_ANONYMOUS``) that the
supervisor maps before it forks anything, like :mod:`backhaul.state.endpoint_control`. The
supervisor is the only writer (:meth:`ReloadStatus.record`, :meth:`ReloadStatus.set_generation`);
workers, the DNS processes and the control (admin) process read :meth:`ReloadStatus.snapshot`.

Fields (see :class:`ReloadSnapshot`): ``attempts`` (reload attempts finished, good or bad),
``generation`` (1 at start, +1 per config applied), ``last_attempt_unix``, ``last_ok``,
``last_error`` (UTF-8, at most :data:`MAX_ERROR_BYTES`, cut with "…"), ``digest`` (hex
SHA-256 of the config file bytes in effect) and ``started_unix`` (when the supervisor started).

**Asking for a reload from another process** (the admin API's ``POST /config/reload``, or any
child of the supervisor)::

    before = status.snapshot().attempts
    os.kill(supervisor_pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while (now := status.snapshot()).attempts == before:   # poll, bounded
        if time.monotonic() > deadline: ...give up: "no answer from the supervisor"...
        time.sleep(0.02)
    now.last_ok, now.last_error, now.generation

The supervisor increments ``attempts`` at the *end* of each attempt, after it wrote
``generation``, ``last_ok``, ``last_error`` and ``digest``: a reader that sees ``attempts``
grow sees the whole outcome of that attempt. Several SIGHUPs that arrive during one attempt
may be served by one more attempt (signals coalesce): wait for ``attempts > before``, not
``== before + 1``. :func:`wait_attempt` does this loop. (``backhaul reload`` runs outside the
supervisor's process tree, so it reads the same fields from a status file that the
supervisor writes next to its pid file.)

**No torn reads.** Writes are guarded by a sequence counter (a seqlock): the writer makes it
odd, writes the fields, makes it even again; a reader copies the fields between two reads of
the counter and retries unless both are the same even number. One writer only (the
supervisor), so writers need no lock. A reader gives up with :class:`ReloadStatusError`
after :data:`READ_DEADLINE` seconds of retries (a writer that died mid-write).

Plain data only: no asyncio, no sockets, no pydantic.
"""

from __future__ import annotations

import mmap
import os
import struct
import time

from backhaul.errors import BackhaulError
from backhaul.state.record import Record

TYPE_CHECKING = False  # without importing typing: the supervisor imports this module (RSS)
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "MAX_ERROR_BYTES",
    "READ_DEADLINE",
    "ReloadSnapshot",
    "ReloadStatus",
    "ReloadStatusError",
    "truncate_utf8",
    "wait_attempt",
]

#: ``last_error`` is cut to this many UTF-8 bytes (the cut ends with "…").
MAX_ERROR_BYTES = 4096
#: A reader retries a torn read for at most this long (seconds).
READ_DEADLINE = 1.0

# seq, attempts, generation, last_attempt_unix, started_unix, last_ok, error length,
# digest length, then the digest (64 hex chars of SHA-256, room for 128) and the error.
_HEAD = struct.Struct("<QqqddBxxxII")
_DIGEST_AT = _HEAD.size
_DIGEST_MAX = 128
_ERROR_AT = _DIGEST_AT + _DIGEST_MAX
_SIZE = _ERROR_AT + MAX_ERROR_BYTES
_SEQ = struct.Struct("<Q")
_ELLIPSIS = "…".encode()


class ReloadStatusError(BackhaulError):
    """The reload status could not be read (its writer stopped in the middle of a write)."""


class ReloadSnapshot(Record):
    """One consistent reading of :class:`ReloadStatus`."""

    __slots__ = (
        "attempts",
        "generation",
        "last_attempt_unix",
        "last_ok",
        "last_error",
        "digest",
        "started_unix",
    )

    def __init__(
        self,
        attempts: int,
        generation: int,
        last_attempt_unix: float,
        last_ok: bool,
        last_error: str,
        digest: str,
        started_unix: float,
    ) -> None:
        self.attempts: Final = attempts
        self.generation: Final = generation
        self.last_attempt_unix: Final = last_attempt_unix
        self.last_ok: Final = last_ok
        self.last_error: Final = last_error
        self.digest: Final = digest
        self.started_unix: Final = started_unix


def truncate_utf8(text: str, limit: int = MAX_ERROR_BYTES) -> bytes:
    """``text`` as UTF-8 of at most ``limit`` bytes; a cut text ends with "…" (never half a
    character)."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw
    cut = raw[: limit - len(_ELLIPSIS)].decode("utf-8", "ignore").encode()
    return cut + _ELLIPSIS


class ReloadStatus:
    """The reload outcome, in shared memory; see the module docstring."""

    def __init__(
        self, digest: str = "", started_unix: float | None = None, generation: int = 1
    ) -> None:
        """Map the page (before fork): generation ``generation``, no attempt yet, ``last_ok``
        true, ``digest`` the config in effect at start."""
        self._map = mmap.mmap(-1, _SIZE)  # MAP_SHARED | MAP_ANONYMOUS: shared across fork
        started = time.time() if started_unix is None else started_unix
        self._write(0, generation, 0.0, started, True, b"", self._digest_bytes(digest))

    @staticmethod
    def _digest_bytes(digest: str) -> bytes:
        raw = digest.encode("ascii", "replace")
        if len(raw) > _DIGEST_MAX:
            raise ValueError(f"a digest of {len(raw)} characters: expected at most {_DIGEST_MAX}")
        return raw

    def _seq(self) -> int:
        return int(_SEQ.unpack_from(self._map, 0)[0])

    def _write(
        self,
        attempts: int,
        generation: int,
        last_attempt: float,
        started: float,
        ok: bool,
        error: bytes,
        digest: bytes,
    ) -> None:
        seq = self._seq()
        _SEQ.pack_into(self._map, 0, seq + 1)  # odd: a write is under way
        self._map[_DIGEST_AT : _DIGEST_AT + len(digest)] = digest
        self._map[_ERROR_AT : _ERROR_AT + len(error)] = error
        _HEAD.pack_into(
            self._map,
            0,
            seq + 1,
            attempts,
            generation,
            last_attempt,
            started,
            1 if ok else 0,
            len(error),
            len(digest),
        )
        _SEQ.pack_into(self._map, 0, seq + 2)  # even: done

    def _read(self) -> tuple[int, int, float, float, bool, bytes, bytes]:
        deadline = 0.0
        while True:
            before = self._seq()
            if not before & 1:
                _, attempts, gen, last, started, ok, n_err, n_dig = _HEAD.unpack_from(self._map, 0)
                n_err = min(n_err, MAX_ERROR_BYTES)
                n_dig = min(n_dig, _DIGEST_MAX)
                digest = bytes(self._map[_DIGEST_AT : _DIGEST_AT + n_dig])
                error = bytes(self._map[_ERROR_AT : _ERROR_AT + n_err])
                if self._seq() == before:
                    return attempts, gen, last, started, bool(ok), error, digest
            now = time.monotonic()
            if not deadline:
                deadline = now + READ_DEADLINE
            elif now > deadline:
                raise ReloadStatusError(
                    "the reload status stayed mid-write for "
                    f"{READ_DEADLINE:g}s: its writer (the supervisor) stopped; restart the edge"
                )
            os.sched_yield()

    def snapshot(self) -> ReloadSnapshot:
        """The fields as of now, never half-written."""
        attempts, gen, last, started, ok, error, digest = self._read()
        return ReloadSnapshot(
            attempts=attempts,
            generation=gen,
            last_attempt_unix=last,
            last_ok=ok,
            last_error=error.decode("utf-8", "replace"),
            digest=digest.decode("ascii", "replace"),
            started_unix=started,
        )

    def record(self, ok: bool, error: str, digest: str | None, now: float) -> None:
        """The end of a reload attempt at wall-clock ``now`` (supervisor only): ``attempts``
        +1, ``last_ok``, ``last_error`` (cut to :data:`MAX_ERROR_BYTES`), and ``digest`` when
        not None (a failed attempt keeps the digest in effect)."""
        attempts, gen, _, started, _, _, old_digest = self._read()
        new_digest = old_digest if digest is None else self._digest_bytes(digest)
        self._write(attempts + 1, gen, now, started, ok, truncate_utf8(error), new_digest)

    def set_generation(self, n: int) -> None:
        """The generation of the config now in effect (supervisor only; call it before
        :meth:`record` of the attempt that applied it)."""
        attempts, _, last, started, ok, error, digest = self._read()
        self._write(attempts, n, last, started, ok, error, digest)

    def close(self) -> None:
        self._map.close()


def wait_attempt(
    status: ReloadStatus, before: int, timeout: float, poll: float = 0.02
) -> ReloadSnapshot | None:
    """Poll until ``attempts`` exceeds ``before``: the snapshot then, or None after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        snap = status.snapshot()
        if snap.attempts > before:
            return snap
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)
