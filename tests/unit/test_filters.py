"""A route's filter chain (issue 7): verdicts, head edits, the header-edit filter and its
config; the data plane's side is driven with in-memory transports."""

from __future__ import annotations

import gzip

import pytest

from backhaul.config import load_text
from backhaul.errors import ConfigError
from backhaul.http.filters import (
    CONTINUE,
    RESPOND,
    STOP,
    Answer,
    BodyRelay,
    CompressFilter,
    Filter,
    FilterChain,
    HeadEdit,
    HeaderEditFilter,
    RequestInfo,
    ResponseInfo,
    build_chain,
    transformed_head,
)
from tests.unit.memory_edge import GET, OK_HEAD, Pair

HEAD = b"HTTP/1.1 200 OK\r\nServer: up\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n"


def test_head_edit_removes_every_line_of_a_name_then_adds() -> None:
    edit = HeadEdit()
    assert edit.apply(HEAD) is HEAD  # nothing to do: the same bytes
    edit.set(b"X-A", b"3")
    edit.remove.add(b"server")
    assert edit.apply(HEAD) == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 3\r\n\r\n"


class Recorder(Filter):
    def __init__(self, name: str, verdict: int, seen: list[str]) -> None:
        self.name = name
        self.verdict = verdict
        self.seen = seen

    def on_request(self, request: RequestInfo) -> int:
        self.seen.append(self.name)
        if self.verdict == RESPOND:
            request.answer = Answer(403, b"no\n", b"text/plain")
        return self.verdict

    def on_response(self, response: ResponseInfo) -> int:
        self.seen.append(self.name)
        response.edit.add.append((b"X-Seen", self.name.encode()))
        return self.verdict if self.verdict != RESPOND else CONTINUE


@pytest.mark.parametrize(
    ("verdicts", "ran"),
    [
        ((CONTINUE, CONTINUE), ["a", "b"]),
        ((STOP, CONTINUE), ["a"]),
        ((RESPOND, CONTINUE), ["a"]),
    ],
)
def test_a_verdict_decides_whether_the_next_filter_runs(
    verdicts: tuple[int, int], ran: list[str]
) -> None:
    seen: list[str] = []
    chain = FilterChain([Recorder("a", verdicts[0], seen), Recorder("b", verdicts[1], seen)])
    info = chain.request(b"GET", "/", "", [], "127.0.0.1")
    assert seen == ran
    assert (info.answer is not None) == (verdicts[0] == RESPOND)


def test_a_filter_that_responds_without_an_answer_is_a_defect() -> None:
    class Broken(Filter):
        def on_request(self, request: RequestInfo) -> int:
            return RESPOND

    with pytest.raises(ValueError, match="without an Answer"):
        FilterChain([Broken()]).request(b"GET", "/", "", [], "")


def test_framing_and_hop_by_hop_headers_cannot_be_edited() -> None:
    with pytest.raises(ValueError, match="edge's own"):
        HeaderEditFilter(response_set=[(b"Content-Length", b"1")])
    with pytest.raises(ValueError, match="edge's own"):
        HeaderEditFilter(request_remove=[b"Transfer-Encoding"])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("headers", "{request: {set: {Content-Length: '5'}}}", "framing, hop-by-hop and Host"),
        ("headers", "{response: {remove: [connection]}}", "framing, hop-by-hop and Host"),
        ("headers", "{request: {set: {'bad name': x}}}", "expected a header name"),
        ("headers", '{response: {set: {X-A: "a\\nb"}}}', "expected a header value"),
        ("compress", "{level: 0}", "level: found 0: expected a level from 1 (fastest"),
        ("compress", "{level: 10}", "level: found 10: expected a level from 1"),
        ("compress", "{level: fast}", "level"),
        ("compress", "{encodings: [br]}", "expected 'gzip'"),
        ("compress", "{encodings: []}", "encodings"),
        ("compress", "{types: [text]}", "expected a media type such as 'text/html'"),
        ("compress", "{types: ['text/ html']}", "expected a media type"),
        ("compress", "{min_length: lots}", "expected a size"),
        ("compress", "{gzip: true}", "gzip"),
    ],
)
def test_config_refuses_bad_filter_options(key: str, value: str, message: str) -> None:
    text = f"routes: [{{name: r, respond: {{}}, {key}: {value}}}]\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, "<t>")
    assert f"routes[0].{key}" in str(info.value)
    assert message in str(info.value), str(info.value)


def test_a_route_without_filters_has_no_chain(pair: Pair) -> None:
    route = pair.worker.listeners[0].routes.routes[0]
    assert route.filters is None


def test_a_filter_answers_before_the_upstream_is_asked(pair: Pair) -> None:
    seen: list[str] = []
    route = pair.worker.listeners[0].routes.routes[-1]
    route.filters = FilterChain([Recorder("guard", RESPOND, seen), Recorder("x", CONTINUE, seen)])
    pair.client.data_received(GET)
    sent = pair.down.text()
    assert sent.startswith(b"HTTP/1.1 403 ")
    assert sent.endswith(b"\r\n\r\nno\n")
    assert b"X-Seen: guard" in sent  # the answer went through the response hooks too
    assert all(not t.out for _, t in pair.upstreams)  # no upstream was asked
    assert seen == ["guard", "guard", "x"]


def test_response_hooks_edit_the_upstream_head(pair: Pair) -> None:
    seen: list[str] = []
    route = pair.worker.listeners[0].routes.routes[-1]
    route.filters = FilterChain([Recorder("a", CONTINUE, seen), Recorder("b", STOP, seen)])
    pair.client.data_received(GET)
    up, _ = pair.upstream_asked()
    up.data_received(OK_HEAD + b"hello")
    sent = pair.down.text()
    assert b"X-Seen: a\r\nX-Seen: b\r\n\r\nhello" in sent


# -- body hooks and the framing of a transformed body ----------------------------------


def _head(*lines: str, status: str = "200 OK") -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *lines]) + "\r\n\r\n").encode()


def _refusal(method: bytes, status: int, *lines: str) -> str | None:
    info = ResponseInfo(status, RequestInfo(method, "/", "", [], ""), _head(*lines))
    return info.transform_refusal()


@pytest.mark.parametrize(
    ("method", "status", "lines", "refused"),
    [
        (b"GET", 200, ("Content-Type: text/plain",), None),
        (b"POST", 404, (), None),
        (b"GET", 500, (), None),
        (b"HEAD", 200, (), "HEAD"),
        (b"GET", 103, (), "no body"),
        (b"GET", 204, (), "no body"),
        (b"GET", 304, (), "no body"),
        (b"GET", 206, ("Content-Range: bytes 0-9/100",), "range"),
        (b"GET", 200, ("Content-Encoding: br",), "Content-Encoding"),
        (b"GET", 200, ("content-encoding: identity",), "Content-Encoding"),
        (b"GET", 200, ("Cache-Control: public, No-Transform, max-age=60",), "no-transform"),
        (b"GET", 200, ("Cache-Control: max-age=60", "Cache-Control: no-transform"), "no-transform"),
        (b"GET", 200, ("Cache-Control: no-store, x-no-transform",), None),
    ],
)
def test_which_bodies_may_be_transformed(
    method: bytes, status: int, lines: tuple[str, ...], refused: str | None
) -> None:
    reason = _refusal(method, status, *lines)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_a_transformed_body_is_chunked_for_http11() -> None:
    head = _head(
        "Content-Type: text/plain",
        "Content-Length: 1234",
        'ETag: "v1"',
        "Accept-Ranges: bytes",
        "Connection: close",
    )
    assert transformed_head(head, chunked=True) == _head(
        "Content-Type: text/plain",
        'ETag: W/"v1"',
        "Connection: close",
        "Transfer-Encoding: chunked",
    )


def test_a_transformed_body_ends_with_the_connection_for_http10() -> None:
    head = _head("Content-Length: 5", 'ETag: W/"weak"', "Connection: keep-alive")
    assert transformed_head(head, chunked=False) == _head('ETag: W/"weak"', "Connection: close")


def test_a_whole_transformed_body_is_framed_by_its_length() -> None:
    head = _head("Content-Length: 5", "Connection: keep-alive")
    assert transformed_head(head, chunked=False, length=3) == _head(
        "Connection: keep-alive", "Content-Length: 3"
    )


class Upper:
    def piece(self, data: bytes) -> bytes:
        return data.upper()

    def finish(self) -> bytes:
        return b"!"


class Hold:
    """Keeps everything until the end (a step whose pieces are often empty)."""

    def __init__(self) -> None:
        self.held = b""

    def piece(self, data: bytes) -> bytes:
        self.held += data
        return b""

    def finish(self) -> bytes:
        return b"[" + self.held + b"]"


class Shout(Filter):
    name = "shout"
    transforms_body = True

    def on_response(self, response: ResponseInfo) -> int:
        if response.transform_refusal() is None:
            response.transform(Upper())
        return CONTINUE


def test_body_steps_feed_each_other_and_tails_go_through_later_steps() -> None:
    relay = BodyRelay([Hold(), Upper()], chunked=True)
    assert relay.piece(b"ab") == b""
    assert relay.piece(b"cd") == b""
    assert relay.finish() == b"[ABCD]!"
    relay = BodyRelay([Upper(), Hold()], chunked=True)
    assert relay.piece(b"ab") == b""
    assert relay.finish() == b"[AB!]"


def test_the_chain_knows_at_load_whether_it_has_body_filters() -> None:
    assert FilterChain([Shout()]).body_filters
    assert not FilterChain([HeaderEditFilter()]).body_filters
    assert FilterChain([HeaderEditFilter(), CompressFilter()]).body_filters


def test_a_filter_not_declared_as_a_body_filter_cannot_transform() -> None:
    class Sneaky(Filter):
        def on_response(self, response: ResponseInfo) -> int:
            response.transform(Upper())
            return CONTINUE

    request = FilterChain([Sneaky()]).request(b"GET", "/", "", [], "")
    with pytest.raises(ValueError, match="without transforms_body"):
        FilterChain([Sneaky()]).response_head(200, _head("Content-Length: 1"), request)


def test_a_refused_body_cannot_be_transformed() -> None:
    info = ResponseInfo(200, RequestInfo(b"HEAD", "/", "", [], ""), _head())
    with pytest.raises(ValueError, match="HEAD"):
        info.transform(Upper())
    with pytest.raises(ValueError, match="request is not known"):
        ResponseInfo(200, None, _head()).transform(Upper())


def test_response_head_sets_the_body_relay_and_the_framing() -> None:
    chain = FilterChain([Shout()])
    request = chain.request(b"GET", "/", "", [], "", b"1.0")
    head = chain.response_head(200, _head("Content-Length: 3"), request)
    assert head == _head("Connection: close")
    assert request.body is not None and not request.body.chunked
    refused = chain.request(b"GET", "/", "", [], "")
    head = chain.response_head(304, _head('ETag: "x"'), refused)
    assert head == _head('ETag: "x"') and refused.body is None


# -- the compression filter's decision --------------------------------------------------

TEXT_HEAD = _head("Content-Type: text/plain", "Content-Length: 100", 'ETag: "e"')


def _compress(
    head: bytes = TEXT_HEAD,
    accept: str | None = "gzip",
    method: bytes = b"GET",
    status: int = 200,
    **options: object,
) -> tuple[bytes, RequestInfo]:
    chain = FilterChain([CompressFilter(**options)])  # type: ignore[arg-type]
    headers = [] if accept is None else [(b"Accept-Encoding", accept.encode())]
    request = chain.request(method, "/", "", headers, "127.0.0.1")
    return chain.response_head(status, head, request), request


def test_compress_a_text_body_the_client_accepts() -> None:
    head, request = _compress()
    assert head == _head(
        "Content-Type: text/plain",
        'ETag: W/"e"',
        "Vary: Accept-Encoding",
        "Content-Encoding: gzip",
        "Transfer-Encoding: chunked",
    )
    assert request.body is not None and request.body.chunked
    data = request.body.piece(b"a" * 100) + request.body.finish()
    assert gzip.decompress(data) == b"a" * 100


def test_a_client_that_does_not_accept_gzip_gets_vary_only() -> None:
    for accept in (None, "identity", "gzip;q=0", "br"):
        head, request = _compress(accept=accept)
        assert head == TEXT_HEAD[:-2] + b"Vary: Accept-Encoding\r\n\r\n", accept
        assert request.body is None


@pytest.mark.parametrize(
    ("head", "options"),
    [
        (_head("Content-Type: image/png", "Content-Length: 100"), {}),
        (_head("Content-Length: 100"), {}),  # no Content-Type
        (_head("Content-Type: text/plain", "Content-Length: 19"), {}),  # below 20 bytes
        (_head("Content-Type: text/plain", "Content-Length: 100"), {"min_length": 101}),
        (_head("Content-Type: text/plain", "Content-Length: 100"), {"types": ["text/html"]}),
        (_head("Content-Type: text/plain", "Content-Encoding: gzip"), {}),
        (_head("Content-Type: text/plain", "Cache-Control: no-transform"), {}),
    ],
)
def test_responses_left_alone(head: bytes, options: dict[str, object]) -> None:
    out, request = _compress(head, **options)
    assert out == head and request.body is None


def test_heads_without_a_body_are_left_alone() -> None:
    for method, status in ((b"HEAD", 200), (b"GET", 304), (b"GET", 204), (b"GET", 206)):
        out, request = _compress(method=method, status=status)
        assert out == TEXT_HEAD and request.body is None


def test_a_body_of_unknown_length_is_compressed() -> None:
    head, request = _compress(_head("Content-Type: application/json; charset=utf-8"))
    assert b"Content-Encoding: gzip" in head and request.body is not None


def test_vary_is_merged() -> None:
    head, _ = _compress(_head("Content-Type: text/css", "Vary: Origin", "vary: Cookie"))
    assert b"Vary: Origin, Cookie, Accept-Encoding\r\n" in head
    assert b"vary: Cookie" not in head
    for vary in ("*", "accept-encoding", "Origin, Accept-Encoding"):
        head, _ = _compress(_head("Content-Type: text/css", f"Vary: {vary}"))
        assert head.count(b"Vary") == 1 and f"Vary: {vary}\r\n".encode() in head


def test_a_route_answer_is_compressed_whole() -> None:
    chain = FilterChain([CompressFilter()])
    request = chain.request(b"GET", "/", "", [(b"accept-encoding", b"gzip")], "")
    body = b"hello compressed world " * 20
    head = _head("Content-Type: text/plain", f"Content-Length: {len(body)}")
    out_head, out_body = chain.whole_response(200, head, body, request)
    assert gzip.decompress(out_body) == body
    assert out_head.endswith(f"Content-Length: {len(out_body)}\r\n\r\n".encode())
    assert b"Transfer-Encoding" not in out_head and request.body is None


def test_only_gzip_is_offered() -> None:
    with pytest.raises(ValueError, match="unknown content codings"):
        CompressFilter(codings=["br"])


def test_config_compress_defaults_build_the_filter() -> None:
    config = load_text(
        "listeners: [{name: main, address: '127.0.0.1:0'}]\n"
        "routes: [{name: r, respond: {}, compress: {types: ['text/*'], min_length: 1KiB}}]\n",
        "<t>",
    )
    compress = config.routes[0].compress
    assert compress is not None
    assert (compress.encodings, compress.min_length, compress.level) == (("gzip",), 1024, 1)
    chain = build_chain(config.routes[0])
    assert chain is not None and chain.body_filters
    (step,) = chain.filters
    assert isinstance(step, CompressFilter) and step.min_length == 1024


# -- the data plane's side (in-memory transports) ----------------------------------------


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    """(head, body) of one chunked response; checks that it ends exactly once."""
    head, _, rest = data.partition(b"\r\n\r\n")
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n", rest[:50]
            return head, body
        body += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]


def _compressing(pair: Pair) -> None:
    route = pair.worker.listeners[0].routes.routes[-1]
    route.filters = FilterChain([CompressFilter()])


GZ_GET = b"GET /a HTTP/1.1\r\nHost: example.test\r\nAccept-Encoding: gzip\r\n\r\n"


def test_the_data_plane_compresses_piece_by_piece(pair: Pair) -> None:
    _compressing(pair)
    pair.client.data_received(GZ_GET)
    up, _ = pair.upstream_asked()
    body = b"".join(b"line %06d of a text body\n" % i for i in range(20_000))
    up.data_received(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    for i in range(0, len(body), 7000):
        up.data_received(body[i : i + 7000])
    head, data = _dechunk(pair.down.text())
    assert b"Content-Encoding: gzip" in head and b"Content-Length" not in head
    assert gzip.decompress(data) == body
    assert not pair.down.closed  # chunked: the connection stays for the next request
    # The next request on the connection is answered as usual (and compressed again).
    pair.down.out.clear()
    for _, transport in pair.upstreams:
        transport.out.clear()
    pair.client.data_received(GZ_GET)
    up, _ = pair.upstream_asked()
    up.data_received(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1e\r\n" + b"x" * 30 + b"\r\n0\r\n\r\n"
    )
    head, data = _dechunk(pair.down.text())
    assert gzip.decompress(data) == b"x" * 30


def test_the_data_plane_ends_an_http10_compressed_body_by_closing(pair: Pair) -> None:
    _compressing(pair)
    pair.client.data_received(
        b"GET /a HTTP/1.0\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n"
    )
    up, _ = pair.upstream_asked()
    body = b"{" + b'"k": "v", ' * 500 + b"}"
    up.data_received(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    head, _, data = pair.down.text().partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"Transfer-Encoding" not in head
    assert gzip.decompress(data) == body
    assert pair.down.closed == "closed"


def test_a_route_answer_through_the_data_plane_is_compressed(pair: Pair) -> None:
    route = pair.worker.listeners[0].routes.routes[0]  # respond: {body: hi}
    route.filters = FilterChain([CompressFilter(min_length=0)])
    pair.client.data_received(
        b"GET /hello HTTP/1.1\r\nHost: example.test\r\nAccept-Encoding: gzip\r\n\r\n"
    )
    head, _, data = pair.down.text().partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    assert f"Content-Length: {len(data)}".encode() in head
    assert gzip.decompress(data) == b"hi"


def test_a_body_read_until_the_upstream_closes_is_compressed_to_its_end(pair: Pair) -> None:
    _compressing(pair)
    pair.client.data_received(GZ_GET)
    up, _ = pair.upstream_asked()
    body = b"<p>until close</p>\n" * 400
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n")
    up.data_received(body[:3000])
    up.data_received(body[3000:])
    up.connection_lost(None)  # the end of the body
    head, data = _dechunk(pair.down.text())
    assert b"Content-Encoding: gzip" in head and b"Transfer-Encoding: chunked" in head
    assert gzip.decompress(data) == body
    assert not pair.down.closed  # chunked to the client: its connection stays
