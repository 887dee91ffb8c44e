"""``backhaul dig``: dig's command line and output on :mod:`backhaul.tools.dig`."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from backhaul.errors import NoAnswer
from backhaul.tools import dig as driver

HELP = """Query DNS servers with dig's conventions (dnspython underneath).

Words go in any order, as in dig: @server (default: the nameservers of
/etc/resolv.conf), a name, a type (A, AAAA, MX, TXT, SRV, PTR, NS, SOA, CAA,
TYPE65 ...), a class (IN, CH, HS), -p PORT, -x ADDRESS (reverse lookup),
-t TYPE, -c CLASS, -q NAME, -4, -6, -b SOURCE[#PORT]. Options: +short,
+tcp, +ignore, +[no]recurse, +dnssec, +[no]adflag, +[no]cdflag,
+bufsize=N, +[no]edns[=N], +time=SECONDS, +tries=N, +retry=N, +trace,
+[no]all, +[no]cmd, +[no]comments, +[no]question, +[no]answer,
+[no]authority, +[no]additional, +[no]stats. Unique prefixes work
(+norec). Options before the first name apply to every query.

+trace walks from the root: the root servers come from @server (asked for
". NS") or from --root-hints FILE (named.root format); every query uses -p.

Exit codes: 0 every query got records in its answer section; 1 no reply,
or NXDOMAIN, NODATA, SERVFAIL, REFUSED (output is still printed); 2 bad
usage (unknown type, bad address, unknown option).

JSON (--json): per query, the RFC 8427 pair {"queryMessage": {...},
"responseMessage": {...}} plus "server", "serverName", "port",
"transport" (UDP or TCP), "queryTimeMs", "msgSize" and "answered". A
message has ID, QR, Opcode, AA, TC, RD, RA, AD, CD, RCODE (flags 0/1),
QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT, QNAME, QTYPE, QTYPEname, QCLASS,
QCLASSname, questionRRs, answerRRs, authorityRRs, additionalRRs,
messageOctetsHEX, dateString, dateSeconds; a record has NAME, TYPE,
TYPEname, CLASS, CLASSname, TTL, RDLENGTH, RDATAHEX and rdata<TYPE> (e.g.
rdataA, rdataMX) in presentation format. With +trace: {"trace": [pair,
...], "rootHints" (with --root-hints), "answered", "error" (null, or why
the walk stopped)}. Several names: a JSON array of these.

Examples: backhaul dig @127.0.0.1 -p 5353 web.example.internal A +short;
backhaul dig -x 10.0.0.1 @127.0.0.1; backhaul dig +trace --root-hints
hints.zone -p 5353 www.example.test
"""

_STYLES = {
    "NOERROR": "bold green",
    "NXDOMAIN": "bold red",
    "SERVFAIL": "bold red",
    "REFUSED": "bold red",
}


_RECORD = re.compile(r"^(\S+)\s+\d+\s+\S+\s+(\S+)")


def _styled(line: str) -> Text:
    """Colour for a terminal: comments dim, section titles bold, record owner and type."""
    line = line.expandtabs(8)  # one Text, so the columns stay where dig puts them
    text = Text(line)
    if line.startswith(";; ->>HEADER<<-"):
        text.stylize("dim")
        for status, style in _STYLES.items():
            text.highlight_words([f"status: {status}"], style=style)
    elif line.startswith(";;") and line.endswith("SECTION:"):
        text.stylize("bold")
    elif line.startswith(";"):
        text.stylize("dim")
    else:
        match = _RECORD.match(line)
        if match is not None:
            text.stylize("bold cyan", *match.span(1))
            text.stylize("magenta", *match.span(2))
    return text


class _Printer:
    def __init__(self) -> None:
        self.console: Console | None = Console(highlight=False) if sys.stdout.isatty() else None

    def lines(self, lines: list[str]) -> None:
        if self.console is None:
            if lines:
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
            return
        for line in lines:
            self.console.print(_styled(line), soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``backhaul dig`` to the root app."""

    @app.command(
        "dig",
        help=HELP,
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": ["--help"],
        },
    )
    def dig_cmd(
        ctx: typer.Context,
        words: list[str] | None = typer.Argument(
            None,
            metavar="[@server] [name] [type] [class] [-p port] [-x addr] [+opt]...",
            help="dig's words, in any order (see above).",
            show_default=False,
        ),
        as_json: bool = typer.Option(False, "--json", help="Print RFC 8427 JSON (see above)."),
        root_hints: str | None = typer.Option(
            None,
            "--root-hints",
            metavar="FILE",
            help="Root hints file for +trace (named.root format).",
        ),
        resolv_conf: str = typer.Option(
            driver.DEFAULT_RESOLV_CONF,
            "--resolv-conf",
            metavar="FILE",
            help="Where to find nameservers when no @server is given.",
        ),
    ) -> None:
        try:
            request = driver.parse_args(list(words or []) + list(ctx.args))
        except driver.HelpRequested:
            typer.echo(ctx.get_help())
            raise typer.Exit(0) from None
        request.root_hints = root_hints
        request.resolv_conf = resolv_conf
        if not request.servers:
            driver.system_nameservers(resolv_conf)  # a missing --resolv-conf fails before output
        for warning in request.warnings:
            print(warning, file=sys.stderr)
        first = request.lookups[0].options
        printer = _Printer()
        if not as_json and first.cmd and not first.short:
            printer.lines(driver.banner(request))
        documents: list[dict[str, Any]] = []
        answered = True
        errors: list[str] = []
        for result in driver.run(request):
            answered = answered and result.answered
            if result.error is not None:
                errors.append(result.error)
            if as_json:
                documents.append(driver.render_json(result))
            else:
                printer.lines(driver.render_text(result))
        if as_json:
            shown: Any = documents[0] if len(documents) == 1 else documents
            sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        if errors:
            raise NoAnswer(errors[0])
        if not answered:
            raise typer.Exit(1)
