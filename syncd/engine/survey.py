"""The municipal catalog in one round trip: every dataset of a pass described by one query.

A pass asks the municipal server the same things for each dataset: does the table (or the probe's
table and column) exist, and what are its columns and types. Asked one dataset at a time through
asyncpg's extended protocol, that is two round trips a question (Parse/Describe, then
Bind/Execute) and a savepoint's two around it; on a 50 ms link, 300 ms a dataset before a byte of
it moves. Here the questions of every dataset go in one `COPY (SELECT ...) TO STDOUT`: a
simple-protocol query, one round trip, whose one text row is a JSON document (no row decoding, no
type introspection). COPY takes no bind parameters, so the table names (the config's, never the
source's) are spliced as escape-string literals, which read the same whatever the server's
standard_conforming_strings.

Valid on PostgreSQL 9.6 (`to_regclass(text)`, `json_build_object`, `WITH ORDINALITY`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from syncd.engine import quoting

# one row per column of each wanted table, in order; a table that does not exist has none
_COLUMNS = """
SELECT w.i, a.attname::text AS name, a.atttypid::int AS oid,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       t.typtype::text AS typtype, t.typbasetype::int AS base_oid,
       pg_catalog.format_type(t.typbasetype, t.typtypmod) AS base_type,
       c.relkind::text AS relkind, c.relhassubclass AS has_children,
       n.nspname::text AS schema, c.relname::text AS relname, a.attnum
FROM unnest(ARRAY[{refs}]::text[]) WITH ORDINALITY AS w(ref, i)
JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(w.ref)
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE a.attnum > 0 AND NOT a.attisdropped {generated}
"""

# a variant's probe: a table (unqualified: anywhere on the search path), and maybe a column of it
_PROBES = """
SELECT q.i, EXISTS (
    SELECT 1 FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_attribute a
           ON a.attrelid = c.oid AND a.attname = q.col AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relname = q.name
      AND (n.nspname = q.schema OR (q.schema IS NULL AND n.nspname = ANY (current_schemas(false))))
      AND (q.col IS NULL OR a.attname IS NOT NULL)) AS found
FROM (VALUES {probes}) AS q(i, schema, name, col)
"""

_SURVEY = """
SELECT pg_catalog.json_build_object(
    'columns', (SELECT pg_catalog.json_agg(x ORDER BY x.i, x.attnum) FROM ({columns}) AS x),
    'probes', (SELECT pg_catalog.json_agg(p ORDER BY p.i) FROM ({probes}) AS p))
"""

# the types of a query's result columns, by OID, in order (modifiers: asyncpg shows none)
_TYPES = """
SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
    'oid', t.oid::int, 'type', pg_catalog.format_type(t.oid, -1), 'typtype', t.typtype::text,
    'base_oid', t.typbasetype::int,
    'base_type', pg_catalog.format_type(t.typbasetype, t.typtypmod)) ORDER BY q.i)
FROM unnest(ARRAY[{oids}]::oid[]) WITH ORDINALITY AS q(oid, i)
JOIN pg_catalog.pg_type t ON t.oid = q.oid
"""

Probe = tuple[str, str | None]  # (config table name, column or None)


@dataclass(frozen=True, slots=True)
class Survey:
    """What the catalog said, keyed by the config's own names."""

    columns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # table -> rows
    probes: dict[Probe, bool] = field(default_factory=dict)

    def covers(self, tables: Iterable[str], probes: Iterable[Probe]) -> bool:
        return all(t in self.columns for t in tables) and all(p in self.probes for p in probes)


async def survey(
    conn: asyncpg.Connection, tables: Sequence[str], probes: Sequence[Probe], timeout: float
) -> Survey:
    """Describe `tables` and answer `probes` in one round trip."""
    tables, probes = list(dict.fromkeys(tables)), list(dict.fromkeys(probes))
    generated = "AND a.attgenerated = ''" if conn.get_server_version().major >= 12 else ""
    refs = ", ".join(quoting.text_literal(quoting.table_ref(t)) for t in tables) or "NULL"
    columns = _COLUMNS.format(refs=refs, generated=generated)
    values = []
    for i, (table, column) in enumerate(probes, 1):
        schema, _, name = table.lower().rpartition(".")
        values.append(
            f"({i}, {quoting.text_literal(schema) if schema else 'NULL::text'}, {quoting.text_literal(name)}, "
            f"{quoting.text_literal(column.lower()) if column else 'NULL::text'})"
        )
    found = _PROBES.format(probes=", ".join(values)) if values else "SELECT 0 AS i, false AS found"
    document = await copy_json(conn, _SURVEY.format(columns=columns, probes=found), timeout)
    result = Survey({t: [] for t in tables})
    for row in document["columns"] or ():
        result.columns[tables[row["i"] - 1]].append(row)
    for row in document["probes"] or ():
        if row["i"] > 0:
            result.probes[probes[row["i"] - 1]] = bool(row["found"])
    return result


FIRST_USER_OID = (
    16384  # below: built-in types, named and sent alike by every server of a major version
)
# built-in types as servers named them, by (major version, OID): a process asks each once
_BUILT_IN: dict[tuple[int, int], dict[str, Any]] = {}


async def types(
    conn: asyncpg.Connection, oids: Sequence[int], timeout: float
) -> list[dict[str, Any]]:
    """The catalog's name (format_type) and kind of each type OID, in order: one round trip,
    none when every one is a built-in type a server of the same major version named before."""
    major = conn.get_server_version().major
    missing = sorted({oid for oid in oids if (major, oid) not in _BUILT_IN})
    asked: dict[int, dict[str, Any]] = {}
    if missing:
        listed = ", ".join(str(int(oid)) for oid in missing)
        for row in await copy_json(conn, _TYPES.format(oids=listed), timeout) or ():
            asked[row["oid"]] = row
            if row["oid"] < FIRST_USER_OID:
                _BUILT_IN[major, row["oid"]] = row
    return [asked[oid] if oid in asked else _BUILT_IN[major, oid] for oid in oids]


async def copy_json(conn: asyncpg.Connection, query: str, timeout: float) -> Any:
    """The one JSON value `query` returns, read through COPY's text format: one round trip."""
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await conn.copy_from_query(query + "\n", output=sink, timeout=timeout)
    line = b"".join(chunks).decode("utf-8").rstrip("\n")
    return json.loads(_unescape(line)) if line != r"\N" else None


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape(field: str) -> str:
    """A COPY text-format field as the value it stands for (output uses these escapes only)."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), field, flags=re.S)
