"""Request smuggling against the running edge: desync attempts followed by a second request
on the same connection. The recording upstream parses what it receives as a strict HTTP/1.1
server would; the attack succeeds if it ever parses a request the client smuggled, or bytes
it cannot frame at all (a desync).

Every smuggled request targets ``/t/smuggled-<case>``; that path is routed to the upstream,
so only the edge's framing stands between it and the upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.harness import Edge
from tests.edge.test_conformance import (
    LISTENER,
    Recorder,
    bad_upstream_answer,
    edge_config,
    talk,
)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    with Recorder() as rec:
        yield rec


@pytest.fixture(scope="module")
def sedge(recorder: Recorder, edge_tmp: Path) -> Iterator[Edge]:
    with (
        Recorder(bad_upstream_answer) as bad,
        Edge(edge_tmp, edge_config(recorder, bad), listener=LISTENER) as e,
    ):
        yield e


HOST = b"Host: 127.0.0.1\r\n"


def smuggled(case: str) -> bytes:
    """A complete request the attacker wants the upstream to see on its own."""
    return f"GET /t/smuggled-{case} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def post(case: str, headers: bytes, body: bytes, version: bytes = b"1.1") -> bytes:
    return b"POST /t/%s HTTP/%s\r\n%s%s\r\n%s" % (case.encode(), version, HOST, headers, body)


def next_request(case: str) -> bytes:
    return f"GET /t/{case}-next HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


def _cl_te(case: str) -> bytes:
    # CL.TE: a front end that believes Content-Length forwards everything; a back end that
    # believes Transfer-Encoding stops at "0" and reads the rest as the next request.
    body = b"0\r\n\r\n" + smuggled(case)
    return post(case, b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(body), body)


def _te_cl(case: str) -> bytes:
    # TE.CL: the front end reads chunks, the back end reads 4 bytes and then a request.
    body = chunk(smuggled(case)) + b"0\r\n\r\n"
    return post(case, b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", body)


def _te_variant_with_cl(te_lines: bytes) -> object:
    # TE.TE: one side does not recognise an obfuscated Transfer-Encoding and falls back to
    # Content-Length, the other does.
    def build(case: str) -> bytes:
        body = chunk(smuggled(case)) + b"0\r\n\r\n"
        return post(case, te_lines + b"Content-Length: %d\r\n" % 3, body)

    return build


def _cl_cl(headers: bytes) -> object:
    def build(case: str) -> bytes:
        body = smuggled(case)
        return post(case, headers.replace(b"{n}", b"%d" % len(body)), body)

    return build


def _chunked(body_of: object) -> object:
    def build(case: str) -> bytes:
        return post(case, b"Transfer-Encoding: chunked\r\n", body_of(case))  # type: ignore[operator]

    return build


REFUSED = {
    "cl-te": _cl_te,
    "te-cl": _te_cl,
    "te-xchunked-cl": _te_variant_with_cl(b"Transfer-Encoding: xchunked\r\n"),
    "te-two-headers-cl": _te_variant_with_cl(
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"
    ),
    "te-space-colon-cl": _te_variant_with_cl(b"Transfer-Encoding : chunked\r\n"),
    "te-extra-space-cl": _te_variant_with_cl(b"Transfer-Encoding:  chunked\r\n"),
    "te-tab-cl": _te_variant_with_cl(b"Transfer-Encoding:\tchunked\r\n"),
    "te-obs-fold-cl": _te_variant_with_cl(b"Transfer-Encoding:\r\n chunked\r\n"),
    "te-folded-into-other-cl": _te_variant_with_cl(b"X-A: b\r\n Transfer-Encoding: chunked\r\n"),
    "te-bare-lf-cl": _te_variant_with_cl(b"X-A: b\nTransfer-Encoding: chunked\r\n"),
    "te-vtab-cl": _te_variant_with_cl(b"Transfer-Encoding: \x0bchunked\r\n"),
    "te-nul-cl": _te_variant_with_cl(b"Transfer-Encoding: chunked\x00\r\n"),
    "te-upper-cl": _te_variant_with_cl(b"TRANSFER-ENCODING: CHUNKED\r\n"),
    "te-quoted-cl": _te_variant_with_cl(b'Transfer-Encoding: "chunked"\r\n'),
    "te-http10-cl": lambda case: post(
        case,
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        chunk(smuggled(case)) + b"0\r\n\r\n",
        b"1.0",
    ),
    "cl-cl-zero-first": _cl_cl(b"Content-Length: 0\r\nContent-Length: {n}\r\n"),
    "cl-cl-zero-last": _cl_cl(b"Content-Length: {n}\r\nContent-Length: 0\r\n"),
    "cl-list": _cl_cl(b"Content-Length: 0, {n}\r\n"),
    "cl-plus": _cl_cl(b"Content-Length: +{n}\r\n"),
    "chunk-size-wraps-2-64": _chunked(
        lambda case: b"1" + b"0" * 15 + b"1\r\nx\r\n" + smuggled(case) + b"0\r\n\r\n"
    ),
    "chunk-ext-quoted-crlf": _chunked(
        lambda case: b'1;a="\r\n0\r\n\r\n' + smuggled(case) + b'"\r\nx\r\n0\r\n\r\n'
    ),
    "last-chunk-bare-lf": _chunked(lambda case: b"0\n\n" + smuggled(case)),
    "chunk-data-bare-lf": _chunked(lambda case: b"1\r\nx\n0\r\n\r\n" + smuggled(case)),
    "chunk-size-space": _chunked(lambda case: b"0 \r\n\r\n" + smuggled(case)),
    "chunk-size-0x": _chunked(lambda case: b"0x0\r\n\r\n" + smuggled(case)),
    "trailer-content-length": _chunked(
        lambda case: b"0\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled(case)), smuggled(case))
    ),
    "trailer-transfer-encoding": _chunked(
        lambda case: b"0\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled(case)
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_desync_attempt_is_refused_and_nothing_is_smuggled(
    sedge: Edge, recorder: Recorder, case: str
) -> None:
    # A warm pool: the worst case, where a head that got through would go upstream at once.
    assert talk(sedge.port, next_request(f"warm-{case}")).status == 200
    attack = REFUSED[case](case)  # type: ignore[operator]
    reply = talk(sedge.port, attack + next_request(case))
    assert reply.data.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 501 ")), (attack, reply.data[:300])
    assert len(reply.responses()) == 1, reply.data  # nothing after the refusal is answered
    assert reply.closed
    # The upstream never parses the smuggled request, nor the one that followed the attack.
    assert recorder.wait(
        lambda: all(c.ended for c in recorder.conns_with(f"/t/{case} ".encode())), 2.0
    )
    assert not recorder.complete(f"smuggled-{case}")
    assert not recorder.complete(f"{case}-next")
    assert not recorder.complete(case), "the attack request reached the upstream whole"
    assert not recorder.saw_bytes(f"smuggled-{case}".encode())
    assert not recorder.desyncs()


# -- lookalikes that are valid: a request inside a body is data, nothing more -----------------


def _in_chunked_body(case: str) -> bytes:
    return post(
        case,
        b"Transfer-Encoding: chunked\r\n",
        chunk(b"0\r\n\r\n" + smuggled(case)) + b"0\r\n\r\n",
    )


def _in_cl_body(case: str) -> bytes:
    body = b"0\r\n\r\n" + smuggled(case)
    return post(case, b"Content-Length: %d\r\n" % len(body), body)


def _get_with_body(case: str) -> bytes:
    body = smuggled(case)
    return b"GET /t/%s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
        case.encode(),
        HOST,
        len(body),
        body,
    )


def _split_across_chunks(case: str) -> bytes:
    body = smuggled(case)
    return post(
        case,
        b"Transfer-Encoding: chunked\r\n",
        chunk(body[:7]) + chunk(body[7:20]) + chunk(body[20:]) + b"0\r\n\r\n",
    )


CARRIED = {
    "in-chunked-body": (_in_chunked_body, b"0\r\n\r\n"),
    "in-cl-body": (_in_cl_body, b"0\r\n\r\n"),
    "get-with-body": (_get_with_body, b""),
    "split-across-chunks": (_split_across_chunks, b""),
}


@pytest.mark.parametrize("case", sorted(CARRIED))
def test_request_inside_a_body_stays_body(sedge: Edge, recorder: Recorder, case: str) -> None:
    build, prefix = CARRIED[case]
    assert talk(sedge.port, next_request(f"warm-{case}")).status == 200
    reply = talk(sedge.port, build(case) + next_request(case))
    assert [r[0] for r in reply.responses()] == [200, 200], reply.data[:500]
    assert not recorder.complete(f"smuggled-{case}")
    (first,) = recorder.complete(case)
    assert first.body == prefix + smuggled(case)
    assert len(recorder.complete(f"{case}-next")) == 1
    assert not recorder.desyncs()


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "body-later"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_body_of_a_directly_answered_request_is_not_parsed_as_a_request(
    sedge: Edge, recorder: Recorder, framing: str, split: bool
) -> None:
    # /healthz is answered by the edge itself: the body it does not need must still be
    # skipped by its framing, not parsed as the next request (also when the body arrives
    # after the answer went out).
    case = f"direct-{framing}-{split}"
    body = smuggled(case)
    if framing == "chunked":
        head = b"Transfer-Encoding: chunked\r\n"
        body = chunk(body) + b"0\r\n\r\n"
    else:
        head = b"Content-Length: %d\r\n" % len(body)
    head = b"POST /healthz HTTP/1.1\r\n" + HOST + head + b"\r\n"
    rest = body + next_request(case)
    reply = talk(sedge.port, [head, rest] if split else [head + rest], pause=0.1)
    responses = reply.responses()
    assert [(r[0], r[2]) for r in responses][:1] == [(200, b"ok\n")], reply.data[:500]
    assert len(responses) in (1, 2)  # the edge may close instead of reading the body
    if len(responses) == 2:
        assert responses[1][0] == 200
        assert len(recorder.complete(f"{case}-next")) == 1
    assert not recorder.complete(f"smuggled-{case}")
    assert not recorder.saw_bytes(f"smuggled-{case}".encode())


def test_head_response_then_pipelined_get(sedge: Edge, recorder: Recorder) -> None:
    # The response to HEAD has Content-Length but no body: the next response must not be
    # read as that body (on either side of the edge).
    reply = talk(
        sedge.port,
        b"HEAD /t/head-1 HTTP/1.1\r\n" + HOST + b"\r\n" + next_request("head-1"),
    )
    head, sep, rest = reply.data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and sep
    assert b"content-length: " in head.lower()
    assert rest.startswith(b"HTTP/1.1 200"), reply.data[:500]
    assert b"/t/head-1-next" in rest
    assert [s.method for s in recorder.requests if "/t/head-1" in s.target] == ["HEAD", "GET"]
    assert not recorder.desyncs()
