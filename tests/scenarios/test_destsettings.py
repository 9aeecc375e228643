"""The analytical database as a DBA runs it: defaults set for the analysts with `ALTER DATABASE
... SET` do not break a landing, and every failure names the server it came from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import asyncpg
import pytest

from syncd.config import Config
from syncd.engine.errors import Failure, Kind, Side
from syncd.engine.limits import Limits
from syncd.engine.progress import Progress
from syncd.engine.results import SourceResult
from syncd.engine.shared import Engine
from syncd.engine.sync import sync_many
from syncd.ledger import Status

from tests.conftest import ATENDIMENTOS_INCREMENTAL, TABLE_DATASETS
from tests.scenarios.test_faults import assert_exact, via
from tests.scenarios.test_landing import kill_destination_copy
from tests.support.helpers import run_pass

CIDADAOS = {"name": "cidadaos", "table": "public.tb_fat_cidadao_pec"}
DATASETS = [*TABLE_DATASETS[:1], ATENDIMENTOS_INCREMENTAL, *TABLE_DATASETS[2:]]

# what DBAs set for their analysts, each of which broke (or could break) a landing
DBA_DEFAULTS = {
    "statement_timeout": "1ms",
    "lock_timeout": "1ms",
    "idle_in_transaction_session_timeout": "20ms",
    "idle_session_timeout": "20ms",
    "search_path": "analysts_first, public",
    "quote_all_identifiers": "on",
    "standard_conforming_strings": "off",
    "temp_file_limit": "64kB",
    "DateStyle": "SQL, DMY",
    "IntervalStyle": "sql_standard",
    "extra_float_digits": "0",
    "TimeZone": "Pacific/Chatham",
}


class Heard(Progress):
    """Every retry's failure, as the retry policy reports it."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def retried(self, source_id: str | None, dataset: str | None, failure: Failure) -> None:
        self.failures.append(failure)


async def run_engine(
    config: Config,
    heard: Progress | None = None,
    opened: Callable[[], Awaitable[None]] | None = None,
) -> list[SourceResult]:
    """One pass in process; `opened()` runs once the destination is open and migrated."""
    engine = Engine.create(config, Limits(config.concurrency), heard or Progress())
    try:
        await engine.destination.open()
        if opened is not None:
            await opened()
        return await sync_many(engine, config.sources, config.datasets)
    finally:
        await engine.close()


async def alter_database(dest, setting: str, value: str | None) -> None:
    """As the DBA does it; None: back to the server's default (for the test's own reads)."""
    admin = await asyncpg.connect(dest.cluster.dsn())
    try:
        if value is None:
            await admin.execute(f'ALTER DATABASE "{dest.dbname}" RESET {setting}')
        else:
            await admin.execute(f"ALTER DATABASE \"{dest.dbname}\" SET {setting} = '{value}'")
    finally:
        await admin.close()


@pytest.mark.parametrize("setting", sorted(DBA_DEFAULTS))
async def test_a_dba_default_on_the_database_does_not_break_a_landing(
    make_sources, dest, write_config, setting
):
    dbs = await make_sources(2)
    await alter_database(dest, setting, DBA_DEFAULTS[setting])
    _, config = write_config(dest, dbs, DATASETS)
    for _ in range(2):  # the first pass (tables made) and the next (incremental, diffs)
        code, out, err = await run_pass(config)
        assert code == 0, out + err
    await alter_database(dest, setting, None)
    for db in dbs:
        assert await assert_exact(dest, db, CIDADAOS) == db.citizens


async def test_serializable_by_default_lands_several_municipalities_at_once(
    make_sources, dest, write_config
):
    """The first pass of several municipalities creates the tables while the others wait for
    them: under serializable it failed with "already exists" and serialization failures."""
    dbs = await make_sources(5)
    await alter_database(dest, "default_transaction_isolation", "serializable")
    _, config = write_config(dest, dbs, DATASETS, concurrency={"sources": 5, "writers": 5})
    for _ in range(2):
        heard = Heard()
        results = await run_engine(config, heard)
        assert [r.status for r in results] == [Status.OK] * 5, [r.error for r in results]
        assert not [f for f in heard.failures if f.sqlstate == "40001"]
    for db in dbs:
        assert await assert_exact(dest, db, CIDADAOS) == db.citizens


async def test_a_read_only_database_is_refused_naming_the_destination(
    make_sources, dest, write_config
):
    (db,) = await make_sources(1)
    await alter_database(dest, "default_transaction_read_only", "on")
    _, config = write_config(dest, [db], [CIDADAOS])
    code, out, err = await run_pass(config)
    assert code == 1
    assert "read-only transaction" in out + err
    assert "the analytical database refuses writes" in out + err
    assert (out + err).startswith("destination ") and "source" not in out + err


async def test_a_destination_statement_timeout_is_the_destinations(
    make_sources, dest, write_config
):
    """An analyst's lock makes the landing wait past timeouts.destination_statement: the
    reason names the destination and its own bound, never the source."""
    (db,) = await make_sources(1)
    _, config = write_config(dest, [db], [CIDADAOS])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    _, config = write_config(
        dest, [db], [CIDADAOS], timeouts={"destination_statement": "200ms", "lock": "30s"}
    )
    analyst = await dest.connect()
    tx = analyst.transaction()

    async def lock() -> None:
        await tx.start()
        await analyst.execute("LOCK TABLE syncd_data.cidadaos IN ACCESS EXCLUSIVE MODE")

    try:
        heard = Heard()
        (result,) = await run_engine(config, heard, lock)
        await tx.rollback()
    finally:
        await analyst.close()
    error = result.datasets["cidadaos"].error or ""
    assert result.status == Status.FAILED
    assert "statement timeout on the destination (timeouts.destination_statement)" in error
    assert heard.failures and all(f.side == Side.DESTINATION for f in heard.failures)
    assert all("source" not in f.reason for f in heard.failures)


async def test_a_source_statement_timeout_is_the_sources(make_sources, dest, write_config):
    (db,) = await make_sources(1)
    _, config = write_config(dest, [db], [CIDADAOS], timeouts={"statement": "1s"})
    owner = await asyncpg.connect(db.admin_dsn)
    try:
        tx = owner.transaction()
        await tx.start()
        await owner.execute("LOCK TABLE public.tb_fat_cidadao_pec IN ACCESS EXCLUSIVE MODE")
        heard = Heard()
        (result,) = await run_engine(config, heard)
        await tx.rollback()
    finally:
        await owner.close()
    assert result.status == Status.FAILED
    assert "statement timeout on the source (timeouts.statement)" in (
        result.datasets["cidadaos"].error or ""
    )
    assert heard.failures and all(f.side == Side.SOURCE for f in heard.failures)


async def test_a_destination_backend_killed_is_named_a_destination_failure(
    make_sources, dest, write_config
):
    (db,) = await make_sources(1, citizens=60_000)
    _, config = write_config(
        dest,
        [db],
        [CIDADAOS],
        retry={"attempts": 3, "backoff": "100ms", "max_backoff": "1s"},
    )
    admin = await asyncpg.connect(dest.cluster.dsn())
    killed: list[int] = []

    async def kill_copy() -> None:
        killed.append(await kill_destination_copy(admin, dest.dbname))

    heard = Heard()
    try:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_copy)
                (result,) = await run_engine(config, heard)
    finally:
        await admin.close()
    assert killed and result.status == Status.OK
    assert heard.failures, "the kill was retried"
    for failure in heard.failures:
        assert failure.side == Side.DESTINATION, failure
        assert failure.lost_connection and "source" not in failure.reason, failure


async def test_a_destination_link_cut_is_named_a_destination_failure(
    make_sources, dest, write_config, proxies
):
    (db,) = await make_sources(1, citizens=20_000)
    proxy = await proxies(dest.cluster)
    proxy.cut_next(after=1_000_000, direction="up")
    path, _ = write_config(dest, [db], [CIDADAOS])
    path.write_text(path.read_text().replace(dest.dsn, proxy.dsn(dest.dbname)))
    from syncd import config as config_module

    heard = Heard()
    (result,) = await run_engine(config_module.load(path), heard)
    assert result.status == Status.OK and proxy.cut_count == 1
    assert heard.failures
    for failure in heard.failures:
        assert failure.side == Side.DESTINATION and failure.kind == Kind.CONNECTION, failure
        assert "source" not in failure.reason, failure


async def test_a_source_link_cut_is_named_a_source_failure(
    make_sources, dest, write_config, proxies, source_cluster
):
    (db,) = await make_sources(1, citizens=20_000)
    proxy = await proxies(source_cluster)
    proxy.cut_next(after=1_000_000, direction="down")
    _, config = write_config(dest, [via(proxy, db)], [CIDADAOS])
    heard = Heard()
    (result,) = await run_engine(config, heard)
    assert result.status == Status.OK and proxy.cut_count == 1
    assert heard.failures
    for failure in heard.failures:
        assert failure.side == Side.SOURCE, failure
        assert "destination" not in failure.reason, failure


async def test_a_pooled_connection_keeps_its_pins_after_the_pool_resets_it(
    make_sources, dest, write_config
):
    """asyncpg resets a connection as the pool takes it back (RESET ALL): what the startup
    packet set survives, a SET does not, so the DBA's idle_session_timeout would cut the
    connections idle between passes unless the pin is made again."""
    dbs = await make_sources(1)
    await alter_database(dest, "idle_session_timeout", "20ms")
    _, config = write_config(dest, dbs, DATASETS)
    engine = Engine.create(config, Limits(config.concurrency), Progress())
    try:
        await engine.destination.open(setup=False)
        pids = set()
        for _ in range(3):
            async with engine.destination.acquire() as conn:
                assert await conn.fetchval("SHOW idle_session_timeout") == "0"
                pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
            await anyio.sleep(0.1)  # idle in the pool past the DBA's timeout
        assert len(pids) == 1, "the pooled connection was cut while idle"
    finally:
        await engine.close()
        await alter_database(dest, "idle_session_timeout", None)
