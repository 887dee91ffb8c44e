"""Loading configs: every bad config is one ConfigError with paths, found and expected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from backhaul.config import load_file, load_text
from backhaul.errors import ConfigError

GOOD = """\
listeners:
  - name: main
    address: 127.0.0.1:8080
routes:
  - name: api
    match: {prefix: /api/}
    proxy: {cluster: api}
clusters:
  api:
    endpoints: ["127.0.0.1:3000"]
"""


def problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_text(text, "edge.yaml")
    assert info.value.source == "edge.yaml"
    assert info.value.problems, "a ConfigError always has at least one problem"
    return dict(info.value.problems)


def one_problem(text: str) -> tuple[str, str]:
    found = problems(text)
    assert len(found) == 1, found
    return next(iter(found.items()))


def test_good_config_loads() -> None:
    cfg = load_text(GOOD, "edge.yaml")
    assert cfg.routes[0].match.prefix == "/api/"


# --------------------------------------------------------------------------- whole-file errors


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "---\n"])
def test_empty_document(text: str) -> None:
    path, message = one_problem(text)
    assert path == ""
    assert "empty" in message and "expected a mapping" in message


@pytest.mark.parametrize(
    ("text", "found"),
    [("- a\n- b\n", "a list"), ("hello\n", "'hello'"), ("42\n", "42"), ("null\n", "empty")],
)
def test_top_level_must_be_a_mapping(text: str, found: str) -> None:
    path, message = one_problem(text)
    assert path == ""
    assert found in message and "expected a mapping with the keys listeners" in message


def test_yaml_syntax_error_names_line_and_column() -> None:
    text = GOOD.replace("    proxy: {cluster: api}", "    proxy: {cluster: api")
    path, message = one_problem(text)
    assert path == ""
    assert message.startswith("YAML syntax error at line 8, column 9: ")
    assert "flow mapping at line 7" in message


def test_yaml_bad_indentation() -> None:
    _, message = one_problem("listeners:\n  - address: ':1'\n   name: x\n")
    assert "line 3" in message


def test_tab_indentation_gets_a_hint() -> None:
    _, message = one_problem("listeners:\n\t- address: ':1'\n")
    assert "line 2, column 1" in message
    assert "spaces, not tabs" in message


def test_duplicate_keys_are_an_error() -> None:
    text = "listeners:\n  - address: ':1'\n    address: ':2'\nlisteners: []\n"
    found = problems(text)
    assert set(found) == {"listeners", "listeners[0].address"}
    assert "twice (lines 1 and 4)" in found["listeners"]
    assert "twice (lines 2 and 3)" in found["listeners[0].address"]


def test_yaml_merge_keys_are_allowed() -> None:
    cfg = load_text(
        """
listeners:
  - address: ':1'
    limits: &limits {body: 1MiB, header_count: 5}
  - address: ':2'
    limits: {<<: *limits, header_count: 10}
""",
        "t",
    )
    assert cfg.listeners[1].limits.header_count == 10
    assert cfg.listeners[1].limits.body == 1024 * 1024


def test_python_tags_are_refused() -> None:
    path, message = one_problem("listeners: !!python/object:os.system {}\n")
    assert path == ""
    assert "line 1" in message


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    path, message = one_problem("\n".join(lines) + "\n")
    assert path == ""
    assert "aliases" in message


# --------------------------------------------------------------------------- YAML 1.2 scalars


def test_yaml_1_1_booleans_and_sexagesimals_stay_strings() -> None:
    cfg = load_text(
        """
listeners: [{address: ':1'}]
routes:
  - match:
      headers:
        - {name: x-a, exact: no}
        - {name: x-b, exact: on}
        - {name: x-c, exact: 1:30}
        - {name: x-d, exact: 2024-01-02}
    respond: {body: yes}
""",
        "t",
    )
    route = cfg.routes[0]
    assert [h.exact for h in route.match.headers] == ["no", "on", "1:30", "2024-01-02"]
    assert route.respond is not None and route.respond.body == "yes"


def test_yes_still_works_for_booleans() -> None:
    cfg = load_text("access_log: {enabled: no}\nlisteners: [{address: ':1'}]\n", "t")
    assert cfg.access_log.enabled is False


# --------------------------------------------------------------------------- field errors


def test_unknown_top_level_key_suggests_the_right_one() -> None:
    path, message = one_problem(GOOD.replace("routes:", "rotues:"))
    assert path == "rotues"
    assert "unknown key 'rotues'" in message
    assert "did you mean 'routes'?" in message
    assert "line 4" in message


def test_unknown_nested_key_suggests_the_right_one() -> None:
    text = GOOD.replace('endpoints: ["127.0.0.1:3000"]', 'endpoints: [{adress: "127.0.0.1:1"}]')
    found = problems(text)
    message = found["clusters.api.endpoints[0].adress"]
    assert "did you mean 'address'?" in message
    assert "expected one of: address, builtin, weight" in message


def test_unknown_key_without_close_match_lists_the_keys() -> None:
    _, message = one_problem(GOOD.replace("match: {prefix: /api/}", "match: {zzz: 1}"))
    assert "did you mean" not in message
    assert "expected one of: host, path, prefix, regex, methods, headers" in message


def test_missing_required_key() -> None:
    path, message = one_problem(GOOD.replace("    address: 127.0.0.1:8080\n", ""))
    assert path == "listeners[0].address"
    assert "found nothing: expected the required key 'address'" in message
    assert "line 2" in message


def test_bad_address_port_has_the_endpoint_path() -> None:
    text = GOOD.replace(
        'endpoints: ["127.0.0.1:3000"]',
        'endpoints: ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:70000"]',
    )
    path, message = one_problem(text)
    assert path == "clusters.api.endpoints[2].address"
    assert "found '127.0.0.1:70000'" in message
    assert "above 65535" in message and "expected host:port" in message


def test_endpoint_port_zero_is_refused() -> None:
    path, message = one_problem(GOOD.replace("127.0.0.1:3000", "127.0.0.1:0"))
    assert path == "clusters.api.endpoints[0].address"
    assert "port 1-65535" in message


@pytest.mark.parametrize(
    ("replace", "with_", "path", "words"),
    [
        ("match: {prefix: /api/}", "match: {path: x}", "routes[0].match.path", "starting with '/'"),
        ("match: {prefix: /api/}", "match: {regex: '(x'}", "routes[0].match.regex", "compiles"),
        ("match: {prefix: /api/}", "match: {path: /a, prefix: /b}", "routes[0].match",
         "found path and prefix: expected at most one of path, prefix, regex"),
        ("match: {prefix: /api/}", "match: {host: 'a.com:80'}", "routes[0].match.host",
         "without a port"),
        ("match: {prefix: /api/}", "match: {host: 'a.*.com'}", "routes[0].match.host",
         "leading '*.'"),
        ("match: {prefix: /api/}", "match: {methods: ['GE T']}", "routes[0].match.methods",
         "expected a method"),
        ("match: {prefix: /api/}", "match: {headers: [{name: x}]}",
         "routes[0].match.headers[0]", "found none: expected exactly one of exact, regex"),
        ("match: {prefix: /api/}", "match: {headers: [{name: x, exact: a, present: true}]}",
         "routes[0].match.headers[0]", "found exact and present"),
        ("match: {prefix: /api/}", "match: {headers: [{name: 'a b', exact: a}]}",
         "routes[0].match.headers[0].name", "header name"),
        ("    proxy: {cluster: api}\n", "", "routes[0]",
         "found no action: expected exactly one action"),
        ("proxy: {cluster: api}", "proxy: {cluster: api}\n    respond: {}", "routes[0]",
         "found proxy and respond"),
        ("proxy: {cluster: api}", "redirect: {to: x}", "routes[0].redirect.to",
         "absolute URL"),
        ("proxy: {cluster: api}", "redirect: {to: 'https://new.test{pth}?{query}'}",
         "routes[0].redirect.to", "found the placeholder {pth} in 'https://new.test{pth}?"
         "{query}': expected only {path} and {query} (write {{ or }} for a literal brace);"
         " did you mean {path}? (line"),
        ("proxy: {cluster: api}", "redirect: {to: '/a/{path'}", "routes[0].redirect.to",
         "a brace that opens or closes nothing"),
        ("proxy: {cluster: api}", "redirect: {to: /x, status: 304}",
         "routes[0].redirect.status", "found 304: expected 301, 302, 303, 307 or 308"),
        ("proxy: {cluster: api}", "respond: {status: 99}", "routes[0].respond.status",
         "found 99: expected a number >= 200"),
        ("proxy: {cluster: api}", "respond: {body: 12}", "routes[0].respond.body",
         "found 12: expected a string (put it in quotes)"),
        ("proxy: {cluster: api}", "proxy: {cluster: api, strip_prefix: api}",
         "routes[0].proxy.strip_prefix", "starting with '/'"),
        ("proxy: {cluster: api}", "proxy: {cluster: api, host_rewrite: 'a b'}",
         "routes[0].proxy.host_rewrite", "expected a host with an optional port"),
        ("proxy: {cluster: api}", "redirect: {to: \"/x\\r\\nSet-Cookie: a=b\"}",
         "routes[0].redirect.to", "without spaces or control characters"),
        ("proxy: {cluster: api}", "respond: {content_type: \"text/plain\\r\\nX: y\"}",
         "routes[0].respond.content_type", "the control character '\\r'"),
        ("listeners:\n", "server_header: \"b\\nX-Evil: 1\"\nlisteners:\n", "server_header",
         "expected a header value"),
        ("listeners:\n", "server_header: \" b\"\nlisteners:\n", "server_header",
         "surrounding whitespace"),
        ("address: 127.0.0.1:8080", "address: 8080", "listeners[0].address", "quote it"),
        ("address: 127.0.0.1:8080", "address: 127.0.0.1:8080\n    protocol: udp",
         "listeners[0].protocol", "found 'udp': expected 'http'"),
        ("address: 127.0.0.1:8080", "address: 127.0.0.1:8080\n    limits: {body: 10K}",
         "listeners[0].limits.body", "ambiguous"),
        ("address: 127.0.0.1:8080", "address: 127.0.0.1:8080\n    limits: {header_bytes: 0}",
         "listeners[0].limits.header_bytes", "greater than zero"),
        ("address: 127.0.0.1:8080", "address: 127.0.0.1:8080\n    limits: {header_count: x}",
         "listeners[0].limits.header_count", "found 'x': expected a whole number"),
        ("address: 127.0.0.1:8080", "address: 127.0.0.1:8080\n    timeouts: {drain: soon}",
         "listeners[0].timeouts.drain", "found 'soon': expected a duration"),
        ("address: 127.0.0.1:8080", "address: 127.0.0.1:8080\n    timeouts: {body_idle: 0}",
         "listeners[0].timeouts.body_idle", "greater than zero"),
        ("address: 127.0.0.1:8080", "address: 127.0.0.1:8080\n    forwarding: {via: maybe}",
         "listeners[0].forwarding.via", "found 'maybe': expected true or false"),
        ("address: 127.0.0.1:8080", "address: 127.0.0.1:8080\n    limits: 5",
         "listeners[0].limits", "found 5: expected a mapping"),
        ('endpoints: ["127.0.0.1:3000"]', "endpoints: []", "clusters.api.endpoints",
         "found an empty list: expected at least 1 endpoint"),
        ('endpoints: ["127.0.0.1:3000"]', "endpoints: [{weight: 2}]",
         "clusters.api.endpoints[0]", "found neither: expected exactly one of address, builtin"),
        ('endpoints: ["127.0.0.1:3000"]', "endpoints: [{builtin: echo, address: ':1'}]",
         "clusters.api.endpoints[0]", "found address and builtin"),
        ('endpoints: ["127.0.0.1:3000"]', "endpoints: [{builtin: cat}]",
         "clusters.api.endpoints[0].builtin", "found 'cat': expected 'echo'"),
        ('endpoints: ["127.0.0.1:3000"]', 'endpoints: ["127.0.0.1:3000"]\n    policy: fastest',
         "clusters.api.policy", "expected 'round_robin', 'weighted_round_robin'"),
        ('endpoints: ["127.0.0.1:3000"]', 'endpoints: ["127.0.0.1:3000"]\n    policy: maglve',
         "clusters.api.policy", "did you mean 'maglev'?"),
        ('endpoints: ["127.0.0.1:3000"]', 'endpoints: ["127.0.0.1:3000"]\n    pool: {max_idle: -1}',
         "clusters.api.pool.max_idle", "expected a number >= 0"),
        ("clusters:\n  api:", "clusters:\n  api:\n    timeouts: {connect: 1d}",
         "clusters.api.timeouts.connect", "found '1d'"),
        ("listeners:\n  - name: main\n    address: 127.0.0.1:8080\n", "listeners: []\n",
         "listeners", "found an empty list: expected at least 1 listener"),
        ("listeners:\n", "workers: 0\nlisteners:\n", "workers", "found 0: expected a number >= 1"),
        ("listeners:\n", "access_log: {format: clf}\nlisteners:\n", "access_log.format",
         "expected 'json' or 'combined'"),
        ("listeners:\n", "access_log: {format: combine}\nlisteners:\n", "access_log.format",
         "expected 'json' or 'combined'; did you mean 'combined'?"),
    ],
)  # fmt: skip
def test_field_problems(replace: str, with_: str, path: str, words: str) -> None:
    assert replace in GOOD
    found = problems(GOOD.replace(replace, with_, 1))
    assert path in found, found
    assert words in found[path], found[path]
    assert "(line " in found[path]


# --------------------------------------------------------------------------- cross-checks


def test_route_naming_an_unknown_cluster() -> None:
    path, message = one_problem(GOOD.replace("proxy: {cluster: api}", "proxy: {cluster: apj}"))
    assert path == "routes[0].proxy.cluster"
    assert "found 'apj'" in message
    assert "did you mean 'api'?" in message
    assert "line 7" in message


def test_cross_checks_report_every_problem_at_once() -> None:
    text = """\
listeners:
  - {name: a, address: "127.0.0.1:8080"}
  - {name: a, address: "127.0.0.1:8081"}
  - {name: c, address: "127.0.0.1:8080"}
  - {name: d, address: ":9000"}
  - {name: e, address: "127.0.0.1:9000"}
  - {name: f, address: "[::]:7000"}
  - {name: g, address: "[::1]:7000"}
routes:
  - {name: r, proxy: {cluster: nope}}
  - {name: r, listeners: [a, b], respond: {}}
clusters: {}
"""
    found = problems(text)
    assert set(found) == {
        "listeners[1].name",
        "listeners[2].address",
        "listeners[4].address",
        "listeners[6].address",
        "routes[0].proxy.cluster",
        "routes[1].name",
        "routes[1].listeners[1]",
    }
    assert "unique listener name" in found["listeners[1].name"]
    assert "listeners[0] (the same address)" in found["listeners[2].address"]
    assert "0.0.0.0:9000 takes that port too" in found["listeners[4].address"]
    assert "[::]:7000 takes that port too" in found["listeners[6].address"]
    assert "none is defined" in found["routes[0].proxy.cluster"]
    assert "unique route name" in found["routes[1].name"]
    assert "found 'b': expected a listener name (one of 'a', 'c'" in found["routes[1].listeners[1]"]
    assert "(line 11)" in found["routes[1].listeners[1]"]


def test_admin_address_must_not_overlap_a_listener() -> None:
    path, message = one_problem(GOOD + "admin: {address: '127.0.0.1:8080'}\n")
    assert path == "admin.address"
    assert "overlaps listeners[0] (127.0.0.1:8080)" in message


def test_header_values_that_are_fine() -> None:
    cfg = load_text(
        GOOD.replace("proxy: {cluster: api}", "proxy: {cluster: api, host_rewrite: 'a.b:8443'}")
        + "server_header: 'backhaul/1.0 (edge)'\n",
        "t",
    )
    assert cfg.server_header == "backhaul/1.0 (edge)"
    assert cfg.routes[0].proxy is not None and cfg.routes[0].proxy.host_rewrite == "a.b:8443"
    assert load_text(GOOD + "server_header: ''\n", "t").server_header == ""


def test_problems_come_in_file_order() -> None:
    text = """\
workers: none
listeners: [{address: bad}]
routes: [{respond: {status: 1}}]
"""
    with pytest.raises(ConfigError) as info:
        load_text(text, "t")
    assert [p for p, _ in info.value.problems] == [
        "workers",
        "listeners[0].address",
        "routes[0].respond.status",
    ]


def test_odd_cluster_names_are_quoted_in_paths() -> None:
    text = GOOD.replace("  api:\n", "  my.api:\n").replace("cluster: api", "cluster: my.api")
    load_text(text, "t")
    found = problems(text.replace('["127.0.0.1:3000"]', '["127.0.0.1:x"]'))
    assert "clusters['my.api'].endpoints[0].address" in found


def test_non_string_cluster_key() -> None:
    found = problems(GOOD.replace("  api:\n", "  1:\n"))
    assert "clusters" in found or any(p.startswith("clusters") for p in found)


def test_error_message_names_file_and_paths() -> None:
    with pytest.raises(ConfigError) as info:
        load_text(GOOD.replace("127.0.0.1:3000", "127.0.0.1:x"), "conf/edge.yaml")
    text = str(info.value)
    assert text.startswith("conf/edge.yaml: 1 problem(s) in the config")
    assert "clusters.api.endpoints[0].address: found '127.0.0.1:x'" in text


def test_validation_error_is_chained_not_leaked() -> None:
    import pydantic

    with pytest.raises(ConfigError) as info:
        load_text("listeners: [{}]", "t")
    assert isinstance(info.value.__cause__, pydantic.ValidationError)
    with pytest.raises(ConfigError) as info:
        load_text("listeners: [", "t")
    assert isinstance(info.value.__cause__, yaml.YAMLError)


# --------------------------------------------------------------------------- files


def test_load_file(tmp_path: Path) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text(GOOD)
    assert load_file(file).listeners[0].name == "main"
    assert load_file(str(file)).listeners[0].name == "main"


def test_load_file_with_bom(tmp_path: Path) -> None:
    file = tmp_path / "edge.yaml"
    file.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_file(file).listeners[0].name == "main"


def test_load_file_errors_name_the_file(tmp_path: Path) -> None:
    file = tmp_path / "edge.yaml"
    file.write_text(GOOD.replace("cluster: api", "cluster: web"))
    with pytest.raises(ConfigError) as info:
        load_file(file)
    assert info.value.source == str(file)
    assert [p for p, _ in info.value.problems] == ["routes[0].proxy.cluster"]


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: d / "missing.yaml", "found no such file"),
        (lambda d: d, "found a directory"),
        (lambda d: _write(d / "bin.yaml", b"listeners: \xff\xfe\n"), "not UTF-8 at offset 11"),
        (lambda d: _write(d / "empty.yaml", b""), "found an empty document"),
    ],
)
def test_load_file_whole_file_problems(tmp_path: Path, make: object, words: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.source == str(path)
    [(where, message)] = info.value.problems
    assert where == ""
    assert words in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path: Path) -> None:
    file = _write(tmp_path / "secret.yaml", GOOD.encode())
    file.chmod(0)
    with pytest.raises(ConfigError, match="may not read"):
        load_file(file)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- never a leak

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["5s", ":8080", "[::1]:1", "64KiB", "echo", "api", "/x", "GET", "(", "*"]),
)
_keys = st.sampled_from(
    ["listeners", "routes", "clusters", "address", "name", "match", "proxy", "cluster",
     "endpoints", "limits", "body", "timeouts", "host", "regex", "headers", "exact", "respond",
     "redirect", "to", "status", "builtin", "listners", "x"]
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_random_configs_load_or_raise_config_error(data: dict[str, object]) -> None:
    text = yaml.safe_dump(data)
    try:
        load_text(text, "random.yaml")
    except ConfigError as exc:
        assert exc.problems
        for path, message in exc.problems:
            assert isinstance(path, str)
            assert message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_loads_or_raises_config_error(text: str) -> None:
    try:
        load_text(text, "random.yaml")
    except ConfigError as exc:
        assert exc.problems


# --------------------------------------------------------------------------- without libyaml


@pytest.fixture
def pure_python_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load with PyYAML's pure-Python parser, as on a machine without libyaml."""
    from backhaul.config import load as load_module

    monkeypatch.setattr(load_module, "_Loader", load_module._make_loader(yaml.SafeLoader))


@pytest.mark.usefixtures("pure_python_yaml")
def test_pure_python_parser_gives_the_same_results() -> None:
    from backhaul.config import load as load_module

    assert "CSafeLoader" not in [c.__name__ for c in load_module._Loader.__mro__]
    assert load_text(GOOD, "t").routes[0].match.prefix == "/api/"
    cfg = load_text(
        "listeners: [{address: ':1'}]\n"
        "routes: [{match: {headers: [{name: a, exact: no}]}, respond: {body: 1:30}}]\n",
        "t",
    )
    assert cfg.routes[0].match.headers[0].exact == "no"
    assert cfg.routes[0].respond is not None and cfg.routes[0].respond.body == "1:30"
    found = problems("listeners:\n  - address: ':1'\n    address: ':2'\n")
    assert "twice (lines 2 and 3)" in found["listeners[0].address"]
    path, message = one_problem("listeners: [\n")
    assert path == ""
    assert message.startswith("YAML syntax error at line 2")


@pytest.mark.usefixtures("pure_python_yaml")
def test_pure_python_parser_deep_nesting_is_a_config_error() -> None:
    path, message = one_problem("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert path == ""
    assert "nested too deeply" in message or "nesting depth" in message


def test_libyaml_deep_nesting_is_a_config_error() -> None:
    path, message = one_problem("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert path == ""
    assert "nested too deeply" in message or "nesting depth" in message


def test_a_bad_part_hides_no_problem_between_the_others() -> None:
    """A duplicate endpoint (a cluster's own check) once hid every cross-check: all of them
    are reported at once, each at its path and line."""
    text = """\
listeners:
  - {name: a, address: "127.0.0.1:8080"}
  - {name: a, address: "127.0.0.1:8081"}
  - {name: bad, address: "127.0.0.1:99999"}
admin: {address: "127.0.0.1:8080"}
routes:
  - {name: r, proxy: {cluster: nope}}
  - {name: r, listeners: [a, bad, zz], proxy: {cluster: api, retries: {backoff: {base: 2s}}}}
clusters:
  api:
    endpoints: ["127.0.0.1:1", "127.0.0.1:1"]
    retries: {backoff: {max: 1s}}
  ok:
    endpoints: ["127.0.0.1:2"]
"""
    found = problems(text)
    assert set(found) == {
        "listeners[1].name",  # duplicate name
        "listeners[2].address",  # port out of range
        "admin.address",  # overlaps listeners[0]
        "routes[0].proxy.cluster",  # unknown cluster
        "routes[1].name",  # duplicate name
        "routes[1].listeners[2]",  # unknown listener ('bad' is known, though invalid)
        "clusters.api.endpoints[1].address",  # duplicate endpoint
    }
    assert "unique listener name" in found["listeners[1].name"]
    assert "(line 8)" in found["routes[1].listeners[2]"]
    assert "found '127.0.0.1:1' again" in found["clusters.api.endpoints[1].address"]


def test_merged_retries_are_checked_when_another_part_is_bad() -> None:
    text = """\
listeners: [{address: "127.0.0.1:99999"}]
routes:
  - {proxy: {cluster: api, retries: {backoff: {base: 2s}}}}
clusters:
  api:
    endpoints: ["127.0.0.1:1"]
    retries: {backoff: {max: 1s}}
"""
    found = problems(text)
    assert set(found) == {"listeners[0].address", "routes[0].proxy.retries.backoff.base"}
    assert "with the cluster's retries" in found["routes[0].proxy.retries.backoff.base"]


def test_a_relative_access_log_path_is_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    config = folder / "edge.yaml"
    config.write_text(
        "listeners: [{address: '127.0.0.1:8080'}]\naccess_log: {path: logs/access.log}\n"
    )
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_file(config).access_log.path == str(folder / "logs" / "access.log")
    monkeypatch.chdir(tmp_path)
    assert load_file("conf/edge.yaml").access_log.path == str(folder / "logs" / "access.log")
    # absolute paths and stdout stay as written; text without a file has no folder
    config.write_text("listeners: [{address: '127.0.0.1:8080'}]\naccess_log: {path: /x/a.log}\n")
    assert load_file(config).access_log.path == "/x/a.log"
    config.write_text("listeners: [{address: '127.0.0.1:8080'}]\naccess_log: {path: '-'}\n")
    assert load_file(config).access_log.path == "-"
    text = "listeners: [{address: '127.0.0.1:8080'}]\naccess_log: {path: a.log}\n"
    assert load_text(text).access_log.path == "a.log"
