# Declarations that make CompiledRoute, RouteStep and RouteTable C types when routing.py is compiled (an augmenting
# .pxd): the data plane reads a route's fields as struct members, not by attribute lookup.

cdef class CompiledRoute:
    cdef public object body_limit
    cdef public object cluster
    cdef public object config
    cdef public object exact_hosts
    cdef public object filters
    cdef public bint has_header_match
    cdef public object header_matches
    cdef public object host_out
    cdef public int index
    cdef public object kind
    cdef public object listeners
    cdef public object log_name
    cdef public object methods
    cdef public object metrics_key
    cdef public object name
    cdef public object path_exact
    cdef public object path_prefix
    cdef public object path_regex
    cdef public object redirect
    cdef public object retry_policy
    cdef public frozenset retry_statuses
    cdef public object respond_body
    cdef public object respond_content_type
    cdef public object rewrite_base
    cdef public object rewrite_root
    cdef public object strip_prefix
    cdef public double try_timeout
    cdef public object wildcard_suffixes

    cpdef bint host_matches(self, str host)
    cpdef bint rest_matches(self, str path, bytes method, object headers)


cdef class RouteStep:
    cdef public int kind
    cdef public CompiledRoute route
    cdef public str text
    cdef public object pattern
    cdef public dict groups


cdef class RouteTable:
    cdef readonly tuple routes
    cdef readonly dict _plans
    cdef readonly tuple _generic_plan

    cpdef CompiledRoute match(self, str host, str path, bytes method, object headers=*)


cdef int _STEP_PREFIX, _STEP_EXACT, _STEP_REGEXES, _STEP_ANY
