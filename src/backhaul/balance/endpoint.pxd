# Declarations that make EndpointState a C type when endpoint.py is compiled (an augmenting
# .pxd), so that the edge's Endpoint can be one too.

cdef class EndpointState:
    cdef public object check_failures
    cdef public object check_passes
    cdef public object consecutive_5xx
    cdef public object consecutive_connect_failures
    cdef public object effective_weight
    cdef public object ejected_until
    cdef public object ejections
    cdef public object ejections_total
    cdef public object in_flight
    cdef public object key
    cdef public object last_started
    cdef public object latency_at
    cdef public object latency_ewma
    cdef public object routable
    cdef public object slot
    cdef public object state
    cdef public object token
    cdef public object unejected_at
    cdef public object warming_since
    cdef public object weight
