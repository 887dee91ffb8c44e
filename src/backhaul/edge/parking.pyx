# cython: language_level=3
"""Idle keep-alive connections, parked outside the event loop's transports.

A downstream connection waiting for its next request costs the loop a transport, a libuv
handle and the connection's protocol object: about 1.9 kB each, most of the worker's memory
when thousands of clients hold their connections open. Once such a connection has been idle
for a tick, the worker parks it here: its socket joins one epoll set that the loop watches
through a single reader, and what is kept of it is 16 bytes (its keep-alive deadline and its
listener). Its transport and protocol are freed.

When a parked socket becomes readable it leaves the set: with bytes waiting it is handed back
to the worker, which gives it a new transport and protocol (the bytes are still in the
kernel's buffer); closed by its client, or failed, it is closed here. At its keep-alive
deadline it is closed, as an idle connection with a transport would be. Only plain TCP
connections are parked: a TLS session's state lives in its transport.
"""

from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdlib cimport free, realloc
from libc.string cimport memset


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        unsigned int u32
        unsigned long u64

    cdef struct epoll_event:
        unsigned int events
        epoll_data_t data

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    enum:
        EPOLL_CLOEXEC
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL
        EPOLLIN
        EPOLLRDHUP


cdef extern from "<fcntl.h>" nogil:
    int fcntl(int fd, int cmd, int arg)
    enum:
        F_DUPFD_CLOEXEC


cdef extern from "<unistd.h>" nogil:
    int close(int fd)


cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int fd, void* buf, size_t n, int flags)
    enum:
        MSG_PEEK
        MSG_DONTWAIT


cdef extern from "<malloc.h>" nogil:
    int malloc_trim(size_t pad)


cdef struct Slot:
    double deadline
    int listener  # the listener's index + 1; 0: the slot is free


cdef enum:
    READY_BATCH = 256  # sockets taken from the epoll set per call of ready()


cdef class ConnectionPark:
    """Parked sockets, indexed by their file descriptor (the one this object owns)."""

    cdef int epfd
    cdef Slot* slots
    cdef int capacity
    cdef int top  # one more than the highest descriptor ever parked
    cdef public list counts  # parked connections per listener index
    cdef object resume  # resume(listener_index, fd): the worker makes the fd a connection again

    def __cinit__(self, int listeners, resume):
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")
        self.slots = NULL
        self.capacity = 0
        self.top = 0
        self.counts = [0] * listeners
        self.resume = resume

    def __dealloc__(self):
        self._close_all()
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1
        free(self.slots)
        self.slots = NULL

    def fileno(self):
        """The epoll set's descriptor: readable when a parked socket is."""
        return self.epfd

    def __len__(self):
        return sum(self.counts)

    def park(self, int fd, double deadline, int listener):
        """Take a duplicate of socket ``fd`` (the caller then closes its transport) until
        ``deadline``. Returns False when it cannot (the caller keeps the connection as it
        is)."""
        cdef int own
        cdef epoll_event ev
        if self.epfd < 0 or listener < 0 or listener >= len(self.counts):
            return False
        own = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        if own < 0:
            return False
        if own >= self.capacity and not self._grow(own + 1):
            close(own)
            return False
        ev.events = EPOLLIN | EPOLLRDHUP
        ev.data.u64 = 0
        ev.data.fd = own
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, own, &ev) < 0:
            close(own)
            return False
        self.slots[own].deadline = deadline
        self.slots[own].listener = listener + 1
        if own >= self.top:
            self.top = own + 1
        self.counts[listener] += 1
        return True

    def ready(self):
        """Take the parked sockets that became readable out of the set: with bytes waiting,
        hand them to ``resume``; closed or failed, close them."""
        cdef epoll_event events[READY_BATCH]
        cdef int n, i, fd, listener
        cdef ssize_t got
        cdef char byte
        if self.epfd < 0:
            return
        n = epoll_wait(self.epfd, events, READY_BATCH, 0)
        for i in range(n):
            fd = events[i].data.fd
            if fd < 0 or fd >= self.top or self.slots[fd].listener == 0:
                continue
            listener = self.slots[fd].listener - 1
            got = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT)
            if got < 0 and (errno == EAGAIN or errno == EINTR):
                continue  # nothing to read after all: stays parked
            self._forget(fd)
            if got > 0:
                self.resume(listener, fd)  # the descriptor is the callback's from here
            else:
                close(fd)  # the client closed (0) or the connection failed

    def expire(self, double now):
        """Close the parked connections whose keep-alive deadline is before ``now``."""
        cdef int fd
        for fd in range(self.top):
            if self.slots[fd].listener and self.slots[fd].deadline < now:
                self._forget(fd)
                close(fd)

    def shorten(self, list by):
        """Bring every parked deadline ``by[listener]`` seconds closer (draining)."""
        cdef int fd
        for fd in range(self.top):
            if self.slots[fd].listener:
                self.slots[fd].deadline -= <double>by[self.slots[fd].listener - 1]

    def close_all(self):
        """Close every parked connection (the worker stops or drains)."""
        self._close_all()

    @staticmethod
    def trim():
        """Give the C heap's free pages back to the system (after parking many)."""
        malloc_trim(0)

    cdef void _close_all(self):
        cdef int fd
        for fd in range(self.top):
            if self.slots[fd].listener:
                self._forget(fd)
                close(fd)

    cdef void _forget(self, int fd):
        cdef int listener = self.slots[fd].listener - 1
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, NULL)
        self.slots[fd].listener = 0
        self.counts[listener] -= 1

    cdef bint _grow(self, int need):
        cdef int size = self.capacity * 2 if self.capacity else 1024
        cdef Slot* grown
        while size < need:
            size *= 2
        grown = <Slot*>realloc(self.slots, size * sizeof(Slot))
        if grown == NULL:
            return False
        memset(&grown[self.capacity], 0, (size - self.capacity) * sizeof(Slot))
        self.slots = grown
        self.capacity = size
        return True
