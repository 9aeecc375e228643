"""`max_rate` on real transfers: a capped source's COPY takes at least its bytes over the rate,
and a reload's new cap reaches a transfer under way."""

from __future__ import annotations

import io
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable

import anyio

from syncd.commands.status import run_status
from syncd.engine.ratelimit import BURST_SECONDS
from syncd.service.daemon import Daemon

from tests.conftest import TABLE_DATASETS
from tests.scenarios.test_faults import wait_for_query
from tests.support.daemonproc import free_port
from tests.support.helpers import run_pass

CIDADAOS = TABLE_DATASETS[0]


async def ledger_bytes(dest) -> int:
    conn = await dest.connect()
    try:
        return int(await conn.fetchval("SELECT sum(bytes) FROM syncd.ledger WHERE status = 'ok'"))
    finally:
        await conn.close()


async def test_a_capped_source_is_read_no_faster_than_its_cap(make_sources, dest, write_config):
    """A lower bound only: a slow machine makes the pass longer, never shorter."""
    (db,) = await make_sources(1, citizens=2_000)
    rate = 200_000
    entry = db.source_entry(max_rate="200kB/s")
    _, config = write_config(dest, [entry], [CIDADAOS])
    started = time.monotonic()
    code, out, err = await run_pass(config)
    elapsed = time.monotonic() - started
    assert code == 0, out + err
    read = await ledger_bytes(dest)
    assert read > 4 * rate * BURST_SECONDS  # enough bytes that the cap, not the burst, decides
    floor = (read - rate * BURST_SECONDS) / rate
    assert elapsed >= floor, f"{read} bytes in {elapsed:.2f}s: faster than 200kB/s"


async def test_a_reload_changes_the_cap_of_a_transfer_under_way(make_sources, dest, write_config):
    """At 2kB/s the table takes minutes; the reload lifts the cap and the transfer already
    running finishes at once. The status page and /status show the cap before and after."""
    (db,) = await make_sources(1, citizens=2_000)
    listen = f"127.0.0.1:{free_port()}"
    sections = {"http": {"listen": listen}, "schedule": {"interval": "24h", "jitter": "0s"}}
    path, config = write_config(dest, [db.source_entry(max_rate="2kB/s")], [CIDADAOS], **sections)
    lifted, _ = write_config(dest, [db.source_entry(max_rate="1GB/s")], [CIDADAOS], **sections)
    stop = anyio.Event()
    daemon = Daemon(path, config, shutdown_trigger=stop.wait)
    codes: list[int] = []

    async def run() -> None:
        codes.append(await daemon.run())

    async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
        with anyio.fail_after(timeout):
            while not await predicate():
                assert not codes, f"the daemon stopped: {codes}"
                await anyio.sleep(0.05)

    def get(route: str) -> str:
        with urllib.request.urlopen(f"http://{listen}{route}", timeout=10) as response:
            return response.read().decode()

    async def cap_shown() -> tuple[str | None, str]:
        status = json.loads(await anyio.to_thread.run_sync(get, "/status"))
        return status["sources"][db.id]["max_rate"], await anyio.to_thread.run_sync(get, "/")

    dst = await dest.connect()

    async def landed() -> bool:
        if not await dst.fetchval("SELECT to_regclass('syncd.ledger') IS NOT NULL"):
            return False
        return bool(await dst.fetchval("SELECT count(*) FROM syncd.ledger WHERE status = 'ok'"))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            # the COPY is running, capped: 2,000 citizens are minutes at 2kB/s
            await wait_for_query(db.cluster, "query LIKE 'COPY %' AND state <> 'idle'")
            shown, html = await cap_shown()
            assert shown == "2kB/s" and "max 2kB/s</span>" in html
            await anyio.sleep(1.0)
            assert not await landed()
            path.write_text(lifted.read_text())
            daemon.dispatcher.request_reload()

            async def reloaded() -> bool:
                return daemon.config.sources[0].max_rate == 1e9

            await until(reloaded)
            await until(landed)  # minutes at the old cap
            shown, html = await cap_shown()
            assert shown == "1GB/s" and "max 1GB/s</span>" in html
            assert await ledger_bytes(dest) > 100 * 2_000  # far more than 60 s at the old cap
            stop.set()
    finally:
        await dst.close()
    assert codes == [0]


async def test_the_cap_does_not_hold_the_table_in_memory(make_sources, dest, write_config):
    """What the capped sink has not let through stays in the socket: the server's COPY is
    still sending (its backend waits on the client) while syncd has read a fraction."""
    (db,) = await make_sources(1, citizens=20_000)
    _, config = write_config(dest, [db.source_entry(max_rate="100kB/s")], [CIDADAOS])

    async def server_waits_on_the_client() -> None:
        await wait_for_query(
            db.cluster, "query LIKE 'COPY %' AND wait_event = 'ClientWrite'", timeout=60
        )
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(server_waits_on_the_client)
        await run_pass(config)
        raise AssertionError("the capped pass ended before the server blocked on the link")


async def test_syncd_status_lists_the_caps(make_sources, dest, write_config):
    (db,) = await make_sources(1)
    _, config = write_config(dest, [db.source_entry(max_rate="20Mbit/s")], [CIDADAOS])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    table, document = io.StringIO(), io.StringIO()
    assert await run_status(config, table) == 0
    assert table.getvalue().splitlines()[-2:] == [
        "bandwidth caps (max_rate):",
        f"  {db.id}  2.5MB/s",
    ]
    assert await run_status(config, document, as_json=True) == 0
    assert json.loads(document.getvalue())["sources"][db.id]["max_rate"] == "2.5MB/s"
