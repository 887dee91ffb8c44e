"""A route's filter chain (issue 7): verdicts, head edits, the header-edit filter and its
config; the data plane's side is driven with in-memory transports."""

from __future__ import annotations

import pytest

from backhaul.config import load_text
from backhaul.errors import ConfigError
from backhaul.http.filters import (
    CONTINUE,
    RESPOND,
    STOP,
    Answer,
    Filter,
    FilterChain,
    HeadEdit,
    HeaderEditFilter,
    RequestInfo,
    ResponseInfo,
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
    ("edits", "message"),
    [
        ("{request: {set: {Content-Length: '5'}}}", "framing, hop-by-hop and Host"),
        ("{response: {remove: [connection]}}", "framing, hop-by-hop and Host"),
        ("{request: {set: {'bad name': x}}}", "expected a header name"),
        ('{response: {set: {X-A: "a\\nb"}}}', "expected a header value"),
    ],
)
def test_config_refuses_bad_header_edits(edits: str, message: str) -> None:
    text = f"routes: [{{name: r, respond: {{}}, headers: {edits}}}]\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, "<t>")
    assert "routes[0].headers" in str(info.value)
    assert message in str(info.value)


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
