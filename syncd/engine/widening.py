"""A mixed fleet: the type a dataset column takes when municipalities send it with different
types, and how a value of one type becomes the other (docs/design/landing.md, "Mixed fleets").

Types here are as the dataset tables have them (`layout.base_type`: no modifiers). Within the
numeric family, integers widen to the widest integer, floats to double precision, and a mix of
the two kinds (or anything with numeric) to numeric, which holds every value of them all. The
text family (varchar, text, bpchar) becomes text. Nothing else is merged: timestamp with
timestamptz is a time zone question, text with integer a query to fix.

Conversion runs where the rows are read: the source casts in its COPY (SELECT ...), in C on its
server, so the stream carries the common type's bytes and nothing is converted per field in
Python. The row hash is taken on those converted bytes, seeded with the table's types, so a
municipality whose values did not change keeps matching its stored hashes pass after pass.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from syncd.engine import quoting
from syncd.engine.errors import FinalError
from syncd.engine.layout import base_type
from syncd.engine.tables import Tables
from syncd.logevents import Event

log = logging.getLogger(__name__)


class Typed(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...


INTEGERS = ("smallint", "integer", "bigint")
FLOATS = ("real", "double precision")
NUMBERS = (*INTEGERS, *FLOATS, "numeric")
TEXTS = ("character varying", "bpchar", "text")

# What the float -> numeric conversion needs from the session: text output that reads back as
# the same float (PostgreSQL 12+: the shortest exact form; 9.6-11: 18 significant digits).
FLOAT_TEXT_SETTINGS = (("extra_float_digits", "3"),)


def common_type(a: str, b: str) -> str | None:
    """The type that holds every value of `a` and of `b` without loss; None when there is none
    syncd merges (text with integer, timestamp with timestamptz, ...)."""
    if a == b:
        return a
    if a in NUMBERS and b in NUMBERS:
        if a in INTEGERS and b in INTEGERS:
            return max(a, b, key=INTEGERS.index)
        if a in FLOATS and b in FLOATS:
            return "double precision"
        return "numeric"
    if a in TEXTS and b in TEXTS:
        return "text"
    return None


def same_bytes(sent: str, target: str) -> bool:
    """Values of `sent` are, in binary COPY, already values of `target` (the text family:
    varchar, text and bpchar send the same bytes; bpchar's trailing blanks are part of them)."""
    return sent == target or (sent in TEXTS and target in TEXTS)


def convert(expr: str, sent: str, target: str) -> str:
    """SQL turning `expr` of type `sent` into `target` exactly (valid on PostgreSQL 9.6+).

    Integers and reals widen with a plain cast. A float becomes the numeric with the fewest
    significant digits (15, 16, 17, else its exact text) that reads back as it: 7 and 7.5 become
    7 and 7.5 whichever server sent them, and every float round-trips. (A plain float8::numeric
    keeps only 15 digits and loses the rest.) +-Infinity has no numeric before PostgreSQL 14:
    the cast fails on such a source, and such a value fails the dataset there."""
    if same_bytes(sent, target):
        if sent == "bpchar" and target != "bpchar":
            # bpchar::text strips the trailing blanks; the source's bytes keep them
            return f"pg_catalog.textin(pg_catalog.bpcharout({expr}))"
        return expr
    if target == "numeric" and sent in FLOATS:
        return _float_to_numeric(expr, sent)
    return f"{expr}::{target}"


def _float_to_numeric(expr: str, sent: str) -> str:
    """The numeric with the fewest significant digits that reads back as the float: the plain
    cast's (15 digits for double precision, 6 for real), else the exact text (18 or 9 digits
    with extra_float_digits=3 before PostgreSQL 12, the shortest exact form from 12 on)
    rounded to 16, then 17 digits (7, then 8), else that exact text itself."""
    exact = f"{expr}::text::numeric"  # needs FLOAT_TEXT_SETTINGS
    double = sent == "double precision"
    whens = [f"WHEN {expr}::numeric::{sent} = {expr} THEN {expr}::numeric"]
    for digits in (16, 17) if double else (7, 8):
        rounded = (
            f"pg_catalog.round({exact}, "
            f"{digits - 1} - pg_catalog.floor(pg_catalog.log(pg_catalog.abs({exact})))::int)"
        )
        whens.append(f"WHEN {rounded}::{sent} = {expr} THEN {rounded}")
    # near the type's largest value a rounded form may be no float at all: the exact text
    top = "1e308" if double else "1e38"
    return (
        f"CASE WHEN pg_catalog.abs({expr}) >= {top} THEN {exact} {' '.join(whens)} ELSE {exact} END"
    )


def needs_float_text(sent: str, target: str) -> bool:
    return target == "numeric" and sent in FLOATS


def lands_meanwhile(sent: str, table: str) -> bool:
    """While the table cannot be widened yet (readers hold it): can rows of `sent` land in its
    current type `table`, exactly or not at all? Integers narrow with a cast (`convert`) that
    fails on a value out of range, never landing a wrong number; the text family needs
    nothing. Not numeric into double precision (no exact way): that dataset waits."""
    return same_bytes(sent, table) or (sent in INTEGERS and table in (*INTEGERS, "numeric"))


def conflict(column: str, sent: str, table: str, where: str) -> str:
    """The failure for types syncd does not merge: both named, and a cast to make them one."""
    if {sent, table} == {"timestamp without time zone", "timestamp with time zone"}:
        hint = (
            f"a time zone question syncd does not answer: convert in the dataset's query, e.g. "
            f"{quoting.ident(column)} AT TIME ZONE 'America/Sao_Paulo'"
        )
    else:
        hint = (
            f"no common type; cast it in the dataset's query so every municipality sends one, "
            f"e.g. {quoting.ident(column)}::{table}"
        )
    return f"column {column!r} is {sent} on the source but {table} in {where}: {hint}"


@dataclass(frozen=True, slots=True)
class Change:
    """A dataset column the table must change to take one more municipality's values."""

    dataset: str
    column: str
    table: str  # its type in the table now
    sent: str  # what this source sends
    to: str  # the common type

    def alter(self) -> str:
        """ALTER TABLE's clause (the stored values converted as a source would send them)."""
        name = quoting.ident(self.column)
        using = convert(name, self.table, self.to)
        clause = f"ALTER COLUMN {name} TYPE {self.to}"
        return clause if using == name else f"{clause} USING {using}"


def pairs(columns: Sequence[Typed], table: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(name, table type, sent type) of each source column the table has, as syncd types them."""
    return [
        (c.name, base_type(table[c.name]), base_type(c.type)) for c in columns if c.name in table
    ]


def fits(columns: Sequence[tuple[str, str, str]], *, retry_ddl: bool) -> bool:
    """Can these (name, table type, sent type) land with no DDL now? Not with a conflict (look
    again: maybe someone fixed it, else say so), nor with a column to widen once it is time to
    try (again)."""
    for _, table, sent in columns:
        common = common_type(table, sent)
        if common is None or (common != table and retry_ddl):
            return False
    return True


def alter(tables: Tables, changes: Sequence[Change]) -> str:
    """The ALTER TABLE changing these columns of one dataset table in one rewrite."""
    return (
        # the float -> numeric conversion of the stored values reads their exact text
        f"SET LOCAL extra_float_digits = 3;ALTER TABLE {tables.parent(changes[0].dataset)} "
        + ", ".join(change.alter() for change in changes)
    )


def changes(columns: Sequence[tuple[str, str, str]], tables: Tables, dataset: str) -> list[Change]:
    """The columns of the dataset table to change for a source's (name, table type, sent
    type); FinalError naming every conflict (no common type) at once."""
    found, conflicts = [], []
    for name, table, sent in columns:
        common = common_type(table, sent)
        if common is None:
            conflicts.append(conflict(name, sent, table, f"{tables.schema}.{dataset}"))
        elif common != table:
            found.append(Change(dataset, name, table, sent, common))
    if conflicts:
        raise FinalError("; ".join(conflicts))
    return found


def conversions(
    columns: Sequence[tuple[str, str, str]], where: str, why: str, retry: float
) -> tuple[tuple[str, str, str], ...]:
    """What the source converts in its COPY, (name, sent type, table type) each, for its
    (name, table type, sent type) columns: into the common type once the table has it, into
    the table's current type while the change is not made yet (`why`: readers keep it from
    being made, or it is made online; `lands_meanwhile`). A column with no exact way into the
    current type fails the dataset until the change is made (FinalError, saying when it is
    tried again)."""
    found = []
    for name, table, sent in columns:
        if table == sent:
            continue
        common = common_type(table, sent)
        if common != table and not lands_meanwhile(sent, table):
            raise FinalError(
                f"column {name!r} is {sent} on this source, which {where}'s {table} cannot "
                f"hold exactly; {why}, so its change to {common} waits (tried again within "
                f"{retry:g}s) and this municipality's rows land then"
            )
        if not same_bytes(sent, table):
            found.append((name, sent, table))
    return tuple(found)


def log_changes(dataset: str, source_id: str, changes: Sequence[Change], *, done: bool) -> None:
    """Each change with both types and the municipality that caused it (made, or deferred)."""
    for change in changes:
        extra = {
            "dataset": dataset,
            "column": change.column,
            "source": source_id,
            "from_type": change.table,
            "to_type": change.to,
            "source_type": change.sent,
        }
        if done:
            log.warning(
                "dataset %s: column %s changed from %s to %s: source %s sends %s",
                dataset,
                change.column,
                change.table,
                change.to,
                source_id,
                change.sent,
                extra={"event": Event.COLUMN_TYPE_CHANGED, **extra},
            )
        else:
            log.warning(
                "dataset %s: readers hold the table, so column %s stays %s for now (source "
                "%s sends %s, the common type is %s); rows that fit land meanwhile",
                dataset,
                change.column,
                change.table,
                source_id,
                change.sent,
                change.to,
                extra={"event": Event.COLUMN_TYPE_DEFERRED, **extra},
            )
