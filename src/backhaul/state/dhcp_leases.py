"""The DHCP lease store: an append-only journal with group commit.

Why a journal and not SQLite: both were measured here (ext4 on a virtio disk, 2 vCPU), one
fsync per group of records. SQLite in WAL mode with ``synchronous=FULL`` took 3,000-5,000
leases/s in groups of 16-64 and 460-1,100/s one by one; the journal 7,000-8,300/s in the same
groups and 350-1,500/s one by one. The journal writes one line per lease and one
``fdatasync`` per group, which is all a lease store needs: every record is the whole lease of
one address, so replaying the file (newest record per address wins) is the state.

Format, one record per line, the fields of :class:`LeaseRecord` in order, tab-separated::

    <crc32 of the rest, 8 hex digits> <address> TAB <subnet> TAB <state> TAB ... <granted>\\n

A line whose checksum does not match, or a last line without its newline, is a write cut
short by a crash: it was never acknowledged (the ACK is sent only after ``fdatasync``
returns), so it is dropped and the file truncated there.

The file stays bounded: when it holds more than ``2 × live + 1024`` records, :meth:`compact`
writes the live leases to a new file, syncs it, and renames it over the old one (then syncs
the directory), so a crash at any moment leaves either the old file or the new one.

The store reads no clock and does no networking; the service calls :meth:`append` for each
lease to persist, then :meth:`commit` once per group (possibly in a worker thread), and sends
the replies only after :meth:`commit` returned.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from backhaul.errors import BackhaulError

__all__ = ["JOURNAL_NAME", "LeaseJournal", "LeaseRecord", "LeaseStoreError", "read_leases"]

JOURNAL_NAME = "dhcp-leases.journal"
_MAX_LINE = 4096


class LeaseStoreError(BackhaulError):
    """The lease store cannot be opened or written (the message says which file and why)."""


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A lease as stored: plain values only."""

    address: str
    subnet: str
    state: str
    client: str
    mac: str
    client_id: str
    hostname: str
    expires: float
    granted: float


_TEXT_FIELDS = ("address", "subnet", "state", "client", "mac", "client_id", "hostname")
_CLEAN = str.maketrans("\t\n\r", "   ")


def _line(record: LeaseRecord) -> bytes:
    fields = [getattr(record, name).translate(_CLEAN) for name in _TEXT_FIELDS]
    body = "\t".join([*fields, repr(record.expires), repr(record.granted)]).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _parse(line: bytes) -> LeaseRecord | None:
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        *text, expires, granted = body.decode().split("\t")
        if len(text) != len(_TEXT_FIELDS):
            return None
        return LeaseRecord(
            **dict(zip(_TEXT_FIELDS, text, strict=True)),
            expires=float(expires),
            granted=float(granted),
        )
    except (ValueError, UnicodeDecodeError):
        return None


def _replay(path: Path) -> tuple[dict[str, LeaseRecord], int, int]:
    """(newest record per address, records read, byte offset where the good data ends)."""
    leases: dict[str, LeaseRecord] = {}
    count = good_end = 0
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return leases, 0, 0
    with handle:
        offset = 0
        for line in handle:
            if not line.endswith(b"\n") or len(line) > _MAX_LINE:
                break
            record = _parse(line[:-1])
            if record is None:
                break
            offset += len(line)
            good_end = offset
            leases[record.address] = record
            count += 1
    return leases, count, good_end


def read_leases(state_dir: str | Path) -> list[LeaseRecord]:
    """The leases in a state directory, read-only (for ``backhaul dhcp leases``)."""
    path = Path(state_dir) / JOURNAL_NAME
    if not Path(state_dir).is_dir():
        raise LeaseStoreError(f"state directory {state_dir} does not exist")
    leases, _, _ = _replay(path)
    return sorted(leases.values(), key=lambda r: tuple(int(p) for p in r.address.split(".")))


class LeaseJournal:
    """The lease journal in ``state_dir``. :meth:`open` replays it; :meth:`append` buffers
    records; :meth:`commit` writes and syncs them; :meth:`compact` rewrites the live set."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / JOURNAL_NAME
        self._pending: list[bytes] = []
        self._fd = -1
        self._lock_fd = -1
        self.records = 0  # records in the file (for the compaction rule)
        self.commits = 0
        self._lock = threading.Lock()  # commit and compact may run in a worker thread

    def open(self) -> list[LeaseRecord]:
        """Create the directory and file if needed, drop a torn tail, return the leases."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._lock_file()
            leases, self.records, good_end = _replay(self.path)
            if os.fstat(self._fd).st_size != good_end:
                os.ftruncate(self._fd, good_end)
                os.fsync(self._fd)
        except OSError as exc:
            raise LeaseStoreError(
                f"lease store {self.path}: {exc.strerror}; check that the state directory is"
                " writable (dhcp.state_dir or --state)"
            ) from exc
        return list(leases.values())

    def _lock_file(self) -> None:
        """One server per lease store: a second one would interleave its records."""
        self._lock_fd = os.open(self.dir, os.O_RDONLY)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            os.close(self._fd)
            self._fd = -1
            raise LeaseStoreError(
                f"lease store {self.path} is in use by another running DHCP server; stop it,"
                " or give this one another state directory"
            ) from None

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def append(self, record: LeaseRecord) -> None:
        """Buffer ``record``; it is durable once :meth:`commit` returns."""
        self._pending.append(_line(record))

    def take_pending(self) -> list[bytes]:
        """The buffered lines, handed to :meth:`commit_lines` (the buffer is emptied)."""
        pending, self._pending = self._pending, []
        return pending

    def commit(self) -> int:
        """Write and sync everything buffered; returns how many records it made durable."""
        return self.commit_lines(self.take_pending())

    def commit_lines(self, lines: list[bytes]) -> int:
        """Write ``lines`` and ``fdatasync`` once (thread-safe)."""
        if not lines:
            return 0
        data = b"".join(lines)
        with self._lock:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                os.fdatasync(self._fd)
            except OSError as exc:
                raise LeaseStoreError(f"lease store {self.path}: {exc.strerror}") from exc
            self.records += len(lines)
            self.commits += 1
        return len(lines)

    def wants_compaction(self, live: int) -> bool:
        return self.records > 2 * live + 1024

    def compact(self, live: Iterable[LeaseRecord]) -> None:
        """Replace the file by one holding only ``live`` (atomic rename, synced)."""
        lines = [_line(r) for r in live]
        tmp = self.path.with_suffix(".compact")
        with self._lock:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
                try:
                    os.write(fd, b"".join(lines))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
                dir_fd = os.open(self.dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
                old, self._fd = self._fd, os.open(self.path, os.O_WRONLY | os.O_APPEND)
                with contextlib.suppress(OSError):
                    os.close(old)
            except OSError as exc:
                raise LeaseStoreError(f"lease store {self.path}: {exc.strerror}") from exc
            self.records = len(lines)
