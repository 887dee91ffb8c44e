"""The data plane's one-pass relay gives exactly what the header rules give, step by step
(tests/unit/header_spec.py writes them out as a model)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.edge.datapath import relay_request_head, relay_response_head, status_line
from backhaul.errors import RemoteProtocolError
from backhaul.http import encode_head, inspect_request_head, inspect_response_head
from tests.unit.header_spec import forward_request_headers, forward_response_headers

NAMES = [
    b"Host",
    b"host",
    b"Connection",
    b"Keep-Alive",
    b"TE",
    b"Trailer",
    b"Upgrade",
    b"Proxy-Connection",
    b"Proxy-Authorization",
    b"X-Forwarded-For",
    b"x-forwarded-proto",
    b"X-Forwarded-Host",
    b"Forwarded",
    b"Via",
    b"X-Request-Id",
    b"Server",
    b"Date",
    b"Content-Type",
    b"X-Custom",
    b"x-custom",
    b"Cookie",
    b"ETag",
    b"Close",
]
VALUES = [
    b"a",
    b"1.1 proxy",
    b"close",
    b"keep-alive",
    b"X-Custom, upgrade",
    b"x-custom",
    b"10.0.0.1",
    b"for=1.2.3.4",
    b"text/plain",
    b"via",
    b"server",
    b"",
]

headers_st = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=12)


def _framing(facts_cl: int | None, chunked: bool) -> list[tuple[bytes, bytes]]:
    if chunked:
        return [(b"Transfer-Encoding", b"chunked")]
    if facts_cl is not None:
        return [(b"Content-Length", b"%d" % facts_cl)]
    return []


@settings(max_examples=400, deadline=None)
@given(
    headers=headers_st,
    body=st.sampled_from([None, ("cl", b"12"), ("te", b"chunked")]),
    version=st.sampled_from(["1.1", "1.0"]),
    xf=st.booleans(),
    fwd=st.booleans(),
    via=st.sampled_from([None, b"1.1 backhaul", b"backhaul"]),
    host_out=st.sampled_from([None, b"upstream.test:81"]),
    rid=st.sampled_from([None, b"rid-1"]),
)
def test_relay_request_head_equals_the_rules(
    headers, body, version, xf, fwd, via, host_out, rid
) -> None:
    heads = list(headers)
    if not any(n.lower() == b"host" for n, _ in heads):
        heads.insert(0, (b"Host", b"a.test"))
    if body is not None:
        heads.append(
            (b"Content-Length", body[1]) if body[0] == "cl" else (b"Transfer-Encoding", body[1])
        )
    try:
        facts = inspect_request_head(version, heads, None, values_checked=True)
    except RemoteProtocolError:
        return
    kwargs = dict(
        client_ip="10.1.2.3",
        proto="http",
        host_out=host_out,
        request_id=rid,
        x_forwarded=xf,
        forwarded=fwd,
        via=via,
    )
    expected = encode_head(
        b"GET /p?q HTTP/1.1",
        forward_request_headers(heads, facts, **kwargs)  # type: ignore[arg-type]
        + _framing(facts.content_length, facts.chunked),
    )
    got = relay_request_head(b"GET", b"/p?q", heads, facts, **kwargs)  # type: ignore[arg-type]
    assert got == expected


@settings(max_examples=400, deadline=None)
@given(
    headers=headers_st,
    body=st.sampled_from([None, ("cl", b"12"), ("te", b"chunked")]),
    status=st.sampled_from([200, 204, 304, 404, 503]),
    method=st.sampled_from([b"GET", b"HEAD"]),
    version=st.sampled_from(["1.1", "1.0"]),
    client=st.sampled_from([b"1.1", b"1.0"]),
    keep=st.booleans(),
    via=st.sampled_from([None, b"1.1 backhaul"]),
    server=st.sampled_from([None, b"edge"]),
)
def test_relay_response_head_equals_the_rules(
    headers, body, status, method, version, client, keep, via, server
) -> None:
    heads = [(n, v) for n, v in headers if n.lower() not in (b"host",)]
    if body is not None:
        heads.append(
            (b"Content-Length", body[1]) if body[0] == "cl" else (b"Transfer-Encoding", body[1])
        )
    try:
        facts = inspect_response_head(status, version, heads, method, values_checked=True)
    except RemoteProtocolError:
        with pytest.raises(RemoteProtocolError):
            relay_response_head(
                status,
                version,
                heads,
                method,
                via=via,
                server=server,
                client_version=client,
                keep_alive=keep,
            )
        return
    out = forward_response_headers(heads, facts, via=via, server=server)
    keep_out = keep
    if facts.content_length is not None:
        out.append((b"Content-Length", b"%d" % facts.content_length))
    elif facts.no_body:
        pass
    elif client == b"1.1":
        out.append((b"Transfer-Encoding", b"chunked"))
    else:
        keep_out = False
    if not keep_out:
        out.append((b"Connection", b"close"))
    elif client != b"1.1":
        out.append((b"Connection", b"keep-alive"))
    relay = relay_response_head(
        status,
        version,
        heads,
        method,
        via=via,
        server=server,
        client_version=client,
        keep_alive=keep,
    )
    assert relay.head == encode_head(status_line(status), out)
    assert relay.facts == facts
    assert relay.keep_alive == keep_out


def test_status_line_for_unknown_status() -> None:
    assert status_line(299) == b"HTTP/1.1 299 "
    assert status_line(200) == b"HTTP/1.1 200 OK"
