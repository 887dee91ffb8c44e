"""Why an address could not be bound, in words that say what to do.

``bind()`` fails for reasons that its ``strerror`` does not explain to someone starting a
server: ``Cannot assign requested address`` (EADDRNOTAVAIL) means that the host part is
not an address of this machine, not that a port is busy; ``Address already in use``
(EADDRINUSE) is the busy port.
"""

from __future__ import annotations

import errno
import os

__all__ = ["explain_bind_error"]


def explain_bind_error(code: int | None, host: str, port: int) -> str:
    """The reason ``bind((host, port))`` failed with ``errno`` ``code``, and what to do."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if code == errno.EADDRNOTAVAIL:
        return (
            f"{host} is not an address of this machine (cannot assign requested address);"
            " listen on one that `ip addr` lists, on 127.0.0.1, or on 0.0.0.0 / [::] for"
            " every address"
        )
    if code == errno.EADDRINUSE:
        return (
            f"{shown} is already in use (another server listens on that port);"
            " stop it or pick another port"
        )
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"no permission to bind {shown} (ports below 1024 need root or"
            " CAP_NET_BIND_SERVICE; pick a port >= 1024)"
        )
    if code == errno.EAFNOSUPPORT:
        family = "IPv6" if ":" in host else "IPv4"
        return f"this machine has no {family}, so {host} cannot be listened on"
    reason = os.strerror(code) if code is not None else "unknown error"
    return f"cannot listen on {shown}: {reason}"
