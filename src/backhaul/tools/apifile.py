"""API test files for ``backhaul api run``: parsing and assertion checking, without I/O.

Two formats describe the same thing, a list of requests each with its expectations:

**Plain text** (Hurl's format, the subset below)::

    # comment
    POST {{base}}/users            <- METHOD URL starts an entry
    Content-Type: application/json <- request headers
    [Query]                        <- or [QueryStringParams]; also [Form]/[FormParams],
    page: 2                           [BasicAuth] (user: password), [Cookies], [Options]
    {"name": "Ada"}                <- body: JSON, ```fenced text```, or `one line`
    HTTP 201                       <- expected status (HTTP/1.1 201, HTTP/2 201, HTTP *)
    Location: /users/7             <- expected header values
    [Captures]
    id: jsonpath "$.id"
    token: header "X-Token"
    code: body regex "code=(\\d+)"
    [Asserts]
    status == 201
    header "Content-Type" contains "json"
    jsonpath "$.items" count == 2
    jsonpath "$.name" == "{{name}}"
    body contains "Ada"
    duration < 500

Queries: ``status``, ``version``, ``header "N"``, ``jsonpath "$..."`` (jsonpath-ng),
``body``, ``regex "re"`` (first group, or the match), ``duration`` (ms), ``url``,
``variable "name"``. Filters after a query: ``count``, ``length``, ``toInt``,
``toString``, ``nth N``, ``regex "re"``. Predicates: ``==``, ``!=``, ``>``, ``>=``, ``<``,
``<=``, ``contains``, ``startsWith``, ``endsWith``, ``matches``, ``exists``, ``isEmpty``,
``isInteger``, ``isString``, ``isBoolean``, ``isCollection``; ``not`` before one negates
it. Values: JSON literals (``"text"``, ``12``, ``1.5``, ``true``, ``null``) or ``{{var}}``.
``[Cookies]`` (name: value) become one Cookie header. ``[Options]`` takes
``variable: name=value`` (set for this and later entries), ``location: true``,
``max-redirs: N``, ``insecure: true``, ``http1.1: true``, ``http2-prior-knowledge: true``,
``cacert: path``.

**YAML**: ``variables:`` (a mapping) and ``requests:``, a list of mappings with ``name``,
``method``, ``url`` (or ``GET: url`` ...), ``headers``, ``query``, ``form``, ``json`` or
``body``, ``auth: {user, password}``, ``options``, ``status``, ``captures`` (name ->
query text) and ``asserts`` (a list of assert lines as above).

Every parse error and every failed assert names the file and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backhaul.errors import BackhaulError

__all__ = [
    "ApiFile",
    "ApiFileError",
    "Assertion",
    "Capture",
    "Entry",
    "Failure",
    "Query",
    "ResponseView",
    "check",
    "parse",
    "parse_text",
    "parse_yaml",
    "substitute",
]

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
QUERY_KINDS = (
    "status",
    "version",
    "header",
    "jsonpath",
    "body",
    "regex",
    "duration",
    "url",
    "variable",
)
ARG_QUERIES = ("header", "jsonpath", "regex", "variable")
PREDICATES = (
    "==",
    "!=",
    ">=",
    "<=",
    ">",
    "<",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "exists",
    "isEmpty",
    "isInteger",
    "isString",
    "isBoolean",
    "isCollection",
    "includes",
)
UNARY = ("exists", "isEmpty", "isInteger", "isString", "isBoolean", "isCollection")
REQUEST_SECTIONS = {
    "query": "query",
    "querystringparams": "query",
    "form": "form",
    "formparams": "form",
    "basicauth": "auth",
    "cookies": "cookies",
    "options": "options",
}
RESPONSE_SECTIONS = {"captures": "captures", "asserts": "asserts"}
_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_ENTRY = re.compile(r"^([A-Z]+)\s+(\S.*)$")
_STATUS = re.compile(r"^HTTP(?:/(1\.0|1\.1|2|3))?\s+(\d{3}|\*)\s*$")
_HEADER = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*:\s?(.*)$")


class ApiFileError(BackhaulError):
    """A file that cannot be read as an API test file (exit code 2); says file:line."""

    exit_code = 2

    def __init__(self, source: str, line: int, message: str) -> None:
        self.source = source
        self.line = line
        super().__init__(f"{source}:{line}: {message}")


@dataclass(frozen=True)
class Query:
    kind: str
    arg: str | None = None
    filters: tuple[tuple[str, Any], ...] = ()

    def text(self) -> str:
        out = self.kind if self.arg is None else f"{self.kind} {json.dumps(self.arg)}"
        for name, arg in self.filters:
            out += f" {name}" if arg is None else f" {name} {json.dumps(arg)}"
        return out


@dataclass(frozen=True)
class Assertion:
    query: Query
    predicate: str
    expected: Any  # a literal, or a str holding {{vars}} (then ``template`` is True)
    negate: bool
    line: int
    text: str
    template: bool = False


@dataclass(frozen=True)
class Capture:
    name: str
    query: Query
    line: int


@dataclass
class Entry:
    """One request and what its answer must look like."""

    method: str
    url: str
    line: int
    name: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    query: list[tuple[str, str]] = field(default_factory=list)
    form: list[tuple[str, str]] = field(default_factory=list)
    cookies: list[tuple[str, str]] = field(default_factory=list)
    auth: tuple[str, str] | None = None
    body: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    variables: list[tuple[str, str]] = field(default_factory=list)  # [Options] variable:
    status: int | None = None  # None: any status (Hurl's "HTTP *" or no HTTP line)
    status_line: int = 0
    version: str | None = None
    expect_headers: list[tuple[str, str, int]] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)
    asserts: list[Assertion] = field(default_factory=list)

    def title(self) -> str:
        return self.name or f"{self.method} {self.url}"


@dataclass
class ApiFile:
    path: str
    entries: list[Entry]
    variables: dict[str, str] = field(default_factory=dict)


@dataclass
class ResponseView:
    """What the checks look at: one answer."""

    status: int
    version: str  # "HTTP/1.1", "HTTP/2"
    headers: list[tuple[str, str]]
    body: bytes
    duration_ms: float
    url: str
    _json: Any = field(default=None, repr=False)
    _json_done: bool = field(default=False, repr=False)

    def header_values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [v for k, v in self.headers if k.lower() == lowered]

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        if not self._json_done:
            self._json_done = True
            try:
                self._json = json.loads(self.body)
            except ValueError as exc:
                raise _Mismatch(f"the body is not JSON ({exc})") from None
        return self._json


@dataclass(frozen=True)
class Failure:
    """One expectation not met, or a query that could not run: file:line, expected, got."""

    source: str
    line: int
    what: str
    expected: str
    got: str

    def __str__(self) -> str:
        return (
            f"{self.source}:{self.line}: {self.what}\n    expected: {self.expected}\n"
            f"    got:      {self.got}"
        )


class _Mismatch(Exception):
    """A query could not produce a value (no such header, no JSON ...)."""


# ----------------------------------------------------------------------------- lexing


def _string(text: str, pos: int, source: str, line: int) -> tuple[str, int]:
    """A double-quoted JSON string at ``pos``: (value, position after it)."""
    if pos >= len(text) or text[pos] != '"':
        raise ApiFileError(source, line, f"expected a quoted string at {text[pos:]!r}")
    end = pos + 1
    while end < len(text):
        if text[end] == "\\":
            end += 2
            continue
        if text[end] == '"':
            try:
                return json.loads(text[pos : end + 1]), end + 1
            except ValueError as exc:
                raise ApiFileError(
                    source, line, f"bad string {text[pos : end + 1]}: {exc}"
                ) from None
        end += 1
    raise ApiFileError(source, line, f"unterminated string in {text!r}")


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _word(text: str, pos: int) -> tuple[str, int]:
    end = pos
    while end < len(text) and text[end] not in " \t":
        end += 1
    return text[pos:end], end


def parse_query(text: str, pos: int, source: str, line: int) -> tuple[Query, int]:
    """A query and its filters starting at ``pos``."""
    pos = _skip(text, pos)
    kind, pos = _word(text, pos)
    if kind not in QUERY_KINDS:
        raise ApiFileError(
            source, line, f"unknown query {kind!r}; expected one of {', '.join(QUERY_KINDS)}"
        )
    arg = None
    if kind in ARG_QUERIES:
        arg, pos = _string(text, _skip(text, pos), source, line)
    if kind == "body":  # Hurl's "body regex ..." reads as a regex filter on the body
        pass
    filters: list[tuple[str, Any]] = []
    while True:
        save = _skip(text, pos)
        word, after = _word(text, save)
        if word in ("count", "length", "toInt", "toString", "toFloat"):
            filters.append((word, None))
            pos = after
        elif word == "nth":
            number, after2 = _word(text, _skip(text, after))
            if not number.lstrip("-").isdigit():
                raise ApiFileError(source, line, f"nth needs an index, got {number!r}")
            filters.append(("nth", int(number)))
            pos = after2
        elif word == "regex":
            pattern, pos = _string(text, _skip(text, after), source, line)
            _compile(pattern, source, line)
            filters.append(("regex", pattern))
        else:
            return Query(kind, arg, tuple(filters)), save
    # unreachable


def _compile(pattern: str, source: str, line: int) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ApiFileError(source, line, f"bad regular expression {pattern!r}: {exc}") from None


def parse_value(text: str, source: str, line: int) -> tuple[Any, bool]:
    """A literal: (value, is_template). Strings may hold {{vars}}."""
    text = text.strip()
    if not text:
        raise ApiFileError(source, line, "expected a value after the predicate")
    if text.startswith('"'):
        value, end = _string(text, 0, source, line)
        if text[end:].strip():
            raise ApiFileError(source, line, f"unexpected {text[end:].strip()!r} after the value")
        return value, bool(_VAR.search(value))
    if _VAR.fullmatch(text):
        return text, True
    if text in ("true", "false", "null"):
        return json.loads(text), False
    try:
        return (float(text) if any(c in text for c in ".eE") else int(text)), False
    except ValueError:
        raise ApiFileError(
            source,
            line,
            f'bad value {text!r}: quote strings ("..."), or give a number, '
            "true, false, null or {{variable}}",
        ) from None


def parse_assert(text: str, source: str, line: int) -> Assertion:
    query, pos = parse_query(text, 0, source, line)
    pos = _skip(text, pos)
    negate = False
    word, after = _word(text, pos)
    if word == "not":
        negate = True
        pos = _skip(text, after)
        word, after = _word(text, pos)
    if word not in PREDICATES:
        raise ApiFileError(
            source,
            line,
            f"unknown predicate {word!r} in {text!r}; expected one of {', '.join(PREDICATES)}",
        )
    if word in UNARY:
        if text[after:].strip():
            raise ApiFileError(source, line, f"{word} takes no value")
        return Assertion(query, word, None, negate, line, text.strip())
    expected, is_template = parse_value(text[after:], source, line)
    if word == "matches" and not is_template:
        if not isinstance(expected, str):
            raise ApiFileError(source, line, "matches needs a quoted regular expression")
        _compile(expected, source, line)
    return Assertion(query, word, expected, negate, line, text.strip(), is_template)


def parse_capture(text: str, source: str, line: int) -> Capture:
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
        raise ApiFileError(source, line, f"a capture is 'name: query', got {text!r}")
    query, pos = parse_query(rest, 0, source, line)
    if rest[pos:].strip():
        raise ApiFileError(source, line, f"unexpected {rest[pos:].strip()!r} after the query")
    return Capture(name, query, line)


# ----------------------------------------------------------------------------- plain text


def parse_text(text: str, source: str) -> ApiFile:
    """The plain-text (Hurl) format."""
    lines = text.splitlines()
    entries: list[Entry] = []
    i = 0
    entry: Entry | None = None
    state = "request-headers"  # request-headers, request-section, body, response-...
    section = ""
    body_lines: list[str] = []
    body_line = 0

    def finish_body() -> None:
        nonlocal body_lines
        if entry is not None and body_lines:
            joined = "\n".join(body_lines).strip("\n")
            if joined.startswith("`") and joined.endswith("`") and not joined.startswith("```"):
                joined = joined[1:-1]
            entry.body = joined
        body_lines = []

    while i < len(lines):
        raw = lines[i]
        number = i + 1
        i += 1
        stripped = raw.strip()
        if state == "fence":
            if stripped == "```":
                state = "after-body"
            else:
                body_lines.append(raw)
            continue
        if state == "json-body":
            if _STATUS.match(stripped) or (
                _ENTRY.match(stripped) and stripped.split()[0] in METHODS
            ):
                state = "after-body"
            else:
                body_lines.append(raw)
                continue
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENTRY.match(stripped)
        if match and match.group(1) in METHODS and state not in ("fence",):
            finish_body()
            entry = Entry(method=match.group(1), url=match.group(2).strip(), line=number)
            entries.append(entry)
            state, section = "request-headers", ""
            continue
        if entry is None:
            raise ApiFileError(source, number, f"expected 'METHOD URL' to start, got {stripped!r}")
        status = _STATUS.match(stripped)
        if status and state in ("request-headers", "request-section", "after-body"):
            finish_body()
            entry.version = f"HTTP/{status.group(1)}" if status.group(1) else None
            entry.status = None if status.group(2) == "*" else int(status.group(2))
            entry.status_line = number
            state, section = "response-headers", ""
            continue
        name = stripped[1:-1].strip().lower()
        if stripped.startswith("[") and stripped.endswith("]") and re.fullmatch(r"[a-z]+", name):
            if state in ("request-headers", "request-section") and name in REQUEST_SECTIONS:
                state, section = "request-section", REQUEST_SECTIONS[name]
                continue
            if state.startswith("response") and name in RESPONSE_SECTIONS:
                state, section = "response-section", RESPONSE_SECTIONS[name]
                continue
            raise ApiFileError(source, number, f"section {stripped} is not allowed here")
        if state in ("request-headers", "request-section"):
            if stripped.startswith("```"):
                state = "fence"
                body_line = number
                rest = stripped[3:].strip()
                if rest.endswith("```") and len(stripped) > 3:
                    body_lines.append(rest[:-3].split("\n")[0])
                    state = "after-body"
                continue
            if stripped[0] in "{[" and not (state == "request-section" and _HEADER.match(stripped)):
                state = "json-body"
                body_line = number
                body_lines.append(raw)
                continue
            if stripped.startswith("`") and stripped.endswith("`") and len(stripped) >= 2:
                entry.body = stripped[1:-1]
                state = "after-body"
                continue
            header = _HEADER.match(stripped)
            if header is None:
                raise ApiFileError(source, number, f"expected 'Name: value', got {stripped!r}")
            name, value = header.group(1), header.group(2).strip()
            if state == "request-headers":
                entry.headers.append((name, value))
            elif section == "query":
                entry.query.append((name, value))
            elif section == "form":
                entry.form.append((name, value))
            elif section == "cookies":
                entry.cookies.append((name, value))
            elif section == "auth":
                entry.auth = (name, value)
            else:  # options
                if name == "variable":
                    var, eq, val = value.partition("=")
                    if not eq or not var.strip():
                        raise ApiFileError(source, number, "variable option is 'name=value'")
                    entry.variables.append((var.strip(), val.strip()))
                else:
                    entry.options[name] = value
            continue
        if state == "after-body":
            raise ApiFileError(
                source, number, f"expected 'HTTP <status>' or the next request, got {stripped!r}"
            )
        if state == "response-headers":
            header = _HEADER.match(stripped)
            if header is None:
                raise ApiFileError(
                    source, number, f"expected 'Name: value' or a section, got {stripped!r}"
                )
            entry.expect_headers.append((header.group(1), header.group(2).strip(), number))
            continue
        if section == "captures":
            entry.captures.append(parse_capture(stripped, source, number))
        else:
            entry.asserts.append(parse_assert(stripped, source, number))
    if state == "fence":
        raise ApiFileError(source, body_line, "``` body is never closed")
    finish_body()
    if entry is not None and state == "json-body":
        pass
    for item in entries:
        if (
            item.body is not None
            and item.body.lstrip()[:1] in ("{", "[")
            and not any(k.lower() == "content-type" for k, _ in item.headers)
        ):
            item.headers.append(("Content-Type", "application/json"))
    return ApiFile(source, entries)


# ----------------------------------------------------------------------------- YAML


def parse_yaml(text: str, source: str) -> ApiFile:
    """The YAML format (see the module docstring); line numbers come from the YAML nodes."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ApiFileError(source, mark.line + 1 if mark else 1, f"bad YAML: {exc}") from None
    if root is None:
        return ApiFile(source, [])
    if not isinstance(root, yaml.MappingNode):
        raise ApiFileError(source, root.start_mark.line + 1, "expected a mapping with requests:")
    top = _mapping(root, source)
    variables = {}
    if "variables" in top:
        node = top["variables"]
        values = _plain(node, source)
        if not isinstance(values, dict):
            raise ApiFileError(source, node.start_mark.line + 1, "variables: expects a mapping")
        variables = {str(k): _text(v) for k, v in values.items()}
    unknown = set(top) - {"variables", "requests", "name"}
    if unknown:
        node = top[sorted(unknown)[0]]
        raise ApiFileError(
            source,
            node.start_mark.line + 1,
            f"unknown key {sorted(unknown)[0]!r}; expected variables and requests",
        )
    requests = top.get("requests")
    entries: list[Entry] = []
    if requests is None:
        return ApiFile(source, entries, variables)
    if not isinstance(requests, yaml.SequenceNode):
        raise ApiFileError(source, requests.start_mark.line + 1, "requests: expects a list")
    for item in requests.value:
        entries.append(_yaml_entry(item, source))
    return ApiFile(source, entries, variables)


def _mapping(node: Any, source: str) -> dict[str, Any]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise ApiFileError(source, node.start_mark.line + 1, "expected a mapping")
    return {str(k.value): v for k, v in node.value}


def _plain(node: Any, source: str) -> Any:
    import yaml

    try:
        return yaml.SafeLoader(yaml.serialize(node)).get_single_data()
    except yaml.YAMLError as exc:  # pragma: no cover - the node came from the same parser
        raise ApiFileError(source, node.start_mark.line + 1, str(exc)) from None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _pairs(node: Any, source: str, what: str) -> list[tuple[str, str]]:
    value = _plain(node, source)
    if isinstance(value, dict):
        return [(str(k), _text(v)) for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and ":" in v for v in value):
        return [(k.strip(), v.strip()) for k, _, v in (s.partition(":") for s in value)]
    raise ApiFileError(source, node.start_mark.line + 1, f"{what}: expects a mapping")


def _yaml_entry(node: Any, source: str) -> Entry:
    import yaml

    fields = _mapping(node, source)
    line = node.start_mark.line + 1
    method = url = None
    for key in list(fields):
        if key.upper() in METHODS and key.isupper():
            method, url = key, _text(_plain(fields.pop(key), source))
    if "method" in fields:
        method = _text(_plain(fields.pop("method"), source)).upper()
    if "url" in fields:
        url = _text(_plain(fields.pop("url"), source))
    if not method or method not in METHODS or not url:
        raise ApiFileError(source, line, "a request needs method and url (or 'GET: url')")
    entry = Entry(method=method, url=url, line=line)
    for key, value_node in fields.items():
        at = value_node.start_mark.line + 1
        if key == "name":
            entry.name = _text(_plain(value_node, source))
        elif key == "headers":
            entry.headers = _pairs(value_node, source, "headers")
        elif key == "query":
            entry.query = _pairs(value_node, source, "query")
        elif key == "form":
            entry.form = _pairs(value_node, source, "form")
        elif key == "json":
            entry.body = json.dumps(_plain(value_node, source))
            if not any(k.lower() == "content-type" for k, _ in entry.headers):
                entry.headers.append(("Content-Type", "application/json"))
        elif key == "body":
            entry.body = _text(_plain(value_node, source))
        elif key == "auth":
            auth = _plain(value_node, source)
            if not isinstance(auth, dict) or "user" not in auth:
                raise ApiFileError(source, at, "auth: expects {user: ..., password: ...}")
            entry.auth = (_text(auth["user"]), _text(auth.get("password")))
        elif key == "options":
            for name, value in _pairs(value_node, source, "options"):
                if name == "variables":
                    raise ApiFileError(source, at, "use variable: name=value")
                if name == "variable":
                    var, _, val = value.partition("=")
                    entry.variables.append((var.strip(), val.strip()))
                else:
                    entry.options[name] = value
        elif key == "status":
            status = _plain(value_node, source)
            if status == "*":
                entry.status = None
            elif isinstance(status, int) and 100 <= status <= 999:
                entry.status = status
            else:
                raise ApiFileError(source, at, f"status: expects a number, got {status!r}")
            entry.status_line = at
        elif key == "captures":
            for key_node, query_node in _mapping_nodes(value_node, source):
                text = f"{key_node.value}: {_text(_plain(query_node, source))}"
                entry.captures.append(parse_capture(text, source, key_node.start_mark.line + 1))
        elif key == "asserts":
            if not isinstance(value_node, yaml.SequenceNode):
                raise ApiFileError(source, at, "asserts: expects a list of assert lines")
            for item in value_node.value:
                text = _text(_plain(item, source))
                entry.asserts.append(parse_assert(text, source, item.start_mark.line + 1))
        else:
            raise ApiFileError(source, at, f"unknown request key {key!r}")
    return entry


def _mapping_nodes(node: Any, source: str) -> list[tuple[Any, Any]]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise ApiFileError(source, node.start_mark.line + 1, "captures: expects a mapping")
    return list(node.value)


def parse(text: str, source: str) -> ApiFile:
    """By extension: .yaml/.yml is YAML, anything else the plain-text format."""
    if source.endswith((".yaml", ".yml")):
        return parse_yaml(text, source)
    return parse_text(text, source)


# ----------------------------------------------------------------------------- checking


class UndefinedVariable(Exception):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(name)


def substitute(text: str, variables: Mapping[str, Any]) -> str:
    """``{{name}}`` -> its value; an undefined one raises :class:`UndefinedVariable`."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise UndefinedVariable(name)
        value = variables[name]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        return "" if value is None else str(value)

    return _VAR.sub(one, text)


def _run_query(query: Query, response: ResponseView, variables: Mapping[str, Any]) -> Any:
    kind = query.kind
    value: Any
    if kind == "status":
        value = response.status
    elif kind == "version":
        value = response.version.removeprefix("HTTP/")
    elif kind == "header":
        values = response.header_values(substitute(query.arg or "", variables))
        if not values:
            raise _Mismatch(f"no header {query.arg!r} in the answer")
        value = values[0] if len(values) == 1 else values
    elif kind == "jsonpath":
        value = _jsonpath(substitute(query.arg or "", variables), response.json())
    elif kind == "body":
        value = response.text()
    elif kind == "regex":
        value = _regex(query.arg or "", response.text())
    elif kind == "duration":
        value = round(response.duration_ms)
    elif kind == "url":
        value = response.url
    else:  # variable
        if query.arg not in variables:
            raise _Mismatch(f"variable {query.arg!r} is not defined")
        value = variables[query.arg or ""]
    for name, arg in query.filters:
        value = _filter(name, arg, value)
    return value


def _jsonpath(path: str, document: Any) -> Any:
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext.parser import parse as jsonpath_parse

    try:
        compiled = jsonpath_parse(path)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise _Mismatch(f"bad JSONPath {path!r}: {exc}") from None
    found = [match.value for match in compiled.find(document)]
    if not found:
        raise _Mismatch(f"JSONPath {path} matched nothing")
    # a path that can select several nodes gives a list even with one match (Hurl's rule)
    definite = not any(token in path for token in ("[*]", "..", "?(", "[?", ":"))
    return found[0] if definite and len(found) == 1 else found


def _regex(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise _Mismatch(f"regex {pattern!r} matched nothing")
    return match.group(1) if match.groups() else match.group(0)


def _filter(name: str, arg: Any, value: Any) -> Any:
    if name in ("count", "length"):
        if not isinstance(value, (list, dict, str)):
            raise _Mismatch(f"{name} needs a list or a string, got {_show(value)}")
        return len(value)
    if name == "nth":
        if not isinstance(value, list) or not -len(value) <= arg < len(value):
            raise _Mismatch(f"nth {arg}: no such item in {_show(value)}")
        return value[arg]
    if name == "regex":
        return _regex(arg, str(value))
    if name == "toInt":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _Mismatch(f"toInt: {_show(value)} is not an integer") from None
    if name == "toFloat":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _Mismatch(f"toFloat: {_show(value)} is not a number") from None
    return value if isinstance(value, str) else json.dumps(value)  # toString


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return json.dumps(value)
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "…"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _holds(predicate: str, got: Any, expected: Any) -> bool:
    if predicate == "==":
        if _number(got) and _number(expected):
            return bool(got == expected)
        return bool(got == expected and type(got) is type(expected)) or (
            isinstance(got, list) and isinstance(expected, list) and got == expected
        )
    if predicate == "!=":
        return not _holds("==", got, expected)
    if predicate in (">", ">=", "<", "<="):
        if not (_number(got) and _number(expected)) and not (
            isinstance(got, str) and isinstance(expected, str)
        ):
            return False
        return bool(
            {
                ">": got > expected,
                ">=": got >= expected,
                "<": got < expected,
                "<=": got <= expected,
            }[predicate]
        )
    if predicate in ("contains", "includes"):
        if isinstance(got, str) and isinstance(expected, str):
            return expected in got
        if isinstance(got, list):
            return expected in got
        return False
    if predicate == "startsWith":
        return isinstance(got, str) and isinstance(expected, str) and got.startswith(expected)
    if predicate == "endsWith":
        return isinstance(got, str) and isinstance(expected, str) and got.endswith(expected)
    if predicate == "matches":
        return isinstance(got, str) and re.search(str(expected), got) is not None
    if predicate == "isEmpty":
        return isinstance(got, (list, dict, str)) and len(got) == 0
    if predicate == "isInteger":
        return isinstance(got, int) and not isinstance(got, bool)
    if predicate == "isString":
        return isinstance(got, str)
    if predicate == "isBoolean":
        return isinstance(got, bool)
    if predicate == "isCollection":
        return isinstance(got, (list, dict))
    raise AssertionError(predicate)  # pragma: no cover - parse_assert admits only the above


def check(
    entry: Entry, response: ResponseView, variables: dict[str, Any], source: str
) -> tuple[dict[str, Any], list[Failure], int]:
    """Captures first (Hurl's order), then the status line, expected headers and asserts.
    Returns (captured values, failures, number of checks made)."""
    failures: list[Failure] = []
    captured: dict[str, Any] = {}
    checks = 0
    scope = dict(variables)
    for capture in entry.captures:
        try:
            captured[capture.name] = scope[capture.name] = _run_query(
                capture.query, response, scope
            )
        except (_Mismatch, UndefinedVariable) as exc:
            failures.append(
                Failure(
                    source,
                    capture.line,
                    f"capture {capture.name}: {capture.query.text()}",
                    "a value",
                    _why(exc),
                )
            )
    if entry.status is not None:
        checks += 1
        if response.status != entry.status:
            failures.append(
                Failure(
                    source,
                    entry.status_line or entry.line,
                    "status",
                    str(entry.status),
                    str(response.status),
                )
            )
    if entry.version is not None:
        checks += 1
        if response.version != entry.version:
            failures.append(
                Failure(source, entry.status_line, "HTTP version", entry.version, response.version)
            )
    for name, value, line in entry.expect_headers:
        checks += 1
        try:
            wanted = substitute(value, scope)
        except UndefinedVariable as exc:
            failures.append(Failure(source, line, f"header {name}", value, _why(exc)))
            continue
        values = response.header_values(name)
        if wanted not in values:
            failures.append(
                Failure(
                    source,
                    line,
                    f"header {name}",
                    json.dumps(wanted),
                    ", ".join(json.dumps(v) for v in values) or "no such header",
                )
            )
    for assertion in entry.asserts:
        checks += 1
        failure = _check_one(assertion, response, scope, source)
        if failure is not None:
            failures.append(failure)
    return captured, failures, checks


def _why(exc: Exception) -> str:
    if isinstance(exc, UndefinedVariable):
        return f"variable {exc.name!r} is not defined"
    return str(exc)


def _check_one(
    assertion: Assertion, response: ResponseView, scope: dict[str, Any], source: str
) -> Failure | None:
    expected = assertion.expected
    what = assertion.text
    try:
        if assertion.template:
            text = substitute(str(expected), scope)
            # a whole-value {{var}} keeps the variable's type; inside a string it is text
            whole = _VAR.fullmatch(str(expected))
            expected = scope[whole.group(1)] if whole else text
        got = _run_query(assertion.query, response, scope)
    except UndefinedVariable as exc:
        return Failure(source, assertion.line, what, _describe(assertion, expected), _why(exc))
    except _Mismatch as exc:
        if assertion.predicate == "exists" and assertion.negate:
            return None
        return Failure(source, assertion.line, what, _describe(assertion, expected), str(exc))
    if assertion.predicate == "exists":
        ok = True
    elif assertion.predicate == "matches":
        try:
            ok = _holds("matches", got, expected)
        except re.error as exc:
            return Failure(source, assertion.line, what, "a valid regular expression", str(exc))
    else:
        ok = _holds(assertion.predicate, got, expected)
    if ok != assertion.negate:
        return None
    return Failure(source, assertion.line, what, _describe(assertion, expected), _show(got))


def _describe(assertion: Assertion, expected: Any) -> str:
    prefix = "not " if assertion.negate else ""
    if assertion.predicate in UNARY:
        return f"{prefix}{assertion.predicate}"
    if assertion.predicate == "==":
        return f"{prefix}{_show(expected)}" if not prefix else f"!= {_show(expected)}"
    return f"{prefix}{assertion.predicate} {_show(expected)}"
