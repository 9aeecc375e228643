"""deploy/airflow: the DAG files compile (Airflow itself is not installed here; the README says how
a real Airflow parsed them), and what their tasks do runs against a real syncd."""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import sys
from datetime import datetime
from pathlib import Path

import anyio
import asyncpg
import pytest

from tests.support.daemonproc import DaemonProcess, free_port
from tests.support.helpers import ROOT

AIRFLOW = ROOT / "deploy" / "airflow"
TOKEN = "airflow-test-token"
# a dataset whose read waits while the test holds `syncd_gate`, and fails once it is dropped
GATED = {
    "name": "equipes",
    "query": "SELECT e.* FROM tb_dim_equipe e WHERE EXISTS (SELECT FROM syncd_gate)",
}


def _helpers():
    spec = importlib.util.spec_from_file_location("syncd_airflow", AIRFLOW / "syncd_airflow.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


syncd_airflow = _helpers()


def test_the_dag_files_compile_and_import_no_airflow_at_the_top_level_but_theirs(tmp_path):
    files = sorted(AIRFLOW.glob("*.py"))
    assert {f.name for f in files} == {
        "syncd_airflow.py",
        "syncd_once_dag.py",
        "syncd_trigger_dag.py",
    }
    for f in files:
        py_compile.compile(str(f), cfile=str(tmp_path / (f.name + "c")), doraise=True)
    assert "airflow" not in {
        line.split()[1].split(".")[0]
        for line in (AIRFLOW / "syncd_airflow.py").read_text().splitlines()
        if line.startswith(("import ", "from "))
    }


async def _wait(predicate):
    """Poll `predicate` until it returns something (the limit guards a hang, measures nothing)."""
    with anyio.fail_after(90):
        while (value := predicate()) is None:
            await anyio.sleep(0.1)
        return value


async def test_trigger_then_wait_sees_only_the_run_it_asked_for(
    make_sources, dest, write_config, tmp_path
):
    (db,) = await make_sources(1)
    admin = await asyncpg.connect(db.admin_dsn)
    await admin.execute(
        "CREATE TABLE syncd_gate (); INSERT INTO syncd_gate DEFAULT VALUES;"
        "GRANT SELECT ON syncd_gate TO esus_leitura"
    )
    (tmp_path / "token").write_text(TOKEN)
    port = free_port()
    path, _ = write_config(
        dest,
        [db],
        [GATED],
        http={"listen": f"127.0.0.1:{port}", "token_file": str(tmp_path / "token")},
        schedule={"interval": "24h", "jitter": "0s"},
    )
    daemon = DaemonProcess(path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        daemon.wait_ready()
        # the first run, ok: old news that a waiter must not take for its own
        daemon.wait_status(lambda s: s["sources"][db.id]["state"] == "ok")
        # the next run blocks on the source until we let go
        await admin.execute("BEGIN; LOCK TABLE syncd_gate IN ACCESS EXCLUSIVE MODE")
        requested_at = syncd_airflow.trigger(base, TOKEN, db.id)
        assert syncd_airflow.finished(base, db.id, requested_at) is None
        daemon.wait_status(lambda s: s["sources"][db.id]["state"] == "running")
        assert syncd_airflow.finished(base, db.id, requested_at) is None
        await admin.execute("ROLLBACK")
        run = await _wait(lambda: syncd_airflow.finished(base, db.id, requested_at))
        assert run["status"] == "ok"
        assert datetime.fromisoformat(run["started"]) >= datetime.fromisoformat(requested_at)
        assert run["datasets"]["equipes"]["status"] == "ok"

        # a run that fails fails the waiter, with the reason
        await admin.execute("DROP TABLE syncd_gate")
        requested_at = syncd_airflow.trigger(base, TOKEN, db.id)

        def failed():
            try:
                syncd_airflow.finished(base, db.id, requested_at)
            except syncd_airflow.SyncdFailed as exc:
                return str(exc)
            return None

        reason = await _wait(failed)
        assert reason.startswith(f"source {db.id}: the sync ended failed: ")
        assert "syncd_gate" in reason

        with pytest.raises(syncd_airflow.SyncdFailed, match="HTTP 401"):
            syncd_airflow.trigger(base, "wrong", db.id)
        with pytest.raises(syncd_airflow.SyncdFailed, match="HTTP 404"):
            syncd_airflow.trigger(base, TOKEN, "nope")
        with pytest.raises(syncd_airflow.SyncdFailed, match="not in syncd's config"):
            syncd_airflow.finished(base, "nope", requested_at)
    finally:
        await admin.close()
        daemon.stop()
        assert TOKEN not in daemon.log()


async def test_run_once_returns_the_report_and_the_exit_code(make_sources, dest, write_config):
    a, b = await make_sources(2)
    admin = await asyncpg.connect(b.admin_dsn)
    await admin.execute("DROP TABLE tb_dim_equipe CASCADE")
    await admin.close()
    path, _ = write_config(dest, [a, b], [{"name": "dim_equipe", "table": "public.tb_dim_equipe"}])
    command = [sys.executable, "-m", "syncd"]

    def run(*sources: str) -> tuple[int, dict | None]:
        return syncd_airflow.run_once(command, str(path), sources)

    code, report = await anyio.to_thread.run_sync(run, a.id)
    assert code == 0 and report["status"] == "ok" and list(report["sources"]) == [a.id]
    json.dumps(report)  # what Airflow keeps as the XCom

    code, report = await anyio.to_thread.run_sync(run, b.id)
    assert code == 1 and report["sources"][b.id]["status"] == "failed"
    message = syncd_airflow.failure(code, report)
    assert message.startswith(f"syncd once exited 1: {b.id}/dim_equipe: relation")

    code, report = await anyio.to_thread.run_sync(run, "nope")
    assert code == 2 and report["status"] == "config_error"
    assert syncd_airflow.failure(code, report) == (
        "syncd once exited 2: the config cannot be used; --source: unknown source id 'nope'"
    )

    with pytest.raises(syncd_airflow.SyncdFailed, match="cannot run"):
        syncd_airflow.run_once([str(Path("/nonexistent/syncd"))], str(path), [a.id])


async def test_run_once_takes_the_secrets_from_the_credentials_dir(
    password_roles, make_sources, dest, tmp_path
):
    """The daemon's config names no password file (under the unit its secrets are systemd
    credentials); the DAG's `credentials_dir` hands syncd the same files, as kept in /etc."""
    (db,) = await make_sources(1)
    await password_roles.grant([db], dest)
    path = tmp_path / "syncd.yaml"
    path.write_text(
        json.dumps(
            {
                "destination": {"dsn": password_roles.dest_dsn(dest)},
                "sources": [{"id": db.id, "dsn": password_roles.source_dsn(db)}],
                "datasets": [{"name": "dim_equipe", "table": "public.tb_dim_equipe"}],
            }
        )
    )
    credentials = tmp_path / "credentials"
    (credentials / "municipios").mkdir(parents=True)
    (credentials / "analytics").write_text(password_roles.dest_password + "\n")
    (credentials / "municipios" / db.id).write_text(password_roles.source_password + "\n")
    command = [sys.executable, "-m", "syncd"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def run(credentials_dir: str | None) -> tuple[int, dict | None]:
        return syncd_airflow.run_once(
            command, str(path), [db.id], env=env, credentials_dir=credentials_dir
        )

    code, report = await anyio.to_thread.run_sync(run, str(credentials))
    assert code == 0 and report["sources"][db.id]["status"] == "ok", report
    code, report = await anyio.to_thread.run_sync(run, None)
    assert code == 1 and "password authentication failed" in syncd_airflow.failure(code, report)
