"""The public surface of backhaul.http is what the edge calls, and nothing more."""

from __future__ import annotations

import ast
from pathlib import Path

import backhaul.http


def test_exported_names() -> None:
    assert set(backhaul.http.__all__) == {
        "HOP_BY_HOP",
        "REASONS",
        "RequestFacts",
        "ResponseFacts",
        "Target",
        "encode_head",
        "inspect_request_head",
        "inspect_response_head",
        "parse_target",
        "problem_response",
    }
    for name in backhaul.http.__all__:
        assert getattr(backhaul.http, name) is not None


def test_policy_package_imports_no_io() -> None:
    forbidden = {"asyncio", "socket", "ssl", "uvloop", "httptools", "time", "datetime"}
    for path in Path(backhaul.http.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                modules = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not modules & forbidden, f"{path.name} imports {modules & forbidden}"


def test_facts_have_slots() -> None:
    facts = backhaul.http.inspect_request_head(b"1.1", [(b"Host", b"a")])
    assert not hasattr(facts, "__dict__")
