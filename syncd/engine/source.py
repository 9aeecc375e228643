"""The municipal side: read-only snapshot sessions and the shape of each dataset.

One session per municipality sync: a REPEATABLE READ READ ONLY transaction, so every dataset of
the pass reads the same snapshot. A failing dataset is rolled back to the session's savepoint,
which keeps the transaction (and the snapshot) for the next one. Nothing is ever created or
written on the municipal database; `default_transaction_read_only` is on for the session as a
second guard.

Round trips are what the municipal link charges for: a snapshot pass costs the
dataset count plus two after connecting. The session's settings and the source's `params` go in
the startup packet; BEGIN and the savepoint are one simple query; every table dataset and every
variant probe of the pass is described by one catalog query (`survey`); the savepoint is rolled
back to only when something failed, never set or released per dataset (a read-only transaction
has nothing to keep between datasets but its snapshot, which a rollback to it keeps); then one
COPY per dataset, and the session ends with Terminate (the server ends a read-only transaction
with the session: nothing to roll back by hand).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from syncd.config import Dataset, Source, Timeouts, Variant
from syncd.engine import quoting, survey
from syncd.engine.connect import connect_password, enable_keepalive, session_settings
from syncd.engine.copy import Sink, copy_row_count
from syncd.engine.errors import FinalError, NoAnswer
from syncd.engine.incremental import ALIAS, CursorWindow
from syncd.engine.ratelimit import TokenBucket, capped
from syncd.engine.shape import Column, Shape
from syncd.engine.tunnel import Tunnels

SAVEPOINT = "syncd_dataset"


_TABLE_COLUMNS_SQL = """
SELECT a.attname::text AS name, a.atttypid::int AS oid,
       format_type(a.atttypid, a.atttypmod) AS type,
       t.typtype::text AS typtype, t.typbasetype::int AS base_oid,
       format_type(t.typbasetype, t.typtypmod) AS base_type,
       c.relkind::text AS relkind, c.relhassubclass AS has_children,
       n.nspname::text AS schema, c.relname::text AS relname
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped {generated}
ORDER BY a.attnum
"""

_EXISTS_SQL = """
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_attribute a
           ON a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relname = $2
      AND (n.nspname = $1 OR ($1 IS NULL AND n.nspname = ANY (current_schemas(false))))
      AND ($3 IS NULL OR a.attname IS NOT NULL))
"""


def destination_type(
    column: str, oid: int, type_sql: str, typtype: str, base_oid: int, base_type: str
) -> str:
    """The destination type for a source column whose binary COPY we pass through unchanged."""
    if typtype == "e":  # enum: binary form is its label, the same bytes as text
        return "text"
    if typtype == "d" and 0 < base_oid < survey.FIRST_USER_OID:  # domain: COPY sends the base type
        return base_type
    if oid < survey.FIRST_USER_OID:
        return type_sql
    raise FinalError(
        f"column {column!r} has type {type_sql}, which is not built into PostgreSQL and cannot be "
        f"copied byte for byte; use a query dataset that casts it (e.g. {column}::text)"
    )


class SourceSession:
    """An open snapshot on one municipal database."""

    def __init__(
        self,
        source: Source,
        conn: asyncpg.Connection,
        timeouts: Timeouts,
        datasets: Sequence[Dataset] = (),
        caps: tuple[TokenBucket, ...] = (),
    ):
        self.source = source
        self.conn = conn
        self.timeouts = timeouts
        self.datasets = tuple(datasets)  # what the pass will describe: surveyed together
        self._survey: survey.Survey | None = None
        self._survey_refused = False
        self.caps = caps  # what each COPY's bytes pay for (max_rate): its own, its bastion's
        self._local: frozenset[str] = frozenset()  # what the last reading set for itself

    @classmethod
    async def open(
        cls,
        source: Source,
        timeouts: Timeouts,
        tunnels: Tunnels | None = None,
        datasets: Sequence[Dataset] = (),
        caps: tuple[TokenBucket, ...] = (),
    ) -> SourceSession:
        """`tunnels`: where sources behind a bastion get their channel (the engine's);
        `datasets`: the pass's, described in one round trip by the first `describe`;
        `caps`: the buckets of its `max_rate`s (Limits.rates), which every COPY out pays."""
        missing = source.dsn.missing_files()
        if missing:
            raise FinalError(f"cannot connect: {'; '.join(missing)}")
        password = connect_password(source.password_file)
        through: dict[str, Any] = {}
        if source.bastion is not None:
            if tunnels is None:
                raise FinalError(f"bastion {source.bastion.name}: no tunnels here (a bug)")
            endpoint = await tunnels.endpoint(source, timeouts.connect)
            through = {"host": endpoint.host, "port": endpoint.port}
            if endpoint.ssl is not None:
                through["ssl"] = endpoint.ssl
        conn = await asyncpg.connect(
            source.dsn.raw,
            **through,
            password=password,
            timeout=timeouts.connect,
            # no answer to a command for this long: the server or the link hangs
            command_timeout=timeouts.idle_stream,
            statement_cache_size=0,  # every statement runs once per pass
            # in the startup packet, not a SET each: no round trip
            server_settings=session_settings(source, timeouts),
        )
        session = cls(source, conn, timeouts, datasets, caps)
        try:
            enable_keepalive(conn)
            await conn.execute(
                f"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SAVEPOINT {SAVEPOINT}"
            )
        except BaseException:
            await session.abort()
            raise
        return session

    @property
    def alive(self) -> bool:
        return not self.conn.is_closed()

    async def describe(self, dataset: Dataset) -> Shape:
        """How this source provides the dataset: the variant its probes choose, and the columns."""
        try:
            await self._surveyed(dataset)
            variant = await self._choose(dataset)
            if variant.table is not None:
                shape = await self._describe_table(dataset.name, variant.table)
            else:
                assert variant.query is not None
                shape = await self._describe_query(dataset.name, variant.query)
        except TimeoutError:
            raise self._no_answer() from None
        return replace(shape, variant=variant.probe)

    async def _surveyed(self, dataset: Dataset) -> None:
        """The catalog's answers for this dataset and every other of the pass, asked once."""
        tables, probes = _questions([dataset])
        if not (tables or probes) or self._survey_refused:
            return
        if self._survey is not None and self._survey.covers(tables, probes):
            return
        tables, probes = _questions([dataset, *self.datasets])
        try:
            self._survey = await survey.survey(self.conn, tables, probes, self.timeouts.idle_stream)
        except asyncpg.PostgresError:
            # a name the server cannot take (too many dots...): asked one by one below, where
            # the server's own error names the dataset it belongs to
            await self.conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            self._survey_refused = True  # not asked again in this session

    async def _choose(self, dataset: Dataset) -> Variant:
        if len(dataset.variants) == 1 and dataset.variants[0].probe == "default":
            return dataset.variants[0]
        default = None
        for variant in dataset.variants:
            if variant.when_column is not None:
                *table, column = variant.when_column.split(".")
                if await self._exists(".".join(table), column):
                    return variant
            elif variant.when_table is not None:
                if await self._exists(variant.when_table, None):
                    return variant
            else:
                default = variant
        if default is None:
            probes = ", ".join(v.probe for v in dataset.variants)
            raise FinalError(f"no variant fits this source (none of: {probes})")
        return default

    async def _exists(self, table: str, column: str | None) -> bool:
        if self._survey is not None and (table, column) in self._survey.probes:
            return self._survey.probes[table, column]
        schema, _, name = table.lower().rpartition(".")
        return bool(
            await self.conn.fetchval(
                _EXISTS_SQL, schema or None, name, column.lower() if column else None
            )
        )

    def _no_answer(self) -> NoAnswer:
        return NoAnswer(
            f"no answer from the source within timeouts.idle_stream "
            f"({self.timeouts.idle_stream:g}s)"
        )

    async def _describe_table(self, dataset: str, table: str) -> Shape:
        rows: Sequence[Any] | None = None  # Records, or the survey's dicts: read by key
        if self._survey is not None:
            rows = self._survey.columns.get(table)
        if not rows:  # not surveyed, or not found: the server's own words for what is wrong
            generated = (
                "AND a.attgenerated = ''" if self.conn.get_server_version().major >= 12 else ""
            )
            rows = await self.conn.fetch(
                _TABLE_COLUMNS_SQL.format(generated=generated), quoting.table_ref(table)
            )
        if not rows:
            raise FinalError(f"table {table} has no columns")
        columns = tuple(
            Column(
                r["name"],
                destination_type(
                    r["name"], r["oid"], r["type"], r["typtype"], r["base_oid"], r["base_type"]
                ),
            )
            for r in rows
        )
        relkind, schema, relname = rows[0]["relkind"], rows[0]["schema"], rows[0]["relname"]
        shape = Shape(dataset, columns, (schema, relname), None)
        if relkind == "r" and not rows[0]["has_children"]:
            return shape
        # views, materialized views, partitioned and foreign tables, and inheritance parents
        # (`COPY table TO` reads the parent alone; SELECT reads its children too): COPY (SELECT)
        return Shape(dataset, columns, None, shape.select)

    async def _describe_query(self, dataset: str, query: str) -> Shape:
        stmt = await self.conn.prepare(query)
        attributes = stmt.get_attributes()
        if not attributes:
            raise FinalError("the query returns no columns")
        names = [a.name for a in attributes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FinalError(
                f"the query returns more than one column named {', '.join(duplicates)}; "
                "give each column a distinct alias"
            )
        types = await survey.types(
            self.conn, [a.type.oid for a in attributes], self.timeouts.idle_stream
        )
        columns = []
        for a, t in zip(attributes, types, strict=True):
            columns.append(
                Column(
                    a.name,
                    destination_type(
                        a.name, t["oid"], t["type"], t["typtype"], t["base_oid"], t["base_type"]
                    ),
                )
            )
        return Shape(dataset, tuple(columns), None, query)

    async def copy_out(self, shape: Shape, sink: Sink, window: CursorWindow | None = None) -> int:
        """Stream the dataset (or the rows of an incremental window) as binary COPY into `sink`;
        returns the row count.

        The server's statement_timeout bounds a COPY; our own timer (a little longer) is there
        for when the server's cancel cannot reach us through a slow or stuck link."""
        settings: tuple[tuple[str, str], ...] = ()
        if window is not None:
            settings = window.settings
            shape = replace(
                shape,
                table=None,
                query=f"SELECT * FROM ({shape.select}\n) AS {ALIAS} WHERE {window.predicate}",  # noqa: S608
            )
        try:
            return await self._copy_out(
                shape, sink, self.timeouts.statement + self.timeouts.idle_stream, settings
            )
        except TimeoutError:
            raise NoAnswer(
                f"statement timeout on the source: the COPY ran past timeouts.statement "
                f"({self.timeouts.statement:g}s)"
            ) from None

    async def _copy_out(
        self, shape: Shape, sink: Sink, timeout: float, settings: tuple[tuple[str, str], ...] = ()
    ) -> int:
        await self._settings((*settings, *shape.settings))
        sink = capped(sink, self.caps)  # asyncpg reads no more until the cap lets this through
        if shape.table is not None:
            status = await self.conn.copy_from_table(
                shape.table[1],
                schema_name=shape.table[0],
                columns=shape.column_names,
                output=sink,
                format="binary",
                timeout=timeout,
            )
        else:
            assert shape.query is not None
            # the newline: asyncpg wraps it as COPY (<query>) TO, and a query may end in a comment
            status = await self.conn.copy_from_query(
                shape.query + "\n", output=sink, format="binary", timeout=timeout
            )
        return copy_row_count(status)

    async def max_cursor(
        self, shape: Shape, cursor: str, condition: str, settings: tuple[tuple[str, str], ...] = ()
    ) -> str | None:
        """The highest cursor value among the rows `condition` admits, as text (same snapshot).

        The text is ISO 8601 whatever the municipal server's DateStyle (`11/02/2024` means
        February or November depending on it): the output style is ISO for this one statement,
        the field order for input (DMY, MDY) left as the server has it, so the dataset's own
        query means what it always means. The value then reads back the same anywhere: ISO
        dates are unambiguous in every DateStyle, and ISO timestamps with a time zone carry
        their offset, whatever the TimeZone."""
        await self._settings(settings)
        column = f"{ALIAS}.{quoting.ident(cursor)}"
        style = await self.conn.fetchval("SELECT pg_catalog.current_setting('DateStyle')")
        iso = style.replace(" ", "").upper().startswith("ISO,")
        if not iso:
            await self.conn.execute("SELECT pg_catalog.set_config('DateStyle', 'ISO', true)")
        top: str | None = await self.conn.fetchval(
            f"SELECT max({column})::text FROM ({shape.select}\n) AS {ALIAS} WHERE {condition}",  # noqa: S608
            timeout=self.timeouts.statement + self.timeouts.idle_stream,
        )
        if not iso:  # after an error, the savepoint's rollback restores it
            await self.conn.execute("SELECT pg_catalog.set_config('DateStyle', $1, true)", style)
        return top

    async def _settings(self, settings: tuple[tuple[str, str], ...]) -> None:
        """Transaction-local settings for one reading, all in one statement (names ours, values
        bound). What an earlier reading of the snapshot set and this one does not goes back to
        the session's value (pg_settings.reset_val) in the same statement: a reading's
        settings are its own (the float conversion's extra_float_digits would otherwise change
        how a later dataset's query writes floats as text on a server before 12)."""
        names = {name for name, _ in settings}
        back = sorted(self._local - names)
        if not settings and not back:
            return
        calls = [
            f"pg_catalog.set_config(${2 * i + 1}, ${2 * i + 2}, true)" for i in range(len(settings))
        ]
        at = 2 * len(settings)
        calls += [
            f"pg_catalog.set_config(${at + i}, (SELECT s.reset_val FROM pg_catalog.pg_settings "  # noqa: S608
            f"AS s WHERE s.name = ${at + i}), true)"
            for i in range(1, len(back) + 1)
        ]
        await self.conn.execute(
            f"SELECT {', '.join(calls)}", *(part for pair in settings for part in pair), *back
        )
        self._local = frozenset(names)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A failing dataset rolls back to the session's savepoint, set with BEGIN: the
        snapshot stays for the next dataset. Nothing crosses the link when nothing fails."""
        try:
            yield
        except BaseException:
            if self.alive:
                with contextlib.suppress(Exception):
                    await self.conn.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            raise

    async def close(self) -> None:
        """Terminate: the server ends the read-only transaction with the session."""
        if self.alive:
            try:
                await self.conn.close(timeout=5)
            except Exception:
                self.conn.terminate()

    async def abort(self) -> None:
        """Drop the connection without a goodbye: for a hung or broken session."""
        self.conn.terminate()


def _questions(datasets: Sequence[Dataset]) -> tuple[list[str], list[survey.Probe]]:
    """The tables to describe and the probes to answer for these datasets' variants."""
    tables: list[str] = []
    probes: list[survey.Probe] = []
    for dataset in datasets:
        for variant in dataset.variants:
            if variant.table is not None:
                tables.append(variant.table)
            if variant.when_column is not None:
                *table, column = variant.when_column.split(".")
                probes.append((".".join(table), column))
            elif variant.when_table is not None:
                probes.append((variant.when_table, None))
    return tables, probes
