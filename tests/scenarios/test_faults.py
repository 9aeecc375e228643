"""Faults injected with a real TCP proxy and real servers: cuts, resets, blackholes, slow links,
terminated backends, a restarted destination, kill -9 of syncd itself."""

from __future__ import annotations

import signal
import subprocess
import sys

import anyio
import asyncpg
import pytest

from tests.conftest import TABLE_DATASETS
from tests.support.faultproxy import FaultProxy
from tests.support.helpers import ROOT, assert_dataset_exact, fingerprint, relations, run_pass

CIDADAOS, EQUIPES = TABLE_DATASETS[0], TABLE_DATASETS[3]
PATIENT_RETRY = {"attempts": 6, "backoff": "200ms", "max_backoff": "2s"}


@pytest.fixture
async def proxies():
    started: list[FaultProxy] = []

    async def start(cluster) -> FaultProxy:
        proxy = await FaultProxy(cluster.host, cluster.port).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


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


# -- kill -9 of syncd itself ---------------------------------------------------------------------

PAUSE = {
    "name": "equipes_pausadas",
    "query": "SELECT e.* FROM tb_dim_equipe e "
    "WHERE (SELECT pg_sleep(seconds) FROM syncd_test_pause)::text IS NOT NULL",
}


@pytest.mark.parametrize("moment", ["mid_copy", "between_datasets", "mid_commit"])
async def test_kill_9_of_syncd_once_leaves_the_previous_snapshot_and_no_leftovers(
    moment, make_sources, dest, write_config, proxies, source_cluster
):
    (db,) = await make_sources(1, citizens=20_000)
    admin = await asyncpg.connect(db.admin_dsn)
    await admin.execute(
        "CREATE TABLE syncd_test_pause (seconds float8);"
        "INSERT INTO syncd_test_pause VALUES (0);"
        "GRANT SELECT ON syncd_test_pause TO esus_leitura"
    )
    proxy = await proxies(source_cluster)
    datasets = [CIDADAOS, PAUSE]
    path, config = write_config(dest, [via(proxy, db)], datasets, timeouts={"lock": "60s"})
    code, out, err = await run_pass(config)
    assert code == 0, out + err

    reader = await dest.connect()
    old = await fingerprint(reader, "cidadaos", db.id)
    catalog = await relations(reader)
    # the municipality changes; the next pass will be killed at `moment`
    await admin.execute("UPDATE tb_fat_cidadao_pec SET no_cidadao = 'novo'")
    await admin.execute("DELETE FROM tb_fat_cidadao_pec WHERE co_seq_fat_cidadao_pec > 15000")
    blocker = None
    if moment == "mid_copy":
        proxy.bandwidth = 1_000_000
        condition = "query LIKE 'COPY %' AND state = 'active'"
    elif moment == "between_datasets":
        await admin.execute("UPDATE syncd_test_pause SET seconds = 60")
        condition = "query LIKE '%pg_sleep%' AND state = 'active'"
    else:  # every dataset copied: the landing's last statement (its ledger rows) waits, dies
        await admin.execute("UPDATE syncd_test_pause SET seconds = 2")
        blocker = await dest.connect()
        condition = "wait_event_type = 'Lock' AND query LIKE '%UPDATE syncd.ledger%'"
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "once", "--config", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    seen: list[tuple] = []
    done = anyio.Event()

    async def poll() -> None:
        while not done.is_set():
            seen.append(await fingerprint(reader, "cidadaos", db.id))
            await anyio.sleep(0.01)

    if blocker is not None:  # hold this pass's ledger rows as soon as they exist
        with anyio.fail_after(60):
            while not await blocker.fetchval(
                "SELECT count(*) FROM syncd.ledger WHERE status = 'running'"
            ):
                await anyio.sleep(0.01)
        await blocker.execute(
            "BEGIN; SELECT 1 FROM syncd.ledger WHERE status = 'running' FOR UPDATE"
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        cluster = source_cluster if moment != "mid_commit" else dest.cluster
        await wait_for_query(cluster, condition)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if blocker is not None:
            await blocker.execute("ROLLBACK")
            await blocker.close()
        await anyio.sleep(0.2)
        done.set()
    assert set(seen) == {old}, "a reader saw something else than the previous snapshot"
    assert await fingerprint(reader, "cidadaos", db.id) == old

    # the next run cleans up what the dead one left and lands the new snapshot, exact
    proxy.bandwidth = None
    await admin.execute("UPDATE syncd_test_pause SET seconds = 0")
    await admin.close()
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    assert await assert_exact(dest, db, CIDADAOS) == 15_000
    assert await relations(reader) == catalog  # nothing left behind, nothing made anew
    statuses = [
        r["status"]
        for r in await reader.fetch(
            "SELECT status FROM syncd.ledger WHERE dataset = 'cidadaos' ORDER BY pass_id"
        )
    ]
    assert statuses == ["ok", "aborted", "ok"]
    await reader.close()
