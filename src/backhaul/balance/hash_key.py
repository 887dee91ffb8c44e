"""Where ring_hash and maglev take a request's hash key from: a header, a cookie, the client
address or the path."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = ["HashKeySource", "HashKeySpec", "cookie_value"]

HashKeySource = Literal["header", "cookie", "client_ip", "path"]
_SOURCES: Final = ("header", "cookie", "client_ip", "path")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.6.2
_COOKIE: Final = b"cookie"


def cookie_value(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of the cookie ``name`` in the request's Cookie header lines (RFC 6265
    section 5.4: ``name=value`` pairs split by ``;``), the first one when repeated; None when
    absent or empty. Surrounding double quotes are kept, as the RFC says."""
    for header, value in headers:
        if len(header) != 6 or header.lower() != _COOKIE:
            continue
        for pair in value.split(b";"):
            k, eq, v = pair.partition(b"=")
            if eq and k.strip() == name:
                return v.strip() or None
    return None


@dataclass(frozen=True, slots=True)
class HashKeySpec:
    """A hash-key source: ``header`` or ``cookie`` (with ``name``), ``client_ip`` or
    ``path``. ``extract()`` returns None when the request has no such key or it is empty
    (the balancer then spreads such requests round robin)."""

    source: HashKeySource
    name: str = ""
    _name: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.source not in _SOURCES:
            raise ValueError(
                f"hash_key.source: found {self.source!r}, expected one of {', '.join(_SOURCES)}"
            )
        if self.source in ("header", "cookie"):
            if not _TOKEN.fullmatch(self.name):
                raise ValueError(
                    f"hash_key.name: found {self.name!r}, expected the {self.source} name to"
                    f" hash on, such as {'x-user-id' if self.source == 'header' else 'session'}"
                )
        elif self.name:
            raise ValueError(
                f"hash_key.name: found {self.name!r}, expected no name with source {self.source!r}"
            )
        name = self.name.lower() if self.source == "header" else self.name
        object.__setattr__(self, "_name", name.encode())

    def extract(
        self, client_ip: str, path: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> bytes | None:
        """The key of one request: ``client_ip`` as text, ``path`` without the query,
        ``headers`` the raw (name, value) lines."""
        source = self.source
        if source == "header":
            name = self._name
            size = len(name)
            for header, value in headers:
                if len(header) == size and header.lower() == name:
                    return value.strip(b" \t") or None
            return None
        if source == "client_ip":
            return client_ip.encode()
        if source == "path":
            return path.encode()
        return cookie_value(headers, self._name)
