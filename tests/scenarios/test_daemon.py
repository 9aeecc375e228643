"""The daemon in process, where tests inject the clock, the shutdown trigger and side tasks
(`syncd run` as a subprocess, as systemd runs it, in tests/acceptance/test_daemon.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import anyio

from syncd.service.daemon import Daemon
from syncd.service.dispatch import LEDGER_REFRESH
from syncd.service.notify import Notifier

from tests.conftest import TABLE_DATASETS
from tests.support.daemonproc import NotifySocket, free_port
from tests.support.fakeclock import FakeClock


async def test_a_side_task_that_dies_takes_the_daemon_down(make_sources, dest, write_config):
    sources = await make_sources(1)
    path, config = write_config(
        dest, sources, [TABLE_DATASETS[3]], http={"listen": f"127.0.0.1:{free_port()}"}
    )

    async def broken() -> None:
        await anyio.sleep(0.2)
        raise RuntimeError("boom")

    daemon = Daemon(path, config, side_tasks={"broken": broken})
    with anyio.fail_after(60):
        assert await daemon.run() == 1


async def test_the_schedule_runs_on_the_injected_clock_and_stops_on_the_trigger(
    make_sources, dest, write_config
):
    """No real day waited and no signal sent: the fake clock makes the next pass due, the
    injected trigger stops the daemon through the same drain as SIGTERM."""
    sources = await make_sources(2)
    path, config = write_config(
        dest,
        sources,
        [TABLE_DATASETS[3]],
        http={"listen": f"127.0.0.1:{free_port()}"},
        schedule={"interval": "24h", "jitter": "0s"},
    )
    clock = FakeClock(datetime.now(UTC))
    stop = anyio.Event()
    notify = NotifySocket()
    daemon = Daemon(
        path, config, clock=clock, notifier=Notifier(notify.path), shutdown_trigger=stop.wait
    )
    scheduler = daemon.dispatcher.scheduler
    ids = {s.id for s in sources}
    codes: list[int] = []

    async def run() -> None:
        codes.append(await daemon.run())

    dst = await dest.connect()

    async def passes() -> dict[str, int]:
        """Per source: its passes that succeeded."""
        if not await dst.fetchval("SELECT to_regclass('syncd.ledger') IS NOT NULL"):
            return {}
        rows = await dst.fetch(
            "SELECT source_id, count(DISTINCT pass_id) AS n FROM syncd.ledger "
            "WHERE status = 'ok' GROUP BY source_id"
        )
        return {r["source_id"]: r["n"] for r in rows}

    async def until(predicate: Callable[[], Awaitable[bool]]) -> None:
        with anyio.fail_after(60):
            while not await predicate():
                assert not codes, f"the daemon stopped: {codes}"
                await anyio.sleep(0.05)

    async def passes_are(n: int) -> bool:
        return await passes() == dict.fromkeys(ids, n)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await until(lambda: passes_are(1))  # never synced: due at once
            # the ledger refresh, on the same clock, tells the scheduler each success as the
            # ledger has it (when the pass ended): the next pass is due 24 h after that
            clock.advance(LEDGER_REFRESH)
            successes = {
                r["source_id"]: r["last_success"]
                for r in await dst.fetch("SELECT source_id, last_success FROM syncd.latest")
            }

            async def refreshed() -> bool:
                return all(scheduler.last_success(sid) == successes[sid] for sid in ids)

            await until(refreshed)
            clock.set(max(successes.values()) + timedelta(hours=24, seconds=-1))
            assert scheduler.due() == []
            await anyio.sleep(0.5)
            assert await passes_are(1)
            clock.advance(1)
            await until(lambda: passes_are(2))

            async def idle() -> bool:
                return not daemon.dispatcher.in_flight

            await until(idle)  # and the scheduler told how they ended
            assert scheduler.due() == []  # they started after the ones before ended
            stop.set()
    finally:
        await dst.close()
        notify.close()
    assert codes == [0]
    assert notify.states() == ["READY=1", "STOPPING=1"]


async def test_a_reload_during_a_ledger_refresh_does_not_bring_a_removed_source_back(
    make_sources, dest, write_config
):
    """The ledger refresh reads for a while (here: held by a lock on syncd.latest); a reload that
    removes a source lands meanwhile. The refresh seeds what it read for the sources the config
    names when it seeds, not when it began: no last-success series comes back for the removed
    one (nothing would ever update it, and its freshness alert would fire for ever)."""
    kept, removed = await make_sources(2)
    listen = {"listen": f"127.0.0.1:{free_port()}"}
    schedule = {"interval": "24h", "jitter": "0s"}
    path, config = write_config(
        dest, [kept, removed], [TABLE_DATASETS[3]], http=listen, schedule=schedule
    )
    smaller, _ = write_config(dest, [kept], [TABLE_DATASETS[3]], http=listen, schedule=schedule)
    clock = FakeClock(datetime.now(UTC))
    stop = anyio.Event()
    daemon = Daemon(path, config, clock=clock, shutdown_trigger=stop.wait)
    codes: list[int] = []

    async def run() -> None:
        codes.append(await daemon.run())

    async def until(predicate: Callable[[], Awaitable[bool]]) -> None:
        with anyio.fail_after(60):
            while not await predicate():
                assert not codes, f"the daemon stopped: {codes}"
                await anyio.sleep(0.05)

    def series() -> set[str]:
        return {
            sample.labels["source"]
            for family in daemon.metrics.registry.collect()
            if family.name == "syncd_last_success_timestamp_seconds"
            for sample in family.samples
        }

    dst = await dest.connect()
    holder = await dest.connect()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)

            async def both_synced() -> bool:
                return series() == {kept.id, removed.id} and not daemon.dispatcher.in_flight

            await until(both_synced)
            # hold syncd.latest; what the refresh reads is one second newer for `kept`, so the
            # test sees when the refresh has read and seeded
            lock = holder.transaction()
            await lock.start()
            await holder.execute("LOCK TABLE syncd.latest IN ACCESS EXCLUSIVE MODE")
            newer = await holder.fetchval(
                "UPDATE syncd.latest SET last_success = last_success + interval '1 second' "
                "WHERE source_id = $1 RETURNING last_success",
                kept.id,
            )
            clock.advance(LEDGER_REFRESH)

            async def refresh_waits() -> bool:
                return bool(
                    await dst.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%syncd.latest%' AND pid <> $1",
                        holder.get_server_pid(),
                    )
                )

            await until(refresh_waits)
            path.write_text(smaller.read_text())
            daemon.dispatcher.request_reload()

            async def reloaded() -> bool:
                return [s.id for s in daemon.config.sources] == [kept.id]

            await until(reloaded)
            assert series() == {kept.id}  # the reload forgot it
            await lock.commit()

            async def refreshed() -> bool:
                return daemon.dispatcher.scheduler.last_success(kept.id) == newer

            await until(refreshed)
            assert series() == {kept.id}
            stop.set()
    finally:
        await holder.close()
        await dst.close()
    assert codes == [0]
