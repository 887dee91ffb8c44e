"""``backhaul lab up|down|status``: the four-namespace test network of :mod:`backhaul.tools.lab`.

``lab up`` leaves the namespaces running (``ip netns exec NAME-client ...`` to use them);
``lab down`` removes them. Needs root. ``status --json`` prints::

    {"name": "bhlab", "up": true,
     "hosts": [{"role": "client", "namespace": "bhlab-client", "up": true,
                "interfaces": [{"name": "eth0", "link": "client-r1",
                                "ipv4": "192.0.2.2/24", "ipv6": "2001:db8:1::2/64"}]}],
     "links": [{"link": "r1-r2", "loss_percent": 0, "rate": null, "mtu": 1500}]}
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from backhaul.errors import UsageError
from backhaul.tools.lab import IPV6_MIN_MTU, LINKS, Lab, backhaul_command

__all__ = ["register"]

lab_app = typer.Typer(
    name="lab",
    help="A test network in namespaces: client - router1 - router2 - server (needs root).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

NAME_OPTION = typer.Option("bhlab", "--name", help="Lab name; namespaces are NAME-client etc.")
JSON_OPTION = typer.Option(
    False,
    "--json",
    help='Print JSON: {"name", "up", "hosts": [{"role", "namespace", "up", "interfaces":'
    ' [{"name", "link", "ipv4", "ipv6"}]}], "links": [{"link", "loss_percent", "rate", "mtu"}]}.',
)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        link, sep, setting = value.partition("=")
        if not sep or not setting:
            raise UsageError(
                f"--{what} {value!r}: write LINK={what.upper()}, LINK one of {', '.join(LINKS)}"
            )
        out[link] = setting
    return out


def _ints(values: dict[str, str], what: str) -> dict[str, int]:
    try:
        return {k: int(v.rstrip("%")) for k, v in values.items()}
    except ValueError as exc:
        raise UsageError(f"--{what} needs a whole number: {exc}") from exc


def _console() -> Console:
    # colour only on a terminal; when piped, do not squeeze tables into 80 columns
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=160)


def _status_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"lab {status['name']}", title_justify="left", header_style="bold")
    for column in ("host", "namespace", "interface", "link", "IPv4", "IPv6"):
        table.add_column(column)
    for host in status["hosts"]:
        state = "" if host["up"] else " [red](down)[/red]"
        for i, iface in enumerate(host["interfaces"]):
            table.add_row(
                f"{host['role']}.lab{state}" if i == 0 else "",
                host["namespace"] if i == 0 else "",
                iface["name"],
                iface["link"],
                iface["ipv4"],
                iface["ipv6"],
            )
    return table


def _links_table(status: dict[str, Any]) -> Table:
    table = Table(header_style="bold")
    for column in ("link", "loss (towards server)", "rate (towards server)", "mtu"):
        table.add_column(column)
    for link in status["links"]:
        table.add_row(
            link["link"],
            f"{link['loss_percent']}%",
            link["rate"] or "-",
            str(link["mtu"] or "-"),
        )
    return table


@lab_app.command("up")
def up(
    name: str = NAME_OPTION,
    loss: list[str] = typer.Option(
        [], "--loss", metavar="LINK=PCT", help="Drop PCT % on LINK (client-r1, r1-r2, r2-server)."
    ),
    rate: list[str] = typer.Option(
        [], "--rate", metavar="LINK=RATE", help="Shape LINK to RATE (tc tbf), e.g. r1-r2=10mbit."
    ),
    mtu: list[str] = typer.Option(
        [],
        "--mtu",
        metavar="LINK=MTU",
        help=f"Set LINK's MTU ({IPV6_MIN_MTU}-65535: the links carry IPv6).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Build the lab and leave it running."""
    lab = Lab(
        name,
        loss=_ints(_pairs(loss, "loss"), "loss"),
        rate=_pairs(rate, "rate"),
        mtu=_ints(_pairs(mtu, "mtu"), "mtu"),
    )
    lab.up()
    status = lab.status()
    if as_json:
        sys.stdout.write(json.dumps(status, indent=2) + "\n")
        return
    console = _console()
    console.print(_status_table(status))
    console.print(_links_table(status))
    # the full path: under sudo and in `ip netns exec` the venv is not on PATH
    command = backhaul_command()
    console.print(
        f"try: ip netns exec {lab.namespace('client')} {command} trace server.lab\n"
        f"done: {command} lab down --name {name}",
        soft_wrap=True,
        highlight=False,
    )


@lab_app.command("down")
def down(name: str = NAME_OPTION) -> None:
    """Tear the lab down (namespaces, the processes in them, /etc/netns files)."""
    lab = Lab(name)
    was_up = any(lab.exists().values())
    lab.down()
    print(f"lab {name} {'removed' if was_up else 'was not up'}")


@lab_app.command("status")
def status(name: str = NAME_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Show the lab's hosts, addresses and link impairments. Exit 1 when it is not up."""
    state = Lab(name).status()
    if as_json:
        sys.stdout.write(json.dumps(state, indent=2) + "\n")
    else:
        console = _console()
        console.print(_status_table(state))
        console.print(_links_table(state))
    if not state["up"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app)
