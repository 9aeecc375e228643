"""The HTTP control facade (`DaemonControl`, the `http.Control` the server calls): readiness,
/status, the status page,
the manual trigger and the token that guards it, answered from the dispatcher's state."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from syncd import __version__
from syncd.config import Config
from syncd.engine.results import now
from syncd.logevents import Event
from syncd.observe.metrics import Metrics
from syncd.service import statuspage
from syncd.service.clock import Clock
from syncd.service.dispatch import Dispatcher
from syncd.service.http import Control
from syncd.service.readiness import Readiness
from syncd.service.statusboard import StatusBoard
from syncd.service.statusquery import status_query

log = logging.getLogger(__name__)


class DaemonControl:
    def __init__(
        self,
        dispatcher: Dispatcher,
        readiness: Readiness,
        board: StatusBoard,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.dispatcher = dispatcher
        self.readiness = readiness
        self.board = board
        self.metrics = metrics
        self.clock = clock
        self._token: str | None = None
        self.configure(dispatcher.config)

    def configure(self, config: Config) -> None:
        """Follow a config: the board lists its sources, the metrics its sources and datasets,
        and the token is read again."""
        self.board.configure(config)
        self.metrics.configure([d.name for d in config.datasets], [s.id for s in config.sources])
        self.metrics.sources.set(len(config.sources))
        self.metrics.all_datasets = frozenset(d.name for d in config.datasets)
        self._token = read_token(config)

    def control(self) -> Control:
        return Control(
            self.ready, self.metrics.render, self.status, self.trigger, self.token, self.page
        )

    def token(self) -> str | None:
        return self._token

    async def ready(self) -> tuple[bool, str]:
        return await self.readiness.check(self.dispatcher.engine)

    def status(self, query: Mapping[str, str]) -> dict[str, Any]:
        return self.board.snapshot(self._next_due(), status_query(query))

    def page(self, nonce: str, query: Mapping[str, str]) -> str:
        at = self.clock.now()
        via = {s.id: s.bastion.name for s in self.dispatcher.config.sources if s.bastion}
        return statuspage.page(
            self.board.sources,
            self._next_due(),
            at,
            nonce,
            __version__,
            query,
            via,
            disk=self.board.disk_report,
        )

    def trigger(self, source_id: str) -> dict[str, Any] | None:
        dispatcher = self.dispatcher
        if dispatcher.config.source(source_id) is None or not dispatcher.scheduler.trigger(
            source_id
        ):
            return None
        dispatcher.wake()
        return {
            "source": source_id,
            "queued": True,
            "running": source_id in dispatcher.in_flight,
            # on the clock of the syncs' own times: the run this asked for starts at or after it
            "requested_at": now().isoformat(),
        }

    def _next_due(self) -> dict[str, datetime]:
        scheduler = self.dispatcher.scheduler
        return {s.id: scheduler.next_due(s.id) for s in self.dispatcher.config.sources}


def read_token(config: Config) -> str | None:
    path = config.http.token_file
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        log.error(
            "http.token_file %s: %s; POST endpoints disabled",
            path,
            exc.strerror or exc,
            extra={"event": Event.TOKEN_UNUSABLE},
        )
        return None
    if not token:
        log.error(
            "http.token_file %s is empty; POST endpoints disabled",
            path,
            extra={"event": Event.TOKEN_UNUSABLE},
        )
        return None
    return token
