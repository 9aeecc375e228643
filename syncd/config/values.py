"""The written forms of single values: names, durations, rates, daily windows, listen addresses."""

from __future__ import annotations

import ipaddress
import re
from datetime import time

from syncd.config.model import DailyWindow

SOURCE_ID = re.compile(r"[A-Za-z0-9_]{1,32}")
LOWER_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# A PEC table name: schema.table or table, plain identifiers (quoted when used).
TABLE_NAME = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_$]{0,62}\.)?[A-Za-z_][A-Za-z0-9_$]{0,62}")
PARAM_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
COLUMN_PATH = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_$]{0,62}\.){1,2}[A-Za-z_][A-Za-z0-9_$]{0,62}")
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
RATE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+(?:/s)?)")
# bytes per second: decimal (kB = 1000) and binary (KiB = 1024) bytes; bits as ISPs sell them
RATE_UNITS = {
    "B/s": 1,
    "kB/s": 1e3,
    "KB/s": 1e3,
    "MB/s": 1e6,
    "GB/s": 1e9,
    "KiB/s": 2**10,
    "MiB/s": 2**20,
    "GiB/s": 2**30,
    "bit/s": 1 / 8,
    "kbit/s": 1e3 / 8,
    "Kbit/s": 1e3 / 8,
    "Mbit/s": 1e6 / 8,
    "Gbit/s": 1e9 / 8,
    "kbps": 1e3 / 8,
    "Kbps": 1e3 / 8,
    "Mbps": 1e6 / 8,
    "Gbps": 1e9 / 8,
}
RATE_EXAMPLES = "like 2MB/s, 500kB/s, 1.5MiB/s or 20Mbit/s"
MIN_RATE = 1000.0  # bytes per second
SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]B|B)?", re.IGNORECASE)
SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
WINDOW = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


def parse_duration(value: object) -> float | None:
    """Seconds, from text like `90s`, `1h30m` or `500ms`; None for anything else."""
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


def parse_rate(value: object) -> float | str:
    """Bytes per second from text like `2MB/s`, `500kB/s`, `20Mbit/s` (or `20Mbps`); else why
    not, as a sentence."""
    if isinstance(value, bool) or not isinstance(value, str):
        return f"{value!r} is not a rate: give a unit ({RATE_EXAMPLES})"
    text = value.strip()
    match = RATE.fullmatch(text)
    if match is None:
        return f"{value!r} is not a rate ({RATE_EXAMPLES})"
    number, unit = float(match.group(1)), match.group(2)
    if unit not in RATE_UNITS:
        base = unit.removesuffix("/s")
        if f"{base}/s" in RATE_UNITS:
            return f"{value!r}: a rate is per second ({match.group(1)}{base}/s)"
        if base.lower() in ("b", "kb", "mb", "gb"):
            prefix = base[:-1].upper()
            return (
                f"{value!r}: {base} could be bytes or bits; write {prefix}B/s for bytes or "
                f"{prefix}bit/s for bits"
            )
        return f"{value!r} is not a rate ({RATE_EXAMPLES}; units: {', '.join(RATE_UNITS)})"
    return number * RATE_UNITS[unit]


def format_rate(rate: float) -> str:
    """A rate in bytes per second as `parse_rate` reads it back: `2MB/s`, `2.5MB/s`, `800kB/s`."""
    for factor, unit in ((1e9, "GB/s"), (1e6, "MB/s"), (1e3, "kB/s")):
        if rate >= factor:
            return f"{round(rate / factor, 3):g}{unit}"
    return f"{round(rate, 3):g}B/s"


def format_duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def parse_size(value: object) -> int | None:
    """Bytes, from text like `400GB`, `500MB` or `1.5TB` (units of 1024, as PostgreSQL's
    `pg_size_pretty` prints them); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, str):
        return None
    match = SIZE.fullmatch(value.strip())
    if not match:
        return None
    return int(float(match.group(1)) * SIZE_UNITS[(match.group(2) or "B").upper()])


def format_size(size: int) -> str:
    """Exactly as `parse_size` reads it back: in the largest unit that divides it."""
    for unit in ("TB", "GB", "MB", "KB"):
        if size >= SIZE_UNITS[unit] and size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return f"{size}B"


def human_size(size: int) -> str:
    """For people: three or four significant digits in the largest unit that fits (117.7MB)."""
    for unit in ("TB", "GB", "MB", "KB"):
        if size >= SIZE_UNITS[unit]:
            return f"{size / SIZE_UNITS[unit]:.4g}{unit}"
    return f"{size}B"


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


def parse_listen(text: str) -> tuple[str, int] | None:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        return None
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address: on a bastion, the end of a municipality's reverse
    tunnel (`ssh -R 127.0.0.1:PORT:...`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
