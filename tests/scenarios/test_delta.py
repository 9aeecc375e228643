"""Delta transfer on real PostgreSQL, the municipal link through the fault proxy (counting its
bytes): an unchanged table costs a few hundred bytes, changes cost about their rows, the
destination equals the source after every pass (duplicates, NULLs, awkward values, a settings
change, VACUUM FULL, rows changing during the pass, a round cut, md5 refused), and tables landed
before delta transfer gain its column online."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import anyio
import asyncpg
import pytest

from syncd import ledger
from syncd.config import Config

from tests.conftest import READ_ROLE, TABLE_DATASETS, DestDb, SourceDb
from tests.scenarios.test_landing import open_while_read
from tests.scenarios.test_landing_changes import last_writes, verify
from tests.support.faultproxy import FaultProxy
from tests.support.helpers import assert_dataset_exact, binary_copy, fingerprint, run_pass

SCHEMA = "syncd_data"
CIDADAOS = TABLE_DATASETS[0]
TABLE = "public.tb_fat_cidadao_pec"
MANY = {"name": "muitas", "table": "public.muitas"}
FILLER = 3000  # rows, so that a change of a few is a delta, not "large" (FULL_SHARE)


async def through(proxies, src) -> tuple[FaultProxy, dict]:
    """The source's entry, its link through a fault proxy."""
    proxy = await proxies(src.cluster)
    return proxy, src.source_entry(dsn=proxy.dsn(src.dbname, user=READ_ROLE))


async def metered(proxy: FaultProxy, config) -> tuple[int, int]:
    """One pass; the bytes (down from the source, up to it) it moved over the link."""
    before = dict(proxy.moved)
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    return proxy.moved["down"] - before["down"], proxy.moved["up"] - before["up"]


async def ledger_bytes(dst: asyncpg.Connection, source_id: str) -> dict[str, int]:
    """dataset -> the bytes its last pass read from the source (rounds and rows)."""
    rows = await dst.fetch(
        "SELECT DISTINCT ON (dataset) dataset, bytes FROM syncd.ledger WHERE source_id = $1 "
        "ORDER BY dataset, pass_id DESC",
        source_id,
    )
    return {r["dataset"]: r["bytes"] for r in rows}


async def make_many(admin: asyncpg.Connection) -> None:
    """A keyless table: FILLER ordinary rows, a row twice, NULLs, floats and awkward text."""
    await admin.execute(
        "CREATE TABLE muitas (a int, b text, c float8, d timestamptz, e numeric, f bytea);"
        f"GRANT SELECT ON muitas TO {READ_ROLE};"
        "INSERT INTO muitas SELECT g, 'linha ' || g, g / 7.0, "
        "TIMESTAMPTZ '2024-01-01 00:00+00' + g * INTERVAL '1 hour', g * 1.5, "
        f"decode(md5(g::text), 'hex') FROM generate_series(1, {FILLER}) AS g;"
        "INSERT INTO muitas VALUES (-1, 'dupla', 0.1, NULL, NULL, NULL),"
        "(-1, 'dupla', 0.1, NULL, NULL, NULL), (NULL, NULL, NULL, NULL, NULL, NULL),"
        "(-2, E'tab\\there \\\\ \"aspas\" ção 🙂', 'NaN', 'infinity', 'NaN', '\\x00ff')"
    )


@dataclass
class Muitas:
    """One municipality with its table `muitas` made; sessions on its server and on the
    destination."""

    src: SourceDb
    admin: asyncpg.Connection
    dst: asyncpg.Connection


@pytest.fixture
async def muitas(make_sources, dest: DestDb) -> AsyncIterator[Muitas]:
    (src,) = await make_sources(1)
    admin = await asyncpg.connect(src.admin_dsn)
    dst = await dest.connect()
    try:
        await make_many(admin)
        yield Muitas(src, admin, dst)
    finally:
        await admin.close()
        await dst.close()


async def test_unchanged_costs_a_few_hundred_bytes_and_changes_about_their_rows(
    muitas: Muitas, dest: DestDb, write_config, proxies
):
    src, admin, dst = muitas.src, muitas.admin, muitas.dst
    proxy, entry = await through(proxies, src)
    _, config = write_config(dest, [entry], [MANY])
    _, plain = write_config(dest, [entry], [{**MANY, "delta": False}])
    full, _ = await metered(proxy, config)  # the first pass streams everything
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")
    # the same pass without delta transfer: what every pass cost before
    baseline, _ = await metered(proxy, plain)
    await metered(proxy, config)  # its fingerprints again (delta: false forgot them)
    down, up = await metered(proxy, config)
    steady, steady_up = await metered(proxy, config)
    assert steady < baseline / 10, (steady, baseline, full)
    # what a pass costs besides the rounds (connecting, describing the table) is the same
    # for both: the unchanged table itself is a few hundred bytes
    empty = {"name": "vazia", "table": "public.vazia"}
    await admin.execute(f"CREATE TABLE vazia (LIKE muitas); GRANT SELECT ON vazia TO {READ_ROLE}")
    _, none = write_config(dest, [entry], [{**empty, "delta": False}])
    floor, floor_up = await metered(proxy, none)
    assert steady - floor < 600, (steady, floor)
    assert (await last_writes(dst, src.id))["muitas"][1:4] == (FILLER + 4, 0, 0)
    # ~2% of the rows updated, deleted or inserted, spread over the table
    await admin.execute(
        "UPDATE muitas SET b = b || ' (nova)' WHERE a % 150 = 1;"
        "DELETE FROM muitas WHERE a % 150 = 2;"
        "INSERT INTO muitas SELECT a + 100000, b, c, d, e, f FROM muitas WHERE a % 150 = 3"
    )
    changed, _ = await metered(proxy, config)
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")
    _, rows, inserted, deleted, _ = (await last_writes(dst, src.id))["muitas"]
    assert (rows, inserted, deleted) == (FILLER + 4, 20 + 20, 20 + 20)
    assert changed < baseline / 4, (changed, baseline)
    code, text = await verify(config)
    assert code == 0, text
    del down, up, steady_up, floor_up


async def test_duplicates_nulls_and_a_multiset(muitas: Muitas, dest: DestDb, write_config):
    src, admin, dst = muitas.src, muitas.admin, muitas.dst
    _, config = write_config(dest, [src], [MANY])
    for change in (
        # a row twice, then three times, then once, then gone; NULL rows alike
        "INSERT INTO muitas VALUES (-1, 'dupla', 0.1, NULL, NULL, NULL)",
        "DELETE FROM muitas WHERE ctid IN (SELECT ctid FROM muitas WHERE a = -1 LIMIT 2)",
        "INSERT INTO muitas VALUES (NULL, NULL, NULL, NULL, NULL, NULL),"
        "(NULL, NULL, NULL, NULL, NULL, NULL)",
        "DELETE FROM muitas WHERE a = -1 OR a IS NULL",
        "INSERT INTO muitas SELECT * FROM muitas WHERE a < 5",  # every copy doubled
        None,
    ):
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")
        if change:
            await admin.execute(change)
    assert (await verify(config))[0] == 0


async def test_awkward_values_on_each_source_version(
    make_sources, dest: DestDb, write_config, any_source_cluster, caplog
):
    (src,) = await make_sources(1, citizens=400, cluster=any_source_cluster)
    admin = await asyncpg.connect(src.admin_dsn)
    dst = await dest.connect()
    try:
        _, config = write_config(dest, [src], TABLE_DATASETS[:2])
        assert (await run_pass(config))[0] == 0
        # the awkward rows (ids 1..20ish) changed and copied, others changed a little
        await admin.execute(
            f"UPDATE {TABLE} SET st_ativo = NOT coalesce(st_ativo, false) "
            "WHERE co_seq_fat_cidadao_pec <= 12 OR co_seq_fat_cidadao_pec % 97 = 0;"
            f"CREATE TEMP TABLE novos AS SELECT * FROM {TABLE} WHERE co_seq_fat_cidadao_pec <= 12;"
            "UPDATE novos SET co_seq_fat_cidadao_pec = co_seq_fat_cidadao_pec + 100000;"
            f"INSERT INTO {TABLE} SELECT * FROM novos;"
            "DELETE FROM tb_fat_atendimento_individual WHERE co_seq_fat_atd_ind % 89 = 0"
        )
        first = await ledger_bytes(dst, src.id)
        assert (await run_pass(config))[0] == 0
        writes = await last_writes(dst, src.id)
        assert writes["cidadaos"][2] < 60, writes  # only the rows that changed came
        after = await ledger_bytes(dst, src.id)
        # and only they crossed the link (the awkward rows are most of the table's bytes)
        assert after["cidadaos"] < first["cidadaos"], (after, first)
        assert after["atendimentos"] < first["atendimentos"] / 10, (after, first)
        assert not [r for r in caplog.records if getattr(r, "event", "") == "delta_fallback"]
        for dataset, table in (
            ("cidadaos", TABLE),
            ("atendimentos", "tb_fat_atendimento_individual"),
        ):
            await assert_dataset_exact(admin, dst, src.id, dataset, f"SELECT * FROM {table}")
        assert (await verify(config))[0] == 0
    finally:
        await admin.close()
        await dst.close()


async def test_a_settings_change_streams_everything_and_stays_equal(
    muitas: Muitas, dest: DestDb, write_config, proxies
):
    src, admin, dst = muitas.src, muitas.admin, muitas.dst
    proxy, entry = await through(proxies, src)
    # a query after the table, in the same snapshot: it sees the server's own settings
    ajustes = {
        "name": "ajustes",
        "query": "SELECT current_setting('TimeZone') AS tz, "
        "current_setting('extra_float_digits') AS efd, current_setting('DateStyle') AS ds",
    }
    _, config = write_config(dest, [entry], [MANY, ajustes])
    full, _ = await metered(proxy, config)
    # the server's own float output changes: the rounds pin theirs, nothing to stream
    await admin.execute(f'ALTER DATABASE "{src.dbname}" SET extra_float_digits = 0')
    await admin.execute(f"ALTER DATABASE \"{src.dbname}\" SET TimeZone = 'America/Sao_Paulo'")
    quiet, _ = await metered(proxy, config)
    assert quiet < full / 10, (quiet, full)
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")
    server = ("America/Sao_Paulo", "0", "ISO, MDY")
    assert tuple(await dst.fetchrow(f"SELECT tz, efd, ds FROM {SCHEMA}.ajustes")) == server
    # fingerprints made under another float setting than the one pinned now (as when the
    # server's major version changes float output): compare nothing, stream everything
    await dst.execute(
        "UPDATE syncd.fingerprints SET context = jsonb_set(context, "
        "'{settings,extra_float_digits}', '\"0\"')"
    )
    await admin.execute("UPDATE muitas SET c = c * 3 WHERE a % 500 = 0")
    again, _ = await metered(proxy, config)
    assert again > full / 2, (again, full)
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")
    assert tuple(await dst.fetchrow(f"SELECT tz, efd, ds FROM {SCHEMA}.ajustes")) == server
    await admin.execute("UPDATE muitas SET c = -c WHERE a % 700 = 0")  # a delta: 3 rounds
    assert (await run_pass(config))[0] == 0
    assert tuple(await dst.fetchrow(f"SELECT tz, efd, ds FROM {SCHEMA}.ajustes")) == server
    context = json.loads(await dst.fetchval("SELECT context::text FROM syncd.fingerprints"))
    assert context["settings"]["extra_float_digits"] == "3"
    # the dataset queries that follow in the same snapshot see the server's own settings
    assert (await verify(config))[0] == 0


async def test_vacuum_full_at_the_source(muitas: Muitas, dest: DestDb, write_config):
    src, admin, dst = muitas.src, muitas.admin, muitas.dst
    _, config = write_config(dest, [src], [MANY])
    assert (await run_pass(config))[0] == 0
    await admin.execute("DELETE FROM muitas WHERE a % 3 = 0 AND a < 300")
    await admin.execute("VACUUM FULL muitas")  # every row moves
    await admin.execute("UPDATE muitas SET e = -e WHERE a % 200 = 1")
    assert (await run_pass(config))[0] == 0
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")
    assert (await verify(config))[0] == 0


async def _pass_during_round_2(
    config: Config, admin: asyncpg.Connection, meanwhile: Callable[[], Awaitable[object]]
) -> tuple[int, str, str]:
    """A pass, and `meanwhile` done as its round 2 runs at the source; the pass's result."""
    result: list[tuple[int, str, str]] = []

    async def sync() -> None:
        result.append(await run_pass(config))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sync)
        await _wait_for_round_2(admin)
        await meanwhile()
    return result[0]


async def _wait_for_round_2(admin: asyncpg.Connection) -> None:
    """Until syncd's round 2 (the groups' digests) runs at the source."""
    with anyio.fail_after(60):
        while not await admin.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'syncd' "
            "AND query LIKE '%int4send%' AND state <> 'idle')"
        ):
            await anyio.sleep(0.02)


async def test_every_round_reads_the_same_snapshot(
    muitas: Muitas, dest: DestDb, write_config, proxies
):
    src, admin, dst = muitas.src, muitas.admin, muitas.dst
    proxy, entry = await through(proxies, src)
    _, config = write_config(dest, [entry], [MANY])
    assert (await run_pass(config))[0] == 0
    await admin.execute("UPDATE muitas SET b = 'antes' WHERE a % 100 = 5")
    await admin.execute("CREATE TABLE antes AS SELECT * FROM muitas")
    proxy.latency = 0.05
    # while the rounds run: rows updated (moved), deleted and added, committed
    result = await _pass_during_round_2(
        config,
        admin,
        partial(
            admin.execute,
            "UPDATE muitas SET b = 'durante' WHERE a % 100 IN (5, 6);"
            "DELETE FROM muitas WHERE a % 100 = 7;"
            "INSERT INTO muitas SELECT a + 500000, b, c, d, e, f FROM muitas WHERE a < 50",
        ),
    )
    assert result[0] == 0, result
    # the pass landed the snapshot it began with, not a mix
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM antes")
    proxy.latency = 0
    assert (await run_pass(config))[0] == 0
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")


async def test_a_round_cut_by_the_link_retries_and_stays_equal(
    muitas: Muitas, dest: DestDb, write_config, proxies
):
    src, admin, dst = muitas.src, muitas.admin, muitas.dst
    proxy, entry = await through(proxies, src)
    _, config = write_config(dest, [entry], [MANY])
    assert (await run_pass(config))[0] == 0
    await admin.execute("UPDATE muitas SET b = b || '!' WHERE a % 120 = 0")
    proxy.latency = 0.05

    async def cut() -> None:  # the link drops in the middle of round 2
        proxy.reset()
        proxy.latency = 0

    result = await _pass_during_round_2(config, admin, cut)
    assert result[0] == 0, result
    assert proxy.accepted >= 2  # a new session, a new snapshot
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")
    status, _rows, _ins, _del, _mode = (await last_writes(dst, src.id))["muitas"]
    assert status == "ok"
    assert (await verify(config))[0] == 0


async def test_md5_refused_uses_hashtext(muitas: Muitas, dest: DestDb, write_config, proxies):
    src, admin, dst = muitas.src, muitas.admin, muitas.dst
    proxy, entry = await through(proxies, src)
    _, config = write_config(dest, [entry], [MANY])
    # fingerprints made with md5, then md5 refused (as a FIPS build refuses it): round 1
    # fails, the pass streams everything with the other function, nothing fails
    full, _ = await metered(proxy, config)
    await admin.execute("REVOKE EXECUTE ON FUNCTION md5(text) FROM PUBLIC")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        reader = await asyncpg.connect(src.dsn)
        try:
            await reader.fetchval("SELECT md5('x')")
        finally:
            await reader.close()
    await admin.execute("UPDATE muitas SET b = 'sem md5' WHERE a % 300 = 0")
    fallback, _ = await metered(proxy, config)
    assert fallback > full / 2
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")
    context = json.loads(await dst.fetchval("SELECT context::text FROM syncd.fingerprints"))
    assert context["function"] == "hashtext"
    # from then on, the rounds use hashtext: changes cost their rows
    await admin.execute("UPDATE muitas SET b = 'de novo' WHERE a % 300 = 1")
    changed, _ = await metered(proxy, config)
    assert changed < full / 4, (changed, full)
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")
    quiet, _ = await metered(proxy, config)
    assert quiet < full / 10
    assert (await verify(config))[0] == 0


async def test_verify_and_full_refresh_with_delta(muitas: Muitas, dest: DestDb, write_config):
    src, admin, dst = muitas.src, muitas.admin, muitas.dst
    _, config = write_config(dest, [src], [MANY])
    assert (await run_pass(config))[0] == 0
    await dst.execute(f"UPDATE {SCHEMA}.muitas SET b = 'mexida' WHERE a = 10")
    code, text = await verify(config)
    assert code == 1 and "differs" in text, text
    # the stored fingerprints are trusted: an unchanged source writes nothing
    assert (await run_pass(config))[0] == 0
    assert (await last_writes(dst, src.id))["muitas"][2:4] == (0, 0)
    assert (await verify(config))[0] == 1
    # a full refresh trusts nothing: every row rewritten, with its fingerprint
    _, refresh = write_config(dest, [src], [{**MANY, "full_refresh_every": "1s"}])
    await anyio.sleep(1.1)
    assert (await run_pass(refresh))[0] == 0
    assert (await last_writes(dst, src.id))["muitas"][2] == FILLER + 4
    code, text = await verify(config)
    assert code == 0 and "compared on the columns" not in text, text  # syncd's own aside
    await admin.execute("DELETE FROM muitas WHERE a = 11")
    assert (await run_pass(config))[0] == 0
    assert (await last_writes(dst, src.id))["muitas"][2:4] == (0, 1)
    await assert_dataset_exact(admin, dst, src.id, "muitas", "SELECT * FROM muitas")


async def test_a_query_dataset_may_opt_in(muitas: Muitas, dest: DestDb, write_config):
    src, admin, dst = muitas.src, muitas.admin, muitas.dst
    query = "SELECT a, b, c FROM muitas WHERE a IS DISTINCT FROM 7"
    lista = {"name": "lista", "query": query, "delta": True}
    _, config = write_config(dest, [src], [lista])
    assert (await run_pass(config))[0] == 0
    await admin.execute("UPDATE muitas SET b = 'q' WHERE a % 250 = 0")
    assert (await run_pass(config))[0] == 0
    _, _rows, inserted, deleted, _ = (await last_writes(dst, src.id))["lista"]
    assert (inserted, deleted) == (12, 12)
    await assert_dataset_exact(admin, dst, src.id, "lista", query)
    assert await dst.fetchval("SELECT count(*) FROM syncd.fingerprints") == 1


async def test_tables_landed_before_gain_fingerprints_online(
    make_sources, dest: DestDb, write_config
):
    sources = await make_sources(2, citizens=150)
    names = ["cidadaos", "atendimentos"]
    _, config = write_config(dest, sources, TABLE_DATASETS[:2])
    # what the previous version landed: rows hashed without fingerprints...
    _, old = write_config(dest, sources, [{**d, "delta": False} for d in TABLE_DATASETS[:2]])
    assert (await run_pass(old))[0] == 0
    dst = await dest.connect()
    try:
        # ...and no fingerprint column, no context table
        for name in names:
            await dst.execute(f"ALTER TABLE {SCHEMA}.{name} DROP COLUMN syncd_src_fp")
        await dst.execute(
            "DROP TABLE syncd.fingerprints; DELETE FROM syncd.schema_version WHERE version > 6"
        )
        before = {n: await fingerprint(dst, n) for n in names}
        await open_while_read(dest, config, names)  # readers query throughout
        assert {n: await fingerprint(dst, n) for n in names} == before  # no row lost
        assert await dst.fetchval("SELECT max(version) FROM syncd.schema_version") == len(
            ledger.MIGRATIONS
        )
        for name in names:
            assert await dst.fetchval(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass "
                "AND attname = 'syncd_src_fp'",
                f"{SCHEMA}.{name}",
            )
        # the first pass streams and stores fingerprints; the next finds nothing changed
        assert (await run_pass(config))[0] == 0
        assert await dst.fetchval("SELECT count(*) FROM syncd.fingerprints") == 4
        assert (
            await dst.fetchval(f"SELECT count(*) FROM {SCHEMA}.cidadaos WHERE syncd_src_fp IS NULL")
            == 0
        )
        assert (await run_pass(config))[0] == 0
        writes = await last_writes(dst, sources[0].id)
        assert writes["cidadaos"][2:4] == (0, 0)
        read = await ledger_bytes(dst, sources[0].id)
        assert read["cidadaos"] < 1000, read  # round 1's answer
        assert (await verify(config))[0] == 0
    finally:
        await dst.close()


async def _same_bytes(src: asyncpg.Connection, dst: asyncpg.Connection, source_id: str) -> None:
    """The rows as binary COPY, in one order: what crosses versions (text forms of floats do
    not: 10 prints 17 digits where 12 and later print the shortest exact form)."""
    columns = "a, b, c, d, e, f"
    order = f"ORDER BY {columns}"
    assert await binary_copy(src, f"SELECT {columns} FROM muitas {order}") == await binary_copy(
        dst,
        f"SELECT {columns} FROM {SCHEMA}.muitas WHERE municipio_id_sus = '{source_id}' {order}",
    )


async def test_the_oldest_source_version(dest: DestDb, write_config, proxies, source_cluster_10):
    """Every round's SQL on PostgreSQL 10: the totals, the groups by position, the rows by TID
    and by fingerprint (a query), and md5 refused."""
    cluster = source_cluster_10
    admin = await asyncpg.connect(cluster.dsn())
    dbname = "delta_oldest"
    await admin.execute(f"DROP DATABASE IF EXISTS {dbname}")
    await admin.execute(f"CREATE DATABASE {dbname}")
    if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", READ_ROLE):
        await admin.execute(f"CREATE ROLE {READ_ROLE} LOGIN")
    src = await asyncpg.connect(cluster.dsn(dbname))
    dst = await dest.connect()
    try:
        assert src.get_server_version().major == 10
        await make_many(src)
        proxy = await proxies(cluster)
        entry = {"id": "100000", "dsn": proxy.dsn(dbname, user=READ_ROLE)}
        lista = {"name": "lista", "query": "SELECT a, b FROM muitas", "delta": True}
        _, config = write_config(dest, [entry], [MANY, lista])
        full, _ = await metered(proxy, config)
        quiet, _ = await metered(proxy, config)
        assert quiet < full / 10, (quiet, full)
        await src.execute(
            "UPDATE muitas SET b = b || '!' WHERE a % 100 = 0;"
            "DELETE FROM muitas WHERE a % 100 = 1;"
            "INSERT INTO muitas VALUES (-1, 'dupla', 0.1, NULL, NULL, NULL)"
        )
        changed, _ = await metered(proxy, config)
        assert changed < full / 4, (changed, full)
        await _same_bytes(src, dst, "100000")
        _, _rows, inserted, deleted, _ = (await last_writes(dst, "100000"))["lista"]
        assert (inserted, deleted) == (30 + 3, 30 + 30 + 2)  # the row twice, now three times
        await src.execute("REVOKE EXECUTE ON FUNCTION md5(text) FROM PUBLIC")
        await src.execute("UPDATE muitas SET e = -e WHERE a % 100 = 2")
        await metered(proxy, config)  # round 1 refused: everything, with hashtext
        await src.execute("UPDATE muitas SET e = -e WHERE a % 100 = 3")
        changed, _ = await metered(proxy, config)
        assert changed < full / 4, (changed, full)
        await _same_bytes(src, dst, "100000")
        assert (await verify(config))[0] == 0
    finally:
        await src.close()
        await dst.close()
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", dbname
        )
        await admin.execute(f"DROP DATABASE IF EXISTS {dbname}")
        await admin.close()
