"""The engine end to end: byte-exact copies, atomic replacement, no bloat, limits that hold."""

from __future__ import annotations

import time

import anyio
import asyncpg
import pytest

from syncd.lab import pec

from tests.conftest import QUERY_DATASETS, TABLE_DATASETS
from tests.support.helpers import (
    assert_dataset_exact,
    fingerprint,
    run_pass,
)


def _source_query(dataset: dict) -> str:
    if "table" in dataset:
        return f"SELECT * FROM {dataset['table']}"
    if "query" in dataset:
        return dataset["query"].rstrip().rstrip(";")
    with open(dataset["query_file"]) as f:
        return f.read().rstrip().rstrip(";")


async def test_every_value_lands_byte_exact_over_20_municipalities(
    any_source_cluster, make_sources, dest, write_config
):
    sources = await make_sources(20, cluster=any_source_cluster)
    datasets = TABLE_DATASETS + QUERY_DATASETS
    _, config = write_config(dest, sources, datasets)

    code, out, err = await run_pass(config)
    assert code == 0, out + err

    dst = await dest.connect()
    try:
        checked = 0
        for db in sources:
            src = await asyncpg.connect(db.admin_dsn)
            try:
                for dataset in datasets:
                    checked += await assert_dataset_exact(
                        src, dst, db.id, dataset["name"], _source_query(dataset)
                    )
            finally:
                await src.close()
        assert checked > 20 * 60 * 4  # every dataset of every source was compared
        first = {d["name"]: await fingerprint(dst, d["name"]) for d in datasets}

        # a second pass over unchanged sources leaves the destination exactly as it was
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        second = {d["name"]: await fingerprint(dst, d["name"]) for d in datasets}
        assert first == second
        awkward = await dst.fetchval(
            "SELECT count(*) FROM syncd_data.cidadaos "
            "WHERE co_seq_fat_cidadao_pec <= 10 AND municipio_id_sus = $1",
            sources[0].id,
        )
        assert awkward == 10
    finally:
        await dst.close()


async def test_awkward_values_survive(make_sources, dest, write_config):
    """Spot checks of the values that break text pipelines, read back typed."""
    (db,) = await make_sources(1)
    _, config = write_config(dest, [db], [TABLE_DATASETS[0]])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    dst = await dest.connect()
    try:
        rows = {
            r["id"]: r
            for r in await dst.fetch(
                "SELECT co_seq_fat_cidadao_pec AS id, no_cidadao, nu_cns, nu_peso::text AS peso, "
                "nu_latitude::text AS lat, dt_atualizacao::text AS ts, dt_nascimento::text AS dt, "
                "length(ds_observacao) AS obs_len FROM syncd_data.cidadaos"
            )
        }
    finally:
        await dst.close()
    assert rows[1]["nu_cns"] is None and rows[2]["nu_cns"] == ""
    assert "👩🏽‍⚕️" in rows[3]["no_cidadao"] and "Ávila" in rows[3]["no_cidadao"]
    assert "\t" in rows[4]["no_cidadao"] and "\n" in rows[4]["no_cidadao"]
    assert "\\" in rows[4]["no_cidadao"] and '"' in rows[4]["no_cidadao"]
    assert rows[5]["peso"] == "NaN" and rows[5]["lat"] == "NaN" and rows[5]["ts"] == "infinity"
    assert rows[6]["ts"] == "-infinity" and rows[6]["lat"] == "-Infinity"
    assert rows[7]["obs_len"] >= 20_000 and rows[8]["obs_len"] >= 20_000
    assert rows[7]["dt"].endswith("BC")


async def test_reader_sees_whole_old_or_whole_new_snapshot(make_sources, dest, write_config):
    (db,) = await make_sources(1, citizens=20_000)
    datasets = [TABLE_DATASETS[0]]
    _, config = write_config(dest, [db], datasets)
    code, out, err = await run_pass(config)
    assert code == 0, out + err

    reader = await dest.connect()
    old = await fingerprint(reader, "cidadaos", db.id)

    # the municipality changes: fewer citizens, and the rest renamed
    src = await asyncpg.connect(db.admin_dsn)
    await src.execute("DELETE FROM tb_fat_cidadao_pec WHERE co_seq_fat_cidadao_pec % 3 = 0")
    await src.execute(
        "UPDATE tb_fat_cidadao_pec SET no_cidadao = 'novo ' || co_seq_fat_cidadao_pec"
    )
    await src.close()

    seen: list[tuple] = []
    done = anyio.Event()

    async def poll() -> None:
        while not done.is_set():
            seen.append(await fingerprint(reader, "cidadaos", db.id))
        seen.append(await fingerprint(reader, "cidadaos", db.id))

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        code, out, err = await run_pass(config)
        done.set()
    assert code == 0, out + err
    new = await fingerprint(reader, "cidadaos", db.id)
    await reader.close()

    assert old != new and new[0] == 20_000 - 20_000 // 3
    assert set(seen) <= {old, new}, (
        f"a reader saw a mixed or empty snapshot: {set(seen) - {old, new}}"
    )
    assert seen[0] == old and seen[-1] == new
    assert len(seen) >= 3


async def _dataset_sizes(conn: asyncpg.Connection) -> dict[str, int]:
    """pg_total_relation_size over each dataset's tables (its buckets, their indexes, TOAST)."""
    rows = await conn.fetch(
        """
        SELECT p.relname AS dataset, sum(pg_total_relation_size(c.oid))::bigint AS size
        FROM pg_class p JOIN pg_namespace n ON n.oid = p.relnamespace
        JOIN pg_inherits i ON i.inhparent = p.oid JOIN pg_class c ON c.oid = i.inhrelid
        WHERE n.nspname = 'syncd_data' AND p.relkind = 'p' AND c.relkind = 'r'
        GROUP BY p.relname
        """
    )
    return {r["dataset"]: r["size"] for r in rows}


async def _catalog(conn: asyncpg.Connection) -> list[tuple[str, int]]:
    """Every relation of the data schema by name and oid: a table dropped and made again shows."""
    rows = await conn.fetch(
        "SELECT c.relname, c.oid::int FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = 'syncd_data' ORDER BY 1"
    )
    return [(r[0], r[1]) for r in rows]


@pytest.mark.parametrize(
    ("municipalities", "buckets", "citizens", "concurrency"),
    [(3, 16, 2000, 32), (8, 2, 400, 2)],
    ids=["alone_in_their_buckets", "sharing_buckets"],
)
async def test_ten_passes_stay_within_twice_a_fresh_load_and_touch_no_catalog(
    make_sources, dest, write_config, municipalities, buckets, citizens, concurrency
):
    """A municipality alone in its bucket is the worst case: its new rows are written before
    its old ones die, so the bucket holds both once; the vacuum lane makes that space reusable,
    and it is reused from then on instead of growing. Sharing buckets, with about as many
    municipalities in flight per bucket as the field has (5,570 over 16 buckets, 32 at once:
    two), the space one frees is reused by the next."""
    sources = await make_sources(municipalities, citizens=citizens)
    _, config = write_config(
        dest,
        sources,
        destination={"dsn": dest.dsn, "buckets": buckets},
        concurrency={"sources": concurrency},
    )
    dst = await dest.connect()
    try:
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        fresh, catalog = await _dataset_sizes(dst), await _catalog(dst)
        assert set(fresh) == {d.name for d in config.datasets}
        for _ in range(9):
            code, out, err = await run_pass(config)
            assert code == 0, out + err
            assert await _catalog(dst) == catalog, "a steady-state pass created or dropped tables"
        sizes = await _dataset_sizes(dst)
        for name, size in sizes.items():
            assert size <= 2 * fresh[name], f"{name} grew from {fresh[name]} to {size} bytes"
        # the number of tables per dataset is the bucket count, whatever the municipalities
        tables = await dst.fetch(
            "SELECT i.inhparent::regclass::text AS parent, count(*) AS n FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'syncd_data' AND c.relkind = 'r' GROUP BY 1"
        )
        assert {r["n"] for r in tables} == {config.destination.buckets}
    finally:
        await dst.close()


async def test_limits_hold_measured_from_pg_stat_activity(
    source_cluster, make_sources, dest, write_config
):
    """sources=4, per_host=2, writers=2 over 12 municipalities behind 3 host names."""
    sources = await make_sources(12, citizens=300)
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]  # one server on three addresses
    entries, host_of = [], {}
    for i, db in enumerate(sources):
        host = hosts[i % 3]
        host_of[db.dbname] = host
        entry = db.source_entry()
        entry["dsn"] = source_cluster.dsn(db.dbname, user="esus_leitura", host=host)
        entries.append(entry)
    slow = {  # each COPY takes a while, so the limits get tested under load: rows of more
        # than the server's 8 kB send buffer, one every 50 ms, so the destination's COPY (which
        # starts with the first row that comes through the differ) runs as long as the source's
        "name": "equipes_lentas",
        "query": "SELECT e.*, repeat('x', 9000) AS folga FROM tb_dim_equipe e "
        # (the sleep refers to the row, so it runs once a row, not once)
        "CROSS JOIN LATERAL (SELECT pg_sleep(0.05 + 0 * e.co_seq_dim_equipe)::text AS z) AS s",
    }
    _, config = write_config(
        dest,
        entries,
        [slow, TABLE_DATASETS[3]],
        concurrency={"sources": 4, "per_host": 2, "writers": 2},
    )

    source_admin = await asyncpg.connect(source_cluster.dsn())
    dest_admin = await asyncpg.connect(dest.cluster.dsn())
    peak = {"sources": 0, "per_host": 0, "writers": 0}
    done = anyio.Event()

    async def watch() -> None:
        while not done.is_set():
            rows = await source_admin.fetch(
                "SELECT datname FROM pg_stat_activity WHERE application_name = 'syncd' "
                "AND backend_type = 'client backend'"
            )
            per_host: dict[str, int] = {}
            for r in rows:
                if r["datname"] in host_of:
                    per_host[host_of[r["datname"]]] = per_host.get(host_of[r["datname"]], 0) + 1
            peak["sources"] = max(peak["sources"], sum(per_host.values()))
            peak["per_host"] = max([peak["per_host"], *per_host.values()])
            writers = await dest_admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' "
                "AND query LIKE 'COPY %FROM STDIN%'",
                dest.dbname,
            )
            peak["writers"] = max(peak["writers"], writers)
            await anyio.sleep(0.005)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        code, out, err = await run_pass(config)
        done.set()
    await source_admin.close()
    await dest_admin.close()
    assert code == 0, out + err
    assert peak["sources"] <= 4 and peak["per_host"] <= 2 and peak["writers"] <= 2, peak
    # and the measurement saw the limits reached, so it measured something
    assert peak == {"sources": 4, "per_host": 2, "writers": 2}, peak
    assert time.monotonic() > started


async def test_pec_generator_is_deterministic(source_cluster, make_sources):
    (a,) = await make_sources(1)
    src_a = await asyncpg.connect(a.admin_dsn)
    conn = await asyncpg.connect(source_cluster.dsn())
    try:
        await conn.execute("CREATE DATABASE regen")
        regen = await asyncpg.connect(source_cluster.dsn("regen"))
        try:
            await pec.create_municipality(regen, pec.Municipality(a.id, a.citizens))
            for table in pec.PEC_TABLES:
                query = f"SELECT md5(string_agg(t::text, '' ORDER BY t::text)) FROM {table} t"
                assert await src_a.fetchval(query) == await regen.fetchval(query), table
        finally:
            await regen.close()
    finally:
        await conn.execute("DROP DATABASE IF EXISTS regen WITH (FORCE)")
        await conn.close()
        await src_a.close()


async def test_indexes_on_a_dataset_table_carry_over_to_new_snapshots(
    make_sources, dest, write_config
):
    (db,) = await make_sources(1, citizens=500)
    _, config = write_config(dest, [db], [TABLE_DATASETS[0]])
    assert (await run_pass(config))[0] == 0
    dst = await dest.connect()
    try:
        await dst.execute("CREATE INDEX cidadaos_cns ON syncd_data.cidadaos (nu_cns)")
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        indexes = await dst.fetch(
            "SELECT i.indrelid::regclass::text AS bucket, p.indexrelid::regclass::text AS parent "
            "FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indexrelid "
            "JOIN pg_index p ON p.indexrelid = h.inhparent "
            "WHERE p.indexrelid = 'syncd_data.cidadaos_cns'::regclass"
        )
        # a partitioned index: every bucket has its part, kept by each landing's COPY
        assert len(indexes) == config.destination.buckets
        plan = await dst.fetchval(
            "EXPLAIN (FORMAT json) SELECT * FROM syncd_data.cidadaos WHERE nu_cns = $1 "
            "AND municipio_id_sus = $2",
            "700000000000001",
            db.id,
        )
        assert "Index" in str(plan)
    finally:
        await dst.close()
