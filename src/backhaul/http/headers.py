"""Header rules of a reverse proxy: what is forwarded, what is added, how a head is encoded.

Hop-by-hop headers (RFC 9110 7.6.1) describe one connection and are never forwarded:
Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade, plus every header
the Connection header names. Also dropped, as decided here:

- Trailer: the edge drops trailers, so the header announcing them would lie.
- Proxy-Authorization (RFC 9110 11.7.2): credentials for a proxy. The edge is a gateway,
  not the proxy they were meant for; forwarding would leak them to the origin.
- Proxy-Authenticate (RFC 9110 11.7.1): a challenge for proxy credentials only makes sense
  from a proxy to its client; an origin behind a gateway cannot use it.
- Content-Length: the caller sets the framing it writes itself (from RequestFacts /
  ResponseFacts), so the forwarded list never carries framing.

WebSocket and other upgrades: Upgrade and ``Connection: upgrade`` are removed like every
hop-by-hop header; the upgrade handler adds them back for the connection it opens.

Headers the edge sets itself (X-Forwarded-For/-Proto/-Host, Forwarded, Via, X-Request-Id,
Host on requests; Via and Server on responses) are added after the filtering, so a peer
naming them in Connection drops only its own copy, never the edge's.
"""

from __future__ import annotations

from backhaul.http.head import RequestFacts, ResponseFacts

__all__ = [
    "HOP_BY_HOP",
    "encode_head",
    "forward_request_headers",
    "forward_response_headers",
]

HOP_BY_HOP: frozenset[bytes] = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    )
)

# What happens to each request header name the edge treats specially.
_DROP = 0  # hop-by-hop or framing: never forwarded
_XFF = 1  # appended to
_FORWARDED = 2  # appended to
_VIA = 3  # appended to
_REQUEST_ID = 4  # kept, else the edge's
_HOST = 5  # replaced when host_out is given
_REPLACED = 6  # X-Forwarded-Proto/-Host: the edge's value replaces the client's

_PASS = 7  # forwarded as is (unless Connection names it)

# "close" is a Connection option, and "Close" a reserved field name (RFC 9110 18.4): a line
# named Close is dropped, so a Connection header made only of hop-by-hop names and "close"
# (nearly all of them) needs no per-line check.
_ALWAYS_DROPPED = HOP_BY_HOP | {b"close"}
_REQUEST_RULES: dict[bytes, int] = dict.fromkeys(_ALWAYS_DROPPED, _DROP)
_REQUEST_RULES.update(
    {
        b"content-length": _DROP,
        b"x-forwarded-for": _XFF,
        b"forwarded": _FORWARDED,
        b"via": _VIA,
        b"x-request-id": _REQUEST_ID,
        b"host": _HOST,
        b"x-forwarded-proto": _REPLACED,
        b"x-forwarded-host": _REPLACED,
        # TLS hook: RFC 9440 client-certificate fields come only from the edge (a verified
        # TLS client certificate, see edge/tls.py), never from what a client sends.
        b"client-cert": _DROP,
        b"client-cert-chain": _DROP,
    }
)

_RESP_VIA = 1
_RESP_SERVER = 2
_RESPONSE_RULES: dict[bytes, int] = dict.fromkeys(_ALWAYS_DROPPED, _DROP)
_RESPONSE_RULES.update({b"content-length": _DROP, b"via": _RESP_VIA, b"server": _RESP_SERVER})

# Raw field names -> rule, so the common spellings skip lower(); bounded, cleared when full.
_REQUEST_CACHE: dict[bytes, int] = {}
_RESPONSE_CACHE: dict[bytes, int] = {}
_CACHE_MAX = 512
_NO_TOKENS: frozenset[bytes] = frozenset()
_OWS = b" \t"


def _rule(name: bytes, rules: dict[bytes, int], cache: dict[bytes, int]) -> int:
    rule = rules.get(name.lower(), _PASS)
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[name] = rule
    return rule


_TCHAR = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&'*+-.^_`|~"


def _connection_options(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Lower-cased Connection options of a head that was not inspected (RFC 9110 7.6.1)."""
    options: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            options.update(item.strip(_OWS) for item in value.lower().split(b","))
    options.discard(b"")
    return frozenset(options)


def _via_element(via: bytes, version: bytes) -> bytes:
    """``b"backhaul"`` becomes ``b"1.1 backhaul"``; a value with a space is used as given."""
    return via if b" " in via else version + b" " + via


def _forwarded_value(value: bytes) -> bytes:
    """An RFC 7239 4 value: a token as is, anything else as a quoted-string."""
    if value and not value.translate(None, _TCHAR):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


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
    if named and named <= _ALWAYS_DROPPED:
        named = _NO_TOKENS
    cached = _REQUEST_CACHE.get
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
        rule = cached(item[0])
        if rule is None:
            rule = _rule(item[0], _REQUEST_RULES, _REQUEST_CACHE)
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
            element += b";host=" + _forwarded_value(facts.authority)
        element += b";proto=" + proto.encode("ascii")
        if fwd is not None:
            fwd.append(element)
            out.append((b"Forwarded", b", ".join(fwd)))
        else:
            out.append((b"Forwarded", element))
    elif fwd is not None:
        out.append((b"Forwarded", b", ".join(fwd)))
    if via is not None:
        mine = _via_element(via, facts.version)
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
        named = _connection_options(headers)
        version = b"1.1"
    else:
        named = facts.connection_tokens
        version = facts.version
    if named and named <= _ALWAYS_DROPPED:
        named = _NO_TOKENS
    cached = _RESPONSE_CACHE.get
    out: list[tuple[bytes, bytes]] = []
    via_in: list[bytes] | None = None
    for item in headers:
        rule = cached(item[0])
        if rule is None:
            rule = _rule(item[0], _RESPONSE_RULES, _RESPONSE_CACHE)
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
        mine = _via_element(via, version)
        if via_in is not None:
            via_in.append(mine)
            out.append((b"Via", b", ".join(via_in)))
        else:
            out.append((b"Via", mine))
    elif via_in is not None:
        out.append((b"Via", b", ".join(via_in)))
    return out


def encode_head(first_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """``first_line`` (no CRLF) and the header lines as one bytes object ending in CRLFCRLF.

    Names and values are written as given: they must come from validated heads or from the
    edge's own config, which is validated at load.
    """
    if not headers:
        return first_line + b"\r\n\r\n"
    return b"".join((first_line, b"\r\n", b"\r\n".join(map(_join_field, headers)), b"\r\n\r\n"))


_join_field = b": ".join
