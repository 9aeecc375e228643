"""The config package's shape: a facade over modules of one concept each, at the bottom layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from syncd import config

PACKAGE = Path(config.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))

# every public name syncd.config had before it was split (the program imports most of them)
USED = """
    load loads select ConfigError Problem Config Source Dataset DatasetMode Variant Incremental
    Timeouts Retry Concurrency Schedule DailyWindow Http DestinationSettings parse_listen
    parse_duration format_duration parse_window parse_yaml clean_query DEFAULT_BUCKETS
    MAX_CONFIG_BYTES LOWER_IDENT SOURCE_ID TABLE_NAME COLUMN_NAME COLUMN_PATH PARAM_NAME
    RESERVED_SCHEMAS
""".split()


@pytest.mark.parametrize("name", USED)
def test_the_facade_exports_what_the_program_imports(name: str):
    assert name in config.__all__
    assert getattr(config, name) is not None


def test_the_facade_exports_nothing_it_does_not_have():
    assert [name for name in config.__all__ if not hasattr(config, name)] == []


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_modules_stay_small(module: Path):
    assert len(module.read_text().splitlines()) <= 450


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_config_imports_nothing_from_the_layers_above(module: Path):
    """config is the bottom layer: the engine and the service read it, never the reverse (only
    syncd.safetext, a leaf, is below it)."""
    imported: list[str] = []
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
    ours = [name for name in imported if name == "syncd" or name.startswith("syncd.")]
    above = [n for n in ours if not n.startswith("syncd.config") and n != "syncd.safetext"]
    assert above == []
