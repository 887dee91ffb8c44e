"""The ``backhaul`` command: a thin typer front over the library.

Each command group lives in its own module under ``backhaul.cli`` and exposes
``register(app)``. Errors from the library are printed as one clear message, never a
traceback, with the error's exit code.
"""

from __future__ import annotations

import importlib
import sys

import typer

from backhaul import __version__
from backhaul.cli.help_format import PlainGroup
from backhaul.errors import BackhaulError

COMMAND_MODULES = (
    "serve",
    "reload",
    "check",
    "config",
    "curl",
    "api",
    "bench",
    "subnet",
    "ping",
    "trace",
    "dig",
    "lab",
    "dhcp",
    "ca",
    "dns",
    "capture",
    "iperf",
)

app = typer.Typer(
    name="backhaul",
    help="Command the network your services live on: edge gateway, network services, toolbox.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help, laid out like curl's and dig's: no type column, no boxes, and help text is
    # printed as written (rich markup would eat "[...]" in it).
    rich_markup_mode=None,
    cls=PlainGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backhaul {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Command the network your services live on."""


def _register_all() -> None:
    # Import only the command being run (each pulls in its own dependencies: pydantic,
    # dnspython, the edge...); --help and unknown words import them all to list them.
    wanted = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    names = (wanted,) if wanted in COMMAND_MODULES else COMMAND_MODULES
    for name in names:
        try:
            module = importlib.import_module(f"backhaul.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"backhaul.cli.{name}":
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    """Entry point: run the app, turning backhaul errors into one line and an exit code."""
    try:
        app()
    except BackhaulError as exc:
        print(f"backhaul: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
