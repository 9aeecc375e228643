"""The municipal catalog in one round trip, on a real server: every table of a pass described
and every probe answered by one COPY, with awkward names, a missing table, and the built-in
types of a query named once per process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from syncd.engine import quoting, survey
from syncd.lab import embedded

from tests.support.helpers import scratch_database

DBNAME = "unit_survey"
SCHEMA_SQL = r"""
CREATE SCHEMA "o'dd\s";
CREATE TABLE "o'dd\s".pessoa (id integer, nome varchar(40), dropped text, peso numeric(5,2));
ALTER TABLE "o'dd\s".pessoa DROP COLUMN dropped;
CREATE TABLE public.evento (id bigint, quando timestamptz);
CREATE VIEW public.recente AS SELECT id FROM public.evento;
CREATE TABLE public.pai (id integer);
CREATE TABLE public.filho () INHERITS (public.pai);
"""


@pytest.fixture(scope="module")
async def conn(source_cluster: embedded.Cluster) -> AsyncIterator[asyncpg.Connection]:
    async with scratch_database(source_cluster, DBNAME, SCHEMA_SQL) as dsn:
        connection = await asyncpg.connect(dsn)
        try:
            yield connection
        finally:
            await connection.close()


async def test_every_table_and_probe_in_one_answer(conn):
    found = await survey.survey(
        conn,
        ["o'dd\\s.pessoa", "evento", "public.recente", "pai", "public.nao_ha"],
        [("evento", "quando"), ("evento", "nao_ha"), ("public.nao_ha", None), ("pai", None)],
        timeout=30,
    )
    pessoa = found.columns["o'dd\\s.pessoa"]
    assert [(c["name"], c["type"]) for c in pessoa] == [
        ("id", "integer"),
        ("nome", "character varying(40)"),
        ("peso", "numeric(5,2)"),
    ]  # in order, the dropped column gone
    assert pessoa[0]["schema"] == "o'dd\\s" and pessoa[0]["relkind"] == "r"
    assert [c["type"] for c in found.columns["evento"]] == ["bigint", "timestamp with time zone"]
    assert found.columns["public.recente"][0]["relkind"] == "v"
    assert found.columns["pai"][0]["has_children"] is True
    assert found.columns["public.nao_ha"] == []  # asked, not there
    assert found.probes == {
        ("evento", "quando"): True,
        ("evento", "nao_ha"): False,
        ("public.nao_ha", None): False,
        ("pai", None): True,
    }
    assert found.covers(["evento"], [("pai", None)])
    assert not found.covers(["outra"], [])


async def test_nothing_asked_is_still_one_valid_query(conn):
    found = await survey.survey(conn, [], [], timeout=30)
    assert found.columns == {} and found.probes == {}


async def test_built_in_types_are_named_once_per_process(source_cluster):
    oids = [20, 1184, 1043]  # bigint, timestamptz, varchar
    conn = await asyncpg.connect(source_cluster.dsn())
    try:
        first = await survey.types(conn, oids, timeout=30)
    finally:
        await conn.close()
    assert [t["type"] for t in first] == ["bigint", "timestamp with time zone", "character varying"]
    # a closed connection cannot be asked: this answer is the process's memory
    again = await survey.types(conn, list(reversed(oids)), timeout=30)
    assert again == list(reversed(first))


def test_copy_text_escapes_read_back():
    assert survey._unescape(r"a\\b\tc\nd") == "a\\b\tc\nd"
    assert quoting.text_literal("o'dd\\s") == "E'o''dd\\\\s'"
    with pytest.raises(ValueError):
        quoting.text_literal("nul\x00")
