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
3. `gone()`: the held hashes no source tuple consumed, to delete.

Rows are a multiset: a hash the destination holds more than once (a table without a key may hold
one row twice) is never matched: `duplicates()` lists them, the landing deletes them before the
stream, and every copy the source has comes in again. NULL hashes (rows an older syncd landed)
are counted (`unhashed`) and never match.

`syncd verify` uses `add_rows` instead: the destination's rows themselves, hashed as a source
tuple is, so a row changed by hand is seen whatever its stored hash says; with `emit=False`
nothing comes out and every held copy is matched one by one (an exact multiset comparison:
`rows_new` source rows the destination lacks, `existing - rows_matched` it has in excess).

The framing walk and the hashing run in C (`rowdiff.c`, built by engine/accel.py, through
ctypes) when it is built; `PyDiffer` is the same thing in pure Python (a few times slower),
used when it is not, and held to identical results by tests/unit/test_rowdiff.py.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from typing import Protocol

import xxhash

from syncd.engine import accel

KEY = 16
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00" * 8  # no flags, no extension area
TRAILER = b"\xff\xff"

_PRESENT, _DUPLICATE, _MATCHED = 1, 2, 3


class RowDiffer(Protocol):
    """What both implementations provide."""

    @property
    def pending(self) -> int: ...

    def add_stored(self, chunk: bytes) -> None: ...

    def add_rows(self, chunk: bytes) -> None: ...

    def seal(self) -> None: ...

    def flush(self) -> bytes: ...

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

    def gone(self) -> bytes: ...

    def duplicates(self) -> bytes: ...

    def counts(self) -> dict[str, int]: ...


def shape_seed(columns: Sequence[tuple[str, str]]) -> int:
    """The hash seed of a dataset shape: (name, type) of each column, in order."""
    text = "\x00".join(f"{name}\x01{type_}" for name, type_ in columns)
    return xxhash.xxh3_64_intdigest(text.encode())


def py_row_hash(tuple_bytes: bytes, seed: int) -> bytes:
    return xxhash.xxh3_128_digest(tuple_bytes, seed)


class _Walk:
    """The framing of one binary COPY stream, fed in chunks cut anywhere."""

    __slots__ = ("buffer", "fields", "phase")

    def __init__(self) -> None:
        self.phase = 0  # 0: before the header, 1: tuples, 2: after the trailer
        self.fields = -1
        self.buffer = b""

    def tuples(self, chunk: bytes) -> list[bytes]:
        chunk = bytes(chunk)  # asyncpg hands over bytearrays and memoryviews too
        data = self.buffer + chunk if self.buffer else chunk
        found: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n:
            if self.phase == 0:
                if n - pos < 19:
                    break
                if data[pos : pos + 11] != SIGNATURE:
                    raise ValueError("not a binary COPY stream (bad signature)")
                ext = int.from_bytes(data[pos + 15 : pos + 19], "big")
                if ext > 1 << 20:
                    raise ValueError("binary COPY header extension too long")
                if n - pos < 19 + ext:
                    break
                pos += 19 + ext
                self.phase = 1
                continue
            if self.phase == 2:
                raise ValueError("data after the binary COPY trailer")
            if n - pos < 2:
                break
            count = int.from_bytes(data[pos : pos + 2], "big", signed=True)
            if count == -1:
                pos += 2
                self.phase = 2
                continue
            if count < 0 or (self.fields >= 0 and count != self.fields):
                raise ValueError("malformed binary COPY tuple (field count)")
            at = pos + 2
            complete = True
            for _ in range(count):
                if n - at < 4:
                    complete = False
                    break
                size = int.from_bytes(data[at : at + 4], "big", signed=True)
                at += 4
                if size == -1:
                    continue
                if size < 0:
                    raise ValueError("malformed binary COPY tuple (field length)")
                if n - at < size:
                    complete = False
                    break
                at += size
            if not complete:
                break
            if self.fields < 0:
                self.fields = count
            found.append(data[pos:at])
            pos = at
        self.buffer = data[pos:]
        return found

    @property
    def complete(self) -> bool:
        return self.phase == 2 and not self.buffer


class PyDiffer:
    """The differ in pure Python; see the module's docstring (and `_rowdiff.c`, its twin)."""

    def __init__(self, seed: int, emit: bool = True):
        self.seed = seed
        self.emit = emit
        self._existing = _Walk()
        self._source = _Walk()
        self._mode = 0
        self._sealed = False
        self._flushed = False
        self._keys: list[bytes] = []
        self._state: dict[bytes, int] = {}
        self._copies: dict[bytes, int] = {}  # emit=False: copies held per key
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._header = False
        self._counts = dict.fromkeys(
            ("rows_in", "rows_new", "rows_matched", "distinct", "duplicated", "unhashed"), 0
        )

    @property
    def pending(self) -> int:
        return self._pending_bytes

    def _add(self, chunk: bytes, mode: int) -> None:
        if self._sealed:
            raise RuntimeError("the existing rows are sealed already")
        if self._mode and self._mode != mode:
            raise RuntimeError("stored hashes and rows cannot be mixed")
        self._mode = mode
        for item in self._existing.tuples(chunk):
            if mode == 2:
                self._keys.append(py_row_hash(item, self.seed))
            elif item == b"\x00\x01\xff\xff\xff\xff":
                self._counts["unhashed"] += 1
            elif len(item) != 22 or item[:6] != b"\x00\x01\x00\x00\x00\x10":
                raise ValueError("the stored row hashes are not 16-byte values")
            else:
                self._keys.append(item[6:])

    def add_stored(self, chunk: bytes) -> None:
        self._add(chunk, 1)

    def add_rows(self, chunk: bytes) -> None:
        self._add(chunk, 2)

    def seal(self) -> None:
        if self._sealed:
            return
        if self._mode and not self._existing.complete:
            raise ValueError("the existing rows' COPY stream ended early")
        self._sealed = True
        state = self._state
        for key in self._keys:
            if not self.emit:
                self._copies[key] = self._copies.get(key, 0) + 1
            if key not in state:
                state[key] = _PRESENT
                self._counts["distinct"] += 1
            elif state[key] == _PRESENT:
                state[key] = _DUPLICATE
                self._counts["duplicated"] += 1
        self._counts["existing"] = len(self._keys)
        self._keys = []

    def flush(self) -> bytes:
        if not self._sealed:
            raise RuntimeError("seal() the existing rows first")
        if self._flushed:
            return b""
        self._flushed = True
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        return b"".join(self._frame(chunk) for chunk in pending)

    def feed(self, chunk: bytes) -> bytes:
        if not self._flushed:
            self._pending.append(bytes(chunk))
            self._pending_bytes += len(chunk)
            return b""
        return self._frame(chunk)

    def _frame(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        state, seed, counts = self._state, self.seed, self._counts
        for item in self._source.tuples(chunk):
            key = py_row_hash(item, seed)
            counts["rows_in"] += 1
            if not self.emit:
                if self._copies.get(key, 0) > 0:
                    self._copies[key] -= 1
                    counts["rows_matched"] += 1
                else:
                    counts["rows_new"] += 1
                continue
            if state.get(key) == _PRESENT:
                state[key] = _MATCHED
                counts["rows_matched"] += 1
                continue
            counts["rows_new"] += 1
            if not self.emit:
                continue
            if not self._header:
                out.append(HEADER)
                self._header = True
            fields = int.from_bytes(item[:2], "big") + 1
            out += (fields.to_bytes(2, "big"), item[2:], b"\x00\x00\x00\x10", key)
        return b"".join(out)

    def finish(self) -> bytes:
        if not self._flushed:
            raise RuntimeError("flush() the source bytes fed before seal() first")
        if not self._source.complete:
            raise ValueError("the source's COPY stream ended early")
        return TRAILER if self._header else b""

    def gone(self) -> bytes:
        return b"".join(k for k, s in self._state.items() if s == _PRESENT)

    def duplicates(self) -> bytes:
        return b"".join(k for k, s in self._state.items() if s == _DUPLICATE)

    def counts(self) -> dict[str, int]:
        return {"existing": len(self._keys), **self._counts}


class CDiffer:
    """The differ in C (rowdiff.c, through ctypes): the same methods and results as PyDiffer.
    What is fed before `flush()` is kept here and framed then."""

    def __init__(self, seed: int, emit: bool = True):
        assert _LIB is not None
        self._lib = _LIB
        self._d = _LIB.rd_new(seed, int(emit))
        if not self._d:
            raise MemoryError("rowdiff")
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flushed = False

    def __del__(self) -> None:
        d, self._d = getattr(self, "_d", None), None
        if d:
            self._lib.rd_free(d)

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise ValueError(self._lib.rd_error(self._d).decode())

    @property
    def pending(self) -> int:
        return self._pending_bytes

    def add_stored(self, chunk: bytes) -> None:
        data = bytes(chunk)
        self._check(self._lib.rd_add(self._d, 1, data, len(data)))

    def add_rows(self, chunk: bytes) -> None:
        data = bytes(chunk)
        self._check(self._lib.rd_add(self._d, 2, data, len(data)))

    def seal(self) -> None:
        self._check(self._lib.rd_seal(self._d))

    def _out(self) -> bytes:
        size = ctypes.c_ssize_t()
        at = self._lib.rd_out(self._d, ctypes.byref(size))
        return ctypes.string_at(at, size.value) if size.value else b""

    def _frame(self, data: bytes) -> bytes:
        self._check(self._lib.rd_feed(self._d, data, len(data)))
        return self._out()

    def flush(self) -> bytes:
        if self._flushed:
            return b""
        self._flushed = True  # rd_feed refuses to frame before seal()
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        return b"".join(self._frame(chunk) for chunk in pending)

    def feed(self, chunk: bytes) -> bytes:
        data = bytes(chunk)  # asyncpg may hand over a bytearray it reuses
        if not self._flushed:
            self._pending.append(data)
            self._pending_bytes += len(data)
            return b""
        return self._frame(data)

    def finish(self) -> bytes:
        if not self._flushed:
            raise RuntimeError("flush() the source bytes fed before seal() first")
        self._check(self._lib.rd_finish(self._d))
        return self._out()

    def _keys(self, state: int) -> bytes:
        size = self._lib.rd_keys(self._d, state, None)
        buffer = ctypes.create_string_buffer(size)
        self._lib.rd_keys(self._d, state, buffer)
        return buffer.raw[:size]

    def gone(self) -> bytes:
        return self._keys(_PRESENT)

    def duplicates(self) -> bytes:
        return self._keys(_DUPLICATE)

    def counts(self) -> dict[str, int]:
        values = (ctypes.c_longlong * 7)()
        self._lib.rd_counts(self._d, values)
        names = ("rows_in", "rows_new", "rows_matched", "distinct", "duplicated", "unhashed")
        return {"existing": values[6], **dict(zip(names, values[:6], strict=True))}


def c_row_hash(tuple_bytes: bytes, seed: int) -> bytes:
    assert _LIB is not None
    out = ctypes.create_string_buffer(KEY)
    _LIB.rd_hash(seed, tuple_bytes, len(tuple_bytes), out)
    return out.raw


_LIB = accel.load()
ACCELERATED = _LIB is not None
# SYNCD_PURE_PYTHON_DIFF=1: the pure-Python differ even where the C one is built (to compare
# the two on real data, or to rule the accelerator out)
PURE_PYTHON = os.environ.get("SYNCD_PURE_PYTHON_DIFF", "") not in ("", "0")


def differ(seed: int, *, emit: bool = True) -> RowDiffer:
    """A differ: the C one when it is built."""
    if ACCELERATED and not PURE_PYTHON:
        return CDiffer(seed, emit)
    return PyDiffer(seed, emit)


def keys_copy(keys: bytes) -> bytes:
    """Concatenated 16-byte hashes as a binary COPY stream of one uuid column."""
    rows = [HEADER]
    for at in range(0, len(keys), KEY):
        rows.append(b"\x00\x01\x00\x00\x00\x10" + keys[at : at + KEY])
    rows.append(TRAILER)
    return b"".join(rows)
