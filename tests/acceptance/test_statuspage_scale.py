"""The status page at national scale in a real headless Chromium: 5,570 municipalities x 2
datasets on the daemon's own StatusBoard (tests/support/pagescale.py), served by the daemon's
own HTTP app. The page shows one page of rows with the counts of all, the filter box filters on the
server as one types, and a refresh fetches only the current view."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from syncd.service import statuspage
from syncd.service.http import HttpServer
from syncd.service.statusboard import StatusBoard

from tests.support import pagescale, tools
from tests.support.cdp import Cdp, browser


@pytest.fixture(autouse=True)
def _chromium() -> None:
    tools.chromium()


ROWS = "Array.from(document.querySelectorAll('tr[data-id]'), tr => [tr.className, tr.dataset.id])"
COUNTS = "Array.from(document.querySelectorAll('#summary b'), b => b.textContent)"
REFRESHED = "parseInt(document.body.dataset.refreshed || '0', 10)"


async def until_refreshed(cdp: Cdp, times: int) -> None:
    """Wait for the page's script to have swapped parts in `times` times."""
    await cdp.evaluate(f"""new Promise(resolve => {{
      const done = () => {REFRESHED} >= {times};
      if (done()) return resolve(true);
      new MutationObserver((_, obs) => {{ if (done()) {{ obs.disconnect(); resolve(true); }} }})
        .observe(document.body, {{attributes: true, attributeFilter: ["data-refreshed"]}});
    }})""")


async def advance(cdp: Cdp, ms: int) -> None:
    """Run the page's timers `ms` ahead on virtual time (its fetches stay real)."""
    await cdp.call(
        "Emulation.setVirtualTimePolicy", policy="pauseIfNetworkFetchesPending", budget=ms
    )
    await cdp.wait_event("Emulation.virtualTimeBudgetExpired")


@pytest.fixture
async def country() -> AsyncIterator[tuple[StatusBoard, str]]:
    board, due = pagescale.board()
    server = HttpServer(pagescale.board_control(board, due))
    await server.start("127.0.0.1", 0)
    host, port = server.runner.addresses[0][:2]
    try:
        yield board, f"http://{host}:{port}"
    finally:
        await server.stop()


async def test_the_page_at_national_scale_in_chromium(country):
    board, url = country
    async with browser() as cdp:
        await cdp.open(url + "/")
        assert await cdp.evaluate("document.body.classList.contains('ready')")
        rows = await cdp.evaluate(ROWS)
        assert len(rows) == statuspage.PAGE_ROWS
        assert rows[0][0] == "failing"
        assert await cdp.evaluate(COUNTS) == ["279", "157", "112", "32", "4990"]
        assert await cdp.evaluate("document.getElementById('total').textContent") == "5570"
        loaded = await cdp.evaluate("performance.getEntriesByType('navigation')[0].decodedBodySize")
        assert loaded < 150_000  # the whole country was 3.6 MB

        # the filter box asks the server as one types (accents ignored), counts stay of all
        sid, name = pagescale.municipality(4321)
        assert name == "José Itá Santa 4321"
        await cdp.evaluate(
            "(() => { const q = document.getElementById('q'); q.value = 'jose ita santa 4321';"
            " q.dispatchEvent(new Event('input')); return true; })()"
        )
        await until_refreshed(cdp, 1)
        assert await cdp.evaluate(ROWS) == [["ok", sid]]
        assert await cdp.evaluate("location.search") == "?q=jose+ita+santa+4321"
        assert await cdp.evaluate("document.getElementById('shown').textContent") == (
            "1 of 5570 shown"
        )
        assert await cdp.evaluate(COUNTS) == ["279", "157", "112", "32", "4990"]

        # a count on top is a link to that state alone; the pager pages it
        await cdp.open(url + "/?state=failing")
        await cdp.call(
            "Runtime.evaluate", expression="document.querySelector('#pager a[rel=next]').click()"
        )
        await cdp.wait_event("Page.loadEventFired")
        assert await cdp.evaluate("location.search") == "?state=failing&page=2"
        page2 = await cdp.evaluate(ROWS)
        assert len(page2) == 100 and {state for state, _ in page2} == {"failing"}

        # a refresh fetches this view only, and shows what changed meanwhile
        changed = next(sid for sid, v in board.sources.items() if v.state == "ok")
        pagescale.finish(board, changed, ok=False)
        await advance(cdp, statuspage.REFRESH_S * 1000 + 1000)
        await until_refreshed(cdp, 1)
        assert await cdp.evaluate(COUNTS) == ["280", "157", "112", "32", "4989"]
        assert await cdp.evaluate("location.search") == "?state=failing&page=2"
        assert len(await cdp.evaluate(ROWS)) == 100
        fetched = await cdp.evaluate(
            "performance.getEntriesByType('resource').map(e => [e.name, e.decodedBodySize])"
        )
        assert fetched and all(name.endswith("/?state=failing&page=2") for name, _ in fetched)
        assert all(size < 150_000 for _, size in fetched)
