"""`syncd verify`: does a municipality's destination hold exactly its source's rows? Read only.

Per dataset, the destination's rows of the municipality (the columns the source sends, in its
order) are streamed as binary COPY and hashed as the source's tuples are, and the source's
stream is matched against them copy by copy (engine/rowdiff/pydiffer.py, emit=False): a row changed by
hand, a row missing or one too many is seen whatever the stored row hashes say. Nothing is
written on either side: the source session is the usual read-only snapshot, the destination
session a read-only transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from syncd.config import Dataset, Source
from syncd.engine import quoting, rowdiff, widening
from syncd.engine.errors import classify
from syncd.engine.layout import COLUMNS_SQL, SOURCE_SETTING, base_type
from syncd.engine.shared import Engine
from syncd.engine.source import SourceSession


class Verdict(StrEnum):
    EQUAL = "equal"
    DIFFERS = "differs"
    FAILED = "failed"  # could not be compared (the source or the destination said why)


@dataclass(frozen=True, slots=True)
class DatasetVerdict:
    source_id: str
    dataset: str
    verdict: Verdict
    source_rows: int = 0
    destination_rows: int = 0
    missing: int = 0  # source rows the destination lacks
    extra: int = 0  # destination rows the source does not have
    error: str | None = None


async def verify_source(
    engine: Engine, source: Source, datasets: Sequence[Dataset]
) -> list[DatasetVerdict]:
    try:
        session = await SourceSession.open(source, engine.config.timeouts, engine.tunnels)
    except Exception as exc:
        reason = classify(exc).reason
        return [DatasetVerdict(source.id, d.name, Verdict.FAILED, error=reason) for d in datasets]
    try:
        async with engine.destination.acquire() as conn:
            return [await _verify(engine, session, conn, source, d) for d in datasets]
    finally:
        await session.close()


async def _verify(
    engine: Engine,
    session: SourceSession,
    conn: asyncpg.Connection,
    source: Source,
    dataset: Dataset,
) -> DatasetVerdict:
    destination = engine.destination
    try:
        async with session.savepoint():
            shape = await session.describe(dataset)
            parent = destination.parent(dataset.name)
            oid = await conn.fetchval("SELECT to_regclass($1)::oid::int", parent)
            have = {r["name"]: r["type"] for r in await conn.fetch(COLUMNS_SQL, oid)} if oid else {}
            columns = [c for c in shape.columns if c.name in have]
            if not columns:
                return DatasetVerdict(
                    source.id, dataset.name, Verdict.DIFFERS, error="not landed yet"
                )
            shape = shape.only(tuple(c.name for c in columns))
            # a mixed fleet: compared as landed, converted to the table's types on the source
            shape = shape.converted(
                [
                    (c.name, base_type(c.type), base_type(have[c.name]))
                    for c in columns
                    if not widening.same_bytes(base_type(c.type), base_type(have[c.name]))
                ]
            )
            seed = rowdiff.shape_seed([(c.name, base_type(have[c.name])) for c in columns])
            differ = rowdiff.differ(seed, emit=False)

            async def add(chunk: bytes) -> None:
                differ.add_rows(chunk)

            async with conn.transaction(readonly=True):
                await conn.execute(
                    "SELECT pg_catalog.set_config($1, $2, true)", SOURCE_SETTING, source.id
                )
                names = ", ".join(quoting.ident(c.name) for c in columns)
                await conn.copy_from_query(
                    f"SELECT {names} FROM {parent} WHERE "  # noqa: S608
                    f"{quoting.ident(destination.source_column)} = "
                    f"pg_catalog.current_setting({quoting.literal(SOURCE_SETTING)})",
                    output=add,
                    format="binary",
                )
            differ.seal()
            differ.flush()

            async def feed(chunk: bytes) -> None:
                differ.feed(chunk)

            await session.copy_out(shape, feed)
            differ.finish()
    except Exception as exc:
        return DatasetVerdict(source.id, dataset.name, Verdict.FAILED, error=classify(exc).reason)
    counts = differ.counts()
    missing = counts["rows_new"]
    extra = counts["existing"] - counts["rows_matched"]
    note = None
    # syncd's own columns (the source column, the row hash, the source fingerprint) aside
    if len(columns) < len(shape.columns) or len(have) - 3 > len(columns):
        note = "compared on the columns both sides have"
    return DatasetVerdict(
        source.id,
        dataset.name,
        Verdict.EQUAL if missing == 0 and extra == 0 else Verdict.DIFFERS,
        counts["rows_in"],
        counts["existing"],
        missing,
        extra,
        note,
    )
