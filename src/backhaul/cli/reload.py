"""``backhaul reload``: make a running edge re-read its config file, and say how it went.

The edge is found by its pid file (:mod:`backhaul.edge.runfiles`): the one for ``--config
FILE``, or the supervisor ``--pid N``. The command sends it SIGHUP and waits (bounded) for the
attempt to finish in the status file the supervisor rewrites after each one. Exit 0 when the
new config runs (or the file validates to the config already running), 2 when it was refused
(the old config keeps serving; the problems are printed as ``backhaul check`` prints them), 1
when no edge answers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import typer

from backhaul.errors import ConfigError, NoAnswer, UsageError

__all__ = ["register", "request_reload"]


def request_reload(pid: int, timeout: float) -> dict[str, Any]:
    """SIGHUP supervisor ``pid`` and wait up to ``timeout`` seconds for the attempt's
    outcome (its status file); :class:`NoAnswer` when none comes."""
    from backhaul.edge import runfiles

    before = runfiles.read_status(pid)
    if before is None:
        raise NoAnswer(
            f"supervisor {pid} has no status file {runfiles.status_path(pid)}: it is not a"
            " backhaul edge, or it runs with another BACKHAUL_RUN_DIR/XDG_RUNTIME_DIR"
        )
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise NoAnswer(f"supervisor {pid} is gone") from exc
    except PermissionError as exc:
        raise UsageError(f"no permission to signal process {pid}: run as its user") from exc
    deadline = time.monotonic() + timeout
    while True:
        now = runfiles.read_status(pid)
        if now is not None and now.get("attempts", 0) > before.get("attempts", 0):
            return {**now, "changed": now.get("generation") != before.get("generation")}
        if not runfiles.supervisor_alive(pid):
            raise NoAnswer(f"supervisor {pid} exited during the reload")
        if time.monotonic() > deadline:
            raise NoAnswer(
                f"supervisor {pid} did not finish the reload within {timeout:g}s; see its log"
            )
        time.sleep(0.05)


def register(app: typer.Typer) -> None:
    """Add ``backhaul reload`` to the root app."""

    @app.command("reload")
    def reload(
        config: Path | None = typer.Option(
            None,
            "--config",
            "-c",
            metavar="FILE",
            help="The config file the edge was started with (`backhaul serve -c FILE`).",
        ),
        pid: int | None = typer.Option(
            None, "--pid", metavar="PID", help="The edge's supervisor process id instead."
        ),
        timeout: float = typer.Option(
            60.0, "--timeout", metavar="SECONDS", help="How long to wait for the outcome."
        ),
        as_json: bool = typer.Option(
            False,
            "--json",
            help='Print the outcome as JSON: {"attempts", "generation", "last_ok",'
            ' "last_error", "digest", "last_attempt_unix", "started_unix", "pid",'
            ' "config_file", "workers", "changed"}; "changed" is false when the file'
            " validated to the config already running.",
        ),
    ) -> None:
        """Reload a running edge's config: validated first, applied only if good.

        A bad file changes nothing (the old config keeps serving) and exits 2 with its
        problems; new workers start on a good one while the old ones finish their requests.
        """
        from backhaul.edge import runfiles

        if config is not None and pid is not None:
            raise UsageError("use either --config or --pid, not both")
        if timeout <= 0:
            raise UsageError("--timeout must be more than 0 seconds")
        if pid is None:
            found = runfiles.read_pid(str(config) if config is not None else None)
            if found is None:
                where = runfiles.pid_path(str(config) if config is not None else None)
                what = f"-c {config}" if config is not None else "without --config"
                raise NoAnswer(
                    f"no running edge was started {what} (no live supervisor in {where});"
                    " start one with `backhaul serve`, or give --pid"
                )
            pid = found[0]
        outcome = request_reload(pid, timeout)
        if as_json:
            typer.echo(json.dumps(outcome, indent=2))
            if not outcome.get("last_ok"):
                raise typer.Exit(ConfigError.exit_code)
            return
        if not outcome.get("last_ok"):
            error = str(outcome.get("last_error") or "refused")
            first, _, rest = error.partition("\n")
            typer.echo(f"backhaul: reload refused: {first}", err=True)
            if rest:
                typer.echo(rest, err=True)
            raise typer.Exit(ConfigError.exit_code)
        workers = " ".join(str(p) for p in outcome.get("workers", []))
        what = "reloaded" if outcome["changed"] else "unchanged in effect"
        typer.echo(
            f"{what}: generation {outcome.get('generation')}, sha256"
            f" {outcome.get('digest')}, supervisor {pid}, workers {workers}"
        )
