"""The municipal side stays untouched, and no name can inject SQL: queries that write fail and
change nothing, hostile names are refused or stay data (quoting itself: unit/test_quoting.py)."""

from __future__ import annotations

import asyncpg
import pytest

from syncd import config as config_module

from tests.conftest import TABLE_DATASETS
from tests.support.helpers import run_pass


async def _counts(dsn: str) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            "equipes": await conn.fetchval("SELECT count(*) FROM tb_dim_equipe"),
            "log": await conn.fetchval("SELECT count(*) FROM audit_log"),
            "seq": await conn.fetchval("SELECT last_value FROM audit_seq"),
            "tables": await conn.fetchval("SELECT count(*) FROM pg_class WHERE relkind = 'r'"),
        }
    finally:
        await conn.close()


async def test_dataset_queries_that_write_fail_and_change_nothing(make_sources, dest, write_config):
    (db,) = await make_sources(1)
    admin = await asyncpg.connect(db.admin_dsn)
    await admin.execute(
        """
        CREATE TABLE audit_log (at timestamptz DEFAULT now(), what text);
        CREATE SEQUENCE audit_seq;
        CREATE FUNCTION registra(text) RETURNS int LANGUAGE sql VOLATILE
            AS $$ INSERT INTO audit_log (what) VALUES ($1) RETURNING 1 $$;
        """
    )
    await admin.close()
    before = await _counts(db.admin_dsn)
    # syncd connects as the superuser here: only the read-only transaction stands in the way
    entry = db.source_entry()
    entry["dsn"] = db.admin_dsn
    writers = [
        {
            "name": "cte_insert",
            "query": "WITH x AS (INSERT INTO tb_dim_equipe (co_seq_dim_equipe) VALUES (-1) "
            "RETURNING *) SELECT * FROM x",
        },
        {
            "name": "cte_delete",
            "query": "WITH x AS (DELETE FROM tb_dim_equipe RETURNING *) SELECT * FROM x",
        },
        {"name": "funcao", "query": "SELECT registra('syncd esteve aqui') AS r"},
        {"name": "sequencia", "query": "SELECT nextval('audit_seq') AS n"},
        {"name": "select_into", "query": "SELECT * INTO nova_tabela FROM tb_dim_equipe"},
        {
            "name": "lock",
            "query": "SELECT pg_advisory_xact_lock(1) IS NULL AS x, "
            "(SELECT count(*) FROM tb_dim_equipe FOR UPDATE) AS n",
        },
        TABLE_DATASETS[3],
    ]
    _, config = write_config(dest, [entry], writers)
    code, out, _ = await run_pass(config)
    assert code == 1
    failed = {
        line.split(":")[0].split()[-1]: line
        for line in out.splitlines()
        if line.startswith(f"  {db.id} ")
    }
    for name in ("cte_insert", "cte_delete", "funcao", "sequencia"):
        assert "read-only transaction" in failed[name], failed[name]
    assert "select_into" in failed and "lock" in failed
    assert "dim_equipe" not in failed  # the honest dataset landed
    assert await _counts(db.admin_dsn) == before


@pytest.mark.parametrize(
    "key, value",
    [
        ("datasets[0].name", 'x"; DROP TABLE y; --'),
        ("datasets[0].name", "x; DROP TABLE y"),
        ("datasets[0].table", 'public.t"; DROP TABLE y; --'),
        ("datasets[0].table", "public.t; DROP TABLE y"),
        ("destination.schema", "s; DROP SCHEMA public CASCADE"),
        ("destination.source_column", 'm"; --'),
        ("sources[0].id", "1'; DROP TABLE y; --"),
        ("sources[0].params.uf", None),
    ],
)
def test_names_that_could_inject_are_refused(key, value):
    document = {
        "destination": {"dsn": "postgresql://s@h/d"},
        "sources": [{"id": "a", "dsn": "postgresql://u@h/e"}],
        "datasets": [{"name": "d", "table": "t"}],
    }
    if key == "sources[0].params.uf":
        document["sources"][0]["params"] = {"uf; drop": "SP"}
        key = "sources[0].params"
    else:
        section, _, name = key.rpartition(".")
        target = document
        for part in section.replace("[0]", ".0").split("."):
            target = target[int(part)] if part.isdigit() else target[part]
        target[name] = value
    import yaml

    with pytest.raises(config_module.ConfigError) as info:
        config_module.loads(yaml.safe_dump(document))
    assert any(str(p).startswith(key) or f": {key}" in str(p) for p in info.value.problems), (
        info.value.problems
    )


async def test_hostile_column_names_and_values_stay_data(make_sources, dest, write_config):
    """Names the source hands us (columns of a query) are quoted; values travel as bytes."""
    (db,) = await make_sources(1)
    hostile = 'a"; DROP TABLE syncd.ledger; --'
    query = (
        f'SELECT 1 AS "{hostile.replace(chr(34), chr(34) * 2)}", '
        "$$'); DROP TABLE syncd.ledger; --$$::text AS valor, "
        '2 AS "Maiúscula Com Espaço"'
    )
    _, config = write_config(dest, [db], [{"name": "hostil", "query": query}])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    dst = await dest.connect()
    try:
        columns = [
            r[0]
            for r in await dst.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'syncd_data.hostil'::regclass "
                "AND attnum > 0 ORDER BY attnum"
            )
        ]
        assert columns == [
            hostile,
            "valor",
            "Maiúscula Com Espaço",
            "municipio_id_sus",
            "syncd_row_hash",
            "syncd_src_fp",
        ]
        assert (
            await dst.fetchval("SELECT valor FROM syncd_data.hostil")
            == "'); DROP TABLE syncd.ledger; --"
        )
        assert await dst.fetchval("SELECT count(*) FROM syncd.ledger") == 1
    finally:
        await dst.close()
