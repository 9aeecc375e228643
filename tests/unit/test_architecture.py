"""The package's shape, checked: the layers import downwards only, no import circle (function-level
imports and TYPE_CHECKING ones included), and production code never reaches the lab (demo,
embedded PostgreSQL, synthetic PEC). A module over 450 lines is reported, not failed: a
`LongModule` warning in pytest's warnings summary, a question for review (does it hold two
concepts?), never a reason to move code where it does not belong."""

from __future__ import annotations

import ast
import re
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


# ---- a module's tests are found from its name ------------------------------------------------

TESTS = PACKAGE.parent / "tests"

# Modules whose tests are not named after them, and where they are (paths under tests/): each
# is tested through the module that uses it, or with its package as a whole. A module that gains
# a test file of its own name leaves this list (the test below fails until it does).
TESTED_ELSEWHERE: dict[str, tuple[str, ...]] = {
    # the command line: through the parser and the real binary
    "syncd.__main__": ("acceptance/test_cli.py",),
    "syncd.exitstatus": ("unit/test_reference.py", "acceptance/test_cli.py"),
    "syncd.commands.checkreport": ("scenarios/test_check.py", "acceptance/test_check.py"),
    "syncd.commands.checkresult": ("scenarios/test_check.py", "acceptance/test_check.py"),
    "syncd.commands.clidoc": ("acceptance/test_cli.py",),
    # delta transfer's source SQL and destination side: through whole passes
    "syncd.engine.fingerprint": ("scenarios/test_delta.py",),
    "syncd.engine.fpstore": ("scenarios/test_delta.py",),
    # an online column type change's steps: through whole passes (tests/scenarios/test_retype.py)
    "syncd.engine.backfill": ("scenarios/test_retype.py",),
    "syncd.engine.reindex": ("scenarios/test_retype.py",),
    "syncd.engine.typechange": ("scenarios/test_retype.py", "scenarios/test_mixed_fleet.py"),
    "syncd.commands.enroll": ("acceptance/test_bastions.py", "acceptance/test_config_bastions.py"),
    "syncd.commands.reload": ("acceptance/test_daemon.py", "acceptance/test_systemd.py"),
    "syncd.commands.status": ("acceptance/test_cli_daemon.py", "scenarios/test_inputs.py"),
    "syncd.commands.trigger": ("acceptance/test_cli_daemon.py",),
    "syncd.commands.verify": ("scenarios/test_compare.py",),
    "syncd.service.runtime": ("acceptance/test_cli.py", "acceptance/test_daemon.py"),
    # the config package: by what it reads (test_config*.py), not one file per module
    "syncd.config.datasets": ("unit/test_config.py",),
    "syncd.config.keydoc": ("unit/test_reference.py", "unit/test_config_defaults.py"),
    "syncd.config.libpq": ("unit/test_dsn.py",),
    "syncd.config.model": ("unit/test_config_defaults.py", "unit/test_reference.py"),
    "syncd.config.problem": ("unit/test_config_document.py",),
    "syncd.config.render": ("unit/test_cli.py", "acceptance/test_cli.py"),
    "syncd.config.section": ("unit/test_config_document.py",),
    "syncd.config.settings": ("unit/test_config_defaults.py", "unit/test_reference.py"),
    # a pass: whole syncs exercise them, faults through the real proxy
    "syncd.engine.attempt": ("scenarios/test_sync.py", "scenarios/test_faults.py"),
    "syncd.engine.shared": ("scenarios/test_sync.py",),
    "syncd.engine.results": ("scenarios/test_sync.py", "acceptance/test_once_json.py"),
    "syncd.engine.progress": ("scenarios/test_telemetry.py", "unit/test_errors.py"),
    "syncd.engine.spans": ("scenarios/test_telemetry.py", "acceptance/test_telemetry.py"),
    "syncd.engine.connect": ("unit/test_source.py", "unit/test_errors.py"),
    "syncd.engine.shape": ("unit/test_source.py", "unit/test_destination.py"),
    "syncd.engine.tables": ("unit/test_destination.py",),
    "syncd.engine.txn": ("unit/test_destination.py",),
    # the two differs are held to one another in one file
    "syncd.engine.rowdiff.pydiffer": ("unit/test_rowdiff.py", "acceptance/test_rowdiff.py"),
    "syncd.engine.rowdiff.cdiffer": ("unit/test_rowdiff.py", "acceptance/test_rowdiff.py"),
    "syncd.engine.rowdiff.choice": ("acceptance/test_differ_visibility.py",),
    # the tunnel: against a real sshd
    "syncd.engine.tunnel.ssh": ("acceptance/test_bastions.py", "scenarios/test_bastions.py"),
    "syncd.engine.tunnel.bridge": ("acceptance/test_bastions.py", "scenarios/test_bastions.py"),
    # the ledger package is tested as one
    "syncd.ledger.rows": ("unit/test_ledger.py",),
    "syncd.ledger.migrate": ("unit/test_ledger.py",),
    "syncd.ledger.states": ("unit/test_ledger.py",),
    "syncd.ledger.catalog": ("acceptance/test_alerts.py", "acceptance/test_daemon.py"),
    "syncd.ledger.lockkeys": ("unit/test_synclock.py",),
    # the daemon: through its HTTP side and whole daemons
    "syncd.service.control": ("unit/test_http.py",),
    "syncd.service.readiness": ("unit/test_http.py", "acceptance/test_daemon.py"),
    "syncd.service.statusquery": ("unit/test_statusboard_scale.py",),
    "syncd.service.dispatch": ("scenarios/test_daemon.py", "unit/test_scheduler.py"),
    "syncd.service.clock": ("unit/test_scheduler.py", "scenarios/test_daemon.py"),
    "syncd.service.notify": ("scenarios/test_daemon.py", "acceptance/test_systemd.py"),
    "syncd.service.reloader": ("acceptance/test_daemon.py",),
    "syncd.service.reloadstate": ("acceptance/test_daemon.py", "acceptance/test_systemd.py"),
    "syncd.observe.metrics": ("unit/test_http.py", "acceptance/test_alerts.py"),
    "syncd.safetext": ("unit/test_http.py", "scenarios/test_inputs.py"),
    # the lab is what the tests run on
    "syncd.lab.embedded": ("conftest.py",),
    "syncd.lab.pec": ("conftest.py",),
    "syncd.lab.sshd": ("acceptance/test_bastions.py",),
}


def named_tests(name: str) -> list[Path]:
    """`tests/*/test_<module>.py` or `test_<module>_*.py`, the module's package's name in front
    where that is how its tests are named (`test_config_values.py`, `test_rowdiff_build.py`)."""
    *_, package, module = ["", *name.split(".")]
    stems = [module, f"{package}_{module}"]
    return [
        path
        for stem in stems
        for pattern in (f"test_{stem}.py", f"test_{stem}_*.py")
        for path in TESTS.glob(f"*/{pattern}")
    ]


def test_every_module_has_tests_named_after_it_or_says_where_they_are():
    plain = [n for n, path in modules().items() if path.name != "__init__.py"]
    unfound = {n for n in plain if not named_tests(n)}
    untested = sorted(unfound - TESTED_ELSEWHERE.keys())
    assert not untested, f"no tests/*/test_<module>*.py, nor in TESTED_ELSEWHERE: {untested}"
    # an entry goes when the module gets a test file of its own name, or the module goes
    stale = sorted(TESTED_ELSEWHERE.keys() - unfound)
    assert not stale, f"remove from TESTED_ELSEWHERE: {stale}"
    missing = {f for files in TESTED_ELSEWHERE.values() for f in files if not (TESTS / f).is_file()}
    assert not missing


# ---- code says what it does now ------------------------------------------------------------

# history labels: an issue number, a release's landing; CHANGELOG.md and docs/design/decisions.md
# keep the history (bench/ may name the commit it measures against)
HISTORY_LABEL = re.compile(r"\(#\d+\)|\bissue #?\d+|\blanding v\d", re.IGNORECASE)


def test_code_and_tests_carry_no_history_labels():
    files = [
        *PACKAGE.rglob("*.py"),
        *TESTS.rglob("*.py"),
        *(PACKAGE.parent / "tools").rglob("*.py"),
    ]
    labelled = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if HISTORY_LABEL.search(line)
    ]
    assert not labelled, "say what the code does now (history: CHANGELOG.md)"
