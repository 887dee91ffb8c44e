"""The DNS workers' statistics, shared so that one ``/metrics`` covers every worker.

One slot per DNS worker in anonymous shared memory mapped before the workers are forked.
Each worker writes its plain statistics (a JSON object of counters, see
``DnsServer.statistics``) into its slot on every tick; the worker that serves ``/metrics``
reads every slot and adds them up (:func:`merge`). A slot is guarded by a sequence number
(odd while it is being written, a seqlock), so a reader never takes a half-written slot.
Plain data only: no asyncio, no sockets.
"""

from __future__ import annotations

import json
import mmap
import struct
from typing import Any

__all__ = ["DnsStatsSlots", "merge", "share_slots", "shared_slots"]

SLOT_BYTES = 64 * 1024
_HEADER = struct.Struct("<QI")  # sequence number, payload length


def merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Numbers add up, dicts merge key by key, lists add element by element; for a key
    named ``up`` the smaller value wins (an upstream is up only if every worker says so)."""
    for key, value in other.items():
        mine = into.get(key)
        if mine is None:
            into[key] = json.loads(json.dumps(value))
        elif isinstance(value, dict):
            merge(mine, value)
        elif isinstance(value, list):
            into[key] = [a + b for a, b in zip(mine, value, strict=False)]
        elif key == "up":
            into[key] = min(mine, value)
        elif isinstance(value, int | float):
            into[key] = mine + value
    return into


_SHARED: list[DnsStatsSlots] = []


def shared_slots() -> DnsStatsSlots | None:
    """The slots of this machine's DNS workers, when this process was forked after they
    were mapped (so the edge's admin ``/metrics`` can add the DNS figures)."""
    return _SHARED[0] if _SHARED else None


def share_slots(slots: DnsStatsSlots | None) -> None:
    """Make ``slots`` what processes forked from here find (None: none); the edge's
    supervisor switches them when a reload replaces its DNS processes."""
    _SHARED[:] = [] if slots is None else [slots]


class DnsStatsSlots:
    """``slots`` slots of at most :data:`SLOT_BYTES` each. ``share=True``: the slots the
    processes forked from here find with :func:`shared_slots`."""

    def __init__(self, slots: int, share: bool = False) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, slots * SLOT_BYTES)
        if share:
            _SHARED[:] = [self]

    def write(self, slot: int, stats: dict[str, Any]) -> bool:
        """Publish ``stats`` in ``slot``; False when it does not fit (the old stays)."""
        payload = json.dumps(stats, separators=(",", ":")).encode()
        if len(payload) > SLOT_BYTES - _HEADER.size:
            return False
        base = slot * SLOT_BYTES
        seq, _ = _HEADER.unpack_from(self._map, base)
        _HEADER.pack_into(self._map, base, seq + 1, 0)  # odd: being written
        self._map[base + _HEADER.size : base + _HEADER.size + len(payload)] = payload
        _HEADER.pack_into(self._map, base, seq + 2, len(payload))
        return True

    def read(self, slot: int, attempts: int = 100) -> dict[str, Any] | None:
        """The statistics in ``slot`` (None if never written or always being written)."""
        base = slot * SLOT_BYTES
        for _ in range(attempts):
            seq, size = _HEADER.unpack_from(self._map, base)
            if seq % 2:
                continue
            payload = bytes(self._map[base + _HEADER.size : base + _HEADER.size + size])
            if _HEADER.unpack_from(self._map, base)[0] != seq:
                continue
            if not size:
                return None
            result: dict[str, Any] = json.loads(payload)
            return result
        return None

    def totals(self) -> dict[str, Any]:
        """Every written slot added up."""
        out: dict[str, Any] = {}
        for slot in range(self.slots):
            stats = self.read(slot)
            if stats is not None:
                merge(out, stats)
        return out
