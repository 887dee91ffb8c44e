"""The endpoints found through DNS (``endpoints_from``), published once for every worker.

The edge's control process resolves each such cluster's name for the whole machine
(:mod:`backhaul.admin.discovery`) and writes what it found here; every worker reads it on
its tick and rebuilds its cluster's endpoint pool from it (:mod:`backhaul.edge.discovery`).
One anonymous shared memory map, created by the supervisor before it forks, holds one
**section** per discovered cluster:

- a header: a sequence lock (odd while writing), the **generation** (how many sets were
  published; a worker compares it with one read and copies the section only when it moved),
  the number of endpoints, how many endpoints the last answer had beyond the section's room
  (``over_limit``: they are left out, counted and logged), the resolutions and failures so
  far, the wall time of the last resolution and the last failure's text;
- room for ``max_endpoints`` entries (the cluster's ``endpoints_from.max_endpoints``: the
  bound of the section, fixed when the map is made): address, port, weight, the index of
  the endpoint's check record in the shared health map (:class:`~backhaul.state.
  endpoint_health.EndpointHealth`, where the one checker writes its results) and the
  record's **tag**: the generation that gave the record to this endpoint. A record freed by
  a removed endpoint is given to a new one with a new tag (and its results cleared), so a
  worker that still holds the old set never replays the new endpoint's results into the old
  one.

One writer per section (the control process), readers never wait: :meth:`DiscoveredEndpoints.
read_nowait` returns None while the writer is at work and the worker tries again on its next
tick. Plain data only: no asyncio, no sockets (the supervisor imports this module).
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Iterable, Sequence

from backhaul.state.record import Record

TYPE_CHECKING = False  # without importing typing: the supervisor imports this module (RSS)
if TYPE_CHECKING:
    from typing import Final

    from backhaul.state.endpoint_health import EndpointHealth

__all__ = [
    "MAX_ENDPOINTS_LIMIT",
    "DiscoveredEndpoints",
    "DiscoveredSet",
    "SharedEndpoint",
    "carry_over",
    "discovered_clusters",
    "dns_questions",
    "same_dns_question",
    "same_questions",
]

MAX_ENDPOINTS_LIMIT = 1024
"""The highest ``endpoints_from.max_endpoints`` a config may ask for (the check refuses
more)."""

_HOST_BYTES = 48  # an IPv6 address as text is at most 45 characters
_ERROR_BYTES = 120
# header, in int64 words: lock, generation, count, over_limit, resolutions, failures, the
# wall time of the last resolution (a double), then the last error (UTF-8, NUL padded)
_H_LOCK, _H_GEN, _H_COUNT, _H_OVER, _H_RESOLUTIONS, _H_FAILURES, _H_TIME = range(7)
_H_ERROR = 7
_HEADER_WORDS = _H_ERROR + _ERROR_BYTES // 8
# entry, in int64 words: host (text, NUL padded), port, weight, record, tag
_E_HOST = 0
_E_PORT = _HOST_BYTES // 8
_E_WEIGHT, _E_RECORD, _E_TAG = _E_PORT + 1, _E_PORT + 2, _E_PORT + 3
_ENTRY_WORDS = _E_TAG + 1
_WAIT = 0.05  # seconds a blocking reader retries a section its writer left mid-write


class SharedEndpoint(Record):
    """One published endpoint: where it is, and its check record in the health map."""

    __slots__ = ("host", "port", "weight", "record", "tag")

    def __init__(self, host: str, port: int, weight: int, record: int, tag: int) -> None:
        self.host: Final = host
        self.port: Final = port
        self.weight: Final = weight
        self.record: Final = record
        """Index of its check record in the shared health map."""
        self.tag: Final = tag
        """The generation that gave it the record (its results carry the same tag)."""


class DiscoveredSet(Record):
    """A consistent copy of one cluster's section."""

    __slots__ = (
        "generation",
        "endpoints",
        "over_limit",
        "resolutions",
        "failures",
        "last_unix",
        "last_error",
    )

    def __init__(
        self,
        generation: int,
        endpoints: tuple[SharedEndpoint, ...],
        over_limit: int,
        resolutions: int,
        failures: int,
        last_unix: float,
        last_error: str,
    ) -> None:
        self.generation: Final = generation
        """Sets published so far (0: none yet)."""
        self.endpoints: Final = endpoints
        self.over_limit: Final = over_limit
        """Endpoints the last answer had beyond the room (left out)."""
        self.resolutions: Final = resolutions
        self.failures: Final = failures
        self.last_unix: Final = last_unix
        """Wall time of the last resolution, successful or not (0: none)."""
        self.last_error: Final = last_error
        """Why the last resolution failed ('' after a success)."""


def discovered_clusters(settings: object) -> list[tuple[str, int]]:
    """``(cluster, max_endpoints)`` of the clusters of a (thawed or validated) config whose
    endpoints come from DNS, in config order."""
    out: list[tuple[str, int]] = []
    clusters = settings.clusters  # type: ignore[attr-defined]
    for name, cluster in clusters.items():
        spec = getattr(cluster, "endpoints_from", None)
        if spec is not None:
            out.append((name, int(spec.max_endpoints)))
    return out


def dns_questions(settings: object) -> tuple[tuple[str, tuple[object, ...]], ...]:
    """``(cluster, question)`` of the clusters of a (thawed or validated) config whose
    endpoints come from DNS, the question being ``(name, type, port, resolvers)``: plain
    data, which the supervisor keeps instead of the config."""
    out = []
    for name, cluster in settings.clusters.items():  # type: ignore[attr-defined]
        spec = getattr(cluster, "endpoints_from", None)
        if spec is not None:
            out.append((name, (spec.name, spec.type, spec.port, tuple(spec.resolvers))))
    return tuple(out)


def same_questions(
    before: Iterable[tuple[str, tuple[object, ...]]],
    after: Iterable[tuple[str, tuple[object, ...]]],
) -> list[str]:
    """The clusters of ``after`` (:func:`dns_questions`) that ``before`` asks the same way:
    what was found for one config holds for the other."""
    asked = dict(before)
    return [name for name, question in after if asked.get(name) == question]


def same_dns_question(before: object, after: object) -> list[str]:
    """The clusters whose endpoints come from DNS in both configs, asked the same way (name,
    type, port, resolvers): what was found for one config holds for the other."""
    return same_questions(dns_questions(before), dns_questions(after))


class DiscoveredEndpoints:
    """The sections of the discovered clusters (see the module docstring). Create it before
    forking; children inherit the mapping.

    ``clusters``: ``(name, max_endpoints)`` in config order; ``first_record``: the health
    map's index of the first record these clusters own (their records follow one another,
    ``max_endpoints`` per cluster)."""

    def __init__(self, clusters: Sequence[tuple[str, int]], first_record: int = 0) -> None:
        self.clusters = list(clusters)
        self.index: dict[str, int] = {}
        self.rooms: list[int] = []
        self.records: list[range] = []
        self._at: list[int] = []
        words = 0
        record = first_record
        for i, (name, room) in enumerate(self.clusters):
            if not 1 <= room <= MAX_ENDPOINTS_LIMIT:
                raise ValueError(
                    f"cluster {name}: room for {room} endpoints is outside 1..{MAX_ENDPOINTS_LIMIT}"
                )
            self.index[name] = i
            self.rooms.append(room)
            self.records.append(range(record, record + room))
            self._at.append(words)
            record += room
            words += _HEADER_WORDS + room * _ENTRY_WORDS
        self.record_count = record - first_record
        self._map = mmap.mmap(-1, max(8, words * 8))
        view = memoryview(self._map)
        self._q = view.cast("q")
        self._d = view.cast("d")
        self._b = view

    def find(self, cluster: str) -> int | None:
        """The section of ``cluster``, or None when its endpoints do not come from DNS."""
        return self.index.get(cluster)

    # -- the writer's side (the control process) ---------------------------------------------
    def publish(
        self,
        c: int,
        endpoints: Sequence[SharedEndpoint],
        over_limit: int,
        now_unix: float | None = None,
    ) -> int:
        """Make ``endpoints`` section ``c``'s set (a successful resolution that changed it);
        returns the new generation. More endpoints than the room is a :class:`ValueError`:
        the caller chooses which to leave out and counts them in ``over_limit``."""
        if len(endpoints) > self.rooms[c]:
            raise ValueError(
                f"{len(endpoints)} endpoints for a section with room for {self.rooms[c]}"
            )
        at = self._at[c]
        q = self._q
        lock = q[at + _H_LOCK]
        q[at + _H_LOCK] = lock + 1 + (lock & 1)  # odd, past a section a killed writer left odd
        for k, ep in enumerate(endpoints):
            e = at + _HEADER_WORDS + k * _ENTRY_WORDS
            raw = ep.host.encode("ascii")
            if len(raw) > _HOST_BYTES:
                raise ValueError(f"endpoint host {ep.host!r} is longer than {_HOST_BYTES} bytes")
            self._b[(e + _E_HOST) * 8 : (e + _E_HOST) * 8 + _HOST_BYTES] = raw.ljust(
                _HOST_BYTES, b"\0"
            )
            q[e + _E_PORT] = ep.port
            q[e + _E_WEIGHT] = ep.weight
            q[e + _E_RECORD] = ep.record
            q[e + _E_TAG] = ep.tag
        q[at + _H_COUNT] = len(endpoints)
        q[at + _H_OVER] = over_limit
        q[at + _H_RESOLUTIONS] += 1
        self._d[at + _H_TIME] = time.time() if now_unix is None else now_unix
        self._set_error(at, "")
        generation = q[at + _H_GEN] + 1
        q[at + _H_GEN] = generation
        q[at + _H_LOCK] = q[at + _H_LOCK] + 1  # even: whole
        return int(generation)

    def resolved(self, c: int, over_limit: int, now_unix: float | None = None) -> None:
        """A successful resolution that left the set as it was."""
        self._note(c, _H_RESOLUTIONS, "", over_limit, now_unix)

    def failed(self, c: int, error: str, now_unix: float | None = None) -> None:
        """A failed resolution (the set stays)."""
        self._note(c, _H_FAILURES, error, None, now_unix)

    def next_generation(self, c: int) -> int:
        """The generation the next :meth:`publish` of section ``c`` will have (the tag of
        the records it gives out)."""
        return int(self._q[self._at[c] + _H_GEN]) + 1

    def copy_section(self, c: int, source: DiscoveredSet) -> None:
        """Start section ``c`` from ``source`` (a reload: the new workers serve the endpoints
        found so far at once). Entries keep their place, record and tag: the caller copied
        the records alike. Endpoints beyond the room are left out and counted."""
        if source.generation <= 0:
            return
        at = self._at[c]
        q = self._q
        endpoints = source.endpoints[: self.rooms[c]]
        lost = len(source.endpoints) - len(endpoints)
        q[at + _H_GEN] = source.generation - 1
        q[at + _H_RESOLUTIONS] = source.resolutions - 1
        self.publish(c, endpoints, source.over_limit + lost, source.last_unix)
        q[at + _H_FAILURES] = source.failures
        self._set_error(at, source.last_error)

    def _note(
        self, c: int, field: int, error: str, over_limit: int | None, now_unix: float | None
    ) -> None:
        at = self._at[c]
        q = self._q
        lock = q[at + _H_LOCK]
        q[at + _H_LOCK] = lock + 1 + (lock & 1)
        q[at + field] += 1
        if over_limit is not None:
            q[at + _H_OVER] = over_limit
        self._d[at + _H_TIME] = time.time() if now_unix is None else now_unix
        self._set_error(at, error)
        q[at + _H_LOCK] = q[at + _H_LOCK] + 1

    def _set_error(self, at: int, error: str) -> None:
        raw = error.encode("utf-8", "replace")[:_ERROR_BYTES]
        start = (at + _H_ERROR) * 8
        self._b[start : start + _ERROR_BYTES] = raw.ljust(_ERROR_BYTES, b"\0")

    # -- readers -----------------------------------------------------------------------------
    def generation(self, c: int) -> int:
        """Section ``c``'s generation (one read: for the worker's tick)."""
        return int(self._q[self._at[c] + _H_GEN])

    def read_nowait(self, c: int) -> DiscoveredSet | None:
        """A consistent copy of section ``c``, or None while its writer is at work."""
        at = self._at[c]
        q = self._q
        lock = q[at + _H_LOCK]
        if lock & 1:
            return None
        count = min(max(0, int(q[at + _H_COUNT])), self.rooms[c])
        raw = bytes(self._b[at * 8 : (at + _HEADER_WORDS + count * _ENTRY_WORDS) * 8])
        if q[at + _H_LOCK] != lock:
            return None
        return self._parse(raw, count)

    def read(self, c: int) -> DiscoveredSet:
        """A consistent copy of section ``c``, waiting (at most ~50 ms) for its writer; a
        section a killed writer left mid-write is taken as it stands."""
        deadline = time.monotonic() + _WAIT
        while True:
            found = self.read_nowait(c)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                at = self._at[c]
                count = min(max(0, int(self._q[at + _H_COUNT])), self.rooms[c])
                raw = bytes(self._b[at * 8 : (at + _HEADER_WORDS + count * _ENTRY_WORDS) * 8])
                return self._parse(raw, count)
            time.sleep(0)

    @staticmethod
    def _parse(raw: bytes, count: int) -> DiscoveredSet:
        import ipaddress  # here: the supervisor imports this module, readers parse

        q = memoryview(raw).cast("q")
        endpoints = []
        for k in range(count):
            e = _HEADER_WORDS + k * _ENTRY_WORDS
            host = raw[(e + _E_HOST) * 8 : (e + _E_HOST) * 8 + _HOST_BYTES].rstrip(b"\0")
            text = host.decode("ascii", "replace")
            try:
                ipaddress.ip_address(text)
            except ValueError:  # a torn entry (its writer killed mid-write): left out
                continue
            endpoints.append(
                SharedEndpoint(
                    text,
                    int(q[e + _E_PORT]),
                    int(q[e + _E_WEIGHT]),
                    int(q[e + _E_RECORD]),
                    int(q[e + _E_TAG]),
                )
            )
        error = raw[_H_ERROR * 8 : _H_ERROR * 8 + _ERROR_BYTES].rstrip(b"\0")
        return DiscoveredSet(
            generation=int(q[_H_GEN]),
            endpoints=tuple(endpoints),
            over_limit=int(q[_H_OVER]),
            resolutions=int(q[_H_RESOLUTIONS]),
            failures=int(q[_H_FAILURES]),
            last_unix=float(memoryview(raw).cast("d")[_H_TIME]),
            last_error=error.decode("utf-8", "replace"),
        )

    def close(self) -> None:
        """Unmap (in this process only)."""
        for view in (self._q, self._d, self._b):
            view.release()
        self._map.close()


def carry_over(
    new: DiscoveredEndpoints,
    new_health: EndpointHealth,
    old: DiscoveredEndpoints,
    old_health: EndpointHealth,
    clusters: Iterable[str],
) -> None:
    """A reload made new maps: start each of ``clusters`` (the same DNS name, type and port
    in both configs) from the set the old map holds, with its endpoints' check records, so
    the new workers serve and judge them at once."""
    for name in clusters:
        c, o = new.find(name), old.find(name)
        if c is None or o is None:
            continue
        found = old.read(o)
        moved = []
        for k, ep in enumerate(found.endpoints[: new.rooms[c]]):
            record = new.records[c][k]
            new_health.copy_check(record, old_health, ep.record)  # with its tag
            moved.append(ep.replace(record=record))
        new.copy_section(c, found.replace(endpoints=(*moved, *found.endpoints[len(moved) :])))
