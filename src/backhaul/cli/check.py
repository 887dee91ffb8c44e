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

from backhaul.balance.healthcheck import format_status_ranges
from backhaul.config import EdgeConfig, format_duration, format_size, load_file
from backhaul.config.check_report import check_report
from backhaul.config.dhcp import DhcpConfig
from backhaul.config.dns import DnsConfig
from backhaul.config.model import Cluster, Listener, Retries, Route, advisories
from backhaul.errors import ConfigError


def _console(stderr: bool = False) -> Console:
    # emoji=False: a MAC such as 02:ab:... is data, not the ":ab:" emoji code
    console = Console(highlight=False, stderr=stderr, emoji=False)
    if not console.is_terminal:  # piped: do not wrap rows at 80 columns
        console = Console(highlight=False, stderr=stderr, emoji=False, width=200, soft_wrap=True)
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
        if proxy.retries is not None:
            tail += f"; {describe_retries(proxy.retries)}"
        if proxy.retry_non_idempotent:
            tail += "; non-idempotent methods retried too"
        return f"proxy → {proxy.cluster}{tail}"
    if route.redirect is not None:
        return f"redirect {route.redirect.status} → {route.redirect.to}"
    assert route.respond is not None
    respond = route.respond
    return f"respond {respond.status} {respond.content_type} ({len(respond.body)} chars)"


def describe_tls(listener: Listener) -> str:
    """``https (2 certificates by SNI, TLS 1.2+, mTLS require)``, ``http → https:443``."""
    tls = listener.tls
    if tls is None:
        redirect = listener.redirect_https
        return listener.protocol if redirect is None else f"http → https:{redirect.port}"
    if tls.internal:
        source = "built-in CA"
    else:
        n = len(tls.certificates)
        source = f"{n} certificates by SNI" if n > 1 else "1 certificate"
    parts = [source, f"TLS {tls.min_version}+"]
    if tls.unknown_sni == "refuse":
        parts.append("unknown SNI refused")
    if tls.client_auth is not None:
        parts.append(f"mTLS {tls.client_auth.mode}")
    return f"https ({', '.join(parts)})"


def describe_retries(retries: Retries, detail: bool = False) -> str:
    """``retries 1: connect-failure, reset, 502-504`` (and, with ``detail``, a second line
    with the per-try timeout and the backoff)."""
    if retries.max_retries == 0 or not retries.retry_on:
        return "no retries"
    words = [str(x) for x in retries.retry_on if isinstance(x, str)]
    statuses = [x for x in retries.retry_on if isinstance(x, int)]
    ranges: list[tuple[int, int]] = []
    for status in statuses:
        if ranges and ranges[-1][1] == status - 1:
            ranges[-1] = (ranges[-1][0], status)
        else:
            ranges.append((status, status))
    if ranges:
        words.append(format_status_ranges(tuple(ranges)))
    text = f"retries {retries.max_retries}: {', '.join(words)}"
    if not detail:
        return text
    backoff = retries.backoff
    more = f"backoff {format_duration(backoff.base)}..{format_duration(backoff.max)}"
    if retries.per_try_timeout is not None:
        more = f"per try {format_duration(retries.per_try_timeout)}, {more}"
    return f"{text}\n{more}"


def describe_balancing(cluster: Cluster) -> str:
    """The policy and what tunes it, one fact per line."""
    lines = [cluster.policy]
    if cluster.policy == "least_request":
        lines.append(f"latency decay {format_duration(cluster.least_request.latency_decay)}")
    elif cluster.policy == "ring_hash":
        lines.append(f"{cluster.ring_hash.virtual_nodes} points per weight")
    elif cluster.policy == "maglev":
        lines.append(f"table {cluster.maglev.table_size}")
    key = cluster.hash_key
    if key is not None:
        lines.append(f"key: {key.source}" + (f" {key.name}" if key.name else ""))
    sticky = cluster.sticky
    if sticky is not None:
        age = "session" if sticky.max_age is None else format_duration(float(sticky.max_age))
        lines.append(f"sticky: cookie {sticky.cookie}, {age}")
    slow = cluster.slow_start
    if slow.window > 0:
        lines.append(f"slow start {format_duration(slow.window)} from {slow.min_weight_percent:g}%")
    panic = cluster.panic_threshold
    lines.append(f"panic under {panic:g}% healthy" if panic > 0 else "no panic mode")
    return "\n".join(lines)


def describe_health(cluster: Cluster) -> str:
    """Active checks and outlier detection, one fact per line."""
    lines: list[str] = []
    checks = cluster.health_checks
    if checks is None:
        lines.append("no active checks")
    else:
        http = checks.http
        if http is not None:
            lines.append(
                f"http {http.method} {http.path} → {format_status_ranges(http.expected_statuses)}"
            )
            extras = [f"Host {http.host}"] if http.host is not None else []
            if http.body_contains is not None:
                extras.append(f"body has {http.body_contains!r}")
            if http.body_regex is not None:
                extras.append(f"body ~ {http.body_regex}")
            if extras:
                lines.append(", ".join(extras))
        else:
            lines.append("tcp connect")
        every = f"every {format_duration(checks.interval)}"
        if checks.jitter > 0:
            every += f" +≤{format_duration(checks.jitter)}"
        if checks.unhealthy_interval is not None:
            every += f" (sick {format_duration(checks.unhealthy_interval)})"
        lines.append(f"{every}, timeout {format_duration(checks.timeout)}")
        lines.append(
            f"up after {checks.healthy_threshold}, down after {checks.unhealthy_threshold}"
        )
    outlier = cluster.outlier_detection
    if outlier is None:
        lines.append("no outlier detection")
    else:
        triggers = [
            f"{n}×{what}"
            for n, what in (
                (outlier.consecutive_5xx, "5xx"),
                (outlier.consecutive_connect_failures, "connect failure"),
            )
            if n
        ]
        lines.append(f"eject on {', '.join(triggers) or 'nothing'}")
        lines.append(
            f"for {format_duration(outlier.base_ejection_time)}.."
            f"{format_duration(outlier.max_ejection_time)}, ≤{outlier.max_ejection_percent:g}%"
            " of endpoints"
        )
    return "\n".join(lines)


def describe_resilience(cluster: Cluster) -> str:
    """Retries, their budget and the circuit breakers, one fact per line."""
    retries = cluster.retries
    budget = retries.budget
    caps = cluster.circuit_breakers
    return "\n".join(
        [
            describe_retries(retries, detail=True),
            f"budget {budget.percent:g}% (min {budget.min_retry_concurrency})",
            f"caps {caps.max_connections} conn/{caps.max_pending} pending/{caps.max_requests} req",
        ]
    )


def describe_dns(dns: DnsConfig) -> str:
    """The DNS section in a few lines."""
    lines = [f"dns: {', '.join(f'udp+tcp {a}' for a in dns.listen)}, {dns.workers} worker(s)"]
    zones = [z.origin or (z.file or "") for z in dns.zones]
    if zones or dns.local or dns.hosts:
        lines.append(
            f"  data: zones {', '.join(zones) or 'none'}; local {', '.join(dns.local) or 'none'};"
            f" hosts files {len(dns.hosts)}; automatic PTR {'on' if dns.auto_ptr else 'off'}"
        )
    if dns.forward is not None:
        ups = ", ".join(str(a) for a in dns.forward.upstreams) or "none"
        cond = "; ".join(
            f"{z} -> {', '.join(str(a) for a in ups_)}" for z, ups_ in dns.forward.zones.items()
        )
        lines.append(
            f"  forward: {ups}" + (f"; {cond}" if cond else "") + f"; cache"
            f" {dns.cache.max_entries} entries, serve-stale"
            f" {format_duration(dns.cache.serve_stale) if dns.cache.serve_stale else 'off'};"
            f" recursion for {', '.join(dns.allow_recursion)}"
        )
    if dns.services is not None:
        lines.append(f"  services: <cluster>.{dns.services.domain} (TTL {dns.services.ttl}s)")
    if dns.rate_limit is not None:
        lines.append(f"  rate limit: {dns.rate_limit.responses_per_second:g}/s per client net")
    return "\n".join(escape(line) for line in lines)


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
        + (
            f" {config.admin.address} (metrics {escape(config.admin.metrics_path)})"
            if config.admin
            else " off"
        )
    )

    listeners = Table(title="listeners", title_justify="left")
    for column in ("name", "address", "protocol", "limits", "timeouts"):
        listeners.add_column(column)
    for listener in config.listeners:
        lim, tmo = listener.limits, listener.timeouts
        listeners.add_row(
            escape(listener.name),
            str(listener.address),
            escape(describe_tls(listener)),
            f"line {format_size(lim.request_line)}, head {format_size(lim.header_bytes)}"
            f"/{lim.header_count}, body {format_size(lim.body)}",
            f"head {format_duration(tmo.request_headers)}, body idle"
            f" {format_duration(tmo.body_idle)}, keep-alive {format_duration(tmo.keepalive_idle)},"
            f" drain {format_duration(tmo.drain)}",
        )
    if config.listeners:  # a DNS- or DHCP-only config has none of these tables
        console.print(listeners)

    routes = Table(title="routes (first match wins)", title_justify="left")
    for column in ("#", "name", "listeners", "match", "action"):
        routes.add_column(column)
    for i, route in enumerate(config.routes):
        action = describe_action(route)
        if route.limits is not None and route.limits.body is not None:
            action += f"; body ≤ {format_size(route.limits.body)}"
        compress = route.compress
        if compress is not None:
            codings = "/".join(compress.encodings)
            action += f"; {codings} ≥ {format_size(compress.min_length)}, level {compress.level}"
        routes.add_row(
            str(i),
            escape(route.name),
            escape(", ".join(route.listeners)) if route.listeners else "all",
            escape(describe_match(route)),
            escape(action),
        )
    if config.routes:
        console.print(routes)

    clusters = Table(title="clusters", title_justify="left")
    for column in ("name", "balancing", "endpoints", "health", "resilience", "upstream"):
        clusters.add_column(column)
    for name, cluster in config.clusters.items():
        endpoints = []
        if cluster.endpoints_from is not None:
            spec = cluster.endpoints_from
            port = f" port {spec.port}" if spec.port else ""
            endpoints.append(
                f"from DNS: {spec.name} {spec.type}{port}, every {format_duration(spec.refresh)}"
            )
        for endpoint in cluster.endpoints:
            target = f"builtin {endpoint.builtin}" if endpoint.builtin else str(endpoint.address)
            notes = [f"weight {endpoint.weight}"] if endpoint.weight != 1 else []
            if endpoint.drain:
                notes.append("drain")
            endpoints.append(target + (f" ({', '.join(notes)})" if notes else ""))
        ctmo = cluster.timeouts
        clusters.add_row(
            escape(name),
            escape(describe_balancing(cluster)),
            escape("\n".join(endpoints)),
            escape(describe_health(cluster)),
            escape(describe_resilience(cluster)),
            f"connect {format_duration(ctmo.connect)}\n"
            f"headers {format_duration(ctmo.response_headers)}\n"
            f"body idle {format_duration(ctmo.body_idle)}\n"
            f"pool {cluster.pool.max_idle} idle, {format_duration(cluster.pool.idle_timeout)}",
        )
    if config.clusters:
        console.print(clusters)
    if config.dns is not None:
        console.print(describe_dns(config.dns))
    if config.dhcp is not None:
        render_dhcp(config.dhcp, console)

    for path, message in advisories(config):
        console.print(f"[yellow]note[/yellow] {escape(path)}: {escape(message)}")


def render_dhcp(dhcp: DhcpConfig, console: Console) -> None:
    """The DHCP section: one row per subnet."""
    table = Table(
        title=f"dhcp on {', '.join(dhcp.interfaces)} (leases in {dhcp.state_dir})",
        title_justify="left",
    )
    for column in ("subnet", "pools", "lease", "options", "reservations"):
        table.add_column(column)
    for subnet in dhcp.subnets:
        opts = subnet.options
        shown = [
            f"{name} {', '.join(str(v) for v in value)}"
            for name, value in (
                ("routers", opts.routers),
                ("dns", opts.dns_servers),
                ("ntp", opts.ntp_servers),
                ("search", opts.domain_search),
            )
            if value
        ]
        if opts.domain_name:
            shown.append(f"domain {opts.domain_name}")
        if opts.mtu:
            shown.append(f"mtu {opts.mtu}")
        if opts.routes:
            shown.append(f"{len(opts.routes)} static route(s)")
        table.add_row(
            str(subnet.subnet),
            "\n".join(f"{a}-{b}" for a, b in subnet.pools),
            format_duration(subnet.lease_time),
            escape("\n".join(shown) or "-"),
            escape(
                "\n".join(
                    f"{r.mac or r.client_id} → {r.address}"
                    + (f" ({r.hostname})" if r.hostname else "")
                    for r in subnet.reservations
                )
                or "-"
            ),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``backhaul check`` to the root app."""

    @app.command("check")
    def check(
        file: Path = typer.Argument(..., help="The YAML config file to validate."),
        as_json: bool = typer.Option(
            False,
            "--json",
            help='Print JSON, valid or not: {"source", "valid", "problems": [{"path",'
            ' "message"}], "config", "notes": [{"path", "message"}]}; "config" is null when'
            " the file is bad, else the config with every default filled in and units parsed:"
            " durations in seconds, sizes in bytes, addresses as host:port.",
        ),
    ) -> None:
        """Validate an edge config and print what it would run (exit 2 if it is bad)."""
        try:
            config = load_file(file)
        except ConfigError as exc:
            if as_json:
                typer.echo(json.dumps(check_report(exc, str(file)), indent=2))
                raise typer.Exit(exc.exit_code) from None
            err = _console(stderr=True)
            err.print(
                f"[red]✗[/red] {escape(exc.source)}: {len(exc.problems)} problem(s);"
                " nothing would start"
            )
            for path, message in exc.problems:
                err.print(f"  [bold]{escape(path or '<top>')}[/bold]: {escape(message)}")
            raise typer.Exit(exc.exit_code) from None
        if as_json:
            typer.echo(json.dumps(check_report(config, str(file)), indent=2))
            return
        render(config, str(file), _console())
