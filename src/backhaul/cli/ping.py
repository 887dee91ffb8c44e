"""``backhaul ping``: ICMP echo (or TCP connect) to one or many targets at once.

Output is shaped like iputils ``ping``: a line per reply, then per target the
``--- X ping statistics ---`` block. Colour only on a terminal.

``--json`` prints one document when all targets are done::

    {"targets": [{
        "target": "server.lab", "address": "203.0.113.2", "family": 4,
        "mode": "icmp" | "tcp", "port": null | 443,
        "transmitted": 10, "received": 9, "duplicates": 0, "late": 0, "errors": 0,
        "loss_percent": 10.0, "time_ms": 9012.3,
        "rtt_ms": {"min": 0.04, "avg": 0.05, "max": 0.07, "mdev": 0.01} | null,
        "events": [{"kind": "reply" | "duplicate" | "late" | "error" | "closed",
                    "seq": 1, "from": "203.0.113.2", "bytes": 64, "ttl": 62,
                    "rtt_ms": 0.051, "message": null}]
    }]}

Exit codes: 0 every target answered at least once, 1 some target never answered, 2 bad
usage or no permission to open an ICMP socket.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from backhaul.errors import UsageError
from backhaul.tools.ping import PingEvent, PingOptions, PingResult, Target, ping, resolve_targets

__all__ = ["format_ms", "register"]


def format_ms(seconds: float) -> str:
    """A reply time the way iputils prints it: 3 significant decimals below 1 ms, fewer above."""
    ms = seconds * 1000.0
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _console() -> Console:
    # colour only on a terminal; when piped, do not squeeze tables into 80 columns
    console = Console(highlight=False, soft_wrap=True)
    return console if console.is_terminal else Console(highlight=False, soft_wrap=True, width=160)


def _header(target: Target, options: PingOptions) -> str:
    shown = escape(target.name)
    if options.tcp_port is not None:
        return f"TCP PING {shown} ({target.address}) port {options.tcp_port}"
    if target.family == 4:
        return f"PING {shown} ({target.address}) {options.size}({options.size + 28}) bytes of data."
    return f"PING {shown} ({target.address}) {options.size} data bytes"


def _event_line(event: PingEvent, options: PingOptions) -> str:
    if event.kind == "error":
        where = f"From {event.source} " if event.source else ""
        label = "icmp_seq" if options.tcp_port is None else "seq"
        return f"[red]{where}{label}={event.seq} {escape(event.message or 'error')}[/red]"
    rtt = f"time={format_ms(event.rtt)} ms" if event.rtt is not None else ""
    if options.tcp_port is not None:
        if event.kind == "closed":
            return (
                f"[yellow]port {options.tcp_port} closed (RST) from {event.source}[/yellow]: "
                f"seq={event.seq} [green]{rtt}[/green]"
            )
        return (
            f"connected to {event.source}:{options.tcp_port}: seq={event.seq} [green]{rtt}[/green]"
        )
    line = f"{event.size} bytes from {event.source}: icmp_seq={event.seq}"
    if event.ttl is not None:
        line += f" ttl={event.ttl}"
    line += f" [green]{rtt}[/green]"
    if event.kind == "duplicate":
        line += " [yellow](DUP!)[/yellow]"
    elif event.kind == "late":
        line += " [yellow](LATE)[/yellow]"
    return line


def _summary(result: PingResult) -> list[str]:
    stats = result.statistics
    parts = [f"{stats.transmitted} packets transmitted", f"{stats.received} received"]
    if stats.duplicates:
        parts.append(f"+{stats.duplicates} duplicates")
    if stats.late:
        parts.append(f"+{stats.late} late")
    if stats.errors:
        parts.append(f"+{stats.errors} errors")
    colour = "green" if stats.loss_percent == 0 else "red" if stats.received == 0 else "yellow"
    parts.append(f"[{colour}]{stats.loss_percent:g}% packet loss[/{colour}]")
    parts.append(f"time {result.elapsed * 1000:.0f}ms")
    lines = [f"--- {escape(result.target.name)} ping statistics ---", ", ".join(parts)]
    if stats.rtt is not None:
        r = stats.rtt
        lines.append(
            "rtt min/avg/max/mdev = "
            f"{r.min * 1000:.3f}/{r.avg * 1000:.3f}/{r.max * 1000:.3f}/{r.mdev * 1000:.3f} ms"
        )
    return lines


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 6)


def result_document(result: PingResult, options: PingOptions) -> dict[str, Any]:
    stats = result.statistics
    return {
        "target": result.target.name,
        "address": result.target.address,
        "family": result.target.family,
        "mode": result.mode,
        "port": options.tcp_port,
        "transmitted": stats.transmitted,
        "received": stats.received,
        "duplicates": stats.duplicates,
        "late": stats.late,
        "errors": stats.errors,
        "loss_percent": round(stats.loss_percent, 3),
        "time_ms": round(result.elapsed * 1000.0, 3),
        "rtt_ms": None
        if stats.rtt is None
        else {
            "min": _ms(stats.rtt.min),
            "avg": _ms(stats.rtt.avg),
            "max": _ms(stats.rtt.max),
            "mdev": _ms(stats.rtt.mdev),
        },
        "events": [
            {
                "kind": e.kind,
                "seq": e.seq,
                "from": e.source,
                "bytes": e.size,
                "ttl": e.ttl,
                "rtt_ms": _ms(e.rtt),
                "message": e.message,
            }
            for e in result.events
        ],
    }


async def _run(
    names: list[str], family: int | None, options: PingOptions, as_json: bool, quiet: bool
) -> list[PingResult]:
    console = _console()
    targets = await resolve_targets(names, family)
    options.validate([t.family for t in targets])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:

        def on_ready() -> None:
            if not as_json:
                for target in targets:
                    console.print(_header(target, options))

        def on_event(event: PingEvent) -> None:
            if as_json or quiet:
                return
            # several targets: name the target where the line does not already show it
            named = event.kind != "error" and event.source == event.target.address
            prefix = ""
            if len(targets) > 1 and not named:
                prefix = f"[dim]{escape(event.target.name)}:[/dim] "
            console.print(prefix + _event_line(event, options))

        return await ping(targets, options, on_event, stop, on_ready)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)


def ping_command(
    targets: list[str] = typer.Argument(
        ..., metavar="TARGET...", help="Addresses or host names; several are pinged at once."
    ),
    count: int | None = typer.Option(
        None,
        "-c",
        "--count",
        metavar="N",
        help="Stop after this many probes per target (default: until Ctrl-C).",
    ),
    interval: float = typer.Option(
        1.0, "-i", "--interval", metavar="SECONDS", help="Seconds between probes."
    ),
    size: int = typer.Option(
        56, "-s", "--size", metavar="BYTES", help="ICMP payload bytes (as iputils' -s)."
    ),
    ttl: int | None = typer.Option(
        None, "-t", "--ttl", metavar="TTL", help="IP time to live / hop limit."
    ),
    timeout: float = typer.Option(
        2.0,
        "-W",
        "--timeout",
        metavar="SECONDS",
        help="Seconds to wait for each reply; a reply after that is counted as late.",
    ),
    dont_fragment: bool = typer.Option(
        False, "--df", help="Set Don't Fragment (IPv6: never fragment locally)."
    ),
    ipv4: bool = typer.Option(False, "-4", help="Resolve names to IPv4 only."),
    ipv6: bool = typer.Option(False, "-6", help="Resolve names to IPv6 only."),
    tcp: int | None = typer.Option(
        None,
        "--tcp",
        metavar="PORT",
        help="TCP connect ping: time to SYN-ACK (RST counts as 'closed'). Needs no privilege.",
    ),
    socket_kind: str = typer.Option(
        "auto",
        "--socket",
        metavar="KIND",
        help="ICMP socket: raw (root/CAP_NET_RAW), dgram (ping_group_range) or auto.",
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only the summary."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help='Print one JSON document when all targets are done: {"targets": [{"target",'
        ' "address", "transmitted", "received", "loss_percent", "rtt_ms": {"min", "avg", "max",'
        ' "mdev"}, "events": [...], ...}]}.',
    ),
) -> None:
    """Ping TARGETs with ICMP echo (or --tcp PORT) and print iputils-style statistics.

    Exit status: 0 if every target answered, 1 if one did not, 2 for bad usage.
    """
    if ipv4 and ipv6:
        raise UsageError("choose -4 or -6, not both")
    if socket_kind not in ("auto", "raw", "dgram"):
        raise UsageError(f"--socket {socket_kind!r}: use auto, raw or dgram")
    family = 4 if ipv4 else 6 if ipv6 else None
    options = PingOptions(
        count=count,
        interval=interval,
        size=size,
        ttl=ttl,
        timeout=timeout,
        dont_fragment=dont_fragment,
        socket_kind=socket_kind,  # type: ignore[arg-type]
        tcp_port=tcp,
    )
    options.validate()
    results = asyncio.run(_run(targets, family, options, as_json, quiet))
    if as_json:
        document = {"targets": [result_document(r, options) for r in results]}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        console = _console()
        for result in results:
            console.print()
            for line in _summary(result):
                console.print(line)
    if not all(r.answered for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(
        "ping",
        help="ICMP echo (or TCP connect) to one or many targets, with iputils-style statistics.",
        no_args_is_help=True,
    )(ping_command)
