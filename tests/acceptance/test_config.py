"""Config through the real `syncd check-config` subprocess: exit codes, one line, no traceback;
the example config validates."""

from __future__ import annotations

from pathlib import Path

from tests.support.helpers import run_cli
from tests.unit.test_config import MINIMAL


def test_check_config_exit_codes_and_no_traceback(tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    result = run_cli("check-config", "--config", str(good))
    assert result.returncode == 0, result.stderr
    assert "ok (1 sources, 1 datasets)" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        MINIMAL.replace("table: public.tb_fat_cidadao_pec", "tabel: x") + "retry: {attempts: 0}\n"
    )
    result = run_cli("check-config", "--config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert f"{bad}:9: datasets[0].tabel: unknown key (did you mean 'table'?)" in lines
    assert f"{bad}:8: datasets[0]: needs one of table, query, query_file" in lines
    assert f"{bad}:10: retry.attempts: must be between 1 and 100" in lines
    assert "Traceback" not in result.stderr

    for args in (
        ["check-config", "--config", str(tmp_path / "missing.yaml")],
        ["once", "--config", str(tmp_path / "missing.yaml")],
        ["check-config", "--config", str(tmp_path)],
    ):
        result = run_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_the_example_config_is_valid():
    result = run_cli("check-config", "--config", "config/syncd.example.yaml")
    assert result.returncode == 0, result.stderr
