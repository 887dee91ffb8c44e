"""Request-target forms and the one path normalisation (issue 2, section 4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.errors import RemoteProtocolError
from backhaul.http import Target, parse_target


def rejects(target: bytes, method: bytes = b"GET") -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        parse_target(method, target)
    assert info.value.status_hint == 400
    return info.value


# The normalisation table: raw target -> (path, query). Router and upstream both see `path`.
NORMALISATION = [
    (b"/", "/", ""),
    (b"/api/v1/users?id=42", "/api/v1/users", "id=42"),
    (b"/a/b/", "/a/b/", ""),
    (b"/?", "/", ""),
    (b"/a?b?c", "/a", "b?c"),
    # dot segments (RFC 3986 5.2.4)
    (b"/a/./b", "/a/b", ""),
    (b"/a/../b", "/b", ""),
    (b"/a/b/..", "/a/", ""),
    (b"/a/b/.", "/a/b/", ""),
    (b"/..", "/", ""),
    (b"/../../etc/passwd", "/etc/passwd", ""),
    (b"/a/../../b", "/b", ""),
    (b"/.well-known/x", "/.well-known/x", ""),
    (b"/a/..b/c", "/a/..b/c", ""),
    (b"/a/...", "/a/...", ""),
    # percent-encoded dots are dots (decoded before dot-segment removal)
    (b"/a/%2e%2E/b", "/b", ""),
    (b"/a/%2e/b", "/a/b", ""),
    # repeated slashes merged
    (b"//a///b//", "/a/b/", ""),
    (b"//", "/", ""),
    # percent-encoding: unreserved decoded, the rest upper-cased, %2F kept
    (b"/%7euser/%41%62c", "/~user/Abc", ""),
    (b"/a%2fb", "/a%2Fb", ""),
    (b"/a%2F..%2Fadmin", "/a%2F..%2Fadmin", ""),
    (b"/%3a%40%20", "/%3A%40%20", ""),
    (b"/caf%c3%a9", "/caf%C3%A9", ""),
    (b"/100%25", "/100%25", ""),
    # printable characters RFC 3986 does not allow raw in a path are encoded
    (b"/a\\b", "/a%5Cb", ""),
    (b"/a|b{c}", "/a%7Cb%7Bc%7D", ""),
    (b'/"x"^`', "/%22x%22%5E%60", ""),
    # sub-delims and ":@" stay as they are
    (b"/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;=", ""),
    # the query is opaque: not normalised
    (b"/a?x=%zz&y=//./..|", "/a", "x=%zz&y=//./..|"),
    (b"/a/../b?q=%7e", "/b", "q=%7e"),
]


@pytest.mark.parametrize(("raw", "path", "query"), NORMALISATION)
def test_normalisation_table(raw: bytes, path: str, query: str) -> None:
    assert parse_target(b"GET", raw) == Target(path, query, None)


@pytest.mark.parametrize(("raw", "path", "query"), NORMALISATION)
def test_normalisation_is_idempotent(raw: bytes, path: str, query: str) -> None:
    again = path.encode() + (b"?" + query.encode() if query else b"")
    assert parse_target(b"GET", again).path == path


def test_fast_path_result_type() -> None:
    result = parse_target(b"GET", b"/plain/path?x=1")
    assert type(result) is Target
    assert result.path == "/plain/path"


# --- forms ---------------------------------------------------------------------------------


def test_absolute_form() -> None:
    assert parse_target(b"GET", b"http://api.example:8080/v1/../x?q=1") == Target(
        "/x", "q=1", b"api.example:8080"
    )


def test_absolute_form_https_uppercase_scheme_and_no_path() -> None:
    assert parse_target(b"GET", b"HTTPS://api.example") == Target("/", "", b"api.example")
    assert parse_target(b"GET", b"http://api.example?q") == Target("/", "q", b"api.example")


def test_absolute_form_ipv6_authority() -> None:
    assert parse_target(b"GET", b"http://[::1]:8080/a").authority == b"[::1]:8080"


def test_asterisk_form_with_options() -> None:
    assert parse_target(b"OPTIONS", b"*") == Target("*", "", None)


def test_authority_form_with_connect() -> None:
    assert parse_target(b"CONNECT", b"db.example:5432") == Target("", "", b"db.example:5432")


def test_options_with_origin_form() -> None:
    assert parse_target(b"OPTIONS", b"/x").path == "/x"


# --- rejections (section 4) ----------------------------------------------------------------


def test_reject_get_asterisk() -> None:
    err = rejects(b"*")
    assert "OPTIONS" in err.detail


def test_reject_fragment() -> None:
    err = rejects(b"/a#frag")
    assert "fragment" in err.detail


def test_reject_fragment_in_query() -> None:
    rejects(b"/a?b#frag")


def test_reject_trailing_percent() -> None:
    err = rejects(b"/foo%")
    assert "%25" in err.detail


@pytest.mark.parametrize("target", [b"/%zz", b"/%2", b"/a%g0/b", b"/%%41", b"/a/%"])
def test_reject_bad_percent_encoding(target: bytes) -> None:
    rejects(target)


@pytest.mark.parametrize(
    "target",
    [b"/a b", b"/a\tb", b"/a\x00", b"/a\x7f", b"/caf\xc3\xa9", b"/\x1b[31m", b"/a?q=\x80"],
)
def test_reject_non_ascii_ctl_and_space(target: bytes) -> None:
    rejects(target)


def test_reject_empty_target() -> None:
    rejects(b"")


def test_reject_authority_form_without_connect() -> None:
    err = rejects(b"example.com:443")
    assert "CONNECT" in err.detail


def test_reject_connect_with_origin_form() -> None:
    rejects(b"/x", method=b"CONNECT")


def test_reject_connect_without_port() -> None:
    rejects(b"example.com", method=b"CONNECT")


def test_reject_connect_with_absolute_form() -> None:
    rejects(b"http://example.com:443/", method=b"CONNECT")


def test_reject_other_schemes() -> None:
    rejects(b"ftp://example.com/")
    rejects(b"javascript://x/")


def test_reject_absolute_form_without_host() -> None:
    rejects(b"http:///x")


def test_reject_absolute_form_with_userinfo() -> None:
    err = rejects(b"http://user:pw@example.com/")
    assert "userinfo" in err.detail


def test_reject_absolute_form_with_bad_port() -> None:
    rejects(b"http://example.com:99999/")


def test_reject_relative_path() -> None:
    rejects(b"a/b")


# -- the data plane's shortcut for targets that are already normal ----------------------------

_TARGET_ALPHABET = b"/.?%#azAZ09-_~!$&'()*+,;=:@ \"<>\\^`{|}\x7f\x00"


@pytest.mark.parametrize(
    "target",
    [b"/", b"/a/b?c=d", b"/a//b", b"/a/./b", b"/./", b"/a?x=/.", b"/a?b//c", b"/%41", b"a/b", b""],
)
def test_shortcut_taken_only_when_parse_target_changes_nothing(target: bytes) -> None:
    check_shortcut(target)


def check_shortcut(target: bytes) -> None:
    from backhaul.edge.datapath import plain_origin_target

    shortcut = plain_origin_target(target)
    if shortcut is None:
        return
    path, query, authority = parse_target(b"GET", target)
    assert (path, query) == shortcut
    assert authority is None
    assert target == (path + ("?" + query if b"?" in target else "")).encode()


def _spelled(raw: bytes) -> bytes:
    return b"/" + bytes(_TARGET_ALPHABET[c % len(_TARGET_ALPHABET)] for c in raw)


@given(st.binary(max_size=40).map(_spelled))
@settings(max_examples=600, deadline=None)
def test_shortcut_agrees_with_parse_target(target: bytes) -> None:
    check_shortcut(target)
