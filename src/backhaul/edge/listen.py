"""Listening sockets of the edge, bound by the supervisor (which must stay lean: this module
imports nothing of the data plane) and shared by its workers."""

from __future__ import annotations

import socket

__all__ = ["bind_listener_socket"]


def bind_listener_socket(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A listening TCP socket for ``host:port``, shared between workers with SO_REUSEPORT."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(4096)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
