"""A column's type changed online (engine/retype.py): a hidden column filled in batches beside
it, then swapped in, catalog only. Readers never wait on syncd longer than timeouts.lock, however
large the table; landings go on meanwhile; a syncd that stops mid-way is carried on by the next.

The tables here are small, so the online path is taken by `destination.retype_online_above: 0`
(every table), except in the large-table test, where the ALTER's rewrite outlasting
timeouts.lock sends it online by itself."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import asyncpg
import pytest

from syncd.engine.retype import hidden_name
from syncd.lab import embedded
from syncd.ledger.lockkeys import source_key

from tests.conftest import DestDb
from tests.scenarios.test_mixed_fleet import (
    DOSES,
    SCHEMA,
    LightReaders,
    column_types,
    municipality,
    pass_beside,
)
from tests.support.helpers import run_pass

ONLINE = {"retype_online_above": "0"}  # every table changes online, however small
INCREMENTAL = {**DOSES, "mode": "incremental", "cursor": "id", "key": "id"}


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


async def unfilled(dst: asyncpg.Connection, dataset: str, column: str) -> int:
    """Rows whose value is not in the hidden column yet."""
    hidden = hidden_name(column)
    return int(
        await dst.fetchval(
            f'SELECT count(*) FROM {SCHEMA}.{dataset} WHERE "{hidden}" IS NULL '
            f'AND "{column}" IS NOT NULL'
        )
    )


async def hidden_columns(dst: asyncpg.Connection, dataset: str) -> list[str]:
    return [
        r[0]
        for r in await dst.fetch(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
            "AND NOT attisdropped AND attname::text LIKE 'syncd_retype_%'",
            f"{SCHEMA}.{dataset}",
        )
    ]


async def retype_objects(dst: asyncpg.Connection) -> tuple[int, int]:
    """syncd's retype triggers and functions left anywhere (both 0 once a change is done)."""
    triggers = await dst.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = 'syncd_retype'")
    functions = await dst.fetchval(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'syncd' AND p.proname LIKE 'retype\\_%'"
    )
    return int(triggers), int(functions)


async def test_a_held_reader_never_waits_the_backfill_completes_and_the_swap_waits_for_it(
    source_cluster_10: embedded.Cluster,
    source_cluster: embedded.Cluster,
    dest: DestDb,
    write_config: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = await municipality(source_cluster_10, "integer", list(range(1, 41)))
    # the newer PEC's ids are bigint; today its values still fit an integer
    new = await municipality(source_cluster, "bigint", list(range(100, 120)))
    _, alone = write_config(dest, [old], [DOSES], destination=ONLINE)
    _, both = write_config(dest, [old, new], [DOSES], destination=ONLINE)
    _, only_new = write_config(dest, [new], [DOSES], destination=ONLINE)
    code, out, err = await run_pass(alone)
    assert code == 0, out + err
    dst = await dest.connect()
    holder = await dest.connect()  # another syncd syncing the old municipality: its lock
    report = await dest.connect()  # an analyst's long report
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", source_key(old["id"]))
        # the new municipality's pass starts the change; the old one's rows wait for its lock
        with caplog.at_level("INFO", logger="syncd"):
            code, out, err = await run_pass(only_new)
        assert code == 0, out + err
        started = events(caplog, "column_retype_started")
        assert [(r.column, r.from_type, r.to_type, r.source, r.source_type) for r in started] == [  # type: ignore[attr-defined]
            ("id", "integer", "bigint", new["id"], "bigint")
        ]
        assert (await column_types(dst, "doses"))["id"] == "integer"
        assert await hidden_columns(dst, "doses") == [hidden_name("id")]
        assert await unfilled(dst, "doses", "id") == 40  # the old municipality's, all of them
        landed = await dst.fetch(f"SELECT id FROM {SCHEMA}.doses ORDER BY id")
        assert [r["id"] for r in landed] == [*range(1, 41), *range(100, 120)]  # landed meanwhile

        # the report holds the table (ACCESS SHARE) from now on; the old municipality is free
        await report.execute(f"BEGIN; SELECT count(*) FROM {SCHEMA}.doses")
        await holder.execute("SELECT pg_advisory_unlock_all()")
        caplog.clear()
        with caplog.at_level("INFO", logger="syncd"):
            await pass_beside(LightReaders(dest.dsn, ["doses"]), both)
        # the backfill completed under the held lock; the swap waits for the report
        assert await unfilled(dst, "doses", "id") == 0
        assert [r.column for r in events(caplog, "column_retype_backfilled")] == ["id"]  # type: ignore[attr-defined]
        deferred = [r for r in events(caplog, "column_type_deferred") if r.stage == "swap"]  # type: ignore[attr-defined]
        assert deferred and all(r.column == "id" for r in deferred)  # type: ignore[attr-defined]
        assert (await column_types(dst, "doses"))["id"] == "integer"
        # the report was never blocked: it reads on
        assert await report.fetchval(f"SELECT count(*) FROM {SCHEMA}.doses") == 60
        await report.execute("COMMIT")

        caplog.clear()
        with caplog.at_level("INFO", logger="syncd"):
            code, out, err = await run_pass(both)  # nobody reading now: swapped
        assert code == 0, out + err
        changed = events(caplog, "column_type_changed")
        assert [(r.column, r.from_type, r.to_type, r.source) for r in changed] == [  # type: ignore[attr-defined]
            ("id", "integer", "bigint", new["id"])
        ]
        assert (await column_types(dst, "doses"))["id"] == "bigint"
        assert await hidden_columns(dst, "doses") == []
        assert await retype_objects(dst) == (0, 0)
        # a value only the new type holds lands now
        admin = await asyncpg.connect(new["dsn"])
        try:
            await admin.execute("INSERT INTO doses VALUES (5000000000, 'BCG')")
        finally:
            await admin.close()
        code, out, err = await run_pass(both)
        assert code == 0, out + err
        for source in (old, new):
            sent = await _ids(source["dsn"])
            landed = await dst.fetch(
                f"SELECT id FROM {SCHEMA}.doses WHERE municipio_id_sus = $1", source["id"]
            )
            assert sorted(r["id"] for r in landed) == sent
    finally:
        for conn in (dst, holder, report):
            await conn.close()


async def _ids(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return sorted(r["id"] for r in await conn.fetch("SELECT id FROM doses"))
    finally:
        await conn.close()


async def _grow(source: dict, rows: int) -> None:
    """`rows` more doses at the municipality, ids from 1,000,000 up (one statement)."""
    conn = await asyncpg.connect(source["dsn"])
    try:
        await conn.execute(
            "INSERT INTO doses SELECT g, 'dose ' || g FROM generate_series(1000000, $1) g",
            1000000 + rows - 1,
        )
    finally:
        await conn.close()


async def _assert_ids_as_sent(dst: asyncpg.Connection, sources: list[dict]) -> None:
    for source in sources:
        landed = await dst.fetch(
            f"SELECT id FROM {SCHEMA}.doses WHERE municipio_id_sus = $1", source["id"]
        )
        assert sorted(r["id"] for r in landed) == await _ids(source["dsn"]), source["id"]


class StrictReaders:
    """Analysts querying in a loop with `SET lock_timeout = '1s'` (the landing contract: a
    reader never waits on syncd for more than 1 s): not one query may fail."""

    def __init__(self, dsn: str, count: int = 2):
        self.dsn, self.count = dsn, count
        self.queries = 0
        self.errors: list[str] = []
        self.stop = anyio.Event()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for n in range(self.count):
                tg.start_soon(self._one, n)

    async def _one(self, n: int) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("SET lock_timeout = '1s'")
            while not self.stop.is_set():
                try:
                    await conn.fetch(
                        f"SELECT id, vacina FROM {SCHEMA}.doses WHERE id = $1",
                        self.queries + n,
                    )
                    self.queries += 1
                except asyncpg.PostgresError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                await anyio.sleep(0.01)
        finally:
            await conn.close()


LARGE = 1_500_000  # rows: a plain ALTER to bigint takes 1.3-2.3 s here at 1.2 million


@pytest.mark.slow
async def test_readers_never_wait_a_second_while_a_large_table_changes_type(
    source_cluster: embedded.Cluster,
    dest: DestDb,
    write_config: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A table whose one ALTER would hold every reader for seconds: the ALTER is tried (the
    table is under retype_online_above), cancelled once it outlasts timeouts.lock, and the
    change made online; readers allowed 1 s for a lock never fail."""
    old = await municipality(source_cluster, "integer", [1, 2, 3])
    await _grow(old, LARGE)
    new = await municipality(source_cluster, "bigint", [4, 5])
    sized = {"retype_online_above": "10GB"}
    _, alone = write_config(dest, [old], [DOSES], destination=sized)
    code, out, err = await run_pass(alone)
    assert code == 0, out + err
    # the new municipality alone: the large one's landing, were it syncing too, would hold the
    # table (ROW EXCLUSIVE) and the change would wait for a later pass
    _, only_new = write_config(dest, [new], [DOSES], destination=sized)
    _, both = write_config(dest, [old, new], [DOSES], destination=sized)
    with caplog.at_level("INFO", logger="syncd"):
        await pass_beside(StrictReaders(dest.dsn), only_new, warmup=0.3)
    # it went online (the ALTER's rewrite was cancelled) and finished within the pass
    assert [r.column for r in events(caplog, "column_retype_started")] == ["id"]  # type: ignore[attr-defined]
    assert [r.column for r in events(caplog, "column_type_changed")] == ["id"]  # type: ignore[attr-defined]
    dst = await dest.connect()
    try:
        assert (await column_types(dst, "doses"))["id"] == "bigint"
        assert await hidden_columns(dst, "doses") == []
        assert await dst.fetchval(f"SELECT count(*) FROM {SCHEMA}.doses") == LARGE + 5
        code, out, err = await run_pass(both)
        assert code == 0, out + err
        await _assert_ids_as_sent(dst, [old, new])
    finally:
        await dst.close()


async def test_an_incremental_dataset_whose_key_widens_keeps_its_unique_index_and_upserts(
    source_cluster_10: embedded.Cluster,
    source_cluster: embedded.Cluster,
    dest: DestDb,
    write_config: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = await municipality(source_cluster_10, "integer", list(range(1, 21)))
    new = await municipality(source_cluster, "bigint", list(range(100, 111)))
    _, alone = write_config(dest, [old], [INCREMENTAL], destination=ONLINE)
    _, both = write_config(dest, [old, new], [INCREMENTAL], destination=ONLINE)
    code, out, err = await run_pass(alone)
    assert code == 0, out + err
    dst = await dest.connect()
    # a report in a repeatable-read transaction: its snapshot is older than any index build,
    # which waits for it (within timeouts.lock) and is left invalid; it reads another table
    report = await dest.connect()
    try:
        await report.execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM syncd.ledger"
        )
        with caplog.at_level("INFO", logger="syncd"):
            code, out, err = await run_pass(both)
        assert code == 0, out + err  # the rows that fit landed
        waits = [r for r in events(caplog, "column_type_deferred") if r.stage == "index"]  # type: ignore[attr-defined]
        assert waits, [r.getMessage() for r in caplog.records]
        assert (await column_types(dst, "doses"))["id"] == "integer"
        assert await unfilled(dst, "doses", "id") == 0  # filled all the same
        invalid = await dst.fetchval(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE NOT i.indisvalid AND c.relname LIKE '%\\_rt'"
        )
        assert invalid == 1  # the interrupted build, of no use: dropped and built again next
    finally:
        await report.execute("COMMIT")
        await report.close()
    try:
        code, out, err = await run_pass(both)  # indexed and swapped
        assert code == 0, out + err
        assert (await column_types(dst, "doses"))["id"] == "bigint"
        assert await hidden_columns(dst, "doses") == []
        assert await retype_objects(dst) == (0, 0)
        key = await dst.fetchrow(
            "SELECT i.indisunique, i.indisvalid, pg_get_indexdef(i.indexrelid) AS def "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = $1::regclass AND c.relname = 'doses__key'",
            f"{SCHEMA}.doses",
        )
        assert key is not None and key["indisunique"] and key["indisvalid"], key
        assert "(municipio_id_sus, id)" in key["def"], key["def"]
        # every bucket has its part of it, valid
        parts = await dst.fetchval(
            "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid "
            "WHERE i.inhparent = $1::regclass AND x.indisvalid AND x.indisunique",
            f"{SCHEMA}.doses__key",
        )
        assert parts == 16
        # upserts go on: new rows (one only bigint holds) and a changed one, by key
        for source, sql in (
            (new, "INSERT INTO doses VALUES (5000000000, 'BCG'), (111, 'BCG')"),
            (old, "INSERT INTO doses VALUES (21, 'BCG'); UPDATE doses SET vacina = 'X' "),
        ):
            conn = await asyncpg.connect(source["dsn"])
            try:
                await conn.execute(sql)
            finally:
                await conn.close()
        for _ in range(2):
            code, out, err = await run_pass(both)
            assert code == 0, out + err
        await _assert_ids_as_sent(dst, [old, new])
        assert await dst.fetchval(f"SELECT count(*) FROM {SCHEMA}.doses WHERE id = 5000000000") == 1
    finally:
        await dst.close()


async def test_a_change_cut_off_mid_backfill_is_finished_by_the_next_syncd(
    source_cluster_10: embedded.Cluster,
    source_cluster: embedded.Cluster,
    dest: DestDb,
    write_config: Callable,
    proxies: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every connection to the analytical database reset (RST, through the TCP proxy) while
    the hidden column is being filled: the next syncd finds the change in the catalog and
    finishes it."""
    rows = 300_000
    old = await municipality(source_cluster, "integer", [1])
    await _grow(old, rows)
    new = await municipality(source_cluster_10, "bigint", [2, 3])
    _, alone = write_config(dest, [old], [DOSES], destination=ONLINE)
    code, out, err = await run_pass(alone)
    assert code == 0, out + err
    proxy = await proxies(dest.cluster)
    _, cut = write_config(
        dest,
        [old, new],
        [DOSES],
        destination={"dsn": proxy.dsn(dest.dbname), **ONLINE},
        timeouts={"connect": "2s"},  # once cut off, the pass gives up soon
    )
    dst = await dest.connect()
    try:

        async def cut_mid_backfill() -> None:
            while True:
                if await hidden_columns(dst, "doses"):
                    left = await unfilled(dst, "doses", "id")
                    if 0 < left < rows:
                        proxy.blackhole = True  # no new connection gets through either
                        proxy.reset()
                        return
                await anyio.sleep(0.01)

        with caplog.at_level("INFO", logger="syncd"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(cut_mid_backfill)
                await run_pass(cut)  # its outcome is the fault's: the state is what counts
                tg.cancel_scope.cancel()  # (had the cut not come, the checks below say so)
        assert (await column_types(dst, "doses"))["id"] == "integer"
        assert await hidden_columns(dst, "doses") == [hidden_name("id")]
        assert 0 < await unfilled(dst, "doses", "id") < rows  # cut off half way
        assert events(caplog, "column_retype_started")

        proxy.clear()
        _, direct = write_config(dest, [old, new], [DOSES], destination=ONLINE)
        code, out, err = await run_pass(direct)  # a new syncd: carries it on, and finishes
        assert code == 0, out + err
        assert (await column_types(dst, "doses"))["id"] == "bigint"
        assert await hidden_columns(dst, "doses") == []
        assert await retype_objects(dst) == (0, 0)
        await _assert_ids_as_sent(dst, [old, new])
    finally:
        await dst.close()
