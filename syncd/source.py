"""The municipal side: read-only snapshot sessions and the shape of each dataset.

One session per municipality sync: a REPEATABLE READ READ ONLY transaction, so every dataset of
the pass reads the same snapshot. A failing dataset is rolled back to its savepoint, which keeps
the transaction (and the snapshot) for the next one. Nothing is ever created or written on the
municipal database; `default_transaction_read_only` is on for the session as a second guard.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from . import sql
from .config import Dataset, Source, Timeouts
from .dsn import SERVER_KEEPALIVES, connect_password, enable_keepalive
from .errors import FinalError, RetryableError

APPLICATION_NAME = "syncd"
FIRST_USER_OID = 16384  # below: built-in types, whose binary format every server shares

Sink = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # the destination type, as SQL (format_type of the source, mapped)


@dataclass(frozen=True, slots=True)
class Shape:
    """What a dataset looks like on this source: its columns, and how to COPY it out."""

    dataset: str
    columns: tuple[Column, ...]
    table: tuple[str, str] | None  # (schema, name) when COPY can read the table directly
    query: str | None  # otherwise: the query COPY wraps

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


_TABLE_COLUMNS_SQL = """
SELECT a.attname::text AS name, a.atttypid::int AS oid,
       format_type(a.atttypid, a.atttypmod) AS type,
       t.typtype::text AS typtype, t.typbasetype::int AS base_oid,
       format_type(t.typbasetype, t.typtypmod) AS base_type,
       c.relkind::text AS relkind, n.nspname::text AS schema, c.relname::text AS relname
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped {generated}
ORDER BY a.attnum
"""

_TYPES_SQL = """
SELECT t.oid::int AS oid, format_type(t.oid, NULL) AS type, t.typtype::text AS typtype,
       t.typbasetype::int AS base_oid, format_type(t.typbasetype, t.typtypmod) AS base_type
FROM pg_catalog.pg_type t WHERE t.oid = ANY($1::int[]::oid[])
"""


def destination_type(
    column: str, oid: int, type_sql: str, typtype: str, base_oid: int, base_type: str
) -> str:
    """The destination type for a source column whose binary COPY we pass through unchanged."""
    if typtype == "e":  # enum: binary form is its label, the same bytes as text
        return "text"
    if typtype == "d" and 0 < base_oid < FIRST_USER_OID:  # domain: COPY sends the base type
        return base_type
    if oid < FIRST_USER_OID:
        return type_sql
    raise FinalError(
        f"column {column!r} has type {type_sql}, which is not built into PostgreSQL and cannot be "
        f"copied byte for byte; use a query dataset that casts it (e.g. {column}::text)"
    )


class SourceSession:
    """An open snapshot on one municipal database."""

    def __init__(self, source: Source, conn: asyncpg.Connection):
        self.source = source
        self.conn = conn
        self.timeouts = Timeouts()

    @classmethod
    async def open(cls, source: Source, timeouts: Timeouts) -> SourceSession:
        missing = source.dsn.missing_files()
        if missing:
            raise FinalError(f"cannot connect: {'; '.join(missing)}")
        conn = await asyncpg.connect(
            source.dsn.raw,
            password=connect_password(source.password_file),
            timeout=timeouts.connect,
            # no answer to a command for this long: the server or the link hangs
            command_timeout=timeouts.idle_stream,
            statement_cache_size=0,  # every statement runs once per pass
            server_settings={
                "application_name": APPLICATION_NAME,
                "default_transaction_read_only": "on",
                "statement_timeout": str(int(timeouts.statement * 1000)),
                **SERVER_KEEPALIVES,
            },
        )
        session = cls(source, conn)
        session.timeouts = timeouts
        try:
            enable_keepalive(conn)
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            for name, value in source.params:
                # bound value, validated name: dataset queries read current_setting('syncd.<name>')
                await conn.execute(
                    "SELECT pg_catalog.set_config($1, $2, true)", f"syncd.{name}", value
                )
        except BaseException:
            await session.abort()
            raise
        return session

    @property
    def alive(self) -> bool:
        return not self.conn.is_closed()

    async def describe(self, dataset: Dataset) -> Shape:
        try:
            if dataset.table is not None:
                return await self._describe_table(dataset)
            return await self._describe_query(dataset)
        except TimeoutError:
            raise self._no_answer() from None

    def _no_answer(self) -> RetryableError:
        return RetryableError(
            f"no answer from the source within timeouts.idle_stream "
            f"({self.timeouts.idle_stream:g}s)"
        )

    async def _describe_table(self, dataset: Dataset) -> Shape:
        generated = "AND a.attgenerated = ''" if self.conn.get_server_version().major >= 12 else ""
        rows = await self.conn.fetch(
            _TABLE_COLUMNS_SQL.format(generated=generated), sql.table_ref(dataset.table)
        )
        if not rows:
            raise FinalError(f"table {dataset.table} has no columns")
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
        if relkind == "r":
            return Shape(dataset.name, columns, (schema, relname), None)
        # views, materialized views, partitioned and foreign tables: COPY needs a SELECT
        select = ", ".join(sql.ident(c.name) for c in columns)
        query = f"SELECT {select} FROM {sql.qualified(schema, relname)}"  # noqa: S608
        return Shape(dataset.name, columns, None, query)

    async def _describe_query(self, dataset: Dataset) -> Shape:
        assert dataset.query is not None
        stmt = await self.conn.prepare(dataset.query)
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
        oids = sorted({a.type.oid for a in attributes})
        types = {r["oid"]: r for r in await self.conn.fetch(_TYPES_SQL, oids)}
        columns = []
        for a in attributes:
            t = types[a.type.oid]
            columns.append(
                Column(
                    a.name,
                    destination_type(
                        a.name, t["oid"], t["type"], t["typtype"], t["base_oid"], t["base_type"]
                    ),
                )
            )
        return Shape(dataset.name, tuple(columns), None, dataset.query)

    async def copy_out(self, shape: Shape, sink: Sink) -> int:
        """Stream the dataset as binary COPY into `sink`; returns the row count.

        The server's statement_timeout bounds a COPY; our own timer (a little longer) is there
        for when the server's cancel cannot reach us through a slow or stuck link."""
        try:
            return await self._copy_out(
                shape, sink, self.timeouts.statement + self.timeouts.idle_stream
            )
        except TimeoutError:
            raise RetryableError(
                f"statement timeout on the source: the COPY ran past timeouts.statement "
                f"({self.timeouts.statement:g}s)"
            ) from None

    async def _copy_out(self, shape: Shape, sink: Sink, timeout: float) -> int:
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
            status = await self.conn.copy_from_query(
                shape.query, output=sink, format="binary", timeout=timeout
            )
        return copy_row_count(status)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A failing dataset rolls back to here; the snapshot stays for the next dataset."""
        try:
            await self.conn.execute("SAVEPOINT syncd_dataset")
        except TimeoutError:
            raise self._no_answer() from None
        try:
            yield
        except BaseException:
            if self.alive:
                with contextlib.suppress(Exception):
                    await self.conn.execute("ROLLBACK TO SAVEPOINT syncd_dataset")
            raise
        try:
            await self.conn.execute("RELEASE SAVEPOINT syncd_dataset")
        except TimeoutError:
            raise self._no_answer() from None

    async def close(self) -> None:
        if self.alive:
            try:
                await self.conn.execute("ROLLBACK")  # read-only: nothing to commit
                await self.conn.close(timeout=5)
            except Exception:
                self.conn.terminate()

    async def abort(self) -> None:
        """Drop the connection without a goodbye: for a hung or broken session."""
        self.conn.terminate()


def copy_row_count(status: str | None) -> int:
    """Rows from a COPY command tag ('COPY 1234')."""
    if not status:
        return 0
    try:
        return int(status.split()[-1])
    except (ValueError, IndexError):
        return 0
