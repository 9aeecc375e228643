"""A mixed fleet lands: municipal servers on PostgreSQL 10 and on the wheel's newest feed
one dataset whose column types differ between them (EXTRACT is double precision up to 13 and
numeric from 14; a table's id is integer on an older PEC and bigint on a newer one)."""

from __future__ import annotations

import io
import itertools
import json
import math
import random
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import anyio
import asyncpg
import pytest

from syncd import ledger
from syncd.commands.check import run_check
from syncd.commands.verify import run_verify
from syncd.engine import widening
from syncd.engine.limits import Limits
from syncd.engine.shared import Engine
from syncd.engine.sync import sync_many
from syncd.lab import embedded
from syncd.service.statusboard import StatusBoard
from syncd.service.statuspage import rows_of

from tests.conftest import DestDb
from tests.scenarios.test_landing_changes import last_writes
from tests.support.helpers import run_pass

SCHEMA = "syncd_data"
_names = itertools.count(1)

# A vaccination list as the analysts write it: ages in months, hours since the campaign
# opened, both with EXTRACT (their type depends on the server's version), plus a float column
# that holds values needing 17 digits.
VACINADOS = {
    "name": "vacinados",
    "query": (
        "SELECT id, nome,\n"
        "  EXTRACT(year FROM age(DATE '2026-12-01', nascimento)) * 12\n"
        "    + EXTRACT(month FROM age(DATE '2026-12-01', nascimento)) AS idade_meses,\n"
        "  EXTRACT(epoch FROM aplicada - TIMESTAMP '2026-01-01') AS segundos,\n"
        "  EXTRACT(epoch FROM intervalo) AS meio,\n"
        "  fator\n"
        "FROM vacinas"
    ),
}
DOSES = {"name": "doses", "table": "public.doses"}

_SETUP = """
CREATE TABLE vacinas (id integer, nome varchar(40), nascimento date, aplicada timestamp,
                      intervalo interval, fator double precision);
INSERT INTO vacinas VALUES
  (1, 'Ana',  DATE '2026-05-01', TIMESTAMP '2026-01-01 00:00:07', interval '7 seconds', 0.1),
  (2, 'Bia',  DATE '2026-04-16', TIMESTAMP '2026-01-01 00:00:07.5', interval '7.5 seconds',
   0.1::float8 + 0.2::float8),
  (3, 'Caio', DATE '1990-02-28', TIMESTAMP '2026-03-04 05:06:07.891234',
   interval '1 day 0.000001 seconds', 1e300),
  (4, 'Davi', NULL, NULL, NULL, 'NaN'),
  (5, 'Eva',  DATE '2000-01-01', TIMESTAMP '2026-06-30 23:59:59.999999',
   interval '-3.25 seconds', -2.2250738585072014e-308);
"""


async def municipality(
    cluster: embedded.Cluster, id_type: str, ids: list[int], setup: str = _SETUP
) -> dict:
    """A municipal database on `cluster` (dropped with the cluster): the vaccination table,
    and `doses` whose id is `id_type`."""
    dbname = f"mixed_{next(_names)}"
    admin = await asyncpg.connect(cluster.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(cluster.dsn(dbname))
    try:
        await conn.execute(setup)
        await conn.execute(f"CREATE TABLE doses (id {id_type}, vacina text)")
        await conn.executemany("INSERT INTO doses VALUES ($1::bigint, 'BCG')", [(i,) for i in ids])
    finally:
        await conn.close()
    return {"id": f"{cluster.major}{next(_names):05d}", "dsn": cluster.dsn(dbname)}


async def column_types(dst: asyncpg.Connection, dataset: str) -> dict[str, str]:
    rows = await dst.fetch(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        f"{SCHEMA}.{dataset}",
    )
    return dict(rows)  # type: ignore[arg-type]


class LightReaders:
    """Analysts' short queries, back to back, each allowed to wait 2 s for a lock (the
    contract: never more than 1 s on syncd; timeouts.lock is 0.5 s): not one may fail."""

    def __init__(self, dsn: str, tables: list[str]):
        self.dsn, self.tables = dsn, tables
        self.queries = 0
        self.errors: list[str] = []
        self.stop = anyio.Event()

    async def run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("SET lock_timeout = '2s'")
            while not self.stop.is_set():
                for table in self.tables:
                    try:
                        await conn.fetch(
                            f"SELECT * FROM {SCHEMA}.{table} LIMIT 5"
                            if await conn.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.{table}")
                            else "SELECT 1"
                        )
                        self.queries += 1
                    except asyncpg.PostgresError as exc:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                await anyio.sleep(0.02)
        finally:
            await conn.close()


class Readers(Protocol):
    queries: int
    errors: list[str]
    stop: anyio.Event

    async def run(self) -> None: ...


async def pass_beside(readers: Readers, config: Path, warmup: float = 0.2) -> None:
    """One pass while `readers` query throughout: it succeeds, and not one of their queries
    failed (each may wait for a lock only as long as the contract says)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(readers.run)
        await anyio.sleep(warmup)
        code, out, err = await run_pass(config)
        readers.stop.set()
    assert code == 0, out + err
    assert readers.errors == [], readers.errors[:3]
    assert readers.queries > 0


async def _source_rows(source: dict, query: str) -> dict:
    conn = await asyncpg.connect(source["dsn"])
    try:
        return {r["id"]: dict(r) for r in await conn.fetch(query)}
    finally:
        await conn.close()


def _same_number(landed: object, sent: object) -> bool:
    """A landed numeric is what the source sent: equal as numbers (a float sent: the numeric
    reads back as exactly that float)."""
    if sent is None or landed is None:
        return sent is landed
    if isinstance(sent, float) and math.isnan(sent):
        return isinstance(landed, float | Decimal) and math.isnan(landed)
    if isinstance(sent, float) and isinstance(landed, Decimal):
        return float(landed) == sent  # the numeric reads back as exactly the float sent
    return bool(landed == sent)


async def assert_landed_as_sent(dst: asyncpg.Connection, sources: list[dict]) -> None:
    for source in sources:
        sent = await _source_rows(source, VACINADOS["query"])
        landed = {
            r["id"]: dict(r)
            for r in await dst.fetch(
                f"SELECT id, nome, idade_meses, segundos, meio, fator FROM {SCHEMA}.vacinados "
                "WHERE municipio_id_sus = $1",
                source["id"],
            )
        }
        assert landed.keys() == sent.keys()
        for key, row in sent.items():
            for column, value in row.items():
                assert _same_number(landed[key][column], value), (source["id"], key, column)
        doses = await _source_rows(source, "SELECT id, vacina FROM doses")
        landed_doses = await dst.fetch(
            f"SELECT id FROM {SCHEMA}.doses WHERE municipio_id_sus = $1", source["id"]
        )
        assert sorted(r["id"] for r in landed_doses) == sorted(doses)


@pytest.fixture
async def fleet(
    source_cluster_10: embedded.Cluster, source_cluster: embedded.Cluster
) -> AsyncIterator[dict[str, dict]]:
    yield {
        # the older PEC: integer ids; EXTRACT gives double precision
        "old": await municipality(source_cluster_10, "integer", [1, 2, 2**31 - 1]),
        # the newer PEC: bigint ids beyond integer; EXTRACT gives numeric
        "new": await municipality(source_cluster, "bigint", [1, 2**31, 2**40]),
    }


@pytest.mark.parametrize("first", ["old", "new"])
async def test_postgresql_10_and_18_land_one_dataset_in_either_order(
    fleet: dict[str, dict], dest: DestDb, write_config: Callable, first: str
) -> None:
    second = "new" if first == "old" else "old"
    datasets = [VACINADOS, DOSES]
    _, alone = write_config(dest, [fleet[first]], datasets)
    code, out, err = await run_pass(alone)
    assert code == 0, out + err
    _, both = write_config(dest, [fleet[first], fleet[second]], datasets)
    await pass_beside(LightReaders(dest.dsn, ["vacinados", "doses"]), both)
    dst = await dest.connect()
    try:
        types = await column_types(dst, "vacinados")
        assert {c: types[c] for c in ("idade_meses", "segundos", "meio")} == {
            "idade_meses": "numeric",
            "segundos": "numeric",
            "meio": "numeric",
        }
        assert types["fator"] == "double precision"  # a float on both: stays one
        assert (await column_types(dst, "doses"))["id"] == "bigint"
        await assert_landed_as_sent(dst, list(fleet.values()))
        # 7 and 7.5 are the same numbers whichever server computed them (PostgreSQL 18 gives
        # them a scale, 7.000000: numerically equal, and its own rows keep its own text)
        meio = await dst.fetch(
            f"SELECT municipio_id_sus, meio FROM {SCHEMA}.vacinados WHERE id IN (1, 2)"
        )
        assert len(meio) == 4
        assert {r["meio"] for r in meio} == {Decimal(7), Decimal("7.5")}
        # a municipality whose values did not change writes nothing pass after pass: the row
        # hash is taken on the converted values, seeded with the table's types. (Rows landed
        # in the narrower type before the change are rewritten once, by the pass after it.)
        for _ in range(2):
            code, out, err = await run_pass(both)
            assert code == 0, out + err
        for source in fleet.values():
            writes = await last_writes(dst, source["id"])
            assert {d: w[2:4] for d, w in writes.items()} == {
                "vacinados": (0, 0),
                "doses": (0, 0),
            }, source["id"]
    finally:
        await dst.close()
    # syncd verify compares the rows as they landed: converted on the source, equal
    out, err = io.StringIO(), io.StringIO()
    assert await run_verify(both, out, err) == 0, out.getvalue() + err.getvalue()


@pytest.fixture
async def dest12(dest_cluster_12: embedded.Cluster) -> AsyncIterator[DestDb]:
    """A destination database on PostgreSQL 12, the oldest analytics server syncd supports."""
    dbname = f"analytics12_{next(_names)}"
    admin = await asyncpg.connect(dest_cluster_12.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await admin.close()
    yield DestDb(dbname, dest_cluster_12)
    admin = await asyncpg.connect(dest_cluster_12.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
    finally:
        await admin.close()


async def test_a_postgresql_12_destination_takes_the_mixed_fleet_too(
    fleet: dict[str, dict], dest12: DestDb, write_config: Callable
) -> None:
    """The table changed on the oldest destination: the old source first (double precision,
    integer), then the new one widens it; every value as its source returned it."""
    for sources in ([fleet["old"]], [fleet["old"], fleet["new"]]):
        _, config = write_config(dest12, sources, [VACINADOS, DOSES])
        code, out, err = await run_pass(config)
        assert code == 0, out + err
    dst = await dest12.connect()
    try:
        assert await dst.fetchval("SHOW server_version_num") < "130000"
        assert (await column_types(dst, "vacinados"))["idade_meses"] == "numeric"
        assert (await column_types(dst, "doses"))["id"] == "bigint"
        await assert_landed_as_sent(dst, list(fleet.values()))
    finally:
        await dst.close()


async def test_a_postgresql_12_destination_changes_types_online_and_numeric_waits_for_it(
    fleet: dict[str, dict], dest12: DestDb, write_config: Callable
) -> None:
    """No BEFORE row trigger on a partitioned table in PostgreSQL 12: one on each bucket
    (engine/retype.py; `retype_online_above: 0` sends even these small tables online). The
    numeric a newer server sends cannot land in double precision meanwhile: that dataset waits
    for the swap (said so), the rest lands; the next pass lands it, every value as sent."""
    _, alone = write_config(
        dest12, [fleet["old"]], [VACINADOS, DOSES], destination={"retype_online_above": "0"}
    )
    _, both = write_config(
        dest12,
        [fleet["old"], fleet["new"]],
        [VACINADOS, DOSES],
        destination={"retype_online_above": "0"},
    )
    code, out, err = await run_pass(alone)
    assert code == 0, out + err
    code, out, err = await run_pass(both)
    assert code != 0  # the newer server's vacinados waited for the change
    assert "its change to numeric waits" in out + err, out + err
    assert "being made online" in out + err, out + err
    code, out, err = await run_pass(both)
    assert code == 0, out + err
    dst = await dest12.connect()
    try:
        assert await dst.fetchval("SHOW server_version_num") < "130000"
        types = await column_types(dst, "vacinados")
        assert [types[c] for c in ("idade_meses", "segundos", "meio")] == ["numeric"] * 3
        assert (await column_types(dst, "doses"))["id"] == "bigint"
        assert (
            await dst.fetchval(  # no hidden column, trigger or function left
                "SELECT count(*) FROM pg_attribute WHERE attname::text LIKE 'syncd_retype_%'"
            )
            + await dst.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = 'syncd_retype'")
            == 0
        )
        await assert_landed_as_sent(dst, list(fleet.values()))
    finally:
        await dst.close()


async def test_a_type_change_is_logged_with_both_types_and_the_municipality(
    fleet: dict[str, dict], dest: DestDb, write_config: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    _, alone = write_config(dest, [fleet["old"]], [VACINADOS, DOSES])
    code, out, err = await run_pass(alone)
    assert code == 0, out + err
    _, both = write_config(dest, [fleet["old"], fleet["new"]], [VACINADOS, DOSES])
    with caplog.at_level("WARNING", logger="syncd"):
        code, out, err = await run_pass(both)
    assert code == 0, out + err
    changes = {
        (r.dataset, r.column, r.from_type, r.to_type, r.source, r.source_type)  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "event", None) == "column_type_changed"
    }
    new = fleet["new"]["id"]
    assert changes == {
        ("vacinados", "idade_meses", "double precision", "numeric", new, "numeric"),
        ("vacinados", "segundos", "double precision", "numeric", new, "numeric"),
        ("vacinados", "meio", "double precision", "numeric", new, "numeric"),
        ("doses", "id", "integer", "bigint", new, "bigint"),
    }


async def test_text_against_integer_fails_that_municipality_with_a_cast_to_use(
    source_cluster_10: embedded.Cluster,
    source_cluster: embedded.Cluster,
    dest: DestDb,
    write_config: Callable,
) -> None:
    ints = await municipality(source_cluster_10, "integer", [1, 2])
    texts = await municipality(source_cluster, "text", [3])
    ok = await municipality(source_cluster, "bigint", [4])
    _, first = write_config(dest, [ints, ok], [DOSES])
    code, out, err = await run_pass(first)
    assert code == 0, out + err
    _, config = write_config(dest, [ints, texts, ok], [DOSES])
    code, out, err = await run_pass(config)
    assert code != 0
    dst = await dest.connect()
    try:
        rows = {
            r["source_id"]: (r["status"], r["error"])
            for r in await dst.fetch(
                "SELECT DISTINCT ON (source_id) source_id, status, error FROM syncd.ledger "
                "ORDER BY source_id, pass_id DESC"
            )
        }
        assert rows[ints["id"]][0] == "ok"
        assert rows[ok["id"]][0] == "ok"
        status, error = rows[texts["id"]]
        assert status == "failed"
        assert "is text on the source but bigint in syncd_data.doses" in error, error
        assert 'e.g. "id"::bigint' in error, error
        landed = await dst.fetch(f"SELECT municipio_id_sus, id FROM {SCHEMA}.doses ORDER BY id")
        assert [r["id"] for r in landed] == [1, 2, 4]
    finally:
        await dst.close()


async def test_timestamp_against_timestamptz_stays_a_clear_failure(
    source_cluster: embedded.Cluster, dest: DestDb, write_config: Callable
) -> None:
    plain = await municipality(source_cluster, "integer", [1])
    zoned = await municipality(source_cluster, "integer", [2])
    for source, kind in ((plain, "timestamp"), (zoned, "timestamptz")):
        conn = await asyncpg.connect(source["dsn"])
        try:
            await conn.execute(f"ALTER TABLE doses ADD COLUMN em {kind} DEFAULT now()")
        finally:
            await conn.close()
    _, config = write_config(dest, [plain, zoned], [DOSES])
    code, out, err = await run_pass(config)
    assert code != 0
    assert "time zone" in out + err
    assert "AT TIME ZONE" in out + err


async def test_widening_under_a_held_reader_lock_lands_what_fits_and_changes_later(
    source_cluster_10: embedded.Cluster,
    source_cluster: embedded.Cluster,
    dest: DestDb,
    write_config: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = await municipality(source_cluster_10, "integer", [1, 2])
    # the newer PEC's ids are bigint, but today its values still fit an integer
    new = await municipality(source_cluster, "bigint", [3, 4])
    _, alone = write_config(dest, [old], [DOSES])
    code, out, err = await run_pass(alone)
    assert code == 0, out + err
    report = await dest.connect()  # an analyst's long report: ACCESS SHARE held throughout
    await report.execute(f"BEGIN; SELECT count(*) FROM {SCHEMA}.doses")
    _, both = write_config(dest, [old, new], [DOSES])
    readers = LightReaders(dest.dsn, ["doses"])  # and other analysts, querying throughout
    try:
        with caplog.at_level("WARNING", logger="syncd"):
            # each waits at most timeouts.lock behind the ALTER's queued request, never fails
            await pass_beside(readers, both)
        # the report was never blocked: it reads on, and sees the new municipality's rows
        assert await report.fetchval(f"SELECT count(*) FROM {SCHEMA}.doses") == 4
    finally:
        await report.execute("COMMIT")
        await report.close()
    deferred = [r for r in caplog.records if getattr(r, "event", None) == "column_type_deferred"]
    assert [(r.column, r.from_type, r.to_type, r.source) for r in deferred] == [  # type: ignore[attr-defined]
        ("id", "integer", "bigint", new["id"])
    ]
    dst = await dest.connect()
    try:
        assert (await column_types(dst, "doses"))["id"] == "integer"  # not changed yet
        landed = await dst.fetch(f"SELECT id FROM {SCHEMA}.doses ORDER BY id")
        assert [r["id"] for r in landed] == [1, 2, 3, 4]  # the rows that fit landed
        admin = await asyncpg.connect(new["dsn"])
        try:
            await admin.execute("INSERT INTO doses VALUES (5000000000, 'BCG')")
        finally:
            await admin.close()
        code, out, err = await run_pass(both)  # nobody reading now: the change is made
        assert code == 0, out + err
        assert (await column_types(dst, "doses"))["id"] == "bigint"
        landed = await dst.fetch(f"SELECT id FROM {SCHEMA}.doses ORDER BY id")
        assert [r["id"] for r in landed] == [1, 2, 3, 4, 5000000000]
    finally:
        await dst.close()


async def test_char_and_varchar_become_text_with_the_blanks_kept(
    source_cluster_10: embedded.Cluster,
    source_cluster: embedded.Cluster,
    dest: DestDb,
    write_config: Callable,
) -> None:
    padded = await municipality(source_cluster_10, "integer", [1])
    plain = await municipality(source_cluster, "integer", [2])
    for source, kind, value in ((padded, "char(5)", "AB"), (plain, "varchar(10)", "CD")):
        conn = await asyncpg.connect(source["dsn"])
        try:
            await conn.execute(f"ALTER TABLE doses ADD COLUMN codigo {kind} DEFAULT '{value}'")
        finally:
            await conn.close()
    _, first = write_config(dest, [padded], [DOSES])
    _, both = write_config(dest, [padded, plain], [DOSES])
    for config in (first, both, both, both):
        code, out, err = await run_pass(config)
        assert code == 0, out + err
    dst = await dest.connect()
    try:
        assert (await column_types(dst, "doses"))["codigo"] == "text"
        rows = await dst.fetch(f"SELECT id, codigo FROM {SCHEMA}.doses ORDER BY id")
        assert [(r["id"], r["codigo"]) for r in rows] == [(1, "AB   "), (2, "CD")]
        for source in (padded, plain):  # same bytes, the table's type in the seed: stable
            assert (await last_writes(dst, source["id"]))["doses"][2:4] == (0, 0)
    finally:
        await dst.close()


async def test_the_postgresql_10_source_is_10_and_extract_is_double_there(
    source_cluster_10: embedded.Cluster, source_cluster: embedded.Cluster
) -> None:
    """The fixture the rest stands on: the old server answers, and EXTRACT's type moved."""
    types = {}
    for cluster in (source_cluster_10, source_cluster):
        conn = await asyncpg.connect(cluster.dsn())
        try:
            types[cluster.major] = await conn.fetchval(
                "SELECT pg_typeof(EXTRACT(month FROM now()))::text"
            )
        finally:
            await conn.close()
    assert types == {10: "double precision", source_cluster.major: "numeric"}


FLOATS = [
    0.0, -0.0, 7.0, 7.5, 0.1, 0.1 + 0.2, 1 / 3, 2 / 3, 1e300, -1e-300, 5e-324,
    2.2250738585072014e-308, 1.7976931348623157e308, 123456789.123456789, 9007199254740993.0,
    0.3, 1234.567891, 86400.000001, 1e16, 1e22, 4.35, 0.07, 100.0 / 7.0,
]  # fmt: skip


@pytest.mark.parametrize("which", ["pg10", "pg18"])
async def test_a_float_becomes_the_shortest_numeric_that_reads_back_as_it(
    request: pytest.FixtureRequest, which: str
) -> None:
    """The source-side conversion, on the oldest and the newest server: the numeric reads back
    as exactly the float, with the fewest digits that do (Python's repr: the shortest form),
    never the 15 digits a plain float8::numeric keeps."""
    cluster = request.getfixturevalue("source_cluster_10" if which == "pg10" else "source_cluster")
    rng = random.Random(29)  # the same values on every run
    values = FLOATS + [rng.uniform(-1e6, 1e6) for _ in range(300)]
    values += [rng.random() * 10 ** rng.randint(-20, 20) for _ in range(300)]
    conn = await asyncpg.connect(cluster.dsn())
    try:
        for name, value in widening.FLOAT_TEXT_SETTINGS:
            await conn.execute("SELECT pg_catalog.set_config($1, $2, false)", name, value)
        expr = widening.convert("x", "double precision", "numeric")
        got = await conn.fetch(
            f"SELECT i, ({expr})::text AS n FROM unnest($1::float8[]) WITH ORDINALITY AS t(x, i)",
            values,
        )
    finally:
        await conn.close()
    for row in got:
        value = values[row["i"] - 1]
        assert float(row["n"]) == value, (value, row["n"])  # round-trips exactly
        # subnormals may keep a few digits more; so may values past 1e308 before PostgreSQL 12
        if value == 0 or sys.float_info.min <= abs(value) < 1e308:
            # as few digits as the shortest form (the same digits on 12+; before 12, where 17
            # are needed, the last may be one off the closest: still the same float)
            digits = len(Decimal(row["n"]).normalize().as_tuple().digits)
            assert digits == len(Decimal(repr(value)).normalize().as_tuple().digits), row["n"]
            if which == "pg18":
                assert Decimal(row["n"]) == Decimal(repr(value)), (value, row["n"])


async def test_check_online_and_the_status_page_say_which_municipality_sends_which_type(
    fleet: dict[str, dict], dest: DestDb, write_config: Callable
) -> None:
    old, new = fleet["old"]["id"], fleet["new"]["id"]
    _, config = write_config(dest, [fleet["old"], fleet["new"]], [VACINADOS, DOSES])
    out = io.StringIO()
    await run_check(config, out, as_json=True)
    mixed = {
        (m["dataset"], m["column"]): (m["sources"], m["lands_as"])
        for m in json.loads(out.getvalue())["mixed_types"]
    }
    assert mixed == {
        ("vacinados", "idade_meses"): ({"double precision": [old], "numeric": [new]}, "numeric"),
        ("vacinados", "segundos"): ({"double precision": [old], "numeric": [new]}, "numeric"),
        ("vacinados", "meio"): ({"double precision": [old], "numeric": [new]}, "numeric"),
        ("doses", "id"): ({"integer": [old], "bigint": [new]}, "bigint"),
    }
    text = io.StringIO()
    await run_check(config, text)
    assert (
        f"dataset doses column id: integer from {old}; bigint from {new}; lands as bigint"
        in text.getvalue()
    )
    # the status board, fed by the passes as the daemon's is (the engine's progress)
    board = StatusBoard()
    board.configure(config)
    engine = Engine.create(config, Limits(config.concurrency), board)
    await engine.destination.open()
    try:
        async with engine.destination.acquire() as conn:
            await ledger.register(conn, ledger.pairs(config), replace=False)
        for _ in range(2):  # the second pass: the table has its common types from the start
            results = await sync_many(engine, config.sources, config.datasets)
            assert all(r.status == "ok" for r in results), [r.error for r in results]
    finally:
        await engine.close()
    status = board.snapshot({})["sources"]
    assert status[old]["datasets"]["doses"]["converted"] == {
        "id": {"sent": "integer", "lands_as": "bigint"}
    }
    assert "converted" not in status[new]["datasets"]["doses"]
    rows = {r.id: r for r in rows_of(board.sources, {}, datetime.now(UTC))}
    assert "doses.id sends integer (lands as bigint)" in rows[old].converted
    assert rows[new].converted == ()


async def test_the_run_time_a_lista_would_stamp_comes_from_the_freshness_join(
    fleet: dict[str, dict], dest: DestDb, write_config: Callable
) -> None:
    """docs/configure/datasets.md's way out for `now() AS dt_geracao`: the query leaves it out
    (so unchanged rows are not rewritten) and a reader joins syncd.freshness instead."""
    _, config = write_config(dest, [fleet["old"], fleet["new"]], [VACINADOS])
    # (the first pass may land a municipality's rows before another's widens the table: the
    # next rewrites them once, in the common type)
    for _ in range(3):
        code, out, err = await run_pass(config)
        assert code == 0, out + err
    dst = await dest.connect()
    try:
        stamped = await dst.fetch(
            "SELECT l.municipio_id_sus, f.last_success AS dt_geracao "
            f"FROM {SCHEMA}.vacinados AS l JOIN syncd.freshness AS f "
            "ON f.source_id = l.municipio_id_sus AND f.dataset = 'vacinados'"
        )
        assert len(stamped) == 10 and all(r["dt_geracao"] is not None for r in stamped)
        latest = dict(
            await dst.fetch("SELECT source_id, last_success FROM syncd.latest")  # type: ignore[arg-type]
        )
        assert {(r["municipio_id_sus"], r["dt_geracao"]) for r in stamped} == set(latest.items())
        for source in fleet.values():  # the last pass wrote nothing, yet the time moved on
            assert (await last_writes(dst, source["id"]))["vacinados"][2:4] == (0, 0)
    finally:
        await dst.close()
