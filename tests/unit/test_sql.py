"""The SQL files under syncd/sql/ and their loader: every named query is used, every name used
exists, and a file that names a query twice (or holds SQL outside a named query) is refused."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from syncd import sql

PACKAGE = Path(__file__).resolve().parents[2] / "syncd"
SQL_FILES = sorted(p.stem for p in (PACKAGE / "sql").glob("*.sql"))


def used_names() -> dict[str, set[tuple[str, str]]]:
    """Per SQL file: the (module, query name) pairs the package asks for, found as
    `X = load("file")` and then `X["name"]` in the same module."""
    used: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        loaded: dict[str, str] = {}  # variable -> SQL file
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", getattr(node.value.func, "attr", None)) == "load"
                and [type(a) for a in node.value.args] == [ast.Constant]
            ):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        loaded[target.id] = node.value.args[0].value
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id in loaded
            ):
                key = node.slice
                assert isinstance(key, ast.Constant) and isinstance(key.value, str), (
                    f"{path}: a query is named by a literal, so this test can follow it"
                )
                used[loaded[node.value.id]].add((str(path.relative_to(PACKAGE)), key.value))
    return used


USED = used_names()


def test_there_are_sql_files_and_each_is_loaded():
    assert "ledger" in SQL_FILES
    assert set(USED) == set(SQL_FILES)


@pytest.mark.parametrize("name", SQL_FILES)
def test_every_named_query_is_used_and_every_used_name_exists(name):
    defined = set(sql.load(name))
    used = {query for _, query in USED[name]}
    assert sorted(defined - used) == [], "named in the file, used nowhere"
    missing = sorted((module, query) for module, query in USED[name] if query not in defined)
    assert missing == [], "used, named nowhere"


def test_the_loader_reads_names_and_bodies():
    text = (
        "-- the file's own comment\n\n"
        "-- name: one\n-- what it does\nSELECT $1;\n\n"
        "--name:two\nSELECT 2\nFROM t;\n"
    )
    assert sql.parse(text) == {"one": "-- what it does\nSELECT $1;", "two": "SELECT 2\nFROM t;"}


def test_the_loader_refuses_a_name_given_twice():
    with pytest.raises(ValueError, match=r"x\.sql:4: query 'a' is defined twice"):
        sql.parse("-- name: a\nSELECT 1;\n\n-- name: a\nSELECT 2;\n", "x.sql")


def test_the_loader_refuses_sql_outside_a_named_query_and_a_query_without_sql():
    with pytest.raises(ValueError, match="before the first"):
        sql.parse("SELECT 0;\n-- name: a\nSELECT 1;\n")
    with pytest.raises(ValueError, match="'a' has no SQL"):
        sql.parse("-- name: a\n-- only a comment\n\n-- name: b\nSELECT 1;\n")


def test_a_file_is_parsed_once():
    assert sql.load("ledger") is sql.load("ledger")


def test_the_queries_bind_values_and_splice_nothing():
    """Every value is a bind parameter: no Python formatting survives in the files."""
    for name in SQL_FILES:
        for query, text in sql.load(name).items():
            assert "{" not in text and "%s" not in text, query
