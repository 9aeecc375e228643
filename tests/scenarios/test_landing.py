"""The landing under hard conditions: analysts reading all day, all of Brazil on a destination
with default settings, a destination backend killed mid-COPY, columns widened and added while
readers hold the table. The upgrade of older layouts is test_upgrade.py."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import asyncpg
import pytest

from syncd.engine.destination import Destination
from syncd.lab import embedded

from tests.conftest import TABLE_DATASETS, DestDb
from tests.support.helpers import assert_dataset_exact, run_pass

CIDADAOS = TABLE_DATASETS[0]
SCHEMA = "syncd_data"


class Readers:
    """Analysts: overlapping long queries on the dataset tables, back to back, plus a probe.

    Every reader runs with a short lock_timeout: a reader that ever waits for a lock (on syncd
    or anyone) fails its query, and the failure is kept."""

    def __init__(self, dsn: str, tables: list[str], *, lock_timeout: str = "50ms"):
        self.dsn, self.tables, self.lock_timeout = dsn, tables, lock_timeout
        self.queries = 0
        self.errors: list[str] = []
        self.stop = anyio.Event()

    async def _reader(self, sql: str, pause: float) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f"SET lock_timeout = '{self.lock_timeout}'")
            while not self.stop.is_set():
                try:
                    await conn.fetch(sql)
                    self.queries += 1
                except asyncpg.PostgresError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                await anyio.sleep(pause)
        finally:
            await conn.close()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for table in self.tables:
                # two long readers per table, overlapping: the table is never free
                long = f"SELECT count(*), pg_sleep(0.7) FROM {SCHEMA}.{table}"
                tg.start_soon(self._reader, long, 0.0)
                tg.start_soon(self._reader, long, 0.3)
                tg.start_soon(self._reader, f"SELECT * FROM {SCHEMA}.{table} LIMIT 5", 0.02)
            await self.stop.wait()
            tg.cancel_scope.cancel()


async def open_while_read(dest: DestDb, config, names: list[str]) -> None:
    """The destination opened (migrated, its tables upgraded) while analysts query `names`,
    each read allowed to wait up to 5 s (the upgrade's DDL waits at most timeouts.lock each
    try): not one read may fail."""
    readers = Readers(dest.dsn, names, lock_timeout="5s")
    destination = Destination(config.destination, config.timeouts, pool_size=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(readers.run)
        await anyio.sleep(0.3)
        await destination.open()
        await destination.close()
        await anyio.sleep(0.3)
        readers.stop.set()
    assert readers.errors == [], readers.errors[:3]
    assert readers.queries > 0


async def kill_destination_copy(admin: asyncpg.Connection, dbname: str) -> int:
    """Terminate syncd's destination backend as soon as it runs a COPY; its pid."""
    with anyio.fail_after(60):
        while True:
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'syncd' "
                "AND datname = $1 AND query LIKE 'COPY %' AND state = 'active' LIMIT 1",
                dbname,
            )
            if pid:
                await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                return int(pid)
            await anyio.sleep(0.005)


async def test_continuous_readers_never_fail_a_sync_nor_wait(make_sources, dest, write_config):
    sources = await make_sources(12, citizens=300)
    datasets = [CIDADAOS, TABLE_DATASETS[2]]
    _, config = write_config(dest, sources, datasets)
    code, out, err = await run_pass(config)  # the tables exist before the analysts arrive
    assert code == 0, out + err

    readers = Readers(dest.dsn, [d["name"] for d in datasets])
    async with anyio.create_task_group() as tg:
        tg.start_soon(readers.run)
        await anyio.sleep(0.5)  # the long readers hold both tables from now on
        for _ in range(2):
            code, out, err = await run_pass(config)
            assert code == 0, out + err
        readers.stop.set()
    assert readers.errors == [], readers.errors[:3]
    assert readers.queries > 20
    dst = await dest.connect()
    try:
        ok = await dst.fetchval("SELECT count(*) FROM syncd.ledger WHERE status = 'ok'")
        assert ok == 3 * 12 * 2  # three passes, every municipality, both datasets
    finally:
        await dst.close()


@pytest.fixture(scope="module")
def default_dest_cluster(pg_base) -> Iterator[embedded.Cluster]:
    """A destination as an analytics team gets it: PostgreSQL's own max_connections (100) and
    max_locks_per_transaction (64); only durability is off, for speed."""
    settings = {
        k: v
        for k, v in embedded.FAST_SETTINGS.items()
        if k not in ("max_connections", "max_locks_per_transaction")
    }
    cluster = embedded.Cluster.create(
        embedded.wheel_bin_dir(), pg_base / "default-dest", settings=settings
    )
    try:
        yield cluster
    finally:
        cluster.destroy()


async def _shared_installation(db, count: int) -> list[str]:
    """One PEC database holding `count` municipalities (tb_dim_municipio.co_ibge)."""
    ids = [f"9{n:05d}" for n in range(count)]
    admin = await asyncpg.connect(db.admin_dsn)
    try:
        await admin.execute("DELETE FROM tb_dim_municipio WHERE co_seq_dim_municipio > 1")
        await admin.executemany(
            "INSERT INTO tb_dim_municipio VALUES ($1, $2, 'M', 'SP')",
            [(n + 2, mid) for n, mid in enumerate(ids)],
        )
        await admin.execute(
            "UPDATE tb_fat_cidadao_pec SET co_dim_municipio = co_seq_fat_cidadao_pec % $1 + 2",
            count,
        )
        await admin.execute("CREATE INDEX ON tb_fat_cidadao_pec (co_dim_municipio)")
        await admin.execute("ANALYZE")
    finally:
        await admin.close()
    return ids


@pytest.mark.slow
async def test_all_of_brazil_shape_on_a_default_settings_destination(
    make_sources, default_dest_cluster, write_config
):
    """Hundreds of municipalities on one destination with default settings: whole-country joins
    with parallel workers keep working during and after the pass, and each dataset is its
    buckets, however many municipalities there are."""
    (db,) = await make_sources(1, citizens=6_000)
    ids = await _shared_installation(db, 400)
    admin = await asyncpg.connect(default_dest_cluster.dsn())
    await admin.execute("CREATE DATABASE brasil")
    await admin.close()
    dsn = default_dest_cluster.dsn("brasil")
    by_ibge = (
        "FROM tb_fat_cidadao_pec c JOIN tb_dim_municipio m "
        "ON m.co_seq_dim_municipio = c.co_dim_municipio "
        "WHERE m.co_ibge = current_setting('syncd.co_ibge')"
    )
    datasets = [
        {"name": "cidadaos", "query": f"SELECT c.* {by_ibge}"},
        {"name": "contatos", "query": f"SELECT c.co_seq_fat_cidadao_pec, c.nu_cns {by_ibge}"},
    ]
    sources = [{"id": mid, "dsn": db.dsn, "params": {"co_ibge": mid}} for mid in ids]
    _, config = write_config(DestDb("brasil", default_dest_cluster), sources, datasets)
    errors: list[str] = []
    answered = 0
    stop = anyio.Event()

    async def country_join() -> None:
        nonlocal answered
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "SET max_parallel_workers_per_gather = 4; SET parallel_setup_cost = 0;"
                "SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;"
                "SET lock_timeout = '1s'"
            )
            while not stop.is_set():
                try:
                    await conn.fetchval(
                        f"SELECT count(*) FROM {SCHEMA}.cidadaos a JOIN {SCHEMA}.contatos b "
                        "USING (municipio_id_sus, co_seq_fat_cidadao_pec)"
                    )
                    answered += 1
                except asyncpg.UndefinedTableError:
                    await anyio.sleep(0.2)  # the first pass has not created them yet
                except asyncpg.PostgresError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    await anyio.sleep(0.2)
        finally:
            await conn.close()

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(country_join)
        for _ in range(2):  # a first pass, then a steady-state one
            code, out, err = await run_pass(config)
            assert code == 0, (out + err)[-3000:]
        before = answered
        while answered < before + 8:  # and after the pass
            await anyio.sleep(0.1)
        stop.set()
    assert errors == [], errors[:3]
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
            SCHEMA,
        )
        assert tables == 2 * (1 + config.destination.buckets)
        landed = await conn.fetchval(
            f"SELECT count(DISTINCT municipio_id_sus) FROM {SCHEMA}.cidadaos"
        )
        assert landed == len(ids)
    finally:
        await conn.close()


async def test_destination_backend_killed_mid_copy_is_seen_at_once(
    make_sources, dest, write_config, source_cluster
):
    """With idle_stream at 10 minutes, a stall would outlast the test's own deadline: the
    pass finishing says the loss was seen, not timed out."""
    (db,) = await make_sources(1, citizens=60_000)
    _, config = write_config(
        dest,
        [db],
        [CIDADAOS],
        timeouts={"idle_stream": "10m"},
        retry={"attempts": 3, "backoff": "100ms", "max_backoff": "1s"},
    )
    admin = await asyncpg.connect(dest.cluster.dsn())
    killed: list[int] = []

    async def kill_copy() -> None:
        killed.append(await kill_destination_copy(admin, dest.dbname))

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_copy)
            code, out, err = await run_pass(config)
    await admin.close()
    assert killed
    assert code == 0, out + err
    assert "pool" not in (out + err).lower()
    dst = await dest.connect()
    src = await asyncpg.connect(db.admin_dsn)
    try:
        (row,) = await dst.fetch("SELECT * FROM syncd.ledger")
        assert row["status"] == "ok" and row["attempts"] == 2
        await assert_dataset_exact(
            src, dst, db.id, "cidadaos", f"SELECT * FROM {CIDADAOS['table']}"
        )
        # the source backend of the killed attempt was released, not left in ClientWrite
        left = await src.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncd'"
        )
        assert left == 0
    finally:
        await dst.close()
        await src.close()


async def test_default_settings_cluster_has_postgres_defaults(default_dest_cluster):
    conn = await asyncpg.connect(default_dest_cluster.dsn())
    try:
        assert await conn.fetchval("SHOW max_locks_per_transaction") == "64"
        assert await conn.fetchval("SHOW max_connections") == "100"
    finally:
        await conn.close()


async def test_a_widened_column_lands_while_readers_hold_the_table(
    make_sources, dest, write_config
):
    """One municipality on a newer PEC widened varchar(15) to varchar(40) and numeric(5,2) to
    numeric(9,2); columns are created without modifiers, so its rows land with no DDL at all,
    under readers that would block any."""
    first, newer = await make_sources(2, citizens=200)
    admin = await asyncpg.connect(newer.admin_dsn)
    try:
        await admin.execute(
            "ALTER TABLE tb_fat_cidadao_pec ALTER nu_cns TYPE varchar(40), "
            "ALTER nu_peso TYPE numeric(9,2)"
        )
        await admin.execute(
            "UPDATE tb_fat_cidadao_pec SET nu_cns = repeat('7', 40), nu_peso = 1234567.25 "
            "WHERE co_seq_fat_cidadao_pec = 1"
        )
    finally:
        await admin.close()
    _, config = write_config(dest, [first], [CIDADAOS])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    readers = Readers(dest.dsn, ["cidadaos"])
    _, both = write_config(dest, [first, newer], [CIDADAOS])
    async with anyio.create_task_group() as tg:
        tg.start_soon(readers.run)
        await anyio.sleep(0.3)
        code, out, err = await run_pass(both)
        readers.stop.set()
    assert code == 0, out + err
    assert readers.errors == []
    src = await asyncpg.connect(newer.admin_dsn)
    dst = await dest.connect()
    try:
        await assert_dataset_exact(
            src, dst, newer.id, "cidadaos", f"SELECT * FROM {CIDADAOS['table']}"
        )
    finally:
        await src.close()
        await dst.close()


async def test_a_new_column_never_fails_a_sync_and_lands_when_the_table_is_free(
    make_sources, dest, write_config
):
    first, newer = await make_sources(2, citizens=200)
    _, config = write_config(dest, [first, newer], [CIDADAOS])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    admin = await asyncpg.connect(newer.admin_dsn)
    try:
        await admin.execute("ALTER TABLE tb_fat_cidadao_pec ADD COLUMN nu_novo text DEFAULT 'x'")
    finally:
        await admin.close()
    readers = Readers(dest.dsn, ["cidadaos"], lock_timeout="2s")
    report = await dest.connect()  # an analyst's long report: the table is never free
    await report.execute("BEGIN; SELECT count(*) FROM syncd_data.cidadaos")
    async with anyio.create_task_group() as tg:
        tg.start_soon(readers.run)
        await anyio.sleep(0.3)
        code, out, err = await run_pass(config)
        readers.stop.set()
    await report.execute("COMMIT")
    await report.close()
    assert code == 0, out + err
    assert readers.errors == []
    dst = await dest.connect()
    try:
        columns = await dst.fetchval(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'syncd_data.cidadaos'::regclass "
            "AND attname = 'nu_novo'"
        )
        assert columns == 0  # not added: the rows landed without it
        code, out, err = await run_pass(config)  # nobody reading now: the column is added
        assert code == 0, out + err
        counts = dict(
            await dst.fetch(
                "SELECT municipio_id_sus, count(nu_novo) FROM syncd_data.cidadaos GROUP BY 1"
            )
        )
        assert counts == {first.id: 0, newer.id: 200}
    finally:
        await dst.close()
