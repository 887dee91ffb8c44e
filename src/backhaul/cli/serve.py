"""``backhaul serve``: run the edge (embedded default, quick mode, or a config file)."""

from __future__ import annotations

from pathlib import Path

import typer

from backhaul.errors import UsageError

__all__ = ["register"]


def serve(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML config file (see `backhaul config schema`)."
    ),
    to: str | None = typer.Option(
        None,
        "--to",
        help="Quick mode: proxy everything to this upstream, e.g. http://127.0.0.1:3000.",
    ),
    listen: str = typer.Option(
        "127.0.0.1:8080",
        "--listen",
        help="Quick mode: the address to listen on (`:8080` means every interface).",
    ),
    workers: int | None = typer.Option(
        None, "--workers", "-w", min=1, help="Worker processes (default: config, then CPUs)."
    ),
    access_log: str | None = typer.Option(
        None, "--access-log", help="Access-log destination: a file, `-` for stdout, `off`."
    ),
) -> None:
    """Run the edge.

    With no options it serves the embedded default: a listener on 127.0.0.1:8080 proxying to
    two built-in demo endpoints (try `curl localhost:8080/`).
    """
    from backhaul.config import default_config, load_file, quick_config
    from backhaul.edge.supervisor import serve as run

    if config is not None and to is not None:
        raise UsageError("use either --config or --to, not both")
    if config is not None:
        cfg = load_file(config)
    elif to is not None:
        cfg = quick_config(to, listen)
    else:
        cfg = default_config()
    if access_log is not None:
        log = cfg.access_log
        if access_log == "off":
            log = log.model_copy(update={"enabled": False})
        else:
            log = log.model_copy(update={"enabled": True, "path": access_log})
        cfg = cfg.model_copy(update={"access_log": log})
    raise typer.Exit(run(cfg, workers))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
