"""YAML -> frozen, validated objects. Every error carries its key path and its file line.

The loader never stops at the first problem: `syncd check-config` prints them all. Nothing here
touches the network; what can only be known by connecting is the engine's business.

The package, one concept a module: `model` (the frozen dataclasses), `document` (YAML with line
numbers), `section` (typed getters that record problems), `values` (durations, windows, names),
`build` and `datasets` (the document into a Config), `problem` (what is wrong, and where), `dsn`
and `querytext`. This module re-exports what the rest of syncd uses.
"""

from __future__ import annotations

from syncd.config.build import RESERVED_SCHEMAS, load, loads, select
from syncd.config.datasets import clean_query
from syncd.config.document import MAX_CONFIG_BYTES, parse_yaml
from syncd.config.model import (
    DEFAULT_BUCKETS,
    Bastion,
    Concurrency,
    Config,
    DailyWindow,
    Dataset,
    DatasetMode,
    DestinationSettings,
    DifferMode,
    Http,
    Incremental,
    Retry,
    Schedule,
    Source,
    Timeouts,
    Variant,
)
from syncd.config.problem import ConfigError, Notice, Problem, summarize
from syncd.config.values import (
    COLUMN_NAME,
    COLUMN_PATH,
    DURATION,
    DURATION_UNITS,
    LOWER_IDENT,
    PARAM_NAME,
    SOURCE_ID,
    TABLE_NAME,
    WINDOW,
    format_duration,
    parse_duration,
    parse_listen,
    parse_window,
)

__all__ = [
    "COLUMN_NAME",
    "COLUMN_PATH",
    "DEFAULT_BUCKETS",
    "DURATION",
    "DURATION_UNITS",
    "LOWER_IDENT",
    "MAX_CONFIG_BYTES",
    "PARAM_NAME",
    "RESERVED_SCHEMAS",
    "SOURCE_ID",
    "TABLE_NAME",
    "WINDOW",
    "Bastion",
    "Concurrency",
    "Config",
    "ConfigError",
    "DailyWindow",
    "Dataset",
    "DatasetMode",
    "DestinationSettings",
    "DifferMode",
    "Http",
    "Incremental",
    "Notice",
    "Problem",
    "Retry",
    "Schedule",
    "Source",
    "Timeouts",
    "Variant",
    "clean_query",
    "format_duration",
    "load",
    "loads",
    "parse_duration",
    "parse_listen",
    "parse_window",
    "parse_yaml",
    "select",
    "summarize",
]
