"""The row differ: the C accelerator and the pure-Python differ give identical results, and both
compute the multiset difference of rows (what to insert, what to delete)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from syncd.engine import rowdiff
from syncd.engine.rowdiff import (
    HEADER,
    KEY,
    PLACE,
    TRAILER,
    PyDiffer,
    keys_copy,
    places_copy,
    py_row_hash,
    pydiffer,
)

needs_c = pytest.mark.skipif(not rowdiff.ACCELERATED, reason="the C differ is not built here")
SEED = rowdiff.shape_seed([("a", "integer"), ("b", "text"), ("c", "bytea")])


def make_tuple(rng: random.Random, fields: int) -> bytes:
    parts = [fields.to_bytes(2, "big")]
    for _ in range(fields):
        if rng.random() < 0.15:
            parts.append(b"\xff\xff\xff\xff")
            continue
        value = rng.randbytes(rng.choice([0, 1, 4, 8, 30, 300, 5000]))
        parts.append(len(value).to_bytes(4, "big") + value)
    return b"".join(parts)


def stream(tuples: list[bytes], extension: bytes = b"") -> bytes:
    header = HEADER[:15] + len(extension).to_bytes(4, "big") + extension
    return header + b"".join(tuples) + TRAILER


def stored(keys: list[bytes | None]) -> bytes:
    rows = [
        b"\x00\x01\xff\xff\xff\xff" if k is None else b"\x00\x01\x00\x00\x00\x10" + k for k in keys
    ]
    return stream(rows)


def located(keys: list[bytes | None], places: list[bytes]) -> bytes:
    """The stored hashes as the landing reads them: (ctid, hash) per row."""
    rows = [
        b"\x00\x02\x00\x00\x00\x06"
        + place
        + (b"\xff\xff\xff\xff" if k is None else b"\x00\x00\x00\x10" + k)
        for k, place in zip(keys, places, strict=True)
    ]
    return stream(rows)


def chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        size = rng.choice([1, 2, 3, 7, 19, 100, 4096, 65536])
        out.append(data[at : at + size])
        at += size
    return out


def run(make, seed: int, existing: bytes, source: bytes, rng: random.Random, *, early: int = 0):
    """Drive one differ; `early` chunks of the source are fed before seal (pending)."""
    d = make(seed, True)
    for piece in chunks(existing, rng):
        d.add_stored(piece)
    pieces = chunks(source, rng)
    out = [d.feed(p) for p in pieces[:early]]
    assert d.pending == sum(len(p) for p in pieces[:early])
    assert d.seal() is None
    out.append(d.flush())
    assert d.pending == 0
    out += [d.feed(p) for p in pieces[early:]]
    out.append(d.finish())
    return b"".join(out), d.gone(), d.duplicates(), d.counts()


def split_keys(blob: bytes) -> list[bytes]:
    return [blob[i : i + KEY] for i in range(0, len(blob), KEY)]


def output_tuples(out: bytes) -> list[bytes]:
    if not out:
        return []
    walk = pydiffer._Walk()
    found = walk.tuples(out)
    assert walk.complete
    return found


def scenario(rng: random.Random):
    fields = 3
    base = [make_tuple(rng, fields) for _ in range(rng.randint(0, 300))]
    base += rng.sample(base, min(len(base), rng.randint(0, 5)))  # the same row twice
    held = [py_row_hash(t, SEED) for t in base if rng.random() < 0.9]
    held += [rng.randbytes(KEY) for _ in range(rng.randint(0, 20))]  # vanished rows
    held += [None] * rng.randint(0, 3)  # landed by an older syncd
    rng.shuffle(held)
    source = [t for t in base if rng.random() < 0.95] + [
        make_tuple(rng, fields) for _ in range(rng.randint(0, 30))
    ]
    rng.shuffle(source)
    extension = rng.randbytes(rng.choice([0, 0, 5]))
    return held, source, stored(held), stream(source, extension)


@pytest.mark.parametrize("case", range(40))
def test_python_differ_computes_the_multiset_difference(case: int) -> None:
    rng = random.Random(case)
    held, source, existing, data = scenario(rng)
    out, gone, dups, counts = run(PyDiffer, SEED, existing, data, rng, early=rng.randint(0, 3))
    have = Counter(k for k in held if k is not None)
    duplicated = {k for k, n in have.items() if n > 1}
    single = {k for k, n in have.items() if n == 1}
    # what comes out: every source row but one copy of each singly held hash
    kept: set[bytes] = set()
    expected_new = []
    for t in source:
        key = py_row_hash(t, SEED)
        if key in single and key not in kept:
            kept.add(key)
        else:
            expected_new.append(t)
    new = output_tuples(out)
    assert [n[:2] for n in new] == [(4).to_bytes(2, "big")] * len(new)  # one more field
    assert [n[2:-20] for n in new] == [t[2:] for t in expected_new]
    assert [n[-16:] for n in new] == [py_row_hash(t, SEED) for t in expected_new]
    assert sorted(split_keys(gone)) == sorted(single - kept)
    assert sorted(split_keys(dups)) == sorted(duplicated)
    assert counts["rows_in"] == len(source)
    assert counts["rows_new"] == len(expected_new)
    assert counts["rows_matched"] == len(kept)
    assert counts["unhashed"] == held.count(None)
    assert counts["existing"] == len(held) - held.count(None)


@needs_c
@pytest.mark.parametrize("case", range(40))
def test_c_differ_gives_identical_results(case: int) -> None:
    _, _, existing, data = scenario(random.Random(case))
    early = random.Random(case).randint(0, 3)
    py = run(PyDiffer, SEED, existing, data, random.Random(1000 + case), early=early)
    c = run(rowdiff.CDiffer, SEED, existing, data, random.Random(2000 + case), early=early)
    assert c[0] == py[0]
    assert sorted(split_keys(c[1])) == sorted(split_keys(py[1]))
    assert sorted(split_keys(c[2])) == sorted(split_keys(py[2]))
    assert c[3] == py[3]


@needs_c
def test_c_row_hash_is_xxh3_128_seeded() -> None:
    data = b"\x00\x01\x00\x00\x00\x03abc"
    assert rowdiff.c_row_hash(data, SEED) == py_row_hash(data, SEED)


@pytest.mark.parametrize("make", [PyDiffer, rowdiff.CDiffer] if rowdiff.ACCELERATED else [PyDiffer])
def test_rows_mode_hashes_destination_rows_like_source_tuples(make) -> None:
    rng = random.Random(7)
    rows = [make_tuple(rng, 3) for _ in range(50)]
    d = make(SEED, False)
    d.add_rows(stream(rows))
    d.seal()
    d.flush()
    d.feed(stream([*rows[:-1], make_tuple(rng, 3)]))
    assert d.finish() == b""  # emit=False: counts only
    counts = d.counts()
    assert (counts["rows_matched"], counts["rows_new"]) == (49, 1)
    assert counts["existing"] - counts["rows_matched"] == 1  # the row the source no longer has


@pytest.mark.parametrize("make", [PyDiffer, rowdiff.CDiffer] if rowdiff.ACCELERATED else [PyDiffer])
def test_nothing_new_emits_nothing(make) -> None:
    rng = random.Random(3)
    rows = list(dict.fromkeys(make_tuple(rng, 3) for _ in range(10)))  # no row twice
    d = make(SEED, True)
    d.add_stored(stored([py_row_hash(t, SEED) for t in rows]))
    d.seal()
    assert d.flush() == b""
    assert d.feed(stream(rows)) == b""
    assert d.finish() == b""  # no COPY at all: not even a header
    assert d.gone() == b""


@pytest.mark.parametrize("make", [PyDiffer, rowdiff.CDiffer] if rowdiff.ACCELERATED else [PyDiffer])
@pytest.mark.parametrize(
    "data, message",
    [
        (b"PGCOPY\n\xff\r\n\x01" + b"\x00" * 8, "bad signature"),
        (HEADER + b"\x00\x01\xff\xff\xff\xfe", "field length"),
        (HEADER + b"\x00\x01\x00\x00\x00\x00" + b"\x00\x02", "field count"),
        (HEADER + TRAILER + b"\x00", "after the binary COPY trailer"),
    ],
)
def test_malformed_streams_are_refused(make, data: bytes, message: str) -> None:
    d = make(SEED, True)
    d.seal()
    d.flush()
    with pytest.raises(ValueError, match=message):
        d.feed(data)


@pytest.mark.parametrize("make", [PyDiffer, rowdiff.CDiffer] if rowdiff.ACCELERATED else [PyDiffer])
def test_a_stream_cut_short_is_refused(make) -> None:
    d = make(SEED, True)
    d.seal()
    d.flush()
    d.feed(HEADER + b"\x00\x01\x00\x00\x00\x05ab")
    with pytest.raises(ValueError, match="ended early"):
        d.finish()
    e = make(SEED, True)
    e.add_stored(HEADER + b"\x00\x01")
    with pytest.raises(ValueError, match="ended early"):
        e.seal()


BOTH = [PyDiffer, rowdiff.CDiffer] if rowdiff.ACCELERATED else [PyDiffer]


@pytest.mark.parametrize("make", BOTH)
@pytest.mark.parametrize("case", range(30))
def test_located_hashes_say_where_each_gone_row_is(make, case: int) -> None:
    """Stored as (ctid, hash): the same difference as hashes alone, and gone_places() gives,
    in gone()'s order, the place each gone hash was stored at."""
    rng = random.Random(case)
    held, _, plain, data = scenario(rng)
    places = [rng.randbytes(PLACE) for _ in held]  # distinct: a ctid is a row's own
    where = {k: p for k, p in zip(held, places, strict=True) if k is not None}
    early = rng.randint(0, 3)
    out, gone, dups, counts = run(make, SEED, located(held, places), data, rng, early=early)
    d = make(SEED, True)
    d.add_stored(located(held, places))
    d.seal()
    d.flush()
    for piece in chunks(data, rng):
        d.feed(piece)
    d.finish()
    gone_places = d.gone_places()
    gone_keys = split_keys(d.gone())
    located_at = [gone_places[i : i + PLACE] for i in range(0, len(gone_places), PLACE)]
    assert [where[k] for k in gone_keys] == located_at
    reference = run(PyDiffer, SEED, plain, data, random.Random(case), early=early)
    assert out == reference[0]
    assert sorted(split_keys(gone)) == sorted(split_keys(reference[1]))
    assert sorted(split_keys(dups)) == sorted(split_keys(reference[2]))
    assert counts == reference[3]


@pytest.mark.parametrize("make", BOTH)
@pytest.mark.parametrize("case", range(20))
def test_hashes_located_during_the_stream_say_where_gone_rows_are(make, case: int) -> None:
    """Stored as hashes alone, then located while the source is fed (as the landing does once
    the stream shows a change): the same places as if they had come located."""
    rng = random.Random(case)
    held, _, plain, data = scenario(rng)
    places = [rng.randbytes(PLACE) for _ in held]
    where = {k: p for k, p in zip(held, places, strict=True) if k is not None}
    d = make(SEED, True)
    d.add_stored(plain)
    d.seal()
    d.flush()
    pieces = chunks(data, rng)
    half = len(pieces) // 2
    for piece in pieces[:half]:
        d.feed(piece)
    for piece in chunks(located(held, places), rng):
        d.locate(piece)
    for piece in pieces[half:]:
        d.feed(piece)
    d.finish()
    gone_places = d.gone_places()
    located_at = [gone_places[i : i + PLACE] for i in range(0, len(gone_places), PLACE)]
    assert [where[k] for k in split_keys(d.gone())] == located_at


@pytest.mark.parametrize("make", BOTH)
def test_a_gone_row_whose_place_is_not_known_leaves_no_places(make) -> None:
    a, b = bytes(range(16)), bytes(range(16, 32))
    d = make(SEED, True)
    d.add_stored(stored([a, b]))
    d.seal()
    d.flush()
    d.locate(located([a], [b"\x00\x00\x00\x07\x00\x01"]))  # b's row was not read
    d.feed(stream([]))
    d.finish()
    assert sorted(split_keys(d.gone())) == [a, b]
    assert d.gone_places() == b""


@pytest.mark.parametrize("make", BOTH)
def test_hashes_alone_have_no_places(make) -> None:
    d = make(SEED, True)
    d.add_stored(stored([bytes(range(16))]))
    d.seal()
    d.flush()
    d.feed(stream([]))
    d.finish()
    assert (len(d.gone()), d.gone_places()) == (KEY, b"")


@pytest.mark.parametrize("make", BOTH)
def test_a_place_that_is_no_tid_is_refused(make) -> None:
    d = make(SEED, True)
    with pytest.raises(ValueError, match="places are not tids"):
        d.add_stored(stream([b"\x00\x02\x00\x00\x00\x04abcd\x00\x00\x00\x10" + bytes(16)]))


def test_places_copy_frames_tids() -> None:
    places = [bytes(range(6)), bytes(range(6, 12))]
    walk = pydiffer._Walk()
    assert walk.tuples(places_copy(b"".join(places))) == [
        b"\x00\x01\x00\x00\x00\x06" + p for p in places
    ]
    assert walk.complete


def test_keys_copy_frames_uuids() -> None:
    keys = [bytes(range(16)), bytes(range(16, 32))]
    d = PyDiffer(SEED, True)
    d.add_stored(keys_copy(b"".join(keys)))
    d.seal()
    d.flush()
    assert sorted(split_keys(d.gone())) == sorted(keys)


def test_shape_seed_changes_with_names_types_and_order() -> None:
    a = rowdiff.shape_seed([("a", "integer"), ("b", "text")])
    assert a != rowdiff.shape_seed([("a", "bigint"), ("b", "text")])
    assert a != rowdiff.shape_seed([("b", "text"), ("a", "integer")])
    assert a != rowdiff.shape_seed([("a", "integer"), ("b", "text"), ("c", "text")])
    assert a == rowdiff.shape_seed([("a", "integer"), ("b", "text")])


@pytest.mark.parametrize("make", [PyDiffer, rowdiff.CDiffer] if rowdiff.ACCELERATED else [PyDiffer])
def test_verify_mode_matches_duplicates_copy_by_copy(make) -> None:
    rng = random.Random(11)
    a, b, c = (make_tuple(rng, 3) for _ in range(3))
    d = make(SEED, False)
    d.add_rows(stream([a, a, a, b]))  # the destination holds a three times
    d.seal()
    d.flush()
    d.feed(stream([a, a, b, c, c]))  # the source twice, and c it lacks
    d.finish()
    counts = d.counts()
    missing, extra = counts["rows_new"], counts["existing"] - counts["rows_matched"]
    assert (missing, extra) == (2, 1)


@pytest.mark.parametrize("make", [PyDiffer, rowdiff.CDiffer] if rowdiff.ACCELERATED else [PyDiffer])
@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_any_bytes_like_chunk_is_taken(make, kind) -> None:
    """asyncpg's COPY callbacks hand over bytearrays (found by the end-to-end test)."""
    rng = random.Random(5)
    rows = list(dict.fromkeys(make_tuple(rng, 3) for _ in range(20)))
    d = make(SEED, True)
    d.add_stored(kind(bytearray(stored([py_row_hash(t, SEED) for t in rows[:10]]))))
    d.seal()
    out = d.flush() + d.feed(kind(bytearray(stream(rows)))) + d.finish()
    assert len(output_tuples(out)) == 10
