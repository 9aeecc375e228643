"""What syncd prints: for people the live progress line, the summary of a pass and the status
table; for machines the JSON document of a pass (`syncd once --json`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import anyio

from syncd.config import Config
from syncd.engine import rowdiff
from syncd.engine.progress import Progress
from syncd.engine.results import DatasetResult, SourceResult, now
from syncd.ledger import DatasetStatus, Status
from syncd.safetext import printable

JSON_VERSION = 1


def human_bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def human_duration(seconds: float | None, missing: str = "-") -> str:
    """An age or a duration for people (`4.2 s`, `42 s`, `12 min`, `3 h 05 min`, `2 d 4 h`):
    the terminal tables and the status page alike. The config writes its own (`24h`, which
    reads back)."""
    if seconds is None:
        return missing
    s = max(seconds, 0.0)
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    minutes = int(s // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def iso(when: datetime | None) -> str | None:
    """A time in the JSON documents (`syncd status --json`, `/status`, `once --json`)."""
    return when.isoformat() if when is not None else None


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None
) -> str:
    right = right or set()
    rows = [[printable(cell) for cell in row] for row in rows]  # one row, one line
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out)


class LiveProgress(Progress):
    """Sources done / failed / running and the byte rate, redrawn in place on a TTY."""

    def __init__(self, total: int, stream: TextIO = sys.stderr):
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.running = 0
        self.done = 0
        self.failed = 0
        self.rows = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._shown = False

    def source_started(self, source_id: str) -> None:
        self.running += 1

    def source_finished(self, result: SourceResult) -> None:
        self.running -= 1
        self.done += 1
        if result.status != Status.OK:
            self.failed += 1
        self.rows += result.rows

    def bytes_moved(self, count: int) -> None:
        self.bytes += count

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return (
            f"sources {self.done}/{self.total} done, {self.failed} failed, {self.running} running"
            f" | {self.rows / elapsed:,.0f} rows/s, {human_bytes(self.bytes / elapsed)}/s"
            f" | {elapsed:.0f}s"
        )

    def clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False

    async def run(self, every: float = 0.5) -> None:
        """Redraw until cancelled (only on a TTY)."""
        if not self.tty:
            return
        try:
            while True:
                self.stream.write("\r\033[K" + self.line())
                self.stream.flush()
                self._shown = True
                await anyio.sleep(every)
        finally:
            self.clear()


def summary(results: Sequence[SourceResult], config: Config, seconds: float) -> str:
    names = {s.id: s.name or "" for s in config.sources}
    rows = []
    for r in results:
        ok = sum(1 for d in r.datasets.values() if d.status == Status.OK)
        took = (r.ended_at - r.started_at).total_seconds() if r.ended_at else 0.0
        rows.append(
            [
                r.source_id,
                names.get(r.source_id, ""),
                r.status,
                f"{ok}/{len(r.datasets)}",
                f"{r.rows:,}",
                human_bytes(r.bytes),
                human_duration(took),
            ]
        )
    out = [
        table(["source", "name", "status", "datasets", "rows", "size", "time"], rows, {3, 4, 5, 6})
    ]
    failures = [
        f"  {r.source_id} {d.name}: {printable(d.error)}"
        for r in results
        for d in r.datasets.values()
        if d.status not in (Status.OK,) and d.error
    ]
    ok_count = sum(1 for r in results if r.status == Status.OK)
    skipped = sum(1 for r in results if r.status == Status.SKIPPED)
    total_rows = sum(r.rows for r in results)
    total_bytes = sum(r.bytes for r in results)
    out.append("")
    out.append(
        f"{ok_count} of {len(results)} sources ok"
        + (f", {skipped} skipped" if skipped else "")
        + f"; {total_rows:,} rows, {human_bytes(total_bytes)} in {human_duration(seconds)}"
    )
    if failures:
        out.append("failed:")
        out += failures
    return "\n".join(out)


def status_table(
    config: Config, entries: Sequence[DatasetStatus], at: datetime | None = None
) -> str:
    at = at or now()
    by_key = {(e.source_id, e.dataset): e for e in entries}
    rows = []
    for source in config.sources:
        for dataset in config.datasets:
            e = by_key.get((source.id, dataset.name))
            if e is None:
                rows.append([source.id, dataset.name, "never", "-", "-", "-", ""])
                continue
            age = (at - e.last_success).total_seconds() if e.last_success else None
            rows.append(
                [
                    source.id,
                    dataset.name,
                    e.last_success.strftime("%Y-%m-%d %H:%M:%S%z") if e.last_success else "never",
                    human_duration(age),
                    f"{e.last_rows:,}" if e.last_rows is not None else "-",
                    e.last_status or "-",
                    (e.last_error or "") if e.last_status != Status.OK else "",
                ]
            )
    return table(
        ["source", "dataset", "last success", "age", "rows", "last", "last error"], rows, {3, 4}
    )


def _took(started: datetime | None, ended: datetime | None) -> float | None:
    return round((ended - started).total_seconds(), 3) if started and ended else None


def _dataset_json(d: DatasetResult) -> dict[str, Any]:
    landed = d.status == Status.OK
    return {
        "status": d.status,
        "mode": d.mode,
        "rows": d.rows if landed else None,
        "bytes": d.bytes if landed else None,
        "inserted": d.inserted if landed else None,
        "deleted": d.deleted if landed else None,
        "attempts": d.attempts,
        "watermark": d.watermark if landed else None,
        "error": d.error,
        "started_at": iso(d.started_at),
        "ended_at": iso(d.ended_at),
        "seconds": _took(d.started_at, d.ended_at),
    }


def pass_document(
    results: Sequence[SourceResult],
    config: Config,
    *,
    started_at: datetime,
    seconds: float,
    exit_code: int,
    error: str | None = None,
) -> dict[str, Any]:
    """`syncd once --json`: every source and dataset of the pass, and the totals.
    docs/reference/once-json.schema.json is its schema."""
    names = {s.id: s.name for s in config.sources}
    datasets = [d for r in results for d in r.datasets.values()]
    differ = rowdiff.current()
    return {
        "version": JSON_VERSION,
        "status": "ok" if exit_code == 0 else "failed",
        "exit_code": exit_code,
        "error": error,
        "started_at": iso(started_at),
        "ended_at": iso(now()),
        "seconds": round(seconds, 3),
        "differ": differ.name,
        "differ_reason": differ.reason,
        "totals": {
            "sources": len(results),
            "sources_ok": sum(1 for r in results if r.status == Status.OK),
            "sources_failed": sum(1 for r in results if r.status == Status.FAILED),
            "sources_aborted": sum(1 for r in results if r.status == Status.ABORTED),
            "sources_skipped": sum(1 for r in results if r.status == Status.SKIPPED),
            "datasets": len(datasets),
            "datasets_ok": sum(1 for d in datasets if d.status == Status.OK),
            "datasets_failed": sum(
                1 for d in datasets if d.status in (Status.FAILED, Status.ABORTED)
            ),
            "datasets_skipped": sum(1 for d in datasets if d.status == Status.SKIPPED),
            "rows": sum(r.rows for r in results),
            "bytes": sum(r.bytes for r in results),
        },
        "sources": {
            r.source_id: {
                "name": names.get(r.source_id),
                "status": r.status,
                "pass_id": r.pass_id,
                "error": r.error,
                "rows": r.rows,
                "bytes": r.bytes,
                "started_at": iso(r.started_at),
                "ended_at": iso(r.ended_at),
                "seconds": _took(r.started_at, r.ended_at),
                "datasets": {name: _dataset_json(d) for name, d in r.datasets.items()},
            }
            for r in results
        },
    }


def config_error_document(problems: Sequence[str]) -> dict[str, Any]:
    """`syncd once --json` on a config it cannot use (exit 2): the problems, nothing ran."""
    return {
        "version": JSON_VERSION,
        "status": "config_error",
        "exit_code": 2,
        "error": "the config cannot be used",
        "errors": list(problems),
    }


def dumps(document: dict[str, Any]) -> str:
    """One line of ASCII JSON: readable in any locale, and the last line of the output."""
    return json.dumps(document, ensure_ascii=True)
