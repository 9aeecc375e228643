"""Faults injected with a real TCP proxy and real servers: cuts, resets, blackholes, slow links,
terminated backends, a restarted destination, kill -9 of syncd itself."""

from __future__ import annotations

import anyio
import asyncpg

from tests.conftest import TABLE_DATASETS
from tests.support.faultproxy import FaultProxy
from tests.support.helpers import assert_dataset_exact, run_pass

CIDADAOS, EQUIPES = TABLE_DATASETS[0], TABLE_DATASETS[3]
PATIENT_RETRY = {"attempts": 6, "backoff": "200ms", "max_backoff": "2s"}


def via(proxy: FaultProxy, db, user: str = "esus_leitura") -> dict:
    entry = db.source_entry()
    entry["dsn"] = proxy.dsn(db.dbname, user=user)
    return entry


async def ledger_rows(dest) -> list[asyncpg.Record]:
    dst = await dest.connect()
    try:
        return await dst.fetch("SELECT * FROM syncd.ledger ORDER BY pass_id, dataset")
    finally:
        await dst.close()


async def assert_exact(dest, db, dataset: dict) -> int:
    src = await asyncpg.connect(db.admin_dsn)
    dst = await dest.connect()
    try:
        return await assert_dataset_exact(
            src, dst, db.id, dataset["name"], f"SELECT * FROM {dataset['table']}"
        )
    finally:
        await src.close()
        await dst.close()


async def wait_for_query(cluster, condition: str, *args, timeout: float = 60) -> int:
    """Poll pg_stat_activity until a syncd backend matches; returns its pid."""
    admin = await asyncpg.connect(cluster.dsn())
    try:
        with anyio.fail_after(timeout):
            while True:
                pid = await admin.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'syncd' "
                    f"AND {condition} LIMIT 1",
                    *args,
                )
                if pid:
                    return pid
                await anyio.sleep(0.01)
    finally:
        await admin.close()


async def test_source_cut_mid_copy_is_retried_on_a_new_snapshot(
    make_sources, dest, write_config, proxies, source_cluster
):
    (db,) = await make_sources(1, citizens=20_000)
    proxy = await proxies(source_cluster)
    proxy.cut_next(after=1_000_000, direction="down")
    _, config = write_config(dest, [via(proxy, db)], [CIDADAOS])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    assert proxy.cut_count == 1
    (row,) = await ledger_rows(dest)
    assert row["status"] == "ok" and row["attempts"] == 2 and row["rows"] == 20_000
    assert await assert_exact(dest, db, CIDADAOS) == 20_000


async def test_destination_cut_mid_copy_is_retried_in_the_same_snapshot(
    make_sources, dest, write_config, proxies
):
    (db,) = await make_sources(1, citizens=20_000)
    proxy = await proxies(dest.cluster)
    proxy.cut_next(after=1_000_000, direction="up")
    path, config = write_config(dest, [db], [CIDADAOS, EQUIPES])
    path.write_text(path.read_text().replace(dest.dsn, proxy.dsn(dest.dbname)))
    from syncd import config as config_module

    config = config_module.load(path)
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    assert proxy.cut_count == 1
    rows = {r["dataset"]: r for r in await ledger_rows(dest)}
    assert rows["cidadaos"]["attempts"] == 2 and rows["cidadaos"]["rows"] == 20_000
    assert rows["dim_equipe"]["attempts"] == 1
    assert await assert_exact(dest, db, CIDADAOS) == 20_000
    assert await assert_exact(dest, db, EQUIPES) > 0


async def test_source_backend_terminated_mid_copy(
    make_sources, dest, write_config, proxies, source_cluster
):
    (db,) = await make_sources(1, citizens=20_000)
    proxy = await proxies(source_cluster)
    proxy.bandwidth = 2_000_000  # ~2 s of COPY: time to find it and kill it
    _, config = write_config(dest, [via(proxy, db)], [CIDADAOS])
    admin = await asyncpg.connect(source_cluster.dsn())

    async def kill_backend() -> None:
        pid = await wait_for_query(source_cluster, "query LIKE 'COPY %' AND state = 'active'")
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        proxy.bandwidth = None

    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_backend)
        code, out, err = await run_pass(config)
    await admin.close()
    assert code == 0, out + err
    (row,) = await ledger_rows(dest)
    assert row["status"] == "ok" and row["attempts"] == 2
    assert await assert_exact(dest, db, CIDADAOS) == 20_000


async def test_destination_restarted_mid_pass(
    make_sources, dest, write_config, proxies, source_cluster
):
    sources = await make_sources(4, citizens=10_000)
    proxy = await proxies(source_cluster)
    proxy.bandwidth = 1_500_000
    _, config = write_config(
        dest, [via(proxy, db) for db in sources], [CIDADAOS, EQUIPES], retry=PATIENT_RETRY
    )

    async def restart() -> None:
        await wait_for_query(dest.cluster, "query LIKE 'COPY %' AND state = 'active'")
        await anyio.to_thread.run_sync(dest.cluster.restart)
        proxy.bandwidth = None

    async with anyio.create_task_group() as tg:
        tg.start_soon(restart)
        code, out, err = await run_pass(config)
    assert code == 0, out + err
    rows = await ledger_rows(dest)
    assert {r["status"] for r in rows} == {"ok"}
    assert max(r["attempts"] for r in rows) >= 2  # something was in flight and was retried
    for db in sources:
        assert await assert_exact(dest, db, CIDADAOS) == 10_000
        assert await assert_exact(dest, db, EQUIPES) > 0


async def test_blackholed_and_throttled_sources_time_out_and_free_their_slots(
    make_sources, dest, write_config, proxies, source_cluster
):
    healthy = await make_sources(6)
    (hole_db,) = await make_sources(1, start=50)
    (slow_db,) = await make_sources(1, citizens=5000, start=60)
    hole, slow = await proxies(source_cluster), await proxies(source_cluster)
    hole.blackhole = True
    slow.bandwidth = 64 * 1024
    entries = [via(hole, hole_db), via(slow, slow_db), *[db.source_entry() for db in healthy]]
    _, config = write_config(
        dest,
        entries,
        [CIDADAOS],
        concurrency={"sources": 2, "per_host": 2},  # two stuck slots would stop everyone
        timeouts={"connect": "1s", "idle_stream": "2s", "statement": "3s"},
        retry={"attempts": 2, "backoff": "50ms", "max_backoff": "100ms"},
    )
    with anyio.fail_after(120):  # a hang guard, not a performance assertion
        code, out, _err = await run_pass(config)
    assert code == 1
    assert (
        f"{hole_db.id} cidadaos: no answer from 127.0.0.1:{hole.port} within timeouts.connect (1s)"
        in out
    )
    assert f"{slow_db.id} cidadaos: statement timeout on the source" in out
    assert "6 of 8 sources ok" in out
    for db in healthy:
        assert await assert_exact(dest, db, CIDADAOS) == db.citizens


async def test_reset_connections_are_retried(
    make_sources, dest, write_config, proxies, source_cluster
):
    (db,) = await make_sources(1, citizens=20_000)
    proxy = await proxies(source_cluster)
    proxy.bandwidth = 2_000_000
    _, config = write_config(dest, [via(proxy, db)], [CIDADAOS])

    async def reset() -> None:
        await wait_for_query(source_cluster, "query LIKE 'COPY %' AND state = 'active'")
        proxy.reset()
        proxy.bandwidth = None

    async with anyio.create_task_group() as tg:
        tg.start_soon(reset)
        code, out, err = await run_pass(config)
    assert code == 0, out + err
    assert await assert_exact(dest, db, CIDADAOS) == 20_000
