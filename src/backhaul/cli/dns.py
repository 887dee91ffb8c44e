"""``backhaul dns serve``: the DNS server in quick mode (flags instead of a config file)."""

from __future__ import annotations

from typing import Any

import typer

__all__ = ["quick_dns_config", "register"]

dns_app = typer.Typer(
    help="The DNS server: authoritative zones, hosts files, a caching forwarder.",
    no_args_is_help=True,
)


def quick_dns_config(
    listen: list[str],
    zones: list[str],
    hosts: list[str],
    domains: list[str],
    forward: list[str],
    workers: int,
    metrics: str | None,
    query_log: str | None,
) -> dict[str, Any]:
    """The ``dns`` section the flags describe (validated by the caller like a file)."""
    zone_items: list[dict[str, Any]] = []
    for spec in zones:
        origin, sep, path = spec.partition("=")
        zone_items.append({"origin": origin, "file": path} if sep else {"file": spec})
    section: dict[str, Any] = {
        "listen": listen or ["127.0.0.1:5353"],
        "workers": workers,
        "zones": zone_items,
        "hosts": hosts,
        "local": domains,
    }
    if forward:
        section["forward"] = {"upstreams": forward}
    if metrics:
        section["metrics"] = metrics
    if query_log:
        section["query_log"] = {"enabled": True, "path": query_log}
    return section


@dns_app.command("serve")
def serve(
    listen: list[str] = typer.Option(
        [], "--listen", "-l", help="host:port for UDP and TCP (repeat; default 127.0.0.1:5353)."
    ),
    zone: list[str] = typer.Option(
        [], "--zone", "-z", help="RFC 1035 zone file, or ORIGIN=FILE (repeat)."
    ),
    hosts: list[str] = typer.Option([], "--hosts", help="/etc/hosts-format file (repeat)."),
    domain: list[str] = typer.Option(
        [],
        "--domain",
        "-d",
        help="Answer NAME from our data only: a missing name under it is NXDOMAIN (repeat).",
    ),
    forward: list[str] = typer.Option(
        [], "--forward", "-f", help="Upstream resolver host:port for other names (repeat)."
    ),
    workers: int = typer.Option(1, "--workers", "-w", min=1, max=64, help="Processes."),
    metrics: str | None = typer.Option(None, "--metrics", help="host:port for /metrics."),
    query_log: str | None = typer.Option(
        None, "--query-log", help="JSON line per query to this file ('-' = stdout)."
    ),
) -> None:
    """Serve DNS from flags, e.g. `backhaul dns serve --listen 127.0.0.1:5353
    --zone example.zone --hosts extra.hosts --domain corp.internal --forward
    127.0.0.1:5399`."""
    from backhaul.config.load import load_data
    from backhaul.services.dns.process import serve as run

    section = quick_dns_config(listen, zone, hosts, domain, forward, workers, metrics, query_log)
    config = load_data({"dns": section}, "command line")
    assert config.dns is not None
    raise typer.Exit(run(config.dns))


def register(app: typer.Typer) -> None:
    app.add_typer(dns_app, name="dns")
