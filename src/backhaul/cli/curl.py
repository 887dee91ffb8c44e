"""``backhaul curl``: curl's options on :mod:`backhaul.tools.client`, with httpstat's picture."""

from __future__ import annotations

import errno
import io
import json
import sys
from pathlib import Path
from typing import Any, BinaryIO, cast

import typer

from backhaul.errors import UsageError
from backhaul.tools import curl_report
from backhaul.tools.client import (
    BoundedBuffer,
    CurlFailure,
    Exchange,
    RequestSpec,
    Transfer,
    fetch,
    read_data_arg,
)

__all__ = ["TerminalGuard", "register"]

HELP = """Make an HTTP request the way curl does, and show where the time went.

curl's options: -X, -H (repeat; 'Name:' removes a default header), -A, -e,
-b 'name=value', -d /
--data-binary (@file, @- for stdin; several -d are joined with &), --json DATA
(curl's: sends DATA as application/json), -u user:pass, -L (--max-redirs,
default 50), -k, --cacert, --cert/--key, --resolve host:port:addr,
--connect-to host:port:host2:port2, --dns-servers addr[:port],..., -I, -i, -o,
-s/-S, -v, --http1.1, --http2 (ALPN on https, the default there),
--http2-prior-knowledge (h2c), -m/--max-time, --connect-timeout, -f, -w.

Phases (curl -w names): time_namelookup, time_connect, time_appconnect,
time_pretransfer, time_starttransfer, time_total, time_redirect, plus http_code,
http_version, remote_ip, remote_port, local_ip, local_port, size_download,
size_header, speed_download, num_redirects, num_connects, url_effective,
content_type, ssl_verify_result, exitcode, errormsg, %{json}, %{header_json},
%header{name}. On a terminal (or with --timings) httpstat's picture of DNS,
TCP, TLS, server processing and transfer goes to stderr; with -L every hop is
listed with its timings.

--report-json prints one JSON document: every hop (status, headers, remote and
local address, TLS version/cipher/ALPN/certificate, cumulative times and the
phase segments that add up to the total), curl's -w variables and the body.

Exit codes are curl's: 0 ok, 1 unsupported protocol, 2 bad usage, 3 bad URL,
6 could not resolve host, 7 could not connect, 22 HTTP >= 400 with -f,
23 write error, 26 read error (-d @file), 28 timeout, 35 TLS handshake failed,
47 too many redirects, 52 empty reply, 55 send error, 56 receive error,
58 bad local certificate, 60 peer certificate not trusted.
"""


def _pair(text: str, what: str, parts: int) -> list[str]:
    """host:port:addr style values; an IPv6 address may be in brackets."""
    out: list[str] = []
    rest = text
    for i in range(parts):
        if i == parts - 1:
            out.append(rest)
            break
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                raise UsageError(f"{what} {text!r}: unclosed [")
            out.append(rest[1:end])
            rest = rest[end + 1 :]
            if rest.startswith(":"):
                rest = rest[1:]
            continue
        head, sep, rest = rest.partition(":")
        if not sep:
            raise UsageError(f"{what} {text!r}: expected {parts} parts separated by ':'")
        out.append(head)
    last = out[-1]
    if last.startswith("[") and last.endswith("]"):
        out[-1] = last[1:-1]
    return out


def _port(text: str, what: str, allow_empty: bool = False) -> int:
    if allow_empty and text == "":
        return 0
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"{what}: {text!r} is not a port number (1-65535)")
    return int(text)


def _header(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n"):
        raise UsageError(f"-H {text!r}: give a header as 'Name: value' ('Name:' removes it)")
    if "\r" in value or "\n" in value:
        raise UsageError(f"-H {text!r}: a header value cannot hold a line break")
    value = value.strip()
    return name, (value if value else None)


def _dns_servers(text: str) -> list[tuple[str, int]]:
    servers = []
    for item in text.split(","):
        item = item.strip()
        if item.startswith("["):
            address, _, port = item[1:].partition("]")
            port = port.lstrip(":")
        elif item.count(":") == 1:
            address, _, port = item.partition(":")
        else:
            address, port = item, ""
        servers.append((address, _port(port, "--dns-servers") if port else 53))
    return servers


class TerminalGuard(io.RawIOBase):
    """stdout on a terminal: a body with NUL bytes in it is not written there (it would
    garble the terminal), as curl refuses; ``-o -`` writes it anyway."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self.out = out

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if b"\0" in bytes(data):
            raise OSError(
                errno.EIO,
                'Binary output can mess up your terminal. Use "--output -" to tell backhaul '
                'curl to output it to your terminal anyway, or consider "--output <FILE>" to '
                "save to a file",
            )
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


class _Printer:
    """-v lines on stderr: '*' information, '>' request head, '<' response head."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def info(self, text: str) -> None:
        if self.verbose:
            sys.stderr.write(f"* {text}\n")
            sys.stderr.flush()

    def request_head(self, exchange: Exchange) -> None:
        if not self.verbose:
            return
        target = exchange.url.split("://", 1)[1]
        target = "/" + target.split("/", 1)[1] if "/" in target else "/"
        lines = [f"> {exchange.method} {target} {exchange.http_version or 'HTTP/1.1'}"]
        lines += [f"> {k}: {v}" for k, v in exchange.request_headers]
        sys.stderr.write("\n".join(lines) + "\n>\n")

    def response_head(self, exchange: Exchange) -> None:
        if not self.verbose:
            return
        lines = [f"< {exchange.http_version} {exchange.status} {exchange.reason}".rstrip()]
        lines += [f"< {k}: {v}" for k, v in exchange.headers]
        sys.stderr.write("\n".join(lines) + "\n<\n")
        sys.stderr.flush()


def _head_text(exchange: Exchange) -> str:
    lines = [f"{exchange.http_version} {exchange.status} {exchange.reason}".rstrip()]
    lines += [f"{k}: {v}" for k, v in exchange.headers]
    return "\r\n".join(lines) + "\r\n\r\n"


def _hop_line(number: int, exchange: Exchange) -> str:
    seg = exchange.phases.segments()
    parts = " ".join(f"{k} {v * 1000:.1f}ms" for k, v in seg.items())
    reused = " (reused connection)" if exchange.reused else ""
    return (
        f"hop {number}: {exchange.status} {exchange.method} {exchange.url}{reused}\n"
        f"       {parts} = total {exchange.phases.total * 1000:.1f}ms"
    )


def _show_timings(transfer: Transfer) -> None:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    if len(transfer.exchanges) > 1:
        for number, exchange in enumerate(transfer.exchanges, 1):
            console.print(_hop_line(number, exchange), style="dim", soft_wrap=True)
    last = transfer.last
    console.print()
    lines = curl_report.picture(last, last.url.startswith("https"))
    console.print(lines[0], style="bold", soft_wrap=True)
    console.print(lines[1], style="cyan", soft_wrap=True)
    for line in lines[2:]:
        console.print(line, soft_wrap=True)
    if len(transfer.exchanges) == 1:  # the six phases, request sending on its own
        parts = "  ".join(f"{k} {v * 1000:.1f}ms" for k, v in last.phases.segments().items())
        console.print(
            f"phases: {parts}  = total {last.phases.total * 1000:.1f}ms",
            style="dim",
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add ``backhaul curl`` to the root app."""

    @app.command("curl", help=HELP, context_settings={"help_option_names": ["--help"]})
    def curl_cmd(
        url: str = typer.Argument(..., help="http:// or https:// URL."),
        request: str | None = typer.Option(None, "-X", "--request", help="Method."),
        header: list[str] = typer.Option([], "-H", "--header", help="'Name: value'."),
        data: list[str] = typer.Option([], "-d", "--data", help="Body (POST); @file."),
        data_binary: list[str] = typer.Option([], "--data-binary", help="Body as is; @file."),
        data_raw: list[str] = typer.Option([], "--data-raw", help="Body, no @ meaning."),
        json_data: str | None = typer.Option(None, "--json", help="JSON body (curl's)."),
        user: str | None = typer.Option(None, "-u", "--user", help="user:password (Basic)."),
        user_agent: str | None = typer.Option(None, "-A", "--user-agent", help="User-Agent."),
        referer: str | None = typer.Option(None, "-e", "--referer", help="Referer."),
        cookie: list[str] = typer.Option([], "-b", "--cookie", help="'name=value; ...'."),
        location: bool = typer.Option(False, "-L", "--location", help="Follow redirects."),
        max_redirs: int = typer.Option(50, "--max-redirs", help="Redirect limit with -L."),
        insecure: bool = typer.Option(False, "-k", "--insecure", help="Skip TLS checks."),
        cacert: str | None = typer.Option(None, "--cacert", help="CA bundle (PEM)."),
        cert: str | None = typer.Option(None, "-E", "--cert", help="Client certificate."),
        key: str | None = typer.Option(None, "--key", help="Client key."),
        resolve: list[str] = typer.Option([], "--resolve", help="host:port:addr."),
        connect_to: list[str] = typer.Option([], "--connect-to", help="h1:p1:h2:p2."),
        dns_servers: str | None = typer.Option(None, "--dns-servers", help="DNS servers."),
        head: bool = typer.Option(False, "-I", "--head", help="HEAD; show headers."),
        include: bool = typer.Option(False, "-i", "--include", help="Headers in output."),
        output: str | None = typer.Option(None, "-o", "--output", help="Write body here."),
        silent: bool = typer.Option(False, "-s", "--silent", help="No errors, no picture."),
        show_error: bool = typer.Option(False, "-S", "--show-error", help="Errors with -s."),
        verbose: bool = typer.Option(False, "-v", "--verbose", help="Heads and TLS."),
        http1_1: bool = typer.Option(False, "--http1.1", help="HTTP/1.1 only."),
        http2: bool = typer.Option(False, "--http2", help="HTTP/2 by ALPN (default)."),
        http2_prior: bool = typer.Option(
            False, "--http2-prior-knowledge", help="HTTP/2 without ALPN/upgrade (h2c)."
        ),
        max_time: float | None = typer.Option(None, "-m", "--max-time", help="Seconds."),
        connect_timeout: float | None = typer.Option(None, "--connect-timeout", help="Seconds."),
        fail: bool = typer.Option(False, "-f", "--fail", help="Exit 22 on HTTP >= 400."),
        write_out: str | None = typer.Option(None, "-w", "--write-out", help="Template."),
        report_json: bool = typer.Option(False, "--report-json", help="One JSON report."),
        timings: bool | None = typer.Option(
            None, "--timings/--no-timings", help="The phase picture (default: on a terminal)."
        ),
    ) -> None:
        if sum((http1_1, http2, http2_prior)) > 1:
            raise UsageError("give one of --http1.1, --http2, --http2-prior-knowledge")
        if key is not None and cert is None:
            raise UsageError("--key needs --cert")
        if max_redirs < 0 or max_redirs > 1000:
            raise UsageError("--max-redirs: give 0 to 1000")
        for value, what in ((max_time, "-m"), (connect_timeout, "--connect-timeout")):
            if value is not None and not 0 < value <= 86400:
                raise UsageError(f"{what} {value}: give seconds above 0")
        adds: list[tuple[str, str]] = []
        removes: set[str] = set()
        for line in header:
            name, header_value = _header(line)
            if header_value is None:
                removes.add(name.lower())
            else:
                adds.append((name, header_value))
        for extra_name, extra_value, present in (
            ("User-Agent", user_agent, user_agent is not None),
            ("Referer", referer, referer is not None),
            ("Cookie", "; ".join(cookie), bool(cookie)),
        ):
            if not present:
                continue
            if any(c in str(extra_value) for c in "\r\n"):
                raise UsageError(f"{extra_name}: a header value cannot hold a line break")
            if extra_name == "Cookie" and any("=" not in part for part in cookie):
                raise UsageError("-b: give cookies as 'name=value' (cookie files are not read)")
            removes.add(extra_name.lower())
            adds.append((extra_name, str(extra_value)))
        body: bytes | None = None
        if data or data_binary or data_raw:
            pieces = [read_data_arg(d, binary=False) for d in data]
            pieces += [read_data_arg(d, binary=True) for d in data_binary]
            pieces += [d.encode() for d in data_raw]
            body = b"&".join(pieces)
        if json_data is not None:
            if body is not None:
                raise UsageError("--json cannot be combined with -d")
            body = read_data_arg(json_data, binary=True)
            given = {n.lower() for n, _ in adds}
            if "content-type" not in given:
                adds.append(("Content-Type", "application/json"))
            if "accept" not in given:
                adds.append(("Accept", "application/json"))
                removes.add("accept")
        pins: dict[tuple[str, int], str] = {}
        for item in resolve:
            host, port, address = _pair(item, "--resolve", 3)
            pins[(host.lower(), _port(port, "--resolve", allow_empty=host == "*"))] = address
        routes: dict[tuple[str, int], tuple[str, int]] = {}
        for item in connect_to:
            h1, p1, h2, p2 = _pair(item, "--connect-to", 4)
            routes[(h1.lower(), _port(p1, "--connect-to", True))] = (
                h2,
                _port(p2, "--connect-to", True),
            )
        spec = RequestSpec(
            url=url if "://" in url else f"http://{url}",
            method=request.upper() if request else None,
            headers=adds,
            remove_headers=removes,
            body=body,
            user=user,
            follow=location,
            max_redirects=max_redirs,
            insecure=insecure,
            cacert=cacert,
            cert=cert,
            key=key,
            resolve=pins,
            connect_to=routes,
            dns_servers=_dns_servers(dns_servers) if dns_servers else [],
            head=head,
            http="1.1" if http1_1 else ("2-prior" if http2_prior else "2"),
            max_time=max_time,
            connect_timeout=connect_timeout,
            fail=fail,
        )
        if cacert is not None and not Path(cacert).is_file():
            raise UsageError(f"--cacert {cacert}: no such file")
        printer = _Printer(verbose)
        sink: BinaryIO | None
        captured = None
        if report_json:
            captured = BoundedBuffer()
            sink = captured
        elif output is not None and output != "-":
            try:
                sink = open(output, "wb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise CurlFailure(23, f"Failed to open {output}: {exc.strerror}") from None
        elif output is None and sys.stdout.isatty():
            sink = cast(BinaryIO, TerminalGuard(sys.stdout.buffer))
        else:
            sink = sys.stdout.buffer
        show_heads = head or include
        shown_heads: list[Exchange] = []

        def on_response_head(exchange: Exchange) -> None:
            printer.response_head(exchange)
            if show_heads and not report_json:
                shown_heads.append(exchange)
                sys.stdout.buffer.write(_head_text(exchange).encode("latin-1"))
                sys.stdout.flush()

        transfer: Transfer | None = None
        failure: CurlFailure | None = None
        try:
            transfer = fetch(
                spec,
                None if head else sink,
                on_info=printer.info,
                on_request_head=printer.request_head,
                on_response_head=on_response_head,
            )
        except CurlFailure as exc:
            failure = exc
            if exc.exchanges and exc.exchanges[-1].status:
                transfer = Transfer(exc.exchanges)
        finally:
            if isinstance(sink, TerminalGuard):
                sink.flush()
            elif sink is not None and sink is not sys.stdout.buffer and not report_json:
                sink.close()
        code = failure.exit_code if failure else 0
        message = failure.message if failure else ""
        if report_json:
            raw = captured.getvalue() if captured is not None else b""
            try:
                body_text: str | None = raw.decode("utf-8") if len(raw) <= 1 << 20 else None
            except UnicodeDecodeError:
                body_text = None
            if output is not None and output != "-":
                Path(output).write_bytes(raw)
            doc = curl_report.report_json(transfer, code, message, body_text)
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        if write_out is not None:
            template = write_out
            if template.startswith("@"):
                try:
                    template = Path(template[1:]).read_text()
                except OSError as exc:
                    raise UsageError(f"-w {write_out}: {exc.strerror}") from None
            text_out, warnings = curl_report.write_out(template, transfer, code, message)
            for warning in warnings:
                sys.stderr.write(f"backhaul: warning: {warning}\n")
            sys.stdout.write(text_out)
            sys.stdout.flush()
        want_picture = timings if timings is not None else (sys.stdout.isatty() and not silent)
        if want_picture and transfer is not None and failure is None and not report_json:
            sys.stdout.flush()
            _show_timings(transfer)
        if failure is not None:
            if (silent and not show_error) or report_json:
                raise typer.Exit(code)
            raise failure
