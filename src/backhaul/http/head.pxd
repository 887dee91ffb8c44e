# Declarations that make the facts classes C types when head.py is compiled (an augmenting
# .pxd): the data plane reads their fields as struct members, not by attribute lookup.

cdef class RequestFacts:
    cdef public object host
    cdef public object authority
    cdef public object port
    cdef public object content_length
    cdef public bint chunked
    cdef public bint keep_alive
    cdef public bint expect_continue
    cdef public object upgrade
    cdef public object connection_tokens
    cdef public object version


cdef class ResponseFacts:
    cdef public int status
    cdef public object content_length
    cdef public bint chunked
    cdef public bint keep_alive
    cdef public bint no_body
    cdef public bint until_close
    cdef public object connection_tokens
    cdef public object version


cpdef RequestFacts inspect_request_head(
    object version,
    list[tuple[bytes, bytes]] headers,
    bytes absolute_authority=*,
    bint values_checked=*,
)
