"""The header rules written out step by step, as a model to test the data plane against.

This is a specification for tests, not a second implementation the edge runs: the edge
forwards heads with ``backhaul.edge.datapath`` (one pass in C over the head's spans). The
model follows RFC 9110 7.6.1 and the decisions documented in ``backhaul.http.headers`` in the
plainest possible way, over lists of (name, value) pairs.
"""

from __future__ import annotations

from backhaul.http.head import RequestFacts, ResponseFacts
from backhaul.http.headers import (
    ALWAYS_DROPPED,
    connection_options,
    forwarded_value,
    via_element,
)

NO_TOKENS: frozenset[bytes] = frozenset()
_OWS = b" \t"
_DROP, _XFF, _FORWARDED, _VIA, _REQUEST_ID, _HOST, _REPLACED, _PASS = range(8)
_REQUEST: dict[bytes, int] = dict.fromkeys(ALWAYS_DROPPED, _DROP)
_REQUEST.update(
    {
        b"content-length": _DROP,
        b"x-forwarded-for": _XFF,
        b"forwarded": _FORWARDED,
        b"via": _VIA,
        b"x-request-id": _REQUEST_ID,
        b"host": _HOST,
        b"x-forwarded-proto": _REPLACED,
        b"x-forwarded-host": _REPLACED,
        b"client-cert": _DROP,
        b"client-cert-chain": _DROP,
    }
)
_RESP_VIA = 1
_RESP_SERVER = 2
_RESPONSE: dict[bytes, int] = dict.fromkeys(ALWAYS_DROPPED, _DROP)
_RESPONSE.update({b"content-length": _DROP, b"via": _RESP_VIA, b"server": _RESP_SERVER})


def forward_request_headers(
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
) -> list[tuple[bytes, bytes]]:
    """The header list to send upstream for a validated request (framing not included).

    Drops hop-by-hop headers, those named in Connection, and Content-Length; writes one Host
    line with ``host_out`` when given, else ``facts.authority`` (so an absolute-form target's
    authority replaces the Host line, RFC 9112 3.2.2); keeps an incoming X-Request-Id, else
    adds ``request_id``; when ``x_forwarded``, appends ``client_ip`` to X-Forwarded-For and sets
    X-Forwarded-Proto/-Host; when ``forwarded``, appends an RFC 7239 element; when ``via``
    is given (``b"backhaul"`` or a full ``b"1.1 backhaul"``), appends it to Via.
    ``headers`` must have passed :func:`~backhaul.http.head.inspect_request_head`.
    """
    named = facts.connection_tokens
    if named and named <= ALWAYS_DROPPED:
        named = NO_TOKENS
    out: list[tuple[bytes, bytes]] = []
    xff: list[bytes] | None = None
    fwd: list[bytes] | None = None
    via_in: list[bytes] | None = None
    rid: bytes | None = None
    # RFC 9112 3.2.2: the upstream sees the authority the edge routed on (absolute-form wins
    # over Host), and always a Host line, empty when the request named no host (RFC 9112 3.2).
    host = facts.authority if host_out is None else host_out
    host_done = False
    for item in headers:
        rule = _REQUEST.get(item[0].lower(), _PASS)
        if rule == _PASS:
            if not named or item[0].lower() not in named:
                out.append(item)
            continue
        if rule == _DROP:
            continue
        if rule == _HOST:  # never dropped, even when Connection names it
            if not host_done:
                out.append((item[0], host))
                host_done = True
            continue
        if named and item[0].lower() in named:
            continue  # the client's copy is hop-by-hop; the edge's is still added
        if rule == _XFF:
            if xff is None:
                xff = [item[1].strip(_OWS)]
            else:
                xff.append(item[1].strip(_OWS))
        elif rule == _FORWARDED:
            if fwd is None:
                fwd = [item[1].strip(_OWS)]
            else:
                fwd.append(item[1].strip(_OWS))
        elif rule == _VIA:
            if via_in is None:
                via_in = [item[1].strip(_OWS)]
            else:
                via_in.append(item[1].strip(_OWS))
        elif rule == _REQUEST_ID:
            if rid is None:
                rid = item[1].strip(_OWS)
                out.append(item)
        elif not x_forwarded:  # _REPLACED, and the edge does not set X-Forwarded-*
            out.append(item)

    if not host_done:
        out.append((b"Host", host))
    if rid is None and request_id is not None:
        out.append((b"X-Request-Id", request_id))
    ip = client_ip.encode("ascii")
    if x_forwarded:
        if xff is not None:
            xff.append(ip)
            out.append((b"X-Forwarded-For", b", ".join(xff)))
        else:
            out.append((b"X-Forwarded-For", ip))
        out.append((b"X-Forwarded-Proto", proto.encode("ascii")))
        if facts.authority:
            out.append((b"X-Forwarded-Host", facts.authority))
    elif xff is not None:
        out.append((b"X-Forwarded-For", b", ".join(xff)))
    if forwarded:
        node = b'"[' + ip + b']"' if b":" in ip else ip
        element = b"for=" + node
        if facts.authority:
            element += b";host=" + forwarded_value(facts.authority)
        element += b";proto=" + proto.encode("ascii")
        if fwd is not None:
            fwd.append(element)
            out.append((b"Forwarded", b", ".join(fwd)))
        else:
            out.append((b"Forwarded", element))
    elif fwd is not None:
        out.append((b"Forwarded", b", ".join(fwd)))
    if via is not None:
        mine = via_element(via, facts.version)
        if via_in is not None:
            via_in.append(mine)
            out.append((b"Via", b", ".join(via_in)))
        else:
            out.append((b"Via", mine))
    elif via_in is not None:
        out.append((b"Via", b", ".join(via_in)))
    return out


def forward_response_headers(
    headers: list[tuple[bytes, bytes]],
    facts: ResponseFacts | None,
    *,
    via: bytes | None,
    server: bytes | None,
) -> list[tuple[bytes, bytes]]:
    """The header list to send downstream for a validated upstream response (no framing).

    Drops hop-by-hop headers, those named in Connection, and Content-Length (for HEAD and
    304 the caller echoes ``facts.content_length``). ``server``: None keeps the upstream's
    Server header untouched (Envoy's pass-through); a value replaces it (or adds one).
    ``via`` is appended to Via like in :func:`forward_request_headers`.
    ``facts`` may be None for an interim (1xx) head that was not inspected; the Connection
    options are then read from ``headers`` here.
    """
    if facts is None:
        named = connection_options(headers)
        version = b"1.1"
    else:
        named = facts.connection_tokens
        version = facts.version
    if named and named <= ALWAYS_DROPPED:
        named = NO_TOKENS
    out: list[tuple[bytes, bytes]] = []
    via_in: list[bytes] | None = None
    for item in headers:
        rule = _RESPONSE.get(item[0].lower(), _PASS)
        if rule == _PASS:
            if not named or item[0].lower() not in named:
                out.append(item)
            continue
        if rule == _DROP or (named and item[0].lower() in named):
            continue
        if rule == _RESP_VIA:
            if via_in is None:
                via_in = [item[1].strip(_OWS)]
            else:
                via_in.append(item[1].strip(_OWS))
        elif server is None:  # _RESP_SERVER, passed through
            out.append(item)
    if server is not None:
        out.append((b"Server", server))
    if via is not None:
        mine = via_element(via, version)
        if via_in is not None:
            via_in.append(mine)
            out.append((b"Via", b", ".join(via_in)))
        else:
            out.append((b"Via", mine))
    elif via_in is not None:
        out.append((b"Via", b", ".join(via_in)))
    return out
