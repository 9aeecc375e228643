"""Bad input through the real `syncd once` subprocess: an unreachable destination is one line
and exit 1; `--source`/`--dataset` selections and their exit codes."""

from __future__ import annotations

from syncd.lab import embedded

from tests.conftest import TABLE_DATASETS
from tests.scenarios.test_failures import BROKEN_DATASETS
from tests.support.helpers import run_cli


async def test_unreachable_destination_is_one_line_and_exit_1(make_sources, write_config, dest):
    (db,) = await make_sources(1)
    path, _ = write_config(dest, [db], [TABLE_DATASETS[3]])
    text = path.read_text().replace(
        dest.dsn, f"postgresql://syncd:s3nha@127.0.0.1:{embedded.free_port()}/x"
    )
    path.write_text(text)
    result = run_cli("once", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().endswith("connection refused")
    assert "s3nha" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


async def test_once_cli_selection_and_exit_codes(make_sources, dest, write_config):
    a, b = await make_sources(2)
    path, _ = write_config(dest, [a, b], [TABLE_DATASETS[3], BROKEN_DATASETS[1]])
    result = run_cli("once", "--config", str(path), "--source", a.id, "--dataset", "dim_equipe")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{a.id}" in result.stdout and f"{b.id} " not in result.stdout
    assert "1 of 1 sources ok" in result.stdout

    result = run_cli("once", "--config", str(path))
    assert result.returncode == 1
    assert "0 of 2 sources ok" in result.stdout

    result = run_cli("once", "--config", str(path), "--source", "nope")
    assert result.returncode == 2 and result.stderr.strip() == "--source: unknown source id 'nope'"

    result = run_cli("status", "--config", str(path))
    assert result.returncode == 0
    status_lines = result.stdout.splitlines()
    assert any(
        line.startswith(a.id) and "dim_equipe" in line and " ok" in line for line in status_lines
    )
    assert any("tabela_inexistente" in line and "does not exist" in line for line in status_lines)
