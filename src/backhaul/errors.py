"""The one error tree of backhaul.

Every error backhaul raises on purpose is a :class:`BackhaulError`. A dependency's exception
never leaks to a user: it is mapped at the boundary with ``raise ... from exc``.

    BackhaulError
    ├── ConfigError                 a config that cannot run (file, path, found, expected)
    ├── UsageError                  bad command-line input (exit code 2)
    ├── ProtocolError               bytes that break a protocol
    │   ├── LocalProtocolError      we were about to send something invalid
    │   └── RemoteProtocolError     the peer sent something invalid (carries a status hint)
    ├── NetworkError                a socket-level failure, with the peer address
    │   ├── ConnectError
    │   └── PermissionNeeded        raw sockets etc. need privilege (says how to get it)
    ├── TimeoutError_               a deadline passed; split by phase
    │   ├── ConnectTimeout
    │   ├── TLSTimeout
    │   ├── ReadTimeout
    │   ├── WriteTimeout
    │   └── PoolTimeout
    └── NoAnswer                    a probe or query got nothing back (exit code 1)

Errors carry data, not just text: ``ConfigError.path``, ``RemoteProtocolError.status_hint``,
``NetworkError.peer``. Messages say what was wrong and what to do.
"""

from __future__ import annotations

__all__ = [
    "BackhaulError",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "LocalProtocolError",
    "NetworkError",
    "NoAnswer",
    "PermissionNeeded",
    "PoolTimeout",
    "ProtocolError",
    "ReadTimeout",
    "RemoteProtocolError",
    "TLSTimeout",
    "TimeoutError_",
    "UsageError",
    "WriteTimeout",
]


class BackhaulError(Exception):
    """Root of every error backhaul raises on purpose."""

    exit_code = 1


class UsageError(BackhaulError):
    """Bad command-line input: a wrong address, an unknown record type, a missing file."""

    exit_code = 2


class ConfigError(BackhaulError):
    """A config that cannot run.

    ``problems`` is a list of ``(path, message)`` pairs, where ``path`` is the dotted config
    path such as ``routes[3].match.path``; ``source`` names the file (or ``<embedded>``).
    """

    exit_code = 2

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s) in the config"]
        lines += [f"  {path or '<top>'}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class ProtocolError(BackhaulError):
    """Bytes that break a protocol's rules."""


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid. ``status_hint`` is the HTTP status to answer with."""

    def __init__(self, detail: str, status_hint: int = 400, rfc: str | None = None) -> None:
        self.detail = detail
        self.status_hint = status_hint
        self.rfc = rfc
        super().__init__(detail if rfc is None else f"{detail} ({rfc})")


class NetworkError(BackhaulError):
    """A socket-level failure talking to ``peer``."""

    def __init__(self, message: str, peer: str | None = None) -> None:
        self.peer = peer
        super().__init__(message)


class ConnectError(NetworkError):
    """Could not connect to the peer."""


class PermissionNeeded(NetworkError):
    """The operation needs privilege (raw sockets, binding low ports); the message says how."""

    exit_code = 2


class TimeoutError_(BackhaulError):  # stdlib TimeoutError is a different thing
    """A deadline passed. ``phase`` names which one."""

    phase = "total"


class ConnectTimeout(TimeoutError_):
    phase = "connect"


class TLSTimeout(TimeoutError_):
    phase = "tls"


class ReadTimeout(TimeoutError_):
    phase = "read"


class WriteTimeout(TimeoutError_):
    phase = "write"


class PoolTimeout(TimeoutError_):
    phase = "pool"


class NoAnswer(BackhaulError):
    """A probe or a query got nothing back; tools exit 1."""

    exit_code = 1
