"""The effective config as YAML (`syncd config print`): every default filled in from the model,
sources_file and query_file read in, paths absolute, secrets redacted. What it prints loads
back into the same Config (tests/unit/test_cli.py), but for the redacted secrets."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from syncd.config.model import Config, Dataset, Incremental, Source, Variant
from syncd.config.values import format_duration, format_rate, format_size


def _path(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _source(source: Source) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": source.id}
    if source.name is not None:
        entry["name"] = source.name
    entry["dsn"] = source.dsn.redacted
    if source.password_file is not None:
        entry["password_file"] = str(source.password_file)
    if source.params:
        entry["params"] = dict(source.params)
    if source.max_rate is not None:
        entry["max_rate"] = format_rate(source.max_rate)
    return entry


def _reading(variant: Variant) -> dict[str, Any]:
    return {"table": variant.table} if variant.table else {"query": variant.query}


def _incremental(spec: Incremental) -> dict[str, Any]:
    entry: dict[str, Any] = {"mode": "incremental", "cursor": spec.cursor}
    entry["key"] = spec.key[0] if len(spec.key) == 1 else list(spec.key)
    if spec.lookback is not None:
        entry["lookback"] = spec.lookback
    if spec.lookback_seconds is not None:
        entry["lookback"] = format_duration(spec.lookback_seconds)
    if spec.full_refresh_every is not None:
        entry["full_refresh_every"] = format_duration(spec.full_refresh_every)
    return entry


def _dataset(dataset: Dataset) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": dataset.name}
    if len(dataset.variants) == 1 and dataset.variants[0].probe == "default":
        entry.update(_reading(dataset.variants[0]))
    else:
        entry["variants"] = []
        for variant in dataset.variants:
            item: dict[str, Any] = {}
            if variant.when_column:
                item["when"] = {"column": variant.when_column}
            elif variant.when_table:
                item["when"] = {"table": variant.when_table}
            item.update(_reading(variant))
            entry["variants"].append(item)
    if dataset.incremental:
        entry.update(_incremental(dataset.incremental))
    else:
        entry["mode"] = "snapshot"
        if dataset.full_refresh_every is not None:
            entry["full_refresh_every"] = format_duration(dataset.full_refresh_every)
    return entry


def document(config: Config) -> dict[str, Any]:
    d, s, t, r = config.destination, config.schedule, config.timeouts, config.retry
    return {
        "destination": {
            "dsn": d.dsn.redacted,
            "password_file": _path(d.password_file),
            "schema": d.schema,
            "source_column": d.source_column,
            "buckets": d.buckets,
            "notify_channel": d.notify_channel,
            "max_size": format_size(d.max_size) if d.max_size is not None else None,
            "retype_online_above": format_size(d.retype_online_above),
        },
        "concurrency": asdict(config.concurrency),
        "schedule": {
            "interval": format_duration(s.interval),
            "window": str(s.window) if s.window else None,
            "timezone": s.timezone,
            "jitter": format_duration(s.jitter),
            "failed_backoff": format_duration(s.failed_backoff),
            "failed_backoff_max": format_duration(s.failed_backoff_max),
        },
        "http": {"listen": config.http.listen, "token_file": _path(config.http.token_file)},
        "timeouts": {
            "connect": format_duration(t.connect),
            "statement": format_duration(t.statement),
            "idle_stream": format_duration(t.idle_stream),
            "lock": format_duration(t.lock),
            "shutdown_grace": format_duration(t.shutdown_grace),
            "destination_statement": format_duration(t.destination_statement),
            "disk_probe": format_duration(t.disk_probe),
        },
        "retry": {
            "attempts": r.attempts,
            "backoff": format_duration(r.backoff),
            "max_backoff": format_duration(r.max_backoff),
        },
        "sources": [_source(source) for source in config.sources],
        "datasets": [_dataset(dataset) for dataset in config.datasets],
    }


class _Dumper(yaml.SafeDumper):
    """Queries as literal blocks (`|`), as one writes them."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    block = "\n" in text and not any(c in text for c in "\t\r") and text == text.rstrip(" ")
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if block else None)


_Dumper.add_representer(str, _text)


def to_yaml(config: Config) -> str:
    where = f" of {config.path}" if config.path else ""
    head = f"# the effective config{where}: every default filled in, secrets redacted\n"
    body = yaml.dump(
        document(config), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    return head + body
