"""The data plane's header relay, read back as (name, value) pairs for rule-by-rule tests."""

from __future__ import annotations

from backhaul.edge.datapath import relay_interim_head, relay_request_head, relay_response_head
from backhaul.http.head import RequestFacts, ResponseFacts

Headers = list[tuple[bytes, bytes]]


def _pairs(head: bytes) -> Headers:
    lines = head.split(b"\r\n")[1:-2]
    return [(n, v) for n, _, v in (line.partition(b": ") for line in lines)]


def forward_request_headers(
    headers: Headers,
    facts: RequestFacts,
    *,
    client_ip: str,
    proto: str,
    host_out: bytes | None,
    request_id: bytes | None,
    x_forwarded: bool,
    forwarded: bool,
    via: bytes | None,
) -> Headers:
    """The relayed request's header lines, without the framing line the relay appends."""
    head = relay_request_head(
        b"GET",
        b"/",
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
    out = _pairs(head)
    if facts.chunked or facts.content_length is not None:
        out.pop()
    return out


def forward_response_headers(
    headers: Headers,
    facts: ResponseFacts | None,
    *,
    via: bytes | None,
    server: bytes | None,
) -> Headers:
    """The relayed response's header lines, without the framing lines the relay appends."""
    if facts is None:
        return _pairs(relay_interim_head(103, headers, via=via))
    # The answer to HEAD is the one bodyless case that facts do not spell out by status.
    head = facts.no_body and facts.status >= 200 and facts.status not in (204, 304)
    relay = relay_response_head(
        facts.status,
        facts.version,
        headers,
        b"HEAD" if head else b"GET",
        via=via,
        server=server,
        client_version=b"1.1",
        keep_alive=True,
    )
    out = _pairs(relay.head)
    while out and out[-1][0] in (b"Content-Length", b"Transfer-Encoding", b"Connection"):
        out.pop()
    return out
