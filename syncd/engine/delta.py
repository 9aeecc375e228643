"""Delta transfer of a snapshot dataset: only the rows the destination does not hold cross the
municipal link.

Rows are a multiset without a key. Each carries a 64-bit fingerprint of its text form, computed
by the source (engine/fingerprint.py) and stored beside it in the destination (`syncd_src_fp`),
with the context it was made under and the count and sum of them all (`syncd.fingerprints`).
In the pass's one source snapshot (every round reads it), inside a savepoint that pins the
settings the text form depends on:

1. the count and the sum of every fingerprint, with the context: all equal to what is stored,
   nothing changed (a few hundred bytes, one scan); another context, everything is streamed;
2. the destination's digest of each group of rows (group = the fingerprint's low bits, about
   eight rows a group) goes up; the source answers with the fingerprints (and positions) of
   the rows of the groups whose digest differs (one more scan);
3. the fingerprints whose count differs on the two sides are the delta: the source sends those
   rows (by position, a TID scan; by fingerprint for queries), and the landing diffs them
   against the destination's rows of the same fingerprints only (`Landing.land(only=...)`),
   which inserts what is new and deletes what went, in the pass's one transaction.

A large delta (over `FULL_SHARE` of the rows), a failed round (the session intact) or a
context that changed streams everything instead, with fingerprints: the landing then writes
only what changed, as it does without delta transfer.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from typing import Any

import anyio
import asyncpg

from syncd.config import Dataset, Source
from syncd.engine import fingerprint, fpstore, quoting, rowdiff, survey
from syncd.engine.copy import CopyOut, Sink, Transfer
from syncd.engine.errors import Side, TransferError, classify, on_side
from syncd.engine.fingerprint import Function
from syncd.engine.landing import Landed, Landing, Write
from syncd.engine.layout import SRC_FP
from syncd.engine.shape import Column, Shape
from syncd.engine.source import SAVEPOINT, SourceSession
from syncd.engine.tables import Target
from syncd.logevents import Event

log = logging.getLogger(__name__)

FULL_SHARE = 0.3  # a delta above this share of the rows: stream them all (one scan, not three)
ROWS_PER_GROUP = 8  # round 2 sends 8 bytes a group: about one byte a row goes up
MAX_GROUPS = 1 << 20
CONTEXT_VERSION = 1


class Plan(StrEnum):
    """What a pass sent of a dataset with delta transfer (the span's `syncd.delta`)."""

    NOTHING = "nothing"  # round 1 matched: nothing changed
    ROWS = "rows"  # only the rows the destination lacked
    FULL = "full"  # everything, with fingerprints (first pass, new context, large delta...)


def enabled(dataset: Dataset, source: Source) -> bool:
    """Delta transfer for this dataset from this source: snapshot datasets only (incremental
    ones move their window already); the dataset's `delta` (tables on, queries off by
    default) and the source's (on by default)."""
    if dataset.incremental is not None or not source.delta:
        return False
    if dataset.delta is not None:
        return dataset.delta
    return all(v.table is not None for v in dataset.variants)


def groups_for(rows: int) -> int:
    """Groups of round 2: a power of two, about ROWS_PER_GROUP rows each."""
    groups = 1
    while groups * ROWS_PER_GROUP < rows and groups < MAX_GROUPS:
        groups *= 2
    return groups


@dataclass(slots=True)
class Outcome:
    plan: Plan
    landed: Landed
    reason: str = ""  # why a full stream
    source_seconds: float = 0.0  # the rounds' time at the source (scans and link)


class RoundFailed(Exception):
    """The source refused a round (its session intact): stream everything instead."""

    def __init__(self, cause: asyncpg.PostgresError):
        super().__init__(str(cause))
        self.cause = cause


class _Session:
    """The source side of one dataset's rounds: its pinned savepoint and the function."""

    def __init__(self, session: SourceSession, columns: list[str], source: str):
        self.session = session
        self.conn = session.conn
        self.columns = columns
        self.source = source
        self.bytes = 0
        self.seconds = 0.0
        self.old: str | None = None  # the settings before the pins, while they hold

    @property
    def timeout(self) -> float:
        t = self.session.timeouts
        return t.statement + t.idle_stream

    async def recover(self) -> None:
        """After a round the server refused: back to the start of the dataset (the savepoint
        the attempt took, engine/source.py), which puts the settings back too."""
        with on_side(Side.SOURCE):
            await self.conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        self.old = None

    async def unpin(self) -> None:
        """The server's own settings again, for the datasets that follow in the snapshot."""
        if self.old is not None:
            # spliced, not bound: a bound parameter is a prepared statement, a second round
            # trip on the municipal link; the text is what this server reported, quoted
            restore = fingerprint.restore_sql(quoting.text_literal(self.old))
            with on_side(Side.SOURCE):
                await self.conn.execute(f"SELECT 1 WHERE ({restore}) IS NULL")
            self.old = None

    @contextlib.contextmanager
    def _round(self) -> Iterator[None]:
        """A round's one statement, timed. The server's refusal (md5 refused, a statement
        timeout) is a `RoundFailed`: the caller streams everything instead; a lost link is
        not."""
        started = time.monotonic()
        try:
            yield
        except asyncpg.PostgresError as exc:
            raise RoundFailed(exc) from exc
        except Exception as exc:  # the link, a timeout: the source's, whoever catches it
            raise TransferError(Side.SOURCE, exc) from exc
        finally:
            self.seconds += time.monotonic() - started

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record:
        """A round's one statement (`_round`), prepared."""
        with self._round():
            row = await self.conn.fetchrow(query, *args, timeout=self.timeout)
        assert row is not None
        self.bytes += sum(len(str(v)) if not isinstance(v, bytes) else len(v) for v in row)
        return row

    async def fetch_once(self, query: str) -> dict[str, Any]:
        """A round's one statement (`_round`) in one round trip (no prepare): its one row as
        JSON through COPY."""
        copy = f"SELECT pg_catalog.row_to_json(r) FROM ({query}) AS r"  # noqa: S608 (our SQL)
        with self._round():
            row = await survey.copy_json(self.conn, copy, self.timeout)
        assert isinstance(row, dict)
        self.bytes += sum(len(str(v)) for v in row.values())
        return row

    async def probe(self) -> tuple[Function, dict[str, str]]:
        """The function this server computes (md5, unless it refuses it) and the settings of
        the context, without a scan; the settings pinned, if they are not yet."""
        try:
            row = await self.fetchrow(fingerprint.probe_sql(Function.MD5, self.old is None))
            function = Function.MD5
        except RoundFailed:
            await self.recover()
            row = await self.fetchrow(fingerprint.probe_sql(Function.HASHTEXT, True))
            function = Function.HASHTEXT
        if self.old is None:
            self.old = row["old"]
        return function, _settings(row)

    async def totals(
        self, function: Function, stored: fpstore.Stored
    ) -> tuple[dict[str, str], int, str]:
        """Round 1. Nothing changed: the statement put the settings back itself."""
        query = fingerprint.totals_sql(
            function,
            self.columns,
            self.source,
            stored.rows,
            stored.fp_sum,
            fingerprint.joined(stored.context["settings"]),
        )
        row = await self.fetch_once(query)
        if row["restored"] is None:
            self.old = row["old"]
        return _settings(row), int(row["n"]), str(row["s"])

    async def groups(
        self, function: Function, digests: bytes, mask: int, with_ctid: bool
    ) -> dict[int, list[tuple[int, tuple[int, int] | None]]]:
        """Round 2: per differing group, its rows' (fingerprint, position)."""
        row = await self.fetchrow(
            fingerprint.groups_sql(function, self.columns, self.source, with_ctid),
            digests,
            mask,
        )
        data: bytes = row[0] or b""
        found: dict[int, list[tuple[int, tuple[int, int] | None]]] = {}
        at, width = 0, 14 if with_ctid else 8
        while at < len(data):
            group, count = struct.unpack_from(">ii", data, at)
            at += 8
            items: list[tuple[int, tuple[int, int] | None]] = []
            for _ in range(count):
                (fp,) = struct.unpack_from(">q", data, at)
                ctid = struct.unpack_from(">IH", data, at + 8) if with_ctid else None
                items.append((fp, ctid))
                at += width
            found[group] = items
        return found


def _settings(row: asyncpg.Record | dict[str, Any]) -> dict[str, str]:
    return fingerprint.parse_settings(str(row["c"]))


def _columns(shape: Shape) -> list[list[str]]:
    return [[c.name, c.type] for c in shape.columns]


def _context(function: Function, settings: dict[str, str], shape: Shape) -> dict[str, Any]:
    return {
        "version": CONTEXT_VERSION,
        "function": str(function),
        "settings": settings,
        "columns": _columns(shape),
    }


async def land(
    landing: Landing,
    session: SourceSession,
    shape: Shape,
    target: Target,
    write: Write,
    *,
    land_rows: Callable[..., Any],
) -> Outcome:
    """Land the dataset by delta transfer (see the module's docstring). `land_rows` is
    `Landing.land` with the pipe's options bound: it is called with (target, copy_out, write,
    only)."""
    source = fingerprint.relation(shape.table, shape.select)
    columns = shape.column_names
    with_fp = replace(target, columns=(*target.columns, SRC_FP), types=(*target.types, "bigint"))
    side = _Session(session, columns, source)
    stored = await fpstore.load(landing.conn, target)
    # a failure leaves the pins to the attempt's savepoint, whose rollback puts them back
    try:
        outcome = await _reconcile(landing, side, shape, with_fp, write, stored, land_rows)
    except RoundFailed as exc:
        # refused again after the fallback (hashtext too): the server's own error, classified
        # as any other
        raise TransferError(Side.SOURCE, exc.cause) from None
    await side.unpin()
    outcome.source_seconds = side.seconds
    outcome.landed.transfer.bytes += side.bytes
    return outcome


async def _reconcile(
    landing: Landing,
    side: _Session,
    shape: Shape,
    target: Target,
    write: Write,
    stored: fpstore.Stored | None,
    land_rows: Callable[..., Any],
) -> Outcome:
    reason = "nothing stored from an earlier pass with fingerprints"
    if write != Write.DIFF:
        reason = "a rewrite (full refresh, or a first load)"
    elif stored is not None and stored.context.get("version") != CONTEXT_VERSION:
        reason = "the fingerprints were stored by another version of syncd"
    elif stored is not None:
        function = Function(stored.context["function"])
        try:
            outcome = await _rounds(landing, side, shape, target, stored, function, land_rows)
        except RoundFailed as exc:
            failure = classify(exc.cause)
            if not side.session.alive:
                raise TransferError(Side.SOURCE, exc.cause) from None
            reason = f"a round failed ({failure.reason})"
            log.warning(
                "source %s dataset %s: delta transfer falls back to the full stream: %s",
                target.source_id,
                target.dataset,
                reason,
                extra={
                    "event": Event.DELTA_FALLBACK,
                    "source": target.source_id,
                    "dataset": target.dataset,
                    "reason": reason,
                },
            )
            await side.recover()
        else:
            if outcome.plan != Plan.FULL:
                return outcome
            reason = outcome.reason
    # a large delta found by the rounds leaves round 2's plan settings (no sequential scans)
    # pinned: the whole stream gets the server's own back, then the pins again from the probe
    await side.unpin()
    function, settings = await side.probe()
    shape_fp = _full_shape(shape, function, side)
    landed = await land_rows(
        target, partial(side.session.copy_out, shape_fp), write=write, only=None
    )
    rows, total = await fpstore.totals(landing, target)
    await fpstore.store(landing.conn, target, _context(function, settings, shape), rows, total)
    return Outcome(Plan.FULL, landed, reason)


def _full_shape(shape: Shape, function: Function, side: _Session) -> Shape:
    return replace(
        shape,
        columns=(*shape.columns, Column(SRC_FP, "bigint")),
        table=None,
        query=fingerprint.full_sql(function, side.columns, side.source),
    )


async def _rounds(
    landing: Landing,
    side: _Session,
    shape: Shape,
    target: Target,
    stored: fpstore.Stored,
    function: Function,
    land_rows: Callable[..., Any],
) -> Outcome:
    if stored.context.get("columns") != _columns(shape):
        return Outcome(Plan.FULL, Landed(), "the context changed (columns)")
    # the destination's stored fingerprints are read while the source scans (two servers):
    # round 2 needs them; an unchanged table wasted a read of its own rows at the destination
    stored_fps: list[int] = []
    refused: RoundFailed | None = None

    async def read_stored() -> None:
        stored_fps.extend(await fpstore.fingerprints(landing, target))

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_stored)
        try:
            settings, rows, total = await side.totals(function, stored)
        except RoundFailed as exc:  # the destination's read ends first: its transaction stays
            refused = exc
    if refused is not None:
        raise refused
    context = _context(function, settings, shape)
    if context != stored.context:
        changed = sorted(k for k in context if context.get(k) != stored.context.get(k))
        return Outcome(Plan.FULL, Landed(), f"the context changed ({', '.join(changed)})")
    if rows == stored.rows and total == stored.fp_sum:
        return Outcome(Plan.NOTHING, Landed(transfer=Transfer(rows=rows)))
    groups = groups_for(max(rows, stored.rows))
    mask = groups - 1
    digests = fpstore.digests(stored_fps, groups)
    with_ctid = shape.table is not None
    differing = await side.groups(function, digests, mask, with_ctid)
    held = fpstore.held(stored_fps, mask, sorted(differing))
    theirs: Counter[int] = Counter()
    positions: dict[int, list[tuple[int, int] | None]] = {}
    for items in differing.values():
        for fp, ctid in items:
            theirs[fp] += 1
            positions.setdefault(fp, []).append(ctid)
    delta = sorted(fp for fp in set(theirs) | set(held) if theirs[fp] != held[fp])
    fetch = sum(theirs[fp] for fp in delta)
    if fetch > FULL_SHARE * max(rows, 1):
        return Outcome(Plan.FULL, Landed(), f"a large delta ({fetch} of {rows} rows)")
    await fpstore.put_delta(landing.conn, delta)
    if with_ctid:
        assert shape.table is not None
        ctids = [c for fp in delta for c in positions.get(fp, []) if c is not None]
        query = fingerprint.rows_by_ctid_sql(function, side.columns, shape.table, ctids)
    else:
        wanted = [fp for fp in delta if theirs[fp]]
        query = fingerprint.rows_by_fp_sql(function, side.columns, side.source, wanted)
    fetched = replace(
        shape, columns=(*shape.columns, Column(SRC_FP, "bigint")), table=None, query=query
    )
    copy_out: CopyOut = partial(side.session.copy_out, fetched)
    if not fetch:  # only deletions: no COPY at the source at all

        async def nothing(sink: Sink) -> int:
            await sink(rowdiff.HEADER + rowdiff.TRAILER)  # an empty binary COPY stream
            return 0

        copy_out = nothing
    landed: Landed = await land_rows(
        target,
        copy_out,
        write=Write.DIFF,
        only=f"{SRC_FP} IN (SELECT f.fp FROM {fpstore.FPS} AS f)",  # noqa: S608
    )
    landed.transfer.rows = rows
    await fpstore.store(landing.conn, target, context, rows, total)
    return Outcome(Plan.ROWS, landed)
