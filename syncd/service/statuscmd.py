"""`syncd status`: per municipality and dataset, what the ledger says, read once and printed."""

from __future__ import annotations

import sys
from typing import TextIO

from syncd import ledger
from syncd.config import Config
from syncd.engine.destination import Destination
from syncd.engine.errors import classify
from syncd.observe.report import status_table
from syncd.service.runtime import EXIT_FAILED, EXIT_OK


async def run_status(config: Config, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
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
    print(status_table(config, entries), file=out)
    return EXIT_OK
