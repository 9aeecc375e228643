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
    "server_major",  # server_version_num / 10000: a minor release changes no output
    "server_encoding",
    "integer_datetimes",
    *(name for name, _ in PINNED),
)

# Per group: a 64-bit digest of (count, sum of fingerprints), the same SQL on both sides. The
# sum keeps duplicates visible (an XOR would cancel a row held twice); the modulus, a prime
# below 2^63, keeps it a bigint.
DIGEST_PRIME = 9223372036854775783
GROUP_DIGEST = f"((sum({{fp}}) + count(*) * 7919) % {DIGEST_PRIME})::bigint"


# What a round sets, and so what is put back after the rounds: the pins, and the planner's
# choice for round 3 (a TID scan, always).
RESTORED = (*(name for name, _ in PINNED), "enable_seqscan")
SEPARATOR = "\x1f"  # chr(31): between the settings, in the one text column that holds them


def _setting(name: str) -> str:
    if name == "server_major":
        return "(pg_catalog.current_setting('server_version_num')::int / 10000)::text"
    return f"pg_catalog.current_setting({quoting.literal(name)})"


def _joined(names: Sequence[str]) -> str:
    values = ", ".join(_setting(s) for s in names)
    return f"pg_catalog.concat_ws(pg_catalog.chr(31), {values})"


def joined(settings: dict[str, str]) -> str:
    """The context's settings as `settings_sql` answers them (for round 1 to compare)."""
    return SEPARATOR.join(settings.get(name, "") for name in CONTEXT_SETTINGS)


def _pins() -> str:
    return " || ".join(
        f"pg_catalog.set_config({quoting.literal(name)}, {quoting.literal(value)}, true)"
        for name, value in PINNED
    )


def restore_sql(old: str) -> str:
    """An expression putting back the settings `old` (the RESTORED ones, joined by
    SEPARATOR, a column or a parameter) held before the rounds."""
    return " || ".join(
        f"pg_catalog.set_config({quoting.literal(name)}, "
        f"pg_catalog.split_part({old}, pg_catalog.chr(31), {i}), true)"
        for i, name in enumerate(RESTORED, start=1)
    )


def pinned(inner: str, select: str = "t.*") -> str:
    """`inner` (a subquery of alias `t` that reads `pin.p`, so that it runs after the pins)
    with every PINNED setting set first and the settings held before them as `old`, in one
    statement: the rounds cost no round trip of their own for pinning. Order is by dependency:
    `pin` reads `o`, `t` reads `pin`, each a subquery the planner keeps (OFFSET 0)."""
    return (
        f"SELECT o.old, {select} FROM (SELECT {_joined(RESTORED)} AS old OFFSET 0) AS o "  # noqa: S608
        f"CROSS JOIN LATERAL (SELECT {_pins()} AS p, o.old OFFSET 0) AS pin "
        f"CROSS JOIN LATERAL ({inner}) AS t"
    )


def settings_sql() -> str:
    """The context's settings, as one text column `c` (one column: fewer bytes on the link)."""
    return f"{_joined(CONTEXT_SETTINGS)} AS c"


def parse_settings(text: str) -> dict[str, str]:
    return dict(zip(CONTEXT_SETTINGS, text.split(SEPARATOR), strict=True))


def probe_sql(function: Function, pin: bool) -> str:
    """No scan: the function called once (an error if the server refuses it) and the settings
    of the context, pinning them first unless they are already."""
    call = "pg_catalog.md5('')" if function == Function.MD5 else "pg_catalog.hashtext('')"
    if not pin:
        return f"SELECT NULL::text AS old, {call} AS f, {settings_sql()}"
    return pinned(f"SELECT {call} AS f, {settings_sql()} WHERE pin.p IS NOT NULL")


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


def totals_sql(
    function: Function,
    columns: Sequence[str],
    source: str,
    stored_rows: int,
    stored_sum: str,
    stored_settings: str,
) -> str:
    """Round 1, one scan, one round trip: pins the settings, then answers the settings of the
        context (`c`), the row count (`n`) and the sum of fingerprints (`s`, a numeric as text:
        exact). The row count, sum and settings stored are spliced as literals (syncd's own numbers,
    the settings text a server reported, quoted): the round is read through COPY, which takes no
    parameters, because a prepared statement would cost a second round trip. When all three are the same
        (nothing changed), the statement puts the settings back itself (`restored`), so an
        unchanged table costs this one statement and nothing after it."""
    inner = (
        f"SELECT count(*)::bigint AS n, coalesce(sum(f.fp), 0)::text AS s, {settings_sql()} "  # noqa: S608
        f"FROM (SELECT {expression(function, columns)} AS fp FROM {source} "
        "WHERE pin.p IS NOT NULL OFFSET 0) AS f"
    )
    rows, total = int(stored_rows), quoting.text_literal(stored_sum)
    same = f"t.n = {rows}::bigint AND t.s = {total}::text AND t.c = {quoting.text_literal(stored_settings)}::text"
    return pinned(
        inner, f"t.n, t.s, t.c, CASE WHEN {same} THEN {restore_sql('o.old')} END AS restored"
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
    # round 3 by position is a TID scan, always: the planner may cost a long list of positions
    # above a sequential scan, which would then search the list for every row. Set as this
    # statement ends (after it was planned): no round trip of its own; put back with the pins
    tid_scan = ", pg_catalog.set_config('enable_seqscan', 'off', true)" if with_ctid else ""
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
                             || coalesce(s.items, ''::bytea), ''::bytea ORDER BY d.g){tid_scan}
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
