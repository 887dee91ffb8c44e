"""``backhaul capture``: read a pcap/pcapng file (``-r``) or capture live (``-i``), and
summarise what the packets say.

Summaries (any number at once; the default is the protocol hierarchy and the TCP
conversations): ``--conversations tcp|udp`` (as ``tshark -z conv,tcp``, with the same
counts), ``--endpoints ip|tcp|udp``, ``--hierarchy``, ``--flows`` (retransmissions and RTT
per TCP conversation), ``--http``, ``--dns``, ``--follow tcp N``. A filter in tcpdump's
syntax may follow the options. ``--json`` prints one document; its keys are those of
:func:`backhaul.proto.capture_report.summarise` (``tcp_conversations`` ...), plus
``capture`` for a live capture.

Exit codes: 0 done, 2 bad usage or a capture file that cannot be read (the message names
the packet number where it broke).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from backhaul.errors import UsageError
from backhaul.proto.capture_report import ReportRequest
from backhaul.tools.capture import capture_live, summarise_file

__all__ = ["register"]

PROGRESS_MIN_BYTES = 16 * 1024 * 1024


def _console() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    return console if console.is_terminal else Console(highlight=False, soft_wrap=True, width=200)


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _conversation_table(kind: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{kind.upper()} Conversations", title_justify="left", box=None)
    for name in ("Address A", "Port A", "Address B", "Port B"):
        table.add_column(name, justify="right" if "Port" in name else "left")
    for name in ("A→B frames", "A→B bytes", "B→A frames", "B→A bytes", "frames", "bytes"):
        table.add_column(name, justify="right")
    table.add_column("rel start", justify="right")
    table.add_column("duration", justify="right")
    for r in rows:
        table.add_row(
            r["address_a"], str(r["port_a"]), r["address_b"], str(r["port_b"]),
            str(r["frames_a_to_b"]), _size(r["bytes_a_to_b"]),
            str(r["frames_b_to_a"]), _size(r["bytes_b_to_a"]),
            str(r["frames"]), _size(r["bytes"]),
            f"{r['relative_start']:.6f}", f"{r['duration']:.4f}",
        )  # fmt: skip
    return table


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _table(title: str, columns: tuple[str, ...], right: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left", box=None)
    for c in columns:
        table.add_column(c, justify="right" if c in right else "left")
    return table


def _show(console: Console, table: Table) -> None:
    console.print()
    console.print(table)


def _print_text(document: dict[str, Any], console: Console, limit: int) -> None:
    console.print(
        f"{escape(document['file'])}: {document['format']}, {document['frames']} frames, "
        f"{_size(document['bytes'])}, {document['duration']:.3f} s"
    )
    if "protocol_hierarchy" in document:
        console.print("\n[bold]Protocol hierarchy[/bold] (frames, bytes)")

        def walk(node: dict[str, Any], depth: int) -> None:
            console.print(
                f"{'  ' * depth}{node['protocol']:<{24 - 2 * depth}} "
                f"frames:{node['frames']} bytes:{node['bytes']}"
            )
            for child in node["children"]:
                walk(child, depth + 1)

        walk(document["protocol_hierarchy"], 0)
    for kind in ("tcp", "udp"):
        key = f"{kind}_conversations"
        if key not in document:
            continue
        rows = document[key]
        console.print()
        shown = sorted(rows, key=lambda r: -r["bytes"])[:limit]
        console.print(_conversation_table(kind, shown))
        if len(rows) > len(shown):
            console.print(f"[dim]({len(rows) - len(shown)} more; --limit or --json)[/dim]")
        console.print(f"{len(rows)} {kind.upper()} conversations")
    if "endpoints" in document:
        rows = document["endpoints"]["rows"]
        kind = document["endpoints"]["kind"]
        columns = ("Address", *(("Port",) if kind != "ip" else ()), "frames", "bytes",
                   "tx frames", "tx bytes", "rx frames", "rx bytes")  # fmt: skip
        table = _table(f"{kind.upper()} Endpoints", columns, columns[1:])
        for r in rows[:limit]:
            cells = [r["address"]] + ([str(r["port"])] if kind != "ip" else [])
            cells += [str(r[k]) for k in ("frames", "bytes", "tx_frames", "tx_bytes")]
            cells += [str(r["rx_frames"]), str(r["rx_bytes"])]
            table.add_row(*cells)
        _show(console, table)
        console.print(f"{len(rows)} {kind.upper()} endpoints")
    if "tcp_flows" in document:
        flow_columns = ("stream", "A", "B", "segments", "retrans A→B", "retrans B→A",
                        "hs RTT ms", "RTT samples", "min ms", "avg ms", "max ms")  # fmt: skip
        table = _table(
            "TCP retransmissions and RTT", flow_columns, flow_columns[:1] + flow_columns[3:]
        )
        rows = document["tcp_flows"]
        for r in rows[:limit]:
            rtt = r["ack_rtt"] or {}
            table.add_row(
                str(r["stream"]), _endpoint(r["address_a"], r["port_a"]),
                _endpoint(r["address_b"], r["port_b"]),
                str(r["segments_a_to_b"] + r["segments_b_to_a"]),
                str(r["retransmissions_a_to_b"]), str(r["retransmissions_b_to_a"]),
                "-" if r["handshake_rtt_ms"] is None else f"{r['handshake_rtt_ms']:.3f}",
                str(rtt.get("samples", 0)), str(rtt.get("min_ms", "-")),
                str(rtt.get("avg_ms", "-")), str(rtt.get("max_ms", "-")),
            )  # fmt: skip
        _show(console, table)
        total = sum(r["retransmissions"] for r in rows)
        console.print(f"{total} retransmissions in {len(rows)} TCP conversations")
    if "http" in document:
        table = _table(
            "HTTP/1.1 transactions",
            ("stream", "time", "client", "server", "request", "status", "time ms", "body"),
            right=("time", "time ms", "body"),
        )
        rows = document["http"]
        for r in rows[:limit]:
            table.add_row(
                str(r["stream"]), f"{r['request_time']:.6f}", r["client"], r["server"],
                escape(f"{r['method']} {r['host'] or ''}{r['uri']}"),
                "-" if r["status"] is None else str(r["status"]),
                "-" if r["time_ms"] is None else f"{r['time_ms']:.3f}",
                "-" if r["response_body_bytes"] is None else str(r["response_body_bytes"]),
            )  # fmt: skip
        _show(console, table)
        summary = document["http_summary"]
        answered = sum(1 for r in rows if r["status"] is not None)
        kept = "" if summary["rows_kept"] == summary["requests"] else f" (first {len(rows)} kept)"
        console.print(f"{summary['requests']} HTTP requests{kept}, {answered} answered")
    if "dns" in document:
        table = _table(
            "DNS queries",
            ("time", "client", "server", "id", "query", "rcode", "ms", "answers"),
            right=("time", "ms", "id"),
        )
        dns_doc = document["dns"]
        rows = dns_doc["transactions"]
        for r in rows[:limit]:
            table.add_row(
                f"{r['time']:.6f}", r["client"], r["server"], str(r["id"]),
                escape(f"{r['name']} {r['type']}"), r["rcode"] or "-",
                "-" if r["response_ms"] is None else f"{r['response_ms']:.3f}",
                escape(", ".join(a.split(" ", 2)[2] for a in r["answers"][:3])),
            )  # fmt: skip
        _show(console, table)
        answered = sum(1 for r in rows if r["rcode"] is not None)
        console.print(
            f"{len(rows)} DNS queries, {answered} answered, "
            f"{dns_doc['malformed']} malformed, {dns_doc['unmatched_responses']} unmatched"
        )
    if "follow" in document:
        follow = document["follow"]
        console.print()
        if not follow["found"]:
            console.print(f"TCP stream {follow['stream']} is not in this capture")
            return
        console.print(
            f"Follow: tcp,ascii stream {follow['stream']}\n"
            f"Node 0: {follow['node_a']}\nNode 1: {follow['node_b']}"
        )
        for chunk in follow["chunks"]:
            data = bytes.fromhex(chunk["data"])
            text = data.decode("utf-8", "replace")
            indent = "" if chunk["from"] == "a" else "\t"
            colour = "red" if chunk["from"] == "a" else "blue"
            console.print(f"[dim]{indent}{len(data)}[/dim]")
            console.print(
                f"[{colour}]{escape(text)}[/{colour}]", end="" if text.endswith("\n") else "\n"
            )
        console.print(
            f"{follow['bytes_a_to_b']} bytes A→B, {follow['bytes_b_to_a']} bytes B→A"
            + (" (truncated)" if follow["truncated"] else "")
        )


def _run_summary(
    path: str, request: ReportRequest, expression: str | None, show_progress: bool
) -> dict[str, Any]:
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if not show_progress or size < PROGRESS_MIN_BYTES:
        return summarise_file(path, request, expression)
    err = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(f"reading {Path(path).name}", total=size)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return summarise_file(path, request, expression, progress)


def capture_command(
    filter_words: list[str] = typer.Argument(
        None, metavar="[FILTER]...", help="A capture filter in tcpdump's syntax (libpcap)."
    ),
    read: str | None = typer.Option(None, "-r", "--read", help="Read a pcap or pcapng file."),
    interface: str | None = typer.Option(
        None, "-i", "--interface", help="Capture live on this interface (root/CAP_NET_RAW)."
    ),
    count: int | None = typer.Option(None, "-c", "--count", help="Stop after this many frames."),
    duration: float | None = typer.Option(
        None, "--duration", help="Stop a live capture after this many seconds."
    ),
    write: str | None = typer.Option(None, "-w", "--write", help="Write the live frames here."),
    conversations: list[str] = typer.Option(
        None, "--conversations", metavar="tcp|udp", help="Conversation table (repeatable)."
    ),
    endpoints: str | None = typer.Option(None, "--endpoints", metavar="ip|tcp|udp"),
    hierarchy: bool = typer.Option(False, "--hierarchy", help="Protocol hierarchy."),
    flows: bool = typer.Option(
        False, "--flows", help="Retransmissions and RTT per TCP conversation."
    ),
    http: bool = typer.Option(False, "--http", help="HTTP/1.1 requests, responses, timings."),
    dns: bool = typer.Option(False, "--dns", help="DNS queries, answers, response times."),
    follow: tuple[str, int] | None = typer.Option(
        None, "--follow", metavar="tcp N", help="Print TCP stream N (tcp.stream)."
    ),
    limit: int = typer.Option(50, "--limit", help="Rows per table in text output."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bar on big files (on a terminal)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Summarise a capture file (-r) or a live capture (-i): conversations, endpoints,
    protocol hierarchy, retransmissions and RTT, HTTP and DNS transactions, a TCP stream."""
    if (read is None) == (interface is None):
        raise UsageError("give -r FILE to read a capture or -i INTERFACE to capture live")
    if write is not None and interface is None:
        raise UsageError("-w writes a live capture; with -r the file is already written")
    kinds = {c.lower() for c in conversations or []}
    if kinds - {"tcp", "udp"}:
        raise UsageError(f"--conversations {sorted(kinds - {'tcp', 'udp'})[0]!r}: use tcp or udp")
    if endpoints is not None and endpoints not in ("ip", "tcp", "udp"):
        raise UsageError(f"--endpoints {endpoints!r}: use ip, tcp or udp")
    follow_index = None
    if follow is not None and follow[0] is not None:
        if follow[0].lower() != "tcp":
            raise UsageError(f"--follow {follow[0]!r}: only 'tcp N' streams can be followed")
        if follow[1] is None or follow[1] < 0:
            raise UsageError("--follow tcp N: N is a stream index from 0")
        follow_index = follow[1]
    if count is not None and count < 1:
        raise UsageError("-c must be at least 1")
    if duration is not None and duration <= 0:
        raise UsageError("--duration must be positive")
    if not (kinds or endpoints or hierarchy or flows or http or dns or follow_index is not None):
        kinds = {"tcp"}
        hierarchy = True
    request = ReportRequest(
        conversations=frozenset(kinds),
        endpoints=endpoints,
        hierarchy=hierarchy,
        tcp_flows=flows,
        http=http,
        dns=dns,
        follow=follow_index,
    )
    expression = " ".join(filter_words) if filter_words else None
    console = _console()
    err = Console(stderr=True, highlight=False)
    live: dict[str, Any] | None = None
    if interface is not None:
        with tempfile.TemporaryDirectory(prefix="backhaul-capture-") as tmp:
            path = write or str(Path(tmp) / "live.pcap")
            shown = f"capturing on {interface}" + (f" ({expression})" if expression else "")

            def ready() -> None:
                err.print(escape(shown))  # on stderr: scripts wait for it, --json stays clean

            result = capture_live(interface, path, expression, count, duration, on_ready=ready)
            live = {
                "interface": interface,
                "frames": result.frames,
                "stopped_by": result.stopped_by,
                "written_to": write,
            }
            document = summarise_file(path, request)
    else:
        assert read is not None
        document = _run_summary(read, request, expression, progress and err.is_terminal)
    if live is not None:
        document["capture"] = live
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    if live is not None:
        err.print(
            f"{live['frames']} frames captured on {escape(interface or '')} "
            f"(stopped by {live['stopped_by']})"
            + (f", written to {escape(write)}" if write else "")
        )
    _print_text(document, console, limit)


def register(app: typer.Typer) -> None:
    app.command(
        "capture",
        help="Read or capture packets; conversations (tshark's counts), endpoints, protocol "
        "hierarchy, retransmissions/RTT, HTTP and DNS transactions, follow a TCP stream.",
        no_args_is_help=True,
    )(capture_command)
