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
