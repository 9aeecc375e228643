"""The shape of a dataset on one source: its columns, and how to COPY it out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from syncd.engine import quoting, widening
from syncd.engine.errors import FinalError
from syncd.engine.incremental import ALIAS


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
    variant: str = "default"  # which variant's probe chose this reading
    # session settings the reading needs (transaction-local, set before its COPY)
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def select(self) -> str:
        """A SELECT of every column, to wrap (incremental windows, watermarks)."""
        if self.table is None:
            assert self.query is not None
            return self.query
        columns = ", ".join(quoting.ident(c.name) for c in self.columns)
        return f"SELECT {columns} FROM {quoting.qualified(*self.table)}"  # noqa: S608

    def only(self, names: Sequence[str]) -> Shape:
        """The same reading with only these columns (those the dataset table can take now)."""
        keep = tuple(c for c in self.columns if c.name in set(names))
        if self.table is not None:
            return replace(self, columns=keep)
        columns = ", ".join(f"{ALIAS}.{quoting.ident(c.name)}" for c in keep)
        return replace(
            self,
            columns=keep,
            query=f"SELECT {columns} FROM ({self.select}\n) AS {ALIAS}",  # noqa: S608
        )

    def converted(self, conversions: Sequence[tuple[str, str, str]]) -> Shape:
        """The same reading with these columns converted on the source, (name, sent type,
        table type) each: COPY (SELECT ..., col converted AS col, ...) sends the table's type
        (engine/widening.py), so the row hash is taken on the converted bytes."""
        if not conversions:
            return self
        by_name = {name: (sent, to) for name, sent, to in conversions}
        columns, exprs = [], []
        for c in self.columns:
            ref = f"{ALIAS}.{quoting.ident(c.name)}"
            if c.name in by_name:
                sent, to = by_name[c.name]
                exprs.append(f"{widening.convert(ref, sent, to)} AS {quoting.ident(c.name)}")
                columns.append(Column(c.name, to))
            else:
                exprs.append(ref)
                columns.append(c)
        floats = any(widening.needs_float_text(sent, to) for sent, to in by_name.values())
        return replace(
            self,
            columns=tuple(columns),
            table=None,
            query=f"SELECT {', '.join(exprs)} FROM ({self.select}\n) AS {ALIAS}",  # noqa: S608
            settings=widening.FLOAT_TEXT_SETTINGS if floats else self.settings,
        )

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise FinalError(f"column {name!r} is not in the dataset on this source")
