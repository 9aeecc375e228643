"""The package's shape, checked: the layers import downwards only, no import circle (function-level
imports and TYPE_CHECKING ones included), and production code never reaches the lab (demo,
embedded PostgreSQL, synthetic PEC). A module over 450 lines is reported, not failed: a
`LongModule` warning in pytest's warnings summary, a question for review (does it hold two
concepts?), never a reason to move code where it does not belong."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "syncd"
MAX_LINES = 450

# a layer may import its own and the layers after it in this list, never those before
LAYERS = [
    "cli",
    "lab",
    "commands",
    "service",
    "observe",
    "engine",
    "ledger",
    "sql",
    "config",
    "safetext",
    "exitstatus",
    "logevents",
]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every syncd module `name` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                found.add(target)
    return found


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "package"


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


class LongModule(UserWarning):
    """A module over the line limit: for review to read, never a failure."""


def report_long_modules(limit: int) -> dict[str, int]:
    """Each module over `limit` lines, warned as a LongModule (shown in the warnings summary)."""
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > limit
    }
    for name, n in long.items():
        warnings.warn(
            f"{name}: {n} lines, over {limit}: does it hold two concepts?", LongModule, stacklevel=2
        )
    return long


def test_a_module_over_450_lines_is_reported_for_review_not_failed():
    with warnings.catch_warnings(record=True) as caught:  # the report is not blind
        warnings.simplefilter("always")
        assert "syncd.engine.destination" in report_long_modules(100)
    said = [str(w.message) for w in caught if w.category is LongModule]
    assert any(m.startswith("syncd.engine.destination: ") for m in said)
    report_long_modules(MAX_LINES)  # the real report: warnings, whatever their number


def test_every_module_is_in_a_layer():
    """A new top-level module or package is placed in LAYERS, or the layer rules never see it."""
    unplaced = {n for n in GRAPH if layer(n) not in (*LAYERS, "package", "__main__")}
    assert not unplaced, f"add to LAYERS: {sorted(unplaced)}"


def test_no_import_circle():
    state: dict[str, int] = {}  # 1: on the path, 2: done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])
    assert not circles


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if layer(n) in LAYERS))
def test_imports_go_down_the_layers(name):
    mine = LAYERS.index(layer(name))
    upward = {
        target
        for target in GRAPH[name]
        if layer(target) in LAYERS and LAYERS.index(layer(target)) < mine
    }
    assert not upward


def test_nothing_imports_cli_and_production_never_imports_the_lab():
    for name, targets in GRAPH.items():
        if name not in ("syncd.cli", "syncd.__main__"):  # `python -m syncd` is the CLI
            assert "syncd.cli" not in targets, name
        if layer(name) not in ("cli", "lab"):
            assert not {t for t in targets if layer(t) == "lab"}, name


def test_the_checker_sees_function_level_imports():
    """The check itself must not be blind: cli imports the lab only inside `cmd_demo`."""
    assert any(layer(t) == "lab" for t in GRAPH["syncd.cli"])
