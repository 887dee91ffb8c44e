# The per-exchange metrics increment, callable from C by the edge's data plane.

cdef class Recorder:
    cdef long long[::1] requests
    cdef long long[::1] dbuckets
    cdef long long[::1] ubuckets
    cdef long long[::1] bytes_in
    cdef long long[::1] bytes_out
    cdef double[::1] dsum
    cdef double[::1] usum
    cdef double[::1] bounds
    cdef long long[::1] key_cluster
    cdef Py_ssize_t nb

    cdef int record_c(
        self,
        Py_ssize_t key,
        int status,
        double duration,
        double upstream_time,
        bint has_upstream,
        long long bytes_in,
        long long bytes_out,
    ) except -1
