"""`syncd check --online` against real servers: healthy, writable, unreachable and unknown-role
sources, a destination with and without the rights syncd needs, a tight lock table."""

from __future__ import annotations

import json

import anyio
import asyncpg

from syncd.commands.check import lock_budget
from syncd.lab import embedded

from conftest import HIPERTENSOS, TABLE_DATASETS
from helpers import run_cli

VARIANTS = {
    "name": "equipes_v",
    "variants": [
        {"when": {"column": "public.tb_dim_equipe.coluna_que_nao_ha"}, "table": "public.nao_ha"},
        {"when": {"table": "public.tb_dim_equipe"}, "table": "public.tb_dim_equipe"},
    ],
}
DATASETS = [
    TABLE_DATASETS[0],
    {"name": "lista_nominal_hipertensos", "query_file": str(HIPERTENSOS)},
    VARIANTS,
]


async def check(path, *extra: str):
    return await anyio.to_thread.run_sync(
        lambda: run_cli("check", "--online", "--config", str(path), *extra)
    )


async def test_check_online_reports_every_source_and_the_destination(
    make_sources, dest, write_config
):
    healthy, writable = await make_sources(2)
    entries = [
        healthy.source_entry(),
        # the cluster's superuser: everything works, but it is no read-only role
        {"id": "writable", "name": "Superusuário", "dsn": writable.admin_dsn},
    ]
    path, _ = write_config(dest, entries, DATASETS)
    result = await check(path, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    by_id = {s["id"]: s for s in report["sources"]}

    good = by_id[healthy.id]
    assert good["ok"] and good["reachable"] and good["authenticated"]
    assert good["connect_ms"] > 0 and good["round_trip_ms"] >= 0
    assert good["server_version"].split(".")[0].isdigit()
    assert good["tls_mode"] == "prefer" and good["tls"] is None and good["tls_verified"] == "no"
    assert good["read_only"] is True and good["warnings"] == []
    datasets = {d["name"]: d for d in good["datasets"]}
    cidadaos = datasets["cidadaos"]
    assert cidadaos["ok"] and cidadaos["variant"] == "default"
    assert {"name": "no_cidadao", "type": "character varying(200)"} in cidadaos["columns"] or any(
        c["name"] == "no_cidadao" for c in cidadaos["columns"]
    )
    assert cidadaos["estimated_rows"] is not None and cidadaos["estimated_rows"] >= 0
    assert datasets["lista_nominal_hipertensos"]["ok"]
    assert datasets["lista_nominal_hipertensos"]["estimated_rows"] >= 0
    assert datasets["equipes_v"]["variant"] == "table public.tb_dim_equipe"

    bad = by_id["writable"]
    assert bad["ok"] is True and bad["read_only"] is False  # a warning, not a failure
    assert "superuser" in bad["warnings"][0]

    destination = report["destination"]
    assert destination["ok"] and destination["rights"] == "CREATE on database"
    assert destination["server_version"].split(".")[0].isdigit()
    locks = destination["locks"]
    assert locks["buckets"] == 16
    assert locks["lock_slots"] == locks["max_locks_per_transaction"] * (
        locks["max_connections"] + locks["max_prepared_transactions"]
    )
    workers = locks["max_parallel_workers_per_gather"]
    assert locks["locks_per_country_join"] == 2 * (1 + 16 * 1) * (1 + workers)

    # the same as a table: one line per source, the destination below
    result = await check(path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["source", "server", "connect"]
    assert any(line.startswith(healthy.id) and line.rstrip().endswith("ok") for line in lines)
    assert any(line.startswith("writable") and line.rstrip().endswith("warn") for line in lines)
    assert any(line.startswith("writable: warning: role is not read-only") for line in lines)
    assert any(line.startswith("destination ") and ": ok" in line for line in lines)


async def test_check_online_failures_and_secrets(make_sources, dest, dest_cluster, write_config):
    (healthy,) = await make_sources(1)
    # a role that may connect but create nothing on the destination
    admin = await asyncpg.connect(dest.dsn)
    try:
        await admin.execute(
            "DO $$ BEGIN CREATE ROLE syncd_fraco LOGIN; EXCEPTION WHEN duplicate_object THEN "
            "NULL; END $$"
        )
        await admin.execute(f'REVOKE CREATE ON DATABASE "{dest.dbname}" FROM PUBLIC')
        # a dataset table someone indexed four ways: each bucket carries four indexes
        await admin.execute(
            "CREATE SCHEMA syncd_data; CREATE TABLE syncd_data.cidadaos (a int, b int, c int, d int);"
            "CREATE INDEX ON syncd_data.cidadaos (a); CREATE INDEX ON syncd_data.cidadaos (b);"
            "CREATE INDEX ON syncd_data.cidadaos (c); CREATE INDEX ON syncd_data.cidadaos (d)"
        )
    finally:
        await admin.close()
    entries = [
        healthy.source_entry(),
        {
            "id": "inalcancavel",
            "dsn": f"postgresql://esus_leitura:hunter2@127.0.0.1:{embedded.free_port()}/esus",
        },
        {
            "id": "sem_papel",
            "dsn": healthy.dsn.replace("esus_leitura@", "ninguem_aqui:hunter2@"),
        },
    ]
    datasets = [TABLE_DATASETS[0], {"name": "falta", "table": "public.nao_ha"}]
    weak = dest_cluster.dsn(dest.dbname, user="syncd_fraco")
    path, _ = write_config(dest, entries, datasets, destination={"dsn": weak, "buckets": 256})
    result = await check(path, "--json", "--timeout", "20")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    by_id = {s["id"]: s for s in report["sources"]}
    assert by_id["inalcancavel"]["reachable"] is False
    assert "connection refused" in by_id["inalcancavel"]["errors"][0]
    assert by_id["sem_papel"]["reachable"] is True
    assert by_id["sem_papel"]["authenticated"] is False
    assert "ninguem_aqui" in by_id["sem_papel"]["errors"][0]
    falta = {d["name"]: d for d in by_id[healthy.id]["datasets"]}["falta"]
    assert not falta["ok"] and 'relation "public.nao_ha" does not exist' in falta["error"]
    assert by_id[healthy.id]["ok"] is False

    destination = report["destination"]
    assert destination["ok"] is False and destination["rights"] == "missing"
    assert "syncd_data (exists, no CREATE/USAGE), syncd" in destination["errors"][0]
    locks = destination["locks"]
    assert locks["buckets"] == 256 and locks["indexes_per_dataset"] == 4
    workers = locks["max_parallel_workers_per_gather"]
    assert locks["locks_per_country_join"] == 2 * (1 + 256 * 5) * (1 + workers)
    assert locks["country_joins_that_fit"] < 10
    assert any("lock table is tight" in w for w in destination["warnings"])

    result = await check(path)
    assert result.returncode == 1
    assert "hunter2" not in result.stdout + result.stderr
    assert "inalcancavel: error: connection refused" in result.stdout


def test_lock_budget_arithmetic():
    # PostgreSQL's defaults: 64 x (100 + 0) slots; 16 buckets, 2 indexes, 2 workers per gather
    budget = lock_budget(64, 100, 0, 2, 16, 2, 10, 16)
    assert budget["lock_slots"] == 6400
    assert budget["locks_per_country_join"] == 2 * (1 + 16 * 3) * 3 == 294
    assert budget["locks_syncd_peak"] == 16 * 10 * 5 == 800
    assert budget["country_joins_that_fit"] == (6400 - 800) // 294 == 19
    assert lock_budget(64, 100, 0, 2, 64, 3, 10, 16)["country_joins_that_fit"] == 3


def test_check_with_a_bad_config_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("destination: {dsn: nope}\n")
    result = run_cli("check", "--online", "--config", str(path))
    assert result.returncode == 2
