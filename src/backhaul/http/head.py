"""Framing and connection facts of a message head, validated strictly (RFC 9110, RFC 9112).

The edge's protocol collects the header lines httptools (llhttp) hands it and calls
:func:`inspect_request_head` once per request and :func:`inspect_response_head` once per
upstream response. Each makes one pass over the header list, looks only at the few names
that decide framing and routing, and raises :class:`~backhaul.errors.RemoteProtocolError`
for anything that could make two HTTP parsers disagree about where a message ends.

Decisions (each is a test in tests/unit/test_http_head.py):

- Request Transfer-Encoding (RFC 9112 6.1, 6.3): only a single header whose value is exactly
  ``chunked`` is accepted. Another coding (``gzip``, ``gzip, chunked``) gets 501: the edge
  re-frames every body and implements no other transfer coding. ``chunked`` applied twice,
  ``chunked`` not last, a repeated TE header, an empty value or element, and any spelling
  that is not exactly ``chunked`` (``Chunked``, ``chunked;x=1``, ``"chunked"``) get 400:
  transfer-coding names are case-insensitive in RFC 9112 7, but no conforming client sends
  another case and such variants are the stock material of request smuggling. Any TE on an
  HTTP/1.0 request is 400 (RFC 9112 6.1: a 1.0 recipient cannot have been sent chunked).
- Content-Length (RFC 9110 8.6, RFC 9112 6.3): one header, 1*DIGIT, at most 2**63-1.
  Repeated headers are refused even when equal, so are lists (``5, 5``).
- Content-Length together with Transfer-Encoding is refused (RFC 9112 6.1 allows it; a
  proxy that forwards such a message is the smuggling vector).
- Field names must be RFC 9110 5.1 tokens (so whitespace before the colon is refused);
  values may hold HTAB, SP, VCHAR and obs-text, nothing else (RFC 9110 5.5).
- Host (RFC 9112 3.2): required on HTTP/1.1 unless the request target was absolute-form, at
  most one, and a valid authority (see :mod:`backhaul.http.authority`). With an
  absolute-form target its authority wins over Host (RFC 9112 3.2.2).
- Response Transfer-Encoding: RFC 9112 6.3 rule 4 lets a response whose final coding is not
  ``chunked`` be read until the connection closes. The edge refuses it with 502 instead:
  Transfer-Encoding is hop-by-hop and the edge re-frames every body, so such a body would
  reach the client still encoded and without the header that says so. Mainstream origins
  never send it. A response that needs no body (HEAD, 1xx, 204, 304) is exempt from the
  coding check, since no body follows.
"""

from __future__ import annotations

import re

from backhaul.errors import RemoteProtocolError
from backhaul.http.authority import show, split_authority

__all__ = [
    "RequestFacts",
    "ResponseFacts",
    "inspect_request_head",
    "inspect_response_head",
]

_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# RFC 9110 5.6.2 tchar; ``name.translate(None, _TCHAR)`` is empty exactly for token bytes.
_TCHAR = _ALNUM + b"!#$%&'*+-.^_`|~"
_OWS = b" \t"
_MAX_CONTENT_LENGTH = 2**63 - 1

# The names we look at; everything else is only checked for syntax.
_HOST = 1
_CONTENT_LENGTH = 2
_TRANSFER_ENCODING = 3
_CONNECTION = 4
_UPGRADE = 5
_EXPECT = 6
_INTERESTING: dict[bytes, int] = {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
    b"expect": _EXPECT,
}
# Field names as received -> their kind (0: a valid name we do not look at). Real traffic
# uses a few dozen spellings, so a hit skips the lower() and the token check. Bounded: once
# full it is cleared, so junk names can only cost speed, never memory.
_NAME_CACHE: dict[bytes, int] = {}
_NAME_CACHE_MAX = 512
# Host values as received -> (host, port), bounded the same way.
_HOST_CACHE: dict[bytes, tuple[str, int | None]] = {}
_HOST_CACHE_MAX = 256
# RFC 9110 5.5 field-value bytes are HTAB, SP, VCHAR and obs-text; this finds any other
# (NUL, CR, LF, the other CTLs, DEL).
_bad_value = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search
_EMPTY_TOKENS: frozenset[bytes] = frozenset()
_CLOSE_ONLY: frozenset[bytes] = frozenset((b"close",))
_KEEP_ALIVE_ONLY: frozenset[bytes] = frozenset((b"keep-alive",))
_UPGRADE_ONLY: frozenset[bytes] = frozenset((b"upgrade",))
# The Connection values nearly every message carries, spelled as clients spell them.
_COMMON_TOKENS: dict[bytes, frozenset[bytes]] = {
    b"keep-alive": _KEEP_ALIVE_ONLY,
    b"Keep-Alive": _KEEP_ALIVE_ONLY,
    b"close": _CLOSE_ONLY,
    b"Close": _CLOSE_ONLY,
    b"upgrade": _UPGRADE_ONLY,
    b"Upgrade": _UPGRADE_ONLY,
}


class RequestFacts:
    """What the edge needs to know about a request head.

    ``host`` is lower-case without port ("" when the request named none); ``authority`` is
    the Host value as received (stripped of surrounding whitespace) or the absolute-form
    authority; ``upgrade`` is the lower-cased first protocol of Upgrade when Connection
    lists ``upgrade``; ``connection_tokens`` are the lower-cased Connection options;
    ``version`` is b"1.1" or b"1.0".
    """

    _FIELDS = (
        "authority",
        "chunked",
        "connection_tokens",
        "content_length",
        "expect_continue",
        "host",
        "keep_alive",
        "port",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        host: str,
        authority: bytes,
        port: int | None,
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        expect_continue: bool,
        upgrade: bytes | None,
        connection_tokens: frozenset[bytes],
        version: bytes = b"1.1",
    ) -> None:
        self.host = host
        self.authority = authority
        self.port = port
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.connection_tokens = connection_tokens
        self.version = version

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"RequestFacts({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestFacts):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)


class ResponseFacts:
    """What the edge needs to know about an upstream response head.

    ``no_body``: HEAD, 1xx, 204 and 304 responses carry no body whatever their headers say
    (RFC 9112 6.3 rules 1-2); ``content_length`` is still reported for HEAD/304, where it
    describes the representation and the edge should echo it. ``until_close``: the body is
    delimited by the upstream closing the connection (no Content-Length, not chunked), so
    ``keep_alive`` is False.
    """

    _FIELDS = (
        "chunked",
        "connection_tokens",
        "content_length",
        "keep_alive",
        "no_body",
        "status",
        "until_close",
        "version",
    )

    def __init__(
        self,
        status: int,
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        no_body: bool,
        until_close: bool,
        connection_tokens: frozenset[bytes],
        version: bytes = b"1.1",
    ) -> None:
        self.status = status
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.no_body = no_body
        self.until_close = until_close
        self.connection_tokens = connection_tokens
        self.version = version

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"ResponseFacts({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResponseFacts):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)


def _bad_field(name: bytes, value: bytes, status: int, side: str) -> RemoteProtocolError:
    """The error for a header line that fails RFC 9110 5.1/5.5 syntax."""
    if not name:
        return RemoteProtocolError(
            f"{side} has a header line with an empty name", status, rfc="RFC 9110 5.1"
        )
    if name.translate(None, _TCHAR):
        if name[-1:] in (b" ", b"\t"):
            return RemoteProtocolError(
                f"{side} has whitespace between header name {show(name.rstrip())} and the colon",
                status,
                rfc="RFC 9112 5.1",
            )
        return RemoteProtocolError(
            f"{side} has a header name {show(name)} that is not a token (letters, digits and "
            "!#$%&'*+-.^_`|~ only)",
            status,
            rfc="RFC 9110 5.1",
        )
    return RemoteProtocolError(
        f"{side} header {show(name)} has a control character (NUL, CR, LF or another CTL) "
        "in its value",
        status,
        rfc="RFC 9110 5.5",
    )


def _bad_version(version: bytes | str, status: int, side: str) -> RemoteProtocolError:
    shown = version if isinstance(version, str) else show(version, 12)
    return RemoteProtocolError(
        f"{side} is HTTP/{shown}; this listener speaks HTTP/1.0 and HTTP/1.1",
        status,
        rfc="RFC 9110 6.2",
    )


def _name_kind(name: bytes, status: int, side: str) -> int:
    """Validate a field name not seen before and return its kind (slow path of the cache)."""
    if not name or name.translate(None, _TCHAR):
        raise _bad_field(name, b"", status, side)
    kind = _INTERESTING.get(name.lower(), 0)
    if len(_NAME_CACHE) >= _NAME_CACHE_MAX:
        _NAME_CACHE.clear()
    _NAME_CACHE[name] = kind
    return kind


def _host(raw: bytes) -> tuple[str, int | None]:
    """``split_authority`` for a Host value, through the bounded cache."""
    cache: dict[bytes, tuple[str, int | None]] = _HOST_CACHE
    hit = cache.get(raw)
    if hit is not None:
        return hit
    result = split_authority(raw, 400, "Host")
    if len(_HOST_CACHE) >= _HOST_CACHE_MAX:
        _HOST_CACHE.clear()
    _HOST_CACHE[raw] = result
    return result


def _content_length(value: bytes, seen: bool, status: int, side: str) -> int:
    if seen:
        raise RemoteProtocolError(
            f"{side} has more than one Content-Length header; send exactly one",
            status,
            rfc="RFC 9110 8.6",
        )
    if not value.isdigit():  # fast path: no surrounding whitespace
        value = value.strip(_OWS)
    if not value.isdigit():  # also false for b"", "+5", "-5", "0x10", "5, 5"
        raise RemoteProtocolError(
            f"{side} has Content-Length {show(value)}; it must be decimal digits only",
            status,
            rfc="RFC 9110 8.6",
        )
    # int() of a long digit string is slow and, past 4300 digits, an error: check length first
    if len(value) > 18 and (len(value.lstrip(b"0")) > 19 or int(value) > _MAX_CONTENT_LENGTH):
        raise RemoteProtocolError(
            f"{side} has Content-Length {show(value)}, larger than 2**63-1",
            status,
            rfc="RFC 9110 8.6",
        )
    return int(value)


def _tokens(value: bytes) -> frozenset[bytes]:
    """Connection options from the (comma-joined) Connection values (RFC 9110 7.6.1)."""
    common = _COMMON_TOKENS.get(value)
    if common is not None:
        return common
    out: set[bytes] = set()
    for item in value.lower().split(b","):
        item = item.strip(_OWS)
        if item:
            out.add(item)
    return frozenset(out)


def _check_request_te(value: bytes) -> None:
    """Refuse every request Transfer-Encoding value except exactly ``chunked``."""
    rfc = "RFC 9112 6.1"
    items = [item.strip(_OWS) for item in value.split(b",")]
    if not all(items):
        raise RemoteProtocolError(
            f"request has Transfer-Encoding {show(value)} with an empty coding; send "
            "'Transfer-Encoding: chunked'",
            400,
            rfc=rfc,
        )
    lowered = [item.lower() for item in items]
    if lowered.count(b"chunked") > 1:
        raise RemoteProtocolError(
            f"request has Transfer-Encoding {show(value)}: chunked is applied more than once",
            400,
            rfc=rfc,
        )
    for item, low in zip(items, lowered, strict=True):
        if low == b"chunked" and item != b"chunked":
            raise RemoteProtocolError(
                f"request has Transfer-Encoding {show(value)}; the edge accepts the coding "
                "written exactly as 'chunked'",
                400,
                rfc=rfc,
            )
        name = low.partition(b";")[0].strip(_OWS)
        if not name or name.translate(None, _TCHAR) or (name == b"chunked" and low != name):
            raise RemoteProtocolError(
                f"request has Transfer-Encoding {show(value)}, which is not a list of "
                "transfer codings",
                400,
                rfc=rfc,
            )
    if lowered[-1] != b"chunked":
        if b"chunked" in lowered:
            raise RemoteProtocolError(
                f"request has Transfer-Encoding {show(value)}: chunked must be the final "
                "coding, otherwise the body length cannot be determined",
                400,
                rfc="RFC 9112 6.3",
            )
        raise RemoteProtocolError(
            f"request has Transfer-Encoding {show(value)}; the edge implements only 'chunked'",
            501,
            rfc="RFC 9112 6.1",
        )
    raise RemoteProtocolError(
        f"request has Transfer-Encoding {show(value)}; the edge implements only 'chunked' "
        "(send the body with 'Transfer-Encoding: chunked' alone)",
        501,
        rfc="RFC 9112 6.1",
    )


def inspect_request_head(
    version: bytes | str,
    headers: list[tuple[bytes, bytes]],
    absolute_authority: bytes | None = None,
    values_checked: bool = False,
) -> RequestFacts:
    """Validate a request head and return its :class:`RequestFacts`.

    ``version`` is ``b"1.1"`` or ``b"1.0"`` (httptools' ``get_http_version()``, which returns
    ``str``, is accepted as is; any other version, such as the ``2.0`` llhttp lets through,
    raises with status_hint 505); ``headers`` are the raw (name, value) lines in order;
    ``absolute_authority`` is the authority of an absolute-form target (see
    :func:`backhaul.http.target.parse_target`). Raises RemoteProtocolError with status_hint
    400 (501 for an unimplemented transfer coding).

    ``values_checked=True`` skips the per-value control-character scan: pass it only for
    header lines that came out of httptools (llhttp) in its default strict mode, which
    refuses exactly the same bytes (tests/unit/test_http_llhttp.py proves the equivalence
    byte by byte, so an httptools upgrade that changes it fails the suite). Names are always
    checked; that costs nothing once a spelling has been seen.
    """
    if version == b"1.1" or version == "1.1":
        http10 = False
    elif version == b"1.0" or version == "1.0":
        http10 = True
    else:
        raise _bad_version(version, 505, "request")
    host_v: bytes | None = None
    cl: int | None = None
    te: bytes | None = None
    conn: bytes | None = None
    upgrade_v: bytes | None = None
    expect_v: bytes | None = None
    names: dict[bytes, int] = _NAME_CACHE
    name: bytes
    value: bytes
    for name, value in headers:
        kind = names.get(name)
        if kind is None:
            kind = _name_kind(name, 400, "request")
        if not values_checked and _bad_value(value) is not None:
            raise _bad_field(name, value, 400, "request")
        if not kind:
            continue
        if kind == _HOST:
            if host_v is not None:
                raise RemoteProtocolError(
                    "request has more than one Host header; send exactly one",
                    400,
                    rfc="RFC 9112 3.2",
                )
            host_v = value.strip(_OWS)
        elif kind == _CONTENT_LENGTH:
            if cl is None and len(value) < 19 and value.isdigit():
                cl = int(value)
            else:
                cl = _content_length(value, cl is not None, 400, "request")
        elif kind == _TRANSFER_ENCODING:
            if te is not None:
                raise RemoteProtocolError(
                    "request has more than one Transfer-Encoding header; send one "
                    "'Transfer-Encoding: chunked'",
                    400,
                    rfc="RFC 9112 6.1",
                )
            te = value
        elif kind == _CONNECTION:
            # Repeated Connection lines are one comma-separated list (RFC 9110 5.3).
            conn = value if conn is None else conn + b"," + value
        elif kind == _UPGRADE:
            upgrade_v = value
        else:
            expect_v = value

    chunked = False
    if te is not None:
        if http10:
            raise RemoteProtocolError(
                "HTTP/1.0 request has Transfer-Encoding; HTTP/1.0 has no chunked coding, "
                "send Content-Length or use HTTP/1.1",
                400,
                rfc="RFC 9112 6.1",
            )
        if cl is not None:
            raise RemoteProtocolError(
                "request has both Content-Length and Transfer-Encoding; send only one "
                "(a message with both is how requests are smuggled)",
                400,
                rfc="RFC 9112 6.1",
            )
        if te.strip(_OWS) != b"chunked":
            _check_request_te(te)
        chunked = True

    if absolute_authority is not None:
        authority = absolute_authority
        host, port = split_authority(authority, 400, "absolute-form target authority")
        if host_v is not None and host_v:
            _host(host_v)  # still must be a valid Host
    elif host_v is not None:
        authority = host_v
        host, port = _host(host_v)
    elif http10:
        authority, host, port = b"", "", None
    else:
        raise RemoteProtocolError(
            "HTTP/1.1 request has no Host header; add 'Host: <name>'", 400, rfc="RFC 9112 3.2"
        )

    tokens = _EMPTY_TOKENS if conn is None else _tokens(conn)
    if http10:
        keep_alive = b"keep-alive" in tokens and b"close" not in tokens
        expect_continue = False  # RFC 9110 10.1.1: ignored in HTTP/1.0 requests
    else:
        keep_alive = b"close" not in tokens
        expect_continue = expect_v is not None and expect_v.strip(_OWS).lower() == b"100-continue"
    upgrade: bytes | None = None
    # RFC 9110 7.8: Upgrade is ignored in an HTTP/1.0 request.
    if upgrade_v is not None and not http10 and b"upgrade" in tokens:
        upgrade = upgrade_v.partition(b",")[0].strip(_OWS).lower() or None
    # Made without a call of the class: its fields are C struct members once compiled.
    facts: RequestFacts = RequestFacts.__new__(RequestFacts)
    facts.host = host
    facts.authority = authority
    facts.port = port
    facts.content_length = cl
    facts.chunked = chunked
    facts.keep_alive = keep_alive
    facts.expect_continue = expect_continue
    facts.upgrade = upgrade
    facts.connection_tokens = tokens
    facts.version = b"1.0" if http10 else b"1.1"
    return facts


def inspect_response_head(
    status: int,
    version: bytes | str,
    headers: list[tuple[bytes, bytes]],
    request_method: bytes,
    *,
    values_checked: bool = False,
) -> ResponseFacts:
    """Validate an upstream response head and return its :class:`ResponseFacts`.

    Raises RemoteProtocolError with status_hint 502 for framing the edge cannot relay
    safely: Content-Length with Transfer-Encoding, repeated or invalid Content-Length,
    a Transfer-Encoding other than exactly ``chunked`` (see the module docstring), and
    header lines that break RFC 9110 syntax. The caller closes that upstream connection.
    ``values_checked`` as in :func:`inspect_request_head`.
    """
    if version == b"1.1" or version == "1.1":
        http10 = False
    elif version == b"1.0" or version == "1.0":
        http10 = True
    else:
        raise _bad_version(version, 502, "upstream response")
    cl: int | None = None
    te: bytes | None = None
    conn: bytes | None = None
    cached = _NAME_CACHE.get
    bad_value = _bad_value
    for name, value in headers:
        kind = cached(name)
        if kind is None:
            kind = _name_kind(name, 502, "upstream response")
        if not values_checked and bad_value(value) is not None:
            raise _bad_field(name, value, 502, "upstream response")
        if not kind:
            continue
        if kind == _CONTENT_LENGTH:
            if cl is None and len(value) < 19 and value.isdigit():
                cl = int(value)
            else:
                cl = _content_length(value, cl is not None, 502, "upstream response")
        elif kind == _TRANSFER_ENCODING:
            if te is not None:
                raise RemoteProtocolError(
                    "upstream response has more than one Transfer-Encoding header",
                    502,
                    rfc="RFC 9112 6.1",
                )
            te = value
        elif kind == _CONNECTION:
            # Repeated Connection lines are one comma-separated list (RFC 9110 5.3).
            conn = value if conn is None else conn + b"," + value

    no_body = status < 200 or status == 204 or status == 304 or request_method == b"HEAD"
    chunked = False
    if te is not None:
        if cl is not None:
            raise RemoteProtocolError(
                "upstream response has both Content-Length and Transfer-Encoding",
                502,
                rfc="RFC 9112 6.1",
            )
        if http10:
            raise RemoteProtocolError(
                "upstream HTTP/1.0 response has Transfer-Encoding", 502, rfc="RFC 9112 6.1"
            )
        if te.strip(_OWS) == b"chunked":
            chunked = not no_body
        elif not no_body:
            raise RemoteProtocolError(
                f"upstream response has Transfer-Encoding {show(te)}; the edge relays only "
                "'chunked' or Content-Length bodies",
                502,
                rfc="RFC 9112 6.3",
            )

    tokens = _EMPTY_TOKENS if conn is None else _tokens(conn)
    if http10:
        keep_alive = b"keep-alive" in tokens and b"close" not in tokens
    else:
        keep_alive = b"close" not in tokens
    until_close = not no_body and not chunked and cl is None
    if until_close:
        keep_alive = False
    return ResponseFacts(
        status,
        cl,
        chunked,
        keep_alive,
        no_body,
        until_close,
        tokens,
        b"1.0" if http10 else b"1.1",
    )
