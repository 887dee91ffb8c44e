"""``SocketAddress``: a ``(host, port)`` pair as the running edge holds addresses."""

from __future__ import annotations

__all__ = ["SocketAddress"]


class SocketAddress(tuple[str, int]):
    """``(host, port)`` with ``.host``, ``.port`` and ``str()`` as ``[::1]:8080``."""

    __slots__ = ()

    def __new__(cls, host: str, port: int) -> SocketAddress:
        return super().__new__(cls, (host, port))

    def __getnewargs__(self) -> tuple[str, int]:
        return (self[0], self[1])

    @property
    def host(self) -> str:
        return self[0]

    @property
    def port(self) -> int:
        return self[1]

    def __str__(self) -> str:
        host, port = self
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
