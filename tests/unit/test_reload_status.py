"""The reload status page: defaults, records, bounded errors, sharing across fork, and no
torn reads while a writer in another process keeps writing."""

from __future__ import annotations

import os
import struct
import time

import pytest

from backhaul.state import reload_status
from backhaul.state.reload_status import (
    MAX_ERROR_BYTES,
    ReloadSnapshot,
    ReloadStatus,
    ReloadStatusError,
    truncate_utf8,
    wait_attempt,
)

DIGEST = "ab" * 32


def test_start_state() -> None:
    status = ReloadStatus(digest=DIGEST, started_unix=1000.5)
    assert status.snapshot() == ReloadSnapshot(
        attempts=0,
        generation=1,
        last_attempt_unix=0.0,
        last_ok=True,
        last_error="",
        digest=DIGEST,
        started_unix=1000.5,
    )


def test_record_good_and_bad() -> None:
    status = ReloadStatus(digest=DIGEST, started_unix=1.0)
    status.set_generation(2)
    status.record(True, "", "cd" * 32, now=50.0)
    snap = status.snapshot()
    assert (snap.attempts, snap.generation, snap.last_ok, snap.digest) == (1, 2, True, "cd" * 32)
    assert snap.last_attempt_unix == 50.0
    # a bad config: the digest in effect stays, the error is kept
    status.record(False, "edge.yaml: 1 problem(s)\n  routes[0]: bad", None, now=60.0)
    snap = status.snapshot()
    assert (snap.attempts, snap.generation, snap.last_ok) == (2, 2, False)
    assert snap.digest == "cd" * 32
    assert snap.last_error.endswith("routes[0]: bad")
    # a good one after it clears the error
    status.record(True, "", "ef" * 32, now=70.0)
    snap = status.snapshot()
    assert (snap.attempts, snap.last_ok, snap.last_error, snap.started_unix) == (3, True, "", 1.0)


def test_error_is_bounded_and_cut_on_a_character() -> None:
    status = ReloadStatus()
    long = "é" * 5000  # two bytes each
    status.record(False, long, None, now=1.0)
    text = status.snapshot().last_error
    assert text.endswith("…")
    assert len(text.encode()) <= MAX_ERROR_BYTES
    assert set(text[:-1]) == {"é"}
    assert truncate_utf8("short") == b"short"
    assert len(truncate_utf8("x" * 10_000)) == MAX_ERROR_BYTES


def test_a_digest_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        ReloadStatus(digest="x" * 200)


def test_shared_across_fork() -> None:
    status = ReloadStatus(digest=DIGEST)
    pid = os.fork()
    if pid == 0:  # the "supervisor" writes in the child; the parent reads
        try:
            status.set_generation(7)
            status.record(False, "bad config", None, now=123.0)
        finally:
            os._exit(0)
    snap = wait_attempt(status, 0, timeout=10.0)
    os.waitpid(pid, 0)
    assert snap is not None
    assert (snap.generation, snap.last_ok, snap.last_error) == (7, False, "bad config")


def test_wait_attempt_times_out() -> None:
    status = ReloadStatus()
    assert wait_attempt(status, 0, timeout=0.05) is None


def test_no_torn_reads_against_a_writer_in_another_process() -> None:
    """The writer keeps the fields in step (generation = attempts, error = str(attempts)
    repeated, digest made of it): a reader must never see them disagree."""
    status = ReloadStatus()
    rounds = 3000
    pid = os.fork()
    if pid == 0:
        try:
            for i in range(1, rounds + 1):
                status.set_generation(i)
                status.record(i % 2 == 0, str(i) * (i % 300), f"{i:064x}", now=float(i))
        finally:
            os._exit(0)
    seen = 0
    deadline = time.monotonic() + 30
    try:
        while seen < rounds:
            assert time.monotonic() < deadline, f"the writer stopped at {seen}"

            snap = status.snapshot()
            seen = snap.attempts
            if seen == 0:
                continue
            assert snap.generation in (seen, seen + 1)  # set_generation runs before record
            assert snap.last_error == str(seen) * (seen % 300)
            assert snap.digest == f"{seen:064x}"
            assert snap.last_ok == (seen % 2 == 0)
            assert snap.last_attempt_unix == float(seen)
    finally:
        os.waitpid(pid, 0)


def test_a_writer_stuck_mid_write_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reload_status, "READ_DEADLINE", 0.05)
    status = ReloadStatus()
    struct.pack_into("<Q", status._map, 0, 1)  # odd: a writer that never finished
    with pytest.raises(ReloadStatusError, match="mid-write"):
        status.snapshot()
