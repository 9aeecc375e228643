"""How syncd names and types what it creates in the data schema.

A dataset `d` is the table `d`, HASH-partitioned into buckets `d__p00`, `d__p01`, ... with the
indexes `d__rows` (the source column, with each row's hash included: a landing reads a
municipality's hashes from it alone) and, for incremental datasets, `d__key`. `d__source` (the
source column alone) is the index of a table without row hashes, which `upgrade.py` replaces
with `d__rows`. Dataset names
may not contain `__`, so no dataset can ever be named like another's relations, and no source id
appears in any name: two (dataset, source) pairs can never map to one relation.
"""

from __future__ import annotations

import re

from syncd.engine import quoting

SOURCE_SETTING = "syncd.source_id"  # the transaction-local setting the source column defaults to
ROW_HASH = "syncd_row_hash"  # each row's hash (uuid), see engine/rowdiff/pydiffer.py
SRC_FP = "syncd_src_fp"  # delta transfer: each row's source fingerprint (engine/fingerprint.py)
BUCKET_SEPARATOR = "__p"
# the column a type being changed online fills before it takes the column's place
# (engine/retype.py): never a dataset column
RETYPE_PREFIX = "syncd_retype_"

# a table's columns, in order, with their types as SQL (for the dataset tables and the upgrade);
# without a column type change's hidden columns
COLUMNS_SQL = """
SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attname::text NOT LIKE 'syncd!_retype!_%' ESCAPE '!'
ORDER BY a.attnum
"""

# a dataset table's buckets (partitions): their oids and names
BUCKETS_SQL = """
SELECT c.oid::int AS oid, c.relname::text AS name
FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::oid
ORDER BY c.relname
"""

_TYPMOD = re.compile(r"\(\d+(?:\s*,\s*-?\d+)?\)")


def base_type(type_sql: str) -> str:
    """A type as syncd creates it: without its modifier, so any width a source sends fits.

    `character(11)` and `bit(3)` name other types without their modifier (`bpchar`, and `bit`
    would mean bit(1)), so they map to the unbounded forms with the same binary format."""
    stripped = _TYPMOD.sub("", type_sql).strip()
    array = stripped.endswith("[]")
    core = stripped.removesuffix("[]").strip()
    if core.startswith("interval"):
        core = "interval"  # `interval day to second` is a modifier too
    # format_type quotes `"bit"` (a keyword) when it has no modifier
    core = {"character": "bpchar", "bit": "bit varying", '"bit"': "bit varying"}.get(core, core)
    return core + ("[]" if array else "")


def bucket_names(dataset: str, buckets: int) -> list[str]:
    """The partitions of a dataset table: `<dataset>__p00` ... (the dataset part shortened, with
    a hash, so that the name fits 63 bytes)."""
    width = max(2, len(str(buckets - 1)))
    room = quoting.MAX_IDENT_BYTES - len(BUCKET_SEPARATOR) - width
    stem = quoting.shorten(dataset, room)
    return [f"{stem}{BUCKET_SEPARATOR}{n:0{width}d}" for n in range(buckets)]


INDEXES = (
    "source",
    "key",
    "rows",
)  # source column alone (before row hashes), incremental key, rows


def index_name(dataset: str, kind: str) -> str:
    """`<dataset>__<kind>`, the dataset part shortened (with a hash) to fit 63 bytes."""
    assert kind in INDEXES
    return f"{quoting.shorten(dataset, quoting.MAX_IDENT_BYTES - 8)}__{kind}"


def relation_names(dataset: str, buckets: int) -> list[str]:
    """Every relation syncd creates (or created) in the data schema for a dataset."""
    return [dataset, *bucket_names(dataset, buckets), *(index_name(dataset, k) for k in INDEXES)]
