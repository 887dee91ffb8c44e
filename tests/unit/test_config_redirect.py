"""Redirect templates: parsed at config load, expanded without a bare ``?``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backhaul.config import load_text
from backhaul.errors import ConfigError
from backhaul.http.redirect import parse_redirect


@pytest.mark.parametrize(
    ("template", "path", "query", "location"),
    [
        ("{path}?{query}", "/a", "", "/a"),
        ("{path}?{query}", "/a", "x=1", "/a?x=1"),
        ("https://new.test{path}?{query}", "/a/b", "", "https://new.test/a/b"),
        ("https://new.test{path}", "/a", "x=1", "https://new.test/a"),
        ("/new?{query}&from=old", "/a", "", "/new?from=old"),
        ("/new?{query}&from=old", "/a", "q=1", "/new?q=1&from=old"),
        ("/new?from=old&{query}", "/a", "", "/new?from=old"),
        ("/new?from=old&{query}", "/a", "q=1", "/new?from=old&q=1"),
        ("/moved", "/a", "q=1", "/moved"),
        ("/x{{literal}}{path}", "/a", "", "/x{literal}/a"),
    ],
)
def test_location(template: str, path: str, query: str, location: str) -> None:
    assert parse_redirect(template).location(path, query) == location


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("/{pth}", "found the placeholder {pth} in '/{pth}'"),
        ("/{Path}", "did you mean {path}?"),
        ("/{}", "found the placeholder {}"),
        ("/{path!r}", "found the placeholder {path!r}"),
        ("/{query:>9}", "found the placeholder {query:>9}"),
        ("/{path", "a brace that opens or closes nothing"),
        ("/p}", "a brace that opens or closes nothing"),
    ],
)
def test_bad_templates_are_refused(template: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_redirect(template)
    assert needle in str(info.value)
    assert "expected only {path} and {query}" in str(info.value)


@given(
    path=st.text("/abc%-._~", min_size=1).map(lambda p: "/" + p),
    query=st.text("abc=&%+", max_size=8),
)
def test_path_and_query_never_leave_a_bare_question_mark(path: str, query: str) -> None:
    location = parse_redirect("https://n.test{path}?{query}").location(path, query)
    assert location == f"https://n.test{path}" + (f"?{query}" if query else "")


def test_config_load_refuses_an_unknown_placeholder_with_its_path() -> None:
    text = (
        "listeners: [{address: '127.0.0.1:8080'}]\n"
        "routes:\n"
        "  - {name: ok, match: {prefix: /a}, redirect: {to: '{path}?{query}'}}\n"
        "  - {name: typo, redirect: {to: 'https://new.test{pth}'}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_text(text, "edge.yaml")
    assert [path for path, _ in info.value.problems] == ["routes[1].redirect.to"]
    assert "{pth}" in info.value.problems[0][1] and "(line 4)" in info.value.problems[0][1]


def test_a_loaded_route_carries_its_parsed_template() -> None:
    text = (
        "listeners: [{address: '127.0.0.1:8080'}]\n"
        "routes: [{redirect: {to: 'https://new.test{path}?{query}', status: 301}}]\n"
    )
    redirect = load_text(text).routes[0].redirect
    assert redirect is not None
    assert redirect.template.location("/x", "") == "https://new.test/x"
