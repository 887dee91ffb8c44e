"""Postman collection v2.1 to the plain-text API file format (``backhaul api import``).

What carries over: folders (flattened, in order, their names as comments), requests
(method, URL, headers that are not disabled, raw / urlencoded / form-data text bodies,
basic and bearer auth), collection variables (as ``[Options] variable:`` on the first
request) and the simple status tests newman users write in a test script:
``pm.response.to.have.status(N)``, ``pm.expect(pm.response.code).to.eql(N)`` /
``.to.equal(N)``, ``pm.response.to.be.ok`` (and ``.success`` - any 2xx). Other script
lines are kept as comments, so nothing is dropped silently. ``{{variables}}`` keep their
syntax, which both formats share. No I/O here: text in, text out.
"""

from __future__ import annotations

import json
import re
from typing import Any

from backhaul.errors import UsageError

__all__ = ["ConvertedCollection", "convert"]

_STATUS_TESTS = (
    re.compile(r"pm\.response\.to\.have\.status\(\s*(\d{3})\s*\)"),
    re.compile(
        r"pm\.expect\(\s*pm\.response\.(?:code|status)\s*\)\.to\.(?:eql|equal|be)\(\s*"
        r"(\d{3})\s*\)"
    ),
)
_OK_TESTS = re.compile(r"pm\.response\.to\.be\.(ok|success)\b")
SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"


class ConvertedCollection:
    def __init__(self, text: str, requests: int, notes: list[str]) -> None:
        self.text = text
        self.requests = requests
        self.notes = notes


def _fail(what: str) -> UsageError:
    return UsageError(f"not a Postman collection v2.1: {what}")


def _url(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "raw" in value:
            return str(value["raw"])
        host = value.get("host", [])
        path = value.get("path", [])
        host = ".".join(host) if isinstance(host, list) else str(host)
        path = "/".join(str(p) if isinstance(p, str) else str(p.get("value", "")) for p in path)
        url = f"{value.get('protocol', 'http')}://{host}" + (f"/{path}" if path else "")
        query = value.get("query") or []
        pairs = [f"{q['key']}={q.get('value', '')}" for q in query if not q.get("disabled")]
        return url + ("?" + "&".join(pairs) if pairs else "")
    raise _fail(f"a request url is {type(value).__name__}")


def _auth_lines(auth: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """(headers, sections) for an auth block."""
    if not auth:
        return [], []
    kind = str(auth.get("type"))
    values: dict[str, Any] = {}
    for item in auth.get(kind, []) if isinstance(auth.get(kind), list) else []:
        values[str(item.get("key"))] = item.get("value", "")
    if kind == "bearer":
        return [f"Authorization: Bearer {values.get('token', '')}"], []
    if kind == "basic":
        return [], ["[BasicAuth]", f"{values.get('username', '')}: {values.get('password', '')}"]
    if kind == "noauth":
        return [], []
    return [f"# auth type {kind!r} is not converted"], []


def _tests(events: list[dict[str, Any]]) -> tuple[int | None, bool, list[str]]:
    """(expected status, 'is 2xx' test, script lines kept as comments)."""
    status = None
    ok = False
    comments = []
    for event in events or []:
        if event.get("listen") != "test":
            continue
        script = event.get("script", {})
        lines = script.get("exec", [])
        if isinstance(lines, str):
            lines = lines.splitlines()
        for line in lines:
            found = False
            for pattern in _STATUS_TESTS:
                match = pattern.search(line)
                if match:
                    status = int(match.group(1))
                    found = True
            if _OK_TESTS.search(line):
                ok = True
                found = True
            stripped = line.strip()
            if not found and stripped and not stripped.startswith(("pm.test(", "});", "//")):
                comments.append(f"# postman test not converted: {stripped}")
    return status, ok, comments


def _body(body: dict[str, Any] | None) -> tuple[list[str], list[str], list[str]]:
    """(headers, lines before HTTP, notes)."""
    if not body:
        return [], [], []
    mode = body.get("mode")
    if mode == "raw":
        raw = str(body.get("raw", ""))
        if not raw:
            return [], [], []
        language = body.get("options", {}).get("raw", {}).get("language")
        headers = ["Content-Type: application/json"] if language == "json" else []
        if "```" in raw:
            return headers, [], ["a raw body holding ``` is not converted"]
        return headers, ["```", *raw.splitlines(), "```"], []
    if mode in ("urlencoded", "formdata"):
        lines = ["[Form]"]
        notes = []
        for item in body.get(mode, []):
            if item.get("disabled"):
                continue
            if item.get("type") == "file":
                notes.append(f"form file field {item.get('key')!r} is not converted")
                continue
            lines.append(f"{item.get('key')}: {item.get('value', '')}")
        return [], lines, notes
    return [], [], [f"body mode {mode!r} is not converted"]


def _walk(items: list[dict[str, Any]], trail: list[str]) -> list[tuple[list[str], dict[str, Any]]]:
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise _fail("an item is not an object")
        if "item" in item:
            out += _walk(item["item"], [*trail, str(item.get("name", ""))])
        elif "request" in item:
            out.append(([*trail, str(item.get("name", ""))], item))
    return out


def convert(text: str) -> ConvertedCollection:
    """The plain-text file for a Postman v2.1 collection (JSON text)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise _fail(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("item"), list):
        raise _fail("no 'item' list at the top")
    schema = str(doc.get("info", {}).get("schema", ""))
    if schema and "v2.1" not in schema and "v2.0" not in schema:
        raise _fail(f"schema {schema}")
    name = doc.get("info", {}).get("name", "collection")
    out = [f"# {name} (converted from a Postman collection by backhaul api import)"]
    notes: list[str] = []
    variables = [v for v in doc.get("variable", []) if isinstance(v, dict) and v.get("key")]
    requests = _walk(doc["item"], [])
    for number, (trail, item) in enumerate(requests):
        request = item["request"]
        if isinstance(request, str):
            request = {"method": "GET", "url": request}
        method = str(request.get("method", "GET")).upper()
        out.append("")
        out.append(f"# {' / '.join(t for t in trail if t)}")
        out.append(f"{method} {_url(request.get('url', ''))}")
        auth_headers, auth_sections = _auth_lines(request.get("auth") or doc.get("auth"))
        body_headers, body_lines, body_notes = _body(request.get("body"))
        notes += [f"{' / '.join(trail)}: {n}" for n in body_notes]
        given = set()
        for header in request.get("header", []) or []:
            if header.get("disabled"):
                continue
            given.add(str(header.get("key", "")).lower())
            out.append(f"{header.get('key')}: {header.get('value', '')}")
        out += [h for h in auth_headers + body_headers if h.split(":")[0].lower() not in given]
        sections = list(auth_sections)
        if number == 0 and variables:
            sections += ["[Options]"] + [
                f"variable: {v['key']}={v.get('value', '')}" for v in variables
            ]
        if body_lines and body_lines[0] == "[Form]":
            sections += body_lines
            body_lines = []
        out += sections + body_lines
        status, ok, comments = _tests(item.get("event", []))
        out += comments
        out.append(f"HTTP {status}" if status else "HTTP *")
        if ok and not status:
            out += ["[Asserts]", "status >= 200", "status < 300"]
    return ConvertedCollection("\n".join(out) + "\n", len(requests), notes)
