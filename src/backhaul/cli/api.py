"""``backhaul api``: run API test files (``run``) and convert Postman collections (``import``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
import yaml

from backhaul.errors import UsageError
from backhaul.tools import api_runner, apifile, postman

__all__ = ["register"]

RUN_HELP = """Run API test files: requests with captures and asserts (Hurl's model).

Files are plain text (Hurl's format) or YAML (.yaml/.yml); see
`backhaul api run --help-format`. Files run in the order given (--parallel N
runs N files at once); the requests of a file run in sequence, captures
feeding the later ones. By default a file stops at its first failed request
(--continue-on-error runs the rest).

Variables ({{name}}): the file's own (YAML variables:, [Options] variable:),
then --env-file FILE --env NAME (a YAML/JSON mapping of environment names to
variables), --variables-file (name=value lines), --variable name=value, and
finally captures.

Reports: the terminal (each failure as file:line, what, expected, got),
--junit out.xml (JUnit XML: a testsuite per file, a testcase per request) and
--json (one document on stdout). --import COLLECTION.json runs a Postman v2.1
collection converted on the fly (see `backhaul api import`).

Exit codes: 0 every check passed, 1 a check failed or a request could not be
made, 2 bad usage or a file that cannot be parsed (file:line says where).
"""

IMPORT_HELP = """Convert a Postman collection v2.1 into the plain-text format.

Requests (folders flattened in order), headers, raw / urlencoded / form-data
bodies, basic and bearer auth, collection variables ([Options] variable:) and
simple status tests (pm.response.to.have.status(N), pm.expect(pm.response.code)
.to.eql(N), pm.response.to.be.ok) carry over; other test script lines are kept
as comments. Writes to -o FILE or stdout.
"""


def _variable(text: str, what: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise UsageError(f"{what} {text!r}: give name=value")
    return name.strip(), value


def _env_variables(path: Path, name: str | None) -> dict[str, str]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--env-file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--env-file {path}: not YAML/JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"--env-file {path}: expected a mapping of environments")
    if name is None:
        raise UsageError(f"--env-file {path}: choose one with --env ({', '.join(map(str, doc))})")
    env = doc.get(name)
    if not isinstance(env, dict):
        raise UsageError(
            f"--env {name}: not in {path}; environments there: {', '.join(map(str, doc))}"
        )
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _print_file(result: api_runner.FileResult, color: bool) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True, no_color=not color)
    passed = result.ok
    tag = "[bold green]PASS[/]" if passed else "[bold red]FAIL[/]"
    ran = sum(1 for e in result.entries if not e.skipped)
    console.print(
        f"{tag} {escape(result.path)} ({ran} request{'s' if ran != 1 else ''}, "
        f"{result.duration_ms:.0f} ms)"
    )
    if result.error:
        console.print(f"  [red]error:[/] {escape(result.error)}")
    for entry in result.entries:
        if entry.skipped:
            console.print(
                f"  [dim]skipped {escape(entry.entry.title())} (line {entry.entry.line})[/]"
            )
            continue
        for failure in ([entry.error] if entry.error else []) + entry.failures:
            console.print(
                f"  [bold]{escape(failure.source)}:{failure.line}[/]: {escape(failure.what)}"
            )
            console.print(f"      expected: [green]{escape(failure.expected)}[/]")
            console.print(f"      got:      [red]{escape(failure.got)}[/]")


def register(app: typer.Typer) -> None:
    """Add ``backhaul api run`` and ``backhaul api import`` to the root app."""
    api = typer.Typer(
        name="api",
        help="API tests: run request files with asserts, import Postman collections.",
        no_args_is_help=True,
    )
    app.add_typer(api, name="api")

    @api.command("run", help=RUN_HELP)
    def run_cmd(
        files: list[str] | None = typer.Argument(None, metavar="FILE...", show_default=False),
        variable: list[str] = typer.Option([], "--variable", help="name=value, repeatable."),
        variables_file: Path | None = typer.Option(
            None, "--variables-file", help="name=value lines."
        ),
        env_file: Path | None = typer.Option(None, "--env-file", help="Environments file."),
        env: str | None = typer.Option(None, "--env", help="Environment name in --env-file."),
        parallel: int = typer.Option(1, "-j", "--parallel", help="Files run at once."),
        junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML here."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON report."),
        import_collection: Path | None = typer.Option(
            None, "--import", help="Run a Postman v2.1 collection."
        ),
        continue_on_error: bool = typer.Option(
            False, "--continue-on-error", help="Run a file's later requests after a failure."
        ),
        timeout: float = typer.Option(30.0, "-m", "--max-time", help="Seconds per request."),
        insecure: bool = typer.Option(False, "-k", "--insecure", help="Skip TLS checks."),
        cacert: Path | None = typer.Option(None, "--cacert", help="CA bundle (PEM)."),
        help_format: bool = typer.Option(False, "--help-format", help="Describe the formats."),
    ) -> None:
        if help_format:
            typer.echo(apifile.__doc__)
            raise typer.Exit(0)
        paths = list(files or [])
        if not paths and import_collection is None:
            raise UsageError("give one or more files to run (or --import COLLECTION.json)")
        if not 1 <= parallel <= 64:
            raise UsageError(f"--parallel {parallel}: give 1 to 64")
        if not 0 < timeout <= 3600:
            raise UsageError(f"--max-time {timeout}: give seconds above 0")
        if env is not None and env_file is None:
            raise UsageError("--env needs --env-file")
        if junit is not None and not junit.parent.is_dir():
            raise UsageError(f"--junit {junit}: directory {junit.parent} does not exist")
        variables: dict[str, str] = {}
        if env_file is not None:
            variables.update(_env_variables(env_file, env))
        if variables_file is not None:
            try:
                lines = variables_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise UsageError(f"--variables-file {variables_file}: {exc.strerror}") from None
            for line in lines:
                if line.strip() and not line.lstrip().startswith("#"):
                    name, value = _variable(line.strip(), "--variables-file")
                    variables[name] = value.strip()
        for text in variable:
            name, value = _variable(text, "--variable")
            variables[name] = value
        parsed: dict[str, apifile.ApiFile] = {}
        for path in paths:
            parsed[path] = api_runner.load(path)  # parse errors stop here: exit 2, file:line
        if import_collection is not None:
            try:
                text = import_collection.read_text(encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"--import {import_collection}: {exc.strerror}") from None
            converted = postman.convert(text)
            name = str(import_collection)
            parsed[name] = apifile.parse_text(converted.text, name)
            paths.append(name)
        opts = api_runner.RunOptions(
            variables=variables,
            parallel=parallel,
            timeout=timeout,
            insecure=insecure,
            cacert=str(cacert) if cacert else None,
            stop_on_failure=not continue_on_error,
        )
        color = sys.stdout.isatty()
        start = time.monotonic()
        results = api_runner.run_files(
            paths, opts, parsed, on_done=None if as_json else lambda r: _print_file(r, color)
        )
        elapsed = (time.monotonic() - start) * 1000
        if junit is not None:
            junit.write_bytes(api_runner.junit_xml(results, elapsed))
        total = api_runner.summary(results, elapsed)
        if as_json:
            sys.stdout.write(api_runner.dump_json(api_runner.report_json(results, elapsed)) + "\n")
        else:
            files_n = total["files"]
            failed = total["files_failed"]
            rate = total["requests"] / (elapsed / 1000) if elapsed > 0 else 0.0

            def pct(n: int) -> str:
                return f"{100 * n / files_n:.1f}%" if files_n else "0%"

            typer.echo("-" * 72)
            typer.echo(f"Executed files:    {files_n}")
            typer.echo(f"Executed requests: {total['requests']} ({rate:.1f}/s)")
            typer.echo(f"Checks:            {total['checks']} ({total['checks_failed']} failed)")
            typer.echo(f"Succeeded files:   {files_n - failed} ({pct(files_n - failed)})")
            typer.echo(f"Failed files:      {failed} ({pct(failed)})")
            typer.echo(f"Duration:          {elapsed:.0f} ms")
        if not all(r.ok for r in results):
            raise typer.Exit(1)

    @api.command("import", help=IMPORT_HELP)
    def import_cmd(
        collection: Path = typer.Argument(..., help="Postman collection v2.1 (JSON)."),
        output: Path | None = typer.Option(None, "-o", "--output", help="Write here."),
    ) -> None:
        try:
            text = collection.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{collection}: {exc.strerror}") from None
        converted = postman.convert(text)
        apifile.parse_text(converted.text, str(output or collection))  # it must read back
        if output is None:
            sys.stdout.write(converted.text)
        else:
            output.write_text(converted.text, encoding="utf-8")
            typer.echo(f"{converted.requests} requests written to {output}", err=True)
        for note in converted.notes:
            typer.echo(f"note: {note}", err=True)
