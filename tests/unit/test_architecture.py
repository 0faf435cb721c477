"""The architecture holds: imports point one way (pyproject's import-linter contracts), no
module imports itself back through others, and a kws import inside a function is there
only to keep a heavy dependency off a light path, and says so."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

from tests.helpers import REPO


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "0 broken" in proc.stdout


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycles_even_through_imports_inside_functions() -> None:
    graph = grimp.build_graph("kws", "kws_pipelines")
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert strongly_connected(edges) == []


def deferred_imports_without_reason(path: Path) -> list[str]:
    """kws imports inside functions whose line (or the line above) carries no comment."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("kws"):
                here, above = lines[inner.lineno - 1], lines[inner.lineno - 2]
                block_has_reason = any(
                    "#" in lines[i] for i in range(inner.lineno - 1, inner.end_lineno or 0)
                )
                if "#" not in here and not above.strip().startswith("#") and not block_has_reason:
                    found.append(f"{path.relative_to(REPO)}:{inner.lineno}")
    return found


def test_kws_imports_inside_functions_say_why() -> None:
    files = [*(REPO / "kws").rglob("*.py"), *(REPO / "pipelines").rglob("*.py")]
    missing = [hit for f in files for hit in deferred_imports_without_reason(f)]
    assert missing == []
