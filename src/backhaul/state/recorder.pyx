# cython: language_level=3, boundscheck=False, wraparound=False
"""One exchange counted into a worker's metrics arrays: the hot-path half of
:class:`backhaul.state.shared_counters.WorkerMetrics`, compiled (C increments on the arrays
the tick copies into the worker's shared-memory slot).

``record(key, status, duration, upstream_time, bytes_in, bytes_out)``: ``key`` from
``Layout.series``; ``duration`` and ``upstream_time`` in seconds (``upstream_time`` None when
no upstream answered); a status outside 100..599 counts as 5xx.
"""

__all__ = ["Recorder"]


cdef inline Py_ssize_t _bucket(double[::1] bounds, double value) noexcept:
    """The index of the first bound >= value (bisect_left), len(bounds) past the last."""
    cdef Py_ssize_t lo = 0
    cdef Py_ssize_t hi = bounds.shape[0]
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if bounds[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef class Recorder:
    """Increments of one worker's counters (arrays of ``q`` and ``d``)."""

    def __init__(
        self,
        requests,
        dbuckets,
        ubuckets,
        bytes_in,
        bytes_out,
        dsum,
        usum,
        bounds,
        key_cluster,
    ):
        self.requests = requests
        self.dbuckets = dbuckets
        self.ubuckets = ubuckets
        self.bytes_in = bytes_in
        self.bytes_out = bytes_out
        self.dsum = dsum
        self.usum = usum
        self.bounds = bounds
        self.key_cluster = key_cluster
        self.nb = self.bounds.shape[0] + 1

    cdef int record_c(
        self,
        Py_ssize_t key,
        int status,
        double duration,
        double upstream_time,
        bint has_upstream,
        long long bytes_in,
        long long bytes_out,
    ) except -1:
        cdef int status_class = status // 100 - 1 if 100 <= status < 600 else 4
        cdef Py_ssize_t ci
        self.requests[key * 5 + status_class] += 1
        self.dbuckets[key * self.nb + _bucket(self.bounds, duration)] += 1
        self.dsum[key] += duration
        self.bytes_in[key] += bytes_in
        self.bytes_out[key] += bytes_out
        if has_upstream:
            ci = self.key_cluster[key]
            self.ubuckets[ci * self.nb + _bucket(self.bounds, upstream_time)] += 1
            self.usum[ci] += upstream_time
        return 0

    def record(self, Py_ssize_t key, int status, double duration, upstream_time,
               long long bytes_in, long long bytes_out):
        """Count one exchange (see the module docstring)."""
        if key < 0 or key >= self.dsum.shape[0]:
            raise IndexError(f"metrics series key {key} is outside 0..{self.dsum.shape[0] - 1}")
        self.record_c(
            key,
            status,
            duration,
            0.0 if upstream_time is None else upstream_time,
            upstream_time is not None,
            bytes_in,
            bytes_out,
        )
