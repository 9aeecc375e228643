"""YAML -> frozen, validated objects. Every error carries its key path and its file line.

The loader never stops at the first problem: `syncd check-config` prints them all. Nothing here
touches the network; what can only be known by connecting is the engine's business.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import time
from pathlib import Path
from typing import Any

import yaml

from syncd.config import querytext
from syncd.config.dsn import Dsn, DsnError, world_readable

MAX_CONFIG_BYTES = 16 * 1024 * 1024

SOURCE_ID = re.compile(r"[A-Za-z0-9_]{1,32}")
LOWER_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# A PEC table name: schema.table or table, plain identifiers (quoted when used).
TABLE_NAME = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_$]{0,62}\.)?[A-Za-z_][A-Za-z0-9_$]{0,62}")
PARAM_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
COLUMN_PATH = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_$]{0,62}\.){1,2}[A-Za-z_][A-Za-z0-9_$]{0,62}")
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
WINDOW = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
DEFAULT_BUCKETS = 16
RESERVED_SCHEMAS = {"syncd", "public", "pg_catalog", "information_schema", "pg_toast"}


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int | None
    message: str
    file: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else ""
        if not where and self.file:
            where = f"{self.file}: "
        text = f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"
        # one problem, one line, whatever the YAML held
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    """The config cannot be used. `problems` lists every reason, each one line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    dsn: Dsn
    password_file: Path | None = None
    schema: str = "syncd_data"
    source_column: str = "municipio_id_sus"
    buckets: int = DEFAULT_BUCKETS  # hash partitions per dataset table, however many municipalities
    notify_channel: str | None = "syncd"  # None: no NOTIFY after a municipality lands


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
class Source:
    id: str
    dsn: Dsn
    name: str | None = None
    password_file: Path | None = None
    params: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id


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


@dataclass(frozen=True, slots=True)
class Dataset:
    name: str
    variants: tuple[Variant, ...]
    incremental: Incremental | None = None

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
    def mode(self) -> str:
        return "incremental" if self.incremental else "snapshot"


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
    warnings: tuple[str, ...] = ()

    def source(self, source_id: str) -> Source | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def dataset(self, name: str) -> Dataset | None:
        return next((d for d in self.datasets if d.name == name), None)


# --------------------------------------------------------------------------------------------
# YAML with line numbers


class _Doc:
    """A parsed YAML document plus the line of every key path."""

    def __init__(
        self, data: Any, lines: dict[tuple, int], file: str, texts: dict[tuple, str] | None = None
    ):
        self.data = data
        self.lines = lines
        self.file = file
        self.texts = texts or {}  # scalars YAML did not read as strings: what the file says

    def under(self, key: str) -> _Doc:
        """The same document seen as the value of `key` (a sources_file is `sources:`)."""
        return _Doc(
            self.data,
            {(key, *path): line for path, line in self.lines.items()},
            self.file,
            {(key, *path): text for path, text in self.texts.items()},
        )


def _compose(text: str, file: str) -> _Doc:
    loader = yaml.SafeLoader(text)
    lines: dict[tuple, int] = {}
    texts: dict[tuple, str] = {}
    seen_nodes = 0

    def walk(node: yaml.Node, path: tuple) -> Any:
        nonlocal seen_nodes
        seen_nodes += 1
        if seen_nodes > 200_000:  # aliases can make a small file expand without bound
            raise yaml.YAMLError("the document expands to too many values (alias bomb?)")
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    raise _KeyProblem(path, key_node.start_mark.line + 1, "keys must be plain text")
                if key in result:
                    raise _KeyProblem(path, key_node.start_mark.line + 1, f"duplicate key {key!r}")
                lines[(*path, key)] = key_node.start_mark.line + 1
                result[key] = walk(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [walk(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:str":
            texts[path] = node.value
        return loader.construct_object(node, deep=True)

    try:
        node = loader.get_single_node()
        data = None if node is None else walk(node, ())
    finally:
        loader.dispose()
    return _Doc(data, lines, file, texts)


class _KeyProblem(Exception):
    def __init__(self, path: tuple, line: int, message: str):
        self.path, self.line, self.message = path, line, message


def _read_yaml(path: Path, problems: list[Problem]) -> _Doc | None:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            problems.append(Problem("", None, "file is larger than 16 MiB", str(path)))
            return None
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(Problem("", None, "file not found", str(path)))
        return None
    except IsADirectoryError:
        problems.append(Problem("", None, "is a directory, not a file", str(path)))
        return None
    except PermissionError:
        problems.append(Problem("", None, "permission denied", str(path)))
        return None
    except UnicodeDecodeError as exc:
        problems.append(Problem("", None, f"is not UTF-8 text ({exc.reason})", str(path)))
        return None
    except OSError as exc:
        problems.append(Problem("", None, f"cannot be read ({exc.strerror})", str(path)))
        return None
    return parse_yaml(text, str(path), problems)


def parse_yaml(text: str, file: str, problems: list[Problem]) -> _Doc | None:
    try:
        return _compose(text, file)
    except _KeyProblem as exc:
        problems.append(Problem(_fmt_path(exc.path), exc.line, exc.message, file))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        reason = exc.problem or exc.context or "invalid YAML"
        problems.append(Problem("", line, f"invalid YAML: {reason}", file))
    except yaml.YAMLError as exc:
        problems.append(Problem("", None, f"invalid YAML: {exc}", file))
    except RecursionError:
        problems.append(Problem("", None, "invalid YAML: nested too deeply", file))
    except (ValueError, TypeError, OverflowError) as exc:
        # PyYAML's constructors raise these for values such as out-of-range dates
        problems.append(Problem("", None, f"invalid YAML value: {exc}", file))
    return None


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_$-]+")


def _fmt_path(path: tuple) -> str:
    """sources[3].dsn; keys that are not plain words shown quoted (they may hold anything)."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


# --------------------------------------------------------------------------------------------
# Validation


class _Section:
    """One mapping of the document being validated: typed getters that record problems."""

    def __init__(self, doc: _Doc, path: tuple, problems: list[Problem], value: Any = None):
        self.doc = doc
        self.path = path
        self.problems = problems
        self.value = doc.data if value is None and not path else value
        self.used: set[str] = set()

    def problem(self, key: Any, message: str) -> None:
        path = (*self.path, key) if key is not None else self.path
        line = self.doc.lines.get(path) or self.doc.lines.get(self.path)
        self.problems.append(Problem(_fmt_path(path), line, message, self.doc.file))

    def is_mapping(self, what: str) -> bool:
        if not isinstance(self.value, dict):
            self.problem(None, f"must be a mapping ({what})")
            return False
        return True

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and key in self.value and self.value[key] is not None

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.value.get(key) if isinstance(self.value, dict) else None

    def sub(self, key: str) -> _Section:
        return _Section(self.doc, (*self.path, key), self.problems, self.raw(key) or {})

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        pattern: re.Pattern | None = None,
        what: str = "",
    ) -> str | None:
        value = self.raw(key)
        if value is None:
            if required:
                self.problem(key, "is required")
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            written = self.written((*self.path, key), value)
            if written is None:
                return default
            value = written
        if not isinstance(value, str):
            self.problem(key, "must be a string")
            return default
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(key, f"{value!r} is not {what}")
            return default
        return value

    def written(self, path: tuple, value: int | float) -> str | None:
        """A number where text was wanted: kept when YAML read it as written (`351570`),
        refused when it did not (`012345` is octal 5349, `3_549_904` is 3549904, `1.50` is
        1.5): quoting it says what was meant."""
        text = self.doc.texts.get(path)
        if isinstance(value, int) and (text is None or text == str(value)):
            return str(value)
        shown = text if text is not None else str(value)
        self.problems.append(
            Problem(
                _fmt_path(path),
                self.doc.lines.get(path),
                f"YAML reads {shown} as the number {value!r}, not as text; "
                f'quote it to keep it as written: "{shown}"',
                self.doc.file,
            )
        )
        return None

    def integer(self, key: str, default: int, *, minimum: int = 1, maximum: int = 100_000) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, "must be a whole number")
            return default
        if not minimum <= value <= maximum:
            self.problem(key, f"must be between {minimum} and {maximum}")
            return default
        return value

    def duration(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw(key)
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None:
            self.problem(key, f"{value!r} is not a duration (like 90s, 15m, 24h, 7d)")
            return default
        if seconds < minimum:
            self.problem(key, f"must be at least {format_duration(minimum)}")
            return default
        return seconds

    def path_value(self, key: str, base: Path | None) -> Path | None:
        value = self.string(key)
        if value is None:
            return None
        path = Path(value)
        return path if path.is_absolute() or base is None else base / path

    def check_unknown(self) -> None:
        if not isinstance(self.value, dict):
            return
        for key in self.value:
            if key not in self.used:
                self.problem(key, "unknown key")


def parse_duration(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    pos, total = 0, 0.0
    for match in DURATION.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * DURATION_UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None


def format_duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def load(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError listing every problem."""
    path = Path(path)
    problems: list[Problem] = []
    doc = _read_yaml(path, problems)
    if doc is None:
        raise ConfigError(problems)
    return _build(doc, path.parent, problems)


def loads(text: str, *, base: Path | None = None, file: str = "<config>") -> Config:
    problems: list[Problem] = []
    doc = parse_yaml(text, file, problems)
    if doc is None:
        raise ConfigError(problems)
    return _build(doc, base or Path.cwd(), problems)


def _build(doc: _Doc, base: Path, problems: list[Problem]) -> Config:
    root = _Section(doc, (), problems)
    if not root.is_mapping("the top level of the config"):
        raise ConfigError(problems)
    warnings: list[str] = []

    destination = _destination(root.sub("destination"), root, base, warnings)
    concurrency = _concurrency(root.sub("concurrency"))
    schedule = _schedule(root.sub("schedule"))
    http = _http(root.sub("http"), base)
    timeouts = _timeouts(root.sub("timeouts"))
    retry = _retry(root.sub("retry"))
    sources = _sources(root, base, warnings)
    datasets = _datasets(root, base)
    root.check_unknown()

    if problems or destination is None:
        raise ConfigError(problems)
    return Config(
        path=Path(doc.file) if doc.file and not doc.file.startswith("<") else None,
        destination=destination,
        sources=tuple(sources),
        datasets=tuple(datasets),
        concurrency=concurrency,
        schedule=schedule,
        http=http,
        timeouts=timeouts,
        retry=retry,
        warnings=tuple(warnings),
    )


def _dsn(section: _Section, key: str, warnings: list[str]) -> Dsn | None:
    raw = section.string(key, required=True)
    if raw is None:
        return None
    try:
        dsn = Dsn.parse(raw)
    except DsnError as exc:
        section.problem(key, str(exc))
        return None
    for missing in dsn.missing_files():
        warnings.append(
            f"{_fmt_path((*section.path, key))}: {missing} (fine if only the service sees it)"
        )
    if dsn.has_password and section.doc.file and world_readable(Path(section.doc.file)):
        warnings.append(
            f"{section.doc.file}: {_fmt_path((*section.path, key))} holds a password and the file "
            "is readable by every user; use password_file or chmod o-r"
        )
    return dsn


def _destination(
    sec: _Section, root: _Section, base: Path, warnings: list[str]
) -> DestinationSettings | None:
    if "destination" not in root.value:
        root.problem("destination", "is required")
        return None
    if not sec.is_mapping(
        "with dsn, password_file, schema, source_column, buckets, notify_channel"
    ):
        return None
    dsn = _dsn(sec, "dsn", warnings)
    password_file = sec.path_value("password_file", base)
    schema = sec.string("schema", "syncd_data", pattern=LOWER_IDENT, what="a lowercase identifier")
    if schema in RESERVED_SCHEMAS:
        sec.problem("schema", f"{schema!r} is reserved; pick a schema of its own")
    elif schema is not None and schema.startswith("pg_"):
        sec.problem(
            "schema",
            f"{schema!r}: names starting with pg_ belong to PostgreSQL (pg_temp is each "
            "session's own, gone at disconnect); pick a schema of its own",
        )
    column = sec.string(
        "source_column", "municipio_id_sus", pattern=LOWER_IDENT, what="a lowercase identifier"
    )
    buckets = sec.integer("buckets", DEFAULT_BUCKETS, maximum=256)
    channel = _notify_channel(sec)
    sec.check_unknown()
    if dsn is None:
        return None
    return DestinationSettings(
        dsn, password_file, schema or "syncd_data", column or "municipio_id_sus", buckets, channel
    )


def _notify_channel(sec: _Section) -> str | None:
    """A lowercase identifier, so that a plain `LISTEN name` (which folds case) hears it;
    `null` or `""` turns the notification off."""
    if isinstance(sec.value, dict) and "notify_channel" in sec.value:
        if sec.raw("notify_channel") in (None, ""):
            return None
    return sec.string(
        "notify_channel",
        "syncd",
        pattern=LOWER_IDENT,
        what="a lowercase identifier (or null to send no notification)",
    )


def _concurrency(sec: _Section) -> Concurrency:
    if not sec.is_mapping("sources, per_host, writers"):
        return Concurrency()
    result = Concurrency(
        sources=sec.integer("sources", 32, maximum=10_000),
        per_host=sec.integer("per_host", 4, maximum=10_000),
        writers=sec.integer("writers", 16, maximum=1_000),
    )
    sec.check_unknown()
    return result


def _schedule(sec: _Section) -> Schedule:
    if not sec.is_mapping("interval, window, timezone, jitter, failed_backoff, ..."):
        return Schedule()
    interval = sec.duration("interval", 86400.0, minimum=1.0)
    window = None
    raw_window = sec.string("window")
    if raw_window is not None:
        window = parse_window(raw_window)
        if window is None:
            sec.problem("window", f'{raw_window!r} is not a daily window like "03:00-13:00"')
    tz = sec.string("timezone", "America/Sao_Paulo")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        sec.problem("timezone", f"{tz!r} is not a known time zone (like America/Sao_Paulo)")
        tz = "America/Sao_Paulo"
    jitter = sec.duration("jitter", 600.0)
    failed_backoff = sec.duration("failed_backoff", 300.0, minimum=1.0)
    failed_backoff_max = sec.duration("failed_backoff_max", 7200.0, minimum=1.0)
    sec.check_unknown()
    return Schedule(interval, window, tz, jitter, failed_backoff, failed_backoff_max)


def parse_window(text: str) -> DailyWindow | None:
    match = WINDOW.fullmatch(text.strip())
    if not match:
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2 != 0):
        return None
    end = time(0, 0) if h2 == 24 else time(h2, m2)
    start = time(h1, m1)
    if start == end:
        return None
    return DailyWindow(start, end)


def _http(sec: _Section, base: Path) -> Http:
    if not sec.is_mapping("listen, token_file"):
        return Http()
    listen = sec.string("listen", "127.0.0.1:9187")
    host, port = "127.0.0.1", 9187
    if listen is not None:
        parsed = parse_listen(listen)
        if parsed is None:
            sec.problem("listen", f"{listen!r} is not host:port (like 127.0.0.1:9187)")
        else:
            host, port = parsed
    token_file = sec.path_value("token_file", base)
    sec.check_unknown()
    return Http(host, port, token_file)


def parse_listen(text: str) -> tuple[str, int] | None:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        return None
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _timeouts(sec: _Section) -> Timeouts:
    if not sec.is_mapping("connect, statement, idle_stream, lock, shutdown_grace"):
        return Timeouts()
    d = Timeouts()
    result = Timeouts(
        connect=sec.duration("connect", d.connect, minimum=0.1),
        statement=sec.duration("statement", d.statement, minimum=1.0),
        idle_stream=sec.duration("idle_stream", d.idle_stream, minimum=0.1),
        lock=sec.duration("lock", d.lock, minimum=0.01),
        shutdown_grace=sec.duration("shutdown_grace", d.shutdown_grace),
    )
    sec.check_unknown()
    return result


def _retry(sec: _Section) -> Retry:
    if not sec.is_mapping("attempts, backoff, max_backoff"):
        return Retry()
    d = Retry()
    result = Retry(
        attempts=sec.integer("attempts", d.attempts, maximum=100),
        backoff=sec.duration("backoff", d.backoff),
        max_backoff=sec.duration("max_backoff", d.max_backoff),
    )
    sec.check_unknown()
    return result


def _items(root: _Section, key: str) -> Iterator[_Section]:
    value = root.raw(key)
    if value is None:
        return
    if not isinstance(value, list):
        root.problem(key, "must be a list")
        return
    for i, item in enumerate(value):
        section = _Section(root.doc, (*root.path, key, i), root.problems, item)
        if section.is_mapping("one entry"):
            yield section


def _sources(root: _Section, base: Path, warnings: list[str]) -> list[Source]:
    sections = list(_items(root, "sources"))
    sources_file = root.path_value("sources_file", base)
    if sources_file is not None:
        problems = root.problems
        doc = _read_yaml(sources_file, problems)
        if doc is not None:
            holder = _Section(doc.under("sources"), (), problems, {"sources": doc.data})
            if not isinstance(doc.data, list):
                problems.append(Problem("", 1, "must be a list of sources", doc.file))
            else:
                sections += list(_items(holder, "sources"))
    if not root.has("sources") and sources_file is None:
        root.problem("sources", "is required (or sources_file)")
    result: list[Source] = []
    seen: dict[str, str] = {}
    for sec in sections:
        source = _source(sec, base, warnings)
        if source is None:
            continue
        where = f"{sec.doc.file}:{sec.doc.lines.get(sec.path, '?')}"
        if source.id in seen:
            sec.problem("id", f"duplicate source id {source.id!r} (first at {seen[source.id]})")
            continue
        seen[source.id] = where
        result.append(source)
    return result


def _source(sec: _Section, base: Path, warnings: list[str]) -> Source | None:
    source_id = sec.string(
        "id", required=True, pattern=SOURCE_ID, what="an id of letters, digits and _ (up to 32)"
    )
    name = sec.string("name")
    dsn = _dsn(sec, "dsn", warnings)
    password_file = sec.path_value("password_file", base)
    params: list[tuple[str, str]] = []
    raw_params = sec.raw("params")
    if raw_params is not None:
        psec = _Section(sec.doc, (*sec.path, "params"), sec.problems, raw_params)
        if psec.is_mapping("setting name: value"):
            for key, value in raw_params.items():
                if not isinstance(key, str) or not PARAM_NAME.fullmatch(key):
                    psec.problem(key, "parameter names are lowercase identifiers")
                elif isinstance(value, (dict, list)) or value is None:
                    psec.problem(key, "must be a plain value")
                elif isinstance(value, bool):
                    params.append((key, str(value).lower()))
                elif isinstance(value, (int, float)):
                    text = psec.written((*psec.path, key), value)
                    if text is not None:
                        params.append((key, text))
                else:
                    params.append((key, str(value)))
    sec.check_unknown()
    if source_id is None or dsn is None:
        return None
    return Source(source_id, dsn, name, password_file, tuple(params))


def _datasets(root: _Section, base: Path) -> list[Dataset]:
    if not root.has("datasets"):
        root.problem("datasets", "is required")
    result: list[Dataset] = []
    seen: set[str] = set()
    for sec in _items(root, "datasets"):
        dataset = _dataset(sec, base)
        if dataset is None:
            continue
        if dataset.name in seen:
            sec.problem("name", f"duplicate dataset name {dataset.name!r}")
            continue
        seen.add(dataset.name)
        result.append(dataset)
    return result


def _dataset(sec: _Section, base: Path) -> Dataset | None:
    name = sec.string(
        "name",
        required=True,
        pattern=LOWER_IDENT,
        what="a lowercase identifier (letters, digits, _; up to 63)",
    )
    if name is not None and "__" in name:
        # `__` is how syncd names a dataset table's own partitions (`<dataset>__p07`): a dataset
        # named like that could take another's partition for its own
        sec.problem("name", f"{name!r} contains '__', which syncd keeps for its own relations")
    variants: list[Variant] = []
    if sec.has("variants"):
        for key in ("table", "query", "query_file"):
            if sec.has(key):
                sec.problem(key, "give either variants or one of table, query, query_file")
        for vsec in _items(sec, "variants"):
            variant = _variant(vsec, base, with_probe=True)
            if variant is not None:
                variants.append(variant)
        if not variants and isinstance(sec.raw("variants"), list):
            sec.problem("variants", "needs at least one variant")
        defaults = [v for v in variants if v.probe == "default"]
        if len(defaults) > 1:
            sec.problem("variants", "only one variant may go without `when`")
    else:
        variant = _variant(sec, base, with_probe=False)
        if variant is not None:
            variants.append(variant)
    incremental = _incremental(sec)
    sec.check_unknown()
    if name is None or not variants:
        return None
    return Dataset(name, tuple(variants), incremental)


def _variant(sec: _Section, base: Path, *, with_probe: bool) -> Variant | None:
    table = sec.string(
        "table", pattern=TABLE_NAME, what="a table name like public.tb_fat_cidadao_pec"
    )
    query = sec.string("query")
    query_file = sec.path_value("query_file", base)
    given = [k for k in ("table", "query", "query_file") if sec.has(k)]
    if len(given) > 1:
        sec.problem(
            given[1], f"give only one of table, query, query_file (found {', '.join(given)})"
        )
    elif not given:
        sec.problem(None, "needs one of table, query, query_file")
    if query_file is not None and len(given) == 1:
        query = _read_query_file(sec, query_file)
    if query is not None:
        query = clean_query(query)
        if not query:
            sec.problem("query" if sec.has("query") else "query_file", "is empty")
    when_column = when_table = None
    if with_probe and sec.raw("when") is not None:
        wsec = sec.sub("when")
        if wsec.is_mapping("column: schema.table.column, or table: schema.table"):
            when_column = wsec.string(
                "column",
                pattern=COLUMN_PATH,
                what="schema.table.column (like public.tb_fat_cidadao_pec.nu_celular)",
            )
            when_table = wsec.string("table", pattern=TABLE_NAME, what="a table name")
            if (when_column is None) == (when_table is None):
                wsec.problem(None, "needs exactly one of column, table")
            wsec.check_unknown()
    if with_probe:
        sec.check_unknown()
    if table is None and not query:
        return None
    return Variant(table, query, when_column, when_table)


def _incremental(sec: _Section) -> Incremental | None:
    mode = sec.string("mode", "snapshot")
    if mode not in ("snapshot", "incremental"):
        sec.problem("mode", f"{mode!r} is not snapshot or incremental")
        return None
    keys = ("cursor", "key", "lookback", "full_refresh_every")
    if mode == "snapshot":
        for key in keys:
            if sec.has(key):
                sec.problem(key, "only for mode: incremental")
        return None
    cursor = sec.string("cursor", required=True, pattern=COLUMN_NAME, what="a column name")
    raw_key = sec.raw("key")
    key: tuple[str, ...] = ()
    if raw_key is None:
        sec.problem("key", "is required (the row identity, one column or a list)")
    else:
        names = raw_key if isinstance(raw_key, list) else [raw_key]
        if not names or not all(isinstance(n, str) and COLUMN_NAME.fullmatch(n) for n in names):
            sec.problem("key", "must be a column name or a list of column names")
        else:
            key = tuple(names)
    lookback = lookback_seconds = None
    raw = sec.raw("lookback")
    if isinstance(raw, bool) or (raw is not None and not isinstance(raw, (int, str))):
        sec.problem("lookback", "must be a whole number (cursor units) or a duration like 3d")
    elif isinstance(raw, int):
        if raw < 0:
            sec.problem("lookback", "must not be negative")
        lookback = raw
    elif raw is not None:
        lookback_seconds = sec.duration("lookback", 0.0)
    full_refresh = None
    if sec.has("full_refresh_every"):
        full_refresh = sec.duration("full_refresh_every", 0.0, minimum=1.0)
    if cursor is None or not key:
        return None
    return Incremental(cursor, key, lookback, lookback_seconds, full_refresh)


def _read_query_file(sec: _Section, path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        sec.problem("query_file", f"{path} not found")
    except (OSError, UnicodeDecodeError) as exc:
        sec.problem("query_file", f"{path} cannot be read ({exc})")
    return None


def clean_query(text: str) -> str:
    """Without the BOM, trailing `;`, comments and blank space COPY (...) would choke on."""
    return querytext.clean(text)


def select(config: Config, source_ids: list[str], datasets: list[str]) -> Config:
    """The config narrowed to some sources and datasets (`syncd once --source --dataset`)."""
    problems: list[Problem] = []
    for sid in source_ids:
        if config.source(sid) is None:
            problems.append(Problem("--source", None, f"unknown source id {sid!r}"))
    for name in datasets:
        if config.dataset(name) is None:
            problems.append(Problem("--dataset", None, f"unknown dataset {name!r}"))
    if problems:
        raise ConfigError(problems)
    sources = tuple(s for s in config.sources if not source_ids or s.id in source_ids)
    chosen = tuple(d for d in config.datasets if not datasets or d.name in datasets)
    return replace(config, sources=sources, datasets=chosen)
