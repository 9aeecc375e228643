"""GET /status and GET / at national scale: 5,570 municipalities x 2 datasets on the daemon's
own StatusBoard (tests/support/pagescale.py), served by the real aiohttp app on 127.0.0.1, port
0, and asked with aiohttp's client. The default /status keeps the documented shape; its parameters
select, page and follow changes; the page is filtered, sorted and paged on the server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import pytest

from syncd import config as config_mod
from syncd.ledger import DatasetStatus, Status
from syncd.service import statuspage
from syncd.service.http import HttpServer
from syncd.service.statusboard import StatusBoard

from tests.support import pagescale

SOURCE_KEYS = {"name", "state", "last_success", "last_error", "next_due", "last_run", "datasets"}
DATASET_KEYS = {"status", "last_success", "rows", "error"}


@dataclass
class Served:
    board: StatusBoard
    due: dict[str, datetime]
    url: str
    client: aiohttp.ClientSession

    async def json(self, path: str, status: int = 200) -> dict:
        async with self.client.get(self.url + path) as response:
            assert response.status == status, await response.text()
            return await response.json()

    async def html(self, path: str, status: int = 200) -> str:
        async with self.client.get(self.url + path) as response:
            assert response.status == status
            return await response.text()


async def serve(board: StatusBoard, due: dict[str, datetime]) -> AsyncIterator[Served]:
    server = HttpServer(pagescale.board_control(board, due))
    await server.start("127.0.0.1", 0)
    host, port = server.runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as client:
            yield Served(board, due, f"http://{host}:{port}", client)
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def country() -> AsyncIterator[Served]:
    """5,570 municipalities, read only: the tests on it change nothing."""
    async for served in serve(*pagescale.board()):
        yield served


@pytest.fixture
async def small() -> AsyncIterator[Served]:
    """60 municipalities, for the tests that change the board."""
    async for served in serve(*pagescale.board(60)):
        yield served


def ids(html: str) -> list[str]:
    return re.findall(r'<tr class="\w+" data-id="(\w+)"', html)


def states(html: str) -> list[str]:
    return re.findall(r'<tr class="(\w+)" data-id=', html)


async def test_the_default_status_is_the_documented_shape_for_every_source(country: Served):
    async with country.client.get(country.url + "/status") as response:
        assert response.status == 200
        assert response.headers.get("Content-Encoding") in ("gzip", "deflate")  # 2.5 MB plain
        answer = await response.json()
    assert set(answer) == {"sources"}
    assert len(answer["sources"]) == pagescale.MUNICIPALITIES
    for entry in answer["sources"].values():
        assert set(entry) == SOURCE_KEYS
        assert entry["state"] in ("ok", "running", "failed", "pending")
        assert set(entry["datasets"]) == set(pagescale.DATASETS)
        assert all(set(d) == DATASET_KEYS for d in entry["datasets"].values())


async def test_status_selects_by_state_and_name_with_counts_of_all(country: Served):
    failed = await country.json("/status?state=failed")
    assert failed["total"] == len(failed["sources"]) == 279
    assert {e["state"] for e in failed["sources"].values()} == {"failed"}
    assert failed["counts"] == {"ok": 5147, "failed": 279, "running": 32, "pending": 112}
    assert sum(failed["counts"].values()) == pagescale.MUNICIPALITIES
    both = await country.json("/status?state=running,pending")
    assert both["total"] == 32 + 112
    sid, name = pagescale.municipality(1234)
    assert name == "Ribeirão São Santa 1234"
    # accents and case ignored, as people type
    assert list((await country.json("/status?q=ribeirao sao SANTA 1234"))["sources"]) == [sid]
    assert list((await country.json(f"/status?q={sid}"))["sources"]) == [sid]
    other, _ = pagescale.municipality(17)
    exact = await country.json(f"/status?id={sid},{other},nao-existe")
    assert set(exact["sources"]) == {sid, other} and exact["total"] == 2
    assert (await country.json("/status?id=12110"))["sources"] == {}  # a prefix is no id
    assert (await country.json("/status?q=ribeirao&state=failed"))["total"] == sum(
        "Ribeirão" in (v.name or "") and v.state == Status.FAILED
        for v in country.board.sources.values()
    )


async def test_status_pages_in_config_order(country: Served):
    seen: list[str] = []
    offset = 0
    while True:
        page = await country.json(f"/status?limit=1000&offset={offset}")
        assert page["total"] == pagescale.MUNICIPALITIES
        if not page["sources"]:
            break
        seen += page["sources"]
        offset += 1000
    assert seen == list(country.board.sources)
    assert len(seen) == pagescale.MUNICIPALITIES


async def test_status_since_a_cursor_sends_only_what_changed(small: Served):
    start = await small.json("/status?since=")  # no cursor yet: everything, and one to follow
    assert start["full"] is True and len(start["sources"]) == 60
    cursor = start["cursor"]
    quiet = await small.json(f"/status?since={cursor}")
    assert quiet["sources"] == {} and quiet["full"] is False and quiet["cursor"] == cursor

    # the ledger read again every minute, unchanged, changes nothing
    small.board.seed(
        [
            DatasetStatus(sid, name, d.last_success, d.rows, d.status, None, d.error)
            for sid, view in small.board.sources.items()
            for name, d in view.datasets.items()
            if d.status is not None
        ]
    )
    assert (await small.json(f"/status?since={cursor}"))["sources"] == {}

    first, second = list(small.board.sources)[:2]
    pagescale.finish(small.board, first, ok=False)
    changed = await small.json(f"/status?since={cursor}")
    assert list(changed["sources"]) == [first]
    assert changed["sources"][first]["state"] == "failed"
    assert changed["counts"]["failed"] == start["counts"]["failed"] + 1

    # a removed source is named, the others are not sent again
    cursor = changed["cursor"]
    text = pagescale.config_text(60).replace(f"id: '{second}'", "id: 'novo_1'")
    small.board.configure(config_mod.loads(text))
    moved = await small.json(f"/status?since={cursor}")
    assert moved["removed"] == [second]
    assert list(moved["sources"]) == ["novo_1"]
    assert moved["sources"]["novo_1"]["state"] == "pending"

    # a cursor of another board (a restarted daemon) or from the future: start over
    for other in ("0badc0de.3", cursor.split(".")[0] + ".999999", "nonsense"):
        again = await small.json(f"/status?since={other}")
        assert again["full"] is True and len(again["sources"]) == 60 and again["removed"] == []


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("sate=failed", "unknown parameter 'sate'"),
        ("state=late", "state: 'late' is none of ok, running, failed, pending"),
        ("limit=0", "limit: '0' is not a whole number from 1 to 10000"),
        ("limit=x", "limit: 'x' is not a whole number"),
        ("offset=-1", "offset: '-1' is not a whole number"),
        ("offset=%C2%B2", "offset: '²' is not a whole number"),
        ("offset=" + "9" * 5000, "offset: '9999"),
    ],
)
async def test_a_status_parameter_that_cannot_be_read_is_400(small: Served, query, reason):
    answer = await small.json(f"/status?{query}", 400)
    assert answer["error"].startswith(reason), answer


async def test_the_page_shows_one_page_with_the_counts_of_every_municipality(country: Served):
    async with country.client.get(country.url + "/", headers={"Accept-Encoding": "gzip"}) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        html = await r.text()
    # the whole country was 3.6 MB; one page of it stays well under a few hundred kB
    assert len(html.encode()) < 150_000
    assert len(ids(html)) == statuspage.PAGE_ROWS
    assert states(html)[0] == "failing"
    assert '<span id="total">5570</span>' in html
    for count, label in ((279, "failing"), (157, "late"), (112, "never synced"), (4990, "ok")):
        assert re.search(rf"<b>{count}</b> {label}</a>", html), label
    assert "rows 1&ndash;100 of 5570 &middot; page 1 of 56" in html
    assert 'rel="next" href="?page=2"' in html and 'rel="prev"' not in html


async def test_the_page_filters_sorts_and_pages_on_the_server(country: Served):
    html = await country.html("/?state=failing&page=3")
    assert set(states(html)) == {"failing"}
    assert len(ids(html)) == 279 - 200
    assert "rows 201&ndash;279 of 279 &middot; page 3 of 3" in html
    assert 'rel="prev" href="?state=failing&amp;page=2"' in html
    assert "279 of 5570 shown" in html
    assert '<input type="hidden" name="state" value="failing">' in html
    assert re.search(r'<a href="\?" aria-current="true"><b>279</b> failing', html)  # back to all
    # pages cover the selection once each
    pages = [ids(await country.html(f"/?state=failing&page={n}")) for n in (1, 2, 3)]
    assert len({sid for page in pages for sid in page}) == 279

    sid, name = pagescale.municipality(4321)
    assert name == "José Itá Santa 4321"
    assert ids(await country.html("/?q=jose ita santa 4321")) == [sid]
    by_name = ids(await country.html("/?sort=name&q=sao"))
    names = [pagescale.municipality((int(s) - 110000) // 9)[1] for s in by_name]
    assert names == sorted(names, key=statuspage.norm)
    oldest = ids(await country.html("/?sort=age"))  # age sorts oldest first by default
    ages = {
        r.id: r.age for r in statuspage.rows_of(country.board.sources, country.due, pagescale.AT)
    }
    assert [ages[s] or statuspage.NEVER for s in oldest] == sorted(
        (a or statuspage.NEVER for a in ages.values()), reverse=True
    )[: statuspage.PAGE_ROWS]
    # past the last page: the last page
    assert ids(await country.html("/?state=running&page=9")) == ids(
        await country.html("/?state=running")
    )
    assert "no municipality matches" in await country.html("/?q=nowhere-at-all")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("sort=color", "sort: 'color' is none of name, state, success, age, rows, duration"),
        ("dir=up", "dir: 'up' is neither asc nor desc"),
        ("page=0", "page: '0' is not a whole number from 1"),
        ("state=broken", "state: 'broken' is none of failing, late"),
        ("group=dataset", "group: 'dataset' is none of bastion"),
        ("utm_source=x", "unknown parameter 'utm_source'"),
    ],
)
async def test_a_page_parameter_that_cannot_be_read_is_400(small: Served, query, reason):
    text = await small.html(f"/?{query}", 400)
    assert text.startswith(reason), text


def test_rows_group_under_headings_in_order_of_their_first_row():
    board, due = pagescale.board(12)
    rows = statuspage.rows_of(board.sources, due, pagescale.AT)
    assert statuspage.group(rows, None) == [("", rows)]

    def parity(r: statuspage.Row) -> str:
        return "even" if int(r.id) % 2 == 0 else "odd"

    grouped = statuspage.group(rows, parity)
    assert [name for name, _ in grouped] == list(dict.fromkeys(parity(r) for r in rows))
    assert all(parity(r) == name for name, part in grouped for r in part)
    assert sorted(r.id for _, part in grouped for r in part) == sorted(r.id for r in rows)
    chosen = statuspage.select(rows, statuspage.PageQuery())
    html = statuspage.render(
        chosen, statuspage.PageQuery(), pagescale.AT, "n", "v", lambda r: f"hub <{r.id[-1]}>"
    )
    assert '<tr class="group"><th colspan="7" scope="rowgroup">hub &lt;' in html


def test_a_sync_that_changes_nothing_shown_keeps_the_version():
    board, _ = pagescale.board(5)
    version = board.version
    sid = next(iter(board.sources))
    board.seed_durations({sid: 1.0})  # it has one already: not replaced
    board.source_started("not-configured")
    assert board.version == version
    board.source_started(sid)
    assert board.version == version + 1 and board.sources[sid].changed == board.version
    assert board.sources[sid].state == Status.RUNNING


async def test_small_answers_are_not_compressed(small: Served):
    headers = {"Accept-Encoding": "gzip"}
    async with small.client.get(small.url + "/status?state=running", headers=headers) as r:
        assert "Content-Encoding" not in r.headers
        assert (await r.json())["total"] == 1
    async with small.client.get(small.url + "/status", headers=headers) as r:
        assert r.headers["Content-Encoding"] == "gzip"
