"""Counters shared by the edge's worker processes, without I/O on the request path.

The supervisor builds a :class:`Layout` from the config (listener, route, cluster and
endpoint names, fixed histogram buckets) and creates one :class:`SharedCounters` store before
it forks: an anonymous ``MAP_SHARED`` memory map that every forked worker inherits. The store
has one *slot* per worker. A worker counts in plain Python lists (:class:`WorkerMetrics`:
one call per finished exchange, a few list increments) and copies them into its slot on each
tick (:meth:`WorkerMetrics.flush`). Any process can read every slot and add them up
(:meth:`SharedCounters.totals`), which is what ``/metrics`` serves.

Why copy on a tick rather than count in the shared memory directly: an increment of a list
item costs ~17 ns, of a ``memoryview`` or ``array`` item ~45 ns (the value is boxed and
unboxed each time); with eight of them per exchange that is ~0.25 µs per request, about 1%
of throughput (PERFORMANCE.md). The price is that a scrape sees other workers' counts up to
one tick late, and a worker killed by a signal loses at most one tick of counts.

Slots
    A worker owns slot ``i`` (its index among the workers). A restarted worker takes the
    dead one's slot and starts its counters *from the slot's values*, so every counter stays
    monotonic across restarts; its gauges start from zero. Each slot has a header: a
    sequence number (odd while a flush is copying, a seqlock, so readers get a consistent
    snapshot of one slot), the owner's pid, how many workers have owned it, and the
    monotonic time of its last flush (the heartbeat).

Live slots
    Counters are summed over every slot ever used (a dead worker's counts are still part of
    the totals). Gauges (active connections, endpoint health, cluster panic) are taken only
    from *live* slots: flushed within :data:`STALE_AFTER` seconds and not closed.

This module imports no asyncio and no sockets: the supervisor imports it.
"""

from __future__ import annotations

import mmap
import os
import time
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence

from backhaul.errors import BackhaulError
from backhaul.state.record import Record

TYPE_CHECKING = False  # without importing typing: the supervisor imports this module (RSS)
if TYPE_CHECKING:
    from typing import Any, Final

    from backhaul.state.recorder import Recorder

__all__ = [
    "BREAKERS",
    "DEFAULT_BUCKETS",
    "HEALTH_STATES",
    "STALE_AFTER",
    "STATUS_CLASSES",
    "TLS_HANDSHAKE_FAILURES",
    "Layout",
    "MetricsLayoutError",
    "SharedCounters",
    "Totals",
    "WorkerMetrics",
    "build_layout",
    "endpoint_label",
]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds (seconds, ``le``) of the latency histograms; ``+Inf`` is implied. Finer than
Prometheus' defaults at the low end: a proxy's answers take well under 5 ms."""

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
"""Values of the ``status_class`` label. A status outside 100-599 counts as ``5xx``."""

_STATUS_CLASS = tuple(s // 100 - 1 if 100 <= s < 600 else 4 for s in range(1000))
"""Index in STATUS_CLASSES of each three-digit status (RFC 9110 §15): one subscript on the
hot path instead of arithmetic and range checks."""

HEALTH_STATES = ("healthy", "warming", "unhealthy", "ejected", "draining")
"""The values of :class:`backhaul.balance.HealthState`, in its order (a test keeps them
equal; this module does not import the balance package, to keep the supervisor small)."""

BREAKERS = ("max_connections", "max_pending", "max_requests")
"""Circuit-breaker kinds, as :class:`backhaul.balance.circuit.Limit` names them."""

TLS_HANDSHAKE_FAILURES = (
    "protocol_version",
    "no_shared_cipher",
    "unknown_sni",
    "no_client_certificate",
    "bad_client_certificate",
    "certificate_rejected",
    "plain_http",
    "timeout",
    "client_closed",
    "other",
)
"""Reasons a downstream TLS handshake fails (see :mod:`backhaul.edge.tls`); a TLS listener
has one counter per reason, then one of completed handshakes."""

STALE_AFTER = 2.5
"""A slot whose last flush is older than this (seconds) is not live: its gauges are left out.
Five ticks of 0.5 s."""

_MAX_SLOT_BYTES = 4 << 20  # ~20,000 listener/route pairs; a scrape then takes ~0.1 s
_MAGIC = 0x6268_6D65_7472_6963  # "bhmetric"
_VERSION = 1
_HEADER_BYTES = 64  # magic, version, digest, slots, slot bytes (int64 each), padding
_SLOT_HEADER = 4  # ints: seq, pid, starts, closed
_SLOT_FLOATS = 1  # floats: heartbeat (time.monotonic of the last flush)
_SEQ, _PID, _STARTS, _CLOSED = range(_SLOT_HEADER)
_SNAPSHOT_WAIT = 0.5  # seconds a reader waits for a flush in progress (a flush takes < 1 ms,
# but its writer can be descheduled mid-copy on a busy machine; only a killed one waits this)


class MetricsLayoutError(BackhaulError):
    """The metrics layout cannot hold this config, or a store does not match a layout."""


def endpoint_label(host: str, port: int) -> str:
    """``host:port``, or ``[v6]:port`` for an IPv6 literal (the edge labels endpoints so)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _names_unique(labels: list[str]) -> tuple[str, ...]:
    """Labels made unique by suffixing repeats (``a``, ``a#2``): one series per endpoint."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        n = seen.get(label, 0) + 1
        seen[label] = n
        out.append(label if n == 1 else f"{label}#{n}")
    return tuple(out)


class Layout(Record):
    """Where each counter of a config lives; plain, picklable data built once per config.

    A *series key* numbers one (listener, route) pair that can occur: a route limited to
    some listeners has keys on those only, and each listener has one more key for "no route
    matched" (also used for requests refused before routing). The edge computes the keys at
    start (:meth:`series`) and passes one on the hot path. A request's cluster is its
    route's.
    """

    __slots__ = (
        "listeners",
        "routes",
        "route_clusters",
        "route_listeners",
        "clusters",
        "endpoints",
        "buckets",
        "tls_listeners",
        # derived, computed in __init__ (not compared)
        "int_fields",
        "float_fields",
        "counters_end",
        "n_ints",
        "n_floats",
        "endpoint_base",
        "key_pairs",
        "key_cluster",
        "key_index",
        "digest",
    )
    _compared = __slots__[:8]

    def __init__(
        self,
        listeners: tuple[str, ...],
        routes: tuple[str, ...],
        route_clusters: tuple[str | None, ...],
        route_listeners: tuple[tuple[str, ...] | None, ...],
        clusters: tuple[str, ...],
        endpoints: tuple[tuple[str, ...], ...],
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
        tls_listeners: tuple[str, ...] = (),
    ) -> None:
        self.listeners: Final = listeners
        self.routes: Final = routes
        self.route_clusters: Final = route_clusters
        """Per route: the cluster it proxies to, or None (redirect, direct response)."""
        self.route_listeners: Final = route_listeners
        """Per route: the listeners it is limited to, or None for all."""
        self.clusters: Final = clusters
        self.endpoints: Final = endpoints
        """Per cluster (in ``clusters`` order): its endpoint labels, in config order."""
        self.buckets: Final = buckets
        self.tls_listeners: Final = tls_listeners
        """The listeners that speak TLS (handshake counters)."""
        if len(self.route_clusters) != len(self.routes) or len(self.route_listeners) != len(
            self.routes
        ):
            raise MetricsLayoutError("a layout needs one cluster and listener entry per route")
        if len(self.endpoints) != len(self.clusters):
            raise MetricsLayoutError("a layout needs one endpoint list per cluster")
        if list(self.buckets) != sorted(set(self.buckets)) or not self.buckets:
            raise MetricsLayoutError("histogram buckets must be increasing and distinct")
        cluster_index = {name: i for i, name in enumerate(self.clusters)}
        for name in self.route_clusters:
            if name is not None and name not in cluster_index:
                raise MetricsLayoutError(f"a route proxies to unknown cluster {name!r}")
        nr = len(self.routes)
        pairs = []
        for li, lname in enumerate(self.listeners):
            for ri, only in enumerate(self.route_listeners):
                if only is None or lname in only:
                    pairs.append((li, ri))
            pairs.append((li, nr))
        keys = len(pairs)
        nb = len(self.buckets) + 1
        nc = len(self.clusters)
        ne = sum(len(eps) for eps in self.endpoints)
        counters = [
            ("requests", keys * len(STATUS_CLASSES)),
            ("duration_buckets", keys * nb),
            ("bytes_in", keys),
            ("bytes_out", keys),
            ("upstream_buckets", (nc + 1) * nb),  # row nc: requests without a cluster
            ("ejections", ne),
            ("retries", nc),
            ("budget_exhausted", nc),
            ("overflows", nc * len(BREAKERS)),
            ("access_log_dropped", 1),
            ("access_log_write_errors", 1),
            ("tls_handshakes", len(self.tls_listeners) * (len(TLS_HANDSHAKE_FAILURES) + 1)),
        ]
        gauges = [
            ("connections", len(self.listeners)),
            ("connections_parked", len(self.listeners)),
            ("health", ne),
            ("panic", nc),
        ]
        floats = [("duration_sum", keys), ("upstream_sum", nc + 1)]
        int_fields: dict[str, tuple[int, int]] = {}
        at = _SLOT_HEADER
        for name, size in counters:
            int_fields[name] = (at, at + size)
            at += size
        counters_end = at
        for name, size in gauges:
            int_fields[name] = (at, at + size)
            at += size
        float_fields: dict[str, tuple[int, int]] = {}
        fat = _SLOT_FLOATS
        for name, size in floats:
            float_fields[name] = (fat, fat + size)
            fat += size
        base = []
        total = 0
        for eps in self.endpoints:
            base.append(total)
            total += len(eps)
        route_cluster = [cluster_index[c] if c is not None else nc for c in self.route_clusters]
        route_cluster.append(nc)
        self.int_fields: Final = int_fields
        self.float_fields: Final = float_fields
        self.counters_end: Final = counters_end
        self.n_ints: Final = at
        self.n_floats: Final = fat
        self.endpoint_base: Final = tuple(base)
        self.key_pairs: Final = tuple(pairs)
        """Per key: ``(listener index, route index)``, route index ``len(routes)`` for none."""
        self.key_cluster: Final = tuple(route_cluster[ri] for _, ri in pairs)
        """Per key: its route's cluster index, ``len(clusters)`` for none."""
        self.key_index: Final = {pair: k for k, pair in enumerate(pairs)}
        text = repr(
            (
                self.listeners,
                self.routes,
                self.route_clusters,
                self.route_listeners,
                self.clusters,
                self.endpoints,
                self.buckets,
                self.tls_listeners,
                _VERSION,
            )
        )
        # A 64-bit fingerprint from zlib (hashlib would load OpenSSL into the lean supervisor).
        raw = text.encode()
        digest = ((zlib.crc32(raw) << 32) | zlib.adler32(raw)).to_bytes(8, "big")
        self.digest: Final = int.from_bytes(digest, "big", signed=True)
        if self.slot_bytes > _MAX_SLOT_BYTES:
            raise MetricsLayoutError(
                f"metrics for {keys} listener/route pairs need {self.slot_bytes >> 20} MiB"
                f" per worker (limit {_MAX_SLOT_BYTES >> 20} MiB); limit routes to the"
                " listeners that use them (routes[].listeners)"
            )

    @property
    def slot_bytes(self) -> int:
        """Bytes of one worker's slot (ints then floats, rounded up to 64)."""
        raw = (self.n_ints + self.n_floats) * 8
        return (raw + 63) // 64 * 64

    @property
    def keys(self) -> int:
        """How many series keys there are (keys are ``range(keys)``)."""
        return len(self.key_pairs)

    # -- indexes (for the edge's start-up; not the hot path) ----------------------------------
    def listener_index(self, name: str) -> int:
        try:
            return self.listeners.index(name)
        except ValueError:
            raise MetricsLayoutError(f"listener {name!r} is not in the metrics layout") from None

    def route_index(self, name: str | None) -> int:
        """The route's index; ``len(routes)`` for None (no route)."""
        if name is None:
            return len(self.routes)
        try:
            return self.routes.index(name)
        except ValueError:
            raise MetricsLayoutError(f"route {name!r} is not in the metrics layout") from None

    def cluster_index(self, name: str) -> int:
        try:
            return self.clusters.index(name)
        except ValueError:
            raise MetricsLayoutError(f"cluster {name!r} is not in the metrics layout") from None

    def series(self, listener: str, route: str | None) -> int:
        """The series key of requests on ``listener`` that matched ``route`` (None: none)."""
        pair = (self.listener_index(listener), self.route_index(route))
        try:
            return self.key_index[pair]
        except KeyError:
            raise MetricsLayoutError(
                f"route {route!r} is limited to other listeners than {listener!r}"
            ) from None

    def series_names(self, key: int) -> tuple[str, str, str]:
        """``(listener, route, cluster)`` label values of a series key ("" for none)."""
        li, ri = self.key_pairs[key]
        if ri == len(self.routes):
            return self.listeners[li], "", ""
        return self.listeners[li], self.routes[ri], self.route_clusters[ri] or ""


def _get(node: Any, name: str, default: Any = None) -> Any:
    if isinstance(node, dict):
        return node.get(name, default)
    return getattr(node, name, default)


def build_layout(settings: Any, buckets: Iterable[float] = DEFAULT_BUCKETS) -> Layout:
    """The layout of a config: a thawed config (:func:`backhaul.edge.settings.thaw`), the
    validated model itself (both have the same attributes) or the same as plain dicts.

    Endpoint labels: ``host:port`` (``[v6]:port``) for an address, ``builtin:<cluster>-<n>``
    (n from 1) for a built-in origin; a repeated label gets ``#2``, ``#3``.
    """
    listeners = tuple(str(_get(lst, "name")) for lst in _get(settings, "listeners", ()))
    routes = []
    route_clusters: list[str | None] = []
    route_listeners: list[tuple[str, ...] | None] = []
    for route in _get(settings, "routes", ()) or ():
        routes.append(str(_get(route, "name")))
        proxy = _get(route, "proxy")
        route_clusters.append(str(_get(proxy, "cluster")) if proxy is not None else None)
        only = _get(route, "listeners")
        route_listeners.append(tuple(only) if only else None)
    clusters = []
    endpoints = []
    for name, cluster in (_get(settings, "clusters", {}) or {}).items():
        clusters.append(str(name))
        labels = []
        for i, ep in enumerate(_get(cluster, "endpoints", ())):
            address = _get(ep, "address")
            if address is not None:
                labels.append(endpoint_label(address[0], int(address[1])))
            else:
                labels.append(f"builtin:{name}-{i + 1}")
        endpoints.append(_names_unique(labels))
    tls_listeners = tuple(
        str(_get(lst, "name"))
        for lst in _get(settings, "listeners", ())
        if _get(lst, "tls") is not None
    )
    return Layout(
        listeners=listeners,
        routes=tuple(routes),
        route_clusters=tuple(route_clusters),
        route_listeners=tuple(route_listeners),
        clusters=tuple(clusters),
        endpoints=tuple(endpoints),
        buckets=tuple(float(b) for b in buckets),
        tls_listeners=tls_listeners,
    )


class Totals(Record):
    """All slots added up (see the module docstring for what "live" means)."""

    __slots__ = ("ints", "floats", "health", "panic", "workers")

    def __init__(
        self,
        ints: list[int],
        floats: list[float],
        health: list[list[int]],
        panic: list[int],
        workers: int,
    ) -> None:
        self.ints = ints
        """Counters summed over every used slot; gauge regions summed over live slots."""
        self.floats = floats
        """Sums (of durations) over every used slot."""
        self.health = health
        """Per endpoint (flat index): how many live workers see it in each HEALTH_STATES."""
        self.panic = panic
        """Per cluster: how many live workers have it in panic."""
        self.workers = workers
        """Live workers."""


class SharedCounters:
    """The anonymous shared memory holding one slot per worker.

    Create it in the supervisor *before* forking (``SharedCounters(layout, slots)``); the
    children inherit the mapping. Slot contents are written only by
    :class:`WorkerMetrics`.
    """

    def __init__(self, layout: Layout, slots: int) -> None:
        if slots < 1:
            raise MetricsLayoutError(f"a metrics store needs at least one slot, not {slots}")
        self.layout = layout
        self.slots = slots
        size = _HEADER_BYTES + slots * layout.slot_bytes
        self._map = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS: shared across fork
        self._view = memoryview(self._map)
        header = self._view[:_HEADER_BYTES].cast("q")
        header[0:5] = array("q", [_MAGIC, _VERSION, layout.digest, slots, layout.slot_bytes])
        header.release()
        self._ints: list[memoryview[int]] = []
        # memoryview's stubs know no float items: typed loosely.
        self._floats: list[Any] = []
        for slot in range(slots):
            start = _HEADER_BYTES + slot * layout.slot_bytes
            float_start = start + layout.n_ints * 8
            self._ints.append(self._view[start:float_start].cast("q"))
            self._floats.append(
                self._view[float_start : float_start + layout.n_floats * 8].cast("d")
            )

    def check(self, layout: Layout) -> None:
        """Raise :class:`MetricsLayoutError` unless this store was made for ``layout``."""
        if layout.digest != self.layout.digest:
            raise MetricsLayoutError("the metrics store was made for another config layout")

    def slot_views(self, slot: int) -> tuple[memoryview[int], Any]:
        """The ``(ints, floats)`` views of one slot (for :class:`WorkerMetrics`)."""
        if not 0 <= slot < self.slots:
            raise MetricsLayoutError(f"metrics slot {slot} is outside 0..{self.slots - 1}")
        return self._ints[slot], self._floats[slot]

    def snapshot(self, slot: int) -> tuple[list[int], list[float]]:
        """A consistent copy of one slot (seqlock: retried while its owner is copying in).
        A slot left mid-copy by a killed worker is returned as it is after a bounded wait:
        every value in it is still one the counter really had."""
        ints, floats = self.slot_views(slot)
        deadline = 0.0
        while True:
            before = ints[_SEQ]
            if not before & 1:
                a = ints.tolist()
                b = floats.tolist()
                if ints[_SEQ] == before:
                    return a, b
            now = time.monotonic()
            if not deadline:
                deadline = now + _SNAPSHOT_WAIT
            elif now > deadline:
                return ints.tolist(), floats.tolist()
            time.sleep(0)

    def totals(self, now: float | None = None) -> Totals:
        """Every slot added up; ``now`` (``time.monotonic()`` by default) decides liveness."""
        if now is None:
            now = time.monotonic()
        layout = self.layout
        ints = [0] * layout.n_ints
        floats = [0.0] * layout.n_floats
        cend = layout.counters_end
        h0, h1 = layout.int_fields["health"]
        p0, p1 = layout.int_fields["panic"]
        health = [[0] * len(HEALTH_STATES) for _ in range(h1 - h0)]
        panic = [0] * (p1 - p0)
        workers = 0
        for slot in range(self.slots):
            a, b = self.snapshot(slot)
            if a[_STARTS] == 0:
                continue  # never used
            ints[_SLOT_HEADER:cend] = map(
                int.__add__, ints[_SLOT_HEADER:cend], a[_SLOT_HEADER:cend]
            )
            floats[_SLOT_FLOATS:] = map(float.__add__, floats[_SLOT_FLOATS:], b[_SLOT_FLOATS:])
            if a[_CLOSED] or now - b[0] > STALE_AFTER:
                continue
            workers += 1
            ints[cend:] = map(int.__add__, ints[cend:], a[cend:])
            for e, code in enumerate(a[h0:h1]):
                if 0 <= code < len(HEALTH_STATES):
                    health[e][code] += 1
            for c, on in enumerate(a[p0:p1]):
                if on:
                    panic[c] += 1
        return Totals(ints, floats, health, panic, workers)

    def slot_info(self, slot: int) -> tuple[int, int, bool, float]:
        """``(pid, starts, closed, heartbeat)`` of a slot."""
        ints, floats = self.slot_views(slot)
        return int(ints[_PID]), int(ints[_STARTS]), bool(ints[_CLOSED]), float(floats[0])

    def close(self) -> None:
        """Unmap (in this process only)."""
        for view in (*self._ints, *self._floats):
            view.release()
        self._ints.clear()
        self._floats.clear()
        self._view.release()
        self._map.close()


class WorkerMetrics:
    """One worker's counters: plain lists on the hot path, copied into its slot by
    :meth:`flush` (call it from the worker's tick).

    Hot path, once per finished exchange (bind it once: ``record = metrics.record``)::

        record(key, status, duration, upstream_time, bytes_in, bytes_out)

    ``key`` from :meth:`Layout.series` (computed at start per listener and route),
    ``duration`` and ``upstream_time`` in seconds (``upstream_time`` None when no upstream
    answered). Everything else runs from the tick: :meth:`set_active_connections`,
    :meth:`sync_cluster` (cluster counters and health, which the edge already keeps), then
    :meth:`flush`.
    """

    __slots__ = (
        "_base",
        "_bytes_in",
        "_bytes_out",
        "_closed",
        "_duration_buckets",
        "_duration_sum",
        "_floats",
        "_ints",
        "_lists",
        "_seq",
        "_upstream_buckets",
        "_upstream_sum",
        "layout",
        "record",
        "recorder",
        "slot",
        "store",
    )

    record: Callable[[int, int, float, float | None, int, int], None]
    recorder: Recorder

    def __init__(self, layout: Layout, store: SharedCounters, slot: int) -> None:
        store.check(layout)
        self.layout = layout
        self.store = store
        self.slot = slot
        self._closed = False
        ints, floats = store.slot_views(slot)
        self._ints = ints
        self._floats = floats
        # Take over the slot: counters continue from what a previous owner left.
        a, b = store.snapshot(slot)
        # Arrays (not lists): the compiled recorder increments them in C.
        self._lists: dict[str, array[Any]] = {}
        for name, (lo, hi) in layout.int_fields.items():
            if lo < layout.counters_end:
                self._lists[name] = array("q", a[lo:hi])
            else:
                self._lists[name] = array("q", bytes(8 * (hi - lo)))
        for name, (lo, hi) in layout.float_fields.items():
            self._lists[name] = array("d", b[lo:hi])
        self._seq = a[_SEQ] + (a[_SEQ] & 1)  # even, past a copy a killed owner left half-done
        ints[_SEQ] = self._seq
        ints[_PID] = os.getpid()
        ints[_STARTS] = a[_STARTS] + 1
        ints[_CLOSED] = 0
        # What previous owners counted, for the totals that sync_cluster sets.
        self._base = {
            name: list(self._lists[name])
            for name in (
                "retries",
                "budget_exhausted",
                "overflows",
                "ejections",
                "access_log_dropped",
                "access_log_write_errors",
                "tls_handshakes",
            )
        }
        self._duration_buckets = self._lists["duration_buckets"]
        self._duration_sum = self._lists["duration_sum"]
        self._upstream_buckets = self._lists["upstream_buckets"]
        self._upstream_sum = self._lists["upstream_sum"]
        self._bytes_in = self._lists["bytes_in"]
        self._bytes_out = self._lists["bytes_out"]
        self.recorder = self._recorder()
        self.record = self.recorder.record
        self.flush()

    @classmethod
    def standalone(cls, layout: Layout) -> WorkerMetrics:
        """Metrics with a private one-slot store (a worker run without a supervisor)."""
        return cls(layout, SharedCounters(layout, 1), 0)

    def _recorder(self) -> Recorder:
        from backhaul.state.recorder import Recorder  # compiled: a worker's, not the supervisor's

        lists = self._lists
        return Recorder(
            lists["requests"],
            self._duration_buckets,
            self._upstream_buckets,
            self._bytes_in,
            self._bytes_out,
            self._duration_sum,
            self._upstream_sum,
            array("d", self.layout.buckets),
            array("q", self.layout.key_cluster),
        )

    # -- rare events ---------------------------------------------------------------------
    def record_reject(self, key: int, status: int, bytes_in: int, bytes_out: int) -> None:
        """A request refused before it became an exchange (400, 408, 413, 431 ...): counted
        in requests and bytes, not in the latency histogram."""
        self._lists["requests"][key * 5 + _STATUS_CLASS[status]] += 1
        self._bytes_in[key] += bytes_in
        self._bytes_out[key] += bytes_out

    def set_active_connections(self, listener_i: int, n: int, parked: int = 0) -> None:
        """Open downstream connections of one listener in this worker (gauge), and how many
        of them are idle and parked without a transport (edge/parking.pyx)."""
        self._lists["connections"][listener_i] = n
        self._lists["connections_parked"][listener_i] = parked

    def _endpoint(self, cluster_i: int, endpoint_i: int) -> int:
        eps = self.layout.endpoints[cluster_i]
        if not 0 <= endpoint_i < len(eps):
            raise IndexError(
                f"cluster {self.layout.clusters[cluster_i]} has no endpoint {endpoint_i}"
            )
        return self.layout.endpoint_base[cluster_i] + endpoint_i

    def set_endpoint_health(self, cluster_i: int, endpoint_i: int, state: Any) -> None:
        """An endpoint's health state as this worker sees it: a ``HealthState`` or its value
        (``"healthy"``, ``"warming"``, ``"unhealthy"``, ``"ejected"``, ``"draining"``)."""
        value = getattr(state, "value", state)
        try:
            code = HEALTH_STATES.index(value)
        except ValueError:
            raise ValueError(
                f"unknown health state {value!r}; expected one of {HEALTH_STATES}"
            ) from None
        self._lists["health"][self._endpoint(cluster_i, endpoint_i)] = code

    def set_panic(self, cluster_i: int, panic: bool) -> None:
        """Whether this worker balances ``cluster_i`` in panic mode (gauge)."""
        self._lists["panic"][cluster_i] = 1 if panic else 0

    def sync_tls(self, tls_i: int, counts: Sequence[int]) -> None:
        """One TLS listener's handshake totals since this worker started (failures by
        :data:`TLS_HANDSHAKE_FAILURES`, then completed), from the tick."""
        n = len(TLS_HANDSHAKE_FAILURES) + 1
        if len(counts) != n:
            raise ValueError(f"expected {n} handshake counts, not {len(counts)}")
        at = tls_i * n
        mine = self._lists["tls_handshakes"]
        base = self._base["tls_handshakes"]
        for r, count in enumerate(counts):
            mine[at + r] = base[at + r] + count

    def sync_cluster(
        self,
        cluster_i: int,
        *,
        retries: int,
        budget_exhausted: int,
        overflows: Sequence[int],
        ejections: Sequence[int],
        health: Sequence[Any],
        panic: bool,
    ) -> None:
        """One cluster as this worker sees it, from the tick: the counters are this worker's
        totals since it started (``cluster.stats.retries``, ``limit.overflows_total`` per
        :data:`BREAKERS` kind, ``ep.ejections_total`` per endpoint), the gauges its current
        view (``ep.state`` per endpoint, ``balancer.panic``). A restarted worker starts its
        totals from zero again; the slot adds what the previous owners counted, so the
        exported counters never go down."""
        nb = len(BREAKERS)
        if len(overflows) != nb:
            raise ValueError(f"overflows: expected {nb} values, one per {BREAKERS}")
        eps = self.layout.endpoints[cluster_i]
        if len(ejections) != len(eps) or len(health) != len(eps):
            raise ValueError(
                f"cluster {self.layout.clusters[cluster_i]} has {len(eps)} endpoints:"
                " expected one ejection count and one health state for each"
            )
        base = self._base
        lists = self._lists
        lists["retries"][cluster_i] = base["retries"][cluster_i] + retries
        lists["budget_exhausted"][cluster_i] = (
            base["budget_exhausted"][cluster_i] + budget_exhausted
        )
        at = cluster_i * nb
        for b, n in enumerate(overflows):
            lists["overflows"][at + b] = base["overflows"][at + b] + n
        first = self.layout.endpoint_base[cluster_i]
        for e, n in enumerate(ejections):
            lists["ejections"][first + e] = base["ejections"][first + e] + n
        for e, state in enumerate(health):
            self.set_endpoint_health(cluster_i, e, state)
        self.set_panic(cluster_i, panic)

    def sync_access_log(self, *, dropped: int, write_errors: int) -> None:
        """This worker's access-log losses since it started (from the tick): lines dropped
        because the writer fell behind, lines lost to write errors."""
        base = self._base
        lists = self._lists
        lists["access_log_dropped"][0] = base["access_log_dropped"][0] + dropped
        lists["access_log_write_errors"][0] = base["access_log_write_errors"][0] + write_errors

    # -- the slot ------------------------------------------------------------------------
    def flush(self) -> None:
        """Copy the counters into this worker's slot (from the tick; also before a scrape
        this worker answers, so its own numbers are current)."""
        if self._closed:
            return
        ints = self._ints
        seq = self._seq + 1
        ints[_SEQ] = seq  # odd: copying
        lists = self._lists
        for name, (lo, hi) in self.layout.int_fields.items():
            ints[lo:hi] = lists[name]
        floats = self._floats
        for name, (lo, hi) in self.layout.float_fields.items():
            floats[lo:hi] = lists[name]
        floats[0] = time.monotonic()
        self._seq = seq + 1
        ints[_SEQ] = seq + 1  # even: consistent

    def close(self) -> None:
        """Flush a last time and mark the slot not live (gauges no longer count); counters
        stay in the slot for the totals and for the next owner."""
        if self._closed:
            return
        for name in ("connections", "connections_parked", "panic"):
            lst = self._lists[name]
            lst[:] = array("q", bytes(8 * len(lst)))
        self.flush()
        self._ints[_CLOSED] = 1
        self._closed = True
