"""The daemon-wide sections of the config (destination, concurrency, schedule, http, timeouts,
retry): frozen dataclasses, each default stated once as its field's default, each key described
beside its field (syncd.config.keydoc). syncd.config.model holds the rest and re-exports these."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

from syncd.config.dsn import Dsn
from syncd.config.keydoc import doc, part_of

DEFAULT_SCHEMA = "syncd_data"
DEFAULT_SOURCE_COLUMN = "municipio_id_sus"
DEFAULT_BUCKETS = 16
DEFAULT_NOTIFY_CHANNEL = "syncd"
DEFAULT_RETYPE_ONLINE_ABOVE = 16 * 1024**2


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    """The analytical database everything lands in."""

    dsn: Dsn = field(
        metadata=doc("`postgresql://` URI of the analytical database; shown redacted everywhere")
    )
    password_file: Path | None = field(
        default=None,
        metadata=doc(
            "first line is the password; wins over the DSN, the credential and `PGPASSWORD`; "
            "a missing, unreadable or empty file is named and fails at once (not retried as a "
            "network error). Without it: the DSN's password, else the `analytics` credential "
            "([Secrets](../configure/secrets.md))"
        ),
    )
    schema: str = field(
        default=DEFAULT_SCHEMA,
        metadata=doc(
            "where dataset tables live; lowercase identifier, not `syncd`, `public`, "
            "`information_schema` or any `pg_*` (PostgreSQL's own; `pg_temp` is per session)"
        ),
    )
    source_column: str = field(
        default=DEFAULT_SOURCE_COLUMN,
        metadata=doc("the column holding the source id, added to every dataset table"),
    )
    buckets: int = field(
        default=DEFAULT_BUCKETS,
        metadata=doc(
            "hash partitions of each new dataset table (1 to 256), however many "
            "municipalities; `check --online` weighs it against the lock table"
        ),
    )
    notify_channel: str | None = field(
        default=DEFAULT_NOTIFY_CHANNEL,
        metadata=doc(
            "`pg_notify` channel announcing each landed municipality ([NOTIFY](notify.md)); "
            'a lowercase identifier; `null` or `""`: no notification'
        ),
    )
    max_size: int | None = field(
        default=None,
        metadata=doc(
            "disk budget of the analytical database (`400GB`, `500MB`): a landing that would "
            "take the database past it is not started, and one that crosses it while streaming "
            "is rolled back; other municipalities go on "
            "([the disk budget](../operate/disk.md)). Unset: no budget",
            kind="size",
        ),
    )
    retype_online_above: int = field(
        default=DEFAULT_RETYPE_ONLINE_ABOVE,
        metadata=doc(
            "a dataset table larger than this (`16MB`; `0`: every table) changes a column's "
            "type online, filling a new column in small batches, rather than with one ALTER "
            "that rewrites it ([online](../design/landing.md#changing-a-columns-type-online)); "
            "a smaller one is ALTERed, and goes online too when that takes longer than "
            "`timeouts.lock`",
            kind="size",
        ),
    )


@dataclass(frozen=True, slots=True)
class Concurrency:
    """How much runs at once."""

    sources: int = field(
        default=32, metadata=doc("municipalities syncing at once, across the daemon")
    )
    per_host: int = field(
        default=4,
        metadata=doc(
            "sessions at once against one source `host:port` (several municipalities may "
            "share a server)"
        ),
    )
    writers: int = field(default=16, metadata=doc("COPY streams into the destination at once"))


@dataclass(frozen=True, slots=True)
class DailyWindow:
    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """When each source is due."""

    interval: float = field(default=86400.0, metadata=doc("how often each source is due"))
    window: DailyWindow | None = field(
        default=None,
        metadata=doc(
            '`"03:00-13:00"`: start syncs only inside this daily window (may cross midnight)',
            kind="daily window `HH:MM-HH:MM`",
        ),
    )
    timezone: str = field(default="America/Sao_Paulo", metadata=doc("the window's time zone"))
    jitter: float = field(
        default=600.0,
        metadata=doc("spread of start times, so 650 sources do not start in one second"),
    )
    failed_backoff: float = field(
        default=300.0, metadata=doc("a failed source is tried again this much later...")
    )
    failed_backoff_max: float = field(
        default=7200.0, metadata=doc("...doubling per consecutive failure, up to this")
    )


@dataclass(frozen=True, slots=True)
class Http:
    """The HTTP endpoint: status page, health, metrics, triggers."""

    host: str = field(
        default="127.0.0.1",
        metadata=doc(
            "the HTTP endpoint (an IPv6 host in brackets: `[::1]:9187`)",
            key="listen",
            kind="`host:port`",
        ),
    )
    port: int = field(default=9187, metadata=part_of("listen"))
    token_file: Path | None = field(
        default=None,
        metadata=doc(
            "bearer token for the POST endpoints; without it, the `http-token` credential "
            "(neither: they answer 403)"
        ),
    )

    @property
    def listen(self) -> str:
        """As `http.listen` is written: host:port, an IPv6 host in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long each wait may last."""

    connect: float = field(default=30.0, metadata=doc("connecting to a server"))
    statement: float = field(
        default=3600.0,
        metadata=doc("`statement_timeout` of source sessions (one COPY over a slow link)"),
    )
    idle_stream: float = field(
        default=300.0,
        metadata=doc(
            "no bytes moving for this long aborts the dataset; also the longest any other "
            "single command may go unanswered"
        ),
    )
    lock: float = field(
        default=0.5,
        metadata=doc(
            "destination `lock_timeout` for the rare DDL (a new dataset table, an added "
            "column, a column's type change): the longest a reader can wait on syncd. Landings "
            "take no lock a reader waits for"
        ),
    )
    shutdown_grace: float = field(
        default=60.0, metadata=doc("on SIGTERM, how long in-flight syncs may finish")
    )
    destination_statement: float = field(
        default=3600.0,
        metadata=doc(
            "`statement_timeout` of destination sessions, whatever the analytical database's "
            "or role's default (a DBA's guard for analysts must not cut a landing's COPY)"
        ),
    )
    disk_probe: float = field(
        default=60.0,
        metadata=doc(
            "while the analytical database is out of disk space, how often a probe write tests "
            "whether landing may resume ([a full disk](../operate/disk.md))"
        ),
    )


@dataclass(frozen=True, slots=True)
class Retry:
    """Failures that can pass (connection lost, server restart, timeout), within a pass."""

    attempts: int = field(
        default=4,
        metadata=doc(
            "attempts per dataset (and per municipality, for a lost connection) for failures "
            "that can pass"
        ),
    )
    backoff: float = field(
        default=2.0, metadata=doc("first backoff; doubles per attempt, half of it random")
    )
    max_backoff: float = field(default=120.0, metadata=doc("backoff cap"))
