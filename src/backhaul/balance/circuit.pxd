# Declarations that make Limit and CircuitBreakers C types when circuit.py is compiled (an
# augmenting .pxd): the data plane takes and gives back a request slot with C calls.

cdef class Limit:
    cdef public str name
    cdef public long long maximum
    cdef public str description
    cdef public long long active
    cdef public long long overflows_total

    cpdef bint try_acquire(self) except -1
    cpdef release(self)


cdef class CircuitBreakers:
    cdef public Limit connections
    cdef public Limit pending
    cdef public Limit requests
