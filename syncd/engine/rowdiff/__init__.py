"""The row differ: which of a source's binary COPY tuples the destination does not hold yet, and
which of the destination's rows the source no longer has.

Every landed row carries `syncd_row_hash`: the 128-bit xxh3 of its binary COPY tuple as the
source sent it (the int16 field count and every field, byte for byte), seeded with the dataset's
shape (column names and types, in order), so a row whose shape changed never matches. A pass:

1. `add_stored` the municipality's stored hashes (a binary COPY of that one column), `seal`;
2. `feed` the source's COPY stream: a tuple whose hash is held (once) is consumed and dropped; any
   other comes out as a destination tuple with its hash as one more field. What is fed before
   `flush()` is kept (`pending` bytes) and framed by it, so the source stream can start while
   the stored hashes still arrive;
3. `gone()`: the held hashes no source tuple consumed, to delete; when the stored hashes came
   located (a binary COPY of (ctid, hash)), `gone_places()` says where those rows are, so the
   landing deletes them by ctid instead of searching the municipality's rows for their hashes.

Rows are a multiset: a hash the destination holds more than once (a table without a key may hold
one row twice) is never matched: `duplicates()` lists them, the landing deletes them before the
stream, and every copy the source has comes in again. NULL hashes (rows an older syncd landed)
are counted (`unhashed`) and never match.

`syncd verify` uses `add_rows` instead: the destination's rows themselves, hashed as a source
tuple is, so a row changed by hand is seen whatever its stored hash says; with `emit=False`
nothing comes out and every held copy is matched one by one (an exact multiset comparison:
`rows_new` source rows the destination lacks, `existing - rows_matched` it has in excess).

The framing walk and the hashing run in C, compiled by the package's build; `PyDiffer` is the
same thing in pure Python (several times slower), the reference, held to identical results by
tests/unit/test_rowdiff.py.

    pydiffer.py      `PyDiffer`, the specification: framing, hashing, matching in pure Python
    cdiffer.py       `CDiffer`: the same through ctypes, from `rowdiff.c` (xxHash in `vendor/`)
    build.py         `rowdiff.c` compiled by the package's build (the system's C compiler or
                     Zig's), and the library loaded
    choice.py        which differ runs, and why (`use`, `current`)
    transform.py     the byte pipe's transform that feeds a differ
"""

from __future__ import annotations

from syncd.engine.rowdiff.cdiffer import LOAD_ERROR, CDiffer, c_row_hash
from syncd.engine.rowdiff.choice import DifferChoice, DifferRefused, choose, current, use
from syncd.engine.rowdiff.pydiffer import (
    HEADER,
    KEY,
    PLACE,
    SIGNATURE,
    TRAILER,
    PyDiffer,
    RowDiffer,
    keys_copy,
    places_copy,
    py_row_hash,
    shape_seed,
)

__all__ = [
    "ACCELERATED",
    "HEADER",
    "KEY",
    "PLACE",
    "SIGNATURE",
    "TRAILER",
    "CDiffer",
    "DifferChoice",
    "DifferRefused",
    "PyDiffer",
    "RowDiffer",
    "c_row_hash",
    "choose",
    "current",
    "differ",
    "keys_copy",
    "places_copy",
    "py_row_hash",
    "shape_seed",
    "use",
]

ACCELERATED = LOAD_ERROR is None  # the compiled differ loads (whether or not it is chosen)


def differ(seed: int, *, emit: bool = True) -> RowDiffer:
    """A differ: the one this process chose (`choice.use`), the compiled one by default."""
    if current().compiled:
        return CDiffer(seed, emit)
    return PyDiffer(seed, emit)
