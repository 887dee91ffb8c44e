"""``backhaul dhcp serve|leases``: the DHCPv4 server in quick mode, and its lease list.

``dhcp serve --interface eth1 --pool 10.0.0.100-10.0.0.250 --router 10.0.0.1 --dns 10.0.0.1
--state /var/lib/backhaul`` serves one subnet (the interface's, which must hold the pool) in the
foreground; a config file's ``dhcp:`` section runs with ``backhaul serve -c FILE``.

``dhcp leases [--state DIR | -c FILE] [--json] [--all]`` prints the leases in a state directory
(or the one a config file's ``dhcp:`` section names). ``--json`` prints a list of::

    {"address": "10.0.0.100", "mac": "02:00:00:00:00:01", "client_id": "01:02:00:...",
     "hostname": "web1", "state": "bound", "expires": "2026-12-06T04:00:00Z",
     "expires_unix": 1796529600.0, "subnet": "10.0.0.0/24"}
"""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from backhaul.errors import UsageError

__all__ = ["register"]

dhcp_app = typer.Typer(
    name="dhcp",
    help="The DHCPv4 server: quick mode and its leases.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

STATE_OPTION = typer.Option(
    "/var/lib/backhaul", "--state", help="State directory holding the lease store."
)


def _addresses(values: list[str], what: str) -> list[str]:
    out = []
    for value in values:
        for part in value.split(","):
            try:
                out.append(str(ipaddress.IPv4Address(part.strip())))
            except ValueError:
                raise UsageError(f"--{what} {part!r} is not an IPv4 address") from None
    return out


def quick_config(
    interface: str,
    pool: str,
    routers: list[str],
    dns: list[str],
    state: str,
    lease_time: str,
    domain: str | None,
) -> object:
    """The ``dhcp:`` section quick mode stands for (the subnet is the interface's)."""
    from backhaul.config.dhcp import DhcpConfig, parse_range
    from backhaul.services.dhcp.service import interface_addresses

    try:
        first, last = parse_range(pool)
    except ValueError as exc:
        raise UsageError(f"--pool: {exc}") from None
    addresses = interface_addresses([interface])[interface]
    if not addresses:
        raise UsageError(
            f"interface {interface} has no IPv4 address: give it one in the subnet the pool"
            f" belongs to (e.g. `ip addr add 10.0.0.1/24 dev {interface}`)"
        )
    subnet = next((a.network for a in addresses if first in a.network and last in a.network), None)
    if subnet is None:
        have = ", ".join(str(a.network) for a in addresses)
        raise UsageError(
            f"pool {first}-{last} lies outside {interface}'s subnet ({have}); pick a pool inside it"
        )
    options: dict[str, object] = {}
    if routers:
        options["routers"] = _addresses(routers, "router")
    if dns:
        options["dns_servers"] = _addresses(dns, "dns")
    if domain:
        options["domain_name"] = domain
    from pydantic import ValidationError

    try:
        return DhcpConfig.model_validate(
            {
                "interfaces": [interface],
                "state_dir": state,
                "subnets": [
                    {
                        "subnet": str(subnet),
                        "pools": [f"{first}-{last}"],
                        "lease_time": lease_time,
                        "options": options,
                    }
                ],
            }
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise UsageError(f"{where}: {error['msg']}") from None


@dhcp_app.command("serve")
def serve(
    interface: str = typer.Option(..., "--interface", "-i", help="Where the clients are."),
    pool: str = typer.Option(..., "--pool", help="Addresses to lease: FIRST-LAST."),
    router: list[str] = typer.Option([], "--router", help="Default gateway(s) (option 3)."),
    dns: list[str] = typer.Option([], "--dns", help="DNS server(s) (option 6)."),
    state: str = STATE_OPTION,
    lease_time: str = typer.Option("1h", "--lease-time", help="Lease time, e.g. 1h, 30m."),
    domain: str | None = typer.Option(None, "--domain", help="Domain name (option 15)."),
) -> None:
    """Serve DHCP on one interface in the foreground (Ctrl-C stops; leases are kept)."""
    from backhaul.services.dhcp.service import run

    config = quick_config(interface, pool, router, dns, state, lease_time, domain)
    raise typer.Exit(run(config))  # type: ignore[arg-type]


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


@dhcp_app.command("leases")
def leases(
    state: str = STATE_OPTION,
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Read the state directory from this config's dhcp: section."
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print a JSON list of {address, mac, client_id, hostname, state, expires}.",
    ),
    all_: bool = typer.Option(False, "--all", help="Also list released and expired leases."),
) -> None:
    """List the leases: address, MAC, client-id, host name, state, expiry."""
    from backhaul.state.dhcp_leases import read_leases

    if config is not None:
        from backhaul.config import load_file

        section = load_file(config).dhcp
        if section is None:
            raise UsageError(f"{config} has no dhcp: section; give --state instead")
        state = section.state_dir

    if not Path(state).is_dir():
        raise UsageError(f"state directory {state} does not exist (see --state)")
    now = time.time()
    rows = []
    for record in read_leases(state):
        shown = record.state
        if record.state in ("bound", "offered", "declined") and record.expires <= now:
            shown = {"bound": "expired", "offered": "free", "declined": "free"}[record.state]
        if shown == "free" or (not all_ and shown in ("released", "expired")):
            continue
        rows.append((record, shown))
    if as_json:
        doc = [
            {
                "address": r.address,
                "mac": r.mac,
                "client_id": r.client_id,
                "hostname": r.hostname,
                "state": shown,
                "expires": _iso(r.expires),
                "expires_unix": r.expires,
                "subnet": r.subnet,
            }
            for r, shown in rows
        ]
        typer.echo(json.dumps(doc, indent=2))
        return
    # no markup or emoji codes: a client-id such as 01:ab:... is data, not ":ab:" (🆎)
    console = Console(highlight=False, markup=False, emoji=False)
    if not console.is_terminal:
        console = Console(highlight=False, markup=False, emoji=False, width=200, soft_wrap=True)
    table = Table(box=None, pad_edge=False)
    for column in ("address", "mac", "client-id", "hostname", "state", "expires"):
        table.add_column(column)
    for r, shown in rows:
        table.add_row(
            r.address, r.mac, r.client_id or "-", r.hostname or "-", shown, _iso(r.expires)
        )
    console.print(table)
    console.print(f"{len(rows)} lease(s) in {state}")


def register(app: typer.Typer) -> None:
    app.add_typer(dhcp_app)
