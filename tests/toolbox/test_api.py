"""``backhaul api run`` and ``backhaul api import``: the file formats and checks (no
sockets), then files run against a loopback origin, JUnit validated against the schema."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given
from hypothesis import strategies as st

from backhaul.tools import apifile, postman
from backhaul.tools.apifile import ApiFileError, ResponseView

from .conftest import BACKHAUL, assert_one_line_error
from .origins import DOC, Origin

JUNIT_XSD = Path(__file__).with_name("data") / "junit.xsd"


def api(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BACKHAUL, "api", *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with Origin() as served:
        yield served


# ----------------------------------------------------------------------------- parsing

FULL = """
# users
POST {{base}}/echo
Content-Type: application/json
X-Trace: {{trace}}
[Query]
page: 2
[Options]
variable: trace=t-1
location: true
{
  "name": "Ada",
  "tags": ["x"]
}
HTTP/1.1 200
Content-Type: application/json
[Captures]
method: jsonpath "$.method"
ctype: header "Content-Type"
page: body regex "page=(\\\\d+)"
[Asserts]
status == 200
jsonpath "$.headers" count >= 3
jsonpath "$.method" not == "GET"
body contains "Ada"
duration < 10000
header "X-Missing" not exists

GET {{base}}/json
```
raw text
```
HTTP *
"""


def test_text_format_parses_every_part() -> None:
    parsed = apifile.parse_text(FULL.lstrip("\n"), "f.hurl")
    first, second = parsed.entries
    assert (first.method, first.url, first.line) == ("POST", "{{base}}/echo", 2)
    assert first.headers == [("Content-Type", "application/json"), ("X-Trace", "{{trace}}")]
    assert first.query == [("page", "2")]
    assert first.variables == [("trace", "t-1")] and first.options == {"location": "true"}
    assert json.loads(first.body or "") == {"name": "Ada", "tags": ["x"]}
    assert (first.status, first.version, first.status_line) == (200, "HTTP/1.1", 14)
    assert first.expect_headers == [("Content-Type", "application/json", 15)]
    assert [c.name for c in first.captures] == ["method", "ctype", "page"]
    assert first.captures[2].query.filters == (("regex", "page=(\\d+)"),)
    assert [a.line for a in first.asserts] == [21, 22, 23, 24, 25, 26]
    assert first.asserts[1].query.filters == (("count", None),)
    assert first.asserts[2].negate and first.asserts[5].predicate == "exists"
    assert (second.method, second.body, second.status) == ("GET", "raw text", None)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("GET http://x/\nHTTP 200\n[Asserts]\nstatus === 200\n", 4, "unknown predicate"),
        ('GET http://x/\nHTTP 200\n[Asserts]\nheadr "x" == 1\n', 4, "unknown query"),
        ("GET http://x/\nHTTP 200\n[Asserts]\nbody == bare\n", 4, "quote strings"),
        ("hello\n", 1, "METHOD URL"),
        ("GET http://x/\nnot a header\n", 2, "Name: value"),
        ("GET http://x/\n```\nnever closed\n", 2, "never closed"),
        ('GET http://x/\nHTTP 200\n[Captures]\nx jsonpath "$"\n', 4, "name: query"),
        ('GET http://x/\nHTTP 200\n[Asserts]\nbody matches "("\n', 4, "regular expression"),
        ("GET http://x/\n[Asserts]\n", 2, "not allowed here"),
    ],
)
def test_parse_errors_say_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ApiFileError) as caught:
        apifile.parse_text(text, "bad.hurl")
    assert caught.value.line == line and words in str(caught.value)
    assert str(caught.value).startswith(f"bad.hurl:{line}: ")


def test_a_one_line_json_array_body_is_a_body() -> None:
    (entry,) = apifile.parse_text("POST http://h/\n[1, 2]\nHTTP 200\n", "a.hurl").entries
    assert entry.body == "[1, 2]" and entry.status == 200


def test_yaml_format_with_line_numbers() -> None:
    text = textwrap.dedent(
        """
        variables:
          base: http://h
        requests:
          - name: create
            POST: "{{base}}/echo"
            json: {name: Ada}
            status: 200
            captures:
              m: jsonpath "$.method"
            asserts:
              - jsonpath "$.method" == "POST"
              - body contains "Ada"
          - method: get
            url: "{{base}}/json"
            query: {a: 1}
        """
    ).lstrip()
    parsed = apifile.parse_yaml(text, "t.yaml")
    assert parsed.variables == {"base": "http://h"}
    one, two = parsed.entries
    assert (one.name, one.method, one.url, one.status) == ("create", "POST", "{{base}}/echo", 200)
    assert one.headers == [("Content-Type", "application/json")]
    assert json.loads(one.body or "") == {"name": "Ada"}
    assert [a.line for a in one.asserts] == [11, 12] and one.captures[0].line == 9
    assert (two.method, two.query) == ("GET", [("a", "1")])
    with pytest.raises(ApiFileError, match=r"^t.yaml:4: unknown request key 'colour'"):
        apifile.parse_yaml(
            "requests:\n  - GET: http://h\n    status: 200\n    colour: red\n", "t.yaml"
        )
    with pytest.raises(ApiFileError, match=r"^t.yaml:3: unknown predicate"):
        apifile.parse_yaml("requests:\n  - GET: http://h\n    asserts: ['status ~ 1']\n", "t.yaml")


def view(body: object, status: int = 200, headers=None) -> ResponseView:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ResponseView(
        status,
        "HTTP/1.1",
        headers or [("Content-Type", "application/json")],
        raw,
        12.0,
        "http://h/",
    )


def run_asserts(lines: list[str], response: ResponseView, variables=None) -> list:
    entry = apifile.Entry("GET", "http://h/", 1)
    entry.asserts = [apifile.parse_assert(line, "c.hurl", n) for n, line in enumerate(lines, 1)]
    return apifile.check(entry, response, variables or {}, "c.hurl")[1]


def test_predicates_hold_and_fail_with_expected_and_got() -> None:
    passing = [
        'jsonpath "$.name" == "Ada"',
        'jsonpath "$.id" == 7',
        'jsonpath "$.id" > 6',
        'jsonpath "$.id" <= 7.0',
        'jsonpath "$.items" count == 2',
        'jsonpath "$.items[*].sku" contains "b2"',
        'jsonpath "$.items[0].price" isInteger',
        'jsonpath "$.name" startsWith "A"',
        'jsonpath "$.name" endsWith "da"',
        'jsonpath "$.name" matches "^[A-Z][a-z]+$"',
        'jsonpath "$.name" == "{{who}}"',
        'jsonpath "$.id" == {{id}}',
        'jsonpath "$.items" nth 1 isCollection',
        'jsonpath "$.missing" not exists',
        'header "Content-Type" == "application/json"',
        "status == 200",
        "duration < 1000",
        'body contains "Ada"',
        'regex "\\"id\\": (\\\\d+)" toInt == 7',
        'version == "1.1"',
    ]
    assert run_asserts(passing, view(DOC), {"who": "Ada", "id": 7}) == []
    failures = run_asserts(
        [
            'jsonpath "$.name" == "Bob"',
            'jsonpath "$.id" == "7"',
            "status < 200",
            'header "X-Nope" exists',
            'jsonpath "$.nothing" == 1',
            'body == "{{undefined}}"',
        ],
        view(DOC),
    )
    assert [(f.line, f.expected, f.got) for f in failures] == [
        (1, '"Bob"', '"Ada"'),
        (2, '"7"', "7"),  # a string is not a number
        (3, "< 200", "200"),
        (4, "exists", "no header 'X-Nope' in the answer"),
        (5, "1", "JSONPath $.nothing matched nothing"),
        (6, '"{{undefined}}"', "variable 'undefined' is not defined"),
    ]
    assert "c.hurl:1: jsonpath" in str(failures[0]) and 'expected: "Bob"' in str(failures[0])
    (not_json,) = run_asserts(['jsonpath "$.a" == 1'], view(b"<html>"))
    assert "not JSON" in not_json.got


@given(st.text(max_size=200))
def test_any_text_parses_or_fails_with_a_file_line_error(text: str) -> None:
    try:
        apifile.parse_text(text, "fuzz.hurl")
    except ApiFileError as exc:
        assert exc.line >= 1


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "requests",
                        "variables",
                        "GET",
                        "url",
                        "method",
                        "asserts",
                        "captures",
                        "status",
                        "headers",
                        "json",
                        "auth",
                        "x",
                    ]
                ),
                inner,
                max_size=5,
            )
        ),
        max_leaves=15,
    )
)
def test_any_yaml_document_parses_or_fails_with_a_file_line_error(doc: object) -> None:
    import yaml

    try:
        apifile.parse_yaml(yaml.safe_dump(doc), "fuzz.yaml")
    except ApiFileError as exc:
        assert exc.line >= 1


# ----------------------------------------------------------------------------- running


def test_a_passing_file_with_captures_variables_and_environments(
    origin: Origin, tmp_path: Path
) -> None:
    env = tmp_path / "envs.yaml"
    env.write_text(f"dev:\n  base: {origin.url('')}\n  who: Ada\nprod:\n  base: http://x.invalid\n")
    path = write(
        tmp_path / "flow.hurl",
        """
        GET {{base}}/json
        HTTP 200
        x-request-id: req-42
        [Captures]
        id: jsonpath "$.id"
        rid: header "X-Request-Id"
        sku: jsonpath "$.items[1].sku"
        [Asserts]
        jsonpath "$.name" == "{{who}}"
        jsonpath "$.items" count == 2

        POST {{base}}/echo?id={{id}}&rid={{rid}}
        [Cookies]
        session: s-{{id}}
        theme: dark
        [Form]
        sku: {{sku}}
        HTTP 200
        [Captures]
        got: jsonpath "$.body"
        [Asserts]
        jsonpath "$.target" == "/echo?id=7&rid=req-42"
        jsonpath "$.method" == "POST"
        variable "got" == "sku=b2"
        jsonpath "$.headers.x-from" == "{{from}}"
        jsonpath "$.headers.cookie" == "session=s-7; theme=dark"
        """,
    )
    # the second request uses a header only --variable supplies
    text = Path(path).read_text().replace("&rid={{rid}}\n", "&rid={{rid}}\nX-From: {{from}}\n")
    Path(path).write_text(text)
    connections = origin.connections
    done = api("run", path, "--env-file", str(env), "--env", "dev", "--variable", "from=cli")
    assert done.returncode == 0, done.stdout + done.stderr
    assert origin.connections == connections + 1  # the file's requests share a connection
    assert done.stdout.startswith(f"PASS {path} (2 requests,")
    assert (
        "Failed files:      0" in done.stdout and "Checks:            10 (0 failed)" in done.stdout
    )


def test_failing_asserts_exit_1_with_file_line_expected_got(origin: Origin, tmp_path: Path) -> None:
    path = write(
        tmp_path / "fail.hurl",
        f"""
        GET {origin.url("/json")}
        HTTP 201
        [Asserts]
        jsonpath "$.name" == "Bob"
        header "Content-Type" contains "json"

        GET {origin.url("/json")}
        HTTP 200
        """,
    )
    done = api("run", path)
    assert done.returncode == 1
    out = done.stdout
    assert f"FAIL {path}" in out
    assert f"{path}:2: status\n      expected: 201\n      got:      200" in out
    assert (
        f'{path}:4: jsonpath "$.name" == "Bob"\n      expected: "Bob"\n      got:      "Ada"' in out
    )
    assert "skipped GET" in out  # the file stopped at its first failed request
    assert origin.by_path.get("/json", 0) >= 1
    again = api("run", "--continue-on-error", "--json", path)
    doc = json.loads(again.stdout)
    assert again.returncode == 1 and not doc["success"]
    entries = doc["files"][0]["entries"]
    assert [e["success"] for e in entries] == [False, True]
    assert entries[0]["failures"][1] == {
        "file": path,
        "line": 4,
        "what": 'jsonpath "$.name" == "Bob"',
        "expected": '"Bob"',
        "got": '"Ada"',
    }
    assert doc["summary"]["checks_failed"] == 2


def test_junit_is_valid_and_counts_failures_errors_and_skips(
    origin: Origin, tmp_path: Path
) -> None:
    good = write(tmp_path / "good.hurl", f"GET {origin.url('/json')}\nHTTP 200\n")
    bad = write(
        tmp_path / "bad.hurl",
        f"""
        GET {origin.url("/status/500")}
        HTTP 200
        GET {origin.url("/json")}
        HTTP 200
        """,
    )
    dead = write(tmp_path / "dead.hurl", "GET http://host.invalid/\nHTTP 200\n")
    report = tmp_path / "out" / "junit.xml"
    report.parent.mkdir()
    done = api("run", good, bad, dead, "--junit", str(report))
    assert done.returncode == 1
    schema = xmlschema.XMLSchema(str(JUNIT_XSD))
    schema.validate(str(report))  # raises with the reason when the shape is wrong
    tree = schema.to_dict(str(report))
    suites = tree["testsuite"]
    assert [s["@name"] for s in suites] == [good, bad, dead]
    assert [(s["@tests"], s["@failures"], s["@errors"], s["@skipped"]) for s in suites] == [
        (1, 0, 0, 0),
        (2, 1, 0, 1),
        (1, 0, 1, 0),
    ]
    failure = suites[1]["testcase"][0]["failure"][0]
    assert failure["@message"] == f"{bad}:2: status: expected 200, got 500"
    assert "curl error 6" in suites[2]["testcase"][0]["error"][0]["@message"]


def test_yaml_file_and_parallel_files_report_in_order(origin: Origin, tmp_path: Path) -> None:
    paths = []
    for n in range(4):
        paths.append(
            write(
                tmp_path / f"f{n}.yaml",
                f"""
            variables:
              base: {origin.url("")}
            requests:
              - name: echo {n}
                POST: "{{{{base}}}}/echo"
                json: {{n: {n}}}
                status: 200
                captures:
                  body: jsonpath "$.body"
                asserts:
                  - jsonpath "$.headers.content-type" == "application/json"
                  - 'variable "body" == "{{\\"n\\": {n}}}"'
            """,
            )
        )
    done = api("run", "--parallel", "4", "--json", *paths)
    assert done.returncode == 0, done.stdout
    doc = json.loads(done.stdout)
    assert [f["file"] for f in doc["files"]] == paths
    assert [f["entries"][0]["name"] for f in doc["files"]] == [f"echo {n}" for n in range(4)]
    assert doc["summary"]["requests"] == 4 and doc["summary"]["checks"] == 12


def test_a_broken_file_is_exit_2_with_file_line(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.hurl", "GET http://x/\nHTTP 200\n[Asserts]\nstatus ~ 2\n")
    line = assert_one_line_error(api("run", path), 2)
    assert f"{path}:4: unknown predicate '~'" in line
    assert_one_line_error(api("run", str(tmp_path / "missing.hurl")), 2)
    assert_one_line_error(api("run"), 2)
    env = tmp_path / "e.yaml"
    env.write_text("dev: {}\n")
    line = assert_one_line_error(api("run", path, "--env-file", str(env), "--env", "qa"), 2)
    assert "environments there: dev" in line


COLLECTION = {
    "info": {"name": "Shop", "schema": postman.SCHEMA},
    "variable": [{"key": "base", "value": "BASE"}, {"key": "who", "value": "Ada"}],
    "item": [
        {
            "name": "users",
            "item": [
                {
                    "name": "get one",
                    "request": {
                        "method": "GET",
                        "url": {"raw": "{{base}}/json"},
                        "header": [
                            {"key": "Accept", "value": "application/json"},
                            {"key": "X-Off", "value": "1", "disabled": True},
                        ],
                    },
                    "event": [
                        {
                            "listen": "test",
                            "script": {
                                "exec": [
                                    "pm.test('ok', function () {",
                                    "    pm.response.to.have.status(200);",
                                    "    pm.expect(pm.response.json().name).to.eql('Ada');",
                                    "});",
                                ]
                            },
                        }
                    ],
                },
                {
                    "name": "create",
                    "request": {
                        "method": "POST",
                        "url": "{{base}}/echo",
                        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "t0k"}]},
                        "body": {
                            "mode": "raw",
                            "raw": '{"name": "{{who}}"}',
                            "options": {"raw": {"language": "json"}},
                        },
                    },
                    "event": [
                        {
                            "listen": "test",
                            "script": {"exec": ["pm.expect(pm.response.code).to.eql(201);"]},
                        }
                    ],
                },
            ],
        },
        {
            "name": "form",
            "request": {
                "method": "POST",
                "url": "{{base}}/echo",
                "auth": {
                    "type": "basic",
                    "basic": [{"key": "username", "value": "u"}, {"key": "password", "value": "p"}],
                },
                "body": {
                    "mode": "urlencoded",
                    "urlencoded": [{"key": "a", "value": "1"}, {"key": "b", "value": "{{who}}"}],
                },
            },
            "event": [{"listen": "test", "script": {"exec": ["pm.response.to.be.ok;"]}}],
        },
    ],
}


def test_postman_import_converts_and_runs(origin: Origin, tmp_path: Path) -> None:
    collection = json.loads(json.dumps(COLLECTION).replace("BASE", origin.url("").rstrip("/")))
    source = tmp_path / "shop.postman_collection.json"
    source.write_text(json.dumps(collection))
    out = tmp_path / "shop.hurl"
    done = api("import", str(source), "-o", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "variable: base=" in text and "Authorization: Bearer t0k" in text
    assert "[BasicAuth]\nu: p" in text and "[Form]\na: 1\nb: {{who}}" in text
    assert "X-Off" not in text
    assert "# postman test not converted: pm.expect(pm.response.json().name).to.eql('Ada');" in text
    parsed = apifile.parse_text(text, str(out))
    assert [e.status for e in parsed.entries] == [200, 201, None]
    assert [a.text for a in parsed.entries[2].asserts] == ["status >= 200", "status < 300"]
    # the origin answers 200 to the POST, so the converted 201 test fails, as in newman
    ran = api("run", "--continue-on-error", "--json", str(out))
    doc = json.loads(ran.stdout)
    assert ran.returncode == 1
    assert [e["success"] for e in doc["files"][0]["entries"]] == [True, False, True]
    assert doc["files"][0]["entries"][1]["failures"][0]["got"] == "200"
    direct = api("run", "--continue-on-error", "--json", "--import", str(source))
    assert json.loads(direct.stdout)["summary"] == {
        **doc["summary"],
        "duration_ms": json.loads(direct.stdout)["summary"]["duration_ms"],
    }
    bad = tmp_path / "bad.json"
    bad.write_text('{"info": {}}')
    assert "Postman collection" in assert_one_line_error(api("import", str(bad)), 2)


def test_run_help_and_format_help() -> None:
    assert "--junit" in api("run", "--help").stdout
    assert re.search(r"\[Captures\]", api("run", "--help-format").stdout)
