"""The document, section by section, into a Config: every problem found, then raised at once."""

from __future__ import annotations

import zoneinfo
from dataclasses import replace
from pathlib import Path

from syncd.config.bastions import build_bastions, ssh_tunnel
from syncd.config.credentials import Credentials, in_service
from syncd.config.datasets import build_datasets
from syncd.config.document import Document, parse_yaml, read_yaml
from syncd.config.dsn import Dsn, DsnError, world_readable
from syncd.config.model import (
    DEFAULT_BUCKETS,
    DEFAULT_NOTIFY_CHANNEL,
    DEFAULT_RETYPE_ONLINE_ABOVE,
    DEFAULT_SCHEMA,
    DEFAULT_SOURCE_COLUMN,
    Bastion,
    Concurrency,
    Config,
    DestinationSettings,
    DifferMode,
    Http,
    Retry,
    Schedule,
    Source,
    Timeouts,
)
from syncd.config.problem import ConfigError, Notice, Problem, key_path
from syncd.config.section import Section
from syncd.config.values import LOWER_IDENT, PARAM_NAME, SOURCE_ID, parse_listen, parse_window

RESERVED_SCHEMAS = {"syncd", "public", "pg_catalog", "information_schema", "pg_toast"}


def load(
    path: str | Path,
    credentials_dir: Path | None = None,
    *,
    strict_credentials: bool | None = None,
) -> Config:
    """Read and validate a config file. Raises ConfigError listing every problem.

    Secrets the config names no file for come from the credentials directory
    (`syncd.config.credentials`): `credentials_dir`, else the environment's."""
    path = Path(path)
    problems: list[Problem] = []
    doc = read_yaml(path, problems)
    if doc is None:
        raise ConfigError(problems)
    credentials = Credentials.find(credentials_dir, strict_credentials)
    return _build(doc, path.parent, problems, credentials)


def loads(
    text: str,
    *,
    base: Path | None = None,
    file: str = "<config>",
    credentials: Credentials | None = None,
) -> Config:
    problems: list[Problem] = []
    doc = parse_yaml(text, file, problems)
    if doc is None:
        raise ConfigError(problems)
    return _build(doc, base or Path.cwd(), problems, credentials)


def _build(
    doc: Document, base: Path, problems: list[Problem], credentials: Credentials | None
) -> Config:
    root = Section(doc, (), problems)
    if not root.is_mapping("the top level of the config"):
        raise ConfigError(problems)
    warnings: list[Notice] = []
    found = _Found(credentials, warnings)

    destination = _destination(root.sub("destination"), root, base, found)
    concurrency = _concurrency(root.sub("concurrency"))
    schedule = _schedule(root.sub("schedule"))
    http = _http(root.sub("http"), base, found)
    timeouts = _timeouts(root.sub("timeouts"))
    retry = _retry(root.sub("retry"))
    bastions = build_bastions(root, base)
    sources = _sources(root, base, found, bastions)
    datasets = build_datasets(root, base)
    differ = _differ(root)
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
        bastions=tuple(b for b in bastions.values() if b is not None),
        differ=differ,
        warnings=tuple(warnings),
        credentials_dir=credentials.directory if credentials else None,
    )


def _differ(root: Section) -> DifferMode:
    value = root.string("differ", DifferMode.AUTO.value)
    if value not in {m.value for m in DifferMode}:
        root.problem("differ", f"{value!r} is not one of auto, compiled, python")
        return DifferMode.AUTO
    return DifferMode(value)


class _Found:
    """The credentials directory as the builders use it: a file for each secret the config
    names none for, and the missing ones as problems (inside the service) or warnings."""

    def __init__(self, credentials: Credentials | None, warnings: list[Notice]) -> None:
        self.credentials = credentials
        self.warnings = warnings
        self.in_service = in_service()

    def named(self, sec: Section, key: str, base: Path) -> Path | None:
        """A file the config names for a secret: inside the service it must be there (outside,
        it may exist only for the service; `check-config` warns)."""
        path = sec.path_value(key, base)
        if path is not None and self.in_service and not path.exists():
            sec.problem(key, f"{path} does not exist")
        return path

    def password(
        self, sec: Section, key: str, dsn: Dsn | None, source_id: str | None = None
    ) -> Path | None:
        if self.credentials is None or dsn is None:
            return None
        if source_id is None:
            path, missing = self.credentials.destination(dsn)
        else:
            path, missing = self.credentials.source(source_id, dsn)
        if missing is not None:
            if self.credentials.strict:
                sec.problem(key, missing)
            elif source_id is None:
                self.warnings.append(Notice(key_path((*sec.path, key)), missing))
            else:
                self.warnings.append(Notice(source_id, missing, "", "source"))
        return path

    def token(self) -> Path | None:
        return self.credentials.http_token() if self.credentials else None


def _dsn(
    section: Section, key: str, warnings: list[Notice], source_id: str | None = None
) -> Dsn | None:
    raw = section.string(key, required=True)
    if raw is None:
        return None
    try:
        dsn = Dsn.parse(raw)
    except DsnError as exc:
        for message in exc.messages:
            section.problem(key, message)
        return None

    def warn(message: str, detail: str = "") -> None:
        if source_id is None:
            warnings.append(Notice(key_path((*section.path, key)), message, detail))
        else:
            warnings.append(Notice(source_id, f"{key}: {message}", detail, "source"))

    for name, value in dsn.missing_tls_files():
        warn(f"{name} {{}} not found (fine if only the service sees it)", value)
    for note in dsn.notes:
        warn(note)
    if dsn.has_password and section.doc.file and world_readable(Path(section.doc.file)):
        warn(
            "holds a password and {} is readable by every user; use password_file or chmod o-r",
            section.doc.file,
        )
    return dsn


def _destination(
    sec: Section, root: Section, base: Path, found: _Found
) -> DestinationSettings | None:
    if "destination" not in root.mapping:
        root.problem("destination", "is required")
        return None
    if not sec.is_mapping(
        "with dsn, password_file, schema, source_column, buckets, notify_channel, max_size, "
        "retype_online_above"
    ):
        return None
    dsn = _dsn(sec, "dsn", found.warnings)
    password_file = found.named(sec, "password_file", base) or found.password(sec, "dsn", dsn)
    schema = sec.string(
        "schema", DEFAULT_SCHEMA, pattern=LOWER_IDENT, what="a lowercase identifier"
    )
    if schema in RESERVED_SCHEMAS:
        sec.problem("schema", f"{schema!r} is reserved; pick a schema of its own")
    elif schema.startswith("pg_"):
        sec.problem(
            "schema",
            f"{schema!r}: names starting with pg_ belong to PostgreSQL (pg_temp is each "
            "session's own, gone at disconnect); pick a schema of its own",
        )
    column = sec.string(
        "source_column", DEFAULT_SOURCE_COLUMN, pattern=LOWER_IDENT, what="a lowercase identifier"
    )
    buckets = sec.integer("buckets", DEFAULT_BUCKETS, maximum=256)
    channel = _notify_channel(sec)
    max_size = sec.size("max_size", minimum=1024**2)
    # `0` (every table) is no unit question
    raw = sec.raw("retype_online_above")
    online = 0 if type(raw) is int and raw == 0 else sec.size("retype_online_above", minimum=0)
    sec.check_unknown()
    if dsn is None:
        return None
    return DestinationSettings(
        dsn,
        password_file,
        schema,
        column,
        buckets,
        channel,
        max_size,
        DEFAULT_RETYPE_ONLINE_ABOVE if online is None else online,
    )


def _notify_channel(sec: Section) -> str | None:
    """A lowercase identifier, so that a plain `LISTEN name` (which folds case) hears it;
    `null` or `""` turns the notification off."""
    if "notify_channel" in sec.mapping and sec.raw("notify_channel") in (None, ""):
        return None
    return sec.string(
        "notify_channel",
        DEFAULT_NOTIFY_CHANNEL,
        pattern=LOWER_IDENT,
        what="a lowercase identifier (or null to send no notification)",
    )


def _concurrency(sec: Section) -> Concurrency:
    d = Concurrency()
    if not sec.is_mapping("sources, per_host, writers"):
        return d
    result = Concurrency(
        sources=sec.integer("sources", d.sources, maximum=10_000),
        per_host=sec.integer("per_host", d.per_host, maximum=10_000),
        writers=sec.integer("writers", d.writers, maximum=1_000),
    )
    sec.check_unknown()
    return result


def _schedule(sec: Section) -> Schedule:
    d = Schedule()
    if not sec.is_mapping("interval, window, timezone, jitter, failed_backoff, ..."):
        return d
    interval = sec.duration("interval", d.interval, minimum=1.0)
    window = None
    raw_window = sec.string("window")
    if raw_window is not None:
        window = parse_window(raw_window)
        if window is None:
            sec.problem("window", f'{raw_window!r} is not a daily window like "03:00-13:00"')
    tz = sec.string("timezone", d.timezone)
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        sec.problem("timezone", f"{tz!r} is not a known time zone (like {d.timezone})")
        tz = d.timezone
    jitter = sec.duration("jitter", d.jitter)
    failed_backoff = sec.duration("failed_backoff", d.failed_backoff, minimum=1.0)
    failed_backoff_max = sec.duration("failed_backoff_max", d.failed_backoff_max, minimum=1.0)
    sec.check_unknown()
    return Schedule(interval, window, tz, jitter, failed_backoff, failed_backoff_max)


def _http(sec: Section, base: Path, found: _Found) -> Http:
    d = Http()
    if not sec.is_mapping("listen, token_file"):
        return d
    token_file = found.named(sec, "token_file", base) or found.token()
    host, port = d.host, d.port
    listen = sec.string("listen")
    if listen is not None:
        parsed = parse_listen(listen)
        if parsed is None:
            sec.problem("listen", f"{listen!r} is not host:port (like {d.listen})")
        else:
            host, port = parsed
    sec.check_unknown()
    return Http(host, port, token_file)


def _timeouts(sec: Section) -> Timeouts:
    d = Timeouts()
    if not sec.is_mapping(
        "connect, statement, destination_statement, idle_stream, lock, shutdown_grace, disk_probe"
    ):
        return d
    result = Timeouts(
        connect=sec.duration("connect", d.connect, minimum=0.1),
        statement=sec.duration("statement", d.statement, minimum=1.0),
        destination_statement=sec.duration(
            "destination_statement", d.destination_statement, minimum=0.01
        ),
        idle_stream=sec.duration("idle_stream", d.idle_stream, minimum=0.1),
        lock=sec.duration("lock", d.lock, minimum=0.01),
        shutdown_grace=sec.duration("shutdown_grace", d.shutdown_grace),
        disk_probe=sec.duration("disk_probe", d.disk_probe, minimum=1.0),
    )
    sec.check_unknown()
    return result


def _retry(sec: Section) -> Retry:
    d = Retry()
    if not sec.is_mapping("attempts, backoff, max_backoff"):
        return d
    result = Retry(
        attempts=sec.integer("attempts", d.attempts, maximum=100),
        backoff=sec.duration("backoff", d.backoff),
        max_backoff=sec.duration("max_backoff", d.max_backoff),
    )
    sec.check_unknown()
    return result


def _sources(
    root: Section, base: Path, found: _Found, bastions: dict[str, Bastion | None]
) -> list[Source]:
    sections = list(root.each("sources"))
    sources_file = root.path_value("sources_file", base)
    if sources_file is not None:
        problems = root.problems
        doc = read_yaml(sources_file, problems)
        if doc is not None:
            holder = Section(doc.under("sources"), (), problems, {"sources": doc.data})
            if not isinstance(doc.data, list):
                problems.append(Problem("", 1, "must be a list of sources", doc.file))
            else:
                sections += list(holder.each("sources"))
    if not root.has("sources") and sources_file is None:
        root.problem("sources", "is required (or sources_file)")
    result: list[Source] = []
    seen: dict[str, str] = {}
    for sec in sections:
        source = _source(sec, base, found, bastions)
        if source is None:
            continue
        where = f"{sec.doc.file}:{sec.doc.lines.get(sec.path, '?')}"
        if source.id in seen:
            sec.problem("id", f"duplicate source id {source.id!r} (first at {seen[source.id]})")
            continue
        seen[source.id] = where
        result.append(source)
    return result


def _source(
    sec: Section, base: Path, found: _Found, bastions: dict[str, Bastion | None]
) -> Source | None:
    source_id = sec.string(
        "id", required=True, pattern=SOURCE_ID, what="an id of letters, digits and _ (up to 32)"
    )
    name = sec.string("name")
    dsn = _dsn(sec, "dsn", found.warnings, source_id)
    password_file = found.named(sec, "password_file", base)
    if password_file is None and source_id is not None:
        password_file = found.password(sec, "id", dsn, source_id)
    params: list[tuple[str, str]] = []
    raw_params = sec.raw("params")
    if raw_params is not None:
        psec = Section(sec.doc, (*sec.path, "params"), sec.problems, raw_params)
        if psec.is_mapping("setting name: value"):
            for key, value in psec.mapping.items():
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
    bastion = ssh_tunnel(sec, bastions)
    max_rate = sec.rate("max_rate")
    delta = sec.boolean("delta")
    sec.check_unknown()
    if source_id is None or dsn is None:
        return None
    return Source(
        source_id,
        dsn,
        name,
        password_file,
        tuple(params),
        bastion,
        delta=delta is not False,
        max_rate=max_rate,
    )


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
