"""Downstream hears when a municipality lands: a NOTIFY per landed pass, never before its rows.
Every payload heard is validated against docs/reference/notify.schema.json."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import anyio
import asyncpg
import jsonschema
import pytest

from syncd import config as config_module
from syncd.engine import downstream
from syncd.lab import embedded, pec

from tests.conftest import ATENDIMENTOS_INCREMENTAL, TABLE_DATASETS
from tests.support.helpers import ROOT, run_pass

CIDADAOS, DIM_EQUIPE = TABLE_DATASETS[0], TABLE_DATASETS[3]
ATENDIMENTOS = ATENDIMENTOS_INCREMENTAL
PAYLOAD = jsonschema.Draft202012Validator(
    json.loads((ROOT / "docs" / "reference" / "notify.schema.json").read_text())
)


class Listener:
    """A LISTEN session. On each notification, another connection counts the rows the payload
    announces, at once: what a downstream job would read the moment it hears."""

    def __init__(self, dest, channel: str = "syncd"):
        self.dest = dest
        self.channel = channel
        self.heard: list[tuple[dict, dict[str, int]]] = []  # (payload, rows seen per dataset)
        self._tasks: list[asyncio.Task] = []
        self._reading = asyncio.Lock()

    async def __aenter__(self) -> Listener:
        self.conn = await self.dest.connect()
        self.reader = await self.dest.connect()
        await self.conn.add_listener(self.channel, self._heard)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.settle()
        await self.conn.close()
        await self.reader.close()

    def _heard(self, conn, pid, channel, payload: str) -> None:
        self._tasks.append(asyncio.ensure_future(self._check(payload)))

    async def _check(self, payload: str) -> None:
        doc = json.loads(payload)
        PAYLOAD.validate(doc)
        seen = {}
        async with self._reading:
            for name, d in doc["datasets"].items():
                if d["status"] == "ok":
                    seen[name] = await self.reader.fetchval(
                        f'SELECT count(*) FROM syncd_data."{name}" WHERE municipio_id_sus = $1',
                        doc["source"],
                    )
        self.heard.append((doc, seen))

    async def settle(self) -> list[tuple[dict, dict[str, int]]]:
        """Everything committed so far has been heard and checked."""
        # the server sends pending notifications before answering; the callbacks run before
        # this coroutine resumes (call_soon, in order)
        await self.conn.execute("SELECT 1")
        await asyncio.gather(*self._tasks)
        return self.heard


async def _passes(dest) -> dict[str, int]:
    dst = await dest.connect()
    try:
        rows = await dst.fetch("SELECT source_id, max(pass_id) AS p FROM syncd.ledger GROUP BY 1")
        return {r["source_id"]: r["p"] for r in rows}
    finally:
        await dst.close()


async def test_every_landed_municipality_is_announced_with_its_rows_and_a_failed_one_is_not(
    make_sources, dest, write_config
):
    a, b, c = await make_sources(3)
    unreachable = {
        "id": "999001",
        "dsn": f"postgresql://esus_leitura@127.0.0.1:{embedded.free_port()}/esus",
    }
    admin = await asyncpg.connect(c.admin_dsn)  # c lacks one table: it lands only in part
    await admin.execute("DROP TABLE tb_dim_equipe CASCADE")
    await admin.close()
    _, config = write_config(
        dest,
        [a, b, c, unreachable],
        [CIDADAOS, DIM_EQUIPE],
        destination={"notify_channel": "dados_prontos"},
    )
    assert config.destination.notify_channel == "dados_prontos"

    async with Listener(dest, "dados_prontos") as listener:
        code, out, err = await run_pass(config)
        assert code == 1, out + err  # the unreachable one and c's missing table
        heard = await listener.settle()

    passes = await _passes(dest)
    by_source = {doc["source"]: (doc, seen) for doc, seen in heard}
    assert len(heard) == 3 and set(by_source) == {a.id, b.id, c.id}  # one each, none for 999001
    for db in (a, b):
        doc, seen = by_source[db.id]
        assert doc["version"] == 1 and doc["status"] == "ok" and doc["pass"] == passes[db.id]
        assert doc["datasets"]["cidadaos"] == {"status": "ok", "rows": 60, "mode": "snapshot"}
        assert doc["datasets"]["dim_equipe"]["rows"] > 0
        # what the listener read the moment it heard is what the notification announced
        assert seen == {name: d["rows"] for name, d in doc["datasets"].items()}
        assert datetime.fromisoformat(doc["at"]).tzinfo is not None
    doc, seen = by_source[c.id]
    assert doc["status"] == "partial"
    assert doc["datasets"]["dim_equipe"] == {"status": "failed", "rows": None, "mode": None}
    assert seen == {"cidadaos": 60}


async def test_no_notification_before_the_rows_are_visible(make_sources, dest, write_config):
    """The landing is held just before its commit (its `syncd.latest` row is locked, so its last
    statement waits): the new rows are written but not committed, and nothing may be heard."""
    (db,) = await make_sources(1)
    _, config = write_config(dest, [db], [CIDADAOS], timeouts={"lock": "60s"})
    assert (await run_pass(config))[0] == 0
    admin = await asyncpg.connect(db.admin_dsn)  # the next pass brings fewer rows
    await admin.execute("DELETE FROM tb_fat_cidadao_pec WHERE co_seq_fat_cidadao_pec > 50")
    await admin.close()

    async with Listener(dest) as listener:
        await listener.settle()
        listener.heard.clear()  # the first pass's notification, if it was still on its way
        blocker = await dest.connect()
        watcher = await dest.connect()
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT 1 FROM syncd.latest WHERE source_id = $1 FOR UPDATE", db.id)
        results: list[int] = []

        async def second_pass() -> None:
            results.append((await run_pass(config))[0])

        with anyio.fail_after(120):  # a guard against hanging, not a measurement
            async with anyio.create_task_group() as tg:
                tg.start_soon(second_pass)
                while not await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'syncd' AND wait_event_type = 'Lock'"
                ):
                    await anyio.sleep(0.02)
                # the new rows are in the landing, its commit waits for us: no one may hear yet
                assert await listener.settle() == []
                assert (
                    await blocker.fetchval(
                        "SELECT count(*) FROM syncd_data.cidadaos WHERE municipio_id_sus = $1",
                        db.id,
                    )
                    == 60
                )
                await blocker.execute("ROLLBACK")
        await blocker.close()
        await watcher.close()
        heard = await listener.settle()
    assert results == [0]
    ((doc, seen),) = heard
    assert doc["datasets"]["cidadaos"]["rows"] == 50 and seen == {"cidadaos": 50}


async def test_a_municipality_of_incremental_datasets_only_is_announced(
    make_sources, dest, write_config
):
    (db,) = await make_sources(1, citizens=500)
    _, config = write_config(dest, [db], [ATENDIMENTOS])
    async with Listener(dest) as listener:
        assert (await run_pass(config))[0] == 0  # the first load: a full refresh, swapped
        admin = await asyncpg.connect(db.admin_dsn)
        _, end = await pec.append_atendimentos(admin, db.municipality, 7)
        await admin.close()
        assert (await run_pass(config))[0] == 0  # a window, committed on its own
        heard = await listener.settle()
    (first, first_seen), (second, second_seen) = heard
    assert first["datasets"]["atendimentos"] == {
        "status": "ok",
        "rows": 1500,
        "mode": "full_refresh",
    }
    assert first_seen == {"atendimentos": 1500}
    assert second["datasets"]["atendimentos"] == {"status": "ok", "rows": 7, "mode": "incremental"}
    assert second_seen == {"atendimentos": end} and end == 1507  # the window was there already
    assert second["pass"] > first["pass"]


async def test_notify_channel_null_sends_nothing(make_sources, dest, write_config):
    (db,) = await make_sources(1)
    _, config = write_config(dest, [db], [DIM_EQUIPE], destination={"notify_channel": None})
    assert config.destination.notify_channel is None
    async with Listener(dest) as listener:
        assert (await run_pass(config))[0] == 0
        assert await listener.settle() == []


def test_notify_channel_config():
    def load(channel: object) -> config_module.Config:
        text = "destination:\n  dsn: postgresql://u@h/d\n"
        if channel is not ...:
            text += f"  notify_channel: {json.dumps(channel)}\n"
        text += "sources: [{id: a, dsn: 'postgresql://u@h/d'}]\ndatasets: [{name: t, table: t}]\n"
        return config_module.loads(text)

    assert load(...).destination.notify_channel == "syncd"
    assert load("syncd_ready").destination.notify_channel == "syncd_ready"
    assert load(None).destination.notify_channel is None
    assert load("").destination.notify_channel is None
    for bad in ("Syncd", "dados-prontos", "1abc", "a" * 64, 7):
        with pytest.raises(config_module.ConfigError) as caught:
            load(bad)
        (problem,) = caught.value.problems
        assert problem.path == "destination.notify_channel" and problem.line == 3, problem


async def test_a_huge_dataset_list_is_cut_to_fit_and_postgresql_takes_it(dest):
    datasets = [
        downstream.DatasetOutcome(f"{i:03d}_" + "x" * 59, "ok", 10**12, "full_refresh")
        for i in range(400)
    ]
    at = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    text = downstream.payload("a" * 32, 2**62, datasets, at)
    doc = json.loads(text)
    PAYLOAD.validate(doc)
    assert len(text.encode()) < downstream.NOTIFY_LIMIT_BYTES
    kept = list(doc["datasets"])
    assert kept == [d.name for d in datasets[: len(kept)]]  # a prefix, in order
    assert doc["omitted"] == 400 - len(kept) and len(kept) > 40
    small = json.loads(downstream.payload("a", 1, datasets[:3], at))
    PAYLOAD.validate(small)
    assert "omitted" not in small and len(small["datasets"]) == 3

    conn = await dest.connect()
    listener = await dest.connect()
    try:
        heard: list[str] = []
        await listener.add_listener("syncd", lambda *args: heard.append(args[3]))
        await downstream.announce(conn, "syncd", text)
        await listener.execute("SELECT 1")
        assert heard == [text]
        # the limit is PostgreSQL's: 8000 bytes are refused
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await conn.execute("SELECT pg_notify('syncd', repeat('x', $1))", 8000)
    finally:
        await conn.close()
        await listener.close()
