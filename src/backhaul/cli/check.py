"""``backhaul check FILE``: validate an edge config and show what it would run.

Exit 0 when the config is valid (the plan is printed: listeners, routes with their match and
action, clusters with their endpoints); exit 2 with every problem, each with its config path
and line, when it is not. Nothing is started and nothing is resolved.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backhaul.config import EdgeConfig, format_duration, format_size, load_file
from backhaul.config.model import Route, advisories
from backhaul.errors import ConfigError


def _console(stderr: bool = False) -> Console:
    console = Console(highlight=False, stderr=stderr)
    if not console.is_terminal:  # piped: do not wrap rows at 80 columns
        console = Console(highlight=False, stderr=stderr, width=200, soft_wrap=True)
    return console


def describe_match(route: Route) -> str:
    """One line for a route's match: ``host api.example.com; prefix /api; methods GET``."""
    match = route.match
    parts: list[str] = []
    if match.host is not None:
        hosts = [match.host] if isinstance(match.host, str) else list(match.host)
        parts.append("host " + ", ".join(hosts))
    if match.path is not None:
        parts.append(f"path = {match.path}")
    if match.prefix is not None:
        parts.append(f"prefix {match.prefix}")
    if match.regex is not None:
        parts.append(f"regex {match.regex}")
    if match.methods:
        parts.append("methods " + ",".join(match.methods))
    for header in match.headers:
        if header.exact is not None:
            parts.append(f"header {header.name} = {header.exact}")
        elif header.regex is not None:
            parts.append(f"header {header.name} ~ {header.regex}")
        else:
            parts.append(f"header {header.name} {'present' if header.present else 'absent'}")
    return "; ".join(parts) if parts else "everything"


def describe_action(route: Route) -> str:
    """One line for a route's action: ``proxy → api (strip /api)``."""
    if route.proxy is not None:
        proxy = route.proxy
        extras = []
        if proxy.strip_prefix is not None:
            extras.append(f"strip {proxy.strip_prefix}")
        if proxy.rewrite_prefix is not None:
            extras.append(f"rewrite to {proxy.rewrite_prefix}")
        if proxy.host_rewrite is not None:
            extras.append(f"Host: {proxy.host_rewrite}")
        tail = f" ({', '.join(extras)})" if extras else ""
        return f"proxy → {proxy.cluster}{tail}"
    if route.redirect is not None:
        return f"redirect {route.redirect.status} → {route.redirect.to}"
    assert route.respond is not None
    respond = route.respond
    return f"respond {respond.status} {respond.content_type} ({len(respond.body)} chars)"


def render(config: EdgeConfig, source: str, console: Console) -> None:
    """Print the plan: settings, listeners, routes, clusters, then advisories."""
    console.print(
        f"[green]✓[/green] {escape(source)} is valid: {len(config.listeners)} listener(s),"
        f" {len(config.routes)} route(s), {len(config.clusters)} cluster(s)"
    )
    log = config.access_log
    console.print(
        f"workers: {config.workers or 'one per CPU'} · server header:"
        f" {escape(repr(config.server_header)) if config.server_header else 'none'} · access log:"
        f" {escape(f'{log.format} → {log.path}') if log.enabled else 'off'} · admin:"
        f" {config.admin.address if config.admin else 'off'}"
    )

    listeners = Table(title="listeners", title_justify="left")
    for column in ("name", "address", "protocol", "limits", "timeouts"):
        listeners.add_column(column)
    for listener in config.listeners:
        lim, tmo = listener.limits, listener.timeouts
        listeners.add_row(
            escape(listener.name),
            str(listener.address),
            listener.protocol,
            f"line {format_size(lim.request_line)}, head {format_size(lim.header_bytes)}"
            f"/{lim.header_count}, body {format_size(lim.body)}",
            f"head {format_duration(tmo.request_headers)}, body idle"
            f" {format_duration(tmo.body_idle)}, keep-alive {format_duration(tmo.keepalive_idle)},"
            f" drain {format_duration(tmo.drain)}",
        )
    console.print(listeners)

    routes = Table(title="routes (first match wins)", title_justify="left")
    for column in ("#", "name", "listeners", "match", "action"):
        routes.add_column(column)
    for i, route in enumerate(config.routes):
        action = describe_action(route)
        if route.limits is not None and route.limits.body is not None:
            action += f"; body ≤ {format_size(route.limits.body)}"
        routes.add_row(
            str(i),
            escape(route.name),
            escape(", ".join(route.listeners)) if route.listeners else "all",
            escape(describe_match(route)),
            escape(action),
        )
    console.print(routes)

    clusters = Table(title="clusters", title_justify="left")
    for column in ("name", "policy", "endpoints", "timeouts", "pool"):
        clusters.add_column(column)
    for name, cluster in config.clusters.items():
        endpoints = []
        for endpoint in cluster.endpoints:
            target = f"builtin {endpoint.builtin}" if endpoint.builtin else str(endpoint.address)
            endpoints.append(
                target + (f" (weight {endpoint.weight})" if endpoint.weight != 1 else "")
            )
        ctmo = cluster.timeouts
        clusters.add_row(
            escape(name),
            cluster.policy,
            escape("\n".join(endpoints)),
            f"connect {format_duration(ctmo.connect)},"
            f" headers {format_duration(ctmo.response_headers)},"
            f" body idle {format_duration(ctmo.body_idle)}",
            f"{cluster.pool.max_idle} idle, {format_duration(cluster.pool.idle_timeout)}",
        )
    console.print(clusters)

    for path, message in advisories(config):
        console.print(f"[yellow]note[/yellow] {escape(path)}: {escape(message)}")


def register(app: typer.Typer) -> None:
    """Add ``backhaul check`` to the root app."""

    @app.command("check")
    def check(
        file: Path = typer.Argument(..., help="The YAML config file to validate."),
        as_json: bool = typer.Option(
            False, "--json", help="Print the validated config, units parsed, as JSON."
        ),
    ) -> None:
        """Validate an edge config and print what it would run (exit 2 if it is bad)."""
        try:
            config = load_file(file)
        except ConfigError as exc:
            err = _console(stderr=True)
            err.print(
                f"[red]✗[/red] {escape(exc.source)}: {len(exc.problems)} problem(s);"
                " nothing would start"
            )
            for path, message in exc.problems:
                err.print(f"  [bold]{escape(path or '<top>')}[/bold]: {escape(message)}")
            raise typer.Exit(exc.exit_code) from None
        if as_json:
            typer.echo(json.dumps(config.model_dump(mode="json"), indent=2))
            return
        render(config, str(file), _console())
