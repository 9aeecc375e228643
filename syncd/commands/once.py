"""`syncd once`: one pass over the selected municipalities, then a summary and an exit code."""

from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass
from typing import TextIO

import anyio
from opentelemetry import trace

from syncd import ledger
from syncd.config import Config
from syncd.engine.destination import Destination
from syncd.engine.errors import classify
from syncd.engine.limits import Limits
from syncd.engine.progress import Fanout
from syncd.engine.results import SourceResult, now
from syncd.engine.shared import Engine
from syncd.engine.sync import sweep, sync_many
from syncd.exitstatus import EXIT_FAILED, EXIT_OK
from syncd.ledger import Status
from syncd.logevents import Event
from syncd.observe.metrics import Metrics
from syncd.observe.report import LiveProgress, dumps, pass_document, summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsOutput:
    """Where `syncd once` leaves its metrics: a textfile for node_exporter, a Pushgateway."""

    textfile: str | None = None
    pushgateway: str | None = None

    def write(self, metrics: Metrics, err: TextIO) -> None:
        from prometheus_client import push_to_gateway, write_to_textfile

        if self.textfile:
            try:
                write_to_textfile(self.textfile, metrics.registry)
            except OSError as exc:
                print(f"metrics textfile {self.textfile}: {exc.strerror or exc}", file=err)
        if self.pushgateway:
            try:
                push_to_gateway(self.pushgateway, job="syncd_once", registry=metrics.registry)
            except OSError as exc:
                print(f"metrics pushgateway {self.pushgateway}: {exc}", file=err)


async def _vacuum(destination: Destination) -> None:
    """What the pass deleted becomes free space for the next one."""
    try:
        await destination.vacuum.flush()
    except Exception as exc:
        log.warning(
            "vacuum after the pass: %s", classify(exc).reason, extra={"event": Event.VACUUM_FAILED}
        )


async def run_once(
    config: Config,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    metrics_output: MetricsOutput | None = None,
    tracer: trace.Tracer | None = None,
    json_output: bool = False,
) -> int:
    """One pass. On `out`: the summary table, or with `json_output` one JSON document
    (`report.pass_document`), whatever the outcome. Messages for people go to `err`."""
    started, started_at = time.monotonic(), now()

    def finish(code: int, results: list[SourceResult], error: str | None = None) -> int:
        if json_output:
            document = pass_document(
                results,
                config,
                started_at=started_at,
                seconds=time.monotonic() - started,
                exit_code=code,
                error=error,
            )
            print(dumps(document), file=out, flush=True)
        elif results:
            print(summary(results, config, time.monotonic() - started), file=out)
        return code

    if not config.sources or not config.datasets:
        missing = "sources" if not config.sources else "datasets"
        print(f"nothing to sync: the config lists no {missing}", file=err)
        return finish(EXIT_OK, [])
    progress = LiveProgress(len(config.sources), err)
    metrics = Metrics()
    limits = Limits(config.concurrency)
    metrics.watch_limits(limits.usage)
    engine = Engine.create(config, limits, Fanout(progress, metrics))
    destination = engine.destination
    try:
        await destination.open()
        async with destination.acquire() as conn:
            await ledger.register(conn, ledger.pairs(config), replace=False)
    except Exception as exc:
        await destination.close()
        message = f"destination {config.destination.dsn}: {classify(exc).reason}"
        print(message, file=err)
        return finish(EXIT_FAILED, [], message)
    if tracer is not None:
        engine.tracer = tracer
    try:
        await sweep(engine)
    except Exception as exc:  # not fatal: only marks the ledger rows of a dead run
        log.warning(
            "cleaning up after an interrupted run: %s",
            classify(exc).reason,
            extra={"event": Event.INTERRUPTED_RUN_CLEANUP_FAILED},
        )
    results: list[SourceResult] | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(progress.run)
            tg.start_soon(_cancel_on_signal, tg.cancel_scope)
            results = await sync_many(engine, config.sources, config.datasets)
            # every landing of the pass is over: a column type changing online can finish
            await destination.retypes.flush()
            await _vacuum(destination)
            tg.cancel_scope.cancel()
    finally:
        progress.clear()
        with anyio.CancelScope(shield=True):
            await engine.close()
    if results is None:  # interrupted before the pass ended
        message = "interrupted: the pass was cancelled; nothing half-written was kept"
        print(message, file=err)
        return finish(EXIT_FAILED, [], message)
    if metrics_output is not None:
        metrics_output.write(metrics, err)
    return finish(EXIT_OK if all(r.status == Status.OK for r in results) else EXIT_FAILED, results)


async def _cancel_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.warning(
                "%s: cancelling the pass (in-flight syncs change nothing)",
                signal.Signals(signum).name,
                extra={"event": Event.PASS_CANCELLED},
            )
            scope.cancel()
            return
