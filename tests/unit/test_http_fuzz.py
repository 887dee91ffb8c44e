"""Property tests: every input is parsed or refused with RemoteProtocolError, never anything
else; feeding a request byte by byte through httptools gives what feeding it at once gives."""

from __future__ import annotations

import re

import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backhaul.errors import RemoteProtocolError
from backhaul.http import (
    RequestFacts,
    ResponseFacts,
    Target,
    encode_head,
    inspect_request_head,
    inspect_response_head,
    parse_target,
)
from tests.unit.relayed import forward_request_headers, forward_response_headers

Headers = list[tuple[bytes, bytes]]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = [
    b"Host", b"host", b"HOST", b"Content-Length", b"content-length", b"Transfer-Encoding",
    b"transfer-encoding", b"Connection", b"Upgrade", b"Expect", b"X-Forwarded-For",
    b"Forwarded", b"Via", b"X-Request-Id", b"Keep-Alive", b"TE", b"Trailer", b"Server",
    b"X-Forwarded-Proto", b"Proxy-Authorization", b"Accept", b"X-Custom",
]  # fmt: skip
VALUES = [
    b"chunked", b"Chunked", b"chunked, chunked", b"gzip", b"gzip, chunked", b"5", b"0",
    b"-1", b"+5", b"0x5", b"", b" ", b"close", b"keep-alive", b"upgrade", b"Upgrade, X-Custom",
    b"x-forwarded-for", b"host", b"websocket", b"100-continue", b"a.example", b"a.example:80",
    b"[::1]:8080", b"[::1", b"u@h", b"a:99999", b"a b", b"1.1 cdn", b"for=1.2.3.4",
    str(2**63).encode(), b"caf\xe9", b"\x00", b"a\r\nb",
]  # fmt: skip

names = st.one_of(st.sampled_from(NAMES), st.binary(max_size=12))
values = st.one_of(st.sampled_from(VALUES), st.binary(max_size=24))
header_lists = st.lists(st.tuples(names, values), max_size=8)
versions = st.sampled_from([b"1.1", b"1.0", "1.1", "1.0", b"2.0", b"", b"1.1 "])
authorities = st.one_of(
    st.none(), st.sampled_from([b"a.example", b"[::1]:80"]), st.binary(max_size=16)
)


def reparse(head: bytes, response: bool = False) -> Headers:
    """Parse an encoded head back with llhttp; any llhttp error fails the test."""
    seen: Headers = []

    class Sink:
        def on_header(self, name: bytes, value: bytes) -> None:
            seen.append((name, value))

    parser_type = httptools.HttpResponseParser if response else httptools.HttpRequestParser
    parser_type(Sink()).feed_data(head)
    return seen


@FUZZ
@given(versions, header_lists, authorities)
def test_request_head_parsed_or_refused(
    version: bytes | str, headers: Headers, authority: bytes | None
) -> None:
    try:
        facts = inspect_request_head(version, headers, authority)
    except RemoteProtocolError as err:
        assert err.status_hint in (400, 501, 505)
        assert err.detail and err.rfc
        return
    assert isinstance(facts, RequestFacts)
    assert not (facts.chunked and facts.content_length is not None)
    assert facts.host == facts.host.lower()
    # What the edge forwards for an accepted head is a head llhttp (the upstream) accepts.
    out = forward_request_headers(
        headers,
        facts,
        client_ip="2001:db8::7",
        proto="https",
        host_out=None,
        request_id=b"rid",
        x_forwarded=True,
        forwarded=True,
        via=b"backhaul",
    )
    lowered = [name.lower() for name, _ in out]
    assert lowered.count(b"host") == 1
    assert b"content-length" not in lowered and b"transfer-encoding" not in lowered
    for token in facts.connection_tokens - {
        b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded",
        b"via", b"x-request-id",
    }:  # fmt: skip
        assert token not in lowered
    assert len(reparse(encode_head(b"GET / HTTP/1.1", out))) == len(out)


@FUZZ
@given(
    st.sampled_from([100, 101, 200, 204, 206, 304, 404, 502]),
    versions,
    header_lists,
    st.sampled_from([b"GET", b"HEAD", b"POST"]),
)
def test_response_head_parsed_or_refused(
    status: int, version: bytes | str, headers: Headers, method: bytes
) -> None:
    try:
        facts = inspect_response_head(status, version, headers, method)
    except RemoteProtocolError as err:
        assert err.status_hint == 502
        return
    assert isinstance(facts, ResponseFacts)
    assert not (facts.until_close and facts.keep_alive)
    out = forward_response_headers(headers, facts, via=b"backhaul", server=b"backhaul")
    lowered = [name.lower() for name, _ in out]
    assert lowered.count(b"server") == 1
    if status != 101:  # llhttp stops at a 101 head (upgrade) and reports it as an error
        head = encode_head(b"HTTP/1.1 %d X" % status, out)
        assert len(reparse(head, response=True)) == len(out)


TARGET_ALPHABET = b"/.%2eEfF09azAZ?#:@[]\\|~-_ \x00\x7f\xc3"
targets = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from(list(TARGET_ALPHABET)), max_size=30).map(bytes),
    st.lists(st.sampled_from(list(TARGET_ALPHABET)), max_size=30).map(lambda b: b"/" + bytes(b)),
    st.builds(
        lambda scheme, rest: scheme + bytes(rest),
        st.sampled_from([b"http://", b"HTTPS://", b"ftp://", b"http://a.example"]),
        st.lists(st.sampled_from(list(TARGET_ALPHABET)), max_size=20),
    ),
)
methods = st.sampled_from([b"GET", b"OPTIONS", b"CONNECT", b"POST"])
_CANONICAL_PCT = re.compile(r"%(?![0-9A-F]{2})")
_UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@FUZZ
@given(methods, targets)
def test_target_parsed_or_refused(method: bytes, raw: bytes) -> None:
    try:
        target = parse_target(method, raw)
    except RemoteProtocolError as err:
        assert err.status_hint == 400
        return
    assert isinstance(target, Target)
    if method == b"CONNECT":
        assert target.path == "" and target.authority == raw
        return
    if target.path == "*":
        assert method == b"OPTIONS" and raw == b"*"
        return
    path = target.path
    assert path.startswith("/")
    assert "//" not in path
    segments = path.split("/")
    assert "." not in segments and ".." not in segments
    assert not _CANONICAL_PCT.search(path)
    for match in re.finditer("%([0-9A-F]{2})", path):
        assert chr(int(match.group(1), 16)) not in _UNRESERVED
    assert path.isascii() and " " not in path and "#" not in path
    # Normalisation is decided once: normalising the result again changes nothing.
    assert parse_target(b"GET", path.encode()).path == path


# --- byte-by-byte feeding through httptools + backhaul.http (a test-only harness) ------------


class Harness:
    """The part of the edge's protocol that matters here: collect the head, then ask
    backhaul.http about it. Outcomes are recorded, never raised from inside a callback."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: Headers = []
        self.in_head = True
        self.outcomes: list[tuple[object, ...]] = []
        self.body = b""

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:  # trailers are dropped
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        method = self.parser.get_method()
        try:
            target = parse_target(method, self.url)
            facts = inspect_request_head(
                self.parser.get_http_version(), self.headers, target.authority
            )
        except RemoteProtocolError as err:
            self.outcomes.append(("refused", err.status_hint, err.detail))
        else:
            self.outcomes.append(("head", method, target, repr(facts)))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.outcomes.append(("complete", self.body))
        self.body = b""

    def feed(self, pieces: list[bytes]) -> tuple[object, ...]:
        try:
            for piece in pieces:
                self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            return ("upgrade", self.outcomes)
        except httptools.HttpParserError as err:
            return ("llhttp", type(err).__name__, self.outcomes)
        return ("fed", self.outcomes, self.body)


def run(data: bytes, cuts: list[int]) -> tuple[object, ...]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return Harness().feed([p for p in pieces if p])


def byte_by_byte(data: bytes) -> tuple[object, ...]:
    return Harness().feed([data[i : i + 1] for i in range(len(data))])


def chunk_body(body: bytes, sizes: list[int]) -> bytes:
    out = []
    rest = body
    for size in sizes:
        if not rest:
            break
        piece, rest = rest[: size + 1], rest[size + 1 :]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    if rest:
        out.append(b"%x\r\n%s\r\n" % (len(rest), rest))
    return b"".join(out) + b"0\r\n\r\n"


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"OPTIONS", b"PUT"]))
    target = draw(
        st.one_of(
            st.sampled_from([b"/", b"/a/../b", b"//x/%2e%2e/y?q=1", b"*", b"/foo%", b"/a#f",
                             b"http://h.example:8080/p", b"/%7Euser"]),
            st.lists(st.sampled_from(list(b"/.%2eaZ?#:~")), min_size=1, max_size=12).map(
                lambda b: b"/" + bytes(b)
            ),
        )
    )  # fmt: skip
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    headers = draw(
        st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES[:-2])), max_size=5)
    )
    if draw(st.booleans()):
        headers.insert(0, (b"Host", draw(st.sampled_from([b"a.example", b"a.example:81", b""]))))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    lines = [method + b" " + target + b" HTTP/" + version]
    lines += [name + b": " + value for name, value in headers]
    if framing == "length":
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        payload = chunk_body(body, draw(st.lists(st.integers(0, 15), max_size=4)))
    else:
        payload = b""
    message = b"\r\n".join(lines) + b"\r\n\r\n" + payload
    return message * draw(st.integers(1, 2))  # pipelining


@FUZZ
@given(requests(), st.lists(st.integers(0, 10_000), max_size=6))
def test_split_feeding_gives_the_same_result(data: bytes, cuts: list[int]) -> None:
    whole = Harness().feed([data])
    assert byte_by_byte(data) == whole
    assert run(data, cuts) == whole


@FUZZ
@given(st.binary(max_size=120), st.lists(st.integers(0, 200), max_size=4))
def test_random_bytes_never_escape_as_another_exception(data: bytes, cuts: list[int]) -> None:
    whole = Harness().feed([data])
    assert whole[0] in ("fed", "llhttp", "upgrade")
    assert run(data, cuts) == whole


@FUZZ
@given(requests())
def test_random_request_prefix_after_valid_one(data: bytes) -> None:
    # A valid request followed by garbage: the first outcome is unaffected by the split.
    first = b"GET /ok HTTP/1.1\r\nHost: a.example\r\n\r\n"
    whole = Harness().feed([first + data])
    assert byte_by_byte(first + data) == whole
    outcomes = whole[1] if whole[0] == "fed" else whole[-1]
    assert isinstance(outcomes, list)
    assert outcomes[0][0] == "head"
