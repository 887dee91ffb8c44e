"""What llhttp (through httptools, in its default strict mode) rejects by itself.

The edge feeds bytes to httptools.HttpRequestParser and calls backhaul.http on what comes
out. These tests pin down which section-4 cases llhttp already refuses (the edge can rely on
it and map httptools.HttpParserError to a 400) and which ones it lets through (backhaul.http
or the edge must catch them). If an httptools upgrade changes any of this, a test here fails
and the split of duties has to be looked at again.
"""

from __future__ import annotations

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.errors import RemoteProtocolError
from backhaul.http import inspect_request_head, parse_target

Headers = list[tuple[bytes, bytes]]


class Collector:
    """Records the callbacks httptools makes; trailers are kept apart from the head."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.trailers: Headers = []
        self.head_done = False
        self.body = b""
        self.messages = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        (self.trailers if self.head_done else self.headers).append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.messages += 1


def llhttp(data: bytes) -> Collector:
    """Feed ``data`` to a fresh request parser; httptools errors propagate."""
    collector = Collector()
    httptools.HttpRequestParser(collector).feed_data(data)
    return collector


def chunked(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body


# --- rejected by llhttp: the edge can rely on these ---------------------------------------

LLHTTP_REJECTS = {
    "cl_with_te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_chunked_chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked"
    b"\r\n\r\n0\r\n\r\n",
    "te_gzip_alone": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te_chunked_not_final": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip"
    b"\r\n\r\n",
    "te_repeated": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_vertical_tab": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
    "cl_duplicate_equal": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
    b"Content-Length: 1\r\n\r\nx",
    "cl_empty": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
    "cl_signed": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx",
    "cl_hex": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x1\r\n\r\nx",
    "cl_list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx",
    "cl_overflow": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "chunk_size_not_hex": chunked(b"zz\r\nx\r\n0\r\n\r\n"),
    "chunk_size_negative": chunked(b"-1\r\nx\r\n0\r\n\r\n"),
    "chunk_size_0x": chunked(b"0x1\r\nx\r\n0\r\n\r\n"),
    "chunk_size_space": chunked(b"1 \r\nx\r\n0\r\n\r\n"),
    "chunk_size_overflow": chunked(b"fffffffffffffffff\r\nx\r\n0\r\n\r\n"),
    "chunk_data_longer_than_declared": chunked(b"1\r\nxyz\r\n0\r\n\r\n"),
    "chunk_size_line_bare_lf": chunked(b"1\nx\r\n0\r\n\r\n"),
    "chunk_data_bare_lf": chunked(b"1\r\nx\n0\r\n\r\n"),
    "obs_fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "whitespace_before_colon": b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
    "tab_before_colon": b"GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n",
    "empty_header_name": b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
    "control_char_in_name": b"GET / HTTP/1.1\r\nHost: a\r\nX\x01A: b\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
    "cr_in_value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
    "ctl_in_value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n",
    "del_in_value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n",
    "bare_lf_header_line": b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
    "space_in_target": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "ctl_in_target": b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
    "non_ascii_in_target": b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
    "http_1_2": b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    "lower_case_method": b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    "authority_form_with_get": b"GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n",
    "whitespace_before_first_header": b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(LLHTTP_REJECTS))
def test_llhttp_rejects(case: str) -> None:
    with pytest.raises(httptools.HttpParserError):
        llhttp(LLHTTP_REJECTS[case])


@pytest.mark.parametrize("case", sorted(LLHTTP_REJECTS))
def test_llhttp_rejects_byte_by_byte_too(case: str) -> None:
    parser = httptools.HttpRequestParser(Collector())
    data = LLHTTP_REJECTS[case]
    with pytest.raises(httptools.HttpParserError):
        for i in range(len(data)):
            parser.feed_data(data[i : i + 1])


# --- let through by llhttp: backhaul.http (or the edge) must catch these --------------------

# Each case: the bytes, and which of our checks refuses what llhttp hands over.
LLHTTP_ACCEPTS_HEAD = {
    "te_on_http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_case_variant": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
    "te_gzip_then_chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n"
    b"\r\n0\r\n\r\n",
    "missing_host": b"GET / HTTP/1.1\r\n\r\n",
    "duplicate_host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "bad_port_in_host": b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n",
    "space_in_host": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "userinfo_in_host": b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
    "http_2_0_request_line": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
}

LLHTTP_ACCEPTS_TARGET = {
    "get_asterisk": b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    "fragment": b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad_percent_encoding": b"GET /foo% HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad_percent_hex": b"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute_form_userinfo": b"GET http://u@h/ HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(LLHTTP_ACCEPTS_HEAD))
def test_llhttp_accepts_but_inspect_request_head_rejects(case: str) -> None:
    data = LLHTTP_ACCEPTS_HEAD[case]
    seen = llhttp(data)  # no exception: llhttp lets it through
    version = data.split(b"\r\n", 1)[0].rsplit(b"/", 1)[1]
    with pytest.raises(RemoteProtocolError):
        inspect_request_head(version, seen.headers)


@pytest.mark.parametrize("case", sorted(LLHTTP_ACCEPTS_TARGET))
def test_llhttp_accepts_but_parse_target_rejects(case: str) -> None:
    data = LLHTTP_ACCEPTS_TARGET[case]
    seen = llhttp(data)
    method = data.split(b" ", 1)[0]
    with pytest.raises(RemoteProtocolError):
        parse_target(method, seen.url)


def test_llhttp_accepts_oversized_chunk_extensions() -> None:
    # 1 MiB of chunk extension is swallowed without a callback: the edge must bound the
    # bytes it feeds without seeing on_body/on_chunk_* progress (say 8 KiB) to refuse this.
    seen = llhttp(chunked(b"1;ext=" + b"v" * (1 << 20) + b"\r\nx\r\n0\r\n\r\n"))
    assert seen.body == b"x"
    assert seen.messages == 1


def test_llhttp_passes_trailers_as_headers_after_head() -> None:
    # Trailer fields arrive through on_header after on_headers_complete: the edge must ignore
    # on_header calls once the head is complete (trailers are dropped).
    seen = llhttp(chunked(b"1\r\nx\r\n0\r\nX-Injected: 1\r\n\r\n"))
    assert seen.trailers == [(b"X-Injected", b"1")]
    assert (b"X-Injected", b"1") not in seen.headers


def test_llhttp_passes_obs_text_in_values() -> None:
    # obs-text (0x80-0xFF) is legal in values (RFC 9110 5.5); both sides accept it.
    seen = llhttp(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xe9\r\n\r\n")
    inspect_request_head(b"1.1", seen.headers)


def test_llhttp_keeps_trailing_whitespace_in_values() -> None:
    seen = llhttp(b"GET / HTTP/1.1\r\nHost:  a.example \t\r\n\r\n")
    assert seen.headers == [(b"Host", b"a.example \t")]
    assert inspect_request_head(b"1.1", seen.headers).host == "a.example"


def test_llhttp_connect_raises_upgrade() -> None:
    # CONNECT ends HTTP parsing: httptools raises HttpParserUpgrade after the head.
    collector = Collector()
    with pytest.raises(httptools.HttpParserUpgrade):
        httptools.HttpRequestParser(collector).feed_data(
            b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"
        )
    assert collector.url == b"a.example:443"


# --- field syntax: llhttp and backhaul.http refuse exactly the same bytes --------------------
# This is what makes `values_checked=True` safe for header lines that came out of httptools.


def llhttp_accepts_field(name: bytes, value: bytes) -> bool:
    """Whether llhttp takes the line ``name: value`` as that field. A CR or LF in ``value``
    can make the bytes a different message that llhttp accepts (``!: \r\n`` then an empty
    line is a field with an empty value and the end of the head): that is not accepting
    the field as sent."""
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": " + value + b"\r\n\r\n"
    try:
        collector = llhttp(data)
    except httptools.HttpParserError:
        return False
    sent = (name, value.rstrip(b" \t"))
    return collector.messages == 1 and sent in [(n, v.rstrip(b" \t")) for n, v in collector.headers]


def backhaul_accepts_field(name: bytes, value: bytes) -> bool:
    try:
        inspect_request_head(b"1.1", [(b"Host", b"a"), (name, value)])
    except RemoteProtocolError:
        return False
    return True


@pytest.mark.parametrize("byte", [b for b in range(256) if b != 0x3A])  # ":" ends a name
def test_same_name_bytes_refused(byte: int) -> None:
    name = b"X" + bytes([byte]) + b"Y"
    assert llhttp_accepts_field(name, b"v") == backhaul_accepts_field(name, b"v")


@pytest.mark.parametrize("byte", range(256))
def test_same_value_bytes_refused(byte: int) -> None:
    value = b"a" + bytes([byte]) + b"b"
    assert llhttp_accepts_field(b"X-A", value) == backhaul_accepts_field(b"X-A", value)


FRAMING = {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect"}


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=1, max_size=8).filter(lambda n: b":" not in n and n.lower() not in FRAMING),
    st.binary(max_size=12),
)
def test_same_fields_refused_random(name: bytes, value: bytes) -> None:
    value = value.lstrip(b" \t")  # llhttp drops leading OWS before it hands the value over
    assert llhttp_accepts_field(name, value) == backhaul_accepts_field(name, value)


def test_values_checked_skips_only_the_value_scan() -> None:
    headers = [(b"Host", b"a"), (b"X-A", b"a\x01b")]
    inspect_request_head(b"1.1", headers, values_checked=True)
    with pytest.raises(RemoteProtocolError):
        inspect_request_head(b"1.1", headers)
    with pytest.raises(RemoteProtocolError):
        inspect_request_head(b"1.1", [(b"Host", b"a"), (b"X A", b"v")], values_checked=True)
    with pytest.raises(RemoteProtocolError):
        inspect_request_head(b"1.1", [(b"Host", b"a b")], values_checked=True)
