"""The credentials directory from the command line: `check-config` inside the service refuses
a missing credential (exit 2, one line); outside, `--credentials-dir` or
$SYNCD_CREDENTIALS_DIRECTORY hands commands the secrets as kept in /etc/syncd/credentials."""

from __future__ import annotations

import os
import re

import yaml

from tests.support.helpers import ROOT, run_cli

OUTSIDE = {k: "" for k in ("CREDENTIALS_DIRECTORY", "SYNCD_CREDENTIALS_DIRECTORY")}


def _config(tmp_path, destination: str, sources: list[dict]):
    path = tmp_path / "syncd.yaml"
    document = {
        "destination": {"dsn": destination},
        "sources": sources,
        "datasets": [{"name": "dim_equipe", "table": "public.tb_dim_equipe"}],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_check_config_inside_the_service_refuses_a_missing_credential(tmp_path):
    run = tmp_path / "run-credentials"  # what systemd makes of /etc/syncd/credentials
    run.mkdir()
    (run / "analytics").write_text("x\n")
    (run / "municipios_351570").write_text("x\n")
    path = _config(
        tmp_path,
        "postgresql://syncd@analytics.internal/impulso",
        [
            {"id": "351570", "dsn": "postgresql://esus_leitura@10.0.0.7:5433/esus"},
            {"id": "3550308", "dsn": "postgresql://esus_leitura@10.0.0.8:5433/esus"},
        ],
    )
    inside = {**OUTSIDE, "CREDENTIALS_DIRECTORY": str(run)}
    result = run_cli("check-config", "--config", str(path), env=inside)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"{path}:6: sources[1].id: no password_file and no credential 'municipios_3550308' "
        f"(or municipios/3550308) in {run}"
    ]
    (run / "municipios_3550308").write_text("x\n")
    result = run_cli("check-config", "--config", str(path), env=inside)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: ok (2 sources, 1 datasets)"

    # outside, the same directory given as the operator keeps it: an error as well when asked
    etc = tmp_path / "etc-credentials"
    (etc / "municipios").mkdir(parents=True)
    (etc / "analytics").write_text("x\n")
    (etc / "municipios" / "351570").write_text("x\n")
    for args, env in (
        (["--credentials-dir", str(etc)], OUTSIDE),
        ([], {**OUTSIDE, "SYNCD_CREDENTIALS_DIRECTORY": str(etc)}),
    ):
        result = run_cli("check-config", "--config", str(path), *args, env=env)
        assert result.returncode == 2, result.stderr
        assert "no credential 'municipios_3550308' (or municipios/3550308)" in result.stderr
        assert "Traceback" not in result.stderr


async def test_status_needs_only_the_destination_s_credential(
    password_roles, make_sources, dest, tmp_path
):
    (db,) = await make_sources(1)
    await password_roles.grant([db], dest)
    path = _config(
        tmp_path,
        password_roles.dest_dsn(dest),
        [{"id": db.id, "dsn": password_roles.source_dsn(db)}],
    )
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "analytics").write_text(password_roles.dest_password + "\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, **OUTSIDE}
    once = run_cli("once", "--config", str(path), "--credentials-dir", str(credentials), env=env)
    assert once.returncode == 1  # the municipality has no credential: it fails, named
    assert f"no credential 'municipios_{db.id}'" in once.stderr
    status = run_cli(
        "status", "--config", str(path), "--credentials-dir", str(credentials), env=env
    )
    assert status.returncode == 0, status.stderr
    assert db.id in status.stdout
    without = run_cli("status", "--config", str(path), env=env)
    assert without.returncode != 0
    assert "password" in without.stderr
    assert password_roles.dest_password not in once.stderr + status.stderr + without.stderr


def test_the_example_configs_find_every_secret_under_the_unit(tmp_path):
    """Inside the service (strict), the examples name no file and need only the credentials
    docs/install.md puts in /etc/syncd/credentials."""
    run = tmp_path / "run-credentials"
    run.mkdir()
    for name in ("analytics", "http-token", "municipios_351570", "municipios_355030"):
        (run / name).write_text("x\n")
    inside = {**OUTSIDE, "CREDENTIALS_DIRECTORY": str(run)}
    for path in (ROOT / "config" / "syncd.example.yaml", ROOT / "config/examples/incremental.yaml"):
        result = run_cli("check-config", "--config", str(path), env=inside)
        assert result.returncode == 0, (path, result.stderr)
        assert not re.search(r"^\s*(password|token)_file:", path.read_text(), re.MULTILINE)
