"""YAML -> frozen, validated objects. Every error carries its key path and its file line.

The loader never stops at the first problem: `syncd check-config` prints them all. Nothing here
touches the network; what can only be known by connecting is the engine's business.

The package, one concept a module; this module re-exports what the rest of syncd uses:

    model.py         the frozen dataclasses of sources and datasets, each default stated once;
                     settings.py  the daemon-wide sections (destination, limits, schedule, http...)
    keydoc.py        each key's description, from which the configuration reference is generated
    document.py      YAML with the line of every key;  section.py  typed getters that record
                     problems
    build.py         the document into a Config, section by section;  datasets.py  datasets;
                     bastions.py  bastions and each source's `ssh_tunnel`
    values.py        durations, daily windows, names, listen addresses
    dsn.py           connection strings, checked against libpq's parameters (libpq.py)
    querytext.py     a dataset's SQL text made fit to be wrapped
    problem.py       what is wrong, and where (file, line, key path)
    credentials.py   secrets the config names no file for (systemd credentials, --credentials-dir)
    render.py        `syncd config print`: the effective config as YAML
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
