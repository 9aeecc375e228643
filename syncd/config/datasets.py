"""Datasets: what to read from each source (a table, a query, or variants chosen by probing
the source) and how (a snapshot, or incremental past a watermark)."""

from __future__ import annotations

from pathlib import Path

from syncd.config.model import (
    DEFAULT_FULL_REFRESH_EVERY,
    Dataset,
    DatasetMode,
    Incremental,
    Variant,
)
from syncd.config.querytext import clean
from syncd.config.section import Section
from syncd.config.values import COLUMN_NAME, COLUMN_PATH, LOWER_IDENT, TABLE_NAME


def build_datasets(root: Section, base: Path) -> list[Dataset]:
    if not root.has("datasets"):
        root.problem("datasets", "is required")
    result: list[Dataset] = []
    seen: set[str] = set()
    for sec in root.each("datasets"):
        dataset = _dataset(sec, base)
        if dataset is None:
            continue
        if dataset.name in seen:
            sec.problem("name", f"duplicate dataset name {dataset.name!r}")
            continue
        seen.add(dataset.name)
        result.append(dataset)
    return result


def _dataset(sec: Section, base: Path) -> Dataset | None:
    name = sec.string(
        "name",
        required=True,
        pattern=LOWER_IDENT,
        what="a lowercase identifier (letters, digits, _; up to 63)",
    )
    if name is not None and "__" in name:
        # `__` is how syncd names a dataset table's own partitions (`<dataset>__p07`): a dataset
        # named like that could take another's partition for its own
        sec.problem("name", f"{name!r} contains '__', which syncd keeps for its own relations")
    variants: list[Variant] = []
    if sec.has("variants"):
        for key in ("table", "query", "query_file"):
            if sec.has(key):
                sec.problem(key, "give either variants or one of table, query, query_file")
        for vsec in sec.each("variants"):
            variant = _variant(vsec, base, with_probe=True)
            if variant is not None:
                variants.append(variant)
        if not variants and isinstance(sec.raw("variants"), list):
            sec.problem("variants", "needs at least one variant")
        defaults = [v for v in variants if v.probe == "default"]
        if len(defaults) > 1:
            sec.problem("variants", "only one variant may go without `when`")
    else:
        variant = _variant(sec, base, with_probe=False)
        if variant is not None:
            variants.append(variant)
    incremental = _incremental(sec)
    if incremental is not None:
        every = incremental.full_refresh_every
    elif sec.has("full_refresh_every"):
        every = sec.duration("full_refresh_every", minimum=1.0)
    else:
        every = DEFAULT_FULL_REFRESH_EVERY
    delta = sec.boolean("delta")
    if delta and incremental is not None:
        sec.problem("delta", "only for snapshot datasets (an incremental one moves its window)")
    sec.check_unknown()
    if name is None or not variants:
        return None
    return Dataset(name, tuple(variants), incremental, every, delta)


def _variant(sec: Section, base: Path, *, with_probe: bool) -> Variant | None:
    table = sec.string(
        "table", pattern=TABLE_NAME, what="a table name like public.tb_fat_cidadao_pec"
    )
    query = sec.string("query")
    query_file = sec.path_value("query_file", base)
    given = [k for k in ("table", "query", "query_file") if sec.has(k)]
    if len(given) > 1:
        sec.problem(
            given[1], f"give only one of table, query, query_file (found {', '.join(given)})"
        )
    elif not given:
        sec.problem(None, "needs one of table, query, query_file")
    if query_file is not None and len(given) == 1:
        query = _read_query_file(sec, query_file)
    if query is not None:
        query = clean_query(query)
        if not query:
            sec.problem("query" if sec.has("query") else "query_file", "is empty")
    when_column = when_table = None
    if with_probe and sec.raw("when") is not None:
        wsec = sec.sub("when")
        if wsec.is_mapping("column: schema.table.column, or table: schema.table"):
            when_column = wsec.string(
                "column",
                pattern=COLUMN_PATH,
                what="schema.table.column (like public.tb_fat_cidadao_pec.nu_celular)",
            )
            when_table = wsec.string("table", pattern=TABLE_NAME, what="a table name")
            if (when_column is None) == (when_table is None):
                wsec.problem(None, "needs exactly one of column, table")
            wsec.check_unknown()
    if with_probe:
        sec.check_unknown()
    if table is None and not query:
        return None
    return Variant(table, query, when_column, when_table)


def _incremental(sec: Section) -> Incremental | None:
    mode = sec.string("mode", DatasetMode.SNAPSHOT)
    if mode not in tuple(DatasetMode):
        sec.problem("mode", f"{mode!r} is not snapshot or incremental")
        return None
    if mode == DatasetMode.SNAPSHOT:
        for name in ("cursor", "key", "lookback"):
            if sec.has(name):
                sec.problem(name, "only for mode: incremental")
        return None
    cursor = sec.string("cursor", required=True, pattern=COLUMN_NAME, what="a column name")
    key = _row_key(sec)
    lookback: int | None = None
    lookback_seconds: float | None = None
    raw = sec.raw("lookback")
    if isinstance(raw, bool) or (raw is not None and not isinstance(raw, (int, str))):
        sec.problem("lookback", "must be a whole number (cursor units) or a duration like 3d")
    elif isinstance(raw, int):
        if raw < 0:
            sec.problem("lookback", "must not be negative")
        lookback = raw
    elif raw is not None:
        lookback_seconds = sec.duration("lookback")
    full_refresh = None
    if sec.has("full_refresh_every"):
        full_refresh = sec.duration("full_refresh_every", minimum=1.0)
    if cursor is None or not key:
        return None
    return Incremental(cursor, key, lookback, lookback_seconds, full_refresh)


def _row_key(sec: Section) -> tuple[str, ...]:
    """The row identity: a column or a list of columns; () when missing or wrong (a problem)."""
    raw = sec.raw("key")
    if raw is None:
        sec.problem("key", "is required (the row identity, one column or a list)")
        return ()
    given = raw if isinstance(raw, list) else [raw]
    columns = tuple(n for n in given if isinstance(n, str) and COLUMN_NAME.fullmatch(n))
    if not given or len(columns) != len(given):
        sec.problem("key", "must be a column name or a list of column names")
        return ()
    return columns


def _read_query_file(sec: Section, path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        sec.problem("query_file", f"{path} not found")
    except (OSError, UnicodeDecodeError) as exc:
        sec.problem("query_file", f"{path} cannot be read ({exc})")
    return None


def clean_query(text: str) -> str:
    """Without the BOM, trailing `;`, comments and blank space COPY (...) would choke on."""
    return clean(text)
