"""Fixtures for the toolbox tests: the namespace lab and a way to run the CLI.

The ``lab`` fixture builds client - router1 - router2 - server once per session
(:mod:`backhaul.tools.lab`), with a name unique to this pytest process, and always tears it
down. It skips, saying why, where network namespaces cannot be made (not root, no iproute2).
Only the lab's namespaces and loopback are ever sent traffic.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from backhaul.tools.lab import Lab, LabUnavailable, lab_unavailable_reason

BACKHAUL = str(Path(sys.executable).with_name("backhaul"))

RunCli = Callable[..., subprocess.CompletedProcess[str]]

#: Runs a command as root with no capabilities at all (effective, permitted, inheritable,
#: ambient, bounding set), so that it cannot regain any through exec.
DROP_CAPABILITIES = [
    "setpriv",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--bounding-set=-all",
    "--",
]


def _remove_stale_labs() -> None:
    """Labs left by earlier test runs that were killed (their pid is gone)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    # bht: the session lab; bhf, bhc: the labs test_lab.py builds and removes itself
    for prefix, pid_text in set(re.findall(r"^(bh[tfc])(\d+)-\w+", listed, re.M)):
        pid = int(pid_text)
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            Lab(f"{prefix}{pid}").down(missing_ok=True)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    reason = lab_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no namespace lab: {reason}")
    _remove_stale_labs()
    built = Lab(f"bht{os.getpid()}")
    try:
        built.up()  # tears down what it built when it fails
    except LabUnavailable as exc:
        pytest.skip(f"no namespace lab: {exc}")
    try:
        yield built
    finally:
        built.down()


@pytest.fixture(scope="session")
def run_cli() -> RunCli:
    """``run_cli(args, ns=None, timeout=30, unprivileged=False)``: the backhaul CLI as a
    subprocess, optionally inside a lab namespace (``ns`` is a role such as ``"client"``, with
    ``lab=``), optionally with every capability dropped (still uid 0, so the venv stays
    readable wherever the checkout is)."""

    def run(
        args: Sequence[str],
        *,
        lab: Lab | None = None,
        role: str = "client",
        timeout: float = 30.0,
        unprivileged: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        argv = [BACKHAUL, *args]
        if unprivileged:
            # Root without any capability: what an ordinary user may do, while files that
            # only root may read (a checkout in /root) stay readable to the owner.
            argv = [*DROP_CAPABILITIES, *argv]
        if lab is not None:
            argv = lab.command(role, argv)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    return run


def run_main(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The real entry point, in-process (for fast bad-usage checks): (exit code, out, err)."""
    from backhaul.cli.app import main

    saved = sys.argv
    sys.argv = ["backhaul", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and one clear line on stderr, no traceback."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]
