"""The landing's transform (engine/rowdiff/transform.py): what arrives before the stored hashes is kept,
within one budget for every landing of the process, and given back when they are in."""

from __future__ import annotations

import anyio
import pytest

from syncd.engine import rowdiff
from syncd.engine.rowdiff import HEADER, TRAILER, transform

ROW = b"\x00\x01\x00\x00\x00\x03abc"


def landed(row: bytes) -> bytes:
    """The destination's tuple: one more field, the row's hash."""
    return b"\x00\x02" + row[2:] + b"\x00\x00\x00\x10" + rowdiff.py_row_hash(row, 1)


async def test_chunks_wait_past_the_shared_budget_and_flow_once_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transform, "PENDING_LIMIT", len(HEADER) + len(ROW) + 5)
    a = transform.DiffTransform(rowdiff.differ(1))
    b = transform.DiffTransform(rowdiff.differ(1))
    assert await a.feed(HEADER) == b""
    assert await a.feed(ROW) == b""  # kept: the budget is for both
    fed: list[bytes] = []

    async def feed_b() -> None:
        fed.append(await b.feed(HEADER + ROW))  # over what is left: waits for b's hashes

    async with anyio.create_task_group() as tg:
        tg.start_soon(feed_b)
        await anyio.wait_all_tasks_blocked()
        assert fed == [] and transform.DiffTransform.pending == len(HEADER) + len(ROW)
        b.differ.seal()
        b.ready.set()
    assert fed == [HEADER + landed(ROW)]
    a.differ.seal()
    a.ready.set()
    assert await a.feed(TRAILER) == HEADER + landed(ROW)  # a's kept bytes come out first
    assert await a.finish() == TRAILER
    assert a.rows == 1 and transform.DiffTransform.pending == 0


async def test_a_failed_landing_gives_its_kept_bytes_back() -> None:
    t = transform.DiffTransform(rowdiff.differ(1))
    await t.feed(HEADER + ROW)
    assert transform.DiffTransform.pending == len(HEADER + ROW)
    t.release()  # the landing's finally
    assert transform.DiffTransform.pending == 0


ROW2 = b"\x00\x01\x00\x00\x00\x03xyz"


async def test_new_rows_wait_for_the_places_read_and_come_out_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hold_until_located: the first new row says `changed`; new rows are held (within the
    budget, then waited for) until `located`, and finish waits for it too."""
    monkeypatch.setattr(transform, "PENDING_LIMIT", len(HEADER) + len(landed(ROW)) + 5)
    t = transform.DiffTransform(rowdiff.differ(1), hold_until_located=True)
    t.differ.seal()
    t.ready.set()
    assert await t.feed(HEADER) == b""
    assert not t.changed.is_set()
    assert await t.feed(ROW) == b""  # held: the landing reads the places first
    assert t.changed.is_set()
    out: list[bytes] = []

    async def rest() -> None:
        out.append(await t.feed(ROW2))  # over the budget: waits for the places
        out.append(await t.feed(TRAILER))
        out.append(await t.finish())

    async with anyio.create_task_group() as tg:
        tg.start_soon(rest)
        await anyio.wait_all_tasks_blocked()
        assert out == [] and transform.DiffTransform.pending == len(HEADER + landed(ROW))
        t.located.set()
    assert b"".join(out) == HEADER + landed(ROW) + landed(ROW2) + TRAILER
    assert t.rows == 2 and transform.DiffTransform.pending == 0


async def test_no_new_row_never_asks_for_the_places() -> None:
    differ = rowdiff.differ(1)
    differ.add_stored(rowdiff.keys_copy(rowdiff.py_row_hash(ROW, 1)))
    differ.seal()
    t = transform.DiffTransform(differ, hold_until_located=True)
    t.ready.set()
    assert await t.feed(HEADER + ROW + TRAILER) == b""
    with anyio.fail_after(5):
        assert await t.finish() == b""  # nothing to write: no wait for the places
    assert not t.changed.is_set() and t.rows == 0
