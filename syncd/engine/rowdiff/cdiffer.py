"""The row differ in C: rowdiff.c, compiled into a shared library by the package's build
(setup.py, through `build.py`), loaded through ctypes; the same methods and results as PyDiffer
(pydiffer.py). `LOAD_ERROR` says why it cannot run (missing, does not load, stale)."""

from __future__ import annotations

import ctypes

from syncd.engine.rowdiff.build import NotLoaded, load
from syncd.engine.rowdiff.pydiffer import DUPLICATE, KEY, PRESENT

_LIB: ctypes.CDLL | None
LOAD_ERROR: str | None
try:
    _LIB, LOAD_ERROR = load().lib, None
except NotLoaded as exc:
    _LIB, LOAD_ERROR = None, str(exc)


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

    def _keys(self, state: int, which: str = "rd_keys") -> bytes:
        fn = getattr(self._lib, which)
        size = fn(self._d, state, None)
        buffer = ctypes.create_string_buffer(size)
        fn(self._d, state, buffer)
        return buffer.raw[:size]

    def gone(self) -> bytes:
        return self._keys(PRESENT)

    def locate(self, chunk: bytes) -> None:
        data = bytes(chunk)
        self._check(self._lib.rd_locate(self._d, data, len(data)))

    def gone_places(self) -> bytes:
        return self._keys(PRESENT, "rd_places")

    def duplicates(self) -> bytes:
        return self._keys(DUPLICATE)

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
