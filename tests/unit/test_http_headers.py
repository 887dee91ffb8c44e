"""Header forwarding rules and head encoding (issue 2, section 3 "Headers")."""

from __future__ import annotations

import httptools

from backhaul.http import (
    HOP_BY_HOP,
    encode_head,
    inspect_request_head,
    inspect_response_head,
)
from tests.unit.relayed import forward_request_headers, forward_response_headers

Headers = list[tuple[bytes, bytes]]


def forward(
    headers: Headers,
    *,
    client_ip: str = "192.0.2.7",
    proto: str = "https",
    host_out: bytes | None = None,
    request_id: bytes | None = b"rid-1",
    x_forwarded: bool = True,
    forwarded: bool = False,
    via: bytes | None = b"backhaul",
    version: bytes = b"1.1",
    absolute: bytes | None = None,
) -> Headers:
    facts = inspect_request_head(version, headers, absolute)
    return forward_request_headers(
        headers,
        facts,
        client_ip=client_ip,
        proto=proto,
        host_out=host_out,
        request_id=request_id,
        x_forwarded=x_forwarded,
        forwarded=forwarded,
        via=via,
    )


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n.lower() == name]


def names(headers: Headers) -> set[bytes]:
    return {n.lower() for n, _ in headers}


def test_hop_by_hop_set() -> None:
    assert {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    } == HOP_BY_HOP


def test_typical_request_forwarded() -> None:
    out = forward(
        [
            (b"Host", b"shop.example"),
            (b"User-Agent", b"curl/8"),
            (b"Accept", b"*/*"),
            (b"Connection", b"keep-alive"),
            (b"Keep-Alive", b"timeout=5"),
        ]
    )
    assert out == [
        (b"Host", b"shop.example"),
        (b"User-Agent", b"curl/8"),
        (b"Accept", b"*/*"),
        (b"X-Request-Id", b"rid-1"),
        (b"X-Forwarded-For", b"192.0.2.7"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"shop.example"),
        (b"Via", b"1.1 backhaul"),
    ]


def test_hop_by_hop_and_framing_dropped() -> None:
    out = forward(
        [
            (b"Host", b"a"),
            (b"TE", b"trailers"),
            (b"Trailer", b"X-Sum"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Upgrade", b"websocket"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"Proxy-Authorization", b"Basic eDp5"),
            (b"X-Keep", b"1"),
        ]
    )
    assert names(out) & HOP_BY_HOP == set()
    assert values(out, b"x-keep") == [b"1"]
    out = forward([(b"Host", b"a"), (b"Content-Length", b"10")])
    assert b"content-length" not in names(out)


def test_connection_named_header_stripped_case_insensitively() -> None:
    out = forward([(b"Host", b"a"), (b"Connection", b"X-Secret, close"), (b"x-SECRET", b"s")])
    assert b"x-secret" not in names(out)
    assert b"connection" not in names(out)


def test_connection_cannot_strip_edge_xff() -> None:
    out = forward(
        [(b"Host", b"a"), (b"Connection", b"X-Forwarded-For"), (b"X-Forwarded-For", b"10.9.9.9")]
    )
    # The client's copy was hop-by-hop; the edge's own value is still there.
    assert values(out, b"x-forwarded-for") == [b"192.0.2.7"]


def test_connection_cannot_strip_edge_headers_or_host() -> None:
    out = forward(
        [
            (b"Host", b"a"),
            (b"Connection", b"host, via, x-request-id, forwarded, x-forwarded-proto"),
        ],
        forwarded=True,
    )
    assert values(out, b"host") == [b"a"]
    assert values(out, b"via") == [b"1.1 backhaul"]
    assert values(out, b"x-request-id") == [b"rid-1"]
    assert values(out, b"x-forwarded-proto") == [b"https"]
    assert values(out, b"forwarded") == [b"for=192.0.2.7;host=a;proto=https"]


def test_xff_appended_and_merged() -> None:
    out = forward(
        [
            (b"Host", b"a"),
            (b"X-Forwarded-For", b"203.0.113.1"),
            (b"x-forwarded-for", b" 198.51.100.2 "),
        ]
    )
    assert values(out, b"x-forwarded-for") == [b"203.0.113.1, 198.51.100.2, 192.0.2.7"]


def test_xff_ipv6_is_bare() -> None:
    out = forward([(b"Host", b"a")], client_ip="::1")
    assert values(out, b"x-forwarded-for") == [b"::1"]


def test_client_x_forwarded_proto_and_host_replaced() -> None:
    out = forward(
        [(b"Host", b"a"), (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Host", b"evil")],
        proto="http",
    )
    assert values(out, b"x-forwarded-proto") == [b"http"]
    assert values(out, b"x-forwarded-host") == [b"a"]


def test_x_forwarded_off_passes_client_values_through() -> None:
    out = forward(
        [(b"Host", b"a"), (b"X-Forwarded-For", b"1.2.3.4"), (b"X-Forwarded-Proto", b"http")],
        x_forwarded=False,
    )
    assert values(out, b"x-forwarded-for") == [b"1.2.3.4"]
    assert values(out, b"x-forwarded-proto") == [b"http"]
    assert b"x-forwarded-host" not in names(out)


def test_forwarded_ipv6_quoted() -> None:
    out = forward([(b"Host", b"a")], client_ip="::1", forwarded=True)
    assert values(out, b"forwarded") == [b'for="[::1]";host=a;proto=https']


def test_forwarded_host_with_port_quoted_and_appended() -> None:
    out = forward(
        [(b"Host", b"a.example:8080"), (b"Forwarded", b"for=203.0.113.1")],
        forwarded=True,
        proto="http",
    )
    assert values(out, b"forwarded") == [
        b'for=203.0.113.1, for=192.0.2.7;host="a.example:8080";proto=http'
    ]


def test_forwarded_off_keeps_existing() -> None:
    out = forward([(b"Host", b"a"), (b"Forwarded", b"for=203.0.113.1")])
    assert values(out, b"forwarded") == [b"for=203.0.113.1"]


def test_via_appended() -> None:
    out = forward([(b"Host", b"a"), (b"Via", b"1.1 cdn")])
    assert values(out, b"via") == [b"1.1 cdn, 1.1 backhaul"]


def test_via_uses_request_version_and_full_element() -> None:
    assert values(forward([], version=b"1.0"), b"via") == [b"1.0 backhaul"]
    assert values(forward([(b"Host", b"a")], via=b"2 edge-7"), b"via") == [b"2 edge-7"]
    assert b"via" not in names(forward([(b"Host", b"a")], via=None))


def test_request_id_kept_when_present() -> None:
    out = forward([(b"Host", b"a"), (b"X-Request-ID", b"abc")])
    assert values(out, b"x-request-id") == [b"abc"]


def test_request_id_absent_and_none_given() -> None:
    out = forward([(b"Host", b"a")], request_id=None)
    assert b"x-request-id" not in names(out)


def test_host_replaced_by_host_out() -> None:
    out = forward([(b"Host", b"public.example"), (b"Accept", b"*/*")], host_out=b"10.0.0.5:8080")
    assert out[0] == (b"Host", b"10.0.0.5:8080")
    assert values(out, b"x-forwarded-host") == [b"public.example"]


def test_absolute_form_authority_replaces_host() -> None:
    out = forward([(b"Host", b"ignored.example")], absolute=b"api.example")
    assert values(out, b"host") == [b"api.example"]


def test_host_always_sent_upstream() -> None:
    # An HTTP/1.0 request without Host still gets one (empty) for the HTTP/1.1 upstream.
    out = forward([], version=b"1.0")
    assert values(out, b"host") == [b""]
    out = forward([], version=b"1.0", host_out=b"backend")
    assert values(out, b"host") == [b"backend"]


# --- responses -----------------------------------------------------------------------------


def forward_response(
    headers: Headers, *, via: bytes | None = b"backhaul", server: bytes | None = None
) -> Headers:
    facts = inspect_response_head(200, b"1.1", headers, b"GET")
    return forward_response_headers(headers, facts, via=via, server=server)


def test_response_hop_by_hop_and_framing_dropped() -> None:
    out = forward_response(
        [
            (b"Content-Type", b"text/plain"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"keep-alive, X-Backend"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Backend", b"node-3"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Trailer", b"X-Sum"),
        ]
    )
    assert out == [(b"Content-Type", b"text/plain"), (b"Via", b"1.1 backhaul")]


def test_response_content_length_dropped() -> None:
    out = forward_response([(b"Content-Length", b"5")], via=None)
    assert out == []


def test_response_server_kept_by_default() -> None:
    out = forward_response([(b"Content-Length", b"0"), (b"Server", b"nginx")], via=None)
    assert out == [(b"Server", b"nginx")]


def test_response_server_replaced_when_given() -> None:
    out = forward_response(
        [(b"Server", b"nginx"), (b"Content-Length", b"0")], via=None, server=b"backhaul"
    )
    assert out == [(b"Server", b"backhaul")]


def test_response_connection_cannot_strip_edge_via_and_server() -> None:
    out = forward_response(
        [(b"Content-Length", b"0"), (b"Connection", b"via, server"), (b"Via", b"1.1 x")],
        server=b"backhaul",
    )
    assert values(out, b"via") == [b"1.1 backhaul"]
    assert values(out, b"server") == [b"backhaul"]


def test_response_via_appended() -> None:
    out = forward_response([(b"Content-Length", b"0"), (b"Via", b"1.0 origin-cache")])
    assert values(out, b"via") == [b"1.0 origin-cache, 1.1 backhaul"]


def test_response_set_cookie_lines_kept_apart() -> None:
    headers = [(b"Content-Length", b"0"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")]
    out = forward_response(headers, via=None)
    assert values(out, b"set-cookie") == [b"a=1", b"b=2"]


# --- encode_head ----------------------------------------------------------------------------


def test_encode_head_bytes() -> None:
    head = encode_head(b"GET /x HTTP/1.1", [(b"Host", b"a"), (b"X-A", b"1")])
    assert head == b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n"
    assert encode_head(b"HTTP/1.1 204 No Content", []) == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_forwarded_head_parses_back_through_llhttp() -> None:
    headers = [(b"Host", b"a.example"), (b"Connection", b"close"), (b"Accept", b"*/*")]
    out = forward(headers, forwarded=True, client_ip="2001:db8::1")
    seen: Headers = []

    class Sink:
        def on_header(self, name: bytes, value: bytes) -> None:
            seen.append((name, value))

    parser = httptools.HttpRequestParser(Sink())
    parser.feed_data(encode_head(b"GET / HTTP/1.1", out))
    assert seen == out


def test_response_interim_head_without_facts() -> None:
    # A 103 Early Hints head is forwarded without inspect_response_head.
    headers = [(b"Link", b"</a.css>; rel=preload"), (b"Connection", b"X-Hint"), (b"X-Hint", b"1")]
    out = forward_response_headers(headers, None, via=b"backhaul", server=None)
    assert out == [(b"Link", b"</a.css>; rel=preload"), (b"Via", b"1.1 backhaul")]
