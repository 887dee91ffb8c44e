"""The two set-up commands on a bare Debian: `make run` / `make test` install what
`python3 -m venv` and the compiled core need before they need it.

Removing python3-venv or gcc from this shared machine to watch them come back is not an
option, so the bare machine is made up: a PATH without gcc, an interpreter whose
``ensurepip`` is missing (as on Debian without python3-venv), and an ``apt-get`` that
writes down what it was asked to do. Everything else (bash, the script, make) is real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def bare_machine(tmp_path: Path, *, venv: bool, gcc: bool) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt-get.log"
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/bash\necho "$*" >> {log}\n')
    apt.chmod(0o755)
    for tool in ("id", "sort"):
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}")
    if gcc:
        (bin_dir / "gcc").symlink_to("/usr/bin/gcc")
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    if not venv:
        (shadow / "ensurepip.py").write_text("raise ImportError('no ensurepip (python3-venv)')\n")
    python = bin_dir / "python3"
    python.write_text(f'#!/bin/bash\nexport PYTHONPATH={shadow}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = {"PATH": str(bin_dir), "PYTHON": str(python), "HOME": str(tmp_path)}
    return env, log


def sysdeps_build(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "sysdeps.sh"), "build"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="sysdeps.sh installs only as root")
def test_a_bare_debian_gets_venv_and_a_compiler(tmp_path: Path) -> None:
    env, log = bare_machine(tmp_path, venv=False, gcc=False)
    done = sysdeps_build(env)
    assert done.returncode == 0, done.stderr
    assert "installing gcc python3-venv" in done.stdout
    calls = log.read_text().splitlines()
    assert calls[0] == "-o DPkg::Lock::Timeout=600 update -qq"
    assert calls[1] == (
        "-o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends gcc python3-venv"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="sysdeps.sh installs only as root")
def test_nothing_is_installed_when_nothing_is_missing(tmp_path: Path) -> None:
    env, log = bare_machine(tmp_path, venv=True, gcc=True)
    done = sysdeps_build(env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and not log.exists()


@pytest.mark.parametrize("target", ["run", "test"])
def test_make_installs_them_before_making_the_venv(tmp_path: Path, target: str) -> None:
    done = subprocess.run(
        ["make", "-n", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    build = next(i for i, line in enumerate(lines) if "sysdeps.sh build" in line)
    venv = next(i for i, line in enumerate(lines) if " -m venv " in line)
    assert build < venv, lines
