"""Row fingerprints on the municipal server: the SQL text of each reconciliation round.

A row's fingerprint is 64 bits of a hash of its text form, `ROW(c1, c2, ...)::text`, computed
by the source in plain SQL valid from PostgreSQL 9.6 to 18, creating nothing there:

- `md5`: the first 16 hex digits of md5(row text), as a bigint (pg_comparator's form);
- `hashtext`: where md5() is refused (FIPS builds of 14+, or EXECUTE revoked), two hashtext()
  of the row text (the second salted) side by side in 64 bits.

The text form depends on session settings; `PINNED` fixes each one for the rounds (inside a
savepoint rolled back after them, so the dataset queries that follow see the server's own
settings again), and the context a fingerprint was made under (`CONTEXT_SETTINGS`, the server
major version, the columns, the function) is stored beside the rows it describes: any change
means "compare nothing, stream everything" (engine/delta.py).

Values in the text are bind parameters, except in COPY (which cannot take any): there only
integers syncd computed itself are written, as literals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from syncd.engine import quoting
from syncd.engine.incremental import ALIAS
from syncd.engine.layout import SRC_FP


class Function(StrEnum):
    MD5 = "md5"
    HASHTEXT = "hashtext"


# Every setting the text form of a row depends on, pinned for the rounds (set_config, local).
PINNED: tuple[tuple[str, str], ...] = (
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),  # exact floats (17 digits before 12, shortest-exact from 12)
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
)
# What is read back into the context: the pinned values as the server took them, and what
# cannot be pinned (the major version: 12 changed float output; the encoding of text).
CONTEXT_SETTINGS = (
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    *(name for name, _ in PINNED),
)

# Per group: a 64-bit digest of (count, sum of fingerprints), the same SQL on both sides. The
# sum keeps duplicates visible (an XOR would cancel a row held twice); the modulus, a prime
# below 2^63, keeps it a bigint.
DIGEST_PRIME = 9223372036854775783
GROUP_DIGEST = f"((sum({{fp}}) + count(*) * 7919) % {DIGEST_PRIME})::bigint"


def pin_sql() -> str:
    """One statement: every PINNED setting, local to the transaction (and its savepoint); it
    answers no row (every byte of an answer crosses the municipal link)."""
    calls = " || ".join(
        f"pg_catalog.set_config({quoting.literal(name)}, {quoting.literal(value)}, true)"
        for name, value in PINNED
    )
    return f"SELECT 1 WHERE ({calls}) IS NULL"


SEPARATOR = "\x1f"  # chr(31): between the settings, in the one text column that holds them


def settings_sql() -> str:
    """The context's settings, as one text column `c` (one column: fewer bytes on the link)."""
    values = ", ".join(
        f"pg_catalog.current_setting({quoting.literal(s)})" for s in CONTEXT_SETTINGS
    )
    return f"pg_catalog.concat_ws(pg_catalog.chr(31), {values}) AS c"


def parse_settings(text: str) -> dict[str, str]:
    return dict(zip(CONTEXT_SETTINGS, text.split(SEPARATOR), strict=True))


def expression(function: Function, columns: Sequence[str]) -> str:
    """The fingerprint of a row of `ALIAS` (its `columns`, in order), as a bigint."""
    row = "ROW(" + ", ".join(f"{ALIAS}.{quoting.ident(c)}" for c in columns) + ")::text"
    if function == Function.MD5:
        return f"('x' || pg_catalog.left(pg_catalog.md5({row}), 16))::bit(64)::bigint"
    return (
        f"((pg_catalog.hashtext({row})::bigint << 32) | "
        f"(pg_catalog.hashtext({row} || '#')::bigint & 4294967295))"
    )


def relation(table: tuple[str, str] | None, select: str) -> str:
    """What the rounds read from: the table itself (its rows have a ctid), or the query."""
    if table is not None:
        return f"{quoting.qualified(*table)} AS {ALIAS}"
    return f"({select}\n) AS {ALIAS}"


def totals_sql(function: Function, columns: Sequence[str], source: str) -> str:
    """Round 1: the settings of the context, the row count and the sum of fingerprints (as
    text: a numeric, exact), in one scan."""
    return (
        f"SELECT {settings_sql()}, t.n, t.s FROM (SELECT count(*)::bigint AS n, "  # noqa: S608
        f"coalesce(sum(f.fp), 0)::text AS s FROM (SELECT {expression(function, columns)} AS fp "
        f"FROM {source}) AS f) AS t"
    )


def groups_sql(function: Function, columns: Sequence[str], source: str, with_ctid: bool) -> str:
    """Round 2, one scan and one aggregation (each fingerprint computed once: OFFSET 0 keeps
    the planner from copying its expression into the grouping and the aggregates): $1 the
    destination's digests (8 bytes per group, in group order), $2 the group mask (groups - 1).
    Returns one bytea: per group whose digest differs, its number (int4), its row count at the
    source (int4), and per row its fingerprint (int8) and, when the rows are a table's, its
    ctid (6 bytes: block int4, offset int2)."""
    at = f"{ALIAS}.ctid" if with_ctid else "NULL::tid"
    digest = GROUP_DIGEST.format(fp="f.fp")
    return f"""
WITH s AS (
  SELECT (f.fp & $2::bigint)::int AS g, {digest} AS h, count(*)::int AS n,
         pg_catalog.string_agg(pg_catalog.int8send(f.fp)
                               || coalesce(pg_catalog.tidsend(f.at), ''::bytea), ''::bytea)
             AS items
  FROM (SELECT {at} AS at, {expression(function, columns)} AS fp FROM {source} OFFSET 0) AS f
  GROUP BY 1),
d AS (SELECT g, ('x' || pg_catalog.encode(pg_catalog.substring($1::bytea, g * 8 + 1, 8),
                 'hex'))::bit(64)::bigint AS h
      FROM pg_catalog.generate_series(0, ($2::bigint)::int) AS g)
SELECT pg_catalog.string_agg(pg_catalog.int4send(d.g) || pg_catalog.int4send(coalesce(s.n, 0))
                             || coalesce(s.items, ''::bytea), ''::bytea ORDER BY d.g)
FROM d LEFT JOIN s ON s.g = d.g
WHERE coalesce(s.h, 0) <> d.h
"""  # noqa: S608


def rows_by_ctid_sql(
    function: Function,
    columns: Sequence[str],
    table: tuple[str, str],
    ctids: Iterable[tuple[int, int]],
) -> str:
    """Round 3 of a table: the rows at these positions (a TID scan), each with its fingerprint.
    COPY takes no parameters: the positions are integers syncd decoded itself (str of int)."""
    listed = ",".join(f'"({int(b)},{int(o)})"' for b, o in ctids)
    names = ", ".join(f"{ALIAS}.{quoting.ident(c)}" for c in columns)
    return (
        f"SELECT {names}, {expression(function, columns)} AS {SRC_FP} "  # noqa: S608
        f"FROM {quoting.qualified(*table)} AS {ALIAS} WHERE {ALIAS}.ctid = ANY ('{{{listed}}}'::tid[])"
    )


def rows_by_fp_sql(
    function: Function, columns: Sequence[str], source: str, fps: Iterable[int]
) -> str:
    """Round 3 of a query (no ctid): the rows whose fingerprint is one of `fps` (a hash join
    with the list, not `= ANY`, which is a linear search per row). The fingerprints are
    integers syncd decoded itself, written as literals (str of int): COPY takes no parameters."""
    listed = ",".join(str(int(f)) for f in fps)
    names = ", ".join(quoting.ident(c) for c in columns)
    return (
        f"SELECT {names}, {SRC_FP} FROM (SELECT {ALIAS}.*, "  # noqa: S608
        f"{expression(function, columns)} AS {SRC_FP} FROM {source}) AS x "
        f"WHERE {SRC_FP} IN (SELECT pg_catalog.unnest('{{{listed}}}'::bigint[]))"
    )


def full_sql(function: Function, columns: Sequence[str], source: str) -> str:
    """The full stream: every row with its fingerprint (so the destination stores them)."""
    names = ", ".join(f"{ALIAS}.{quoting.ident(c)}" for c in columns)
    return f"SELECT {names}, {expression(function, columns)} AS {SRC_FP} FROM {source}"  # noqa: S608
