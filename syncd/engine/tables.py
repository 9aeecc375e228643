"""The dataset tables syncd lands into, as it believes them to be, and where one dataset of one
source lands (`Target`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from syncd.engine import quoting, rowdiff
from syncd.engine.layout import SOURCE_SETTING
from syncd.ledger import Mode


@dataclass(frozen=True, slots=True)
class Target:
    """Where one dataset of one source lands."""

    dataset: str
    source_id: str
    columns: tuple[str, ...]  # what the source sends, in order
    types: tuple[str, ...] = ()  # their types, as the dataset table has them
    mode: Mode = Mode.SNAPSHOT
    key: tuple[str, ...] = ()  # incremental datasets: the row identity
    cursor: str | None = None
    watermark: str | None = None  # incremental datasets: stored with the rows
    missing: tuple[str, ...] = ()  # source columns the table could not take yet (readers held it)
    # columns the source sends in another type than the table's, converted in its COPY:
    # (name, sent type, table type) each (engine/widening.py)
    conversions: tuple[tuple[str, str, str], ...] = ()

    @property
    def seed(self) -> int:
        """The row hashes' seed: a row whose shape changed never matches its old hash."""
        return rowdiff.shape_seed(list(zip(self.columns, self.types, strict=True)))


@dataclass(slots=True)
class Table:
    """What we believe about one dataset table (refreshed after any error)."""

    columns: dict[str, str]
    buckets: list[str] = field(default_factory=list)  # partition names, by remainder
    keys: set[tuple[str, ...]] = field(default_factory=set)
    ddl_blocked_until: float = 0.0


@dataclass(slots=True)
class Tables:
    """What syncd believes about every dataset table of `schema` (refreshed after any error)."""

    schema: str
    source_column: str
    known: dict[str, Table] = field(default_factory=dict)

    def parent(self, dataset: str) -> str:
        """The dataset table's qualified name (its buckets are partitions of it)."""
        return quoting.qualified(self.schema, dataset)

    def mine(self) -> str:
        """The rows of the municipality this transaction lands (its id is the transaction's
        SOURCE_SETTING, which the source column defaults to)."""
        setting = quoting.literal(SOURCE_SETTING)
        return f"{quoting.ident(self.source_column)} = pg_catalog.current_setting({setting})"

    def get(self, dataset: str) -> Table | None:
        return self.known.get(dataset)

    def forget(self, dataset: str) -> None:
        """Drop what we believe about a dataset table (after an error that may mean it changed)."""
        self.known.pop(dataset, None)
