"""``backhaul trace``: traceroute (UDP, ICMP echo or TCP SYN probes) and mtr's report.

Human output is shaped like traceroute's (``*`` for a probe nothing answered, ``!H``-style
marks for unreachables); ``--report N`` prints mtr's report table. Colour only on a terminal.

``--json`` shapes::

    trace:  {"target": "server.lab", "address": "203.0.113.2", "family": 4,
             "mode": "udp" | "icmp" | "tcp", "paris": false, "port": 33434,
             "first_ttl": 1, "max_hops": 30, "probes_per_hop": 3, "reached": true,
             "hops": [{"ttl": 1, "probes": [{"address": "192.0.2.1" | null,
                       "name": "router1.lab" | null, "rtt_ms": 0.05 | null,
                       "kind": "time-exceeded" | "reply" | "unreachable" | "open" | "closed"
                               | null,
                       "reached": false, "annotation": "" | "!H" | "!N" | "!P" | "!X" | "!F"}]}]}
    report: {"target": ..., "address": ..., "family": 4, "mode": "udp", "paris": false,
             "rounds": 10, "reached": true,
             "hops": [{"ttl": 1, "address": "192.0.2.1" | null, "name": null,
                       "addresses": ["192.0.2.1"], "sent": 10, "received": 10,
                       "loss_percent": 0.0, "last_ms": 0.05, "avg_ms": 0.05, "best_ms": 0.04,
                       "worst_ms": 0.07, "stdev_ms": 0.01}]}

Exit codes: 0 the target answered, 1 it did not, 2 bad usage or no privilege.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backhaul.errors import UsageError
from backhaul.tools.ping import Target, resolve_targets
from backhaul.tools.trace import Hop, ReportResult, TraceOptions, TraceResult, report, trace

__all__ = ["register"]

T = TypeVar("T")


def _console() -> Console:
    # colour only on a terminal; when piped, do not squeeze tables into 80 columns
    console = Console(highlight=False, soft_wrap=True)
    return console if console.is_terminal else Console(highlight=False, soft_wrap=True, width=160)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 6)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    ms = value * 1000.0
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.3f}"


def _host(address: str, names: dict[str, str | None]) -> str:
    name = names.get(address)
    return f"{escape(name)} ({address})" if name else address


def hop_line(hop: Hop) -> str:
    """`` 2  router2.lab (198.51.100.2)  0.061 ms  0.048 ms  *`` as traceroute prints it."""
    parts = [f"{hop.ttl:2d}"]
    shown: str | None = None
    for probe in hop.probes:
        if probe.address is None:
            parts.append("[red]*[/red]" if probe.annotation == "" else probe.annotation)
            continue
        if probe.address != shown:
            parts.append(f"[bold]{_host(probe.address, hop.names)}[/bold]")
            shown = probe.address
        text = f"{_fmt(probe.rtt)} ms" if probe.rtt is not None else ""
        if probe.annotation:
            text += f" [red]{probe.annotation}[/red]"
        elif probe.kind in ("open", "closed"):
            text += f" [dim]\\[{probe.kind}][/dim]"
        parts.append(text.strip())
    return "  ".join(parts)


def trace_document(result: TraceResult) -> dict[str, Any]:
    o = result.options
    return {
        "target": result.target.name,
        "address": result.target.address,
        "family": result.target.family,
        "mode": o.mode,
        "paris": o.paris,
        "port": o.dest_port,
        "first_ttl": o.first_ttl,
        "max_hops": o.max_hops,
        "probes_per_hop": o.probes,
        "reached": result.reached,
        "hops": [
            {
                "ttl": hop.ttl,
                "probes": [
                    {
                        "address": p.address,
                        "name": hop.names.get(p.address) if p.address else None,
                        "rtt_ms": _ms(p.rtt),
                        "kind": p.kind,
                        "reached": p.reached,
                        "annotation": p.annotation,
                    }
                    for p in hop.probes
                ],
            }
            for hop in result.hops
        ],
    }


def report_document(result: ReportResult) -> dict[str, Any]:
    o = result.options
    return {
        "target": result.target.name,
        "address": result.target.address,
        "family": result.target.family,
        "mode": o.mode,
        "paris": o.paris,
        "rounds": result.rounds,
        "reached": result.reached,
        "hops": [
            {
                "ttl": h.ttl,
                "address": h.address,
                "name": result.names.get(h.address) if h.address else None,
                "addresses": list(h.addresses),
                "sent": h.sent,
                "received": h.received,
                "loss_percent": round(h.loss_percent, 3),
                "last_ms": _ms(h.last),
                "avg_ms": _ms(h.avg),
                "best_ms": _ms(h.best),
                "worst_ms": _ms(h.worst),
                "stdev_ms": _ms(h.stdev),
            }
            for h in result.hops
        ],
    }


def report_table(result: ReportResult) -> Table:
    table = Table(
        title=f"{escape(result.target.name)} ({result.target.address}): "
        f"{result.rounds} rounds of {result.options.mode} probes"
        + (", paris" if result.options.paris else ""),
        title_justify="left",
        box=None,
        header_style="bold",
    )
    table.add_column("Hop", justify="right")
    table.add_column(f"HOST: {escape(socket.gethostname())}")
    for column in ("Loss%", "Snt", "Last", "Avg", "Best", "Wrst", "StDev"):
        table.add_column(column, justify="right")
    for h in result.hops:
        host = _host(h.address, result.names) if h.address else "???"
        if len(h.addresses) > 1:
            host += f" [dim](+{len(h.addresses) - 1} more)[/dim]"
        loss_style = "green" if h.loss_percent == 0 else "red" if h.received == 0 else "yellow"
        table.add_row(
            f"{h.ttl}.|--",
            host,
            f"[{loss_style}]{h.loss_percent:.1f}%[/{loss_style}]",
            str(h.sent),
            _fmt(h.last),
            _fmt(h.avg),
            _fmt(h.best),
            _fmt(h.worst),
            _fmt(h.stdev),
        )
    return table


async def _with_stop(run: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        return await run(stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def trace_command(
    target: str = typer.Argument(..., help="Address or host name to trace the path to."),
    icmp_mode: bool = typer.Option(False, "--icmp", "-I", help="ICMP echo probes."),
    tcp: int | None = typer.Option(
        None, "--tcp", "-T", metavar="PORT", help="TCP SYN probes to PORT."
    ),
    port: int | None = typer.Option(
        None, "-p", "--port", help="UDP: first destination port (default 33434)."
    ),
    max_hops: int = typer.Option(30, "-m", "--max-hops", metavar="N", help="Largest TTL to try."),
    queries: int = typer.Option(3, "-q", "--queries", metavar="N", help="Probes per hop."),
    first_ttl: int = typer.Option(1, "-f", "--first-ttl", metavar="TTL", help="TTL to start at."),
    wait: float = typer.Option(
        2.0, "-w", "--wait", metavar="SECONDS", help="Seconds to wait for a hop's answers."
    ),
    paris: bool = typer.Option(
        False, "--paris", help="Keep the flow identifier constant (load-balanced paths)."
    ),
    resolve: bool = typer.Option(
        False, "--resolve", "-r", help="Show reverse names (asks the system resolver)."
    ),
    ipv4: bool = typer.Option(False, "-4", help="Resolve the target to IPv4."),
    ipv6: bool = typer.Option(False, "-6", help="Resolve the target to IPv6."),
    rounds: int | None = typer.Option(
        None, "--report", metavar="N", help="Run N rounds and print mtr's per-hop report."
    ),
    interval: float = typer.Option(
        1.0, "-i", "--interval", metavar="SECONDS", help="Report mode: seconds between rounds."
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help='Print JSON: {"target", "address", "reached", "hops": [{"ttl", "probes":'
        ' [{"address", "rtt_ms", "kind", "annotation"}]}], ...}; with --report, hops are'
        ' [{"ttl", "address", "sent", "received", "loss_percent", "avg_ms", ...}].',
    ),
) -> None:
    """Show the routers on the path to TARGET (UDP probes unless --icmp or --tcp PORT).

    Exit status: 0 if the target answered, 1 if not, 2 for bad usage.
    """
    if icmp_mode and tcp is not None:
        raise UsageError("choose --icmp or --tcp PORT, not both")
    if ipv4 and ipv6:
        raise UsageError("choose -4 or -6, not both")
    mode = "icmp" if icmp_mode else "tcp" if tcp is not None else "udp"
    if port is not None and mode != "udp":
        raise UsageError("--port sets the UDP base port; for TCP give the port to --tcp")
    options = TraceOptions(
        mode=mode,  # type: ignore[arg-type]
        port=tcp if tcp is not None else port,
        first_ttl=first_ttl,
        max_hops=max_hops,
        probes=queries,
        wait=wait,
        paris=paris,
        resolve=resolve,
    )
    options.validate()
    if rounds is not None and not 1 <= rounds <= 10_000:
        raise UsageError(f"report rounds {rounds} is not within 1-10000")
    family = 4 if ipv4 else 6 if ipv6 else None
    console = _console()

    async def main(stop: asyncio.Event) -> TraceResult | ReportResult:
        resolved: Target = (await resolve_targets([target], family))[0]
        if rounds is not None:
            if not as_json:
                console.print(f"[dim]report on {escape(target)} ({resolved.address}) ...[/dim]")
            return await report(resolved, options, rounds, interval, stop=stop)
        if not as_json:
            flavour = f"{mode} probes" + (", paris" if paris else "")
            console.print(
                f"trace to {escape(target)} ({resolved.address}), {max_hops} hops max, {flavour}"
            )

        def on_hop(hop: Hop) -> None:
            if not as_json:
                console.print(hop_line(hop))

        return await trace(resolved, options, on_hop, stop)

    result = asyncio.run(_with_stop(main))
    if isinstance(result, ReportResult):
        if as_json:
            sys.stdout.write(json.dumps(report_document(result), indent=2) + "\n")
        else:
            console.print(report_table(result))
    elif as_json:
        sys.stdout.write(json.dumps(trace_document(result), indent=2) + "\n")
    if not result.reached:
        if not as_json:
            print(f"backhaul: {target} did not answer", file=sys.stderr)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(
        "trace",
        help="Trace the route to a host (UDP, ICMP or TCP probes; Paris mode; mtr report).",
        no_args_is_help=True,
    )(trace_command)
