# Declarations that make RoundRobin and WeightedRoundRobin C types when rotation.py is
# compiled (an augmenting .pxd; annotation_typing is off there, as in balancer.py).

from backhaul.balance.balancer cimport Balancer


cdef class RoundRobin(Balancer):
    cdef public list _seq
    cdef public Py_ssize_t _n
    cdef public Py_ssize_t _next
    cdef public list _heap
    cdef public double _vtime

    cpdef pick(self, key=*)


cdef class WeightedRoundRobin(RoundRobin):
    pass
