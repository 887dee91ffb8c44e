"""``backhaul subnet``: an IP calculator (ipcalc/sipcalc) on :mod:`backhaul.net.subnet`.

Human output is a rich table (colour only on a terminal); ``--json`` prints one JSON document
whose shape each command's help describes. Exit codes: 0 ok, 1 a negative answer (an address
not contained, overlaps found), 2 bad input.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from backhaul.errors import UsageError
from backhaul.net import subnet as calc

subnet_app = typer.Typer(
    name="subnet",
    help="IP calculator: describe, split, summarize, deaggregate and compare prefixes.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JSON_OPTION = typer.Option(False, "--json", help="Print JSON (shape in this help) instead.")


def _console() -> Console:
    # Colour only on a terminal (rich decides; NO_COLOR is honoured); when piped, do not wrap
    # long rows (IPv6 binary views) at 80 columns.
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    return console


def _show(*renderables: Any) -> None:
    """Print to the terminal, or, when piped, as plain lines without trailing blanks."""
    console = _console()
    if console.is_terminal:
        console.print(*renderables)
        return
    with console.capture() as capture:
        console.print(*renderables)
    lines = [line.rstrip() for line in capture.get().splitlines()]
    sys.stdout.write("\n".join(lines) + "\n")


def _emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def _read_lines(source: str) -> tuple[list[str], str]:
    if source == "-":
        if sys.stdin.isatty():
            raise UsageError(
                "no list given: pipe prefixes on stdin (one or more a line) or name a file"
            )
        return sys.stdin.read().splitlines(), "<stdin>"
    path = Path(source)
    try:
        return path.read_text().splitlines(), source
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from exc


def _fmt_int(value: int) -> str:
    return f"{value:,}"


def _count_label(value: int) -> str:
    """Host counts like ipcalc: exact below 2^32, else also as a power of two."""
    if value > 2**32 and value & (value - 1) == 0:
        return f"{_fmt_int(value)} (2^{value.bit_length() - 1})"
    return _fmt_int(value)


def _binary_text(bits: str, prefixlen: int) -> Text:
    """The binary view with network bits bold and a space at the prefix boundary (ipcalc)."""
    text = Text()
    seen = 0
    for char in bits:
        if char in "01":
            if seen == prefixlen and prefixlen not in (0,):
                text.append(" ")
            style = "bold cyan" if seen < prefixlen else "yellow"
            text.append(char, style=style)
            seen += 1
        else:
            text.append(char, style="dim")
    return text


# --------------------------------------------------------------------------- info


@subnet_app.command("info")
def info_cmd(
    address: str = typer.Argument(
        ..., help="ADDRESS[/PREFIX] or ADDRESS/NETMASK, e.g. 10.1.2.3/20 or 2001:db8::/48."
    ),
    netmask: str | None = typer.Argument(
        None, help="Optional netmask as a second word, e.g. 10.1.2.3 255.255.240.0."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Describe an address and its network: mask, hosts, scope, binary, reverse DNS.

    A bare address is a /32 (IPv4) or /128 (IPv6). Hosts exclude the network and
    broadcast addresses (IPv4 /31 and /32 excepted); IPv6 counts every address.

    JSON: one object with "input", "version", "address", "network", "prefixlen",
    "netmask", "wildcard", "broadcast" (null for IPv6, /31, /32), "first_host",
    "last_host", "total_addresses", "usable_hosts", "class" (A-E; null for IPv6),
    "scope" {"kind", "name", "rfc", "block"}, "private", "global",
    "binary" {"address", "netmask", "network"}, "ptr", "reverse_zone" (the zone
    holding every PTR), "reverse_zones" (zones covering exactly the prefix)
    and "rfc2317_zone" (IPv4 /25-/31, else null).
    """
    text = address if netmask is None else f"{address}/{netmask}"
    result = calc.info(calc.parse_interface(text))
    if as_json:
        _emit_json(result.to_json())
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    net = result.network
    table.add_row("Address", str(result.address))
    table.add_row("Network", f"{net.network_address}/{net.prefixlen}")
    table.add_row("Netmask", f"{result.netmask} = {net.prefixlen}")
    table.add_row("Wildcard", str(result.wildcard))
    if result.broadcast is not None:
        table.add_row("Broadcast", str(result.broadcast))
    table.add_row("First host", str(result.first_host))
    table.add_row("Last host", str(result.last_host))
    table.add_row("Hosts", _count_label(result.usable_hosts))
    table.add_row("Addresses", _count_label(result.total_addresses))
    if result.address_class is not None:
        table.add_row("Class", result.address_class)
    scope = result.scope
    scope_text = scope.name + (f" ({scope.rfc})" if scope.rfc else "")
    if scope.block is not None:
        scope_text += f", in {scope.block}"
    table.add_row("Scope", scope_text)
    table.add_row("Binary address", _binary_text(calc.binary_view(result.address), net.prefixlen))
    table.add_row("Binary netmask", _binary_text(calc.binary_view(result.netmask), net.prefixlen))
    table.add_row("PTR name", result.ptr_name)
    table.add_row("Reverse zone", result.reverse_zone)
    zones = result.reverse_zones
    if zones != [result.reverse_zone]:
        shown = ", ".join(zones[:4]) + (f" … ({len(zones)} zones)" if len(zones) > 4 else "")
        table.add_row("Delegations", shown)
    if result.rfc2317_zone is not None:
        table.add_row("RFC 2317 zone", result.rfc2317_zone)
    _show(table)


# --------------------------------------------------------------------------- split


def _subnet_row(net: calc.IPNetwork) -> dict[str, Any]:
    detail = calc.info(ipaddress.ip_interface((net.network_address, net.prefixlen)))
    return {
        "network": str(net),
        "first_host": str(detail.first_host),
        "last_host": str(detail.last_host),
        "broadcast": None if detail.broadcast is None else str(detail.broadcast),
        "usable_hosts": detail.usable_hosts,
    }


@subnet_app.command("split")
def split_cmd(
    network: str = typer.Argument(..., help="The prefix to split, e.g. 10.0.0.0/22."),
    prefix: int | None = typer.Option(
        None, "--prefix", "-p", metavar="LENGTH", help="New prefix length."
    ),
    hosts: int | None = typer.Option(
        None, "--hosts", "-H", metavar="N", help="Smallest subnets that hold this many hosts each."
    ),
    limit: int = typer.Option(
        1024,
        "--limit",
        metavar="N",
        help="List at most this many subnets (0: all); the count is exact.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Split a prefix into equal subnets, by --prefix N or by --hosts N (smallest that fits).

    JSON: {"network", "prefixlen" (the new one), "hosts_requested" (or null),
    "count", "shown", "truncated", "subnets": [{"network", "first_host",
    "last_host", "broadcast", "usable_hosts"}, ...]}.
    """
    parent = calc.parse_network(network)
    if (prefix is None) == (hosts is None):
        raise UsageError("give exactly one of --prefix N or --hosts N")
    if limit < 0:
        raise UsageError(f"--limit must be 0 (all) or more, not {limit}")
    if hosts is not None:
        new_prefix = calc.prefix_for_hosts(parent.version, hosts)
        if new_prefix < parent.prefixlen:
            raise UsageError(
                f"{hosts} hosts need a /{new_prefix}, which is larger than {parent}; "
                "start from a shorter prefix"
            )
    else:
        assert prefix is not None
        new_prefix = prefix
    count = calc.split_count(parent, new_prefix)
    rows: list[dict[str, Any]] = []
    for sub in calc.split(parent, new_prefix):
        if limit and len(rows) >= limit:
            break
        rows.append(_subnet_row(sub))
    if as_json:
        _emit_json(
            {
                "network": str(parent),
                "prefixlen": new_prefix,
                "hosts_requested": hosts,
                "count": count,
                "shown": len(rows),
                "truncated": len(rows) < count,
                "subnets": rows,
            }
        )
        return
    title = f"{parent} split into {_fmt_int(count)} × /{new_prefix}"
    if hosts is not None:
        title += f" (≥ {_fmt_int(hosts)} hosts each)"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("Subnet", style="bold")
    table.add_column("First host")
    table.add_column("Last host")
    if parent.version == 4:
        table.add_column("Broadcast")
    table.add_column("Hosts", justify="right")
    for number, row in enumerate(rows, start=1):
        cells = [str(number), row["network"], row["first_host"], row["last_host"]]
        if parent.version == 4:
            cells.append(row["broadcast"] or "-")
        cells.append(_count_label(row["usable_hosts"]))
        table.add_row(*cells)
    _show(table)
    if len(rows) < count:
        print(
            f"… {_fmt_int(count - len(rows))} more not shown; use --limit 0 to list all",
            file=sys.stderr,
        )


# --------------------------------------------------------------------------- summarize


def _prefix_table(title: str, nets: list[calc.IPNetwork]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("Prefix", style="bold")
    table.add_column("First")
    table.add_column("Last")
    table.add_column("Addresses", justify="right")
    for net in nets:
        table.add_row(
            str(net),
            str(net.network_address),
            str(net.broadcast_address),
            _count_label(net.num_addresses),
        )
    return table


@subnet_app.command("summarize")
def summarize_cmd(
    prefixes: list[str] | None = typer.Argument(
        None, help="Prefixes to collapse; none: read them from stdin (one or more a line)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Collapse a list of prefixes into the fewest CIDRs covering the same addresses.

    JSON: {"input_count", "count", "prefixes": ["10.0.0.0/23", ...]}
    (IPv4 first, then IPv6).
    """
    if prefixes:
        nets = [net for _, net in calc.parse_list(prefixes, "<args>")]
    else:
        lines, source = _read_lines("-")
        nets = [net for _, net in calc.parse_list(lines, source)]
    if not nets:
        raise UsageError("no prefixes given; pass them as arguments or on stdin")
    result = calc.summarize(nets)
    if as_json:
        _emit_json(
            {"input_count": len(nets), "count": len(result), "prefixes": [str(n) for n in result]}
        )
        return
    _show(_prefix_table(f"{len(nets)} prefixes → {len(result)}", result))


# --------------------------------------------------------------------------- range


@subnet_app.command("range")
def range_cmd(
    first: str = typer.Argument(..., help="First address (or FIRST-LAST in one word)."),
    last: str | None = typer.Argument(None, help="Last address, inclusive."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Deaggregate an arbitrary address range into the fewest CIDRs (like ipcalc -d).

    JSON: {"first", "last", "addresses", "count", "prefixes": ["10.0.0.5/32", ...]}.
    """
    if last is None:
        if "-" not in first:
            raise UsageError("give the range as FIRST LAST or FIRST-LAST")
        first, last = first.split("-", 1)
    start = calc.parse_address(first)
    end = calc.parse_address(last)
    nets = calc.range_to_cidrs(start, end)
    addresses = int(end) - int(start) + 1
    if as_json:
        _emit_json(
            {
                "first": str(start),
                "last": str(end),
                "addresses": addresses,
                "count": len(nets),
                "prefixes": [str(n) for n in nets],
            }
        )
        return
    title = f"{start} – {end}: {_count_label(addresses)} addresses in {len(nets)} prefixes"
    _show(_prefix_table(title, nets))


# --------------------------------------------------------------------------- contains


@subnet_app.command("contains")
def contains_cmd(
    network: str = typer.Argument(..., help="The prefix, e.g. 10.0.0.0/8."),
    items: list[str] = typer.Argument(..., help="Addresses or prefixes to test."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Test whether addresses (or whole prefixes) lie inside a prefix.

    Exit code 0 when every item is inside, 1 when any is not.

    JSON: {"network", "all": bool, "results": [{"item", "contained": bool}]}.
    """
    parent = calc.parse_network(network)
    parsed = [calc.parse_item(item) for item in items]
    results = [(item, calc.contains(parent, item)) for item in parsed]
    every = all(inside for _, inside in results)
    if as_json:
        _emit_json(
            {
                "network": str(parent),
                "all": every,
                "results": [{"item": str(i), "contained": inside} for i, inside in results],
            }
        )
    else:
        table = Table(title=f"in {parent}?", title_justify="left")
        table.add_column("Item", style="bold")
        table.add_column("Inside")
        for item, inside in results:
            table.add_row(
                str(item), Text("yes", style="green") if inside else Text("no", style="red")
            )
        _show(table)
    if not every:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- overlap


@subnet_app.command("overlap")
def overlap_cmd(
    source: str = typer.Argument(
        "-", help="File with prefixes (one or more a line, # comments); - or none: stdin."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Find overlapping prefixes in a list (duplicates and prefixes inside others).

    Exit code 0 when no two entries overlap, 1 when some do.

    JSON: {"entries", "overlap_count", "overlaps": [{"outer", "outer_line",
    "inner", "inner_line", "relation" ("contains" or "duplicate"),
    "shared_addresses"}, ...]}.
    """
    lines, name = _read_lines(source)
    entries = calc.parse_list(lines, name)
    if not entries:
        raise UsageError(f"{name}: no prefixes found")
    found = calc.overlaps([net for _, net in entries])
    if as_json:
        _emit_json(
            {
                "entries": len(entries),
                "overlap_count": len(found),
                "overlaps": [
                    {
                        "outer": str(o.outer),
                        "outer_line": entries[o.outer_index][0],
                        "inner": str(o.inner),
                        "inner_line": entries[o.inner_index][0],
                        "relation": o.relation,
                        "shared_addresses": o.shared_addresses,
                    }
                    for o in found
                ],
            }
        )
    else:
        if not found:
            _show(f"[green]no overlaps[/green] among {len(entries)} prefixes")
        else:
            table = Table(
                title=f"{len(found)} overlap{'s' if len(found) != 1 else ''} among "
                f"{len(entries)} prefixes",
                title_justify="left",
            )
            table.add_column("Line", justify="right", style="dim")
            table.add_column("Prefix", style="bold")
            table.add_column("Relation")
            table.add_column("Line", justify="right", style="dim")
            table.add_column("Prefix", style="bold")
            table.add_column("Shared", justify="right")
            for o in found:
                relation = "duplicates" if o.relation == "duplicate" else "contains"
                table.add_row(
                    str(entries[o.outer_index][0]),
                    str(o.outer),
                    Text(relation, style="red" if o.relation == "duplicate" else "yellow"),
                    str(entries[o.inner_index][0]),
                    str(o.inner),
                    _count_label(o.shared_addresses),
                )
            _show(table)
    if found:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``backhaul subnet`` to the root app."""
    app.add_typer(subnet_app, name="subnet")
