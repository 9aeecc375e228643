"""The supervisor: one task group of side tasks (signals, dispatcher, HTTP, watchdog, ledger
refresh) beside one task group of municipality syncs.

Signals only set flags; every shutdown goes through one path (`_drain`): stop starting syncs,
wait up to `timeouts.shutdown_grace` for in-flight ones, cancel the rest (a cancelled sync rolls
its landing back and marks its ledger rows aborted: the destination is unchanged), exit 0.
A side task that dies takes the daemon down with a clear log line and exit 1, so systemd restarts
it instead of leaving a daemon that serves /healthz and syncs nothing.

Reload (SIGHUP) builds and validates a whole new Config first; a bad one is logged, counted in
`syncd_config_reloads_total{outcome="failure"}` and ignored. A good one is swapped in at once:
limits resize in place, the scheduler and /status follow the new sources, and new syncs use the
new config while in-flight ones finish on the one they started with.
"""

from __future__ import annotations

import logging
import resource
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import anyio

from syncd import __version__, ledger
from syncd import config as config_module
from syncd.config import Config, ConfigError
from syncd.engine.errors import Side, classify
from syncd.engine.limits import Limits
from syncd.engine.results import Fanout, SourceResult, now
from syncd.engine.retry import RetryPolicy
from syncd.engine.runner import Engine
from syncd.engine.sync import sweep, sync_source
from syncd.ledger import Status
from syncd.observe.metrics import Metrics
from syncd.service import statuspage
from syncd.service.clock import Clock
from syncd.service.http import Control, HttpServer
from syncd.service.notify import Notifier, watchdog_interval
from syncd.service.reload import ReloadRecorder, state_dir
from syncd.service.scheduler import Scheduler
from syncd.service.status import StatusBoard

log = logging.getLogger("syncd.daemon")

LEDGER_REFRESH = 60.0  # seconds: pick up what other instances synced
LOCKED_RETRY = 10.0  # seconds: look again at a source another instance is syncing
DESTINATION_RETRY_MAX = 60.0


class Wakeup:
    """An event that can be waited on again and again (anyio Events are one-shot)."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None) -> None:
        with anyio.move_on_after(timeout):
            await self._event.wait()
        self._event = anyio.Event()


class Daemon:
    def __init__(
        self,
        config_path: str | Path,
        config: Config,
        *,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
        side_tasks: dict[str, Callable[[], Awaitable[None]]] | None = None,
    ):
        self.config_path = Path(config_path)
        self.config = config
        self.clock = clock or Clock()
        self.notifier = notifier or Notifier.from_env()
        self.reloads = ReloadRecorder(state_dir())  # what `syncd reload` waits for
        self.shutdown_trigger = shutdown_trigger
        self.side_tasks = dict(side_tasks or {})
        self.metrics = Metrics()
        self.board = StatusBoard()
        self.board.configure(config)
        self.limits = Limits(config.concurrency)
        self.metrics.watch_limits(self.limits.usage)
        self.metrics.sources.set(len(config.sources))
        self.metrics.configure([d.name for d in config.datasets], [s.id for s in config.sources])
        self.metrics.all_datasets = frozenset(d.name for d in config.datasets)
        self.scheduler = Scheduler(config.schedule, [s.id for s in config.sources], self.clock)
        self.metrics.due.set_function(self._due_count)
        self.progress = Fanout(self.metrics, self.board)
        self.engine: Engine | None = None
        self._retired: list[Engine] = []
        self.in_flight: dict[str, Engine] = {}  # source id -> the engine it runs on
        self._hosts: dict[str, str] = {}  # source id -> host key, for the in-flight ones
        self.stopping = anyio.Event()
        self._idle = Wakeup()
        self._wake = Wakeup()
        self._reload_requested = False
        self._token = _read_token(config)
        self._http = HttpServer(
            Control(
                self.ready,
                self.metrics.render,
                self.status,
                self.trigger,
                lambda: self._token,
                self.page,
            )
        )
        self._ready_cache: tuple[float, bool, str] = (-1e9, False, "starting")

    # -- the supervisor ------------------------------------------------------------------------

    async def run(self) -> int:
        raise_open_files_limit()
        host, port = self.config.http.host, self.config.http.port
        try:
            await self._http.start(host, port)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", host, port, exc)
            return 1
        log.info(
            "syncd %d sources, %d datasets; HTTP on http://%s:%d",
            len(self.config.sources),
            len(self.config.datasets),
            host,
            port,
        )
        try:
            async with anyio.create_task_group() as syncs:
                self._syncs = syncs
                try:
                    async with anyio.create_task_group() as side:
                        side.start_soon(self._guard, "signals", self._signals)
                        side.start_soon(self._guard, "dispatcher", self._dispatch)
                        side.start_soon(self._guard, "watchdog", self._watchdog)
                        side.start_soon(self._guard, "ledger refresh", self._refresh_ledger)
                        if self.shutdown_trigger is not None:
                            side.start_soon(self._guard, "shutdown trigger", self._on_trigger)
                        for name, task in self.side_tasks.items():
                            side.start_soon(self._guard, name, task)
                        self.notifier.ready()
                        await self.stopping.wait()
                        self.notifier.stopping()
                        await self._drain()
                        side.cancel_scope.cancel()
                finally:
                    syncs.cancel_scope.cancel()
        except* _SideTaskDied:
            died = True
        else:
            died = False
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()
        if died:
            return 1
        log.info("stopped")
        return 0

    async def _guard(self, name: str, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.critical(
                "side task %r died, stopping syncd: %s", name, classify(exc).reason, exc_info=exc
            )
            raise _SideTaskDied(name) from exc
        if not self.stopping.is_set():
            log.critical("side task %r returned, stopping syncd", name)
            raise _SideTaskDied(name)

    def request_stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    async def _on_trigger(self) -> None:
        assert self.shutdown_trigger is not None
        await self.shutdown_trigger()
        self.request_stop()
        await anyio.sleep_forever()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reload_requested = True
                    self._wake.set()
                else:
                    log.info("%s received", signal.Signals(signum).name)
                    self.request_stop()

    async def _watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            await anyio.sleep_forever()
        while True:  # pings come from the event loop itself: a stuck loop stops them
            self.notifier.watchdog()
            await anyio.sleep(interval)

    async def _drain(self) -> None:
        grace = self.config.timeouts.shutdown_grace
        if self.in_flight:
            log.info(
                "stopping: waiting up to %gs for %d syncs in flight", grace, len(self.in_flight)
            )
            with anyio.move_on_after(grace):
                while self.in_flight:
                    await self._idle.wait(None)
        if self.in_flight:
            log.warning(
                "cancelling %d syncs still running after %gs: %s",
                len(self.in_flight),
                grace,
                ", ".join(sorted(self.in_flight)),
            )
        self._syncs.cancel_scope.cancel()

    async def _close(self) -> None:
        with anyio.move_on_after(10):
            await self._http.stop()
        engines = ([self.engine] if self.engine else []) + self._retired
        for engine in engines:
            await _close_engine(engine)

    # -- the dispatcher ------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self.stopping.is_set():
            if self._reload_requested:
                self._reload_requested = False
                await self._reload()
            if self.engine is None:
                await self._connect()
                continue
            self._start_due()
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
        while not self.stopping.is_set() and not self._reload_requested:
            attempt += 1
            engine = self._new_engine(self.config)
            try:
                await engine.destination.open()
                async with engine.destination.acquire() as conn:
                    await ledger.register(conn, ledger.pairs(self.config), replace=True)
                    entries = await ledger.latest(conn)
                    successes = await ledger.last_successes(
                        conn, [d.name for d in self.config.datasets]
                    )
                    pending = await ledger.pending_since(conn)
                    durations = await ledger.last_durations(conn)
                    failures = await ledger.consecutive_failures(conn)
            except Exception as exc:
                await _close_engine(engine)
                failure = classify(exc, Side.DESTINATION)
                self._ready_cache = (self.clock.monotonic(), False, failure.reason)
                await retry.pause(failure, attempt, f"destination {self.config.destination.dsn}")
                continue
            self.board.seed(entries)
            self.board.seed_durations(durations)
            self.metrics.seed(successes)
            self.metrics.seed_failures(
                {sid: n for sid, n in failures.items() if self.config.source(sid)}
            )
            self._seed_pending(pending)
            for sid, when in successes.items():
                self.scheduler.seen_success(sid, when)
            self.metrics.ready.set(1)
            self.engine = engine
            try:
                await sweep(engine)
            except Exception as exc:
                log.warning("cleaning up after an interrupted run: %s", classify(exc).reason)
            self._ready_cache = (-1e9, False, "")
            return

    def _new_engine(self, config: Config) -> Engine:
        return Engine.create(config, self.limits, self.progress)

    def _start_due(self) -> None:
        assert self.engine is not None
        capacity = int(self.limits.sources.total_tokens)
        per_host = self.config.concurrency.per_host
        hosts = Counter(self._hosts.values())
        for sid in self.scheduler.due():
            if sid in self.in_flight:
                continue
            source = self.config.source(sid)
            if source is None:
                continue
            if len(self.in_flight) >= capacity or hosts[source.dsn.host_key] >= per_host:
                continue
            hosts[source.dsn.host_key] += 1
            triggered = self.scheduler.is_triggered(sid)
            only = self.scheduler.only(sid)
            self.scheduler.started(sid)
            self.in_flight[sid] = self.engine
            self._hosts[sid] = source.dsn.host_key
            self._syncs.start_soon(self._run_sync, source, self.engine, triggered, only)

    def _due_count(self) -> int:
        """Sources due and not running, whatever holds them back (full limiters, no destination):
        due but nothing running for long is the stalled daemon an alert must see."""
        return sum(
            1
            for sid in self.scheduler.due()
            if sid not in self.in_flight and self.config.source(sid) is not None
        )

    def _seed_pending(self, pending: dict) -> None:
        self.metrics.seed_pending({sid: w for sid, w in pending.items() if self.config.source(sid)})

    async def _run_sync(
        self, source, engine: Engine, triggered: bool, only: frozenset[str] | None = None
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
                # the last sync in flight: no landing of ours holds back what VACUUM may remove
                try:
                    await engine.destination.vacuum.flush()
                except Exception as exc:  # autovacuum does the same, later
                    log.warning("vacuum: %s", classify(exc).reason)
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
                await _close_engine(retired)

    async def _refresh_ledger(self) -> None:
        while True:
            await anyio.sleep(LEDGER_REFRESH)
            engine = self.engine
            if engine is None:
                continue
            try:
                async with engine.destination.acquire() as conn:
                    entries = await ledger.latest(conn)
                    successes = await ledger.last_successes(
                        conn, [d.name for d in engine.config.datasets]
                    )
                    pending = await ledger.pending_since(conn)
            except Exception as exc:
                log.warning("reading the ledger: %s", classify(exc).reason)
                continue
            self.board.seed(entries)  # what other instances did shows in /status too
            self.metrics.seed({sid: w for sid, w in successes.items() if self.config.source(sid)})
            self._seed_pending(pending)
            for sid, when in successes.items():
                self.scheduler.seen_success(sid, when)
            self._wake.set()

    # -- reload --------------------------------------------------------------------------------

    async def _reload(self) -> None:
        self.notifier.reloading()
        try:
            new = config_module.load(self.config_path)
        except ConfigError as exc:
            first = exc.problems[0] if exc.problems else "invalid config"
            more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            log.error("reload rejected, still running the previous config: %s%s", first, more)
            self.metrics.reloads.labels("failure").inc()
            self.metrics.reload_ok.set(0)
            self.reloads.record("failure", f"{first}{more}")
            self.notifier.ready("reload rejected: running the previous config")
            return
        old = self.config
        self.config = new
        self.limits.resize(new.concurrency)
        self.scheduler.update(new.schedule, [s.id for s in new.sources])
        # the operator just asked for these: due at once for every source, not in 24 h
        self.scheduler.datasets_added(
            {d.name for d in new.datasets} - {d.name for d in old.datasets}
        )
        self.board.configure(new)
        self.metrics.configure([d.name for d in new.datasets], [s.id for s in new.sources])
        self.metrics.sources.set(len(new.sources))
        self.metrics.all_datasets = frozenset(d.name for d in new.datasets)
        self._token = _read_token(new)
        if (new.http.host, new.http.port) != (old.http.host, old.http.port):
            try:
                await self._http.start(new.http.host, new.http.port)
            except OSError as exc:
                log.error(
                    "reload: cannot listen on %s:%d (%s); still on %s:%d",
                    new.http.host,
                    new.http.port,
                    exc.strerror or exc,
                    old.http.host,
                    old.http.port,
                )
        if self.engine is not None:
            if _same_destination(old, new):
                self.engine = replace(self.engine, config=new)
                await self._register(self.engine)
            else:  # new connections for new syncs; the old pool closes when its syncs end
                self._retired.append(self.engine)
                self.engine = None
                await self._release(self._retired[-1])
        self.metrics.reloads.labels("success").inc()
        self.metrics.reload_ok.set(1)
        removed = {s.id for s in old.sources} - {s.id for s in new.sources}
        added = {s.id for s in new.sources} - {s.id for s in old.sources}
        c = new.concurrency
        summary = (
            f"config reloaded: {len(new.sources)} sources (+{len(added)}, -{len(removed)}), "
            f"{len(new.datasets)} datasets; concurrency {c.sources}/{c.per_host}/{c.writers}"
        )
        log.info("%s", summary)
        self.reloads.record("success", summary)
        self.notifier.ready()

    async def _register(self, engine: Engine) -> None:
        try:
            async with engine.destination.acquire() as conn:
                await ledger.register(conn, ledger.pairs(engine.config), replace=True)
                self._seed_pending(await ledger.pending_since(conn))
        except Exception as exc:
            log.warning(
                "recording the configured sources in syncd.catalog: %s", classify(exc).reason
            )

    # -- what HTTP asks ------------------------------------------------------------------------

    async def ready(self) -> tuple[bool, str]:
        at, ok, reason = self._ready_cache
        if self.clock.monotonic() - at < 5:
            return ok, reason
        engine = self.engine
        if engine is None:
            return False, reason or "connecting to the destination"
        try:
            with anyio.fail_after(3):
                async with engine.destination.acquire() as conn:
                    await conn.fetchval("SELECT 1")
            ok, reason = True, ""
        except Exception as exc:
            ok, reason = False, f"destination: {classify(exc).reason}"
        self._ready_cache = (self.clock.monotonic(), ok, reason)
        self.metrics.ready.set(int(ok))
        return ok, reason

    def status(self) -> dict:
        due = {s.id: self.scheduler.next_due(s.id) for s in self.config.sources}
        return self.board.snapshot(due)

    def page(self, nonce: str) -> str:
        now = self.clock.now()
        due = {s.id: self.scheduler.next_due(s.id) for s in self.config.sources}
        rows = statuspage.rows_of(self.board.sources, due, now)
        return statuspage.render(rows, now, nonce, __version__)

    def trigger(self, source_id: str) -> dict | None:
        if self.config.source(source_id) is None or not self.scheduler.trigger(source_id):
            return None
        self._wake.set()
        return {
            "source": source_id,
            "queued": True,
            "running": source_id in self.in_flight,
            # on the clock of the syncs' own times: the run this asked for starts at or after it
            "requested_at": now().isoformat(),
        }


class _SideTaskDied(Exception):
    pass


def _same_destination(old: Config, new: Config) -> bool:
    # the notify channel is read from the engine's config at each landing: no new pool for it
    return (
        replace(old.destination, notify_channel=None)
        == replace(new.destination, notify_channel=None)
        and old.timeouts == new.timeouts
        # each municipality syncing holds a pooled connection for its landing
        and old.concurrency.sources == new.concurrency.sources
    )


async def _close_engine(engine: Engine) -> None:
    with anyio.CancelScope(shield=True), anyio.move_on_after(10):
        await engine.locks.close()
        await engine.destination.close()


def _read_token(config: Config) -> str | None:
    path = config.http.token_file
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        log.error("http.token_file %s: %s; POST endpoints disabled", path, exc.strerror or exc)
        return None
    if not token:
        log.error("http.token_file %s is empty; POST endpoints disabled", path)
        return None
    return token


def raise_open_files_limit() -> None:
    """Many sources mean many sockets: take the soft open-files limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def run_daemon(config_path: str) -> int:
    from syncd.service.runtime import load_config, run_async

    config = load_config(config_path)  # ConfigError -> exit 2 in the CLI
    daemon = Daemon(config_path, config)
    return run_async(daemon.run)
