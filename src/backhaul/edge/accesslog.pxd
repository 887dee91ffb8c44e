# Declarations that make AccessLog a C type when accesslog.py is compiled (an augmenting
# .pxd): the data plane appends to its batch and counts its lines as struct members.

cdef class _Clock:
    cdef long long _second
    cdef str _combined


cdef class AccessLog:
    cdef public str format
    cdef public bint json
    cdef public str path
    cdef public Py_ssize_t max_pending
    cdef public Py_ssize_t max_batch_bytes
    cdef public long long dropped
    cdef public long long write_errors
    cdef public long long written
    cdef public bytearray batch
    cdef public long long lines
    cdef public object exchange
    cdef _Clock _clock
    cdef object _queue
    cdef long long _queued_lines
    cdef object _lock
    cdef object _stream
    cdef bint _owns_stream
    cdef object _thread
