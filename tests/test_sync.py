"""The engine end to end: byte-exact copies, atomic replacement, no bloat, limits that hold."""

from __future__ import annotations

import time

import anyio
import asyncpg

from syncd import pec

from conftest import QUERY_DATASETS, TABLE_DATASETS
from helpers import (
    assert_dataset_exact,
    data_size,
    fingerprint,
    relations,
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


async def test_repeated_passes_leave_no_extra_relations_and_no_growth(
    make_sources, dest, write_config
):
    sources = await make_sources(3, citizens=500)
    _, config = write_config(dest, sources)
    dst = await dest.connect()
    try:
        snapshots = []
        for _ in range(3):
            code, out, err = await run_pass(config)
            assert code == 0, out + err
            snapshots.append((await relations(dst), await data_size(dst)))
        (rels2, size2), (rels3, size3) = snapshots[1], snapshots[2]
        assert rels2 == rels3, "relations appeared or vanished between identical passes"
        assert size2 == size3, f"the data grew from {size2} to {size3} bytes"
        assert snapshots[0][0] == rels3
        assert not [r for r in rels3 if r[1].endswith("__staging")]
        partitions = await dst.fetchval(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'syncd_data'"
        )
        assert partitions == len(sources) * len(config.datasets)
        dead = await dst.fetchval(
            "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE schemaname = 'syncd_data'"
        )
        assert dead == 0
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
    slow = {  # each COPY takes a while, so the limits get tested under load
        "name": "equipes_lentas",
        "query": "SELECT e.* FROM tb_dim_equipe e WHERE (SELECT pg_sleep(0.25)::text) IS NOT NULL",
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
            "SELECT i.indexrelid::regclass::text AS name, p.indexrelid::regclass::text AS parent "
            "FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indexrelid "
            "JOIN pg_index p ON p.indexrelid = h.inhparent "
            "WHERE i.indrelid = $1::regclass",
            f"syncd_data.cidadaos__{db.id}",
        )
        # the new partition's index was built with the load and attached to the parent's
        assert [r["parent"] for r in indexes] == ["syncd_data.cidadaos_cns"]
    finally:
        await dst.close()
