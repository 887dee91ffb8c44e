"""The packages of backhaul import each other without cycles (ARCHITECTURE.md: each layer
imports only the layers below it), read from the source: every ``import`` statement counts,
module-level or inside a function, except those under ``if TYPE_CHECKING:``."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import backhaul

SOURCE = Path(backhaul.__file__).parent

#: Cycles that exist today, each with what removes it. A new one fails the test.
KNOWN = {
    # the DHCP service serves its metrics with the admin server when it runs alone
    ("services", "admin"),
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(inner) for inner in ast.walk(node))
    return skip


def import_graph() -> dict[tuple[str, str], list[str]]:
    """``(package, package it imports)`` -> the imports that make the edge."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in SOURCE.rglob("*.py"):
        module = ".".join(path.relative_to(SOURCE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module]
            else:
                continue
            for target in targets:
                if not target.startswith("backhaul."):
                    continue
                a, b = _package(module), _package(target)
                if a and b and a != b:
                    edges[(a, b)].append(f"{module} imports {target}")
    return edges


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(graph) | {b for _, b in edges}):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert cycles({("a", "b"), ("b", "c")}) == []


def test_no_import_cycle_between_packages() -> None:
    graph = import_graph()
    edges = set(graph) - KNOWN
    found = cycles(edges)
    detail = [
        f"{a} -> {b}: {graph[(a, b)][0]}"
        for component in found
        for a in component
        for b in component
        if (a, b) in edges
    ]
    assert not found, "import cycles between packages:\n" + "\n".join(detail)


def test_config_and_policy_do_not_import_each_other() -> None:
    """The config (pydantic) and the balance policy share only the vocabulary below both."""
    graph = import_graph()
    assert ("config", "balance") not in graph, graph[("config", "balance")]
    assert ("balance", "config") not in graph, graph[("balance", "config")]
    assert not [edge for edge in graph if edge[0] == "vocabulary"]
    assert ("config", "vocabulary") in graph and ("balance", "vocabulary") in graph
