"""A reload (SIGHUP) inside the daemon: a whole new Config, built and validated first.

A bad one is logged, counted in `syncd_config_reloads_total{outcome="failure"}` and ignored: the
daemon keeps running the config it had. A good one is swapped in at once: limits resize in place,
the scheduler and /status follow the new sources, the HTTP listener moves if its address changed,
and new syncs use the new config while in-flight ones finish on the one they started with. Either
way the outcome is acknowledged to `syncd reload` (`reloadstate.ReloadRecorder`) and to systemd.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from syncd import config as config_module
from syncd.config import ConfigError
from syncd.logevents import Event
from syncd.observe.metrics import Metrics
from syncd.service.control import DaemonControl
from syncd.service.dispatch import Dispatcher
from syncd.service.http import HttpServer
from syncd.service.notify import Notifier
from syncd.service.reloadstate import ReloadOutcome, ReloadRecorder

log = logging.getLogger(__name__)


class Reloader:
    def __init__(
        self,
        config_path: Path,
        dispatcher: Dispatcher,
        control: DaemonControl,
        http: HttpServer,
        metrics: Metrics,
        notifier: Notifier,
        recorder: ReloadRecorder,
    ) -> None:
        self.config_path = config_path
        self.dispatcher = dispatcher
        self.control = control
        self.http = http
        self.metrics = metrics
        self.notifier = notifier
        self.recorder = recorder
        for outcome in ReloadOutcome:  # exported at 0 before the first reload
            metrics.reloads.labels(outcome)

    async def reload(self) -> None:
        self.notifier.reloading()
        try:
            # the secrets where the running config found them (--credentials-dir included)
            new = config_module.load(self.config_path, self.dispatcher.config.credentials_dir)
        except ConfigError as exc:
            first = exc.problems[0] if exc.problems else "invalid config"
            more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            log.error(
                "reload rejected, still running the previous config: %s%s",
                first,
                more,
                extra={"event": Event.RELOAD_REJECTED},
            )
            self.metrics.reloads.labels(ReloadOutcome.FAILURE).inc()
            self.metrics.reload_ok.set(0)
            self.recorder.record(ReloadOutcome.FAILURE, f"{first}{more}")
            self.notifier.ready("reload rejected: running the previous config")
            return
        old = self.dispatcher.configure(new)
        self.control.configure(new)
        if (new.http.host, new.http.port) != (old.http.host, old.http.port):
            try:
                await self.http.start(new.http.host, new.http.port)
            except OSError as exc:
                log.error(
                    "reload: cannot listen on %s:%d (%s); still on %s:%d",
                    new.http.host,
                    new.http.port,
                    exc.strerror or exc,
                    old.http.host,
                    old.http.port,
                    extra={"event": Event.RELOAD_LISTEN_FAILED},
                )
        await self.dispatcher.follow_destination(old)
        self.metrics.reloads.labels(ReloadOutcome.SUCCESS).inc()
        self.metrics.reload_ok.set(1)
        removed = {s.id for s in old.sources} - {s.id for s in new.sources}
        added = {s.id for s in new.sources} - {s.id for s in old.sources}
        limits = ", ".join(f"{knob} {n}" for knob, n in asdict(new.concurrency).items())
        summary = (
            f"config reloaded: {len(new.sources)} sources (+{len(added)}, -{len(removed)}), "
            f"{len(new.datasets)} datasets; concurrency {limits}"
        )
        log.info("%s", summary, extra={"event": Event.RELOADED})
        self.recorder.record(ReloadOutcome.SUCCESS, summary)
        self.notifier.ready()
