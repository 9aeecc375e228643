"""The supervisor: one task group of side tasks (signals, dispatcher, HTTP, watchdog, ledger
refresh) beside one task group of municipality syncs.

Signals only set flags; every shutdown goes through one path (`_drain`): stop starting syncs,
wait up to `timeouts.shutdown_grace` for in-flight ones, cancel the rest (a cancelled sync rolls
its landing back and marks its ledger rows aborted: the destination is unchanged), exit 0.
A side task that dies takes the daemon down with a clear log line and exit 1, so systemd restarts
it instead of leaving a daemon that serves /healthz and syncs nothing.

The parts: `dispatch` starts the syncs that are due, `reloader` applies SIGHUP, `control` answers
HTTP. The clock and the shutdown trigger are injected, so tests drive schedules and shutdown
without real waiting or real signals.
"""

from __future__ import annotations

import logging
import resource
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from syncd.config import Config
from syncd.engine.errors import classify
from syncd.logevents import Event
from syncd.observe.metrics import Metrics
from syncd.service.clock import Clock
from syncd.service.control import DaemonControl
from syncd.service.differ import start_differ
from syncd.service.dispatch import Dispatcher
from syncd.service.http import HttpServer
from syncd.service.notify import Notifier, watchdog_interval
from syncd.service.readiness import Readiness
from syncd.service.reloader import Reloader
from syncd.service.reloadstate import ReloadRecorder, state_dir
from syncd.service.runtime import config_path as find_config
from syncd.service.runtime import load_config, run_async
from syncd.service.statusboard import StatusBoard

log = logging.getLogger(__name__)

Task = Callable[[], Awaitable[None]]


class Daemon:
    def __init__(
        self,
        config_path: str | Path,
        config: Config,
        *,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        shutdown_trigger: Task | None = None,
        side_tasks: dict[str, Task] | None = None,
    ) -> None:
        """`shutdown_trigger`: when it returns, the daemon stops as on SIGTERM. `side_tasks`
        run beside the daemon's own and take it down if they die or return."""
        clock = clock or Clock()
        self.notifier = notifier or Notifier.from_env()
        self.shutdown_trigger = shutdown_trigger
        self.side_tasks = dict(side_tasks or {})
        self.stopping = anyio.Event()
        self.metrics = Metrics()
        self.board = StatusBoard()
        readiness = Readiness(clock, self.metrics)
        self.dispatcher = Dispatcher(
            config, clock, self.metrics, self.board, readiness, self.stopping
        )
        self.control = DaemonControl(self.dispatcher, readiness, self.board, self.metrics, clock)
        self._http = HttpServer(self.control.control())
        self.reloader = Reloader(
            Path(config_path),
            self.dispatcher,
            self.control,
            self._http,
            self.metrics,
            self.notifier,
            ReloadRecorder(state_dir()),  # what `syncd reload` waits for
        )

    @property
    def config(self) -> Config:
        return self.dispatcher.config

    async def run(self) -> int:
        raise_open_files_limit()
        host, port = self.config.http.host, self.config.http.port
        try:
            await self._http.start(host, port)
        except OSError as exc:
            log.error(
                "cannot listen on %s:%d: %s", host, port, exc, extra={"event": Event.LISTEN_FAILED}
            )
            return 1
        log.info(
            "syncd %d sources, %d datasets; HTTP on http://%s:%d",
            len(self.config.sources),
            len(self.config.datasets),
            host,
            port,
            extra={"event": Event.STARTED},
        )
        try:
            async with anyio.create_task_group() as syncs:
                try:
                    async with anyio.create_task_group() as side:
                        for name, task in self._tasks(syncs):
                            side.start_soon(self._guard, name, task)
                        self.notifier.ready()
                        await self.stopping.wait()
                        self.notifier.stopping()
                        await self._drain(syncs)
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
        log.info("stopped", extra={"event": Event.STOPPED})
        return 0

    def _tasks(self, syncs: TaskGroup) -> list[tuple[str, Task]]:
        tasks: list[tuple[str, Task]] = [
            ("signals", self._signals),
            ("dispatcher", partial(self.dispatcher.run, syncs, self.reloader.reload)),
            ("watchdog", self._watchdog),
            ("ledger refresh", self.dispatcher.refresh_ledger),
        ]
        if self.shutdown_trigger is not None:
            tasks.append(("shutdown trigger", partial(self._stop_after, self.shutdown_trigger)))
        return tasks + list(self.side_tasks.items())

    async def _guard(self, name: str, task: Task) -> None:
        try:
            await task()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            log.critical(
                "side task %r died, stopping syncd: %s",
                name,
                classify(exc).reason,
                exc_info=exc,
                extra={"event": Event.SIDE_TASK_DIED},
            )
            raise _SideTaskDied(name) from exc
        if not self.stopping.is_set():
            log.critical(
                "side task %r returned, stopping syncd",
                name,
                extra={"event": Event.SIDE_TASK_RETURNED},
            )
            raise _SideTaskDied(name)

    def request_stop(self) -> None:
        self.stopping.set()
        self.dispatcher.wake()

    async def _stop_after(self, trigger: Task) -> None:
        await trigger()
        self.request_stop()
        await anyio.sleep_forever()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.dispatcher.request_reload()
                else:
                    log.info(
                        "%s received",
                        signal.Signals(signum).name,
                        extra={"event": Event.SIGNAL_RECEIVED},
                    )
                    self.request_stop()

    async def _watchdog(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            await anyio.sleep_forever()
            return
        while True:  # pings come from the event loop itself: a stuck loop stops them
            self.notifier.watchdog()
            await anyio.sleep(interval)

    async def _drain(self, syncs: TaskGroup) -> None:
        grace = self.config.timeouts.shutdown_grace
        dispatcher = self.dispatcher
        if dispatcher.in_flight:
            log.info(
                "stopping: waiting up to %gs for %d syncs in flight",
                grace,
                len(dispatcher.in_flight),
                extra={"event": Event.STOPPING},
            )
            with anyio.move_on_after(grace):
                await dispatcher.until_idle()
        if dispatcher.in_flight:
            log.warning(
                "cancelling %d syncs still running after %gs: %s",
                len(dispatcher.in_flight),
                grace,
                ", ".join(sorted(dispatcher.in_flight)),
                extra={"event": Event.SYNCS_CANCELLED},
            )
        syncs.cancel_scope.cancel()

    async def _close(self) -> None:
        with anyio.move_on_after(10):
            await self._http.stop()
        await self.dispatcher.close()


class _SideTaskDied(Exception):
    pass


def raise_open_files_limit() -> None:
    """Many sources mean many sockets: take the soft open-files limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def run_daemon(given: str | None, credentials_dir: Path | None = None) -> int:
    """The daemon on the config `--config` names (None: $SYNCD_CONFIG, else the default)."""
    config = load_config(given, credentials_dir)  # ConfigError -> exit 2 in the CLI
    start_differ(config.differ)  # read at start only: a reload keeps the differ it started with
    daemon = Daemon(find_config(given), config)
    return run_async(daemon.run)
