"""The municipal side on a real server: a small database made once for this module (a few rows
of awkward types, a view, a type syncd cannot copy), read through `SourceSession`.

The session connects as the superuser on purpose: that it cannot write must come from the
session itself, not from grants.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from syncd.config import Dataset, Incremental, Source, Timeouts, Variant
from syncd.config.dsn import Dsn
from syncd.engine import incremental
from syncd.engine.errors import FinalError
from syncd.engine.shape import Column, Shape
from syncd.engine.source import SourceSession
from syncd.lab import embedded

from tests.support.helpers import binary_copy, scratch_database

DBNAME = "unit_source"
SCHEMA_SQL = """
CREATE TYPE humor AS ENUM ('feliz', 'triste');
CREATE DOMAIN peso_kg AS numeric(5,2);
CREATE TYPE par AS (a integer, b integer);
CREATE TABLE pessoa (
    id integer PRIMARY KEY,
    nome varchar(40),
    peso peso_kg,
    humor humor,
    atualizado timestamptz
);
INSERT INTO pessoa VALUES
    (1, 'Ana', 61.5, 'feliz', '2024-02-11 09:30+00'),
    (2, 'João D''Ávila', NULL, 'triste', '2024-11-02 23:59:59.5+00'),
    (3, E'tab\\there', 80, NULL, NULL);
CREATE VIEW adulto AS SELECT id, nome FROM pessoa WHERE id > 1;
CREATE TABLE com_par (id integer, p par);
CREATE TABLE eventos (id integer);
CREATE TABLE pec_v5_tabela (x integer);
"""
PESSOA = "public.pessoa"


@pytest.fixture(scope="module")
async def source_db(source_cluster: embedded.Cluster) -> AsyncIterator[str]:
    async with scratch_database(source_cluster, DBNAME, SCHEMA_SQL) as dsn:
        yield dsn


@pytest.fixture
async def admin(source_db: str) -> AsyncIterator[asyncpg.Connection]:
    """The municipality's own applications, writing while syncd reads."""
    conn = await asyncpg.connect(source_db)
    try:
        yield conn
    finally:
        await conn.close()


async def open_session(dsn: str, **source) -> SourceSession:
    return await SourceSession.open(Source("1100015", Dsn.parse(dsn), **source), Timeouts())


@pytest.fixture
async def session(source_db: str) -> AsyncIterator[SourceSession]:
    session = await open_session(source_db)
    try:
        yield session
    finally:
        await session.close()


def table(name: str, table: str) -> Dataset:
    return Dataset(name, (Variant(table=table),))


def query(name: str, text: str) -> Dataset:
    return Dataset(name, (Variant(query=text),))


async def copied(session: SourceSession, dataset: Dataset, **kwargs) -> tuple[int, bytes]:
    return await copied_shape(session, await session.describe(dataset), **kwargs)


async def copied_shape(session: SourceSession, shape: Shape, **kwargs) -> tuple[int, bytes]:
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    rows = await session.copy_out(shape, sink, **kwargs)
    return rows, b"".join(chunks)


async def test_the_session_cannot_write_even_as_superuser(session: SourceSession):
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await session.conn.execute("INSERT INTO pessoa (id) VALUES (99)")
    # a second guard outlives the snapshot's READ ONLY transaction
    await session.conn.execute("ROLLBACK")
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await session.conn.execute("CREATE TABLE syncd_was_here (i integer)")


async def test_every_dataset_of_a_session_reads_one_snapshot(
    session: SourceSession, admin: asyncpg.Connection
):
    eventos = table("eventos", "public.eventos")
    await admin.execute("INSERT INTO eventos VALUES (1)")
    try:
        assert (await copied(session, eventos))[0] == 1
        await admin.execute("INSERT INTO eventos VALUES (2), (3)")
        assert (await copied(session, eventos))[0] == 1
        fresh = await open_session(session.source.dsn.raw)
        try:
            assert (await copied(fresh, eventos))[0] == 3
        finally:
            await fresh.close()
    finally:
        await admin.execute("DELETE FROM eventos")


async def test_a_table_is_described_with_the_types_the_destination_creates(
    session: SourceSession,
):
    shape = await session.describe(table("pessoas", "PUBLIC.Pessoa"))
    assert shape.columns == (
        Column("id", "integer"),
        Column("nome", "character varying(40)"),
        Column("peso", "numeric(5,2)"),  # a domain: COPY sends its base type
        Column("humor", "text"),  # an enum: its binary form is its label
        Column("atualizado", "timestamp with time zone"),
    )
    assert (shape.table, shape.query, shape.variant) == (("public", "pessoa"), None, "default")


async def test_a_view_is_copied_through_a_select_of_its_columns(session: SourceSession):
    dataset = table("adultos", "adulto")
    shape = await session.describe(dataset)
    assert shape.table is None
    assert shape.query == 'SELECT "id", "nome" FROM "public"."adulto"'
    assert (await copied(session, dataset))[0] == 2


async def test_a_query_is_described_by_its_result_columns(session: SourceSession):
    shape = await session.describe(
        query("q", "SELECT id, humor, peso * 2 AS dobro, now() AS agora FROM pessoa")
    )
    assert [(c.name, c.type) for c in shape.columns] == [
        ("id", "integer"),
        ("humor", "text"),
        ("dobro", "numeric"),
        ("agora", "timestamp with time zone"),
    ]
    with pytest.raises(FinalError, match="more than one column named id"):
        await session.describe(query("dup", "SELECT id, id FROM pessoa"))


async def test_a_type_not_built_in_is_refused_with_a_cast_to_use(session: SourceSession):
    with pytest.raises(FinalError, match=r"p::text"):
        await session.describe(table("pares", "com_par"))


async def test_variants_are_chosen_by_their_probes(session: SourceSession):
    older = Variant(query="SELECT id FROM pessoa")
    by_column = Variant(table="pessoa", when_column="public.pessoa.cpf")  # no such column
    by_table = Variant(table="adulto", when_table="public.pec_v5_tabela")
    shape = await session.describe(Dataset("d", (by_column, by_table, older)))
    assert (shape.variant, shape.query) == (
        "table public.pec_v5_tabela",
        'SELECT "id", "nome" FROM "public"."adulto"',
    )
    present = Variant(table="pessoa", when_column="pessoa.NOME")
    shape = await session.describe(Dataset("d", (by_column, present, older)))
    assert (shape.variant, shape.table) == ("column pessoa.NOME", ("public", "pessoa"))
    shape = await session.describe(Dataset("d", (by_column, older)))
    assert (shape.variant, shape.query) == ("default", "SELECT id FROM pessoa")
    with pytest.raises(FinalError, match="no variant fits"):
        await session.describe(Dataset("d", (by_column,)))


async def test_copy_out_passes_the_servers_binary_copy_through(
    session: SourceSession, admin: asyncpg.Connection
):
    rows, data = await copied(session, table("pessoas", PESSOA))
    assert rows == 3
    assert data.startswith(b"PGCOPY\n\xff\r\n\x00")
    assert data == await binary_copy(admin, "SELECT id, nome, peso, humor, atualizado FROM pessoa")


async def test_copy_out_of_an_incremental_window_reads_past_the_watermark(
    session: SourceSession, admin: asyncpg.Connection
):
    spec = Incremental("id", ("id",))
    window = incremental.window(spec, "integer", "1")
    rows, data = await copied(session, table("pessoas", PESSOA), window=window)
    assert rows == 2
    expected = "SELECT id, nome, peso, humor, atualizado FROM pessoa WHERE id > 1"
    assert data == await binary_copy(admin, expected)


async def test_max_cursor_is_iso_text_whatever_the_servers_datestyle(session: SourceSession):
    await session.conn.execute("SET DateStyle = 'SQL, DMY'")
    await session.conn.execute("SET TimeZone = 'America/Sao_Paulo'")
    shape = await session.describe(table("pessoas", PESSOA))
    top = await session.max_cursor(shape, "atualizado", "TRUE")
    assert top == "2024-11-02 20:59:59.5-03"
    capped = await session.max_cursor(shape, "atualizado", "syncd_q.id < 2")
    assert capped == "2024-02-11 06:30:00-03"
    # the municipal server's own style is left as it was, for the dataset queries that follow
    assert await session.conn.fetchval("SHOW DateStyle") == "SQL, DMY"


async def test_a_failed_dataset_rolls_back_to_its_savepoint_and_the_snapshot_goes_on(
    session: SourceSession, admin: asyncpg.Connection
):
    eventos = table("eventos", "public.eventos")
    await copied(session, eventos)  # the snapshot is taken
    await admin.execute("INSERT INTO eventos VALUES (1)")
    try:
        with pytest.raises(asyncpg.UndefinedColumnError):
            async with session.savepoint():
                await session.describe(query("broken", "SELECT no_such_column FROM pessoa"))
        async with session.savepoint():
            assert (await copied(session, eventos))[0] == 0  # same snapshot as before
        assert session.alive
    finally:
        await admin.execute("DELETE FROM eventos")


async def test_params_reach_dataset_queries_as_settings(source_db: str):
    session = await open_session(source_db, params=(("ibge", "110001"),))
    try:
        assert await session.conn.fetchval("SELECT current_setting('syncd.ibge')") == "110001"
    finally:
        await session.close()


async def test_sessions_have_tcp_keepalives(session: SourceSession) -> None:
    """enable_keepalive reaches asyncpg's socket through a private attribute (asyncpg has no
    public one): if a new asyncpg renames it, this fails instead of keepalives going quietly."""
    import socket

    from syncd.engine.connect import KEEPALIVE_IDLE

    transport = getattr(session.conn, "_transport")  # noqa: B009  (the assumption under test)
    sock = transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE


async def test_a_readings_settings_are_its_own(session: SourceSession):
    """A reading that sets something for itself (a float converted on a server before 12 reads
    with extra_float_digits = 3) leaves the next dataset's reading as the server has it."""

    async def setting_seen(dataset: Dataset, **settings: str) -> str:
        shape = await session.describe(dataset)
        shape = replace(shape, settings=tuple(settings.items()))
        _, data = await copied_shape(session, shape)
        size = int.from_bytes(data[21:25], "big")  # header, field count, the one field
        return data[25 : 25 + size].decode()

    default = await session.conn.fetchval("SHOW extra_float_digits")
    seen = query("e", "SELECT pg_catalog.current_setting('extra_float_digits') AS e")
    assert await setting_seen(seen, extra_float_digits="3") == "3"
    assert await setting_seen(seen) == default
    assert await setting_seen(seen, extra_float_digits="2") == "2"
    assert await setting_seen(seen, DateStyle="SQL, DMY") == default
