"""``backhaul config``: the config format itself — its JSON Schema and the embedded default.

``backhaul config schema > edge.schema.json`` gives editors completion and checks for the
YAML (e.g. a ``# yaml-language-server: $schema=edge.schema.json`` first line);
``backhaul config default > edge.yaml`` starts a config from the embedded default.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from backhaul.config import DEFAULT_YAML, json_schema
from backhaul.errors import UsageError

config_app = typer.Typer(
    name="config",
    help="The config format: its JSON Schema and the embedded default.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}; pick another path") from exc


@config_app.command("schema")
def schema(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write to this file instead of standard output."
    ),
) -> None:
    """Print the JSON Schema (draft 2020-12) of the edge config YAML."""
    _write(json.dumps(json_schema(), indent=2) + "\n", output)


@config_app.command("default")
def default(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write to this file instead of standard output."
    ),
) -> None:
    """Print the embedded default config as YAML (what `backhaul serve` runs alone)."""
    _write(DEFAULT_YAML, output)


def register(app: typer.Typer) -> None:
    """Add ``backhaul config`` to the root app."""
    app.add_typer(config_app, name="config")
