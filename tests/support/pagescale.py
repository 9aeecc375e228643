"""A status board at national scale, built with the daemon's own classes: 5,570 municipalities
x 2 datasets, loaded from a real config and seeded as the ledger would seed it (most ok, some
failing with real-looking errors, some never synced, some late, some running).

Used by tests/scenarios/test_statuspage_scale.py and by tests/measure_statuspage.py (the
measurement reported in docs/benchmarks.md)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd import config as config_mod
from syncd.engine.results import DatasetResult, SourceResult
from syncd.ledger import DatasetStatus, Status
from syncd.service import statuspage
from syncd.service.http import Control
from syncd.service.statusboard import StatusBoard
from syncd.service.statusquery import status_query

MUNICIPALITIES = 5570
DATASETS = ("cidadaos", "lista_nominal_hipertensos")
AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
ERRORS = (
    "connection: could not connect within timeouts.connect (10s) to 10.20.0.7:5433",
    'server 28P01: password authentication failed for user "esus_leitura"',
    'server 42703: column "co_seq_fat_cidadao_pec" does not exist',
    "timeout: the server sent nothing for timeouts.idle_stream (5m)",
)
WORDS = ("São", "José", "Santa", "Ribeirão", "Campos", "Preto", "Nova", "Boa", "Vista", "do")
WORDS += ("Sul", "Alegre", "Paraíso", "Itá", "Jardim", "Bom", "Jesus", "das", "Flores", "Serra")


def municipality(i: int) -> tuple[str, str]:
    """An IBGE-like 6-digit id and a name that repeats nowhere."""
    rng = random.Random(i)
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
    return f"{110000 + i * 9}", f"{words} {i}"


def config_text(n: int = MUNICIPALITIES) -> str:
    lines = [
        "destination: {dsn: 'postgresql://syncd@analytics.internal:5432/impulso'}",
        "datasets:",
        *(f"  - {{name: {name}, table: public.tb_{name}}}" for name in DATASETS),
        "sources:",
    ]
    for i in range(n):
        sid, name = municipality(i)
        lines.append(
            f"  - {{id: '{sid}', name: '{name}', dsn: 'postgresql://esus_leitura@10.{i // 250}."
            f"{i % 250}.7:5433/esus'}}"
        )
    return "\n".join(lines) + "\n"


def kind(i: int) -> str:
    """What happened to municipality i: a fixed mix, the same at every run."""
    if i % 20 == 3:
        return "failed"  # 5%
    if i % 50 == 11:
        return "never"  # 2%
    if i % 33 == 5:
        return "late"  # 3%
    if i % 170 == 7:
        return "running"
    return "ok"


def board(n: int = MUNICIPALITIES) -> tuple[StatusBoard, dict[str, datetime]]:
    """The board, and each source's next due time."""
    config = config_mod.loads(config_text(n))
    status = StatusBoard()
    status.configure(config)
    entries, running = [], []
    for i, source in enumerate(config.sources):
        rng = random.Random(i)
        what = kind(i)
        if what == "never":
            continue
        age = timedelta(hours=rng.uniform(80, 120) if what == "late" else rng.uniform(0.1, 23))
        for d, name in enumerate(DATASETS):
            failed = what == "failed" and d == i % 2
            entries.append(
                DatasetStatus(
                    source.id,
                    name,
                    AT - age - timedelta(days=1 if failed else 0),
                    rng.randint(1_000, 400_000),
                    Status.FAILED if failed else Status.OK,
                    AT - age,
                    ERRORS[i % len(ERRORS)] if failed else None,
                )
            )
        if what == "running":
            running.append(source.id)
    status.seed(entries)
    status.seed_durations({s.id: 20 + (i * 7919) % 1800 for i, s in enumerate(config.sources)})
    for sid in running:
        status.source_started(sid)
    due = {s.id: AT + timedelta(hours=1 + i % 23) for i, s in enumerate(config.sources)}
    return status, due


def finish(status: StatusBoard, source_id: str, ok: bool) -> None:
    """One more sync of a source ends, as the dispatcher reports it."""
    status.source_started(source_id)
    ended = AT + timedelta(seconds=42)
    datasets = {
        name: DatasetResult(
            name,
            Status.OK if ok else Status.FAILED,
            rows=1234,
            ended_at=ended,
            error=None if ok else "server 42P01: relation does not exist",
        )
        for name in DATASETS
    }
    status_ = Status.OK if ok else Status.FAILED
    result = SourceResult(source_id, datasets, status=status_, started_at=AT, ended_at=ended)
    status.source_finished(result)


def board_control(status: StatusBoard, due: dict[str, datetime], at: datetime = AT) -> Control:
    """The HTTP side of a daemon showing this board (as service.control.DaemonControl answers it)."""

    async def ready() -> tuple[bool, str]:
        return True, "ok"

    def snapshot(query: Mapping[str, str]) -> dict[str, Any]:
        return status.snapshot(due, status_query(query))

    def page(nonce: str, query: Mapping[str, str]) -> str:
        return statuspage.page(status.sources, due, at, nonce, "scale", query)

    return Control(ready, lambda: b"", snapshot, lambda _: None, lambda: None, page)
