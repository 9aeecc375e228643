"""The analytical database's disk: a budget syncd keeps within, and a full disk as a state.

The full disk is real: a tablespace on a tmpfs the test mounts (root only; CI runs as root),
holding syncd's dataset table with an analysts' table beside it."""

from __future__ import annotations

import json
import logging
import os
import pwd
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.config import Config
from syncd.engine.limits import Limits
from syncd.engine.shared import Engine
from syncd.engine.sync import sync_many
from syncd.lab import embedded
from syncd.ledger import Status
from syncd.observe.metrics import Metrics

from tests.support.helpers import run_pass

MB = 1024 * 1024
CIDADAOS = {"name": "cidadaos", "table": "public.tb_fat_cidadao_pec"}
# about 1 kB a row, as many rows as the source's `rows` parameter says
BIG = {
    "name": "big",
    "query": "SELECT g AS id, repeat(md5(g::text), 30) AS payload "
    "FROM generate_series(1, current_setting('syncd.rows')::int) AS g",
}


def with_rows(db, rows: int) -> dict:
    return db.source_entry(params={"rows": str(rows)})


async def admin_execute(dest, *statements: str, dbname: str | None = None) -> None:
    conn = await asyncpg.connect(dest.cluster.dsn(dbname) if dbname else dest.cluster.dsn())
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {name}{labels}")


async def database_size(dest) -> int:
    conn = await dest.connect()
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


# -- the budget -----------------------------------------------------------------------------------


async def test_the_budget_stops_a_landing_then_refuses_it_and_the_others_go_on(
    make_sources, dest, write_config
):
    a, b = await make_sources(2)
    _, config = write_config(dest, [with_rows(a, 10)], [CIDADAOS, BIG])
    code, out, err = await run_pass(config)  # the tables exist; the database's size is known
    assert code == 0, out + err
    budget = (await database_size(dest) + 8 * MB) // MB
    sources = [with_rows(a, 20), with_rows(b, 20_000)]  # b's big: about 20 MB
    # one municipality at a time: a landing under way holds its share, and would (rightly)
    # keep a's small one out while b streams
    _, config = write_config(
        dest,
        sources,
        [CIDADAOS, BIG],
        destination={"max_size": f"{budget}MB"},
        concurrency={"sources": 1},
    )

    # never landed: no estimate, so it starts, and is stopped as it crosses the budget
    code, out, err = await run_pass_json(config)
    assert code == 1
    doc = json.loads(out)
    stopped = dataset_of(doc, b.id, "big")
    assert stopped["status"] == "failed"
    assert "stopped and rolled back" in stopped["error"]
    assert f"destination.max_size ({budget}MB)" in stopped["error"]
    assert dataset_of(doc, b.id, "cidadaos")["status"] == "ok"  # the others go on
    assert dataset_of(doc, a.id, "big")["status"] == "ok"
    assert await rows_of(dest, b.id, "big") == 0  # rolled back
    # what the stopped COPY wrote was given back: the database is within its budget
    assert await database_size(dest) < budget * MB

    # now it has an estimate (what it streamed before the stop): not started at all
    code, out, err = await run_pass_json(config)
    refused = dataset_of(json.loads(out), b.id, "big")
    assert refused["status"] == "failed" and refused["error"].startswith("not started:")
    assert f"destination.max_size ({budget}MB)" in refused["error"]
    assert dataset_of(json.loads(out), a.id, "big")["status"] == "ok"
    ledger = await ledger_row(dest, b.id, "big")
    assert ledger["status"] == "failed" and "destination.max_size" in ledger["error"]
    assert ledger["attempts"] == 1  # a budget is not retried

    # a budget with room for it: it lands
    _, config = write_config(
        dest, sources, [CIDADAOS, BIG], destination={"max_size": f"{budget + 64}MB"}
    )
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    assert await rows_of(dest, b.id, "big") == 20_000


async def test_a_landing_the_ledger_says_is_too_big_is_not_started(
    make_sources, dest, write_config
):
    (a,) = await make_sources(1)
    _, config = write_config(dest, [with_rows(a, 5_000)], [BIG])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    sent = (await ledger_row(dest, a.id, "big"))["bytes"]
    size = await database_size(dest)
    # room for what it writes now (nothing changed) but not for what the source sends
    budget = (size + sent // 2) // MB + 1
    metrics = Metrics()
    _, config = write_config(
        dest, [with_rows(a, 5_000)], [BIG], destination={"max_size": f"{budget}MB"}
    )
    (result,) = await run_engine(config, metrics)
    res = result.datasets["big"]
    assert res.status == Status.FAILED and res.error is not None
    assert res.error.startswith("not started: landing it (about ")
    assert "what the source sent last time" in res.error
    assert sample(metrics, "syncd_landings_refused_total", reason="disk_budget") == 1
    assert sample(metrics, "syncd_destination_max_size_bytes") == budget * MB
    assert 0 < sample(metrics, "syncd_destination_size_bytes") <= budget * MB


# -- a full disk ----------------------------------------------------------------------------------


@dataclass
class SmallDisk:
    directory: Path
    tablespace: str

    def free(self) -> int:
        stat = os.statvfs(self.directory)
        return stat.f_bavail * stat.f_frsize

    def grow(self, megabytes: int) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={megabytes}M", str(self.directory)], check=True
        )


def _mount_tmpfs(megabytes: int) -> Path:
    """A tmpfs of that size, owned by the account the test clusters' servers run as."""
    directory = Path(tempfile.mkdtemp(prefix="syncd-small-disk-"))
    directory.chmod(0o755)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}M", "tmpfs", str(directory)], check=True
    )
    server = pwd.getpwnam(embedded.SERVER_USER)
    os.chown(directory, server.pw_uid, server.pw_gid)
    directory.chmod(0o700)
    return directory


def _unmount(directory: Path) -> None:
    subprocess.run(["umount", "-l", str(directory)], check=False)
    directory.rmdir()


@pytest.fixture
async def small_disk(dest) -> AsyncIterator[SmallDisk]:
    """A 24 MB tmpfs as a tablespace of the destination's cluster."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for a small tablespace needs root (CI runs as root)")
    directory = _mount_tmpfs(24)
    name = f"small_{dest.dbname}"
    try:
        await admin_execute(dest, f"CREATE TABLESPACE {name} LOCATION '{directory}'")
        yield SmallDisk(directory, name)
    finally:
        try:
            await admin_execute(dest, f'DROP DATABASE IF EXISTS "{dest.dbname}" WITH (FORCE)')
            await admin_execute(dest, f"DROP TABLESPACE IF EXISTS {name}")
        finally:
            _unmount(directory)


async def test_a_full_disk_is_a_state_reclaimed_and_left_by_itself(
    make_sources, dest, write_config, small_disk, caplog
):
    a, b = await make_sources(2)
    caplog.set_level(logging.INFO, logger="syncd")
    _, config = write_config(dest, [with_rows(a, 10)], [CIDADAOS, BIG])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    # the DBA keeps syncd's big table, and the analysts' own, on the small disk
    space = small_disk.tablespace
    conn = await dest.connect()
    try:
        buckets = await conn.fetch(
            "SELECT c.oid::regclass::text AS name FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'syncd_data.big'::regclass"
        )
        for bucket in buckets:
            await conn.execute(f"ALTER TABLE {bucket['name']} SET TABLESPACE {space}")
        await conn.execute(
            f"CREATE TABLE public.analysts (id int, note text) TABLESPACE {space};"
            "INSERT INTO public.analysts SELECT g, repeat('a', 500) FROM generate_series(1, 8000) g"
        )
    finally:
        await conn.close()
    free_before = small_disk.free()
    assert free_before < 20 * MB

    sources = [with_rows(a, 10), with_rows(b, 40_000)]  # b's big: about 40 MB
    _, config = write_config(
        dest,
        sources,
        [CIDADAOS, BIG],
        timeouts={"disk_probe": "60s"},
        concurrency={"sources": 1},  # b after a: a lands, then b fills the disk
    )
    metrics = Metrics()
    clock = [0.0]
    engine = Engine.create(config, Limits(config.concurrency), metrics)
    engine.disk.clock = lambda: clock[0]
    try:
        await engine.destination.open()
        ra, rb = await sync_many(engine, config.sources, config.datasets)
        assert ra.status == Status.OK
        big = rb.datasets["big"]
        assert big.status == Status.FAILED and big.attempts == 1  # not retried
        assert "the analytical database is out of disk space" in (big.error or "")
        assert rb.datasets["cidadaos"].status == Status.OK  # elsewhere: it landed
        assert engine.disk.full
        assert sample(metrics, "syncd_destination_disk_full") == 1
        # what the failed COPY wrote was given back at once: the disk is as it was
        assert small_disk.free() >= free_before - MB
        analyst = await dest.connect()  # analysts connect and write again
        try:
            await analyst.execute("INSERT INTO public.analysts VALUES (0, 'still here')")
        finally:
            await analyst.close()

        # while full: nothing starts, nothing is retried, nothing probes before its time
        clock[0] = 30.0
        ra, rb = await sync_many(engine, config.sources, config.datasets)
        for result in (ra, rb):
            assert result.status == Status.FAILED
            for res in result.datasets.values():
                assert (res.error or "").startswith(
                    "not started: the analytical database is out of disk space"
                )
        assert sample(metrics, "syncd_landings_refused_total", reason="disk_full") >= 5

        # the DBA makes room; the next sync after the probe interval probes, and lands
        small_disk.grow(128)
        clock[0] = 100.0
        ra, rb = await sync_many(engine, config.sources, config.datasets)
        assert (ra.status, rb.status) == (Status.OK, Status.OK), (ra.error, rb.error)
        assert not engine.disk.full
        assert sample(metrics, "syncd_destination_disk_full") == 0
    finally:
        await engine.close()
    assert await rows_of(dest, b.id, "big") == 40_000
    said = [r for r in caplog.records if getattr(r, "event", None) == "disk_full"]
    assert len(said) == 1 and said[0].getMessage().startswith(
        "the analytical database is out of disk space"
    )
    assert [r for r in caplog.records if getattr(r, "event", None) == "disk_resumed"]


# -- helpers ---------------------------------------------------------------------------------------


async def run_engine(config: Config, metrics: Metrics) -> list:
    engine = Engine.create(config, Limits(config.concurrency), metrics)
    try:
        await engine.destination.open()
        return await sync_many(engine, config.sources, config.datasets)
    finally:
        await engine.close()


async def run_pass_json(config: Config) -> tuple[int, str, str]:
    import io

    from syncd.commands.once import run_once

    out, err = io.StringIO(), io.StringIO()
    code = await run_once(config, out, err, json_output=True)
    return code, out.getvalue(), err.getvalue()


def dataset_of(doc: dict, source_id: str, dataset: str) -> dict:
    return doc["sources"][source_id]["datasets"][dataset]


async def rows_of(dest, source_id: str, dataset: str) -> int:
    conn = await dest.connect()
    try:
        return int(
            await conn.fetchval(
                f"SELECT count(*) FROM syncd_data.{dataset} WHERE municipio_id_sus = $1",
                source_id,
            )
        )
    finally:
        await conn.close()


async def ledger_row(dest, source_id: str, dataset: str) -> asyncpg.Record:
    conn = await dest.connect()
    try:
        return await conn.fetchrow(
            "SELECT * FROM syncd.ledger WHERE source_id = $1 AND dataset = $2 "
            "ORDER BY pass_id DESC LIMIT 1",
            source_id,
            dataset,
        )
    finally:
        await conn.close()


async def test_the_daemon_shows_the_budget_and_the_refusal(make_sources, dest, write_config):
    """A daemon with a budget: the page's header shows the size against it, /metrics the
    gauges and the refusal, /status the municipality's reason naming the limit."""
    import aiohttp
    import anyio

    from syncd.service.daemon import Daemon

    from tests.support.daemonproc import free_port
    from tests.support.fakeclock import FakeClock

    a, b = await make_sources(2)
    _, config = write_config(dest, [with_rows(a, 10)], [CIDADAOS, BIG])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    budget = (await database_size(dest) + 8 * MB) // MB
    port = free_port()
    path, config = write_config(
        dest,
        [with_rows(a, 10), with_rows(b, 20_000)],
        [CIDADAOS, BIG],
        destination={"max_size": f"{budget}MB"},
        http={"listen": f"127.0.0.1:{port}"},
        schedule={"jitter": "0s"},
        concurrency={"sources": 1},  # b streaming holds a share that would keep a out
    )
    stop = anyio.Event()
    daemon = Daemon(path, config, clock=FakeClock(datetime.now(UTC)), shutdown_trigger=stop.wait)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http, anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        with anyio.fail_after(90):
            while True:
                await anyio.sleep(0.1)
                try:
                    async with http.get(f"{base}/status") as answer:
                        status = await answer.json()
                except aiohttp.ClientError:
                    continue
                sources = status["sources"]
                if all(sources.get(s.id, {}).get("state") in ("ok", "failed") for s in (a, b)):
                    break
        async with http.get(f"{base}/") as answer:
            page = await answer.text()
        async with http.get(f"{base}/metrics") as answer:
            metrics = await answer.text()
        stop.set()
    assert sources[a.id]["state"] == "ok"
    assert sources[b.id]["state"] == "failed"
    assert "destination.max_size" in json.dumps(sources[b.id])
    assert f"of {budget}MB (destination.max_size)" in page
    scraped = {
        (x.name, tuple(x.labels.items())): x.value
        for family in text_string_to_metric_families(metrics)
        for x in family.samples
    }
    assert scraped[("syncd_destination_max_size_bytes", ())] == budget * MB
    assert 0 < scraped[("syncd_destination_size_bytes", ())] < budget * MB
    assert scraped[("syncd_landings_refused_total", (("reason", "disk_budget"),))] == 1
