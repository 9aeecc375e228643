"""`syncd status`: per municipality and dataset, what the ledger says, read once and printed as
a table or one JSON document; `--late` keeps the municipalities past their freshness."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import datetime
from typing import Any, TextIO

from syncd import ledger
from syncd.config import Config
from syncd.engine.destination import Destination
from syncd.engine.errors import classify
from syncd.engine.results import now
from syncd.exitstatus import EXIT_FAILED, EXIT_OK
from syncd.ledger import DatasetStatus, Status
from syncd.observe.report import iso, status_table
from syncd.service.statuspage import LATE

JSON_VERSION = 1


def is_late(entry: DatasetStatus | None, at: datetime) -> bool:
    """No success yet, or the last one older than LATE (48 h: the status page's, the
    syncd.freshness view's and the alert rules' threshold)."""
    if entry is None or entry.last_success is None:
        return True
    return (at - entry.last_success).total_seconds() > LATE


def _state(entries: list[DatasetStatus | None]) -> str:
    statuses = [e.last_status if e is not None else None for e in entries]
    if Status.FAILED in statuses:
        return Status.FAILED
    if None in statuses or not statuses:
        return Status.PENDING
    return Status.OK if set(statuses) == {Status.OK} else str(statuses[0])


def status_document(
    config: Config, entries: list[DatasetStatus], at: datetime, late_only: bool = False
) -> dict[str, Any]:
    """Like `GET /status`, from the ledger: per source its state, whether it is late, its last
    complete success, and per dataset the last outcome."""
    by_key = {(e.source_id, e.dataset): e for e in entries}
    sources: dict[str, Any] = {}
    for source in config.sources:
        mine = [by_key.get((source.id, d.name)) for d in config.datasets]
        late = any(is_late(e, at) for e in mine)
        if late_only and not late:
            continue
        successes = [e.last_success for e in mine if e is not None and e.last_success]
        errors = [e.last_error for e in mine if e and e.last_status != Status.OK and e.last_error]
        sources[source.id] = {
            "name": source.name,
            "state": _state(mine),
            "late": late,
            "last_success": iso(min(successes)) if len(successes) == len(mine) else None,
            "last_error": errors[0] if errors else None,
            "datasets": {
                d.name: {
                    "status": e.last_status if e else None,
                    "last_success": iso(e.last_success) if e else None,
                    "age_seconds": round((at - e.last_success).total_seconds())
                    if e and e.last_success
                    else None,
                    "rows": e.last_rows if e else None,
                    "error": e.last_error if e and e.last_status != Status.OK else None,
                    "late": is_late(e, at),
                }
                for d, e in zip(config.datasets, mine, strict=True)
            },
        }
    return {
        "version": JSON_VERSION,
        "at": at.isoformat(),
        "late_after_seconds": LATE,
        "sources": sources,
    }


async def run_status(
    config: Config,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    late: bool = False,
    as_json: bool = False,
) -> int:
    destination = Destination(config.destination, config.timeouts, pool_size=1)
    try:
        conn = await destination.connect()
    except Exception as exc:
        print(f"destination {config.destination.dsn}: {classify(exc).reason}", file=err)
        return EXIT_FAILED
    try:
        has_ledger = await conn.fetchval("SELECT to_regclass('syncd.latest') IS NOT NULL")
        entries = await ledger.latest(conn) if has_ledger else []
    finally:
        await conn.close()
    at = now()
    document = status_document(config, entries, at, late_only=late)
    if as_json:
        print(json.dumps(document, ensure_ascii=False), file=out)
    else:
        shown = [s for s in config.sources if s.id in document["sources"]]
        print(status_table(replace(config, sources=tuple(shown)), entries, at), file=out)
        if late and not shown:
            print(f"none is late (every dataset succeeded within {LATE / 3600:g} h)", file=out)
    return EXIT_OK
