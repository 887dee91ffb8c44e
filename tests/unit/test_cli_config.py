"""The real CLI as a subprocess: `backhaul check` and `backhaul config schema/default`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backhaul.config import load_text

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "edge.yaml"


def backhaul(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "backhaul", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def test_check_the_example_prints_the_plan() -> None:
    result = backhaul("check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "is valid: 2 listener(s), 6 route(s), 4 cluster(s)" in out
    # listeners, routes with their match and action, clusters with endpoints
    assert "127.0.0.1:8080" in out and "[::1]:8081" in out
    assert "path = /healthz; methods GET,HEAD" in out
    assert "proxy → api (strip /v2)" in out
    assert "redirect 301 → https://reports.example.com{path}?{query}" in out
    assert "127.0.0.1:9002 (weight 2)" in out
    assert "builtin echo" in out
    assert "Traceback" not in result.stderr


def test_check_json_shows_parsed_units() -> None:
    result = backhaul("check", "--json", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["valid"] is True and doc["problems"] == [] and doc["source"] == str(EXAMPLE)
    data = doc["config"]
    assert data["listeners"][0]["address"] == "127.0.0.1:8080"
    assert data["listeners"][1]["address"] == "[::1]:8081"
    assert data["listeners"][0]["limits"]["body"] == 10 * 1024 * 1024  # 10MiB, in bytes
    assert data["listeners"][0]["timeouts"]["keepalive_idle"] == 60.0  # 1m, in seconds
    assert data["clusters"]["api"]["pool"]["idle_timeout"] == 90.0  # 1m30s
    assert data["clusters"]["api"]["health_checks"]["http"]["body_limit"] == 65536
    assert isinstance(doc["notes"], list)


def test_check_json_on_a_bad_file_is_json_too(tmp_path: Path) -> None:
    bad = tmp_path / "edge.yaml"
    bad.write_text(
        "listeners: [{address: '127.0.0.1:99999'}]\nroutes: [{proxy: {cluster: nope}}]\n"
    )
    result = backhaul("check", "--json", str(bad))
    assert result.returncode == 2
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["valid"] is False and doc["config"] is None and doc["source"] == str(bad)
    paths = {p["path"] for p in doc["problems"]}
    assert paths == {"listeners[0].address", "routes[0].proxy.cluster"}
    assert all("line 1" in p["message"] or "line 2" in p["message"] for p in doc["problems"])


def test_check_a_bad_file_exits_2_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "edge.yaml"
    bad.write_text(
        "listeners:\n"
        "  - address: 127.0.0.1:8080\n"
        "routes:\n"
        "  - proxy: {cluster: apj}\n"
        "clusters:\n"
        "  api:\n"
        "    endpoints: ['127.0.0.1:1', '127.0.0.1:99999']\n"
    )
    result = backhaul("check", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    err = result.stderr
    assert f"{bad}: 2 problem(s)" in err
    assert "clusters.api.endpoints[1].address: found '127.0.0.1:99999'" in err
    assert "above 65535" in err and "(line 7)" in err
    # the cross-check speaks at the same time, not once that is fixed
    assert "routes[0].proxy.cluster: found 'apj'" in err
    assert "did you mean 'api'?" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("syntax.yaml", "listeners: [\n", "YAML syntax error at line 2"),
        ("empty.yaml", "", "found an empty document"),
        ("list.yaml", "- 1\n", "found a list: expected a mapping"),
        ("missing.yaml", None, "found no such file"),
    ],
)
def test_check_whole_file_errors(
    tmp_path: Path, name: str, content: str | None, words: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = backhaul("check", str(path))
    assert result.returncode == 2
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_check_a_directory(tmp_path: Path) -> None:
    result = backhaul("check", str(tmp_path))
    assert result.returncode == 2
    assert "found a directory" in result.stderr


def test_check_help() -> None:
    result = backhaul("check", "--help")
    assert result.returncode == 0
    assert "Validate an edge config" in result.stdout


def test_config_schema_is_valid_json() -> None:
    result = backhaul("config", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == {
        "server_header",
        "workers",
        "access_log",
        "admin",
        "listeners",
        "routes",
        "clusters",
        "dns",
        "dhcp",
    }


def test_config_schema_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "edge.schema.json"
    result = backhaul("config", "schema", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["title"] == "backhaul edge config"


def test_config_default_round_trips_through_check(tmp_path: Path) -> None:
    result = backhaul("config", "default")
    assert result.returncode == 0, result.stderr
    cfg = load_text(result.stdout, "default")
    assert cfg.clusters["demo"].endpoints[0].builtin == "echo"
    file = tmp_path / "edge.yaml"
    file.write_text(result.stdout)
    checked = backhaul("check", str(file))
    assert checked.returncode == 0, checked.stderr
    assert "proxy → demo" in checked.stdout


def test_config_without_subcommand_shows_help() -> None:
    result = backhaul("config")
    assert "schema" in result.stdout + result.stderr
    assert "default" in result.stdout + result.stderr


def test_check_shows_the_access_log_beside_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "edge.yaml").write_text(
        "listeners: [{address: '127.0.0.1:8080'}]\naccess_log: {path: access.log}\n"
    )
    result = backhaul("check", "--json", "conf/edge.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["config"]["access_log"]["path"] == str(conf / "access.log")
