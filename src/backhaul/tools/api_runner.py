"""``backhaul api run``'s driver: send each file's requests in order, check the answers,
and report on the terminal, as JUnit XML and as JSON.

Files run in the order given (or ``parallel`` at a time, each in its own thread); the
requests of one file always run one after the other, because later ones use what earlier
ones captured. Requests go through :func:`backhaul.tools.client.fetch`, so a file gets the
same HTTP/1.1, HTTP/2, TLS and timeout behaviour as ``backhaul curl``.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from backhaul.errors import UsageError
from backhaul.tools import apifile
from backhaul.tools.client import BoundedBuffer, CurlFailure, RequestSpec, Session, fetch

__all__ = [
    "EntryResult",
    "FileResult",
    "RunOptions",
    "junit_xml",
    "load",
    "report_json",
    "run_files",
]


@dataclass
class RunOptions:
    variables: dict[str, str] = field(default_factory=dict)
    parallel: int = 1
    timeout: float = 30.0  # per request
    insecure: bool = False
    cacert: str | None = None
    stop_on_failure: bool = False  # per file: skip the rest of a file after a failure


@dataclass
class EntryResult:
    entry: apifile.Entry
    method: str = ""
    url: str = ""
    status: int | None = None
    duration_ms: float = 0.0
    checks: int = 0
    failures: list[apifile.Failure] = field(default_factory=list)
    error: apifile.Failure | None = None  # the request could not be made
    captures: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and self.error is None


@dataclass
class FileResult:
    path: str
    entries: list[EntryResult]
    duration_ms: float
    error: str | None = None  # the file could not be parsed

    @property
    def ok(self) -> bool:
        return self.error is None and all(e.ok for e in self.entries if not e.skipped)


def load(path: str) -> apifile.ApiFile:
    """Read and parse one file; a missing file is a usage error, a bad one says file:line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({exc})") from None
    return apifile.parse(text, path)


def _bool(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on")


def _render(entry: apifile.Entry, scope: dict[str, Any], opts: RunOptions) -> RequestSpec:
    sub = apifile.substitute
    url = sub(entry.url, scope)
    if entry.query:
        parts = urlsplit(url)
        extra = urlencode([(sub(k, scope), sub(v, scope)) for k, v in entry.query])
        url = urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))
    headers = [(sub(k, scope), sub(v, scope)) for k, v in entry.headers]
    if entry.cookies:
        jar = "; ".join(f"{sub(k, scope)}={sub(v, scope)}" for k, v in entry.cookies)
        headers.append(("Cookie", jar))
    body: bytes | None = None
    if entry.form:
        body = urlencode([(sub(k, scope), sub(v, scope)) for k, v in entry.form]).encode()
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    elif entry.body is not None:
        body = sub(entry.body, scope).encode()
    options = {k: sub(v, scope) for k, v in entry.options.items()}
    http = "2"
    if _bool(options.get("http1.1", "false")):
        http = "1.1"
    if _bool(options.get("http2-prior-knowledge", "false")):
        http = "2-prior"
    user = None
    if entry.auth is not None:
        user = f"{sub(entry.auth[0], scope)}:{sub(entry.auth[1], scope)}"
    try:
        max_redirs = int(options.get("max-redirs", "50"))
    except ValueError:
        max_redirs = 50
    return RequestSpec(
        url=url,
        method=entry.method,
        headers=headers,
        remove_headers={"content-type"} if body is None else set(),
        body=body,
        user=user,
        follow=_bool(options.get("location", "false")),
        max_redirects=max_redirs,
        insecure=opts.insecure or _bool(options.get("insecure", "false")),
        cacert=options.get("cacert") or opts.cacert,
        http=http,
        max_time=opts.timeout,
        head=entry.method == "HEAD",
    )


def run_file(path: str, parsed: apifile.ApiFile | None, opts: RunOptions) -> FileResult:
    """Run one file's requests in sequence; captures feed the later ones."""
    start = time.monotonic()
    if parsed is None:
        try:
            parsed = load(path)
        except (apifile.ApiFileError, UsageError) as exc:
            return FileResult(path, [], 0.0, error=str(exc))
    scope: dict[str, Any] = {**parsed.variables, **opts.variables}
    results: list[EntryResult] = []
    failed = False
    with Session() as session:  # one connection pool per file, as Hurl keeps
        for entry in parsed.entries:
            result = EntryResult(entry)
            results.append(result)
            if failed and opts.stop_on_failure:
                result.skipped = True
                continue
            try:
                for name, value in entry.variables:
                    scope[name] = apifile.substitute(value, scope)
                spec = _render(entry, scope, opts)
            except apifile.UndefinedVariable as exc:
                result.error = apifile.Failure(
                    path,
                    entry.line,
                    f"{entry.method} {entry.url}",
                    "every {{variable}} defined",
                    f"variable {exc.name!r} is not defined",
                )
                failed = True
                continue
            result.method, result.url = spec.method or entry.method, spec.url
            sink = BoundedBuffer()
            began = time.monotonic()
            try:
                transfer = fetch(spec, sink, session=session)
            except CurlFailure as exc:
                result.duration_ms = (time.monotonic() - began) * 1000
                result.error = apifile.Failure(
                    path,
                    entry.line,
                    f"{spec.method} {spec.url}",
                    "an answer",
                    f"curl error {exc.exit_code}: {exc.message}",
                )
                failed = True
                continue
            last = transfer.last
            result.status = last.status
            result.duration_ms = transfer.time_total * 1000
            view = apifile.ResponseView(
                status=last.status,
                version=last.http_version,
                headers=last.headers,
                body=sink.getvalue(),
                duration_ms=result.duration_ms,
                url=last.url,
            )
            captured, failures, checks = apifile.check(entry, view, scope, path)
            scope.update(captured)
            result.captures, result.failures, result.checks = captured, failures, checks
            failed = failed or bool(failures)
    return FileResult(path, results, (time.monotonic() - start) * 1000)


def run_files(
    paths: list[str],
    opts: RunOptions,
    parsed: dict[str, apifile.ApiFile] | None = None,
    on_done: Any = None,
) -> list[FileResult]:
    """Run every file, ``opts.parallel`` at a time; results in the order given."""
    parsed = parsed or {}
    if opts.parallel <= 1 or len(paths) <= 1:
        results = []
        for path in paths:
            result = run_file(path, parsed.get(path), opts)
            if on_done:
                on_done(result)
            results.append(result)
        return results
    with ThreadPoolExecutor(max_workers=opts.parallel) as pool:
        futures = [pool.submit(run_file, path, parsed.get(path), opts) for path in paths]
        results = []
        for future in futures:
            result = future.result()
            if on_done:
                on_done(result)
            results.append(result)
        return results


# ----------------------------------------------------------------------------- reports


def report_json(results: list[FileResult], elapsed_ms: float) -> dict[str, Any]:
    def failure(f: apifile.Failure) -> dict[str, Any]:
        return {
            "file": f.source,
            "line": f.line,
            "what": f.what,
            "expected": f.expected,
            "got": f.got,
        }

    files = []
    for result in results:
        entries = []
        for e in result.entries:
            entries.append(
                {
                    "name": e.entry.title(),
                    "line": e.entry.line,
                    "method": e.method or e.entry.method,
                    "url": e.url or e.entry.url,
                    "status": e.status,
                    "duration_ms": round(e.duration_ms, 3),
                    "checks": e.checks,
                    "skipped": e.skipped,
                    "success": e.ok and not e.skipped,
                    "error": failure(e.error) if e.error else None,
                    "failures": [failure(f) for f in e.failures],
                    "captures": e.captures,
                }
            )
        files.append(
            {
                "file": result.path,
                "success": result.ok,
                "duration_ms": round(result.duration_ms, 3),
                "error": result.error,
                "entries": entries,
            }
        )
    return {
        "success": all(r.ok for r in results),
        "files": files,
        "summary": summary(results, elapsed_ms),
    }


def summary(results: list[FileResult], elapsed_ms: float) -> dict[str, Any]:
    entries = [e for r in results for e in r.entries]
    return {
        "files": len(results),
        "files_failed": sum(not r.ok for r in results),
        "requests": sum(1 for e in entries if not e.skipped and (e.status or e.error)),
        "requests_failed": sum(not e.ok for e in entries if not e.skipped),
        "requests_skipped": sum(e.skipped for e in entries),
        "checks": sum(e.checks for e in entries),
        "checks_failed": sum(len(e.failures) for e in entries),
        "errors": sum(e.error is not None for e in entries)
        + sum(r.error is not None for r in results),
        "duration_ms": round(elapsed_ms, 3),
    }


def junit_xml(results: list[FileResult], elapsed_ms: float) -> bytes:
    """JUnit XML (the shape Jenkins, GitLab and GitHub read): one testsuite per file, one
    testcase per request; a failed check is a <failure>, a request that could not be made
    or a file that could not be parsed an <error>, a request skipped after a failure
    <skipped/>."""
    total = summary(results, elapsed_ms)
    root = ET.Element(
        "testsuites",
        {
            "name": "backhaul api run",
            "tests": str(
                sum(max(1, len(r.entries)) if r.error else len(r.entries) for r in results)
            ),
            "failures": str(sum(1 for r in results for e in r.entries if e.failures)),
            "errors": str(total["errors"]),
            "skipped": str(total["requests_skipped"]),
            "time": f"{elapsed_ms / 1000:.3f}",
        },
    )
    for index, result in enumerate(results):
        suite = ET.SubElement(
            root,
            "testsuite",
            {
                "name": result.path,
                "id": str(index),
                "tests": str(len(result.entries) or (1 if result.error else 0)),
                "failures": str(sum(1 for e in result.entries if e.failures)),
                "errors": str(
                    sum(e.error is not None for e in result.entries) + (1 if result.error else 0)
                ),
                "skipped": str(sum(e.skipped for e in result.entries)),
                "time": f"{result.duration_ms / 1000:.3f}",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                "hostname": "localhost",
            },
        )
        if result.error:
            case = ET.SubElement(
                suite, "testcase", {"name": "parse", "classname": result.path, "time": "0.000"}
            )
            ET.SubElement(
                case, "error", {"message": result.error, "type": "parse"}
            ).text = result.error
        for e in result.entries:
            case = ET.SubElement(
                suite,
                "testcase",
                {
                    "name": f"{e.entry.title()} (line {e.entry.line})",
                    "classname": result.path,
                    "time": f"{e.duration_ms / 1000:.3f}",
                },
            )
            if e.skipped:
                ET.SubElement(case, "skipped", {"message": "an earlier request failed"})
            elif e.error is not None:
                ET.SubElement(
                    case,
                    "error",
                    {
                        "message": f"{e.error.source}:{e.error.line}: {e.error.got}",
                        "type": "request",
                    },
                ).text = str(e.error)
            elif e.failures:
                first = e.failures[0]
                ET.SubElement(
                    case,
                    "failure",
                    {
                        "message": f"{first.source}:{first.line}: {first.what}: expected "
                        f"{first.expected}, got {first.got}",
                        "type": "assert",
                    },
                ).text = "\n".join(str(f) for f in e.failures)
    ET.indent(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True)) + b"\n"


def dump_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str)
