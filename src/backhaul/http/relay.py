"""Relaying a head across the edge in one pass: the hot-path form of the header rules.

:func:`relay_request_head` and :func:`relay_response_head` produce the exact bytes that
``encode_head(first_line, forward_*_headers(...) + framing)`` would, but walk the header list
once and build the encoded lines directly, with no intermediate list of pairs. The rules are
those of :mod:`backhaul.http.headers` (hop-by-hop removal, Connection-named headers, the
edge's own X-Forwarded-*/Forwarded/Via/X-Request-Id/Host) and the framing facts those of
:mod:`backhaul.http.head`; tests/unit/test_http_relay.py checks the equivalence on random
heads.

Both take heads whose names and values llhttp has already checked (``values_checked``).
"""

from __future__ import annotations

from typing import NamedTuple

from backhaul.http.head import RequestFacts, ResponseFacts, inspect_response_head
from backhaul.http.headers import (
    _ALWAYS_DROPPED,
    _DROP,
    _FORWARDED,
    _HOST,
    _PASS,
    _REQUEST_CACHE,
    _REQUEST_ID,
    _REQUEST_RULES,
    _VIA,
    _XFF,
    _forwarded_value,
    _rule,
    _via_element,
)
from backhaul.http.problem import REASONS

__all__ = ["ResponseRelay", "relay_request_head", "relay_response_head", "status_line"]

# The request rules and their codes are those of backhaul.http.headers (one table); the
# response side adds two codes for what a relayed response head needs besides them.
_FRAMING = 8  # Content-Length, Transfer-Encoding, Connection: inspected, never forwarded
_SERVER = 9

_RESPONSE_RULES: dict[bytes, int] = dict.fromkeys(_ALWAYS_DROPPED, _DROP)
_RESPONSE_RULES.update(
    {
        b"content-length": _FRAMING,
        b"transfer-encoding": _FRAMING,
        b"connection": _FRAMING,
        b"via": _VIA,
        b"server": _SERVER,
    }
)
# Raw spellings -> rule, bounded (the request side shares headers' cache).
_RESPONSE_CACHE: dict[bytes, int] = {}
_OWS = b" \t"

_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s" % (code, reason) for code, reason in REASONS.items()
}


def _drop_named(lines: list[bytes], start: int, named: frozenset[bytes]) -> list[bytes]:
    """``lines`` without the header lines (from ``start``) whose name Connection lists."""
    kept = lines[:start]
    kept += [line for line in lines[start:] if line.partition(b":")[0].lower() not in named]
    return kept


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>`` (no CRLF)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b""))
    return line


_KEEP_ALIVE = frozenset((b"keep-alive",))
_CLOSE = frozenset((b"close",))
_NO_TOKENS: frozenset[bytes] = frozenset()
_PLAIN_CONNECTION = {
    b"keep-alive": _KEEP_ALIVE,
    b"Keep-Alive": _KEEP_ALIVE,
    b"close": _CLOSE,
    b"Close": _CLOSE,
}


def _common_facts(
    status: int,
    version: bytes | str,
    framing: list[tuple[bytes, bytes]],
    request_method: bytes,
) -> ResponseFacts | None:
    """The facts of the most common response head without the general checks: HTTP/1.1,
    a final status with a body, one plain Content-Length and at most a plain Connection
    (keep-alive or close). None for anything else (then ``inspect_response_head`` decides,
    and it decides the same for these heads: tests/unit/test_http_relay.py)."""
    if (version != "1.1" and version != b"1.1") or not 200 <= status < 300 or status == 204:
        return None
    if request_method == b"HEAD" or not 1 <= len(framing) <= 2:
        return None
    cl: int | None = None
    tokens = _NO_TOKENS
    for name, value in framing:
        if len(name) == 14:  # Content-Length (the only 14-letter framing name)
            if cl is not None or not value.isdigit() or len(value) > 18:
                return None
            cl = int(value)
        elif len(name) == 10:  # Connection
            found = _PLAIN_CONNECTION.get(value)
            if found is None or tokens:
                return None
            tokens = found
        else:
            return None
    if cl is None:
        return None
    return ResponseFacts(status, cl, False, tokens is not _CLOSE, False, False, tokens, b"1.1")


class ResponseRelay(NamedTuple):
    """How an upstream response head crosses the edge."""

    head: bytes  # the encoded head for the client, framing and Connection included
    facts: ResponseFacts
    chunked_out: bool  # the body is sent chunked to the client
    keep_alive: bool  # the client connection stays open after this response


def relay_response_head(
    status: int,
    version: bytes | str,
    headers: list[tuple[bytes, bytes]],
    request_method: bytes,
    *,
    via: bytes | None,
    server: bytes | None,
    client_version: bytes,
    keep_alive: bool,
) -> ResponseRelay:
    """Validate an upstream response head and encode it for the client.

    Framing: the upstream's Content-Length is kept (also for HEAD and 304); a chunked or
    read-until-close body goes chunked to an HTTP/1.1 client, or close-delimited to an
    HTTP/1.0 one. ``keep_alive`` is whether the client connection may stay open (the
    client's wish and the edge's state); the result says whether it will. Raises
    RemoteProtocolError (502) for framing the edge cannot relay.
    """
    lines = [status_line(status)]
    framing: list[tuple[bytes, bytes]] = []
    via_in: list[bytes] | None = None
    cached = _RESPONSE_CACHE.get
    for item in headers:
        rule = cached(item[0])
        if rule is None:
            rule = _rule(item[0], _RESPONSE_RULES, _RESPONSE_CACHE)
        if rule == _PASS:
            lines.append(item[0] + b": " + item[1])
        elif rule == _FRAMING:
            framing.append(item)
        elif rule == _VIA:
            if via_in is None:
                via_in = [item[1].strip(_OWS)]
            else:
                via_in.append(item[1].strip(_OWS))
        elif rule == _SERVER and server is None:
            lines.append(item[0] + b": " + item[1])
    facts = _common_facts(status, version, framing, request_method)
    if facts is None:
        facts = inspect_response_head(status, version, framing, request_method, values_checked=True)
    named = facts.connection_tokens
    if named and not named <= _ALWAYS_DROPPED:
        lines = _drop_named(lines, 1, named)
        if via_in is not None and b"via" in named:
            via_in = None
    if server is not None:
        lines.append(b"Server: " + server)
    if via is not None:
        mine = via if b" " in via else _via_element(via, facts.version)
        if via_in is not None:
            via_in.append(mine)
            lines.append(b"Via: " + b", ".join(via_in))
        else:
            lines.append(b"Via: " + mine)
    elif via_in is not None:
        lines.append(b"Via: " + b", ".join(via_in))
    chunked_out = False
    client_11 = client_version == b"1.1"
    if facts.content_length is not None:
        lines.append(b"Content-Length: %d" % facts.content_length)
    elif facts.no_body:
        pass
    elif client_11:
        chunked_out = True
        lines.append(b"Transfer-Encoding: chunked")
    else:
        keep_alive = False
    if not keep_alive:
        lines.append(b"Connection: close")
    elif not client_11:
        lines.append(b"Connection: keep-alive")
    lines.append(b"")
    lines.append(b"")
    return ResponseRelay(b"\r\n".join(lines), facts, chunked_out, keep_alive)


def relay_request_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    facts: RequestFacts,
    *,
    client_ip: str,
    proto: str,
    host_out: bytes | None,
    request_id: bytes | None,
    x_forwarded: bool,
    forwarded: bool,
    via: bytes | None,
) -> bytes:
    """The encoded request head for the upstream, framing included.

    The same rules as :func:`~backhaul.http.headers.forward_request_headers`, then
    ``Transfer-Encoding: chunked`` or ``Content-Length`` from ``facts``.
    """
    named = facts.connection_tokens
    if named and named <= _ALWAYS_DROPPED:
        named = frozenset()
    lines = [method + b" " + target + b" HTTP/1.1"]
    xff: list[bytes] | None = None
    fwd: list[bytes] | None = None
    via_in: list[bytes] | None = None
    rid: bytes | None = None
    host = facts.authority if host_out is None else host_out
    host_done = False
    cached = _REQUEST_CACHE.get
    for name, value in headers:
        rule = cached(name)
        if rule is None:
            rule = _rule(name, _REQUEST_RULES, _REQUEST_CACHE)
        if rule == _PASS:
            if not named or name.lower() not in named:
                lines.append(name + b": " + value)
            continue
        if rule == _DROP:
            continue
        if rule == _HOST:  # never dropped, even when Connection names it
            if not host_done:
                lines.append(name + b": " + host)
                host_done = True
            continue
        if named and name.lower() in named:  # the client's copy is hop-by-hop
            continue
        if rule == _XFF:
            if xff is None:
                xff = [value.strip()]
            else:
                xff.append(value.strip())
        elif rule == _FORWARDED:
            if fwd is None:
                fwd = [value.strip()]
            else:
                fwd.append(value.strip())
        elif rule == _VIA:
            if via_in is None:
                via_in = [value.strip()]
            else:
                via_in.append(value.strip())
        elif rule == _REQUEST_ID:
            if rid is None:
                rid = value.strip()
                lines.append(name + b": " + value)
        elif not x_forwarded:  # _REPLACED, and the edge does not set X-Forwarded-*
            lines.append(name + b": " + value)
    if not host_done:
        lines.append(b"Host: " + host)
    if rid is None and request_id is not None:
        lines.append(b"X-Request-Id: " + request_id)
    ip = client_ip.encode("ascii")
    if x_forwarded:
        if xff is not None:
            xff.append(ip)
            lines.append(b"X-Forwarded-For: " + b", ".join(xff))
        else:
            lines.append(b"X-Forwarded-For: " + ip)
        lines.append(b"X-Forwarded-Proto: " + proto.encode("ascii"))
        if facts.authority:
            lines.append(b"X-Forwarded-Host: " + facts.authority)
    elif xff is not None:
        lines.append(b"X-Forwarded-For: " + b", ".join(xff))
    if forwarded:
        node = b'"[' + ip + b']"' if b":" in ip else ip
        element = b"for=" + node
        if facts.authority:
            element += b";host=" + _forwarded_value(facts.authority)
        element += b";proto=" + proto.encode("ascii")
        if fwd is not None:
            fwd.append(element)
            lines.append(b"Forwarded: " + b", ".join(fwd))
        else:
            lines.append(b"Forwarded: " + element)
    elif fwd is not None:
        lines.append(b"Forwarded: " + b", ".join(fwd))
    if via is not None:
        mine = _via_element(via, facts.version)
        if via_in is not None:
            via_in.append(mine)
            lines.append(b"Via: " + b", ".join(via_in))
        else:
            lines.append(b"Via: " + mine)
    elif via_in is not None:
        lines.append(b"Via: " + b", ".join(via_in))
    if facts.chunked:
        lines.append(b"Transfer-Encoding: chunked")
    elif facts.content_length is not None:
        lines.append(b"Content-Length: %d" % facts.content_length)
    lines.append(b"")
    lines.append(b"")
    return b"\r\n".join(lines)
