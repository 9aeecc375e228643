"""The conversion of the dataset tables an older syncd made (engine/upgrade.py), on real
PostgreSQL with readers querying: tables of one partition per municipality become hash buckets,
tables without row hashes gain them, and a view on a dataset table is refused clearly."""

from __future__ import annotations

import asyncpg
import pytest

from syncd import ledger
from syncd.engine.destination import Destination
from syncd.engine.upgrade import UpgradeError

from tests.conftest import TABLE_DATASETS, DestDb
from tests.scenarios.test_landing import open_while_read
from tests.scenarios.test_landing_changes import last_writes, verify
from tests.support.helpers import fingerprint, run_pass

CIDADAOS = TABLE_DATASETS[0]
SCHEMA = "syncd_data"


async def _to_partition_per_municipality(conn: asyncpg.Connection, datasets: list[str]) -> None:
    """Turn a destination into the layout of one LIST partition per municipality, the ledger at
    version 3, with an operator's index and grant on a dataset table."""
    for name in datasets:
        ids = [
            r[0] for r in await conn.fetch(f"SELECT DISTINCT municipio_id_sus FROM {SCHEMA}.{name}")
        ]
        await conn.execute(
            f"CREATE TABLE {SCHEMA}.old_{name} (LIKE {SCHEMA}.{name}) "
            "PARTITION BY LIST (municipio_id_sus)"
        )
        await conn.execute(f"ALTER TABLE {SCHEMA}.old_{name} ALTER municipio_id_sus DROP DEFAULT")
        await conn.execute(
            f"ALTER TABLE {SCHEMA}.old_{name} DROP COLUMN syncd_row_hash, DROP COLUMN syncd_src_fp"
        )
        for mid in ids:
            await conn.execute(
                f"CREATE TABLE {SCHEMA}.{name}__{mid} PARTITION OF {SCHEMA}.old_{name} "
                f"FOR VALUES IN ('{mid}')"
            )
        await conn.execute(
            f"INSERT INTO {SCHEMA}.old_{name} SELECT {await _columns(conn, name)} "
            f"FROM {SCHEMA}.{name}"
        )
        await conn.execute(f"DROP TABLE {SCHEMA}.{name}")
        await conn.execute(f"ALTER TABLE {SCHEMA}.old_{name} RENAME TO {name}")
    await conn.execute(f"CREATE INDEX ON {SCHEMA}.{datasets[0]} (nu_cns)")
    await conn.execute("DROP ROLE IF EXISTS analistas; CREATE ROLE analistas")
    await conn.execute(f"GRANT SELECT ON {SCHEMA}.{datasets[0]} TO analistas")
    await conn.execute(
        "DROP TABLE syncd.fingerprints;"
        "DROP TABLE syncd.layout_upgrades; ALTER TABLE syncd.catalog DROP COLUMN added_at;"
        "ALTER TABLE syncd.ledger DROP COLUMN inserted, DROP COLUMN deleted;"
        "DELETE FROM syncd.schema_version WHERE version > 3"
    )


async def _columns(conn: asyncpg.Connection, name: str) -> str:
    """The dataset table's columns but its row hashes and source fingerprints (what a table
    without row hashes has)."""
    return await conn.fetchval(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
        "AND attname NOT IN ('syncd_row_hash', 'syncd_src_fp')",
        f"{SCHEMA}.{name}",
    )


async def test_upgrade_from_one_partition_per_municipality(make_sources, dest, write_config):
    sources = await make_sources(4, citizens=400)
    datasets = [CIDADAOS, TABLE_DATASETS[3]]
    names = [d["name"] for d in datasets]
    _, config = write_config(dest, sources, datasets)
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    dst = await dest.connect()
    try:
        await _to_partition_per_municipality(dst, names)
        before = {n: await fingerprint(dst, n) for n in names}

        # readers query throughout the conversion (they may wait up to timeouts.lock)
        await open_while_read(dest, config, names)

        assert {n: await fingerprint(dst, n) for n in names} == before  # no row lost
        assert await dst.fetchval("SELECT max(version) FROM syncd.schema_version") == len(
            ledger.MIGRATIONS
        )
        upgraded = dict(await dst.fetch("SELECT dataset, rows FROM syncd.layout_upgrades"))
        assert upgraded == {n: before[n][0] for n in names}
        keys = dict(
            await dst.fetch(
                "SELECT c.relname, pg_get_partkeydef(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = $1 AND c.relkind = 'p'",
                SCHEMA,
            )
        )
        assert keys == {n: "HASH (municipio_id_sus)" for n in names}
        leftovers = await dst.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND (c.relname LIKE '%\\_\\_v_' OR c.relname ~ '__[0-9]+$')",
            SCHEMA,
        )
        assert leftovers == 0
        index = await dst.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 "
            "AND indexdef LIKE '%(nu_cns)%'",
            SCHEMA,
            names[0],
        )
        assert index == 1
        assert await dst.fetchval(
            "SELECT has_table_privilege('analistas', $1, 'SELECT')", f"{SCHEMA}.{names[0]}"
        )

        code, out, err = await run_pass(config)  # and the new layout syncs as usual
        assert code == 0, out + err
        assert {n: await fingerprint(dst, n) for n in names} == before
    finally:
        await dst.close()


async def test_upgrade_refuses_clearly_when_views_depend_on_a_dataset_table(
    make_sources, dest, write_config
):
    """A view would stay on the renamed old table, serving stale rows: refuse, say which."""
    sources = await make_sources(1, citizens=100)
    _, config = write_config(dest, sources, [CIDADAOS])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    dst = await dest.connect()
    try:
        await _to_partition_per_municipality(dst, ["cidadaos"])
        await dst.execute(
            "CREATE VIEW public.painel AS SELECT count(*) AS n FROM syncd_data.cidadaos"
        )
        before = await fingerprint(dst, "cidadaos")
        destination = Destination(config.destination, config.timeouts, pool_size=2)
        with pytest.raises(UpgradeError, match=r"views depend on it \(public\.painel\)"):
            await destination.open()
        assert await fingerprint(dst, "cidadaos") == before  # nothing touched
        await dst.execute("DROP VIEW public.painel")
        await destination.open()  # and once the operator acted, it converts
        await destination.close()
        assert await fingerprint(dst, "cidadaos") == before
    finally:
        await dst.close()


async def _without_row_hashes(dst: asyncpg.Connection, names: list[str]) -> None:
    """A destination without row hashes: the source column's own index, the ledger at 5."""
    for name in names:
        await dst.execute(
            f"DROP INDEX {SCHEMA}.{name}__rows; ALTER TABLE {SCHEMA}.{name} DROP COLUMN "
            f"syncd_row_hash, DROP COLUMN syncd_src_fp; "
            f"CREATE INDEX {name}__source ON {SCHEMA}.{name} (municipio_id_sus)"
        )
    await dst.execute(
        "DROP TABLE syncd.fingerprints;"
        "ALTER TABLE syncd.ledger DROP COLUMN inserted, DROP COLUMN deleted;"
        "DELETE FROM syncd.schema_version WHERE version > 5"
    )


async def test_tables_without_row_hashes_gain_them_with_readers_querying(
    make_sources, dest: DestDb, write_config
):
    sources = await make_sources(3, citizens=200)
    names = ["cidadaos", "atendimentos"]
    _, config = write_config(dest, sources, TABLE_DATASETS[:2])
    assert (await run_pass(config))[0] == 0
    dst = await dest.connect()
    try:
        await _without_row_hashes(dst, names)
        before = {n: await fingerprint(dst, n) for n in names}
        await open_while_read(dest, config, names)
        assert {n: await fingerprint(dst, n) for n in names} == before  # no row lost
        assert await dst.fetchval("SELECT max(version) FROM syncd.schema_version") == len(
            ledger.MIGRATIONS
        )
        indexes = {
            r[0]
            for r in await dst.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = ANY($2)",
                SCHEMA,
                names,
            )
        }
        assert indexes == {"cidadaos__rows", "atendimentos__rows"}
        # the first pass rewrites what has no hashes yet; the next writes nothing
        assert (await run_pass(config))[0] == 0
        writes = await last_writes(dst, sources[0].id)
        assert writes["cidadaos"][2] == writes["cidadaos"][3] == 200
        assert (await run_pass(config))[0] == 0
        assert (await last_writes(dst, sources[0].id))["cidadaos"][2:4] == (0, 0)
        assert (await verify(config))[0] == 0
    finally:
        await dst.close()
