"""The dispatcher: opens the destination, starts the syncs that are due within the limits, and
tells the scheduler how each ended.

It runs as one loop (`run`): apply a requested reload, connect while there is no destination,
start what is due, then sleep on the injected clock until the next due time or until something
wakes it (a sync ending, a trigger, a reload, a stop). Syncs run in the supervisor's task group,
each on the engine it started with: a reload that changes the destination retires the old
engine, which closes once its last sync ends.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta

import anyio
import asyncpg
from anyio.abc import TaskGroup

from syncd import ledger
from syncd.config import Config, Source
from syncd.engine.errors import Side, classify
from syncd.engine.limits import Limits, pool_size
from syncd.engine.progress import Fanout
from syncd.engine.results import SourceResult
from syncd.engine.retry import RetryPolicy
from syncd.engine.shared import Engine
from syncd.engine.sync import sweep, sync_source
from syncd.ledger import Status
from syncd.logevents import Event
from syncd.observe.metrics import Metrics
from syncd.service.clock import Clock
from syncd.service.readiness import Readiness
from syncd.service.scheduler import Scheduler
from syncd.service.statusboard import StatusBoard

log = logging.getLogger(__name__)

LEDGER_REFRESH = 60.0  # seconds: pick up what other instances synced
LOCKED_RETRY = 10.0  # seconds: look again at a source another instance is syncing
DESTINATION_RETRY_MAX = 60.0


class Wakeup:
    """An event that can be waited on again and again (anyio Events are one-shot), with a
    timeout on the injected clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None) -> None:
        with self._clock.move_on_after(timeout):
            await self._event.wait()
        self._event = anyio.Event()


class Dispatcher:
    def __init__(
        self,
        config: Config,
        clock: Clock,
        metrics: Metrics,
        board: StatusBoard,
        readiness: Readiness,
        stopping: anyio.Event,
    ) -> None:
        self.config = config  # the current one; a reload swaps it (`configure`)
        self.clock = clock
        self.metrics = metrics
        self.board = board
        self.readiness = readiness
        self._stopping = stopping
        self.limits = Limits(config.concurrency)
        metrics.watch_limits(self.limits.usage)
        self.scheduler = Scheduler(config.schedule, [s.id for s in config.sources], clock)
        metrics.due.set_function(self._due_count)
        self.progress = Fanout(metrics, board)
        self.engine: Engine | None = None
        self._retired: list[Engine] = []
        self.in_flight: dict[str, Engine] = {}  # source id -> the engine it runs on
        self._hosts: dict[str, str] = {}  # source id -> host key, for the in-flight ones
        self._idle = Wakeup(clock)
        self._wake = Wakeup(clock)
        self._reload_requested = False

    # -- asked from outside --------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    async def until_idle(self) -> None:
        while self.in_flight:
            await self._idle.wait(None)

    async def close(self) -> None:
        engines = ([self.engine] if self.engine else []) + self._retired
        for engine in engines:
            await close_engine(engine)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, syncs: TaskGroup, reload: Callable[[], Awaitable[None]]) -> None:
        """Until the stop: syncs start in `syncs`; a requested reload is `reload()`, applied
        here between two rounds so that no sync starts on half a config."""
        while not self._stopping.is_set():
            if self._reload_requested:
                self._reload_requested = False
                await reload()
            if self.engine is None:
                await self._connect()
                continue
            self._start_due(syncs)
            await self._wake.wait(self._seconds_to_next())

    def _seconds_to_next(self) -> float | None:
        wakeup = self.scheduler.next_wakeup()
        if wakeup is None:
            return None
        return max((wakeup - self.clock.now()).total_seconds(), 0.05)

    async def _connect(self) -> None:
        """Open the destination (and run its migrations); retry until it answers."""
        # every failure is waited out (a wrong password may be fixed by a reload), and the
        # wait ends early on a reload or a stop
        retry = RetryPolicy(
            None,
            1.0,
            DESTINATION_RETRY_MAX,
            jitter=False,
            observe=self.progress.retried,
            sleep=self._wake.wait,
        )
        attempt = 0
        while not self._stopping.is_set() and not self._reload_requested:
            attempt += 1
            engine = Engine.create(self.config, self.limits, self.progress)
            try:
                await engine.destination.open()
                async with engine.destination.acquire() as conn:
                    await ledger.register(conn, ledger.pairs(self.config), replace=True)
                    await self._reseed(conn, at_start=True)
                    # the gauge and the status page: the database's size against the budget
                    await engine.disk.measure(conn, fresh=True)
            except Exception as exc:
                await close_engine(engine)
                failure = classify(exc, Side.DESTINATION)
                self.readiness.failed(failure.reason)
                await retry.pause(failure, attempt, f"destination {self.config.destination.dsn}")
                continue
            self.metrics.ready.set(1)
            self.engine = engine
            try:
                await sweep(engine)
            except Exception as exc:
                log.warning(
                    "cleaning up after an interrupted run: %s",
                    classify(exc).reason,
                    extra={"event": Event.INTERRUPTED_RUN_CLEANUP_FAILED},
                )
            self.readiness.connected()
            return

    def _start_due(self, syncs: TaskGroup) -> None:
        assert self.engine is not None
        capacity = int(self.limits.sources.total_tokens)
        per_host = self.limits.per_host
        hosts = Counter(self._hosts.values())
        for sid in self.scheduler.due():
            if sid in self.in_flight:
                continue
            source = self.config.source(sid)
            if source is None:
                continue
            if len(self.in_flight) >= capacity or hosts[source.host_key] >= per_host:
                continue
            hosts[source.host_key] += 1
            triggered = self.scheduler.is_triggered(sid)
            only = self.scheduler.only(sid)
            self.scheduler.started(sid)
            self.in_flight[sid] = self.engine
            self._hosts[sid] = source.host_key
            syncs.start_soon(self._run_sync, source, self.engine, triggered, only)

    def _due_count(self) -> int:
        """Sources due and not running, whatever holds them back (full limiters, no destination):
        due but nothing running for long is the stalled daemon an alert must see."""
        return sum(
            1
            for sid in self.scheduler.due()
            if sid not in self.in_flight and self.config.source(sid) is not None
        )

    def _seed_pending(self, pending: dict[str, datetime]) -> None:
        self.metrics.seed_pending({sid: w for sid, w in pending.items() if self.config.source(sid)})

    # -- one sync ------------------------------------------------------------------------------

    async def _run_sync(
        self, source: Source, engine: Engine, triggered: bool, only: frozenset[str] | None = None
    ) -> None:
        """Sync a source: every dataset, or `only` the ones a reload added."""
        try:
            if only is None:
                datasets = engine.config.datasets
                known = self.scheduler.last_success(source.id)
            else:
                datasets = tuple(d for d in engine.config.datasets if d.name in only)
                known = self.scheduler.added_since(source.id)
                if not datasets:  # removed again by another reload meanwhile
                    return
            result = await sync_source(
                engine, source, datasets, check_others=not triggered, known_success=known
            )
            if only is None:
                self._record(result)
            else:
                self._record_added(result, only)
            if list(self.in_flight) == [source.id]:
                # the last sync in flight: no landing of ours holds back what VACUUM may remove,
                # nor the swap of a column type changing online
                await engine.destination.retypes.flush()
                try:
                    await engine.destination.vacuum.flush()
                except Exception as exc:  # autovacuum does the same, later
                    log.warning(
                        "vacuum: %s", classify(exc).reason, extra={"event": Event.VACUUM_FAILED}
                    )
        finally:
            self.in_flight.pop(source.id, None)
            self._hosts.pop(source.id, None)
            await self._release(engine)
            self._wake.set()
            if not self.in_flight:
                self._idle.set()

    def _record(self, result: SourceResult) -> None:
        sid = result.source_id
        if result.status == Status.OK:
            self.scheduler.succeeded(sid, result.started_at)
        elif result.status == Status.SKIPPED:
            if result.synced_elsewhere is not None:
                self.scheduler.seen_success(sid, result.synced_elsewhere)
            else:  # another instance holds it right now: look again in a while
                self.scheduler.defer(sid, timedelta(seconds=LOCKED_RETRY))
        else:
            self.scheduler.failed(sid, self.clock.now())

    def _record_added(self, result: SourceResult, names: frozenset[str]) -> None:
        """A pass of datasets a reload added: the source's regular schedule stays as it was."""
        if result.status == Status.OK or result.synced_elsewhere is not None:
            return
        locked = result.status == Status.SKIPPED  # another instance holds it right now
        self.scheduler.added_failed(result.source_id, names, self.clock.now(), failed=not locked)
        if locked:
            self.scheduler.defer(result.source_id, timedelta(seconds=LOCKED_RETRY))

    async def _release(self, engine: Engine) -> None:
        """Close a retired destination once no sync uses it any more."""
        for retired in list(self._retired):
            if retired.destination is engine.destination and not any(
                e.destination is retired.destination for e in self.in_flight.values()
            ):
                self._retired.remove(retired)
                await close_engine(retired)

    # -- the ledger, read again ----------------------------------------------------------------

    async def refresh_ledger(self) -> None:
        """Every LEDGER_REFRESH: what other instances synced, for the schedule and /status."""
        while True:
            await self.clock.sleep(LEDGER_REFRESH)
            engine = self.engine
            if engine is None:
                continue
            try:
                async with engine.destination.acquire() as conn:
                    await self._reseed(conn)
                    await engine.disk.measure(conn, fresh=True)
            except Exception as exc:
                log.warning(
                    "reading the ledger: %s",
                    classify(exc).reason,
                    extra={"event": Event.LEDGER_READ_FAILED},
                )
                continue
            self._wake.set()

    async def _reseed(self, conn: asyncpg.Connection, *, at_start: bool = False) -> None:
        """What the ledger knows, into /status, the metrics and the schedule: at start, and
        every LEDGER_REFRESH what other instances did. Only at start the last durations and
        the failures in a row: afterwards this daemon's own syncs keep those current, and
        counting failures scans the whole ledger. Everything is read before anything is
        seeded, so a failed read seeds nothing; what is seeded is filtered by the config in
        force when it is seeded."""
        entries = await ledger.latest(conn)
        successes = await ledger.last_successes(conn, [d.name for d in self.config.datasets])
        pending = await ledger.pending_since(conn)
        durations = await ledger.last_durations(conn) if at_start else {}
        failures = await ledger.consecutive_failures(conn) if at_start else {}
        configured = self.config.source  # after the reads: a reload may have landed meanwhile
        self.board.seed(entries)
        self.board.seed_durations(durations)
        self.metrics.seed({sid: when for sid, when in successes.items() if configured(sid)})
        self.metrics.seed_failures({sid: n for sid, n in failures.items() if configured(sid)})
        self._seed_pending(pending)
        for sid, when in successes.items():
            self.scheduler.seen_success(sid, when)

    # -- a reload ------------------------------------------------------------------------------

    def configure(self, new: Config) -> Config:
        """A reload's config, for the syncs that start from now on: the limits resize in place,
        the scheduler follows the new sources. Returns the config it replaces."""
        old, self.config = self.config, new
        self.limits.resize(new.concurrency)
        self.limits.rates.configure(new.sources)  # transfers under way follow the new caps
        self.scheduler.update(new.schedule, [s.id for s in new.sources])
        # the operator just asked for these: due at once for every source, not in 24 h
        self.scheduler.datasets_added(
            {d.name for d in new.datasets} - {d.name for d in old.datasets}
        )
        return old

    async def follow_destination(self, old: Config) -> None:
        """After `configure`: the same destination keeps its pool; another one gets new
        connections for new syncs, and the old pool closes when its syncs end."""
        new = self.config
        if self.engine is None:
            return
        if same_destination(old, new):
            self.engine = replace(self.engine, config=new)
            self.engine.disk.max_size = new.destination.max_size
            self.progress.disk(self.engine.disk.report())
            await self._register(self.engine)
        else:
            self._retired.append(self.engine)
            self.engine = None
            await self._release(self._retired[-1])

    async def _register(self, engine: Engine) -> None:
        try:
            async with engine.destination.acquire() as conn:
                await ledger.register(conn, ledger.pairs(engine.config), replace=True)
                self._seed_pending(await ledger.pending_since(conn))
        except Exception as exc:
            log.warning(
                "recording the configured sources in syncd.catalog: %s",
                classify(exc).reason,
                extra={"event": Event.CATALOG_WRITE_FAILED},
            )


def same_destination(old: Config, new: Config) -> bool:
    # the notify channel is read from the engine's config at each landing: no new pool for it
    # nor the disk budget, read by the engine's disk at each landing
    return (
        replace(old.destination, notify_channel=None, max_size=None)
        == replace(new.destination, notify_channel=None, max_size=None)
        and old.timeouts == new.timeouts
        and pool_size(old.concurrency) == pool_size(new.concurrency)  # asyncpg: no resizing
    )


async def close_engine(engine: Engine) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(10):
        await engine.close()
