"""``backhaul bench``: an HTTP load generator on :mod:`backhaul.tools.loadgen`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import typer
from rich.console import Console

from backhaul.errors import UsageError
from backhaul.tools import bench_report
from backhaul.tools.loadgen import BenchOptions, Progress, bench

__all__ = ["LiveLine", "parse_duration", "register"]

HELP = """Load an HTTP server and measure its latency (wrk, wrk2 and oha's job).

Closed loop by default: -c connections each send the next request as soon as the
answer to the previous one is in (wrk). With --rate N, requests are due at a
constant N per second and each one's latency is measured from when it was due,
so a stalled server shows in the percentiles (wrk2 -R, oha -q): coordinated
omission cannot hide it.

The run lasts -d (default 10s) or until -n requests are answered, whichever
comes first; each request gives up after --timeout. HTTP/1.1 keep-alive, or
HTTP/2 streams with --http2 (TLS with ALPN on https://, h2c prior knowledge on
http://). Several URLs: requests go round-robin over them.

The summary keeps wrk's lines (Requests/sec:, Transfer/sec:, Latency
Distribution); --json prints the run as JSON (latencies in microseconds,
p50 ... p99.99, status codes, errors by kind, a 100 ms timeline); --plot out.png
draws latency over time and the percentile spectrum.

Exit codes: 0 the run finished (even with error answers: see the summary),
1 not one request was answered, 2 bad usage.

Example: backhaul bench -c 50 -d 10s http://127.0.0.1:8080/ ;
backhaul bench --rate 2000 -c 100 -d 30s --plot lat.png http://127.0.0.1:8080/api
"""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """``10``, ``10s``, ``500ms``, ``2m``, ``1h`` -> seconds (wrk's units)."""
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(f"-d {text!r}: give a duration such as 10s, 500ms, 2m")
    value = float(match.group(1))
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
        raise UsageError(f"-H {text!r}: give a header as 'Name: value'")
    if "\r" in value or "\n" in value:
        raise UsageError(f"-H {text!r}: a header value cannot hold a line break")
    return name.strip(), value.strip()


class LiveLine:
    """One live progress line on a terminal (stderr), cleared at the end."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.live import Live

        self.console = console or Console(stderr=True, highlight=False)
        self.live = Live("", console=self.console, auto_refresh=False, transient=True)

    def __enter__(self) -> LiveLine:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def __call__(self, p: Progress) -> None:
        from rich.text import Text

        line = Text.assemble(
            (f"{p.elapsed:6.1f}s ", "bold"),
            f"{p.completed:>10,} answers  ",
            (f"{p.rps:>10,.0f} req/s  ", "cyan"),
            f"p99 {p.p99_us / 1000:8.2f} ms  ",
            f"in flight {p.in_flight:>5}  ",
            (f"errors {p.errors}", "red" if p.errors else "dim"),
        )
        self.live.update(line, refresh=True)


def register(app: typer.Typer) -> None:
    """Add ``backhaul bench`` to the root app."""

    @app.command("bench", help=HELP)
    def bench_cmd(
        urls: list[str] = typer.Argument(..., metavar="URL...", help="http:// or https:// URLs."),
        connections: int = typer.Option(10, "-c", "--connections", help="Connections to keep."),
        duration: str | None = typer.Option(
            None, "-d", "--duration", help="How long: 10s, 500ms, 2m (default 10s)."
        ),
        requests: int | None = typer.Option(
            None, "-n", "--requests", help="Stop after this many requests."
        ),
        rate: float | None = typer.Option(
            None, "-R", "--rate", help="Constant rate, requests per second (all connections)."
        ),
        method: str = typer.Option("GET", "-X", "--method", help="Request method."),
        headers: list[str] = typer.Option([], "-H", "--header", help="'Name: value', repeatable."),
        body: str | None = typer.Option(None, "-b", "--body", help="Request body."),
        body_file: Path | None = typer.Option(
            None, "--body-file", help="Request body from a file."
        ),
        http2: bool = typer.Option(False, "--http2", help="HTTP/2 (ALPN on https, h2c on http)."),
        streams: int = typer.Option(10, "--streams", help="HTTP/2 streams per connection."),
        timeout: str = typer.Option("2s", "--timeout", help="Per-request timeout."),
        insecure: bool = typer.Option(False, "-k", "--insecure", help="Skip TLS verification."),
        cacert: Path | None = typer.Option(None, "--cacert", help="CA bundle for https."),
        threads: int = typer.Option(1, "-t", "--threads", help="Accepted for wrk (one loop)."),
        latency: bool = typer.Option(
            False, "--latency", help="Accepted for wrk; the distribution is always printed."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
        plot: Path | None = typer.Option(None, "--plot", help="Write a PNG plot here."),
    ) -> None:
        if threads < 1:
            raise UsageError(f"-t {threads}: give 1 or more (backhaul bench runs one loop)")
        if threads > 1:
            print(
                f"backhaul bench: -t {threads}: one event loop drives every connection",
                file=sys.stderr,
            )
        if body is not None and body_file is not None:
            raise UsageError("give either --body or --body-file, not both")
        payload = b""
        if body is not None:
            payload = body.encode()
        elif body_file is not None:
            try:
                payload = body_file.read_bytes()
            except OSError as exc:
                raise UsageError(f"--body-file {body_file}: {exc.strerror}") from None
        if cacert is not None and not cacert.is_file():
            raise UsageError(f"--cacert {cacert}: no such file")
        if plot is not None and not plot.parent.is_dir():
            raise UsageError(f"--plot {plot}: directory {plot.parent} does not exist")
        opts = BenchOptions(
            urls=urls,
            connections=connections,
            duration=parse_duration(duration) if duration is not None else None,
            requests=requests,
            rate=rate,
            method=method,
            headers=[_header(h) for h in headers],
            body=payload,
            http2=http2,
            max_streams=streams,
            timeout=parse_duration(timeout),
            insecure=insecure,
            cacert=str(cacert) if cacert else None,
        )
        opts.check()
        if not as_json:
            sys.stdout.write("\n".join(bench_report.render_header(opts)) + "\n")
            sys.stdout.flush()
        if sys.stderr.isatty() and not as_json:
            with LiveLine() as live:
                result = bench(opts, live)
        else:
            result = bench(opts)
        if plot is not None:
            bench_report.render_plot(result, str(plot))
        if as_json:
            sys.stdout.write(json.dumps(bench_report.render_json(result), indent=2) + "\n")
        else:
            sys.stdout.write("\n".join(bench_report.render_text(result, header=False)) + "\n")
        if result.completed == 0:
            raise typer.Exit(1)
