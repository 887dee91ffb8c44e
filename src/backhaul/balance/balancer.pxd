# Declarations that make Balancer a C type when balancer.py is compiled (an augmenting .pxd):
# the data plane calls pick, started and finished as C calls, and their bodies read the
# balancer's fields as struct members. balancer.py is compiled with annotation_typing off:
# these declarations, not its annotations, give the C types.

cdef class Balancer:
    cdef public object settings
    cdef public str name
    cdef public object _random
    cdef public object _table
    cdef public bint _track_latency
    cdef public double _latency_hint
    cdef public long long _ejections_refused
    cdef public bint panic
    cdef public list endpoints
    cdef public list candidates
    cdef public dict _by_token

    cpdef pick(self, key=*)
    cpdef started(self, ep)
    cpdef finished(self, ep, double now, int outcome=*, object latency=*)
