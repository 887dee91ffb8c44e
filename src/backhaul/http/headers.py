"""Header rules of a reverse proxy: what is forwarded, what is added, how a head is encoded.

This module holds the rules as data (the tables below) and the small value helpers; the
procedure that applies them to a head in one pass is the data plane's
(``backhaul.edge.datapath.relay_request_head`` / ``relay_response_head``).

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

__all__ = [
    "ALWAYS_DROPPED",
    "HOP_BY_HOP",
    "REQUEST_RULES",
    "RESPONSE_RULES",
    "connection_options",
    "encode_head",
    "forwarded_value",
    "via_element",
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

# What happens to each header name the edge treats specially: the one table of the rules,
# which the data plane (backhaul.edge.datapath) reads into C at import and applies in one
# pass over a head (relay_request_head / relay_response_head there).
RULE_DROP = 0  # hop-by-hop or framing: never forwarded
RULE_XFF = 1  # appended to
RULE_FORWARDED = 2  # appended to
RULE_VIA = 3  # appended to
RULE_REQUEST_ID = 4  # kept, else the edge's
RULE_HOST = 5  # replaced when host_out is given
RULE_REPLACED = 6  # X-Forwarded-Proto/-Host: the edge's value replaces the client's
RULE_PASS = 7  # forwarded as is (unless Connection names it)
RULE_FRAMING = 8  # Content-Length, Transfer-Encoding, Connection: inspected, never forwarded
RULE_SERVER = 9  # the upstream's Server: kept, unless the edge sets its own

# "close" is a Connection option, and "Close" a reserved field name (RFC 9110 18.4): a line
# named Close is dropped, so a Connection header made only of hop-by-hop names and "close"
# (nearly all of them) needs no per-line check.
ALWAYS_DROPPED = HOP_BY_HOP | {b"close"}
REQUEST_RULES: dict[bytes, int] = dict.fromkeys(ALWAYS_DROPPED, RULE_DROP)
REQUEST_RULES.update(
    {
        b"content-length": RULE_DROP,
        b"x-forwarded-for": RULE_XFF,
        b"forwarded": RULE_FORWARDED,
        b"via": RULE_VIA,
        b"x-request-id": RULE_REQUEST_ID,
        b"host": RULE_HOST,
        b"x-forwarded-proto": RULE_REPLACED,
        b"x-forwarded-host": RULE_REPLACED,
        # RFC 9440 client-certificate fields come only from the edge (a verified TLS client
        # certificate, see edge/tls.py), never from what a client sends.
        b"client-cert": RULE_DROP,
        b"client-cert-chain": RULE_DROP,
    }
)
RESPONSE_RULES: dict[bytes, int] = dict.fromkeys(ALWAYS_DROPPED, RULE_DROP)
RESPONSE_RULES.update(
    {
        b"content-length": RULE_FRAMING,
        b"transfer-encoding": RULE_FRAMING,
        b"connection": RULE_FRAMING,
        b"via": RULE_VIA,
        b"server": RULE_SERVER,
    }
)

_OWS = b" \t"
_TCHAR = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&'*+-.^_`|~"


def connection_options(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Lower-cased Connection options of a head that was not inspected (RFC 9110 7.6.1)."""
    options: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            options.update(item.strip(_OWS) for item in value.lower().split(b","))
    options.discard(b"")
    return frozenset(options)


def via_element(via: bytes, version: bytes) -> bytes:
    """``b"backhaul"`` becomes ``b"1.1 backhaul"``; a value with a space is used as given."""
    return via if b" " in via else version + b" " + via


def forwarded_value(value: bytes) -> bytes:
    """An RFC 7239 4 value: a token as is, anything else as a quoted-string."""
    if value and not value.translate(None, _TCHAR):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def encode_head(first_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """``first_line`` (no CRLF) and the header lines as one bytes object ending in CRLFCRLF.

    Names and values are written as given: they must come from validated heads or from the
    edge's own config, which is validated at load.
    """
    if not headers:
        return first_line + b"\r\n\r\n"
    return b"".join((first_line, b"\r\n", b"\r\n".join(map(_join_field, headers)), b"\r\n\r\n"))


_join_field = b": ".join
