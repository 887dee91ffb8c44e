"""The authority of a request: a Host value or the authority of an absolute-form target.

RFC 9110 7.2 (Host) and RFC 3986 3.2 (authority = [ userinfo "@" ] host [ ":" port ]).

What we accept is deliberately narrower than RFC 3986's ``reg-name``:

- host: letters, digits, ``-``, ``.``, ``_``, ``~`` (RFC 3986 *unreserved*), or an IPv6
  literal in brackets. Sub-delims (``!$&'()*+,;=``) and percent-encoding are legal in a
  URI's reg-name but never name a host the edge could route to or reach (DNS labels and IP
  addresses cannot hold them), and they are a known routing and log-injection vector, so
  they are refused. IPvFuture literals and IPv6 zone ids are refused too.
- userinfo (``user@host``) is refused: RFC 9110 4.2.4 deprecates it and it is the classic
  way to make a URL point somewhere else than it appears to.
- port: digits only, at most 65535. An empty port (``host:``) is allowed by RFC 3986 3.2.3
  and means "no port".

The host is returned lower-cased (hosts are case-insensitive, RFC 3986 3.2.2) with one
trailing dot removed (``example.com.`` is the same DNS name as ``example.com``), IPv6
literals keep their brackets (``[::1]``) so the value cannot be confused with a name.
"""

from __future__ import annotations

import ipaddress

from backhaul.errors import RemoteProtocolError

__all__ = ["show", "split_authority"]

_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Bytes that may appear in an authority we accept (checked with one bytes.translate call).
_AUTHORITY_CHARS = _ALNUM + b"-._~:[]"
_RFC_HOST = "RFC 9110 7.2, RFC 3986 3.2"


def show(raw: bytes, limit: int = 40) -> str:
    """A short, printable rendering of peer bytes for an error detail (never the raw bytes)."""
    text = repr(raw[:limit])[1:]  # b'...' -> '...'
    return text + ("…" if len(raw) > limit else "")


def split_authority(raw: bytes, status: int = 400, what: str = "Host") -> tuple[str, int | None]:
    """Split ``raw`` (``host[:port]``) into ``(host, port)`` or raise RemoteProtocolError.

    ``what`` names the source in the error detail (``Host`` header, absolute-form target,
    CONNECT target). An empty ``raw`` gives ``("", None)``: RFC 9112 3.2 lets a client send
    an empty Host when the target URI has no authority.
    """
    if not raw:
        return "", None
    if raw.translate(None, _AUTHORITY_CHARS):
        if b"@" in raw:
            raise RemoteProtocolError(
                f"{what} {show(raw)} carries userinfo (user@host); send the host only",
                status,
                rfc="RFC 9110 4.2.4",
            )
        raise RemoteProtocolError(
            f"{what} {show(raw)} holds characters that are not allowed in a host name "
            "(letters, digits, '-', '.', '_', '~', or an IPv6 literal in brackets)",
            status,
            rfc=_RFC_HOST,
        )
    if raw[0] == 0x5B:  # "["
        end = raw.find(b"]")
        if end < 0:
            raise RemoteProtocolError(
                f"{what} {show(raw)} opens an IPv6 literal with '[' and never closes it",
                status,
                rfc=_RFC_HOST,
            )
        literal = raw[1:end].decode("ascii")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise RemoteProtocolError(
                f"{what} {show(raw)} has an IPv6 literal that is not a valid IPv6 address",
                status,
                rfc=_RFC_HOST,
            ) from None
        host = "[" + literal.lower() + "]"
        rest = raw[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != 0x3A:  # ":"
            raise RemoteProtocolError(
                f"{what} {show(raw)} has text after the IPv6 literal that is not ':port'",
                status,
                rfc=_RFC_HOST,
            )
        port_b = rest[1:]
    else:
        host_b, _, port_b = raw.partition(b":")
        if not host_b or b"[" in raw or b"]" in raw or b":" in port_b:
            raise RemoteProtocolError(
                f"{what} {show(raw)} is not 'host' or 'host:port'",
                status,
                rfc=_RFC_HOST,
            )
        host = host_b.decode("ascii").lower()
        if host[-1] == ".":
            host = host[:-1]
            if not host or host[-1] == ".":
                raise RemoteProtocolError(
                    f"{what} {show(raw)} is not a host name", status, rfc=_RFC_HOST
                )
    if not port_b:
        return host, None
    if not port_b.isdigit() or len(port_b) > 5 or int(port_b) > 65535:
        raise RemoteProtocolError(
            f"{what} {show(raw)} has port {show(port_b, 12)}; a port is 0-65535, digits only",
            status,
            rfc="RFC 3986 3.2.3",
        )
    return host, int(port_b)
