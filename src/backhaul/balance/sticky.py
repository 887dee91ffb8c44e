"""Sticky sessions by cookie: the edge reads the cookie, the balancer resolves it, the edge
sets it when the balancer says so.

    token = sticky.token(headers)                      # None without the cookie
    ep, set_cookie = balancer.pick_sticky(token, key)
    if set_cookie:
        response_headers.append((b"set-cookie", sticky.set_cookie(ep.token)))

The cookie carries :attr:`EndpointState.token`, a digest of the endpoint's key: the same in
every worker and after a restart, and not the upstream address. When that endpoint is down,
ejected, draining or gone, ``pick_sticky()`` picks a healthy one and asks for the cookie to be
set again, so the client moves once and then stays.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from backhaul.balance.hash_key import cookie_value

__all__ = ["StickyCookie"]

_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 6265 4.1.1 cookie-name
_PATH: Final = re.compile(r"/[\x21-\x3a\x3c-\x7e]*")  # av-octets without ';'


@dataclass(frozen=True, slots=True)
class StickyCookie:
    """The sticky cookie's name and attributes (RFC 6265 section 4.1). ``max_age`` None
    makes a session cookie."""

    name: str = "backhaul_sticky"
    path: str = "/"
    max_age: int | None = None
    secure: bool = False
    http_only: bool = True
    same_site: Literal["Lax", "Strict", "None"] | None = "Lax"
    _name: bytes = field(init=False, repr=False, compare=False)
    _suffix: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.name):
            raise ValueError(
                f"sticky.cookie: found {self.name!r}, expected a cookie name (letters, digits,"
                " '-', '_' ...), such as 'backhaul_sticky'"
            )
        if not _PATH.fullmatch(self.path):
            raise ValueError(
                f"sticky.path: found {self.path!r}, expected a path starting with '/' without"
                " ';', spaces or control characters"
            )
        if self.max_age is not None and self.max_age < 0:
            raise ValueError(f"sticky.max_age: found {self.max_age!r}, expected 0 or more")
        if self.same_site == "None" and not self.secure:
            raise ValueError(
                "sticky.same_site: found 'None' without secure: browsers drop such cookies;"
                " set secure: true or choose 'Lax'"
            )
        parts = [f"; Path={self.path}"]
        if self.max_age is not None:
            parts.append(f"; Max-Age={self.max_age}")
        if self.secure:
            parts.append("; Secure")
        if self.http_only:
            parts.append("; HttpOnly")
        if self.same_site is not None:
            parts.append(f"; SameSite={self.same_site}")
        object.__setattr__(self, "_name", self.name.encode())
        object.__setattr__(self, "_suffix", "".join(parts).encode())

    def token(self, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
        """The endpoint token the request's cookie carries, or None."""
        raw = cookie_value(headers, self._name)
        if raw is None:
            return None
        raw = raw.strip(b'"')
        return raw.decode("ascii") if raw.isascii() and raw.isalnum() else None

    def set_cookie(self, token: str) -> bytes:
        """The Set-Cookie field value that pins the client to the endpoint of ``token``."""
        return self._name + b"=" + token.encode() + self._suffix
