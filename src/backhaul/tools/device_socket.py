"""A UDP socket tied to one network interface (``SO_BINDTODEVICE``), for DHCP.

DHCP is spoken before addresses exist: a server hears broadcasts on port 67 of each interface
it serves and must answer out of that interface; a client (or the load generator) sends from
port 68 of its interface. Both bind the wildcard address with the socket tied to the device,
broadcasts allowed, and a receive buffer large enough for bursts.
"""

from __future__ import annotations

import socket

from backhaul.errors import NetworkError, PermissionNeeded

__all__ = ["SO_BINDTODEVICE", "udp_socket_on_device"]

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def udp_socket_on_device(
    interface: str,
    port: int,
    host: str = "0.0.0.0",
    *,
    receive_buffer: int = 4 << 20,
    shared: bool = False,
) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` on ``interface``. Sockets tied to
    different interfaces never clash; ``shared`` (``SO_REUSEADDR``) lets another socket bind
    the same port on the same interface too (a second server must not, so it is off)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        sock.bind((host, port))
    except PermissionError as exc:
        sock.close()
        raise PermissionNeeded(
            f"binding UDP port {port} on {interface} needs root (or CAP_NET_BIND_SERVICE and"
            " CAP_NET_RAW); run as root"
        ) from exc
    except OSError as exc:
        sock.close()
        raise NetworkError(
            f"cannot bind UDP port {port} on {interface}: {exc.strerror}"
            " (is another DHCP server or client running there?)"
        ) from exc
    sock.setblocking(False)
    return sock
