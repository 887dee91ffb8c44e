"""The namespace lab itself: teardown on failure, impairments, the ``backhaul lab`` command."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from backhaul.errors import UsageError
from backhaul.tools.lab import ROLES, Lab, LabError, lab_unavailable_reason

from .conftest import BACKHAUL, assert_one_line_error

needs_netns = pytest.mark.skipif(
    lab_unavailable_reason() is not None, reason=f"no namespace lab: {lab_unavailable_reason()}"
)


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def _leftovers(lab: Lab) -> list[str]:
    names = {lab.namespace(role) for role in ROLES}
    left = sorted(names & _namespaces())
    left += [n for n in names if (Path("/etc/netns") / n).exists()]
    return left


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="unknown link"):
        Lab("bhx", loss={"r9-r10": 5})
    with pytest.raises(UsageError, match="within 0-100"):
        Lab("bhx", loss={"r1-r2": 101})
    with pytest.raises(UsageError, match="bad rate"):
        Lab("bhx", rate={"r1-r2": "fast"})
    with pytest.raises(UsageError, match="bad lab name"):
        Lab("Bad Name")
    for link in ("client-r1", "r1-r2", "r2-server"):  # every link carries IPv6
        with pytest.raises(UsageError, match=r"mtu 1279 on .* at least 1280 \(RFC 8200\)"):
            Lab("bhx", mtu={link: 1279})
    assert Lab("bhx", mtu={"r1-r2": 1280}).mtu == {"r1-r2": 1280}


def test_mtu_below_ipv6_minimum_is_refused_by_the_command(run_cli):
    done = run_cli(["lab", "up", "--name", "bhx", "--mtu", "r1-r2=100"])
    line = assert_one_line_error(done, 2)
    assert "mtu 100 on r1-r2 is not within 1280-65535" in line and "IPv6" in line


@pytest.mark.netns
@needs_netns
def test_torn_down_when_the_body_fails_and_when_building_fails(monkeypatch):
    lab = Lab(f"bhf{os.getpid()}")
    with pytest.raises(RuntimeError, match="test body failed"), lab:
        assert {lab.namespace(r) for r in ROLES} <= _namespaces()
        assert lab.run("client", ["ip", "-br", "addr"]).returncode == 0
        raise RuntimeError("test body failed")
    assert _leftovers(lab) == []

    def broken_routes(self):
        raise LabError("injected failure while routing")

    monkeypatch.setattr(Lab, "_routes", broken_routes)
    with pytest.raises(LabError, match="injected"):
        Lab(f"bhf{os.getpid()}").up()
    assert _leftovers(lab) == []


@pytest.mark.netns
@needs_netns
def test_lab_command_up_status_down(run_cli):
    name = f"bhc{os.getpid()}"
    try:
        done = run_cli(
            ["lab", "up", "--name", name, "--loss", "r1-r2=10", "--mtu", "r2-server=1400"]
        )
        assert done.returncode == 0, done.stderr
        hints = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
        assert hints["try"] == f"ip netns exec {name}-client {BACKHAUL} trace server.lab"
        assert hints["done"] == f"{BACKHAUL} lab down --name {name}"
        # The hint works as printed where the venv is not on PATH (sudo's secure_path).
        tried = subprocess.run(
            [*shlex.split(hints["try"]), "-q", "1", "-w", "2"],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        assert tried.returncode == 0, tried.stderr
        assert "server.lab" in tried.stdout
        again = run_cli(["lab", "up", "--name", name])
        assert f"run `{BACKHAUL} lab down --name {name}` first" in assert_one_line_error(again, 1)
        done = run_cli(["lab", "status", "--name", name, "--json"])
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert status["up"] and [h["namespace"] for h in status["hosts"]] == [
            f"{name}-client",
            f"{name}-r1",
            f"{name}-r2",
            f"{name}-server",
        ]
        links = {link["link"]: link for link in status["links"]}
        assert links["r1-r2"]["loss_percent"] == 10 and links["client-r1"]["loss_percent"] == 0
        assert links["r2-server"]["mtu"] == 1400
    finally:
        done = run_cli(["lab", "down", "--name", name])
    assert done.stdout.strip() == f"lab {name} removed"
    assert not {f"{name}-{r}" for r in ("client", "r1", "r2", "server")} & _namespaces()
    assert run_cli(["lab", "status", "--name", name]).returncode == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privilege needs root to start from")
def test_without_root_lab_up_says_why(run_cli):
    done = run_cli(["lab", "up", "--name", f"bhn{os.getpid()}"], unprivileged=True)
    line = assert_one_line_error(done, 2)
    assert "need root" in line and f"`sudo {BACKHAUL} lab up`" in line
