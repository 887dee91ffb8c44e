"""Where a running edge is found: the run directory, pid and status files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backhaul.edge import runfiles
from backhaul.state.reload_status import ReloadStatus


def test_run_dir_precedence() -> None:
    assert runfiles.run_dir({"BACKHAUL_RUN_DIR": "/x", "XDG_RUNTIME_DIR": "/y"}) == "/x"
    assert runfiles.run_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == "/run/user/7/backhaul"
    assert runfiles.run_dir({}) == f"/tmp/backhaul-{os.getuid()}"


def test_pid_file_is_per_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKHAUL_RUN_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    a = runfiles.pid_path("edge.yaml")
    assert a == runfiles.pid_path(str(tmp_path / "edge.yaml"))  # relative = absolute
    assert a != runfiles.pid_path("other.yaml")
    assert os.path.basename(runfiles.pid_path(None)) == "edge-nofile.pid"


def test_pid_and_status_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKHAUL_RUN_DIR", str(tmp_path / "run"))
    path = Path(runfiles.write_pid("edge.yaml", os.getpid()))
    assert path.read_text().splitlines()[0] == str(os.getpid())
    # this test process is no supervisor: its pid file is not taken for a running edge
    assert runfiles.read_pid("edge.yaml") is None
    assert not runfiles.supervisor_alive(os.getpid())
    status = ReloadStatus(digest="ab" * 32, started_unix=5.0)
    status.record(False, "bad", None, now=6.0)
    runfiles.write_status(os.getpid(), status.snapshot(), {"pid": os.getpid()})
    data = runfiles.read_status(os.getpid())
    assert data is not None
    assert (data["attempts"], data["last_ok"], data["last_error"]) == (1, False, "bad")
    runfiles.remove(os.getpid(), "edge.yaml")
    assert runfiles.read_status(os.getpid()) is None and not path.exists()
