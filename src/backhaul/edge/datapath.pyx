# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: freethreading_compatible=False
"""The edge's compiled data plane: the HTTP/1.1 request path from the client's bytes to the
upstream and back.

One module, compiled with Cython (the core is compiled-only, as uvloop's and httptools' are:
one implementation of every rule, no interpreted twin that could drift):

- :class:`Http1Peer`, the base of both connection drivers, runs llhttp directly. Its C
  callbacks copy the head into one bounded buffer and record where each header's name and
  value lie; the driver is called once per head, once per body piece and once per message
  end, not once per header.
- :class:`HttpConnection` is the downstream driver (one ``asyncio.Protocol`` per client
  connection): limits and deadlines, pipelining, the hand-over to an :class:`Exchange`.
- :class:`Exchange` is one request and its response: route action, balancer pick, tries and
  retries, streaming both ways, the access-log line. Its life is a state machine: named
  states (``EXCHANGE_STATES``), one transition table (``EXCHANGE_TRANSITIONS``, checked on
  every move) and one way to end, ``terminate(outcome)``. The request's half (its body
  still arriving or not) is the one flag beside the state.
- :class:`UpstreamConnection` is the upstream driver, pooled per endpoint.
- :class:`FlowControl` is the one object that ties the two transports' backpressure
  together: why reading from the client is paused, and whether the client is writable.

The header rules themselves (what is hop-by-hop, how X-Forwarded-* and Via are built, what
framing is valid) are :mod:`backhaul.http`'s, compiled from the same source.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeASCII
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy

from backhaul.edge.llhttp cimport *
from backhaul.state.recorder cimport Recorder
from backhaul.edge.routing cimport CompiledRoute, RouteTable
from backhaul.edge.cluster cimport Cluster, Endpoint
from backhaul.edge.accesslog cimport AccessLog
from backhaul.edge.accesslog import MONTH_NAMES
from backhaul.balance.balancer cimport Balancer
from backhaul.balance.circuit cimport CircuitBreakers, Limit
from backhaul.http.head cimport RequestFacts, ResponseFacts, inspect_request_head

import asyncio
import os
import sys
import time

from backhaul.balance import CONNECT_FAILURE, RESET, TIMEOUT
from backhaul.errors import ConnectError, ConnectTimeout, RemoteProtocolError
from backhaul.http import REASONS, encode_head, problem_response
from backhaul.http import inspect_response_head
from backhaul.http.headers import (
    ALWAYS_DROPPED,
    REQUEST_RULES,
    RESPONSE_RULES,
    RULE_DROP,
    RULE_FORWARDED,
    RULE_FRAMING,
    RULE_HOST,
    RULE_PASS,
    RULE_REPLACED,
    RULE_REQUEST_ID,
    RULE_SERVER,
    RULE_VIA,
    RULE_XFF,
    connection_options,
    forwarded_value,
    via_element,
)
from backhaul.http.target import PLAIN_TARGET_BYTES, Target, parse_target

__all__ = [
    "DATA_PLANE",
    "WorkerContext",
    "ResponseRelay",
    "relay_interim_head",
    "relay_request_head",
    "relay_response_head",
    "status_line",
    "Exchange",
    "FlowControl",
    "HttpConnection",
    "UpstreamConnection",
]

DATA_PLANE = "compiled (Cython, llhttp)"


cdef inline double _mono() noexcept nogil:
    """Seconds on CLOCK_MONOTONIC: the clock of ``time.perf_counter`` and of the event
    loop's ``time()`` (libuv's), read without a Python call."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9

# -- connection deadlines -----------------------------------------------------------------
cdef enum:
    DL_NONE = 0
    DL_HEADERS = 1
    DL_BODY = 2
    DL_IDLE = 3

# -- why reading from the client is paused (read resumes when no reason is left) -------------
cdef enum:
    PAUSE_PIPELINE = 1
    PAUSE_UPSTREAM = 2  # upstream not connected yet, or its write buffer is full

# -- exchange deadlines ---------------------------------------------------------------------
cdef enum:
    EX_NONE = 0
    EX_RESPONSE_HEADERS = 1
    EX_BODY_IDLE = 2

# -- the exchange's life: named states, one transition table, one way to end ----------------
cdef enum:
    XS_QUEUED = 0  # its head was read; it waits for its turn to answer (pipelining)
    XS_CONNECTING = 1  # a try waits for a new upstream connection
    XS_BACKOFF = 2  # a retry waits for its backoff timer
    XS_WAITING = 3  # the request went upstream; no final response head yet
    XS_STREAMING = 4  # the response head went to the client; its body is flowing
    XS_RESPONDED = 5  # the whole response went out; the request may still be arriving
    XS_DONE = 6  # ended, with an outcome
    XS_COUNT = 7

cdef enum:
    XO_NONE = 0
    XO_COMPLETED = 1  # answered and read: the connection goes on (or closes if it must)
    XO_ABORTED = 2  # the response cannot be completed correctly: the client connection is cut
    XO_CLIENT_GONE = 3  # the client went away first (logged as 499 if nothing was answered)
    XO_ABANDONED = 4  # dropped unlogged: the connection is refused (a bad request after it)

EXCHANGE_STATES = ("queued", "connecting", "backoff", "waiting", "streaming", "responded", "done")
EXCHANGE_OUTCOMES = ("", "completed", "aborted", "client_gone", "abandoned")
EXCHANGE_TRANSITIONS = {
    "queued": ("connecting", "waiting", "responded", "done"),
    "connecting": ("waiting", "backoff", "responded", "done"),
    "backoff": ("connecting", "waiting", "responded", "done"),
    # a pooled connection found closed is replaced once (connecting); a retryable status
    # or failure waits (backoff); an answer the edge makes itself (responded: 502, 504)
    "waiting": ("connecting", "backoff", "streaming", "responded", "done"),
    "streaming": ("responded", "done"),
    "responded": ("done",),
    "done": (),
}
"""The exchange's transition table: the states each state may move to. ``Exchange.goto``
refuses any other move (a defect, reported as such); ``done`` is left by no transition."""

cdef unsigned int _next_states[XS_COUNT]
for _from, _tos in EXCHANGE_TRANSITIONS.items():
    for _to in _tos:
        _next_states[EXCHANGE_STATES.index(_from)] |= 1u << EXCHANGE_STATES.index(_to)

cdef enum:
    UPSTREAM_ERROR_LINES = 10  # upstream error lines logged per second and worker
    BODY_VIEW_MIN = 8192  # body pieces at least this large are relayed as views (no copy)
    HIGH_WATER = 256 * 1024
    LOW_WATER = 64 * 1024
    HEAD_BUFFER_START = 2048

# For the worker's tick (the C names above are not visible from Python).
DEADLINE_NONE = DL_NONE
DEADLINE_IDLE = DL_IDLE
EXCHANGE_DEADLINE_NONE = EX_NONE

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNK_END = b"0\r\n\r\n"
_CRLF = b"\r\n"


# =========================================================================================
# llhttp driven from C
# =========================================================================================

cdef struct HeaderSpan:
    Py_ssize_t name_off
    Py_ssize_t name_len
    Py_ssize_t value_off
    Py_ssize_t value_len


cdef llhttp_settings_t _settings


cdef int _cb_message_begin(llhttp_t* p) noexcept:
    cdef Http1Peer peer = <Http1Peer>p.data
    try:
        return peer.message_begin()
    except BaseException as exc:
        peer.cb_error = exc
        return -1


cdef int _cb_url(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef Http1Peer peer = <Http1Peer>p.data
    if peer.append(at, n, 0) < 0:
        return -1
    peer.url_len += <Py_ssize_t>n
    if peer.url_len > peer.max_url:
        peer.cb_error = RemoteProtocolError(
            f"the request-target is longer than this listener's limit of "
            f"{peer.max_url} bytes",
            414,
        )
        return -1
    return 0


cdef int _cb_header_field(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef Http1Peer peer = <Http1Peer>p.data
    cdef HeaderSpan* span
    if not peer.in_field:
        if peer.n_spans >= peer.span_cap:
            peer.cb_error = peer.too_many_fields()
            return -1
        peer.in_field = True
        span = &peer.spans[peer.n_spans]
        span.name_off = peer.hlen
        span.name_len = 0
        span.value_off = 0
        span.value_len = 0
    if peer.append(at, n, 1) < 0:
        return -1
    peer.spans[peer.n_spans].name_len += <Py_ssize_t>n
    return 0


cdef int _cb_header_field_complete(llhttp_t* p) noexcept:
    cdef Http1Peer peer = <Http1Peer>p.data
    peer.in_field = False
    peer.spans[peer.n_spans].value_off = peer.hlen
    return 0


cdef int _cb_header_value(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef Http1Peer peer = <Http1Peer>p.data
    if peer.append(at, n, 1) < 0:
        return -1
    peer.spans[peer.n_spans].value_len += <Py_ssize_t>n
    return 0


cdef int _cb_header_value_complete(llhttp_t* p) noexcept:
    cdef Http1Peer peer = <Http1Peer>p.data
    cdef HeaderSpan* span = &peer.spans[peer.n_spans]
    peer.n_spans += 1
    peer.header_bytes += span.name_len + span.value_len + 4
    if not peer.in_head:
        peer.feed_explained += span.name_len + span.value_len + 4
    if peer.header_bytes > peer.max_header_bytes:
        peer.cb_error = peer.too_large_head()
        return -1
    if peer.n_spans > peer.max_headers:
        peer.cb_error = peer.too_many_fields()
        return -1
    return 0


cdef int _cb_headers_complete(llhttp_t* p) noexcept:
    cdef Http1Peer peer = <Http1Peer>p.data
    try:
        return peer.headers_complete()
    except BaseException as exc:
        peer.cb_error = exc
        return -1


cdef int _cb_body(llhttp_t* p, const char* at, size_t n) noexcept:
    cdef Http1Peer peer = <Http1Peer>p.data
    try:
        return peer.body(at, n)
    except BaseException as exc:
        peer.cb_error = exc
        return -1


cdef int _cb_chunk_header(llhttp_t* p) noexcept:
    cdef Http1Peer peer = <Http1Peer>p.data
    try:
        return peer.chunk_header()
    except BaseException as exc:
        peer.cb_error = exc
        return -1


cdef int _cb_message_complete(llhttp_t* p) noexcept:
    cdef Http1Peer peer = <Http1Peer>p.data
    try:
        return peer.message_complete()
    except BaseException as exc:
        peer.cb_error = exc
        return -1


llhttp_settings_init(&_settings)
_settings.on_message_begin = _cb_message_begin
_settings.on_url = _cb_url
_settings.on_header_field = _cb_header_field
_settings.on_header_field_complete = _cb_header_field_complete
_settings.on_header_value = _cb_header_value
_settings.on_header_value_complete = _cb_header_value_complete
_settings.on_headers_complete = _cb_headers_complete
_settings.on_body = _cb_body
_settings.on_chunk_header = _cb_chunk_header
_settings.on_message_complete = _cb_message_complete


class ParseError(Exception):
    """llhttp refused the bytes: ``args`` are (llhttp error name, reason)."""

    def __init__(self, code: int, name: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.name = name
        self.reason = reason


cdef class Http1Peer:
    """An HTTP/1.1 peer parsed by llhttp: the head goes into one bounded buffer, with a span
    per header; subclasses act on the head, the body pieces and the message end."""

    cdef llhttp_t parser
    cdef int parser_type
    cdef bytes feed  # the read being parsed: large body pieces are views of it, not copies
    cdef const char* feed_base
    cdef object feed_view  # memoryview of ``feed``, made on the first large piece
    cdef char* hbuf
    cdef Py_ssize_t hlen
    cdef Py_ssize_t hcap
    cdef HeaderSpan* spans
    cdef Py_ssize_t n_spans
    cdef Py_ssize_t span_cap
    cdef Py_ssize_t url_len
    cdef Py_ssize_t max_url
    cdef Py_ssize_t max_header_bytes
    cdef Py_ssize_t max_headers
    cdef bint in_field
    cdef str side  # "request" or "response", for the words of a refusal
    cdef str limit_owner  # whose limit: "this listener's" or "this cluster's"
    cdef public bint in_head
    cdef public Py_ssize_t header_bytes
    cdef Py_ssize_t feed_explained
    cdef object cb_error

    def __cinit__(self):
        self.hbuf = NULL
        self.spans = NULL

    def __dealloc__(self):
        if self.hbuf != NULL:
            free(self.hbuf)
        if self.spans != NULL:
            free(self.spans)

    cdef int init_parser(self, int kind, Py_ssize_t max_url, Py_ssize_t max_header_bytes,
                         Py_ssize_t max_headers) except -1:
        self.parser_type = kind
        if kind == HTTP_REQUEST:
            self.side = "request"
            self.limit_owner = "this listener's"
        else:
            self.side = "response"
            self.limit_owner = "this cluster's"
        self.max_url = max_url
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        llhttp_init(&self.parser, <llhttp_type_t>kind, &_settings)
        self.parser.data = <void*>self
        return 0

    cdef int reset_parser(self) except -1:
        """A fresh parser state (a new message stream from its start)."""
        llhttp_init(&self.parser, <llhttp_type_t>self.parser_type, &_settings)
        self.parser.data = <void*>self
        return 0

    cdef int ensure_buffers(self) except -1:
        if self.hbuf == NULL:
            self.hbuf = <char*>malloc(HEAD_BUFFER_START)
            if self.hbuf == NULL:
                raise MemoryError()
            self.hcap = HEAD_BUFFER_START
        if self.spans == NULL:
            # One slot beyond the limit so that the limit itself is detected.
            self.span_cap = self.max_headers + 1
            self.spans = <HeaderSpan*>malloc(self.span_cap * sizeof(HeaderSpan))
            if self.spans == NULL:
                raise MemoryError()
        return 0

    cdef void free_buffers(self):
        """Give back the head buffers (an idle keep-alive connection needs none)."""
        if self.hbuf != NULL:
            free(self.hbuf)
            self.hbuf = NULL
            self.hcap = 0
        if self.spans != NULL:
            free(self.spans)
            self.spans = NULL
        self.hlen = 0
        self.n_spans = 0

    cdef int append(self, const char* at, size_t n, int in_header) noexcept:
        """Copy head bytes into the buffer, bounded by the limits."""
        cdef Py_ssize_t need = self.hlen + <Py_ssize_t>n
        cdef Py_ssize_t cap
        cdef char* grown
        if in_header and need - self.url_len > self.max_header_bytes + 4096:
            # The header section is far past its limit before a field even ended.
            self.cb_error = self.too_large_head()
            return -1
        if need > self.hcap:
            cap = self.hcap * 2
            while cap < need:
                cap *= 2
            grown = <char*>realloc(self.hbuf, cap)
            if grown == NULL:
                self.cb_error = MemoryError()
                return -1
            self.hbuf = grown
            self.hcap = cap
        memcpy(self.hbuf + self.hlen, at, n)
        self.hlen = need
        return 0

    cdef int message_begin(self) except -1:
        self.hlen = 0
        self.n_spans = 0
        self.url_len = 0
        self.header_bytes = 0
        self.in_field = False
        self.in_head = True
        return 0

    cdef list header_list(self):
        """The head's headers as a list of (name, value) bytes pairs."""
        cdef list out = []
        cdef Py_ssize_t i
        cdef HeaderSpan* span
        cdef char* buf = self.hbuf
        for i in range(self.n_spans):
            span = &self.spans[i]
            out.append(
                (
                    PyBytes_FromStringAndSize(buf + span.name_off, span.name_len),
                    PyBytes_FromStringAndSize(buf + span.value_off, span.value_len),
                )
            )
        return out

    cdef object too_many_fields(self):
        return RemoteProtocolError(
            f"the {self.side} has more than {self.limit_owner} limit of "
            f"{self.max_headers} header fields",
            431,
        )

    cdef object too_large_head(self):
        return RemoteProtocolError(
            f"the {self.side} header section is larger than {self.limit_owner} limit of "
            f"{self.max_header_bytes} bytes",
            431,
        )

    cdef bytes url_bytes(self):
        if self.hbuf == NULL or not self.in_head:
            return b""
        return PyBytes_FromStringAndSize(self.hbuf, self.url_len)

    cdef int headers_complete(self) except -1:
        return 0

    cdef int body(self, const char* at, size_t n) except -1:
        return 0

    cdef int chunk_header(self) except -1:
        return 0

    cdef int message_complete(self) except -1:
        return 0

    cdef llhttp_errno_t execute(self, bytes data):
        cdef llhttp_errno_t err
        self.cb_error = None
        self.feed = data
        self.feed_base = PyBytes_AS_STRING(data)
        try:
            return llhttp_execute(&self.parser, self.feed_base, <size_t>PyBytes_GET_SIZE(data))
        finally:
            self.feed = None
            self.feed_view = None

    cdef object body_piece(self, const char* at, Py_ssize_t n):
        """A piece of body from the read being parsed: a view of the read's bytes when it is
        large (relayed without a copy; the view keeps the read alive until it is written),
        else a copy of it."""
        cdef Py_ssize_t off
        if n < BODY_VIEW_MIN or self.feed is None:
            return PyBytes_FromStringAndSize(at, n)
        if self.feed_view is None:
            self.feed_view = memoryview(self.feed)
        off = at - self.feed_base
        return self.feed_view[off:off + n]

    cdef object parse_error(self, llhttp_errno_t err):
        """The exception for a failed ``execute``: a callback's own, or llhttp's refusal."""
        exc = self.cb_error
        if exc is not None:
            self.cb_error = None
            return exc
        reason = llhttp_get_error_reason(&self.parser)
        text = (<bytes>reason).decode("latin-1") if reason != NULL else ""
        return ParseError(err, (<bytes>llhttp_errno_name(err)).decode("ascii"), text)

    cdef bytes method_name(self):
        return <bytes>llhttp_method_name(<llhttp_method_t>self.parser.method)

    cdef bytes version(self):
        if self.parser.http_major == 1 and self.parser.http_minor == 1:
            return b"1.1"
        if self.parser.http_major == 1 and self.parser.http_minor == 0:
            return b"1.0"
        return b"%d.%d" % (self.parser.http_major, self.parser.http_minor)


# =========================================================================================
# Header rules, applied in one pass over a head's spans
# =========================================================================================
#
# What happens to each header name is the table of backhaul.http.headers (REQUEST_RULES,
# RESPONSE_RULES): it is read here once, into C, at import. The procedure below is the one
# implementation of forwarding a head; `relay_request_head` / `relay_response_head` are its
# Python face (tests, the rare paths).

cdef struct NameRule:
    char name[24]
    Py_ssize_t length
    int request_rule
    int response_rule
    bint always_dropped

cdef NameRule _rules[40]
cdef int _n_rules = 0

cdef int _RULE_PASS = RULE_PASS
cdef int _RULE_DROP = RULE_DROP
cdef int _RULE_XFF = RULE_XFF
cdef int _RULE_FORWARDED = RULE_FORWARDED
cdef int _RULE_VIA = RULE_VIA
cdef int _RULE_REQUEST_ID = RULE_REQUEST_ID
cdef int _RULE_HOST = RULE_HOST
cdef int _RULE_REPLACED = RULE_REPLACED
cdef int _RULE_FRAMING = RULE_FRAMING
cdef int _RULE_SERVER = RULE_SERVER


cdef _load_rules():
    global _n_rules
    cdef NameRule* rule
    names = sorted(set(REQUEST_RULES) | set(RESPONSE_RULES) | set(ALWAYS_DROPPED))
    if len(names) > 40:
        raise RuntimeError("the header rule table outgrew the data plane's C table")
    for name in names:
        if len(name) >= 24:
            raise RuntimeError(f"header name {name!r} is too long for the C table")
        rule = &_rules[_n_rules]
        memcpy(rule.name, <char*>name, len(name))
        rule.length = len(name)
        rule.request_rule = REQUEST_RULES.get(name, RULE_PASS)
        rule.response_rule = RESPONSE_RULES.get(name, RULE_PASS)
        rule.always_dropped = name in ALWAYS_DROPPED
        _n_rules += 1


_load_rules()


cdef inline char _lower(char c) noexcept nogil:
    if c >= 65 and c <= 90:
        return c + 32
    return c


cdef inline bint _same_name(const char* a, const char* lower_b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if _lower(a[i]) != lower_b[i]:
            return False
    return True


cdef inline NameRule* _find_rule(const char* name, Py_ssize_t n) noexcept nogil:
    cdef int i
    for i in range(_n_rules):
        if _rules[i].length == n and _same_name(name, _rules[i].name, n):
            return &_rules[i]
    return NULL


cdef struct OutBuf:
    char* data
    Py_ssize_t length
    Py_ssize_t capacity


cdef int _out_init(OutBuf* out, Py_ssize_t capacity) except -1:
    out.data = <char*>malloc(capacity)
    if out.data == NULL:
        raise MemoryError()
    out.length = 0
    out.capacity = capacity
    return 0


cdef inline int _out_put(OutBuf* out, const char* data, Py_ssize_t n) except -1:
    cdef Py_ssize_t need = out.length + n
    cdef Py_ssize_t cap
    cdef char* grown
    if need > out.capacity:
        cap = out.capacity * 2
        while cap < need:
            cap *= 2
        grown = <char*>realloc(out.data, cap)
        if grown == NULL:
            raise MemoryError()
        out.data = grown
        out.capacity = cap
    memcpy(out.data + out.length, data, n)
    out.length = need
    return 0


cdef inline int _out_bytes(OutBuf* out, bytes data) except -1:
    return _out_put(out, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef inline int _out_line(OutBuf* out, const char* name, Py_ssize_t name_len,
                          const char* value, Py_ssize_t value_len) except -1:
    _out_put(out, name, name_len)
    _out_put(out, ": ", 2)
    _out_put(out, value, value_len)
    return _out_put(out, "\r\n", 2)


cdef inline int _out_field(OutBuf* out, const char* name, bytes value) except -1:
    """A line with a C-string name (no colon) and a bytes value."""
    cdef Py_ssize_t n = 0
    while name[n] != 0:
        n += 1
    return _out_line(out, name, n, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))


cdef inline bytes _out_finish(OutBuf* out):
    cdef bytes result = PyBytes_FromStringAndSize(out.data, out.length)
    free(out.data)
    out.data = NULL
    return result


cdef inline bint _is_ows(char c) noexcept nogil:
    return c == 32 or c == 9


cdef bytes _stripped(const char* value, Py_ssize_t n):
    """The value without surrounding optional whitespace (SP, HTAB)."""
    cdef Py_ssize_t start = 0
    while start < n and _is_ows(value[start]):
        start += 1
    while n > start and _is_ows(value[n - 1]):
        n -= 1
    return PyBytes_FromStringAndSize(value + start, n - start)


cdef bint _named(const char* name, Py_ssize_t n, frozenset named) except -1:
    """Whether Connection (its lower-cased options ``named``) names this field."""
    cdef bytes lowered = PyBytes_FromStringAndSize(name, n)
    return lowered.lower() in named


cdef dict _STATUS_LINES = {
    code: b"HTTP/1.1 %d %s" % (code, reason) for code, reason in REASONS.items()
}


cpdef bytes status_line(int status):
    """``HTTP/1.1 <status> <reason>`` (no CRLF)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b""))
    return line


_NO_TOKENS = frozenset()
_KEEP_ALIVE_TOKENS = frozenset((b"keep-alive",))
_CLOSE_TOKENS = frozenset((b"close",))


cdef bytes _request_head(
    const char* buf, HeaderSpan* spans, Py_ssize_t n,
    bytes method, bytes target, RequestFacts facts,
    str client_ip, str proto, object host_out, object request_id,
    bint x_forwarded, bint forwarded, object via,
):
    cdef OutBuf out
    cdef Py_ssize_t i
    cdef HeaderSpan* span
    cdef NameRule* found
    cdef int rule
    cdef const char* name
    cdef const char* value
    cdef bint host_done = False
    cdef frozenset named = facts.connection_tokens
    cdef list xff = None
    cdef list fwd = None
    cdef list via_in = None
    cdef object rid = None
    cdef bytes host
    if named and named <= ALWAYS_DROPPED:
        named = None
    elif not named:
        named = None
    host = facts.authority if host_out is None else host_out
    _out_init(&out, 256 + (spans[n - 1].value_off + spans[n - 1].value_len if n else 0) + 2 * n)
    try:
        _out_bytes(&out, method)
        _out_put(&out, " ", 1)
        _out_bytes(&out, target)
        _out_put(&out, " HTTP/1.1\r\n", 11)
        for i in range(n):
            span = &spans[i]
            name = buf + span.name_off
            value = buf + span.value_off
            found = _find_rule(name, span.name_len)
            rule = _RULE_PASS if found == NULL else found.request_rule
            if rule == _RULE_PASS:
                if named is None or not _named(name, span.name_len, named):
                    _out_line(&out, name, span.name_len, value, span.value_len)
                continue
            if rule == _RULE_DROP:
                continue
            if rule == _RULE_HOST:  # never dropped, even when Connection names it
                if not host_done:
                    _out_line(&out, name, span.name_len, PyBytes_AS_STRING(host),
                              PyBytes_GET_SIZE(host))
                    host_done = True
                continue
            if named is not None and _named(name, span.name_len, named):
                continue  # the client's copy is hop-by-hop; the edge's is still added
            if rule == _RULE_XFF:
                if xff is None:
                    xff = []
                xff.append(_stripped(value, span.value_len))
            elif rule == _RULE_FORWARDED:
                if fwd is None:
                    fwd = []
                fwd.append(_stripped(value, span.value_len))
            elif rule == _RULE_VIA:
                if via_in is None:
                    via_in = []
                via_in.append(_stripped(value, span.value_len))
            elif rule == _RULE_REQUEST_ID:
                if rid is None:
                    rid = _stripped(value, span.value_len)
                    _out_line(&out, name, span.name_len, value, span.value_len)
            elif not x_forwarded:  # replaced, and the edge does not set X-Forwarded-*
                _out_line(&out, name, span.name_len, value, span.value_len)
        if not host_done:
            _out_field(&out, "Host", host)
        if rid is None and request_id is not None:
            _out_field(&out, "X-Request-Id", request_id)
        ip = client_ip.encode("ascii")
        authority = facts.authority
        if x_forwarded:
            if xff is not None:
                xff.append(ip)
                _out_field(&out, "X-Forwarded-For", b", ".join(xff))
            else:
                _out_field(&out, "X-Forwarded-For", ip)
            _out_field(&out, "X-Forwarded-Proto", proto.encode("ascii"))
            if authority:
                _out_field(&out, "X-Forwarded-Host", authority)
        elif xff is not None:
            _out_field(&out, "X-Forwarded-For", b", ".join(xff))
        if forwarded:
            node = b'"[' + ip + b']"' if b":" in ip else ip
            element = b"for=" + node
            if authority:
                element += b";host=" + forwarded_value(authority)
            element += b";proto=" + proto.encode("ascii")
            if fwd is not None:
                fwd.append(element)
                _out_field(&out, "Forwarded", b", ".join(fwd))
            else:
                _out_field(&out, "Forwarded", element)
        elif fwd is not None:
            _out_field(&out, "Forwarded", b", ".join(fwd))
        if via is not None:
            mine = _own_via(via, facts.version)
            if via_in is not None:
                via_in.append(mine)
                _out_field(&out, "Via", b", ".join(via_in))
            else:
                _out_field(&out, "Via", mine)
        elif via_in is not None:
            _out_field(&out, "Via", b", ".join(via_in))
        if facts.chunked:
            _out_put(&out, "Transfer-Encoding: chunked\r\n", 28)
        elif facts.content_length is not None:
            _out_field(&out, "Content-Length", b"%d" % facts.content_length)
        _out_put(&out, "\r\n", 2)
        return _out_finish(&out)
    finally:
        if out.data != NULL:
            free(out.data)


cdef class ResponseRelay:
    """How an upstream response head crosses the edge."""

    cdef readonly bytes head  # the encoded head for the client, framing included
    cdef readonly bint chunked_out  # the body is sent chunked to the client
    cdef readonly bint keep_alive  # the client connection stays open after this response
    cdef readonly ResponseFacts facts  # None for a 1xx head

    def __iter__(self):
        return iter((self.head, self.facts, self.chunked_out, self.keep_alive))


cdef bint _common_response_facts(
    const char* buf, HeaderSpan* spans, int* framing, Py_ssize_t n_framing,
    int status, int major, int minor, bytes request_method, ResponseRelay relay,
) except -1:
    """The facts of the most common response head without the general checks: HTTP/1.1,
    a final status with a body, one plain Content-Length and at most a plain Connection
    (keep-alive or close), written into ``relay``. False for anything else (then
    ``inspect_response_head`` decides, and it decides the same for these heads:
    tests/unit/test_http_relay.py)."""
    cdef Py_ssize_t i, j
    cdef HeaderSpan* span
    cdef const char* value
    cdef long long cl = -1
    cdef int tokens = 0  # 1 keep-alive, 2 close
    if major != 1 or minor != 1 or status < 200 or status >= 300 or status == 204:
        return False
    if request_method == b"HEAD" or n_framing < 1 or n_framing > 2:
        return False
    for i in range(n_framing):
        span = &spans[framing[i]]
        value = buf + span.value_off
        if span.name_len == 14:  # Content-Length (the only 14-letter framing name)
            if cl >= 0 or span.value_len == 0 or span.value_len > 18:
                return False
            cl = 0
            for j in range(span.value_len):
                if value[j] < 48 or value[j] > 57:
                    return False
                cl = cl * 10 + (value[j] - 48)
        elif span.name_len == 10:  # Connection
            if tokens:
                return False
            if span.value_len == 10 and (value[0] == 107 or value[0] == 75) and \
                    memcmp(value + 1, b"eep-alive", 9) == 0:
                tokens = 1
            elif span.value_len == 5 and (value[0] == 99 or value[0] == 67) and \
                    memcmp(value + 1, b"lose", 4) == 0:
                tokens = 2
            else:
                return False
        else:
            return False
    if cl < 0:
        return False
    # Made without a type call (ResponseFacts is a C type): its fields are set here.
    cdef ResponseFacts facts = ResponseFacts.__new__(ResponseFacts)
    facts.status = status
    facts.content_length = cl
    facts.chunked = False
    facts.keep_alive = tokens != 2
    facts.no_body = False
    facts.until_close = False
    facts.connection_tokens = (
        _NO_TOKENS if tokens == 0 else (_KEEP_ALIVE_TOKENS if tokens == 1 else _CLOSE_TOKENS)
    )
    facts.version = b"1.1"
    relay.facts = facts
    return True


cdef object _via_given = None
cdef bytes _via_version = None
cdef bytes _via_made = None


cdef bytes _own_via(bytes via, bytes version):
    """The edge's Via element for a message of ``version`` (made once per worker and
    version: ``via`` does not change while a worker runs)."""
    global _via_given, _via_version, _via_made
    if via is not _via_given or version != _via_version:
        _via_made = via_element(via, version)
        _via_given = via
        _via_version = version
    return _via_made


cdef ResponseRelay _response_head(
    const char* buf, HeaderSpan* spans, Py_ssize_t n,
    int status, int major, int minor, bytes request_method,
    object via, object server, bytes client_version, bint keep_alive, bint interim,
):
    """Validate an upstream response head and encode it for the client (see
    :func:`relay_response_head`). ``interim``: a 1xx head, relayed without framing or
    inspection (its Connection options are read here)."""
    cdef OutBuf out
    cdef Py_ssize_t i
    cdef HeaderSpan* span
    cdef NameRule* found
    cdef int rule
    cdef const char* name
    cdef const char* value
    cdef int stack_rules[64]
    cdef int stack_framing[64]
    cdef int* rules = stack_rules
    cdef int* framing = stack_framing
    cdef Py_ssize_t n_framing = 0
    cdef list via_in = None
    cdef frozenset named
    cdef bint chunked_out = False
    cdef bint client_11 = client_version == b"1.1"
    cdef ResponseRelay relay = ResponseRelay.__new__(ResponseRelay)
    if n > 64:
        rules = <int*>malloc(n * sizeof(int))
        framing = <int*>malloc(n * sizeof(int))
        if rules == NULL or framing == NULL:
            free(rules)
            free(framing)
            raise MemoryError()
    out.data = NULL
    try:
        for i in range(n):
            span = &spans[i]
            found = _find_rule(buf + span.name_off, span.name_len)
            rule = _RULE_PASS if found == NULL else found.response_rule
            if rule == _RULE_SERVER and server is not None:
                rule = _RULE_DROP
            elif rule == _RULE_SERVER:
                rule = _RULE_PASS
            rules[i] = rule
            if rule == _RULE_FRAMING:
                framing[n_framing] = i
                n_framing += 1
            elif rule == _RULE_VIA:
                if via_in is None:
                    via_in = []
                via_in.append(_stripped(buf + span.value_off, span.value_len))
        if interim:
            named = connection_options(_pairs(buf, spans, n))
            version = b"1.1"
        else:
            if not _common_response_facts(
                buf, spans, framing, n_framing, status, major, minor, request_method, relay
            ):
                relay.facts = inspect_response_head(
                    status,
                    b"%d.%d" % (major, minor),
                    [_pair(buf, &spans[framing[i]]) for i in range(n_framing)],
                    request_method,
                    values_checked=True,
                )
            named = relay.facts.connection_tokens
            version = relay.facts.version
        if named and named <= ALWAYS_DROPPED:
            named = None
        elif not named:
            named = None
        if named is not None and via_in is not None and b"via" in named:
            via_in = None
        _out_init(&out, 256 + (spans[n - 1].value_off + spans[n - 1].value_len if n else 0) + 2 * n)
        _out_bytes(&out, status_line(status))
        _out_put(&out, "\r\n", 2)
        for i in range(n):
            if rules[i] != _RULE_PASS:
                continue
            span = &spans[i]
            name = buf + span.name_off
            if named is not None and _named(name, span.name_len, named):
                continue
            _out_line(&out, name, span.name_len, buf + span.value_off, span.value_len)
        if server is not None:
            _out_field(&out, "Server", server)
        if via is not None:
            mine = _own_via(via, version)
            if via_in is not None:
                via_in.append(mine)
                _out_field(&out, "Via", b", ".join(via_in))
            else:
                _out_field(&out, "Via", mine)
        elif via_in is not None:
            _out_field(&out, "Via", b", ".join(via_in))
        if not interim:
            if relay.facts.content_length is not None:
                _out_put(&out, "Content-Length: ", 16)
                _out_int(&out, relay.facts.content_length)
                _out_put(&out, "\r\n", 2)
            elif relay.facts.no_body:
                pass
            elif client_11:
                chunked_out = True
                _out_put(&out, "Transfer-Encoding: chunked\r\n", 28)
            else:
                keep_alive = False
            if not keep_alive:
                _out_put(&out, "Connection: close\r\n", 19)
            elif not client_11:
                _out_put(&out, "Connection: keep-alive\r\n", 24)
        _out_put(&out, "\r\n", 2)
        relay.head = _out_finish(&out)
        relay.chunked_out = chunked_out
        relay.keep_alive = keep_alive
        return relay
    finally:
        if out.data != NULL:
            free(out.data)
        if rules != stack_rules:
            free(rules)
            free(framing)


cdef inline tuple _pair(const char* buf, HeaderSpan* span):
    return (
        PyBytes_FromStringAndSize(buf + span.name_off, span.name_len),
        PyBytes_FromStringAndSize(buf + span.value_off, span.value_len),
    )


cdef list _pairs(const char* buf, HeaderSpan* spans, Py_ssize_t n):
    return [_pair(buf, &spans[i]) for i in range(n)]


cdef class _SpannedHead:
    """A list of (name, value) pairs laid out as a buffer and spans (the Python face)."""

    cdef bytes data
    cdef HeaderSpan* spans
    cdef Py_ssize_t n

    def __cinit__(self, list headers):
        cdef Py_ssize_t i, offset = 0
        self.n = len(headers)
        self.data = b"".join([name + value for name, value in headers])
        self.spans = <HeaderSpan*>malloc((self.n + 1) * sizeof(HeaderSpan))
        if self.spans == NULL:
            raise MemoryError()
        for i in range(self.n):
            name, value = headers[i]
            self.spans[i].name_off = offset
            self.spans[i].name_len = len(name)
            offset += len(name)
            self.spans[i].value_off = offset
            self.spans[i].value_len = len(value)
            offset += len(value)

    def __dealloc__(self):
        if self.spans != NULL:
            free(self.spans)


def relay_request_head(
    bytes method,
    bytes target,
    list headers,
    facts,
    *,
    str client_ip,
    str proto,
    host_out,
    request_id,
    bint x_forwarded,
    bint forwarded,
    via,
):
    """The encoded request head for the upstream, framing included.

    Drops hop-by-hop headers, those named in Connection, and Content-Length; writes one Host
    line with ``host_out`` when given, else ``facts.authority`` (so an absolute-form target's
    authority replaces the Host line, RFC 9112 3.2.2); keeps an incoming X-Request-Id, else
    adds ``request_id``; when ``x_forwarded``, appends ``client_ip`` to X-Forwarded-For and
    sets X-Forwarded-Proto/-Host; when ``forwarded``, appends an RFC 7239 element; when
    ``via`` is given (``b"backhaul"`` or a full ``b"1.1 backhaul"``), appends it to Via;
    then ``Transfer-Encoding: chunked`` or ``Content-Length`` from ``facts``.
    ``headers`` must have passed :func:`~backhaul.http.head.inspect_request_head`.
    """
    cdef _SpannedHead head = _SpannedHead(headers)
    return _request_head(
        PyBytes_AS_STRING(head.data), head.spans, head.n, method, target, facts,
        client_ip, proto, host_out, request_id, x_forwarded, forwarded, via,
    )


def relay_response_head(
    int status,
    version,
    list headers,
    bytes request_method,
    *,
    via,
    server,
    client_version,
    bint keep_alive,
):
    """Validate an upstream response head and encode it for the client.

    Drops hop-by-hop headers and those named in Connection; ``server``: None keeps the
    upstream's Server header (Envoy's pass-through), a value replaces it; ``via`` is
    appended to Via. Framing: the upstream's Content-Length is kept (also for HEAD and
    304); a chunked or read-until-close body goes chunked to an HTTP/1.1 client, or
    close-delimited to an HTTP/1.0 one. ``keep_alive`` is whether the client connection may
    stay open (the client's wish and the edge's state); the result says whether it will.
    Raises RemoteProtocolError (502) for framing the edge cannot relay.
    """
    cdef _SpannedHead head = _SpannedHead(headers)
    if isinstance(version, str):
        version = version.encode("ascii")
    major, _, minor = version.partition(b".")
    return _response_head(
        PyBytes_AS_STRING(head.data), head.spans, head.n, status, int(major),
        int(minor or 0), request_method, via, server, client_version, keep_alive, False,
    )


def relay_interim_head(int status, list headers, *, via=None):
    """The encoded 1xx head for the client: hop-by-hop and framing dropped (Connection's
    options are read from ``headers``, which were not inspected)."""
    cdef _SpannedHead head = _SpannedHead(headers)
    return _response_head(
        PyBytes_AS_STRING(head.data), head.spans, head.n, status, 1, 1, b"GET",
        via, None, b"1.1", True, True,
    ).head


# =========================================================================================
# The access-log line (JSON), formatted in C into the log's batch
# =========================================================================================

cdef long long _stamp_second = -1
cdef char _stamp_prefix[24]  # "YYYY-MM-DDTHH:MM:SS"


cdef int _out_int(OutBuf* out, long long value) except -1:
    cdef char digits[24]
    cdef int i = 24
    cdef bint negative = value < 0
    if negative:
        value = -value
    if value == 0:
        i -= 1
        digits[i] = 48
    while value > 0:
        i -= 1
        digits[i] = <char>(48 + value % 10)
        value //= 10
    if negative:
        i -= 1
        digits[i] = 45
    return _out_put(out, digits + i, 24 - i)


cdef int _out_seconds(OutBuf* out, double seconds) except -1:
    """``seconds`` with six decimals (microseconds), as the log's durations are written."""
    cdef long long micros = <long long>(seconds * 1e6 + 0.5)
    cdef char frac[6]
    cdef int i
    if seconds < 0:
        micros = 0
    _out_int(out, micros // 1000000)
    micros %= 1000000
    for i in range(5, -1, -1):
        frac[i] = <char>(48 + micros % 10)
        micros //= 10
    _out_put(out, ".", 1)
    return _out_put(out, frac, 6)


cdef int _out_json_text(OutBuf* out, const char* text, Py_ssize_t n) except -1:
    """JSON string content (no quotes): quote, backslash, control and non-ASCII bytes
    escaped (bytes as Latin-1 code points, as the log has always written them)."""
    cdef Py_ssize_t i, start = 0
    cdef unsigned char c
    cdef char esc[6]
    for i in range(n):
        c = <unsigned char>text[i]
        if c >= 0x20 and c < 0x7F and c != 34 and c != 92:
            continue
        _out_put(out, text + start, i - start)
        start = i + 1
        if c == 34:
            _out_put(out, "\\\"", 2)
        elif c == 92:
            _out_put(out, "\\\\", 2)
        else:
            esc[0] = 92
            esc[1] = 117
            esc[2] = 48
            esc[3] = 48
            esc[4] = b"0123456789abcdef"[c >> 4]
            esc[5] = b"0123456789abcdef"[c & 15]
            _out_put(out, esc, 6)
    return _out_put(out, text + start, n - start)


cdef int _out_str(OutBuf* out, str text) except -1:
    cdef Py_ssize_t n
    cdef const char* data = PyUnicode_AsUTF8AndSize(text, &n)
    return _out_put(out, data, n)


cdef int _out_stamp(OutBuf* out) except -1:
    """The wall-clock time as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    global _stamp_second
    cdef timespec ts
    cdef char milli[5]
    cdef long ms
    clock_gettime(CLOCK_REALTIME, &ts)
    if ts.tv_sec != _stamp_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts.tv_sec)).encode("ascii")
        memcpy(_stamp_prefix, <char*>prefix, 19)
        _stamp_second = ts.tv_sec
    _out_put(out, _stamp_prefix, 19)
    ms = ts.tv_nsec // 1000000
    milli[0] = 46
    milli[1] = <char>(48 + ms // 100)
    milli[2] = <char>(48 + (ms // 10) % 10)
    milli[3] = <char>(48 + ms % 10)
    milli[4] = 90
    return _out_put(out, milli, 5)


cdef int _json_line(
    bytearray batch, bytes request_id, str client, bytes method,
    const char* target, Py_ssize_t target_len, const char* query, Py_ssize_t query_len,
    long long status, long long bytes_in, long long bytes_out,
    str route_json, str upstream_json, object upstream_time, double duration,
) except -1:
    """Append one JSON access-log line to ``batch`` (the one formatter of the JSON log).
    ``route_json``/``upstream_json`` are JSON values already (None: null)."""
    cdef OutBuf out
    cdef Py_ssize_t old
    _out_init(&out, 512)
    try:
        _out_put(&out, "{\"time\":\"", 9)
        _out_stamp(&out)
        _out_put(&out, "\",\"request_id\":\"", 16)
        if request_id is not None:
            _out_json_text(&out, PyBytes_AS_STRING(request_id), PyBytes_GET_SIZE(request_id))
        _out_put(&out, "\",\"client\":\"", 12)
        _out_str(&out, client)
        _out_put(&out, "\",\"method\":\"", 12)
        _out_json_text(&out, PyBytes_AS_STRING(method), PyBytes_GET_SIZE(method))
        _out_put(&out, "\",\"target\":\"", 12)
        _out_json_text(&out, target, target_len)
        if query_len:
            _out_put(&out, "?", 1)
            _out_json_text(&out, query, query_len)
        _out_put(&out, "\",\"status\":", 11)
        _out_int(&out, status)
        _out_put(&out, ",\"bytes_in\":", 12)
        _out_int(&out, bytes_in)
        _out_put(&out, ",\"bytes_out\":", 13)
        _out_int(&out, bytes_out)
        _out_put(&out, ",\"route\":", 9)
        if route_json is None:
            _out_put(&out, "null", 4)
        else:
            _out_str(&out, route_json)
        _out_put(&out, ",\"upstream\":", 12)
        if upstream_json is None:
            _out_put(&out, "null", 4)
        else:
            _out_str(&out, upstream_json)
        _out_put(&out, ",\"upstream_time\":", 17)
        if upstream_time is None:
            _out_put(&out, "null", 4)
        else:
            _out_seconds(&out, upstream_time)
        _out_put(&out, ",\"duration\":", 12)
        _out_seconds(&out, duration)
        _out_put(&out, "}\n", 2)
        old = PyByteArray_GET_SIZE(batch)
        PyByteArray_Resize(batch, old + out.length)
        memcpy(PyByteArray_AS_STRING(batch) + old, out.data, out.length)
    finally:
        free(out.data)
    return 0


cdef int _log_json_line(bytearray batch, Exchange ex, double now) except -1:
    """Append the JSON access-log line of ``ex`` to ``batch``."""
    cdef Py_ssize_t path_len, query_len = 0
    cdef const char* path
    cdef const char* query = NULL
    path = PyUnicode_AsUTF8AndSize(ex.path, &path_len)
    if ex.query:
        query = PyUnicode_AsUTF8AndSize(ex.query, &query_len)
    cdef CompiledRoute route = ex.route
    endpoint = ex.endpoint
    return _json_line(
        batch, ex.request_id, ex.conn.client_ip, ex.method, path, path_len, query, query_len,
        ex.status, ex.bytes_in, ex.bytes_out,
        None if route is None else route.log_name,
        None if endpoint is None else endpoint.log_name,
        ex.upstream_time, now - ex.start_time,
    )


def append_refusal_line(
    bytearray batch, bytes request_id, str client, bytes target, int status, long long bytes_out
):
    """Append the JSON line of a request refused before it became an exchange (no method,
    route or upstream; ``target`` as received, at most 512 bytes)."""
    target = target[:512]
    _json_line(
        batch, request_id, client, b"-", PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target),
        NULL, 0, status, 0, bytes_out, None, None, None, 0.0,
    )


cdef int _log_exchange(Exchange ex) except -1:
    """Count the exchange in the metrics and write its access-log line."""
    cdef double now = ex.worker.stamp
    cdef WorkerContext worker = ex.worker
    worker.stats.exchanges += 1
    cdef CompiledRoute route = ex.route
    ut = ex.upstream_time
    worker.recorder.record_c(
        route.metrics_key if route is not None else ex.conn.listener.metrics_none,
        ex.status,
        now - ex.start_time,
        0.0 if ut is None else <double>ut,
        ut is not None,
        ex.bytes_in,
        ex.bytes_out,
    )
    cdef AccessLog log = worker.access_log
    if log is not None:
        if log.json:
            _log_json_line(log.batch, ex, now)
            log.lines += 1
            if PyByteArray_GET_SIZE(log.batch) > log.max_batch_bytes:
                log.flush()
        else:
            log.exchange(ex, now)
    return 0


# =========================================================================================
# The worker, as the data plane sees it
# =========================================================================================

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _imf_fixdate(seconds):
    """``Sun, 06 Nov 1994 08:49:37 GMT`` (RFC 9110 5.6.7), in English whatever the locale."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {MONTH_NAMES[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    ).encode("ascii")


cdef class WorkerStats:
    """The worker's plain integer counters, read when scraped."""

    cdef public long long exchanges
    cdef public long long errors
    cdef public long long rejected


cdef class WorkerContext:
    """What the data plane reads from its worker on every request, typed: the loop's clock,
    draining, the edge's own headers, the access log, the metrics recorder, request ids and
    counters. The rare paths (internal errors, refusal log lines) go to ``owner``, the
    worker itself."""

    cdef public object owner
    cdef public object loop
    # The clock, read once per event (a read, a connection opened or lost, a deadline, a
    # timer) at the data plane's entry points: every deadline and duration of that event
    # uses it, as nginx's cached time does, so an event costs one clock read, not ten.
    cdef public double stamp
    cdef public bint draining
    cdef public object via  # bytes or None
    cdef public object server_header  # bytes or None
    cdef public AccessLog access_log
    cdef public WorkerStats stats
    cdef public set connections
    cdef Recorder recorder
    cdef bytes id_prefix
    cdef unsigned long long id_counter
    cdef long long date_second
    cdef bytes date  # IMF-fixdate of date_second (RFC 9110 5.6.7)
    cdef long long error_second
    cdef int error_lines
    cdef long long errors_left_out

    def __init__(self, owner, loop, via, server_header, access_log, stats, recorder, bytes id_prefix):
        self.owner = owner
        self.loop = loop
        self.draining = False
        self.via = via
        self.server_header = server_header
        self.access_log = access_log
        self.stats = stats
        self.connections = set()
        self.recorder = recorder
        self.id_prefix = id_prefix
        self.id_counter = 0
        self.date_second = -1
        self.date = b""
        self.stamp = _mono()

    cdef inline double now(self) noexcept:
        """The time of the event being handled (see ``stamp``)."""
        return self.stamp

    cdef inline double refresh(self) noexcept:
        self.stamp = _mono()
        return self.stamp

    def clock(self):
        """Read the clock (CLOCK_MONOTONIC seconds) into ``stamp`` and return it."""
        return self.refresh()

    cpdef bytes http_date(self):
        """The Date of responses the edge makes itself (RFC 9110 6.6.1), formatted once a
        second."""
        cdef timespec ts
        clock_gettime(CLOCK_REALTIME, &ts)
        if ts.tv_sec != self.date_second:
            self.date = _imf_fixdate(ts.tv_sec)
            self.date_second = ts.tv_sec
        return self.date

    cpdef bytes next_request_id(self):
        """A request id unique to this worker: its random prefix and a counter, in hex."""
        cdef char buf[64]
        cdef Py_ssize_t n = len(self.id_prefix)
        cdef unsigned long long value
        cdef int i
        self.id_counter += 1
        value = self.id_counter
        memcpy(buf, PyBytes_AS_STRING(self.id_prefix), n)
        for i in range(9, -1, -1):
            buf[n + i] = b"0123456789abcdef"[value & 15]
            value >>= 4
        return PyBytes_FromStringAndSize(buf, n + 10)

    cdef void log_upstream_error(self, str detail):
        """One line in the edge's log per failed try that was answered with an error, at
        most ``UPSTREAM_ERROR_LINES`` a second (then a count of those left out)."""
        cdef long long second = <long long>self.stamp
        if second != self.error_second:
            if self.errors_left_out:
                print(
                    f"backhaul: worker {os.getpid()}: {self.errors_left_out} more upstream "
                    "errors in the last second (not logged one by one)",
                    file=sys.stderr,
                    flush=True,
                )
            self.error_second = second
            self.error_lines = 0
            self.errors_left_out = 0
        if self.error_lines < UPSTREAM_ERROR_LINES:
            self.error_lines += 1
            print(f"backhaul: worker {os.getpid()}: {detail}", file=sys.stderr, flush=True)
        else:
            self.errors_left_out += 1

    def report_bug(self, exc):
        self.owner.report_bug(exc)

    def access_log_reject(self, conn, status, nbytes, url):
        self.owner.access_log_reject(conn, status, nbytes, url)


# =========================================================================================
# Flow control
# =========================================================================================

cdef class FlowControl:
    """Backpressure of one downstream connection and the upstream serving it.

    Reading from the client is paused for a set of reasons (a pipelined request waits its
    turn; the upstream is not connected or cannot take more) and resumes when none is left.
    Whether the client can take more bytes is one flag; while it cannot, the upstream
    transport stops being read.
    """

    cdef object transport
    cdef public int reasons
    cdef public bint write_paused
    cdef public bint closing

    def __init__(self, transport):
        self.transport = transport
        self.reasons = 0
        self.write_paused = False
        self.closing = False

    cdef inline void pause(self, int reason):
        if not self.reasons and self.transport is not None:
            self.transport.pause_reading()
        self.reasons |= reason

    cdef inline void resume(self, int reason):
        if self.reasons & reason:
            self.reasons &= ~reason
            if not self.reasons and self.transport is not None and not self.closing:
                self.transport.resume_reading()


# =========================================================================================
# Downstream
# =========================================================================================

def _parse_failure(exc, bytes data):
    """Status and detail for a request llhttp refused, in words an operator can act on."""
    reason = str(exc) or type(exc).__name__
    if data[:2] == b"\x16\x03":
        return 400, "this listener speaks plain HTTP; the client sent a TLS handshake (use http://)"
    if data.startswith(b"PRI * HTTP/2.0") or "PRI" in reason:
        return 505, "HTTP/2 with prior knowledge is not served on this listener; use HTTP/1.1"
    if "HTTP version" in reason:
        return 505, "the request's HTTP version is not served here; use HTTP/1.1 or HTTP/1.0"
    if "whitespace after header value" in reason:
        return 400, "header line folding (obs-fold) is not allowed (RFC 9112 5.2)"
    if "CRLF" in reason or "LF" in reason:
        return 400, f"lines must end with CRLF (RFC 9112 2.2): {reason}"
    return 400, f"the request is not valid HTTP/1.1: {reason}"


# -- the request target's shortcut ----------------------------------------------------------
cdef bint _plain_target_byte[256]
for _c in PLAIN_TARGET_BYTES:
    _plain_target_byte[_c] = True


cdef bint _plain_origin_form(const char* url, Py_ssize_t n) noexcept nogil:
    """Whether ``url`` is an origin-form target that is already normal (see
    ``backhaul.http.target.PLAIN_TARGET_BYTES``): then its path and query are its own bytes
    and ``parse_target`` would return them unchanged."""
    cdef Py_ssize_t i
    cdef unsigned char c
    cdef unsigned char prev = 0
    if n == 0 or url[0] != b"/":
        return False
    for i in range(n):
        c = <unsigned char>url[i]
        if not _plain_target_byte[c]:
            return False
        if prev == b"/" and (c == b"/" or c == b"."):
            return False
        prev = c
    return True


cdef Py_ssize_t _query_at(const char* url, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if url[i] == b"?":
            return i
    return n


cdef inline str _ascii(const char* at, Py_ssize_t n):
    return PyUnicode_DecodeASCII(at, n, NULL)


def plain_origin_target(bytes url):
    """``(path, query)`` when the data plane takes its shortcut for ``url`` (the same
    steps as ``HttpConnection.headers_complete``), else None: for tests, which hold it
    equal to ``parse_target``."""
    cdef const char* data = PyBytes_AS_STRING(url)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(url)
    cdef Py_ssize_t q
    if not _plain_origin_form(data, n):
        return None
    q = _query_at(data, n)
    return (_ascii(data, q), _ascii(data + q + 1, n - q - 1) if q < n else "")


# The protocol of a transport whose connection was parked: its end is nobody's business.
_DETACHED = asyncio.Protocol()


cdef class ListenerSettings:
    """What the data plane reads from a listener on every request, as struct members: its
    limits, timeouts, forwarding switches, route table and TLS. The worker's
    ``ListenerRuntime`` is this plus what only the worker uses."""

    cdef public str name
    cdef public RouteTable routes
    cdef public str scheme
    cdef public Py_ssize_t max_request_line
    cdef public Py_ssize_t max_header_bytes
    cdef public Py_ssize_t max_header_count
    cdef public bint show_endpoints
    cdef public double headers_timeout
    cdef public double body_idle_timeout
    cdef public double keepalive_timeout
    cdef public double drain_timeout
    cdef public bint x_forwarded
    cdef public bint forwarded
    cdef public bint request_id
    cdef public object metrics_none  # its metrics series for requests no route took
    cdef public object tls  # TLS hook: the listener's edge.tls.ServerTls when it is HTTPS


cdef class HttpConnection(Http1Peer):
    """One downstream (client) connection speaking HTTP/1.1."""

    cdef public WorkerContext worker
    cdef public ListenerSettings listener
    cdef public object transport
    cdef public FlowControl flow
    cdef public str client_ip
    cdef public bytes url
    cdef public object request_id_in
    cdef public Exchange rx  # the exchange whose request is being received
    cdef public Exchange tx  # the exchange whose response is being sent
    cdef public list pending
    cdef public double deadline
    cdef public int deadline_kind
    cdef public bint hibernating
    cdef Py_ssize_t feed_chunks
    cdef bint feed_clean
    cdef list wbuf
    cdef list up_dirty
    cdef bint release_buffers  # a message ended in this read: free the head buffers after it
    cdef object refusal  # (status, detail, url): sent once earlier answers are done

    def __init__(self, worker, listener):
        self.worker = worker
        self.listener = listener
        self.transport = None
        self.flow = FlowControl(None)
        self.client_ip = ""
        self.url = b""
        self.request_id_in = None
        self.rx = None
        self.tx = None
        self.pending = None  # pipelined exchanges waiting their turn (made when needed)
        self.deadline = 0.0
        self.deadline_kind = DL_NONE
        self.hibernating = False
        self.wbuf = None
        self.up_dirty = None
        self.refusal = None
        self.init_parser(
            HTTP_REQUEST,
            listener.max_request_line,
            listener.max_header_bytes,
            listener.max_header_count,
        )

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.flow.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        worker = self.worker
        worker.connections.add(self)
        self.deadline = worker.refresh() + self.listener.headers_timeout
        self.deadline_kind = DL_HEADERS
        if worker.draining:
            self.flow.closing = True

    @property
    def closing(self):
        return self.flow.closing

    def data_received(self, bytes data):
        cdef Exchange rx_before
        cdef Exchange rx
        cdef llhttp_errno_t err
        cdef bint owner
        cdef Py_ssize_t consumed
        cdef const char* pos
        if self.refusal is not None:
            return  # a bad request was read: nothing after it is
        self.worker.refresh()
        if self.deadline_kind == DL_IDLE:
            self.deadline = self.worker.now() + self.listener.headers_timeout
            self.deadline_kind = DL_HEADERS
        self.ensure_buffers()
        self.hibernating = False
        owner = self.wbuf is None
        if owner:
            self.wbuf = []
        self.up_dirty = []
        rx_before = self.rx
        self.feed_chunks = 0
        self.feed_explained = 0
        self.feed_clean = rx_before is None and not self.in_head
        rest = None
        try:
            err = self.execute(data)
            if err == HPE_OK:
                rx = self.rx
                if self.feed_chunks or (rx is not None and rx.facts.chunked):
                    self.check_chunk_overhead(rx, rx_before, data)
            elif err == HPE_PAUSED_UPGRADE:
                # A request asked to upgrade; the edge does not switch protocols on this
                # path, so the request was handled as plain HTTP (it has no body: see
                # headers_complete). What follows it is the next request, from a fresh
                # parser state.
                pos = llhttp_get_error_pos(&self.parser)
                consumed = pos - <const char*>data
                rest = data[consumed:]
                self.reset_parser()
            else:
                self.refuse(self.parse_error(err), data)
        except RemoteProtocolError as exc:
            self.reject(exc.status_hint, exc.detail)
        finally:
            if self.release_buffers and not self.in_head:
                self.release_buffers = False
                self.free_buffers()
            dirty = self.up_dirty
            self.up_dirty = None
            if dirty:
                for upstream in dirty:
                    (<UpstreamConnection>upstream).flush()
            if owner:
                self.flush()
        if rest and not self.flow.closing:
            self.data_received(rest)

    cdef refuse(self, exc, bytes data):
        """Answer a request that could not be parsed (after the complete ones before it)."""
        cdef int status
        cdef str detail
        if isinstance(exc, RemoteProtocolError):
            status, detail = exc.status_hint, exc.detail
        elif isinstance(exc, ParseError):
            code = exc.code
            if code == HPE_INVALID_METHOD and data[:2] != b"\x16\x03":
                status = 400
                detail = (
                    "the request line does not start with a known method in capitals "
                    "(RFC 9110 9.1, RFC 9112 3)"
                )
            elif code == HPE_INVALID_URL:
                status, detail = 400, "the request-target is not valid (RFC 9112 §3.2)"
            else:
                status, detail = _parse_failure(exc, data)
        else:
            self.worker.report_bug(exc)
            status, detail = 500, "the edge failed on this request; its log has the details"
        self.reject(status, detail, True)

    def eof_received(self):
        # The client half-closed. Finish answering what it asked, then close.
        if self.tx is None and self.rx is None:
            return None  # close now
        self.flow.closing = True
        return True

    def connection_lost(self, exc):
        self.worker.refresh()
        self.worker.connections.discard(self)
        self.flow.closing = True
        tx = self.tx
        self.tx = None
        if tx is not None:
            tx.downstream_lost()
        if self.pending is not None:
            for ex in self.pending:
                (<Exchange>ex).downstream_lost()
            self.pending = None
        self.transport = None
        self.flow.transport = None
        self.free_buffers()

    def pause_writing(self):
        self.flow.write_paused = True
        if self.tx is not None:
            self.tx.downstream_pause_writing()

    def resume_writing(self):
        self.worker.refresh()
        self.flow.write_paused = False
        if self.tx is not None:
            self.tx.downstream_resume_writing()

    # -- llhttp events -----------------------------------------------------------------
    cdef int message_begin(self) except -1:
        Http1Peer.message_begin(self)
        self.url = b""
        self.request_id_in = None
        if self.deadline_kind != DL_HEADERS:
            self.deadline = self.worker.now() + self.listener.headers_timeout
            self.deadline_kind = DL_HEADERS
        return 0

    cdef int headers_complete(self) except -1:
        cdef Exchange ex
        cdef ListenerSettings listener
        cdef bytes method = self.method_name()
        cdef bytes url = PyBytes_FromStringAndSize(self.hbuf, self.url_len)
        cdef list headers = self.header_list()
        self.in_head = False
        self.url = url
        self.feed_explained += len(method) + self.url_len + self.header_bytes + 14
        if method == b"CONNECT":
            raise RemoteProtocolError(
                "this listener is a gateway, not a forward proxy: it opens no CONNECT tunnels",
                501,
                rfc="RFC 9110 9.3.6",
            )
        for name, value in headers:
            if len(name) == 12 and name.lower() == b"x-request-id":
                self.request_id_in = value.strip()
        cdef str path
        cdef str query = ""
        cdef Py_ssize_t q
        cdef CompiledRoute route
        cdef RequestFacts facts
        authority = None
        if _plain_origin_form(self.hbuf, self.url_len):
            q = _query_at(self.hbuf, self.url_len)
            path = _ascii(self.hbuf, q)
            if q < self.url_len:
                query = _ascii(self.hbuf + q + 1, self.url_len - q - 1)
        else:
            path, query, authority = parse_target(method, url)
        facts = inspect_request_head(self.version(), headers, authority, values_checked=True)
        if (facts.content_length or facts.chunked) and self.parser.upgrade:
            # llhttp stops parsing at the head of an Upgrade request (the rest would be the
            # new protocol), so its body could not be framed: refuse rather than read the
            # body as the next request (RFC 9110 7.8 lets a server ignore Upgrade, not the
            # framing).
            raise RemoteProtocolError(
                "this listener does not switch protocols, and an Upgrade request with a body "
                "cannot be relayed as plain HTTP/1.1; send it without Upgrade",
                400,
                rfc="RFC 9110 7.8",
            )
        listener = self.listener
        tls = listener.tls  # routes may match the verified client certificate
        route = listener.routes.match(
            facts.host,
            path,
            method,
            headers if tls is None else tls.route_headers(headers, self.transport),
        )
        ex = Exchange.new(self, method, path, query, authority, facts, headers, route)
        if self.request_id_in is not None:
            ex.request_id = self.request_id_in
            ex.request_id_foreign = True
        if route is not None and route.kind == "proxy":
            ex.prepare_upstream_head(self.hbuf, self.spans, self.n_spans)
        # Trailer fields (after a chunked body) are parsed into the spans again, counted
        # against the limits and never forwarded.
        self.n_spans = 0
        self.hlen = 0
        self.rx = ex
        if facts.content_length or facts.chunked:
            self.deadline = self.worker.now() + listener.body_idle_timeout
            self.deadline_kind = DL_BODY
        else:
            self.deadline_kind = DL_NONE
        if self.tx is None:
            self.tx = ex
            ex.start()
        else:
            if self.pending is None:
                self.pending = [ex]
            else:
                self.pending.append(ex)
            self.flow.pause(PAUSE_PIPELINE)
        return 0

    cdef int body(self, const char* at, size_t n) except -1:
        cdef Exchange ex = self.rx
        self.feed_explained += <Py_ssize_t>n
        if ex is not None:
            if self.deadline_kind == DL_BODY:
                self.deadline = self.worker.now() + self.listener.body_idle_timeout
            ex.request_body(self.body_piece(at, <Py_ssize_t>n))
        return 0

    cdef int chunk_header(self) except -1:
        self.feed_chunks += 1
        self.feed_explained += 5  # the shortest size line and the CRLF after the data
        if self.rx is not None:
            self.rx.chunks += 1
        return 0

    cdef check_chunk_overhead(self, Exchange rx, Exchange rx_before, bytes data):
        """Bound what a chunked body may carry besides data (chunk extensions, size lines).

        llhttp reads chunk extensions without a callback, so without this a client could
        stream an endless extension. The bytes of each read that are not explained by heads,
        body data and the shortest chunk framing may be at most 4 KiB plus 64 bytes per chunk
        (RFC 9112 7.1.1 lets a recipient limit extensions).
        """
        cdef Py_ssize_t overhead, chunks, partial
        if self.feed_clean:
            # The read began between messages: every byte of it belongs to messages that
            # began in it, whose heads and data were counted as they went by.
            partial = self.url_len + self.header_bytes if self.in_head else 0
            overhead = len(data) - self.feed_explained - partial
            chunks = self.feed_chunks
        elif rx is not None and rx is rx_before:
            overhead = len(data) - (rx.bytes_in - rx.mark_body) - (self.header_bytes - rx.mark_head)
            chunks = rx.chunks
        else:
            overhead = 0
            chunks = 0
        if rx is not None:
            rx.mark_body = rx.bytes_in
            rx.mark_head = self.header_bytes
            if not self.feed_clean:
                rx.chunk_overhead += max(0, overhead)
                overhead = rx.chunk_overhead
        if overhead > 4096 + 64 * chunks:
            raise RemoteProtocolError(
                "the chunked body carries more than 4 KiB of chunk extensions or framing "
                "without data; chunk extensions are limited",
                400,
            )

    cdef int message_complete(self) except -1:
        cdef Exchange ex = self.rx
        self.rx = None
        if self.deadline_kind == DL_BODY:
            self.deadline_kind = DL_NONE
        # The head buffers are for a head in progress: an idle connection holds none (with
        # thousands of keep-alive clients this is most of their memory).
        self.release_buffers = True
        if ex is not None:
            ex.request_end()
        return 0

    # -- used by exchanges and the worker ----------------------------------------------
    cdef inline void write(self, data):
        if self.wbuf is not None:
            self.wbuf.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    cdef void send_upstream(self, UpstreamConnection upstream, parts):
        """Write to ``upstream`` now, or when the read being handled was accepted."""
        dirty = self.up_dirty
        if dirty is None:
            upstream.write_many(parts)
            return
        if upstream.wbuf is None:
            upstream.wbuf = []
            dirty.append(upstream)
        upstream.wbuf.extend(parts)

    cdef void write_many(self, parts):
        if self.wbuf is not None:
            self.wbuf.extend(parts)
        elif self.transport is not None:
            self.transport.writelines(parts)

    cdef void flush(self):
        wbuf = self.wbuf
        self.wbuf = None
        if wbuf and self.transport is not None:
            if len(wbuf) == 1:
                self.transport.write(wbuf[0])
            else:
                # (the TLS driver joins the pieces: one record for a head and its small body,
                # as nginx sends them)
                self.transport.writelines(wbuf)

    cpdef abort(self):
        self.flow.closing = True
        self.wbuf = None
        if self.transport is not None:
            self.transport.abort()

    cdef void exchange_done(self, Exchange ex, bint keep_alive):
        """The exchange ``ex`` (the current ``tx``) has answered and read its request."""
        cdef Exchange nxt
        if self.tx is not ex:
            return
        self.tx = None
        if not keep_alive or self.flow.closing or self.worker.draining:
            self.close()
            return
        if self.pending:
            nxt = self.pending.pop(0)
            self.tx = nxt
            if not self.pending and self.refusal is None:
                self.flow.resume(PAUSE_PIPELINE)
            nxt.start()
        elif self.refusal is not None:
            status, detail, url = self.refusal
            self.send_refusal(status, detail, url)
        elif self.rx is None:
            self.deadline = self.worker.now() + self.listener.keepalive_timeout
            self.deadline_kind = DL_IDLE

    cpdef reject(self, int status, str detail, bint after_answers=False):
        """A request could not be read: answer ``status`` and close. With
        ``after_answers`` (the bad bytes are a new request's), complete requests pipelined
        before it are answered first, then the refusal is sent; otherwise, and always for
        the request being read and any after it, they are dropped."""
        cdef Exchange refused = self.rx
        cdef Exchange tx = self.tx
        cdef Exchange ex
        cdef Py_ssize_t i
        self.rx = None
        if self.transport is None:
            self.flow.closing = True
            return
        url = self.url_bytes() or self.url
        if refused is not None and self.pending is not None:
            for i in range(len(self.pending)):
                if self.pending[i] is refused:
                    for ex in self.pending[i:]:
                        ex.abandon()
                    del self.pending[i:]
                    break
        if (
            after_answers
            and tx is not None
            and tx is not refused
            and tx.request_done
            and tx.state_ != XS_DONE
        ):
            # Earlier requests are complete: let them be answered, then refuse.
            self.refusal = (status, detail, url)
            self.flow.pause(PAUSE_PIPELINE)
            return
        if tx is not None and tx.head_sent:
            self.flow.closing = True
            self.abort()
            return
        self.flow.closing = True
        if tx is not None:
            tx.abandon()
            self.tx = None
        if self.pending is not None:
            for ex in self.pending:
                ex.abandon()
            self.pending = None
        self.send_refusal(status, detail, url)

    cdef send_refusal(self, int status, str detail, bytes url):
        self.flow.closing = True
        self.refusal = None
        self.worker.stats.rejected += 1
        body = problem_response(
            status, detail, server=self.worker.server_header, date=self.worker.http_date()
        )
        self.write(body)
        self.worker.access_log_reject(
            self, status, len(body) - body.index(b"\r\n\r\n") - 4, url
        )
        self.close()

    def on_deadline(self, double now):
        self.worker.refresh()
        kind = self.deadline_kind
        self.deadline_kind = DL_NONE
        if kind == DL_IDLE:
            self.close()
        elif kind == DL_HEADERS:
            if self.url_len or self.n_spans or self.in_head or self.rx is not None or self.tx is not None:
                self.reject(408, "the request head did not arrive in time")
            else:
                # A connection that never sent a byte: close without an answer.
                self.close()
        elif kind == DL_BODY:
            self.reject(408, "the request body stalled: no bytes arrived in time")

    def hibernate(self):
        """Free what an idle keep-alive connection does not need until its next request
        (the head buffers, the last URL): with thousands of idle clients this is most of
        their memory. Only called between messages, when the parser holds no head."""
        if self.in_head:
            return
        self.free_buffers()
        self.url = b""
        self.hibernating = True

    def parkable_fd(self):
        """The socket's descriptor when this connection can be parked (edge/parking.pyx):
        plain TCP, between two requests, nothing buffered either way. Else -1."""
        transport = self.transport
        if (
            transport is None
            or self.deadline_kind != DL_IDLE
            or self.in_head
            or self.rx is not None
            or self.tx is not None
            or self.pending
            or self.refusal is not None
            or self.wbuf
            or self.flow.closing
            or self.flow.reasons
            or self.listener.tls is not None
            or transport.get_write_buffer_size()
        ):
            return -1
        sock = transport.get_extra_info("socket")
        return sock.fileno() if sock is not None else -1

    def detach(self):
        """Let go of the transport without closing the socket, which the worker parked: the
        transport is closed, and its end is not this connection's."""
        transport = self.transport
        self.worker.connections.discard(self)
        self.flow.closing = True
        self.transport = None
        self.flow.transport = None
        self.free_buffers()
        if transport is not None:
            transport.set_protocol(_DETACHED)
            transport.abort()

    cpdef close(self):
        """Send what is gathered, then close once the write buffer is empty."""
        self.flow.closing = True
        if self.wbuf:
            self.flush()
        if self.transport is not None:
            self.transport.close()


# =========================================================================================
# The exchange
# =========================================================================================

cdef class Exchange:
    """A request/response pair on one downstream connection.

    queued -> (connecting | waiting) -> [backoff -> (connecting | waiting)]... -> streaming
    -> responded -> done, or responded straight from queued when the edge answers itself;
    every state may end in done (client gone, aborted, abandoned). See EXCHANGE_TRANSITIONS.
    """

    cdef public HttpConnection conn
    cdef public WorkerContext worker
    cdef public bytes method
    cdef public str path  # the normalised path (backhaul.http.target)
    cdef public str query  # the raw query, without "?"
    cdef public object authority  # bytes of an absolute-form target, else None
    cdef public RequestFacts facts
    cdef public list headers
    cdef public CompiledRoute route
    cdef public double start_time
    cdef public object request_id
    cdef public bint request_id_foreign
    cdef int state_  # XS_*: see EXCHANGE_TRANSITIONS
    cdef int outcome_  # XO_*, once done
    cdef public bint request_done  # the request's half: its whole body was read
    cdef public bint head_sent
    cdef public bint interim
    cdef public bint read_to_close
    cdef public bint chunked_out
    cdef public bint keep_alive
    cdef public int status
    cdef public Py_ssize_t bytes_in
    cdef public Py_ssize_t bytes_out
    cdef public UpstreamConnection upstream
    cdef public Endpoint endpoint
    cdef public list early
    cdef public object connect_task
    cdef public double deadline
    cdef public int deadline_kind
    cdef public double upstream_start
    cdef public object upstream_time
    cdef public bint retried
    cdef public int tries
    cdef public list tried
    cdef public bint in_try
    cdef public double try_start
    cdef public object hash
    cdef public bint holds_request
    cdef public int retry_held
    cdef public object retry_timer
    cdef public bint replayable
    cdef public object set_cookie
    cdef public Py_ssize_t chunks
    cdef public Py_ssize_t chunk_overhead
    cdef public Py_ssize_t mark_body
    cdef public Py_ssize_t mark_head
    cdef bytes up_head  # the head for the upstream, made while the request's spans were live
    cdef public object filtered  # the route's filter chain's RequestInfo (None: no filters)
    cdef public object body  # the response body's BodyRelay (body filters), None: as is

    @staticmethod
    cdef Exchange new(HttpConnection conn, bytes method, str path, str query, authority,
                      RequestFacts facts, list headers, CompiledRoute route):
        cdef Exchange self = Exchange.__new__(Exchange)
        self.conn = conn
        self.worker = conn.worker
        self.method = method
        self.path = path
        self.query = query
        self.authority = authority
        self.facts = facts
        self.headers = headers
        self.route = route
        self.start_time = self.worker.stamp
        self.request_id = None
        self.keep_alive = facts.keep_alive
        self.upstream_time = None
        self.replayable = True
        return self

    @property
    def state(self):
        """The exchange's state, by name (``EXCHANGE_STATES``)."""
        return EXCHANGE_STATES[self.state_]

    @property
    def outcome(self):
        """How it ended (``EXCHANGE_OUTCOMES``); empty until it is done."""
        return EXCHANGE_OUTCOMES[self.outcome_]

    cdef int goto(self, int state) except -1:
        if not (_next_states[self.state_] >> state) & 1:
            raise RuntimeError(
                f"exchange {self.request_id!r}: no transition from "
                f"{EXCHANGE_STATES[self.state_]} to {EXCHANGE_STATES[state]}"
            )
        self.state_ = state
        return 0

    @property
    def target(self):
        """The request target as :class:`backhaul.http.target.Target`."""
        return Target(self.path, self.query, self.authority)

    # -- starting -----------------------------------------------------------------------
    cpdef start(self):
        """Act on the route. Called when this exchange's turn to answer has come."""
        cdef CompiledRoute route = self.route
        cdef RequestFacts facts = self.facts
        cdef Limit requests
        cdef Cluster cluster
        if route is None:
            self.respond_error(
                404,
                f"no route matches host '{facts.host}' and path '{self.path}'",
            )
            return
        limit = route.body_limit
        if limit is not None and facts.content_length is not None and facts.content_length > limit:
            self.respond_error(
                413,
                f"the request body of {facts.content_length} bytes is larger than the limit "
                f"of {limit} bytes for route '{route.name}'",
            )
            return
        chain = route.filters
        if chain is not None:
            # The route's filters (backhaul.http.filters): one may answer now.
            info = chain.request(self.method, self.path, self.query, self.headers,
                                 self.conn.client_ip, self.facts.version)
            self.filtered = info
            answer = info.answer
            if answer is not None:
                self.send_simple(answer.status, answer.body, answer.content_type, answer.headers)
                return
        kind = route.kind
        if kind == "proxy":
            cluster = route.cluster
            requests = cluster.breakers.requests
            if not requests.try_acquire():
                self.respond_error(503, requests.overflow_detail(cluster.name))
                return
            self.holds_request = True
            if facts.expect_continue and not self.request_done:
                self.conn.write(_CONTINUE)
            self.replayable = not (facts.content_length or facts.chunked)
            if cluster.hash_key is not None:
                self.hash = cluster.hash_key.extract(
                    self.conn.client_ip, self.path, self.headers
                )
            sticky = cluster.sticky
            if sticky is not None:
                endpoint, reset = cluster.balancer.pick_sticky(
                    sticky.token(self.headers), self.hash
                )
                if endpoint is not None and reset:
                    self.set_cookie = sticky.set_cookie(endpoint.token)
            else:
                endpoint = (<Balancer>cluster.balancer).pick(self.hash)
            if endpoint is None:
                cluster.stats.no_healthy += 1
                self.respond_error(503, cluster.describe_unhealthy())
                return
            self.try_endpoint(endpoint)
        elif kind == "redirect":
            self.respond_redirect()
        else:
            self.respond_direct()

    # -- tries ----------------------------------------------------------------------------
    cdef try_endpoint(self, Endpoint endpoint):
        """Send the request to ``endpoint``: one try, paired started()/finished()."""
        cdef CircuitBreakers breakers
        cdef Cluster cluster = endpoint.cluster
        self.endpoint = endpoint
        upstream = _pool_take(endpoint)
        if upstream is None:
            breakers = cluster.breakers
            if not breakers.connections.try_acquire():
                self.respond_error(503, breakers.connections.overflow_detail(cluster.name))
                return
            if not breakers.pending.try_acquire():
                breakers.connections.release()
                self.respond_error(503, breakers.pending.overflow_detail(cluster.name))
                return
        self.tries += 1
        (<Balancer>cluster.balancer).started(endpoint)
        self.in_try = True
        self.try_start = self.worker.stamp
        if upstream is not None:
            self.attach(upstream)
        else:
            self.connect(endpoint)

    cdef end_try(self, int outcome):
        """The current try ended with ``outcome`` (a status or CONNECT_FAILURE/RESET/TIMEOUT)."""
        cdef Endpoint endpoint
        cdef Cluster cluster
        if self.in_try:
            self.in_try = False
            endpoint = self.endpoint
            cluster = endpoint.cluster
            events = (<Balancer>cluster.balancer).finished(
                endpoint, self.worker.now(), outcome, self.worker.stamp - self.try_start
            )
            if events:
                cluster.log_events(events)

    cdef try_failed(self, int outcome, int status, str detail):
        """A try failed before a response head was relayed: retry, or answer ``status``."""
        self.end_try(outcome)
        if self.state_ == XS_DONE:
            return
        if not self.head_sent and self.retry_scheduled(outcome):
            return
        endpoint = self.endpoint
        if endpoint is None:
            self.respond_error(status, detail)
            return
        # The edge's log keeps the endpoint's address (the access log has it too); the
        # client is told the cluster only, unless the listener shows endpoints.
        self.worker.log_upstream_error(detail)
        if not self.conn.listener.show_endpoints:
            detail = detail.replace(
                f"upstream endpoint {endpoint.label}",
                f"an upstream endpoint of cluster '{endpoint.cluster.name}'",
            )
        self.respond_error(status, detail, endpoint.label)

    cdef bint retry_scheduled(self, int outcome) except -1:
        """Whether the policy, the budget and the cluster allow another try (on another
        endpoint); if so it is scheduled after the backoff."""
        cdef CompiledRoute route = self.route
        endpoint = self.endpoint
        if route is None or endpoint is None:
            return False
        cluster = endpoint.cluster
        decision = route.retry_policy.decide(
            self.method.decode("latin-1"), self.tries, outcome, replayable=self.replayable
        )
        if not decision.retry:
            return False
        if not cluster.retry_budget.try_acquire(cluster.breakers.requests.active):
            cluster.stats.budget_exhausted += 1
            return False
        if self.tried is None:
            self.tried = [endpoint]
        elif endpoint not in self.tried:
            self.tried.append(endpoint)
        nxt = cluster.balancer.pick_excluding(self.tried, self.hash)
        if nxt is None:
            cluster.retry_budget.release()
            return False
        self.retry_held += 1
        cluster.stats.retries += 1
        self.tried.append(nxt)
        delay = route.retry_policy.backoff(self.tries, cluster.rng.random)
        self.goto(XS_BACKOFF)
        self.conn.flow.pause(PAUSE_UPSTREAM)
        self.retry_timer = self.worker.loop.call_later(delay, self._retry, nxt)
        return True

    def _retry(self, endpoint):
        self.worker.refresh()
        self.retry_timer = None
        if self.state_ == XS_BACKOFF and self.conn.transport is not None:
            self.try_endpoint(endpoint)

    cdef release_slots(self):
        """Give back the circuit-breaker request slot and the retry-budget slots."""
        cdef CompiledRoute route = self.route
        cdef Cluster cluster
        if route is None or route.cluster is None:
            return
        cluster = route.cluster
        if self.holds_request:
            self.holds_request = False
            cluster.breakers.requests.release()
        while self.retry_held:
            self.retry_held -= 1
            cluster.retry_budget.release()
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None

    cdef connect(self, Endpoint endpoint):
        """Open a new connection to ``endpoint`` (its breaker slots are already held)."""
        self.goto(XS_CONNECTING)
        self.conn.flow.pause(PAUSE_UPSTREAM)
        self.connect_task = self.worker.loop.create_task(self._connect(endpoint))

    async def _connect(self, endpoint):
        breakers = endpoint.cluster.breakers
        connected = False
        try:
            upstream = await endpoint.wait_connected(self.worker.loop, UpstreamConnection)
            connected = True
        except ConnectTimeout as exc:
            self.connect_task = None
            self.try_failed(CONNECT_FAILURE, 504, str(exc))
            return
        except ConnectError as exc:
            self.connect_task = None
            self.try_failed(CONNECT_FAILURE, 502, str(exc))
            return
        finally:
            self.worker.refresh()
            breakers.pending.release()
            if not connected:
                breakers.connections.release()
        upstream.counted = True
        self.connect_task = None
        if self.state_ != XS_CONNECTING or self.conn.transport is None:
            upstream.close()
            return
        self.attach(upstream)

    cdef attach(self, UpstreamConnection upstream):
        """Send the request head (and any body that arrived meanwhile) on ``upstream``."""
        cdef HttpConnection conn = self.conn
        self.goto(XS_WAITING)
        self.upstream = upstream
        upstream.exchange = self
        cdef CompiledRoute route = self.route
        worker = self.worker
        cdef RequestFacts facts = self.facts
        head = self.up_head
        if head is None:
            # The request named no host: its Host line is the endpoint's address.
            head = self.upstream_head_for(upstream)
        tls = conn.listener.tls  # RFC 9440 Client-Cert headers of a verified client
        if tls is not None and tls.forward_client_cert:
            head = head[:-2] + tls.client_cert_lines(conn.transport) + b"\r\n"
        if self.filtered is not None:
            head = self.filtered.upstream_edit.apply(head)
        early = self.early
        if early:
            self.early = None
            if facts.chunked:
                parts = [head]
                for chunk in early:
                    parts += (b"%x\r\n" % len(chunk), chunk, _CRLF)
                if self.request_done:
                    parts.append(_CHUNK_END)
                conn.send_upstream(upstream, parts)
            else:
                conn.send_upstream(upstream, [head, *early])
        elif facts.chunked and self.request_done:
            conn.send_upstream(upstream, (head, _CHUNK_END))
        else:
            conn.send_upstream(upstream, (head,))
        self.upstream_start = self.worker.stamp
        self.deadline = worker.now() + route.try_timeout
        self.deadline_kind = EX_RESPONSE_HEADERS
        conn.flow.resume(PAUSE_UPSTREAM)

    cdef prepare_upstream_head(self, const char* buf, HeaderSpan* spans, Py_ssize_t n):
        """The request head for the upstream, from the head's spans (while they are live).
        Left None when it depends on the endpoint (see ``host_is_endpoint``)."""
        if self.host_is_endpoint():
            return
        self.up_head = self.encode_upstream_head(buf, spans, n, None)

    cdef bytes encode_upstream_head(self, const char* buf, HeaderSpan* spans, Py_ssize_t n,
                                    UpstreamConnection upstream):
        cdef HttpConnection conn = self.conn
        cdef CompiledRoute route = self.route
        cdef ListenerSettings listener = conn.listener
        path = route.rewrite_path(self.path)
        query = self.query
        target = (path + "?" + query if query else path).encode()
        if self.request_id is None:
            self.request_id = self.worker.next_request_id()
        return _request_head(
            buf, spans, n, self.method, target, self.facts,
            conn.client_ip, listener.scheme, self.upstream_host(route, upstream),
            self.request_id if listener.request_id else None,
            listener.x_forwarded, listener.forwarded, self.worker.via,
        )

    cdef bytes upstream_head_for(self, UpstreamConnection upstream):
        cdef _SpannedHead head = _SpannedHead(self.headers)
        return self.encode_upstream_head(PyBytes_AS_STRING(head.data), head.spans, head.n, upstream)

    cdef bint host_is_endpoint(self) except -1:
        """Whether the Host sent upstream is the endpoint's address: the request named no
        host (HTTP/1.0) and the route sets none, so an empty Host line is avoided."""
        return (
            self.route.host_out is None
            and self.authority is None
            and not self.facts.authority
        )

    cdef upstream_host(self, CompiledRoute route, UpstreamConnection upstream):
        """The Host sent upstream: the route's rewrite, else the absolute-form authority,
        else (None) the client's Host, or the endpoint's address (``host_is_endpoint``)."""
        if self.host_is_endpoint():
            return upstream.endpoint.address.encode()
        if route.host_out is not None:
            return route.host_out
        return self.authority

    # -- the request body ------------------------------------------------------------------
    cdef request_body(self, chunk):
        self.bytes_in += len(chunk)
        cdef CompiledRoute route = self.route
        limit = route.body_limit if route is not None else None
        if limit is not None and self.bytes_in > limit:
            self.conn.reject(
                413,
                f"the request body is larger than the limit of {limit} bytes"
                + (f" for route '{route.name}'" if route is not None else ""),
            )
            return
        upstream = self.upstream
        if upstream is not None:
            if upstream.closed:
                return
            if self.facts.chunked:
                self.conn.send_upstream(upstream, (b"%x\r\n" % len(chunk), chunk, _CRLF))
            else:
                self.conn.send_upstream(upstream, (chunk,))
            if self.deadline_kind == EX_RESPONSE_HEADERS:
                self.deadline = self.worker.now() + route.try_timeout
        elif self.state_ < XS_RESPONDED and (
            self.state_ == XS_QUEUED or (route is not None and route.kind == "proxy")
        ):
            # Not connected yet (or waiting for an earlier pipelined answer): hold the bytes.
            # Reading is paused meanwhile, so this holds at most one read's worth.
            if self.early is None:
                self.early = [chunk]
            else:
                self.early.append(chunk)
        # else: the answer was already decided without the body; the body is read and dropped.

    cdef request_end(self):
        self.request_done = True
        upstream = self.upstream
        if upstream is not None and self.facts.chunked and not upstream.closed:
            self.conn.send_upstream(upstream, (_CHUNK_END,))
        if self.state_ == XS_RESPONDED:
            self.terminate(XO_COMPLETED)

    # -- the upstream response -------------------------------------------------------------
    cdef int upstream_head(self, UpstreamConnection upstream, int status) except -1:
        """A response head arrived; returns 1 when it has no body for llhttp to read (the
        answer to HEAD), else 0."""
        cdef HttpConnection conn = self.conn
        cdef ResponseRelay relay
        if status < 200:
            if status == 101:
                self.upstream_failed(
                    upstream, "upstream endpoint switched protocols without being asked", False
                )
                return 0
            self.interim = True
            if status != 100 and self.facts.keep_alive and not self.head_sent:
                # 1xx informational (e.g. 103 Early Hints) is passed on to HTTP/1.1 clients.
                conn.write(_response_head(
                    upstream.hbuf, upstream.spans, upstream.n_spans, status, 1, 1, b"GET",
                    None, None, b"1.1", True, True,
                ).head)
            return 0
        worker = self.worker
        cdef CompiledRoute route = self.route
        if (
            route is not None
            and status in route.retry_statuses
            and not self.head_sent
            and self.retry_scheduled(status)
        ):
            self.end_try(status)
            self.upstream = None
            upstream.abort()
            return 0
        try:
            relay = _response_head(
                upstream.hbuf, upstream.spans, upstream.n_spans, status,
                upstream.parser.http_major, upstream.parser.http_minor, self.method,
                worker.via, None, self.facts.version,
                self.keep_alive and not conn.flow.closing and not worker.draining, False,
            )
        except RemoteProtocolError as exc:
            self.upstream_failed(upstream, exc.detail, False)
            return 0
        self.chunked_out = relay.chunked_out
        self.read_to_close = relay.facts.until_close
        self.keep_alive = relay.keep_alive
        self.status = status
        self.head_sent = True
        self.goto(XS_STREAMING)
        head = relay.head
        chain = route.filters if route is not None else None
        if chain is not None:
            head = chain.response_head(status, head, self.filtered)
            body = self.filtered.body
            if body is not None:  # a body filter transforms it: chunked, or until close
                self.body = body
                self.chunked_out = body.chunked
                self.keep_alive = self.keep_alive and body.chunked
        tls = conn.listener.tls  # the route's Strict-Transport-Security
        if tls is not None and tls.hsts:
            head = tls.add_hsts(head, self.route)
        if self.set_cookie is None:
            conn.write(head)
        else:
            conn.write(head[:-2] + b"Set-Cookie: " + self.set_cookie + b"\r\n\r\n")
        self.deadline = worker.now() + (<Cluster>upstream.endpoint.cluster).body_idle
        self.deadline_kind = EX_BODY_IDLE
        if relay.facts.no_body and status != 204 and status != 304:
            # A response to HEAD: llhttp cannot know it has no body; say so, and end here.
            self.upstream_end(upstream, relay.facts.keep_alive)
            return 1
        return 0

    cdef upstream_body(self, chunk):
        cdef HttpConnection conn = self.conn
        if conn.transport is None:
            return
        if self.body is not None:
            chunk = self.body.piece(chunk)
            if not chunk:  # the filter holds it for now (a compressor's window)
                self.deadline = self.worker.now() + (<Cluster>self.route.cluster).body_idle
                return
        self.bytes_out += len(chunk)
        if self.chunked_out:
            conn.write_many((b"%x\r\n" % len(chunk), chunk, _CRLF))
        else:
            conn.write(chunk)
        self.deadline = self.worker.now() + (<Cluster>self.route.cluster).body_idle

    cdef upstream_end(self, UpstreamConnection upstream, bint keep_alive):
        if self.interim:
            self.interim = False
            return
        if self.state_ != XS_STREAMING:
            return
        self.goto(XS_RESPONDED)
        self.deadline_kind = EX_NONE
        self.end_try(self.status)
        if self.body is not None:
            body = self.body
            self.body = None
            tail = body.finish()
            if tail:
                self.upstream_body(tail)
        if self.chunked_out:
            self.conn.write(_CHUNK_END)
        self.release_upstream(upstream, keep_alive and self.request_done)
        if self.request_done:
            self.terminate(XO_COMPLETED)

    cdef release_upstream(self, UpstreamConnection upstream, bint reusable):
        self.upstream = None
        self.upstream_time = self.worker.stamp - self.upstream_start
        if reusable and not upstream.closed:
            _pool_give_back(upstream.endpoint, upstream, self.worker.now())
        else:
            upstream.close()

    cdef upstream_failed(self, UpstreamConnection upstream, str detail, bint parse_error):
        """The upstream broke the protocol: its connection is closed, never reused."""
        upstream.abort()
        self.upstream = None
        if self.head_sent:
            self.end_try(RESET)
            self.terminate(XO_ABORTED)
        else:
            label = upstream.endpoint.label
            self.try_failed(502, 502, f"upstream endpoint {label}: {detail}")

    cdef upstream_lost(self, UpstreamConnection upstream):
        """The upstream connection closed while this exchange used it."""
        self.upstream = None
        label = upstream.endpoint.label
        if self.head_sent:
            if self.read_to_close:
                # The end of a read-until-close body.
                self.keep_alive = self.keep_alive and self.chunked_out
                self.read_to_close = False
                self.upstream_end(upstream, False)
            elif self.state_ < XS_RESPONDED:
                self.end_try(RESET)
                self.terminate(XO_ABORTED)
            return
        cdef RequestFacts facts = self.facts
        if (
            upstream.reused
            and not self.retried
            and not facts.chunked
            and not facts.content_length
            and self.state_ != XS_DONE
        ):
            # A pooled connection the upstream had already closed: the same try goes on,
            # once, on a new connection to the same endpoint (not the endpoint's fault).
            self.retried = True
            breakers = upstream.endpoint.cluster.breakers
            if breakers.connections.try_acquire():
                if breakers.pending.try_acquire():
                    self.connect(upstream.endpoint)
                    return
                breakers.connections.release()
        self.try_failed(
            RESET, 502, f"upstream endpoint {label} closed the connection before responding"
        )

    # -- backpressure ----------------------------------------------------------------------
    cdef downstream_pause_writing(self):
        cdef UpstreamConnection upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.reading_paused = True
            upstream.transport.pause_reading()

    cdef downstream_resume_writing(self):
        cdef UpstreamConnection upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.reading_paused = False
            upstream.transport.resume_reading()

    # -- direct answers --------------------------------------------------------------------
    cdef respond_direct(self):
        cdef CompiledRoute route = self.route
        action = route.config.respond
        self.send_simple(action.status, route.respond_body, route.respond_content_type, None)

    cdef respond_redirect(self):
        cdef CompiledRoute route = self.route
        location = route.redirect.location(self.path, self.query)
        self.send_simple(
            route.config.redirect.status, b"", None, [(b"Location", location.encode())]
        )

    cdef send_simple(self, int status, bytes body, content_type, list extra):
        worker = self.worker
        if not self.request_done and (self.facts.content_length or self.facts.chunked):
            # Answering before the body arrived: close afterwards rather than read it all.
            self.keep_alive = False
        keep_alive = self.keep_alive and not worker.draining and not self.conn.flow.closing
        out = [(b"Date", worker.http_date())]
        if worker.server_header:
            out.append((b"Server", worker.server_header))
        if content_type is not None:
            out.append((b"Content-Type", content_type))
        if extra:
            out += extra
        out.append((b"Content-Length", b"%d" % len(body)))
        if not keep_alive:
            out.append((b"Connection", b"close"))
        elif self.facts.version != b"1.1":
            out.append((b"Connection", b"keep-alive"))
        self.keep_alive = keep_alive
        self.status = status
        self.head_sent = True
        head = encode_head(b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"")), out)
        chain = self.route.filters if self.route is not None else None
        if chain is not None:
            head, body = chain.whole_response(status, head, body, self.filtered)
        tls = self.conn.listener.tls  # the route's Strict-Transport-Security
        if tls is not None and tls.hsts:
            head = tls.add_hsts(head, self.route)
        if self.method == b"HEAD":
            self.conn.write(head)
        else:
            self.conn.write(head + body)
            self.bytes_out += len(body)
        self.goto(XS_RESPONDED)
        if self.request_done or not keep_alive:
            self.terminate(XO_COMPLETED)

    cpdef respond_error(self, int status, str detail, upstream=None):
        """Answer with an RFC 9457 problem (if no head was sent yet) and close."""
        if self.state_ == XS_DONE:
            return
        if self.head_sent:
            self.terminate(XO_ABORTED)
            return
        worker = self.worker
        worker.stats.errors += 1
        keep_alive = (
            status == 404
            and self.keep_alive
            and (self.request_done or not (self.facts.content_length or self.facts.chunked))
            and not worker.draining
        )
        if self.request_id is None:
            self.request_id = worker.next_request_id()
        data = problem_response(
            status,
            detail,
            request_id=self.request_id.decode(),
            close=not keep_alive,
            server=worker.server_header,
            head_only=self.method == b"HEAD",
            date=worker.http_date(),
        )
        self.keep_alive = keep_alive
        self.status = status
        self.head_sent = True
        self.goto(XS_RESPONDED)
        # bytes_out counts body bytes (like nginx's $body_bytes_sent and Envoy's BYTES_SENT)
        self.bytes_out += len(data) - data.index(b"\r\n\r\n") - 4
        self.conn.write(data)
        if upstream is not None and self.endpoint is not None:
            self.upstream_time = self.worker.stamp - self.start_time
        if self.request_done or not keep_alive:
            self.terminate(XO_COMPLETED)

    # -- ending ------------------------------------------------------------------------
    cdef terminate(self, int outcome):
        """The one way an exchange ends (``XO_*``; see the enum). The first call moves it to
        ``done`` and logs it (unless abandoned); a later one only does what its outcome
        still needs (cutting the client connection). In every case the try is ended, the
        upstream connection is given back (reusable only after a clean response) or
        dropped, and the breaker and retry-budget slots are released."""
        cdef int prior = self.state_
        cdef bint first = prior != XS_DONE
        if first:
            self.goto(XS_DONE)
            self.outcome_ = outcome
            self.deadline_kind = EX_NONE
        elif outcome == XO_COMPLETED:
            return
        if outcome == XO_COMPLETED:
            _log_exchange(self)
            if self.upstream is not None:
                self.release_upstream(self.upstream, False)
            self.end_try(self.status)
            self.release_slots()
            self.conn.exchange_done(self, self.keep_alive)
            return
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.abort()
        if first and outcome == XO_ABORTED:
            self.worker.stats.errors += 1
            _log_exchange(self)
        elif first and outcome == XO_CLIENT_GONE:
            if prior < XS_RESPONDED:
                self.status = self.status or 499
            _log_exchange(self)
        self.end_try(499 if outcome == XO_CLIENT_GONE else RESET)
        self.release_slots()
        if outcome == XO_ABORTED:
            self.keep_alive = False
            self.conn.abort()

    cdef downstream_lost(self):
        """The client went away: drop the upstream side (it cannot be reused mid-exchange)."""
        self.terminate(XO_CLIENT_GONE)

    cdef abandon(self):
        """Drop this exchange without logging (the connection is being rejected)."""
        self.terminate(XO_ABANDONED)

    def on_deadline(self, double now):
        self.worker.refresh()
        kind = self.deadline_kind
        self.deadline_kind = EX_NONE
        label = self.endpoint.label if self.endpoint is not None else "?"
        if kind == EX_RESPONSE_HEADERS:
            upstream = self.upstream
            if upstream is not None:
                upstream.abort()
                self.upstream = None
            timeout = self.route.try_timeout if self.route is not None else 0
            self.try_failed(
                TIMEOUT,
                504,
                f"upstream endpoint {label} sent no response headers within {timeout:g}s",
            )
        elif kind == EX_BODY_IDLE:
            upstream = self.upstream
            if upstream is not None:
                upstream.abort()
                self.upstream = None
            self.end_try(TIMEOUT)
            self.terminate(XO_ABORTED)


# =========================================================================================
# Upstream
# =========================================================================================

cdef UpstreamConnection _pool_take(Endpoint endpoint):
    """The warmest idle connection of ``endpoint``'s pool (a LIFO list), or None."""
    cdef list idle = endpoint.idle
    cdef UpstreamConnection conn
    while idle:
        conn = idle.pop()
        if not conn.closed:
            conn.reused = True
            return conn
    return None


cdef _pool_give_back(Endpoint endpoint, UpstreamConnection conn, double now):
    """Return a clean connection to ``endpoint``'s pool (or close it when the pool is
    full); it reads while idle, so that an upstream's close is seen."""
    cdef list idle = endpoint.idle
    conn.exchange = None
    if conn.closed:
        return
    if len(idle) >= <Py_ssize_t>endpoint.max_idle:
        conn.close()
        return
    conn.idle_since = now
    if conn.reading_paused and conn.transport is not None:
        conn.reading_paused = False
        conn.transport.resume_reading()
    idle.append(conn)


cdef class UpstreamConnection(Http1Peer):
    """One HTTP/1.1 connection to an upstream endpoint; serves one exchange at a time.

    A connection goes back to its endpoint's pool only when its last exchange ended
    cleanly: a complete response with keep-alive, no framing doubt, no stray bytes.
    """

    cdef public Endpoint endpoint
    cdef public object transport
    cdef public Exchange exchange
    cdef public double idle_since
    cdef public bint reused
    cdef public bint closed
    cdef public bint counted  # holds a slot of the cluster's max_connections breaker
    cdef public list wbuf
    cdef bint ended_at_head  # the response ended with its head (the answer to HEAD)
    cdef bint reading_paused  # by the downstream's backpressure

    def __init__(self, Endpoint endpoint):
        self.endpoint = endpoint
        self.transport = None
        self.exchange = None
        self.idle_since = 0.0
        self.reused = False
        self.closed = False
        self.counted = False
        self.wbuf = None
        # Upstream heads are bounded too: the cluster's limits (64 KiB, 256 fields).
        cluster = endpoint.cluster
        self.init_parser(HTTP_RESPONSE, 0, cluster.head_bytes, cluster.head_fields)

    # -- asyncio callbacks -------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, bytes data):
        cdef Exchange ex = self.exchange
        cdef HttpConnection conn
        cdef llhttp_errno_t err
        cdef bint owner
        if ex is None:
            # Bytes from an idle upstream connection: nothing asked for them.
            self.close()
            return
        ex.worker.refresh()
        conn = ex.conn
        owner = conn.wbuf is None
        if owner:
            conn.wbuf = []
        self.ensure_buffers()
        try:
            err = self.execute(data)
            if err == HPE_OK:
                pass
            elif err == HPE_PAUSED_UPGRADE:
                if self.exchange is not None:
                    ex.upstream_failed(self, "upstream endpoint switched protocols unasked", True)
                else:
                    self.close()
            else:
                exc = self.parse_error(err)
                if isinstance(exc, ParseError):
                    if self.exchange is ex:
                        ex.upstream_failed(
                            self, f"upstream response is not valid HTTP/1.1 ({exc})", True
                        )
                    else:
                        # Garbage after a complete response: never reuse this connection.
                        self.close()
                elif isinstance(exc, RemoteProtocolError):
                    if self.exchange is ex:
                        ex.upstream_failed(self, exc.detail, True)
                    else:
                        self.close()
                else:
                    # An exception raised by our own code: a defect, not bad input.
                    ex.worker.report_bug(exc)
                    if self.exchange is ex:
                        ex.upstream_failed(self, "the edge failed on this response", True)
                    else:
                        self.close()
        finally:
            if owner:
                conn.flush()

    def eof_received(self):
        return None

    def connection_lost(self, exc):
        cdef Exchange ex
        self.closed = True
        if self.counted:
            self.counted = False
            (<Cluster>self.endpoint.cluster).breakers.connections.release()
        ex = self.exchange
        self.free_buffers()
        if ex is not None:
            ex.worker.refresh()
            self.exchange = None
            ex.upstream_lost(self)
        else:
            self.endpoint.forget(self)

    def pause_writing(self):
        if self.exchange is not None:
            self.exchange.conn.flow.pause(PAUSE_UPSTREAM)

    def resume_writing(self):
        if self.exchange is not None:
            self.exchange.conn.flow.resume(PAUSE_UPSTREAM)

    # -- llhttp events -----------------------------------------------------------------
    cdef int message_begin(self) except -1:
        Http1Peer.message_begin(self)
        if self.exchange is None:
            # A second response in the same read, after the exchange was released: nothing
            # asked for it, so this connection cannot be trusted again.
            self.close()
        return 0

    cdef int headers_complete(self) except -1:
        cdef Exchange ex = self.exchange
        self.in_head = False
        if ex is None:
            return 0
        code = ex.upstream_head(self, self.parser.status_code)
        self.n_spans = 0
        self.hlen = 0
        if code:
            # Already ended (and this connection possibly handed to the next exchange):
            # llhttp's message end for it is not news.
            self.ended_at_head = True
            return 1
        return 0

    cdef int body(self, const char* at, size_t n) except -1:
        cdef Exchange ex = self.exchange
        if ex is None:
            self.close()
        else:
            ex.upstream_body(self.body_piece(at, <Py_ssize_t>n))
        return 0

    cdef int message_complete(self) except -1:
        cdef Exchange ex = self.exchange
        if self.ended_at_head:
            self.ended_at_head = False
            return 0
        if ex is not None:
            ex.upstream_end(self, llhttp_should_keep_alive(&self.parser))
        return 0

    # -- used by the exchange ----------------------------------------------------------
    cdef void write_many(self, parts):
        if self.transport is not None and not self.closed:
            if len(parts) == 1:
                self.transport.write(parts[0])
            else:
                self.transport.writelines(parts)

    cdef void flush(self):
        """Send what the downstream side gathered during one read."""
        wbuf = self.wbuf
        self.wbuf = None
        if wbuf:
            self.write_many(wbuf)

    cpdef close(self):
        self.closed = True
        self.wbuf = None
        self.exchange = None
        if self.transport is not None:
            self.transport.close()

    cpdef abort(self):
        self.closed = True
        self.wbuf = None
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()
