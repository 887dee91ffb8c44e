# Declarations that make Endpoint a C type when cluster.py is compiled (an augmenting .pxd):
# the data plane takes and returns pooled connections with C calls.

from backhaul.balance.endpoint cimport EndpointState


cdef class Endpoint(EndpointState):
    cdef public object address
    cdef public object cluster
    cdef public object connect_timeout
    cdef public object host
    cdef public object idle
    cdef public object idle_timeout
    cdef public object label
    cdef public object log_name
    cdef public object max_idle
    cdef public object port

    cpdef object acquire_nowait(self)
    cpdef object release(self, conn, double now)
