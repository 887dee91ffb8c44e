"""``--help`` reads like curl's and dig's: names and one metavar per option, no Python types."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from backhaul.cli.app import app

BACKHAUL = str(Path(sys.executable).with_name("backhaul"))


def command_paths() -> Iterator[tuple[str, ...]]:
    root = typer.main.get_command(app)

    def walk(command: object, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, (*path, name))

    yield from walk(root, ())


PATHS = list(command_paths())


def help_text(*path: str) -> str:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    done = subprocess.run(
        [BACKHAUL, *path, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_every_command_is_covered() -> None:
    assert {("ping",), ("trace",), ("dig",), ("check",), ("serve",), ("lab", "up")} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "backhaul")
def test_help_shows_no_python_types_and_cuts_nothing(path: tuple[str, ...]) -> None:
    text = help_text(*path)
    assert text.startswith(f"Usage: backhaul {' '.join(path)}".replace("  ", " "))
    # typer's type column and brace-wrapped arguments
    assert not re.search(r"<(bool|int|float|str|path|list\[[a-z]+\]|int range)>", text), text
    assert "{" not in text.splitlines()[0], text
    # text meant for rich markup, and pointers to somewhere else
    assert "\\[" not in text and "see module docs" not in text, text
    # a command summary is never cut off at the terminal's width
    assert not re.search(r"[a-z]\.\.\.$", text, re.M), text
    assert "╭" not in text and "│" not in text  # no boxes


def test_flags_show_no_metavar_and_values_show_one() -> None:
    root = help_text()
    assert re.search(r"^  --version\s{2,}Print the version and exit\.$", root, re.M), root
    assert re.search(r"^  -h, --help\s{2,}Show this message and exit\.$", root, re.M), root
    ping = help_text("ping")
    assert "Usage: backhaul ping [OPTIONS] TARGET..." in ping
    assert re.search(r"^  -c, --count N\s{2,}Stop after", ping, re.M), ping
    assert re.search(r"^  -W, --timeout SECONDS\s{2,}", ping, re.M), ping
    assert re.search(r"^  -q, --quiet\s{2,}Only the summary\.$", ping, re.M), ping
    serve = help_text("serve")
    assert re.search(r"^  -w, --workers N\s{2,}Worker processes", serve, re.M), serve
    assert "(default: config, then CPUs). [at least 1]" in " ".join(serve.split()), serve


def test_json_help_gives_the_shape() -> None:
    assert '{"targets": [{"target",' in help_text("ping")
    assert '"hops": [{"ttl", "probes":' in " ".join(help_text("trace").split())
    lab = " ".join(help_text("lab", "status").split())
    assert '"links": [{"link", "loss_percent", "rate", "mtu"}]' in lab


def test_dig_help_keeps_its_brackets() -> None:
    text = help_text("dig")
    assert '{"trace": [pair, ...], "rootHints"' in " ".join(text.split())
    assert "+[no]recurse" in text and "-b SOURCE[#PORT]" in text
    assert "Usage: backhaul dig [OPTIONS] [@server] [name] [type]" in text
    assert "--resolv-conf FILE" in text
