"""What every municipality sync of a run shares: the config, the destination and its pool, the
limits, the per-source locks, the bastion connections, the progress listeners, the retry
policy and the destination's disk (its budget, and whether it is full)."""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry import trace

from syncd import ledger
from syncd.config import Config
from syncd.engine import spans
from syncd.engine.destination import Destination
from syncd.engine.diskbudget import Disk
from syncd.engine.limits import Limits, pool_size
from syncd.engine.progress import Progress
from syncd.engine.retry import RetryPolicy
from syncd.engine.synclock import SourceLocks
from syncd.engine.tunnel import Tunnels


@dataclass(eq=False)
class Engine:
    """What every municipality sync shares."""

    config: Config
    destination: Destination
    limits: Limits
    locks: SourceLocks
    instance: str = field(default_factory=ledger.instance_name)
    progress: Progress = field(default_factory=Progress)
    tracer: trace.Tracer = field(default_factory=spans.tracer)
    tunnels: Tunnels = field(default_factory=Tunnels)  # one SSH connection per bastion
    disk: Disk = field(default_factory=lambda: Disk(None, 60.0))  # the destination's disk

    @classmethod
    def create(cls, config: Config, limits: Limits, progress: Progress | None = None) -> Engine:
        progress = progress or Progress()
        limits.rates.configure(config.sources)
        destination = Destination(
            config.destination,
            config.timeouts,
            pool_size=pool_size(config.concurrency),
            observe=progress.retried,
        )
        disk = Disk(
            config.destination.max_size, config.timeouts.disk_probe, on_change=progress.disk
        )
        return cls(
            config, destination, limits, SourceLocks(destination), progress=progress, disk=disk
        )

    @property
    def retry(self) -> RetryPolicy:
        """The configured policy (`retry`), heard by this engine's progress listeners."""
        return RetryPolicy.configured(self.config.retry, self.progress.retried)

    async def close(self) -> None:
        await self.locks.close()
        await self.destination.close()
        await self.tunnels.close()
