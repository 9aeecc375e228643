"""The row differ in pure Python: the specification the compiled twin (rowdiff.c, cdiffer.py)
is held to by tests/unit/test_rowdiff.py, and what runs where the compiled one cannot load.
The package's docstring (syncd/engine/rowdiff/__init__.py) says what a differ does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import xxhash

KEY = 16
PLACE = 6  # a tid (ctid): block, then offset, as binary COPY sends it
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00" * 8  # no flags, no extension area
TRAILER = b"\xff\xff"

PRESENT, DUPLICATE, MATCHED = 1, 2, 3


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

    def locate(self, chunk: bytes) -> None: ...

    def gone_places(self) -> bytes: ...

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
        self._locating = _Walk()
        self._mode = 0
        self._sealed = False
        self._flushed = False
        self._keys: list[bytes] = []
        self._places: list[bytes] = []  # located: each stored key's row place (its ctid)
        self._located: bool | None = None
        self._state: dict[bytes, int] = {}
        self._place: dict[bytes, bytes] = {}
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
                continue
            if self._located is None:
                self._located = item[:2] == b"\x00\x02"
            if self._located:
                if item[:6] != b"\x00\x02\x00\x00\x00\x06":
                    raise ValueError("the stored row places are not tids")
                place, item = item[6:12], item[:2] + item[12:]
            if item == b"\x00\x01\xff\xff\xff\xff" or item == b"\x00\x02\xff\xff\xff\xff":
                self._counts["unhashed"] += 1
            elif len(item) != 22 or item[2:6] != b"\x00\x00\x00\x10":
                raise ValueError("the stored row hashes are not 16-byte values")
            else:
                self._keys.append(item[6:])
                if self._located:
                    self._places.append(place)

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
        places = self._places or [b""] * len(self._keys)
        for key, place in zip(self._keys, places, strict=True):
            if not self.emit:
                self._copies[key] = self._copies.get(key, 0) + 1
            if key not in state:
                state[key] = PRESENT
                if place:
                    self._place[key] = place
                self._counts["distinct"] += 1
            elif state[key] == PRESENT:
                state[key] = DUPLICATE
                self._counts["duplicated"] += 1
        self._counts["existing"] = len(self._keys)
        self._keys, self._places = [], []

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
            if state.get(key) == PRESENT:
                state[key] = MATCHED
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
        return b"".join(k for k, s in self._state.items() if s == PRESENT)

    def locate(self, chunk: bytes) -> None:
        """After seal: a binary COPY of the stored rows' (ctid, hash), giving each held hash
        its row's place (the landing reads it once the source shows a change)."""
        if not self._sealed:
            raise RuntimeError("seal() the existing rows first")
        for item in self._locating.tuples(chunk):
            if item[:6] != b"\x00\x02\x00\x00\x00\x06" or len(item) < 16:
                raise ValueError("the stored row places are not tids")
            if len(item) == 16 and item[12:16] == b"\xff\xff\xff\xff":
                continue  # no hash yet
            if len(item) != 32 or item[12:16] != b"\x00\x00\x00\x10":
                raise ValueError("the stored row hashes are not 16-byte values")
            if item[16:] in self._state:
                self._place[item[16:]] = item[6:12]

    def gone_places(self) -> bytes:
        """Where the gone rows are (their ctids, in `gone()`'s order), when the place of every
        one is known (the stored hashes came located, or were located since); else nothing."""
        places = [self._place.get(k, b"") for k, s in self._state.items() if s == PRESENT]
        return b"".join(places) if all(places) else b""

    def duplicates(self) -> bytes:
        return b"".join(k for k, s in self._state.items() if s == DUPLICATE)

    def counts(self) -> dict[str, int]:
        return {"existing": len(self._keys), **self._counts}


def _one_column_copy(values: bytes, size: int) -> bytes:
    """Concatenated fixed-size values as a binary COPY stream of one column."""
    field = b"\x00\x01" + size.to_bytes(4, "big")
    rows = [field + values[at : at + size] for at in range(0, len(values), size)]
    return b"".join((HEADER, *rows, TRAILER))


def places_copy(places: bytes) -> bytes:
    """Concatenated 6-byte row places as a binary COPY stream of one tid column."""
    return _one_column_copy(places, PLACE)


def keys_copy(keys: bytes) -> bytes:
    """Concatenated 16-byte hashes as a binary COPY stream of one uuid column."""
    return _one_column_copy(keys, KEY)
