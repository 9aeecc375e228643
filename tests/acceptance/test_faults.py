"""kill -9 of the real `syncd once` subprocess mid-copy, between datasets and mid-commit: readers
see the previous snapshot throughout and the next run leaves nothing behind."""

from __future__ import annotations

import signal
import subprocess
import sys

import anyio
import asyncpg
import pytest

from tests.scenarios.test_faults import CIDADAOS, assert_exact, via, wait_for_query
from tests.support.helpers import ROOT, fingerprint, relations, run_pass

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
