# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: freethreading_compatible=False
"""Downstream TLS as a stream over the plain TCP transport: the edge's own TLS driver.

uvloop's TLS transport costs about 50 µs of Python-level glue per connection (timers,
several writes per flight, a shutdown that waits for the peer). This driver does the same
job with less: one :class:`TlsStream` per accepted connection is the ``asyncio.Protocol`` of
the plain TCP transport *and* the transport its application protocol (the data plane's
``HttpConnection``) writes to.

- **TLS is OpenSSL's**, through the standard library: the ``_ssl`` object of the listener's
  ``SSLContext._wrap_bio`` on two ``ssl.MemoryBIO`` (what ``SSLContext.wrap_bio`` wraps in
  ``ssl.SSLObject``; its methods are called directly). The context's SNI callback, ALPN,
  session tickets and client-certificate checks run as they do in any ``SSLObject``.
- **One write per event.** What OpenSSL writes during one ``data_received`` (handshake
  flight, session ticket, the records of everything the application wrote meanwhile) goes
  out in one ``transport.write``. A write from outside such an event (an answer relayed
  from the upstream) goes out at the end of the loop's pass over the events at hand, with
  whatever follows it in that pass: a response and the close_notify after it leave in one
  write, as one packet (one flush callback per listener and pass, not per connection).
- **Handshake deadline without a timer**: the listener's :class:`TlsListener` keeps the
  connections still in their handshake; the worker's periodic tick calls
  :meth:`TlsListener.expire` (so a handshake ends within ``handshake_timeout`` plus one
  tick).
- **Outcomes counted by reason** in the listener's ``counts`` (failures by reason index,
  completed handshakes in the last slot); a refused handshake's alert is sent, then the
  connection waits (within the deadline) for the client to close, so the alert is read
  rather than lost to a reset; a failure with nothing to send (plain HTTP on the port)
  closes at once.
- **Closing** sends close_notify with whatever is still to send, in one write, then closes
  the TCP connection without waiting for the peer's close_notify (as nginx does).
- **Bounded**: the incoming buffer holds at most one TCP read beyond what was decrypted
  (reading from TCP pauses with the application's ``pause_reading``); a handshake that
  brings more than :data:`HANDSHAKE_INPUT_LIMIT` bytes without completing is refused; what
  OpenSSL writes leaves the outgoing buffer on every write, and the TCP transport's buffer
  reports back pressure (``pause_writing``/``resume_writing``) to the application.
"""

from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import ssl

__all__ = ["HANDSHAKE_INPUT_LIMIT", "TLS_DRIVER", "TlsListener", "TlsStream", "TlsStreamFactory"]

TLS_DRIVER = "compiled (Cython: the ssl module's object on memory BIOs over the TCP transport)"

HANDSHAKE_INPUT_LIMIT = 64 * 1024
"""Bytes a client may send before its handshake completes (a ClientHello with every
extension is a few KiB; a client certificate chain some more)."""

cdef enum:
    READ_SIZE = 16384 + 256  # one TLS record's plaintext at most, with room

cdef object MemoryBIO = ssl.MemoryBIO
cdef object SSLError = ssl.SSLError
cdef object SSLWantReadError = ssl.SSLWantReadError

# -- a stream's life ---------------------------------------------------------------------
cdef enum:
    ST_HANDSHAKE = 0  # the handshake is under way
    ST_OPEN = 1  # the application protocol has the stream
    ST_FAILED = 2  # the handshake failed and its alert went out: waiting for the client to go
    ST_CLOSING = 3  # close_notify sent (or the TCP connection closed): nothing more is read
    ST_LOST = 4  # the TCP connection is gone


cdef inline double _mono() noexcept nogil:
    """Seconds on CLOCK_MONOTONIC: the clock of the event loop's ``time()`` (libuv's)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class TlsListener:
    """One HTTPS listener's side of the driver, in one worker: its context, counters, the
    handshakes under way and their deadline.

    ``counts``: failures by reason index, then completed handshakes (last slot);
    ``reasons``: OpenSSL's reason string (``SSLError.reason``) to a reason index, with
    ``other``, ``timeout`` and ``client_closed`` the indices of those reasons."""

    cdef public object context
    cdef public list counts
    cdef public double handshake_timeout
    cdef public set handshaking
    cdef public object loop
    cdef list dirty  # streams written to outside their own events, flushed in one callback
    cdef bint flush_scheduled
    cdef dict reasons
    cdef Py_ssize_t other
    cdef Py_ssize_t timeout
    cdef Py_ssize_t client_closed
    cdef Py_ssize_t completed

    def __init__(
        self, context, list counts, double handshake_timeout, loop, dict reasons,
        Py_ssize_t other, Py_ssize_t timeout, Py_ssize_t client_closed,
    ):
        self.context = context
        self.counts = counts
        self.handshake_timeout = handshake_timeout
        self.handshaking = set()
        self.loop = loop
        self.dirty = []
        self.flush_scheduled = False
        self.reasons = reasons
        self.other = other
        self.timeout = timeout
        self.client_closed = client_closed
        self.completed = len(counts) - 1

    cdef inline void count(self, Py_ssize_t index):
        self.counts[index] += 1

    cdef Py_ssize_t reason_of(self, exc):
        reason = getattr(exc, "reason", None)
        return self.reasons.get(str(reason or ""), self.other)

    def expire(self, double now):
        """End the handshakes older than the deadline (counted as ``timeout``) and the
        failed ones whose client did not close after the alert. Returns how many ended."""
        cdef TlsStream stream
        cdef double before = now - self.handshake_timeout
        cdef int ended = 0
        if not self.handshaking:
            return 0
        for stream in list(self.handshaking):
            if stream.started <= before:
                ended += 1
                self.handshaking.discard(stream)
                if stream.state == ST_HANDSHAKE:
                    stream.outcome_counted = True
                    self.count(self.timeout)
                stream.state = ST_CLOSING
                if stream.tcp is not None:
                    stream.tcp.abort()
        return ended

    cdef inline void mark_dirty(self, TlsStream stream) except *:
        stream.dirty = True
        self.dirty.append(stream)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush_dirty)

    def flush_dirty(self):
        """Send what the streams written to since the last pass have to send."""
        cdef TlsStream stream
        cdef list dirty = self.dirty
        self.dirty = []
        self.flush_scheduled = False
        for stream in dirty:
            stream.dirty = False
            if stream.state == ST_OPEN:
                stream.flush()

    def statistics(self):
        """What is under way: ``{"handshaking": n}``."""
        return {"handshaking": len(self.handshaking)}


cdef class TlsStreamFactory:
    """The protocol factory of an HTTPS listener's server: a :class:`TlsStream` per
    accepted connection, whose application protocol ``app_factory()`` makes once the
    handshake is done."""

    cdef TlsListener listener
    cdef object app_factory

    def __init__(self, TlsListener listener, app_factory):
        self.listener = listener
        self.app_factory = app_factory

    def __call__(self):
        return TlsStream(self.listener, self.app_factory)


cdef class TlsStream:
    """TLS over one TCP connection: the TCP transport's protocol, and the transport of the
    application protocol (``asyncio.Transport``'s methods, ``get_extra_info`` with
    ``ssl_object``, ``peercert``, ``sslcontext``, ``cipher`` and the TCP transport's
    names)."""

    cdef TlsListener listener
    cdef object app_factory
    cdef public object app  # the application protocol, once the handshake is done
    cdef public object tcp  # the TCP transport
    cdef public object sslobj  # the _ssl object (ssl.SSLObject's C half)
    cdef object incoming
    cdef object outgoing
    cdef public int state
    cdef double started
    cdef bint outcome_counted  # the handshake's outcome is in the counters
    cdef bint in_event  # inside data_received: writes wait for its one flush
    cdef bint dirty  # written to outside an event: in the listener's list to flush
    cdef bint reading_paused  # by the application
    cdef bint drain_scheduled
    cdef bint input_ended  # close_notify or FIN came: the application was told once
    cdef object peername
    cdef object __weakref__

    def __init__(self, TlsListener listener, app_factory):
        self.listener = listener
        self.app_factory = app_factory
        self.app = None
        self.tcp = None
        self.sslobj = None
        self.state = ST_HANDSHAKE
        self.outcome_counted = False
        self.in_event = False
        self.dirty = False
        self.reading_paused = False
        self.drain_scheduled = False
        self.input_ended = False
        self.peername = None

    # -- the TCP transport's protocol ------------------------------------------------------
    def connection_made(self, transport):
        cdef TlsListener listener = self.listener
        self.tcp = transport
        self.incoming = MemoryBIO()
        self.outgoing = MemoryBIO()
        self.sslobj = listener.context._wrap_bio(
            self.incoming, self.outgoing, server_side=True, server_hostname=None
        )
        self.started = _mono()
        listener.handshaking.add(self)

    def data_received(self, bytes data):
        cdef int state = self.state
        if state == ST_OPEN:
            self.incoming.write(data)
            self.deliver_event()
        elif state == ST_HANDSHAKE:
            self.incoming.write(data)
            self.handshake()
        # failed, closing: what the client sends now is not read

    cdef void handshake(self) except *:
        cdef TlsListener listener = self.listener
        try:
            self.sslobj.do_handshake()
        except SSLWantReadError:
            if self.incoming.pending > HANDSHAKE_INPUT_LIMIT:
                self.handshake_failed(None)
            else:
                self.flush()
            return
        except SSLError as exc:
            self.handshake_failed(exc)
            return
        listener.handshaking.discard(self)
        listener.count(listener.completed)
        self.outcome_counted = True
        self.state = ST_OPEN
        self.in_event = True
        try:
            self.app = self.app_factory()
            self.app.connection_made(self)
            if self.state == ST_OPEN:
                self.deliver()
        finally:
            self.in_event = False
            self.flush()

    cdef void handshake_failed(self, exc) except *:
        """Count why, send the alert OpenSSL wrote (then wait for the client to close, within
        the deadline), or close at once when there is none."""
        cdef TlsListener listener = self.listener
        listener.count(listener.reason_of(exc) if exc is not None else listener.other)
        self.outcome_counted = True
        if self.outgoing.pending and exc is not None:
            self.state = ST_FAILED  # stays in handshaking: the deadline ends it
            self.flush()
        else:
            listener.handshaking.discard(self)
            self.state = ST_CLOSING
            self.tcp.close()

    cdef void deliver_event(self) except *:
        """Deliver what is decrypted as one event: what the application writes meanwhile
        leaves in one write at its end."""
        self.in_event = True
        try:
            self.deliver()
        finally:
            self.in_event = False
            self.flush()

    cdef void deliver(self) except *:
        """Decrypt what arrived and hand it to the application (one call per event), unless
        it paused reading."""
        cdef list chunks = None
        cdef bytes chunk
        cdef bytes first = None
        sslobj = self.sslobj
        incoming = self.incoming
        while not self.reading_paused and (incoming.pending or sslobj.pending()):
            try:
                chunk = sslobj.read(READ_SIZE)
            except SSLWantReadError:
                break
            except SSLError:  # a bad record: OpenSSL wrote its alert
                self.hand_over(first, chunks)
                if self.state == ST_OPEN:
                    self.state = ST_CLOSING
                    self.flush()
                    self.tcp.close()
                return
            if not chunk:  # the client's close_notify (the C read answers b"", no error)
                self.hand_over(first, chunks)
                self.end_of_input()
                return
            if first is None:
                first = chunk
            elif chunks is None:
                chunks = [first, chunk]
            else:
                chunks.append(chunk)
        self.hand_over(first, chunks)

    cdef inline void hand_over(self, bytes first, list chunks) except *:
        if first is None or self.state != ST_OPEN:
            return
        self.app.data_received(first if chunks is None else b"".join(chunks))

    cdef void end_of_input(self) except *:
        """The client will send nothing more (close_notify or FIN): the application
        finishes what it answers, or the stream closes now."""
        app = self.app
        if self.state != ST_OPEN or app is None or self.input_ended:
            return
        self.input_ended = True
        if not app.eof_received():
            self.close()

    cdef inline void flush(self) except *:
        outgoing = self.outgoing
        if outgoing.pending and self.tcp is not None:
            self.tcp.write(outgoing.read())

    def eof_received(self):
        cdef int state = self.state
        if state == ST_OPEN:
            self.in_event = True
            try:
                self.reading_paused = False  # what is left is read before the end
                self.deliver()
                self.end_of_input()
            finally:
                self.in_event = False
                self.flush()
            return True  # the stream closes when the application says so
        return False  # the TCP transport closes (a handshake ends: client_closed)

    def connection_lost(self, exc):
        cdef TlsListener listener = self.listener
        cdef int state = self.state
        self.state = ST_LOST
        if state == ST_HANDSHAKE or state == ST_FAILED:
            listener.handshaking.discard(self)
        if not self.outcome_counted:
            self.outcome_counted = True
            listener.count(listener.client_closed)
        app = self.app
        self.tcp = None
        if app is not None:
            self.app = None
            app.connection_lost(exc)

    def pause_writing(self):
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self):
        if self.app is not None:
            self.app.resume_writing()

    # -- the application's transport ---------------------------------------------------------
    cpdef write(self, data):
        if self.state != ST_OPEN or not data:
            return
        try:
            self.sslobj.write(data)
        except SSLError:
            self.abort()
            return
        if not self.in_event and not self.dirty:
            self.listener.mark_dirty(self)

    def writelines(self, parts):
        self.write(b"".join(parts))

    def can_write_eof(self):
        return False

    def write_eof(self):
        raise NotImplementedError("a TLS stream has no half-close; close() it")

    cpdef close(self):
        """close_notify with what is still to send, in one write; then close the TCP
        connection (which sends its buffer first), not waiting for the peer's close_notify."""
        if self.state != ST_OPEN:
            if self.state == ST_HANDSHAKE or self.state == ST_FAILED:
                self.state = ST_CLOSING
                self.listener.handshaking.discard(self)
                if self.tcp is not None:
                    self.tcp.close()
            return
        self.state = ST_CLOSING
        try:
            self.sslobj.shutdown()
        except SSLError:  # want-read: the peer's close_notify is not waited for
            pass
        self.flush()
        if self.tcp is not None:
            self.tcp.close()

    cpdef abort(self):
        if self.state < ST_CLOSING:
            if self.state != ST_OPEN:
                self.listener.handshaking.discard(self)
            self.state = ST_CLOSING
        if self.tcp is not None:
            self.tcp.abort()

    def is_closing(self):
        return self.state >= ST_CLOSING or self.tcp is None or self.tcp.is_closing()

    def pause_reading(self):
        if not self.reading_paused:
            self.reading_paused = True
            if self.tcp is not None:
                self.tcp.pause_reading()

    def resume_reading(self):
        if self.reading_paused:
            self.reading_paused = False
            if self.tcp is not None and self.state == ST_OPEN:
                self.tcp.resume_reading()
                if not self.drain_scheduled and (
                    self.incoming.pending or self.sslobj.pending()
                ):
                    # what was read before the pause: handed over on the next loop pass,
                    # not from inside the application's own call
                    self.drain_scheduled = True
                    self.listener.loop.call_soon(self.drain)

    def drain(self):
        self.drain_scheduled = False
        if self.state == ST_OPEN and not self.reading_paused:
            self.deliver_event()

    def is_reading(self):
        return not self.reading_paused and self.state == ST_OPEN

    def set_write_buffer_limits(self, high=None, low=None):
        if self.tcp is not None:
            self.tcp.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self):
        size = self.outgoing.pending if self.outgoing is not None else 0
        if self.tcp is not None:
            size += self.tcp.get_write_buffer_size()
        return size

    def get_write_buffer_limits(self):
        if self.tcp is not None:
            return self.tcp.get_write_buffer_limits()
        return (0, 0)

    def get_protocol(self):
        return self.app

    def set_protocol(self, protocol):
        self.app = protocol

    def get_extra_info(self, name, default=None):
        if name == "peername":
            if self.peername is None and self.tcp is not None:
                self.peername = self.tcp.get_extra_info("peername")
            return self.peername if self.peername is not None else default
        sslobj = self.sslobj
        if name == "ssl_object":
            return sslobj
        if sslobj is not None:
            if name == "peercert":
                return sslobj.getpeercert()
            if name == "sslcontext":
                return sslobj.context
            if name == "cipher":
                return sslobj.cipher()
            if name == "compression":
                return sslobj.compression()
        if self.tcp is None:
            return default
        return self.tcp.get_extra_info(name, default)
