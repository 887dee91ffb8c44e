"""``backhaul serve``: run the edge (embedded default, quick mode, or a config file)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import typer

from backhaul.errors import UsageError

__all__ = ["register"]


def serve(
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        metavar="FILE",
        help="YAML config file (see `backhaul config schema`).",
    ),
    to: str | None = typer.Option(
        None,
        "--to",
        metavar="URL",
        help="Quick mode: proxy everything to this upstream, e.g. http://127.0.0.1:3000.",
    ),
    listen: str | None = typer.Option(
        None,
        "--listen",
        metavar="ADDRESS",
        help="Quick mode (with --to): the address to listen on, default 127.0.0.1:8080 "
        "(`:8080` means every IPv4 address).",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-w",
        min=1,
        metavar="N",
        help="Worker processes (default: config, then CPUs).",
    ),
    access_log: str | None = typer.Option(
        None,
        "--access-log",
        metavar="FILE",
        help="Access-log destination: a file, `-` for stdout, `off`.",
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", help="Quick mode: serve HTTPS with this PEM certificate (chain)."
    ),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Quick mode: its private key."),
    tls_internal: bool = typer.Option(
        False, "--tls-internal", help="Quick mode: HTTPS with a certificate from `backhaul ca`."
    ),
) -> None:
    """Run the edge.

    With no options it serves the embedded default: a listener on 127.0.0.1:8080 proxying to
    two built-in demo endpoints (try `curl localhost:8080/`).
    """
    from backhaul.config import default_config, quick_config
    from backhaul.config.load import load_bytes, read_config_bytes
    from backhaul.edge.candidate import apply_access_log
    from backhaul.edge.supervisor import serve as run

    if config is not None and to is not None:
        raise UsageError("use either --config or --to, not both")
    if listen is not None and to is None:
        raise UsageError(
            "--listen goes with --to (quick mode); with a config file, set listeners[].address"
        )
    tls = _quick_tls(tls_cert, tls_key, tls_internal)
    if tls is not None and to is None:
        raise UsageError(
            "--tls-cert/--tls-key/--tls-internal go with --to (quick mode); with a config"
            " file, set listeners[].tls"
        )
    digest = None
    if config is not None:
        raw = read_config_bytes(config)
        digest = hashlib.sha256(raw).hexdigest()  # of the bytes validated: reported on reload
        cfg = load_bytes(raw, str(config), str(config.absolute().parent))
    elif to is not None:
        cfg = quick_config(to, listen or ("127.0.0.1:8443" if tls else "127.0.0.1:8080"), tls)
    else:
        cfg = default_config()
    cfg = apply_access_log(cfg, access_log)
    if cfg.dns is not None and not cfg.listeners and cfg.dhcp is None:  # only the DNS service
        from backhaul.services.dns.process import serve as run_dns

        raise typer.Exit(run_dns(cfg.dns, cfg.clusters))
    if cfg.dhcp is not None:
        from backhaul.services.dhcp.service import check_interfaces

        check_interfaces(cfg.dhcp)
    if (
        not cfg.listeners and cfg.dhcp is not None and cfg.dns is None
    ):  # only DHCP: serve it in the foreground
        from backhaul.services.dhcp.service import run as run_dhcp

        dhcp = cfg.dhcp
        if cfg.admin is not None and dhcp.metrics_address is None:
            dhcp = dhcp.model_copy(update={"metrics_address": cfg.admin.address})
        raise typer.Exit(run_dhcp(dhcp))
    # The supervisor runs with the control process (admin API, health checks) that the
    # admin layer gives it: backhaul.admin.supervise builds both.
    entry = "backhaul.admin.supervise"
    raise typer.Exit(
        run(cfg, workers, config_file=config, access_log=access_log, digest=digest, entry=entry)
    )


def _quick_tls(cert: Path | None, key: Path | None, internal: bool) -> dict[str, object] | None:
    """The listener's ``tls`` block from the quick-mode flags (None: plain HTTP)."""
    if internal:
        if cert is not None or key is not None:
            raise UsageError("use either --tls-internal or --tls-cert/--tls-key, not both")
        return {"internal": True}
    if (cert is None) != (key is None):
        raise UsageError("--tls-cert and --tls-key go together: give both")
    if cert is None or key is None:
        return None
    return {"cert": str(cert), "key": str(key)}


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
