"""Request and response head validation (issue 2, section 4), one named test per case."""

from __future__ import annotations

import pytest

from backhaul.errors import RemoteProtocolError
from backhaul.http import RequestFacts, inspect_request_head, inspect_response_head

Headers = list[tuple[bytes, bytes]]


def req(*extra: tuple[bytes, bytes], host: bytes | None = b"example.com") -> Headers:
    headers: Headers = [] if host is None else [(b"Host", host)]
    headers.extend(extra)
    return headers


def rejects(headers: Headers, version: bytes = b"1.1", status: int = 400) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        inspect_request_head(version, headers)
    assert info.value.status_hint == status, info.value
    assert info.value.rfc and info.value.rfc.startswith("RFC"), info.value
    return info.value


# --- acceptance: a too-strict implementation fails these ------------------------------------


def test_typical_get_facts() -> None:
    facts = inspect_request_head(
        b"1.1",
        [
            (b"Host", b"Example.COM"),
            (b"User-Agent", b"curl/8.5.0"),
            (b"Accept", b"*/*"),
            (b"Accept-Encoding", b"gzip, br"),
            (b"X-Trace", b"abc"),
        ],
    )
    assert facts == RequestFacts(
        "example.com", b"Example.COM", None, None, False, True, False, None, frozenset()
    )


def test_httptools_version_str_is_accepted() -> None:
    assert inspect_request_head("1.1", req()).keep_alive
    assert not inspect_request_head("1.0", req()).keep_alive


def test_content_length_accepted() -> None:
    facts = inspect_request_head(b"1.1", req((b"Content-Length", b"42")))
    assert facts.content_length == 42
    assert not facts.chunked


def test_content_length_zero_and_max_accepted() -> None:
    assert inspect_request_head(b"1.1", req((b"Content-Length", b"0"))).content_length == 0
    big = str(2**63 - 1).encode()
    assert inspect_request_head(b"1.1", req((b"Content-Length", big))).content_length == 2**63 - 1


def test_content_length_surrounding_ows_and_leading_zeros_accepted() -> None:
    facts = inspect_request_head(b"1.1", req((b"Content-Length", b" 0000000000000000000007\t")))
    assert facts.content_length == 7


def test_chunked_accepted() -> None:
    facts = inspect_request_head(b"1.1", req((b"transfer-encoding", b" chunked ")))
    assert facts.chunked
    assert facts.content_length is None


def test_obs_text_and_htab_in_values_accepted() -> None:
    inspect_request_head(b"1.1", req((b"X-Name", b"caf\xe9\tbar")))


def test_unusual_token_names_accepted() -> None:
    inspect_request_head(b"1.1", req((b"X-!#$%&'*+.^_`|~1", b"v")))


def test_http10_without_host_accepted() -> None:
    facts = inspect_request_head(b"1.0", [])
    assert (facts.host, facts.authority, facts.port) == ("", b"", None)
    assert not facts.keep_alive


def test_empty_host_accepted() -> None:
    # RFC 9112 3.2: a target URI without authority is sent with an empty Host.
    facts = inspect_request_head(b"1.1", req(host=b""))
    assert facts.host == ""


def test_host_with_port() -> None:
    facts = inspect_request_head(b"1.1", req(host=b"API.example.com:8443"))
    assert (facts.host, facts.port, facts.authority) == (
        "api.example.com",
        8443,
        b"API.example.com:8443",
    )


def test_host_ipv6_literal_with_port() -> None:
    facts = inspect_request_head(b"1.1", req(host=b"[2001:DB8::1]:8080"))
    assert (facts.host, facts.port) == ("[2001:db8::1]", 8080)


def test_host_ipv4_and_trailing_dot() -> None:
    assert inspect_request_head(b"1.1", req(host=b"127.0.0.1:80")).host == "127.0.0.1"
    assert inspect_request_head(b"1.1", req(host=b"example.com.")).host == "example.com"


def test_host_empty_port_means_no_port() -> None:
    assert inspect_request_head(b"1.1", req(host=b"example.com:")).port is None


def test_absolute_form_authority_wins_over_host() -> None:
    facts = inspect_request_head(b"1.1", req(host=b"other.example"), b"api.example:8080")
    assert (facts.host, facts.port, facts.authority) == ("api.example", 8080, b"api.example:8080")


def test_absolute_form_without_host_accepted() -> None:
    facts = inspect_request_head(b"1.1", [], b"api.example")
    assert facts.host == "api.example"


def test_keep_alive_rules() -> None:
    assert inspect_request_head(b"1.1", req()).keep_alive
    assert not inspect_request_head(b"1.1", req((b"Connection", b"Close"))).keep_alive
    assert not inspect_request_head(b"1.0", req()).keep_alive
    assert inspect_request_head(b"1.0", req((b"Connection", b"Keep-Alive"))).keep_alive
    assert not inspect_request_head(b"1.0", req((b"Connection", b"keep-alive, close"))).keep_alive
    both = req((b"Connection", b"keep-alive"), (b"connection", b"close"))
    assert not inspect_request_head(b"1.1", both).keep_alive


def test_connection_tokens_lowercased_and_merged() -> None:
    facts = inspect_request_head(
        b"1.1", req((b"Connection", b"X-Foo , ,Keep-Alive"), (b"Connection", b"TE"))
    )
    assert facts.connection_tokens == {b"x-foo", b"keep-alive", b"te"}


def test_upgrade_needs_connection_upgrade() -> None:
    ws = req((b"Connection", b"Upgrade"), (b"Upgrade", b"WebSocket"))
    assert inspect_request_head(b"1.1", ws).upgrade == b"websocket"
    assert inspect_request_head(b"1.1", req((b"Upgrade", b"websocket"))).upgrade is None
    # RFC 9110 7.8: ignored on HTTP/1.0
    assert inspect_request_head(b"1.0", ws).upgrade is None


def test_expect_continue() -> None:
    expect = req((b"Expect", b"100-Continue"), (b"Content-Length", b"5"))
    assert inspect_request_head(b"1.1", expect).expect_continue
    # RFC 9110 10.1.1: ignored on HTTP/1.0
    assert not inspect_request_head(b"1.0", expect).expect_continue
    assert not inspect_request_head(b"1.1", req()).expect_continue


# --- Content-Length and Transfer-Encoding (section 4) ----------------------------------------


def test_reject_content_length_with_transfer_encoding() -> None:
    err = rejects(req((b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")))
    assert "Content-Length and Transfer-Encoding" in err.detail


def test_reject_transfer_encoding_with_content_length_either_order() -> None:
    rejects(req((b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"3")))


def test_reject_te_chunked_chunked() -> None:
    err = rejects(req((b"Transfer-Encoding", b"chunked, chunked")))
    assert "more than once" in err.detail


def test_reject_te_gzip_alone_is_501() -> None:
    rejects(req((b"Transfer-Encoding", b"gzip")), status=501)


def test_reject_te_gzip_then_chunked_is_501() -> None:
    rejects(req((b"Transfer-Encoding", b"gzip, chunked")), status=501)


def test_reject_te_chunked_not_final() -> None:
    rejects(req((b"Transfer-Encoding", b"chunked, gzip")))


def test_reject_repeated_te_headers() -> None:
    rejects(req((b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")))


def test_reject_empty_te() -> None:
    rejects(req((b"Transfer-Encoding", b"")))


@pytest.mark.parametrize(
    "value",
    [
        b"Chunked",
        b"CHUNKED",
        b"chunked,",
        b", chunked",
        b"chunked;x=1",
        b'"chunked"',
        b"chunked\x0b",
        b"ch unked",
        b"chunked , ,",
    ],
)
def test_reject_te_odd_variants(value: bytes) -> None:
    rejects(req((b"Transfer-Encoding", value)))


def test_reject_te_on_http10() -> None:
    err = rejects(req((b"Transfer-Encoding", b"chunked")), version=b"1.0")
    assert "HTTP/1.0" in err.detail


def test_reject_duplicate_content_length_equal() -> None:
    rejects(req((b"Content-Length", b"5"), (b"content-length", b"5")))


def test_reject_duplicate_content_length_different() -> None:
    rejects(req((b"Content-Length", b"5"), (b"Content-Length", b"6")))


@pytest.mark.parametrize(
    "value",
    [b"", b" ", b"+5", b"-5", b"0x10", b"1e3", b"5, 5", b"5 5", b"\xd9\xa3", b"\xef\xbc\x95"],
    ids=["empty", "blank", "plus", "minus", "hex", "exp", "list", "spaced", "arabic", "fullwidth"],
)
def test_reject_invalid_content_length(value: bytes) -> None:
    rejects(req((b"Content-Length", value)))


def test_reject_overflowing_content_length() -> None:
    rejects(req((b"Content-Length", str(2**63).encode())))
    rejects(req((b"Content-Length", b"9" * 5000)))


# --- field syntax --------------------------------------------------------------------------


def test_reject_empty_header_name() -> None:
    err = rejects(req((b"", b"value")))
    assert "empty name" in err.detail


def test_reject_whitespace_before_colon() -> None:
    err = rejects(req((b"Content-Length ", b"5")))
    assert "whitespace" in err.detail


@pytest.mark.parametrize(
    "name", [b"X\x01A", b"X A", b"X:A", b"X\x00", b"\xff", b"X\tA", b"(X)", b"X/A"]
)
def test_reject_non_token_header_names(name: bytes) -> None:
    rejects(req((name, b"v")))


@pytest.mark.parametrize("char", [b"\x00", b"\r", b"\n", b"\x01", b"\x1f", b"\x7f", b"\x0b"])
def test_reject_control_characters_in_values(char: bytes) -> None:
    err = rejects(req((b"X-A", b"a" + char + b"b")))
    assert "control character" in err.detail


def test_reject_obs_fold_remains_in_value() -> None:
    # If a lenient parser ever let obs-fold through, the CRLF would still be in the value.
    rejects(req((b"X-A", b"one\r\n two")))


# --- Host ----------------------------------------------------------------------------------


def test_reject_missing_host_on_http11() -> None:
    err = rejects(req(host=None))
    assert "no Host" in err.detail


def test_reject_duplicate_host() -> None:
    rejects([(b"Host", b"a.example"), (b"host", b"a.example")])


def test_reject_duplicate_host_even_with_absolute_form() -> None:
    with pytest.raises(RemoteProtocolError):
        inspect_request_head(b"1.1", [(b"Host", b"a"), (b"Host", b"b")], b"a")


def test_reject_invalid_host_even_with_absolute_form() -> None:
    with pytest.raises(RemoteProtocolError):
        inspect_request_head(b"1.1", [(b"Host", b"a b")], b"a")


@pytest.mark.parametrize(
    "host",
    [
        b"example.com:http",
        b"example.com:65536",
        b"example.com:-1",
        b"example.com:80:80",
        b"example.com:+80",
        b"example.com:999999",
        b"[::1]:x",
        b"[::1]80",
    ],
)
def test_reject_bad_port_in_host(host: bytes) -> None:
    rejects(req(host=host))


def test_reject_host_with_userinfo() -> None:
    err = rejects(req(host=b"user:pass@example.com"))
    assert "userinfo" in err.detail


@pytest.mark.parametrize(
    "host",
    [
        b"exa mple.com",
        b"example.com/path",
        b"exa%6Dple.com",
        b"a,b",
        b"[::1",
        b"[zz::1]",
        b"[fe80::1%25eth0]",
        b":80",
        b"ex\\ample",
        b"..",
        b"a..",
        b"example.com\xff",
    ],
)
def test_reject_host_with_illegal_chars(host: bytes) -> None:
    rejects(req(host=host))


def test_reject_other_http_versions_with_505() -> None:
    rejects(req(), version=b"2.0", status=505)
    rejects(req(), version=b"0.9", status=505)


# --- responses ----------------------------------------------------------------------------


def resp_rejects(status: int, headers: Headers, method: bytes = b"GET") -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        inspect_response_head(status, b"1.1", headers, method)
    assert info.value.status_hint == 502
    return info.value


def test_response_content_length() -> None:
    facts = inspect_response_head(200, b"1.1", [(b"Content-Length", b"13")], b"GET")
    assert (facts.content_length, facts.chunked, facts.keep_alive, facts.no_body) == (
        13,
        False,
        True,
        False,
    )
    assert not facts.until_close


def test_response_chunked() -> None:
    facts = inspect_response_head(200, "1.1", [(b"Transfer-Encoding", b"chunked")], b"GET")
    assert facts.chunked and facts.keep_alive and not facts.until_close


def test_response_without_framing_reads_until_close() -> None:
    facts = inspect_response_head(200, b"1.1", [], b"GET")
    assert facts.until_close
    assert not facts.keep_alive


@pytest.mark.parametrize(
    ("status", "method"),
    [(100, b"GET"), (101, b"GET"), (204, b"GET"), (304, b"GET"), (200, b"HEAD")],
)
def test_response_no_body(status: int, method: bytes) -> None:
    facts = inspect_response_head(status, b"1.1", [(b"Content-Length", b"100")], method)
    assert facts.no_body and not facts.until_close and facts.keep_alive
    assert facts.content_length == 100  # HEAD/304 carry the representation's size


def test_response_head_with_gzip_te_is_fine() -> None:
    # No body follows a HEAD response, so its Transfer-Encoding is metadata only.
    facts = inspect_response_head(200, b"1.1", [(b"Transfer-Encoding", b"gzip, chunked")], b"HEAD")
    assert facts.no_body and not facts.chunked


def test_response_keep_alive_rules() -> None:
    cl = (b"Content-Length", b"0")
    assert not inspect_response_head(
        200, b"1.1", [cl, (b"Connection", b"close")], b"GET"
    ).keep_alive
    assert not inspect_response_head(200, b"1.0", [cl], b"GET").keep_alive
    ka = [cl, (b"Connection", b"keep-alive")]
    assert inspect_response_head(200, b"1.0", ka, b"GET").keep_alive


def test_response_connection_tokens() -> None:
    facts = inspect_response_head(
        200, b"1.1", [(b"Content-Length", b"0"), (b"Connection", b"X-Internal")], b"GET"
    )
    assert facts.connection_tokens == {b"x-internal"}


def test_response_reject_cl_with_te() -> None:
    resp_rejects(200, [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")])


def test_response_reject_duplicate_content_length() -> None:
    resp_rejects(200, [(b"Content-Length", b"3"), (b"Content-Length", b"3")])


def test_response_reject_invalid_content_length() -> None:
    resp_rejects(200, [(b"Content-Length", b"-1")])
    resp_rejects(200, [(b"Content-Length", b"")])


def test_response_reject_te_not_chunked() -> None:
    err = resp_rejects(200, [(b"Transfer-Encoding", b"gzip")])
    assert "relays only" in err.detail


def test_response_reject_repeated_te() -> None:
    resp_rejects(200, [(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")])


def test_response_reject_bad_field_syntax() -> None:
    resp_rejects(200, [(b"X A", b"v"), (b"Content-Length", b"0")])
    resp_rejects(200, [(b"X-A", b"v\r\nSet-Cookie: x"), (b"Content-Length", b"0")])


def test_response_reject_http2_version() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        inspect_response_head(200, b"2.0", [], b"GET")
    assert info.value.status_hint == 502


# --- operator-facing details ----------------------------------------------------------------


def test_detail_does_not_echo_raw_control_bytes() -> None:
    err = rejects(req(host=b"ex\x1b[31mample"))
    assert "\x1b" not in err.detail
    assert "\x1b" not in str(err)


def test_detail_truncates_long_values() -> None:
    err = rejects(req((b"Content-Length", b"x" * 10_000)))
    assert len(err.detail) < 300
