"""Incremental datasets, PEC version drift and shared installations."""

from __future__ import annotations

from datetime import date

import anyio
import asyncpg
import pytest

from syncd.lab import pec

from tests.support.helpers import assert_dataset_exact, fingerprint, run_pass

ATENDIMENTOS = "public.tb_fat_atendimento_individual"


def incremental(**extra) -> dict:
    return {
        "name": "atendimentos",
        "table": ATENDIMENTOS,
        "mode": "incremental",
        "cursor": "co_seq_fat_atd_ind",
        "key": "co_seq_fat_atd_ind",
        **extra,
    }


async def ledger(dest, dataset: str = "atendimentos") -> list[asyncpg.Record]:
    dst = await dest.connect()
    try:
        return await dst.fetch(
            "SELECT source_id, pass_id, mode, rows, watermark, status, error FROM syncd.ledger "
            "WHERE dataset = $1 ORDER BY pass_id",
            dataset,
        )
    finally:
        await dst.close()


async def exact(dest, db, dataset: str = "atendimentos", query: str | None = None) -> int:
    src = await asyncpg.connect(db.admin_dsn)
    dst = await dest.connect()
    try:
        return await assert_dataset_exact(
            src, dst, db.id, dataset, query or f"SELECT * FROM {ATENDIMENTOS}"
        )
    finally:
        await src.close()
        await dst.close()


async def append(db, count: int) -> tuple[int, int]:
    conn = await asyncpg.connect(db.admin_dsn)
    try:
        return await pec.append_atendimentos(conn, db.municipality, count)
    finally:
        await conn.close()


async def test_only_new_rows_move_and_the_destination_equals_the_source(
    make_sources, dest, write_config
):
    a, b = await make_sources(2, citizens=500)
    _, config = write_config(dest, [a, b], [incremental(full_refresh_every="7d")])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    first = {r["source_id"]: r for r in await ledger(dest)}
    assert first[a.id]["mode"] == "full_refresh" and first[a.id]["rows"] == 1500
    assert first[a.id]["watermark"] == "1500"

    _, end = await append(a, 7)
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    second = {r["source_id"]: r for r in (await ledger(dest))[2:]}
    assert second[a.id]["mode"] == "incremental"
    assert second[a.id]["rows"] == 7  # exactly the new rows moved
    assert second[a.id]["watermark"] == str(end)
    assert second[b.id]["rows"] == 0 and second[b.id]["watermark"] == "1500"
    assert await exact(dest, a) == 1507
    assert await exact(dest, b) == 1500

    code, out, err = await run_pass(config)  # nothing new: nothing moves
    assert code == 0 and {r["rows"] for r in (await ledger(dest))[4:]} == {0}


async def test_late_rows_inside_the_lookback_arrive_once(make_sources, dest, write_config):
    (db,) = await make_sources(1, citizens=500)
    admin = await asyncpg.connect(db.admin_dsn)
    # a consultation that commits late: id 1495 is missing when the first pass runs
    late = await admin.fetchrow(
        "SELECT * FROM tb_fat_atendimento_individual WHERE co_seq_fat_atd_ind = 1495"
    )
    await admin.execute("DELETE FROM tb_fat_atendimento_individual WHERE co_seq_fat_atd_ind = 1495")
    _, config = write_config(dest, [db], [incremental(lookback=100)])
    assert (await run_pass(config))[0] == 0
    assert await exact(dest, db) == 1499

    columns = ", ".join(f"${i + 1}" for i in range(len(late)))
    await admin.execute(f"INSERT INTO tb_fat_atendimento_individual VALUES ({columns})", *late)
    await admin.close()
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    assert await exact(dest, db) == 1500  # it arrived, once
    window = (await ledger(dest))[-1]
    assert window["mode"] == "incremental" and window["rows"] == 100  # ids 1401..1500
    dst = await dest.connect()
    try:
        assert (
            await dst.fetchval(
                "SELECT count(*) FROM syncd_data.atendimentos WHERE co_seq_fat_atd_ind = 1495"
            )
            == 1
        )
    finally:
        await dst.close()


async def test_a_full_refresh_removes_rows_deleted_at_the_source(make_sources, dest, write_config):
    (db,) = await make_sources(1, citizens=500)
    _, config = write_config(dest, [db], [incremental(full_refresh_every="1s")])
    _, weekly = write_config(dest, [db], [incremental(full_refresh_every="7d")])
    assert (await run_pass(config))[0] == 0
    admin = await asyncpg.connect(db.admin_dsn)
    await admin.execute(
        "DELETE FROM tb_fat_atendimento_individual "
        "WHERE co_seq_fat_atd_ind % 10 = 0 AND co_seq_fat_atd_ind < 1500"
    )
    await admin.close()
    await append(db, 5)
    # an incremental pass brings the new rows but cannot see deletions
    assert (await run_pass(weekly))[0] == 0
    dst = await dest.connect()
    try:
        assert (await fingerprint(dst, "atendimentos", db.id))[0] == 1505
        await anyio.sleep(1.1)
        assert (await run_pass(config))[0] == 0  # due for its full refresh
        assert (await ledger(dest))[-1]["mode"] == "full_refresh"
        assert await exact(dest, db) == 1500 - 149 + 5
    finally:
        await dst.close()


async def test_a_yyyymmdd_date_key_cursor(make_sources, dest, write_config):
    """co_dim_tempo as cursor: a duration lookback; 30001231 ('not informed') never becomes the
    watermark, and such rows are simply read again."""
    (db,) = await make_sources(1, citizens=300)
    dataset = incremental(cursor="co_dim_tempo", lookback="3d")
    _, config = write_config(dest, [db], [dataset])
    assert (await run_pass(config))[0] == 0
    (first,) = await ledger(dest)
    today = int(date.today().strftime("%Y%m%d"))
    assert int(first["watermark"]) <= today
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    second = (await ledger(dest))[-1]
    assert second["mode"] == "incremental" and second["watermark"] == first["watermark"]
    assert second["rows"] >= 10  # the 30001231 rows (and any in the last 3 days)
    assert await exact(dest, db) == 900


async def test_incremental_config_errors():
    from syncd import config

    base = (
        "destination: {dsn: 'postgresql://s@h/d'}\nsources: [{id: a, dsn: 'postgresql://u@h/e'}]\n"
        "datasets:\n  - {name: x, table: t, %s}\n"
    )
    cases = {
        "mode: incremental": "datasets[0].cursor: is required",
        "mode: incremental, cursor: c": "datasets[0].key: is required",
        "mode: incremental, cursor: c, key: [k, 'a b']": "datasets[0].key: must be a column name",
        "mode: incremental, cursor: c, key: k, lookback: -1": "lookback: must not be negative",
        "mode: incremental, cursor: c, key: k, lookback: soon": "lookback: 'soon' is not a duration",
        "mode: sometimes": "datasets[0].mode: 'sometimes' is not snapshot or incremental",
        "cursor: c": "datasets[0].cursor: only for mode: incremental",
    }
    for fragment, expected in cases.items():
        with pytest.raises(config.ConfigError) as info:
            config.loads(base % fragment)
        assert any(expected in str(p) for p in info.value.problems), (fragment, info.value)


async def test_cursor_of_an_unusable_type_fails_clearly(make_sources, dest, write_config):
    (db,) = await make_sources(1)
    _, config = write_config(dest, [db], [incremental(cursor="nu_cns")])
    code, out, _ = await run_pass(config)
    assert code == 1
    assert (
        "atendimentos: cursor nu_cns is a character varying(15); an incremental cursor must "
        "be an integer, numeric, date or timestamp column"
    ) in out


# -- PEC versions ------------------------------------------------------------------------------


async def test_two_pec_versions_land_in_one_table(make_sources, dest, write_config):
    old = await make_sources(2, version=1)
    new = await make_sources(2, start=10, version=2)
    datasets = [
        {"name": "cidadaos", "table": "public.tb_fat_cidadao_pec"},
        {
            "name": "contatos",
            "variants": [
                {
                    "when": {"column": "public.tb_fat_cidadao_pec.nu_celular"},
                    "query": "SELECT co_seq_fat_cidadao_pec, nu_celular AS telefone FROM tb_fat_cidadao_pec",
                },
                {
                    "query": "SELECT co_seq_fat_cidadao_pec, nu_telefone_celular AS telefone "
                    "FROM tb_fat_cidadao_pec"
                },
            ],
        },
    ]
    _, config = write_config(dest, [old[0], new[0], old[1], new[1]], datasets)
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    dst = await dest.connect()
    try:
        columns = {
            r[0]
            for r in await dst.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'syncd_data.cidadaos'::regclass "
                "AND attnum > 0 AND NOT attisdropped"
            )
        }
        assert {"nu_telefone_celular", "nu_celular", "no_mae_cidadao"} <= columns
        for db in old:
            nulls = await dst.fetchval(
                "SELECT count(*) FROM syncd_data.cidadaos WHERE municipio_id_sus = $1 "
                "AND nu_celular IS NULL AND no_mae_cidadao IS NULL",
                db.id,
            )
            assert nulls == db.citizens  # the columns their PEC lacks are NULL
        for db in new:
            assert (
                await dst.fetchval(
                    "SELECT count(*) FROM syncd_data.cidadaos WHERE municipio_id_sus = $1 "
                    "AND nu_telefone_celular IS NOT NULL",
                    db.id,
                )
                == 0
            )
    finally:
        await dst.close()
    for db in old + new:  # each municipality's own columns and values, exact
        await exact(dest, db, "cidadaos", "SELECT * FROM public.tb_fat_cidadao_pec")
        column = "nu_celular" if db.version == 2 else "nu_telefone_celular"
        await exact(
            dest,
            db,
            "contatos",
            f"SELECT co_seq_fat_cidadao_pec, {column} AS telefone FROM tb_fat_cidadao_pec",
        )


async def test_no_fitting_variant_fails_that_dataset(make_sources, dest, write_config):
    (db,) = await make_sources(1)
    dataset = {
        "name": "so_novo",
        "variants": [{"when": {"table": "public.tb_nao_ha"}, "query": "SELECT 1 AS um"}],
    }
    _, config = write_config(dest, [db], [dataset])
    code, out, _ = await run_pass(config)
    assert (
        code == 1
        and "so_novo: no variant fits this source (none of: table public.tb_nao_ha)" in out
    )


# -- shared installations ----------------------------------------------------------------------


async def test_a_shared_installation_lands_disjoint_rows(make_sources, dest, write_config):
    (db,) = await make_sources(1, citizens=400)
    admin = await asyncpg.connect(db.admin_dsn)
    await admin.execute("INSERT INTO tb_dim_municipio VALUES (2, '355030', 'Vizinha', 'SP')")
    await admin.execute(
        "UPDATE tb_fat_cidadao_pec SET co_dim_municipio = 2 WHERE co_seq_fat_cidadao_pec % 2 = 0"
    )
    await admin.close()
    query = (
        "SELECT c.* FROM tb_fat_cidadao_pec c JOIN tb_dim_municipio m "
        "ON m.co_seq_dim_municipio = c.co_dim_municipio "
        "WHERE m.co_ibge = current_setting('syncd.co_ibge')"
    )
    sources = [
        {"id": db.id, "dsn": db.dsn, "params": {"co_ibge": db.id}},
        {"id": "355030", "dsn": db.dsn, "params": {"co_ibge": "355030"}},
    ]
    _, config = write_config(
        dest, sources, [{"name": "cidadaos", "query": query}], concurrency={"per_host": 1}
    )
    watcher = await asyncpg.connect(db.cluster.dsn())
    seen: list[int] = []
    done = anyio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(
                await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncd' "
                    "AND datname = $1",
                    db.dbname,
                )
            )
            await anyio.sleep(0.002)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        code, out, err = await run_pass(config)
        done.set()
    await watcher.close()
    assert code == 0, out + err
    assert max(seen) <= 1  # one server, per_host 1: one session at a time, params or not
    dst = await dest.connect()
    try:
        counts = dict(
            await dst.fetch("SELECT municipio_id_sus, count(*) FROM syncd_data.cidadaos GROUP BY 1")
        )
        assert counts == {db.id: 200, "355030": 200}
        overlap = await dst.fetchval(
            "SELECT count(*) FROM syncd_data.cidadaos a JOIN syncd_data.cidadaos b "
            "USING (co_seq_fat_cidadao_pec) WHERE a.municipio_id_sus <> b.municipio_id_sus"
        )
        assert overlap == 0
    finally:
        await dst.close()
