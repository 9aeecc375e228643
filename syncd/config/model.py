"""The config as the program sees it: frozen dataclasses, built once per load or reload.

Every default is stated here once, as the default of its field; the builders read it from here
(from an instance like `Schedule()`, or, for DestinationSettings, which needs a dsn, from the
DEFAULT_* constants its fields use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from enum import StrEnum
from pathlib import Path

from syncd.config.dsn import Dsn
from syncd.config.problem import Notice

DEFAULT_SCHEMA = "syncd_data"
DEFAULT_SOURCE_COLUMN = "municipio_id_sus"
DEFAULT_BUCKETS = 16
DEFAULT_NOTIFY_CHANNEL = "syncd"


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    dsn: Dsn
    password_file: Path | None = None
    schema: str = DEFAULT_SCHEMA
    source_column: str = DEFAULT_SOURCE_COLUMN
    buckets: int = DEFAULT_BUCKETS  # hash partitions per dataset table, however many municipalities
    notify_channel: str | None = (
        DEFAULT_NOTIFY_CHANNEL  # None: no NOTIFY after a municipality lands
    )


@dataclass(frozen=True, slots=True)
class Concurrency:
    sources: int = 32
    per_host: int = 4
    writers: int = 16


@dataclass(frozen=True, slots=True)
class DailyWindow:
    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True, slots=True)
class Schedule:
    interval: float = 86400.0
    window: DailyWindow | None = None
    timezone: str = "America/Sao_Paulo"
    jitter: float = 600.0
    failed_backoff: float = 300.0  # a failed source is retried this much later, doubling...
    failed_backoff_max: float = 7200.0  # ...up to this


@dataclass(frozen=True, slots=True)
class Http:
    host: str = "127.0.0.1"
    port: int = 9187
    token_file: Path | None = None

    @property
    def listen(self) -> str:
        """As `http.listen` is written: host:port, an IPv6 host in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 30.0
    statement: float = 3600.0  # one COPY over a slow municipal link
    idle_stream: float = 300.0  # no bytes for this long: the dataset is aborted
    lock: float = 0.5  # destination lock_timeout for DDL: the longest a reader waits on syncd
    shutdown_grace: float = 60.0


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 4
    backoff: float = 2.0
    max_backoff: float = 120.0


@dataclass(frozen=True, slots=True)
class Bastion:
    """An SSH host syncd reaches sources through (`bastions.<name>`), or the rendezvous host of
    reverse tunnels. Only file paths here: the key and its passphrase are read when connecting.
    `host_key` is public: the pinned key the bastion must present ("ssh-ed25519 AAAA...")."""

    name: str
    host: str
    user: str
    private_key_file: Path
    host_key: str
    port: int = 22
    passphrase_file: Path | None = None
    keepalive_interval: float = 15.0  # an SSH keepalive after this long without traffic...
    keepalive_count_max: int = 3  # ...and the connection given up after this many unanswered

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    dsn: Dsn  # behind a bastion: host and port as the bastion sees them
    name: str | None = None
    password_file: Path | None = None
    params: tuple[tuple[str, str], ...] = ()
    bastion: Bastion | None = None  # `ssh_tunnel: {bastion: NAME}`, resolved

    @property
    def label(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id

    @property
    def host_key(self) -> str:
        """What `concurrency.per_host` counts against: one PostgreSQL server, the DSN's
        host:port (never the bastion's); behind a bastion, as that bastion sees it, so
        `localhost:5433` behind two bastions is two servers."""
        key = self.dsn.host_key
        return f"{self.bastion.name}/{key}" if self.bastion is not None else key


@dataclass(frozen=True, slots=True)
class Variant:
    """One way to read a dataset; `when_*` probes the source to choose it (PEC versions)."""

    table: str | None = None
    query: str | None = None
    when_column: str | None = None  # schema.table.column that must exist
    when_table: str | None = None  # schema.table that must exist

    @property
    def probe(self) -> str:
        if self.when_column:
            return f"column {self.when_column}"
        if self.when_table:
            return f"table {self.when_table}"
        return "default"


@dataclass(frozen=True, slots=True)
class Incremental:
    """Move only rows past the stored watermark of `cursor`, upserted by `key`."""

    cursor: str
    key: tuple[str, ...]
    lookback: int | None = None  # cursor units (ids) back from the watermark...
    lookback_seconds: float | None = None  # ...or a duration (dates, timestamps, YYYYMMDD keys)
    full_refresh_every: float | None = None


class DatasetMode(StrEnum):
    """`datasets[].mode`: every row each time, or only the rows past the watermark."""

    SNAPSHOT = "snapshot"
    INCREMENTAL = "incremental"


DEFAULT_FULL_REFRESH_EVERY = 7 * 86400.0  # snapshot datasets: rewritten whole, trusting nothing


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    variants: tuple[Variant, ...]
    incremental: Incremental | None = None
    # how often the municipality's rows are rewritten whole, trusting nothing stored (landing v3
    # otherwise writes only what changed); None: never. Incremental datasets: theirs.
    full_refresh_every: float | None = DEFAULT_FULL_REFRESH_EVERY

    @property
    def table(self) -> str | None:
        return self.variants[0].table if len(self.variants) == 1 else None

    @property
    def query(self) -> str | None:
        return self.variants[0].query if len(self.variants) == 1 else None

    @property
    def kind(self) -> str:
        if len(self.variants) > 1:
            return "variants"
        return "table" if self.table else "query"

    @property
    def mode(self) -> DatasetMode:
        return DatasetMode.INCREMENTAL if self.incremental else DatasetMode.SNAPSHOT


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None
    destination: DestinationSettings
    sources: tuple[Source, ...]
    datasets: tuple[Dataset, ...]
    concurrency: Concurrency = field(default_factory=Concurrency)
    schedule: Schedule = field(default_factory=Schedule)
    http: Http = field(default_factory=Http)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: Retry = field(default_factory=Retry)
    bastions: tuple[Bastion, ...] = ()
    warnings: tuple[Notice, ...] = ()
    # where the secrets the config names no file for were looked for (a reload looks there again)
    credentials_dir: Path | None = None

    def source(self, source_id: str) -> Source | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def dataset(self, name: str) -> Dataset | None:
        return next((d for d in self.datasets if d.name == name), None)
