"""`syncd verify`: per municipality and dataset, does the destination hold exactly the source's
rows? Writes nothing anywhere; exit 0 when every dataset is equal, 1 otherwise."""

from __future__ import annotations

import sys
from typing import TextIO

import anyio

from syncd.config import Config
from syncd.engine.compare import DatasetVerdict, Verdict, verify_source
from syncd.engine.errors import classify
from syncd.engine.limits import Limits
from syncd.engine.shared import Engine
from syncd.exitstatus import EXIT_FAILED, EXIT_OK
from syncd.observe.report import table


async def run_verify(config: Config, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    engine = Engine.create(config, Limits(config.concurrency))
    try:
        await engine.destination.open(setup=False)
    except Exception as exc:
        print(f"destination {config.destination.dsn}: {classify(exc).reason}", file=err)
        return EXIT_FAILED
    verdicts: dict[str, list[DatasetVerdict]] = {}
    try:

        async def one(source_id: str) -> None:
            source = config.source(source_id)
            assert source is not None
            async with engine.limits.source_slot(source.host_key):
                verdicts[source.id] = await verify_source(engine, source, config.datasets)

        async with anyio.create_task_group() as tg:
            for source in config.sources:
                tg.start_soon(one, source.id)
    finally:
        await engine.close()
    rows = [v for s in config.sources for v in verdicts[s.id]]
    print(
        table(
            [
                "source",
                "dataset",
                "verdict",
                "source rows",
                "destination rows",
                "missing",
                "extra",
                "note",
            ],
            [
                [
                    v.source_id,
                    v.dataset,
                    v.verdict,
                    f"{v.source_rows:,}",
                    f"{v.destination_rows:,}",
                    f"{v.missing:,}",
                    f"{v.extra:,}",
                    v.error or "",
                ]
                for v in rows
            ],
            right={3, 4, 5, 6},
        ),
        file=out,
    )
    differ = [v for v in rows if v.verdict != Verdict.EQUAL]
    print(
        f"\n{len(rows) - len(differ)} of {len(rows)} datasets equal"
        + (f"; {len(differ)} differ or could not be compared" if differ else ""),
        file=out,
    )
    return EXIT_OK if not differ else EXIT_FAILED
