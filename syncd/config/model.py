"""The config as the program sees it: frozen dataclasses, built once per load or reload.

Every default is stated here once, as the default of its field; the builders read it from here
(from an instance like `Schedule()`, or, for DestinationSettings, which needs a dsn, from the
DEFAULT_* constants its fields use). The daemon-wide sections live in syncd.config.settings and
are re-exported here.

Every YAML key is described beside the field it fills (syncd.config.keydoc: `doc(...)` in the
field's metadata; `KEYS_WITHOUT_FIELD` for the few read into other fields), and
docs/reference/configuration.md is generated from them (`make reference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from syncd.config.dsn import Dsn
from syncd.config.keydoc import KeyDoc, doc, flattened, internal, part_of
from syncd.config.problem import Notice
from syncd.config.settings import DEFAULT_BUCKETS as DEFAULT_BUCKETS
from syncd.config.settings import DEFAULT_NOTIFY_CHANNEL as DEFAULT_NOTIFY_CHANNEL
from syncd.config.settings import DEFAULT_RETYPE_ONLINE_ABOVE as DEFAULT_RETYPE_ONLINE_ABOVE
from syncd.config.settings import DEFAULT_SCHEMA as DEFAULT_SCHEMA
from syncd.config.settings import DEFAULT_SOURCE_COLUMN as DEFAULT_SOURCE_COLUMN
from syncd.config.settings import Concurrency as Concurrency
from syncd.config.settings import DailyWindow as DailyWindow
from syncd.config.settings import DestinationSettings as DestinationSettings
from syncd.config.settings import Http as Http
from syncd.config.settings import Retry as Retry
from syncd.config.settings import Schedule as Schedule
from syncd.config.settings import Timeouts as Timeouts


@dataclass(frozen=True, slots=True)
class Bastion:
    """An SSH host syncd reaches sources through (`bastions.<name>`), or the rendezvous host of
    reverse tunnels. Only file paths here: the key and its passphrase are read when connecting.
    `host_key` is public: the pinned key the bastion must present ("ssh-ed25519 AAAA...")."""

    name: str = field(metadata=internal("the key under `bastions:`"))
    host: str = field(
        metadata=doc("the SSH host (a bastion, or the rendezvous host of reverse tunnels)")
    )
    user: str = field(metadata=doc("the user syncd logs in as"))
    private_key_file: Path = field(
        metadata=doc(
            "syncd's private key (a systemd credential); read when connecting, never shown"
        )
    )
    host_key: str = field(
        metadata=doc(
            "the bastion's public host key, pinned (`ssh-ed25519 AAAA...`, as `ssh-keyscan` "
            "prints it): any other key is refused as a security failure; checking cannot be "
            "turned off"
        )
    )
    port: int = field(default=22, metadata=doc("its SSH port"))
    passphrase_file: Path | None = field(
        default=None, metadata=doc("first line is the key's passphrase")
    )
    keepalive_interval: float = field(
        default=15.0, metadata=doc("an SSH keepalive after this long without traffic...")
    )
    keepalive_count_max: int = field(
        default=3,
        metadata=doc(
            "...and the connection dropped (its sessions retried) after this many unanswered"
        ),
    )
    compression: bool = field(
        default=True,
        metadata=doc(
            "negotiate SSH compression (zlib@openssh.com): PEC-shaped rows shrink about 3x on a "
            "slow link; `false` for a bastion on the same fast network as syncd"
        ),
    )
    max_rate: float | None = field(
        default=None,
        metadata=doc(
            "a bandwidth cap shared by every source behind this bastion, in bytes per second "
            "read from them all together (`2MB/s`, `500kB/s`, `1.5MiB/s`, `20Mbit/s`); "
            "none by default. A source's own `max_rate` applies too: the lower one holds. "
            "Changed by a reload, transfers under way included",
            kind="rate",
        ),
    )

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Source:
    """One municipal database (`sources:`, or `sources_file:`)."""

    id: str = field(
        metadata=doc(
            'letters, digits, `_`, up to 32 (e.g. the IBGE code); quote it (`"012345"`): a '
            "number YAML would change (`012345` is octal 5349, `3_549_904` is 3549904) is "
            "refused with its line, a plain one (`351570`) is kept as written. The same holds "
            "for every key that takes text (`name`, `params` values)"
        )
    )
    dsn: Dsn = field(
        metadata=doc(
            "`postgresql://` URI; `sslmode`/`sslrootcert` as libpq; percent-encode `#`, `@`, "
            "`/` in passwords; its parameters are checked against libpq's list, and those "
            "asyncpg would send the server as settings (`connect_timeout`...) refused. Behind "
            "a bastion: host and port as the bastion sees them"
        )
    )
    name: str | None = field(default=None, metadata=doc("for people"))
    password_file: Path | None = field(
        default=None,
        metadata=doc(
            "as for the destination: a missing or unreadable file fails that source at once, "
            "naming the file. Without it: the DSN's password, else the `municipios_<id>` "
            "credential"
        ),
    )
    params: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata=doc(
            "`name: value` pairs set as `syncd.<name>` in the snapshot session (bound values) "
            "for queries to read with `current_setting('syncd.<name>')`",
            kind="mapping of `name: value`",
        ),
    )
    bastion: Bastion | None = field(
        default=None,
        metadata=doc(
            "reach this source through the named SSH bastion (`bastions.<name>`); the DSN's "
            "host and port are then as the bastion sees them",
            key="ssh_tunnel.bastion",
            kind="bastion name",
        ),
    )
    max_rate: float | None = field(
        default=None,
        metadata=doc(
            "a bandwidth cap on what syncd reads from this source, in bytes per second: "
            "`2MB/s`, `500kB/s` (decimal, kB = 1000), `1.5MiB/s` (binary), `20Mbit/s` or "
            "`20Mbps` (bits, as links are sold); at least 1kB/s, none by default. Enforced "
            "as the rows are read (TCP's flow control slows the municipal server; nothing is "
            "buffered), so a pass in office hours leaves the municipality's uplink usable. "
            "Changed by a reload, transfers under way included",
            kind="rate",
        ),
    )
    delta: bool = field(
        default=True,
        metadata=doc(
            "`false`: every dataset of this source streams whole each pass, no delta "
            "transfer (a source on the central network, whose scans cost more than its link)"
        ),
    )

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

    table: str | None = field(
        default=None,
        metadata=doc(
            "`schema.table` on the source (unquoted SQL rules: case folds)",
            required="one of table, query, query_file",
        ),
    )
    query: str | None = field(
        default=None,
        metadata=doc(
            'a SQL query run in the snapshot (a "lista nominal"); as psql takes it: a leading '
            "UTF-8 BOM, trailing `;` and trailing comments (`-- fim`, `; -- fim`, `/* */`) are "
            "ignored",
            required="one of table, query, query_file",
        ),
    )
    when_column: str | None = field(
        default=None,
        metadata=doc(
            "use this variant if the source has this column (`schema.table.column`)",
            key="when.column",
        ),
    )
    when_table: str | None = field(
        default=None,
        metadata=doc(
            "use this variant if the source has this table (`schema.table`)", key="when.table"
        ),
    )

    KEYS_WITHOUT_FIELD: ClassVar[dict[str, KeyDoc]] = {
        "query_file": KeyDoc(
            "the query from this file (relative to the config file), read as `query` is",
            "path",
            required="one of table, query, query_file",
        ),
    }

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

    cursor: str = field(
        metadata=doc(
            "a monotonic column: an integer id, a date or timestamp, or a YYYYMMDD date key",
            required="with mode: incremental",
        )
    )
    key: tuple[str, ...] = field(
        metadata=doc(
            "the row identity: a column or a list of columns",
            kind="column or list of columns",
            required="with mode: incremental",
        )
    )
    lookback: int | None = field(
        default=None,
        metadata=doc(
            "re-read this far behind the watermark, for rows that commit late: a number (ids) "
            "or a duration (dates; a duration also marks an integer cursor as a YYYYMMDD key)",
            kind="whole number or duration",
        ),
    )
    lookback_seconds: float | None = field(default=None, metadata=part_of("lookback"))
    full_refresh_every: float | None = field(default=None, metadata=part_of("full_refresh_every"))


class DatasetMode(StrEnum):
    """`datasets[].mode`: every row each time, or only the rows past the watermark."""

    SNAPSHOT = "snapshot"
    INCREMENTAL = "incremental"


DEFAULT_FULL_REFRESH_EVERY = 7 * 86400.0  # snapshot datasets: rewritten whole, trusting nothing


@dataclass(frozen=True, slots=True)
class Dataset:
    """What to read from every source, and the destination table it lands in."""

    name: str = field(
        metadata=doc(
            "destination table name: lowercase identifier without `__` (syncd's own relations "
            "use it)"
        )
    )
    variants: tuple[Variant, ...] = field(
        metadata=doc(
            "ways to read the dataset, each with a `when` probe: the first whose probe holds "
            "on the source is used; one variant may go without `when` (the fallback)",
            kind="list of variants",
            required="one of table, query, query_file, variants",
        )
    )
    incremental: Incremental | None = field(
        default=None, metadata=flattened("`mode: incremental` and its keys")
    )
    # None: never. Incremental datasets: theirs (none unless given).
    full_refresh_every: float | None = field(
        default=DEFAULT_FULL_REFRESH_EVERY,
        metadata=doc(
            "rewrite the municipality's rows whole this often, trusting nothing stored "
            "(otherwise a pass writes only what changed); incremental datasets: none unless "
            "given, and then also reload them whole, which catches updates and deletes"
        ),
    )

    # None: by kind (tables on, queries off); see engine/delta.py
    delta: bool | None = field(
        default=None,
        metadata=doc(
            "delta transfer: only the rows the destination lacks cross the municipal link, "
            "found by comparing row fingerprints the source computes (snapshot datasets). "
            "Default: on for tables, off for queries (a query calling `now()` changes every "
            "row each day); `true` or `false` to choose",
            kind="true or false",
        ),
    )

    KEYS_WITHOUT_FIELD: ClassVar[dict[str, KeyDoc]] = {
        "table": KeyDoc(
            "`schema.table` on the source (unquoted SQL rules: case folds); the one variant",
            "text",
            required="one of table, query, query_file, variants",
        ),
        "query": KeyDoc(
            'a SQL query run in the snapshot (a "lista nominal"), as `variants[].query`',
            "text",
            required="one of table, query, query_file, variants",
        ),
        "query_file": KeyDoc(
            "the query from this file (relative to the config file), read as `query` is",
            "path",
            required="one of table, query, query_file, variants",
        ),
        "mode": KeyDoc(
            "`incremental`: move only new rows, past the watermark of `cursor`",
            " or ".join(f"`{m}`" for m in DatasetMode),
            default=DatasetMode.SNAPSHOT,
        ),
    }

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


class DifferMode(StrEnum):
    """Which row differ `run` and `once` may use (`differ:`)."""

    AUTO = "auto"  # the compiled one when it loads, else the pure-Python one, with a warning
    COMPILED = "compiled"  # the compiled one, or refuse to start (exit 2)
    PYTHON = "python"  # the pure-Python one (the reference; to rule the compiled one out)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None = field(metadata=internal("the file it was read from"))
    destination: DestinationSettings = field(
        metadata=doc("the analytical database everything lands in")
    )
    sources: tuple[Source, ...] = field(
        metadata=doc(
            "the municipal databases, each read-only",
            required="required: `sources`, `sources_file` or both",
        )
    )
    datasets: tuple[Dataset, ...] = field(
        metadata=doc("what to read from every source: a table, a query, or variants of them")
    )
    concurrency: Concurrency = field(
        default_factory=Concurrency, metadata=doc("how much runs at once")
    )
    schedule: Schedule = field(default_factory=Schedule, metadata=doc("when each source is due"))
    http: Http = field(
        default_factory=Http,
        metadata=doc("the HTTP endpoint: status page, health, readiness, metrics, triggers"),
    )
    timeouts: Timeouts = field(
        default_factory=Timeouts, metadata=doc("how long each kind of wait may last")
    )
    retry: Retry = field(
        default_factory=Retry,
        metadata=doc(
            "failures that can pass (connection lost, server restart, timeout), retried "
            "within the pass"
        ),
    )
    bastions: tuple[Bastion, ...] = field(
        default=(),
        metadata=doc(
            "SSH hosts syncd reaches sources through (`sources[].ssh_tunnel.bastion`), or the "
            "rendezvous host of reverse tunnels, by name",
            key="bastions.<name>",
        ),
    )
    differ: DifferMode = field(
        default=DifferMode.AUTO,
        metadata=doc(
            "the row differ: `auto` (the compiled one, else the pure-Python one with a warning "
            "at start, in `check` and on the status page), `compiled` (refuse to start without "
            "it), `python` (the pure-Python reference, several times slower); read at start, "
            "a reload keeps it",
            kind="`auto`, `compiled` or `python`",
        ),
    )
    warnings: tuple[Notice, ...] = field(
        default=(), metadata=internal("what loading it found worth saying")
    )
    # where the secrets the config names no file for were looked for (a reload looks there again)
    credentials_dir: Path | None = field(
        default=None, metadata=internal("from --credentials-dir or the environment")
    )

    KEYS_WITHOUT_FIELD: ClassVar[dict[str, KeyDoc]] = {
        "sources_file": KeyDoc(
            "more sources, a YAML list of the same shape as `sources` (relative to the config "
            "file); its problems cite its own file and line",
            "path",
        ),
    }

    def source(self, source_id: str) -> Source | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def dataset(self, name: str) -> Dataset | None:
        return next((d for d in self.datasets if d.name == name), None)
