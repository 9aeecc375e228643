"""The status page at GET /, rendered by a real headless Chromium against a running daemon
with healthy, failing and never-reached municipalities, some with hostile names and errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import anyio
import asyncpg
import pytest

from syncd.lab import embedded

from tests.conftest import TABLE_DATASETS
from tests.support import tools
from tests.support.daemonproc import DaemonProcess, free_port
from tests.support.helpers import ROOT


@pytest.fixture(autouse=True)
def _chromium() -> None:
    tools.chromium()  # every test here renders the page


# each payload, if it ever ran or became markup, marks the document: the test looks for the mark
SCRIPT = '<script>document.documentElement.dataset.pwned="name"</script>'
IMG = "<img src=x onerror=\"document.documentElement.dataset.pwned='img'\">"
ERROR_SCRIPT = '<script>document.documentElement.dataset.pwned="error"</script>'


def chromium(*args: str, window: str = "1280,900") -> str:
    with tools.chromium_profile() as profile:
        proc = tools.start_chromium(
            profile,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--window-size={window}",
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            tools.stop_chromium(proc)
    assert proc.returncode == 0, stderr[-2000:]
    return stdout


def dom(url: str, budget_ms: int = 3000) -> str:
    return chromium(f"--virtual-time-budget={budget_ms}", "--dump-dom", url)


def row_order(html: str) -> list[tuple[str, str, bool]]:
    """(state, id, hidden) per row, in document order."""
    return [
        (m.group(1), m.group(2), "hidden" in m.group(0))
        for m in re.finditer(r'<tr class="(\w+)" data-id="(\w+)"[^>]*>', html)
    ]


async def test_status_page_in_chromium(make_sources, dest, write_config, tmp_path):
    sources = await make_sources(4)
    healthy, bad_error, hostile_name = sources[0:2], sources[2], sources[3]
    for db in sources:  # a table every municipality has; one holds a hostile value
        conn = await asyncpg.connect(db.admin_dsn)
        try:
            value = ERROR_SCRIPT if db is bad_error else "1"
            await conn.execute(
                "CREATE TABLE syncd_valor (v text); GRANT SELECT ON syncd_valor TO esus_leitura"
            )
            await conn.execute("INSERT INTO syncd_valor VALUES ($1)", value)
        finally:
            await conn.close()
    entries = [
        healthy[0].source_entry(name="São José dos Campos"),
        healthy[1].source_entry(name="Ribeirão Preto"),
        bad_error.source_entry(name="Campinas"),
        hostile_name.source_entry(name=f"Santos {SCRIPT}"),
        {
            "id": "999001",
            "name": f"Inalcançável {IMG}",
            "dsn": f"postgresql://esus_leitura:hunter2@127.0.0.1:{embedded.free_port()}/esus",
        },
    ]
    datasets = [
        TABLE_DATASETS[3],
        {"name": "valores", "query": "SELECT v::int AS v FROM syncd_valor"},
    ]
    port = free_port()
    path, _ = write_config(
        dest,
        entries,
        datasets,
        http={"listen": f"127.0.0.1:{port}"},
        schedule={"interval": "24h", "jitter": "0s", "failed_backoff": "1h"},
    )
    daemon = DaemonProcess(path, port)
    try:
        daemon.wait_ready()
        daemon.wait_status(
            lambda s: (
                sum(v["state"] == "ok" for v in s["sources"].values()) == 3
                and sum(v["state"] == "failed" for v in s["sources"].values()) == 2
            )
        )
        # the daemon's /status selects too (its default shape is tested with the daemon's)
        code, text = daemon.get("/status?state=failed")
        assert code == 200
        failed = json.loads(text)
        assert set(failed["sources"]) == {bad_error.id, "999001"} and failed["total"] == 2
        assert failed["counts"] == {"ok": 3, "failed": 2, "running": 0, "pending": 0}
        assert daemon.get("/status?state=broken")[0] == 400

        code, raw = daemon.get("/")
        assert code == 200
        assert SCRIPT not in raw and IMG not in raw and ERROR_SCRIPT not in raw
        assert "hunter2" not in raw
        assert "http://" not in raw.replace(f"http://127.0.0.1:{port}", "")  # no external asset
        assert "https://" not in raw

        url = daemon.url("/")
        html = await anyio.to_thread.run_sync(dom, url)
        assert "data-pwned" not in html  # no payload ran, none became markup
        assert "<img" not in html
        assert 'class="ready"' in html  # the page's own script ran (the CSP let it)
        # the hostile texts are shown as text
        assert "Santos &lt;script&gt;document.documentElement.dataset.pwned" in html
        assert "Inalcançável &lt;img src=x onerror=" in html
        assert "valores: invalid input syntax for type integer: " in html
        assert '&lt;script&gt;document.documentElement.dataset.pwned="error"' in html
        # failing first, then the healthy; counts on top
        order = row_order(html)
        assert [state for state, _, _ in order] == ["failing", "failing", "ok", "ok", "ok"]
        assert {sid for state, sid, _ in order if state == "failing"} == {bad_error.id, "999001"}
        assert '<li class="failing"><a href="?state=failing"><b>2</b> failing</a></li>' in html
        assert '<li class="ok"><a href="?state=ok"><b>3</b> ok</a></li>' in html
        # a source-wide failure is not pinned on one dataset; a dataset's own failure is
        unreachable = re.search(r'<tr class="failing" data-id="999001".*?</tr>', html, re.S)
        assert 'class="error">connection refused (on the source)<' in unreachable.group(0)
        # rows and durations of the healthy ones are shown
        row = re.search(rf'<tr class="ok" data-id="{healthy[0].id}".*?</tr>', html, re.S).group(0)
        assert re.search(r'data-label="rows" class="num">\d[\d,]*<', row)
        assert re.search(r'data-label="duration" class="num">[\d.]+ s<', row)
        assert "São José dos Campos" in row

        # filter by name (accents ignored), by id and by state; sort by name
        html = await anyio.to_thread.run_sync(dom, url + "?q=sao%20jose")
        assert [sid for _, sid, hidden in row_order(html) if not hidden] == [healthy[0].id]
        assert "1 of 5 shown" in html
        html = await anyio.to_thread.run_sync(dom, url + f"?q={bad_error.id}")
        assert [sid for _, sid, hidden in row_order(html) if not hidden] == [bad_error.id]
        html = await anyio.to_thread.run_sync(dom, url + "?state=failing")
        assert {sid for _, sid, _ in row_order(html)} == {bad_error.id, "999001"}
        assert "2 of 5 shown" in html
        html = await anyio.to_thread.run_sync(dom, url + "?sort=name")
        assert [sid for _, sid, _ in row_order(html)] == [
            bad_error.id,
            "999001",
            healthy[1].id,
            hostile_name.id,
            healthy[0].id,
        ]
        # it refreshes itself (timers run on virtual time; the fetch is real)
        html = await anyio.to_thread.run_sync(dom, url, 65000)
        assert re.search(r'<body[^>]*data-refreshed="[12]"', html), html[:500]
        assert "data-pwned" not in html

        # a picture for the README, desktop and phone widths
        shot = tmp_path / "status-page.png"
        await anyio.to_thread.run_sync(
            lambda: chromium("--virtual-time-budget=3000", f"--screenshot={shot}", url)
        )
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        phone = tmp_path / "status-page-phone.png"
        await anyio.to_thread.run_sync(
            lambda: chromium(
                "--virtual-time-budget=3000", f"--screenshot={phone}", url, window="390,844"
            )
        )
        assert phone.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("SYNCD_UPDATE_SCREENSHOTS"):
            shutil.copy(shot, ROOT / "docs" / "status-page.png")
            shutil.copy(phone, ROOT / "docs" / "status-page-phone.png")
    finally:
        daemon.stop()
