"""Bad input: one clear line per failing source and dataset, the others land, nothing half-written."""

from __future__ import annotations

import asyncpg

from syncd.lab import embedded

from tests.conftest import TABLE_DATASETS
from tests.support.helpers import fingerprint, run_pass

BROKEN_DATASETS = [
    TABLE_DATASETS[0],  # cidadaos: fine everywhere
    {"name": "tabela_inexistente", "table": "public.tb_fat_nao_existe"},
    {"name": "sintaxe", "query": "SELEC co_seq_fat_cidadao_pec FROM tb_fat_cidadao_pec"},
    # fails mid-stream, after rows have already been sent: the staging COPY must be aborted
    {
        "name": "divide_por_zero",
        "query": "SELECT g, 1 / (g - 30) AS inverso FROM generate_series(1, 50) g",
    },
    {
        "name": "coluna_reservada",
        "query": "SELECT 1 AS municipio_id_sus, co_seq_dim_equipe FROM tb_dim_equipe",
    },
    TABLE_DATASETS[3],  # dim_equipe: fine everywhere
]


async def _ledger(dst: asyncpg.Connection) -> dict[tuple[str, str], asyncpg.Record]:
    rows = await dst.fetch("SELECT * FROM syncd.ledger")
    return {(r["source_id"], r["dataset"]): r for r in rows}


async def test_bad_sources_and_datasets_fail_alone(make_sources, dest, write_config):
    good = await make_sources(3)
    unreachable = {
        "id": "999001",
        "dsn": f"postgresql://esus_leitura@127.0.0.1:{embedded.free_port()}/esus",
    }
    no_database = {"id": "999002", "dsn": good[0].cluster.dsn("nao_existe", user="esus_leitura")}
    _, config = write_config(
        dest, [*good, unreachable, no_database], BROKEN_DATASETS, timeouts={"connect": "2s"}
    )

    code, out, err = await run_pass(config)
    assert code == 1
    assert "Traceback" not in out + err
    lines = out.splitlines()
    failed = lines[lines.index("failed:") + 1 :]
    for db in good:
        assert (
            f'  {db.id} tabela_inexistente: relation "public.tb_fat_nao_existe" does not exist '
            "(on the source)" in failed
        )
        assert any(
            line.startswith(f'  {db.id} sintaxe: syntax error at or near "SELEC"')
            for line in failed
        )
        assert any(
            line.startswith(f"  {db.id} divide_por_zero: division by zero") for line in failed
        )
        assert any(
            line.startswith(
                f"  {db.id} coluna_reservada: the dataset has a column named 'municipio_id_sus'"
            )
            for line in failed
        )
    for dataset in BROKEN_DATASETS:
        assert any(
            line.startswith(f"  999001 {dataset['name']}: connection refused") for line in failed
        )
        assert any(
            line.startswith(f'  999002 {dataset["name"]}: database "nao_existe" does not exist')
            for line in failed
        ), failed
    assert all(len(line) < 400 for line in failed)

    dst = await dest.connect()
    try:
        for db in good:
            assert (await fingerprint(dst, "cidadaos", db.id))[0] == db.citizens
            assert (await fingerprint(dst, "dim_equipe", db.id))[0] > 0
        # nothing of the failing datasets or sources landed, not even a table, no staging left
        tables = {
            r[0]
            for r in await dst.fetch(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'syncd_data' AND relkind IN ('r', 'p')"
            )
        }
        assert "divide_por_zero" in tables  # created before the failure, and empty
        assert await dst.fetchval("SELECT count(*) FROM syncd_data.divide_por_zero") == 0
        assert not {t for t in tables if t.startswith(("tabela_inexistente", "sintaxe", "coluna"))}
        assert not {t for t in tables if t.endswith("__staging")}
        assert not {t for t in tables if "999001" in t or "999002" in t}

        ledger = await _ledger(dst)
        assert ledger[(good[0].id, "cidadaos")]["status"] == "ok"
        assert ledger[(good[0].id, "cidadaos")]["rows"] == good[0].citizens
        row = ledger[(good[0].id, "divide_por_zero")]
        assert (
            row["status"] == "failed"
            and row["attempts"] == 1
            and "division by zero" in row["error"]
        )
        refused = ledger[("999001", "cidadaos")]
        assert refused["status"] == "failed" and refused["attempts"] == config.retry.attempts
        assert ledger[("999002", "cidadaos")]["attempts"] == 1  # final: not retried
    finally:
        await dst.close()


async def test_types_syncd_cannot_copy_fail_with_advice_and_enums_domains_work(
    make_sources, dest, write_config
):
    (db,) = await make_sources(1)
    admin = await asyncpg.connect(db.admin_dsn)
    await admin.execute(
        """
        CREATE TYPE sexo AS ENUM ('MASCULINO', 'FEMININO', 'INDETERMINADO');
        CREATE DOMAIN cns AS varchar(15) CHECK (VALUE ~ '^[0-9]*$');
        CREATE TYPE ponto AS (x float8, y float8);
        CREATE TABLE tb_tipos (id bigint, s sexo, c cns, tags text[], s2 sexo[]);
        INSERT INTO tb_tipos VALUES (1, 'FEMININO', '700000000000001', '{a,"b c"}', '{MASCULINO}'),
                                    (2, NULL, NULL, NULL, NULL);
        CREATE TABLE tb_ponto (id bigint, p ponto);
        CREATE TABLE tb_sem_array (id bigint, s sexo, c cns);
        INSERT INTO tb_sem_array SELECT id, s, c FROM tb_tipos;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO esus_leitura;
        """
    )
    await admin.close()
    datasets = [
        {"name": "tipos", "query": "SELECT id, s, c, tags FROM tb_tipos"},
        {"name": "tipos_array_enum", "table": "public.tb_tipos"},
        {"name": "ponto", "table": "public.tb_ponto"},
        {"name": "tabela_dominio", "table": "public.tb_sem_array"},
    ]
    _, config = write_config(dest, [db], datasets)
    code, out, _err = await run_pass(config)
    assert code == 1
    assert (
        "tipos_array_enum: column 's2' has type sexo[], which is not built into PostgreSQL" in out
    )
    assert "ponto: column 'p' has type ponto" in out and "p::text" in out
    dst = await dest.connect()
    try:

        def types(table: str) -> str:
            return (
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                f"WHERE attrelid = 'syncd_data.{table}'::regclass AND attnum > 0"
            )

        # a query reports domains as their base type, created without its modifier
        assert dict(await dst.fetch(types("tipos"))) == {
            "id": "bigint",
            "s": "text",
            "c": "character varying",
            "tags": "text[]",
            "municipio_id_sus": "text",
            "syncd_row_hash": "uuid",
            "syncd_src_fp": "bigint",
        }
        # a table lands the domain's base type, unbounded like every column syncd creates
        assert dict(await dst.fetch(types("tabela_dominio"))) == {
            "id": "bigint",
            "s": "text",
            "c": "character varying",
            "municipio_id_sus": "text",
            "syncd_row_hash": "uuid",
            "syncd_src_fp": "bigint",
        }
        rows = await dst.fetch("SELECT id, s, c, tags FROM syncd_data.tipos ORDER BY id")
        assert [tuple(r) for r in rows] == [
            (1, "FEMININO", "700000000000001", ["a", "b c"]),
            (2, None, None, None),
        ]
    finally:
        await dst.close()


async def test_type_conflict_between_municipalities_fails_only_that_one(
    make_sources, dest, write_config
):
    a, b = await make_sources(2)
    admin = await asyncpg.connect(b.admin_dsn)
    # an older PEC where the column has another type
    await admin.execute(
        "ALTER TABLE tb_dim_equipe ALTER COLUMN nu_ine TYPE bigint USING nu_ine::bigint"
    )
    await admin.close()
    _, config_a = write_config(dest, [a], [TABLE_DATASETS[3]])
    assert (await run_pass(config_a))[0] == 0
    _, config = write_config(dest, [a, b], [TABLE_DATASETS[3]])
    code, out, _ = await run_pass(config)
    assert code == 1
    assert (
        f"{b.id} dim_equipe: column 'nu_ine' is bigint on the source but character varying "
        "in syncd_data.dim_equipe"
    ) in out
    dst = await dest.connect()
    try:
        assert (await fingerprint(dst, "dim_equipe", a.id))[0] > 0
        assert (await fingerprint(dst, "dim_equipe", b.id))[0] == 0
    finally:
        await dst.close()
