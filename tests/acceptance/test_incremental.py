"""Incremental datasets through the real `syncd` subprocess: kill -9 between copy and commit,
then a rerun with no gap and no duplicate; the example configs validate."""

from __future__ import annotations

import signal
import subprocess
import sys

import anyio
import asyncpg

from tests.scenarios.test_incremental import ATENDIMENTOS, append, exact, incremental, ledger
from tests.support.helpers import ROOT, run_cli, run_pass


async def test_kill_9_between_copy_and_commit_then_rerun_no_gap_no_duplicate(
    make_sources, dest, write_config
):
    (db,) = await make_sources(1, citizens=500)
    path, config = write_config(dest, [db], [incremental(lookback=10)], timeouts={"lock": "60s"})
    assert (await run_pass(config))[0] == 0
    await append(db, 25)
    # someone holds the table in SHARE mode: the upsert's INSERT waits there, its COPY done
    # (the statement is longer than pg_stat_activity keeps: matched by its start)
    blocker = await dest.connect()
    await blocker.execute("BEGIN; LOCK TABLE syncd_data.atendimentos IN SHARE MODE")
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "once", "--config", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    admin = await asyncpg.connect(dest.cluster.dsn())
    with anyio.fail_after(60):
        while not await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncd' "
            "AND wait_event_type = 'Lock' AND query LIKE 'WITH u AS (SELECT count(*) AS n FROM syncd_delta_%'"
        ):
            await anyio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    await blocker.execute("ROLLBACK")
    await blocker.close()
    await admin.close()
    assert (
        await exact(
            dest,
            db,
            "atendimentos",
            f"SELECT * FROM {ATENDIMENTOS} WHERE co_seq_fat_atd_ind <= 1500",
        )
        == 1500
    )  # nothing of the window

    code, out, err = await run_pass(config)
    assert code == 0, out + err
    assert await exact(dest, db) == 1525  # no gap, no duplicate
    rows = await ledger(dest)
    assert [r["status"] for r in rows] == ["ok", "aborted", "ok"]
    assert rows[-1]["rows"] == 35 and rows[-1]["watermark"] == "1525"  # 10 of lookback + 25


def test_the_examples_validate():
    for name in (
        "syncd.example.yaml",
        "incremental.yaml",
        "shared-installation.yaml",
        "variants.yaml",
    ):
        path = ROOT / "config" / (name if name.startswith("syncd") else f"examples/{name}")
        result = run_cli("check-config", "--config", str(path))
        assert result.returncode == 0, (name, result.stderr)
