"""`syncd demo --once`: embedded PostgreSQL, synthetic municipalities, one pass, where it landed."""

from __future__ import annotations

import re

import pytest

from helpers import run_cli


@pytest.mark.slow
def test_demo_once_lands_every_municipality(pg_base):
    result = run_cli(
        "demo",
        "--once",
        "--municipalities",
        "20",
        "--citizens",
        "300",
        "--data-dir",
        str(pg_base / "demo"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20 of 20 sources ok" in result.stdout
    assert re.search(r"lista_nominal_hipertensos\s+\|\s+20\s+\|", result.stdout)
    assert re.search(r"cidadaos\s+\|\s+20\s+\|\s+6000\n", result.stdout)
    assert "psql" in result.stdout and "syncd_data" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_in_an_unreachable_directory_says_why(tmp_path):
    result = run_cli("demo", "--once", "--data-dir", str(tmp_path / "demo"))
    if result.returncode == 0:  # not root: nothing to refuse
        return
    assert result.returncode == 1
    assert result.stderr.strip().startswith("syncd demo: ")
    assert "Traceback" not in result.stderr
