"""Incremental datasets: which rows are new, and where the watermark goes.

A pass reads the stored watermark of (source, dataset) from `syncd.watermarks` and moves only the
source rows with `cursor > watermark - lookback`; the destination upserts them by `key` and stores
the new watermark in the same transaction, so a crash can neither skip nor repeat rows (a repeated
window is upserted again, to the same result). Every `full_refresh_every`, and whenever there is
no watermark yet, the dataset is loaded as a normal atomic snapshot instead, which also removes
rows deleted at the source.

The watermark and lookback reach the source as `syncd.watermark` and `syncd.lookback` settings
with bound values; the predicate only names them, cast to the cursor's own type, so an index on
the cursor serves it.

Cursors:
- integer or numeric ids (`co_seq_fat_atd_ind`): lookback in ids (`lookback: 1000`);
- dates and timestamps: lookback as a duration (`lookback: 3d`);
- integer YYYYMMDD date keys (`co_dim_tempo`): give a duration lookback (even `0d`), which is
  what marks the cursor as a date key. Date-like watermarks never move past today: PEC's
  30001231 ("not informed") and other future keys are re-read each pass instead of freezing the
  watermark in the year 3000.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import datetime

from syncd.config import Incremental
from syncd.engine import quoting
from syncd.engine.errors import FinalError

# The destination's sessions print values the same way whatever ALTER DATABASE/ROLE SET says
# (startup options beat database and role defaults): a watermark computed there is ISO 8601
# text, which every server reads back exactly (see SourceSession.max_cursor for the source).
TEXT_SETTINGS = {"DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "extra_float_digits": "3"}
_ISO = re.compile(r"-?infinity|\d{4,}-\d{2}-\d{2}(?:[ T][0-9:.+-]+)?(?: BC)?")
_WHOLE = re.compile(r"-?\d+(?:\.\d+)?")

INTEGER = {"smallint", "integer", "bigint", "numeric"}
TEMPORAL = {"date", "timestamp without time zone", "timestamp with time zone"}
ALIAS = "syncd_q"  # how the wrapped dataset (or the delta table) is named in these predicates


@dataclass(frozen=True, slots=True)
class CursorWindow:
    """The SQL that picks a pass's rows, and caps its watermark, for one cursor."""

    predicate: str  # rows past the watermark (minus lookback)
    cap: str  # rows a watermark may come from ("TRUE" for ids)
    settings: tuple[tuple[str, str], ...]  # set_config pairs, values bound


def _base(type_sql: str) -> str:
    return type_sql.split("(")[0].strip()


def cursor_class(spec: Incremental, type_sql: str) -> str:
    base = _base(type_sql)
    if base in INTEGER:
        return "datekey" if spec.lookback_seconds is not None else "id"
    if base in TEMPORAL:
        if spec.lookback is not None:
            raise FinalError(
                f"cursor {spec.cursor} is a {type_sql}: give lookback as a duration (like 3d)"
            )
        return "temporal"
    raise FinalError(
        f"cursor {spec.cursor} is a {type_sql}; an incremental cursor must be an integer, "
        "numeric, date or timestamp column"
    )


def window(spec: Incremental, type_sql: str, watermark: str) -> CursorWindow:
    column = f"{ALIAS}.{quoting.ident(spec.cursor)}"
    kind = cursor_class(spec, type_sql)
    wm = "current_setting('syncd.watermark')"
    lb = "current_setting('syncd.lookback')"
    settings = [("syncd.watermark", watermark)]
    if kind == "id":
        if spec.lookback:
            lower = f"({wm}::numeric - {lb}::numeric)::{type_sql}"
            settings.append(("syncd.lookback", str(spec.lookback)))
        else:
            lower = f"{wm}::{type_sql}"
    else:
        settings.append(("syncd.lookback", f"{spec.lookback_seconds or 0:.0f} seconds"))
        if kind == "datekey":
            lower = f"to_char(to_date({wm}, 'YYYYMMDD') - {lb}::interval, 'YYYYMMDD')::{type_sql}"
        else:
            lower = f"({wm}::{type_sql} - {lb}::interval)::{type_sql}"
    return CursorWindow(f"{column} > {lower}", cap(spec, type_sql), tuple(settings))


def cap(spec: Incremental, type_sql: str) -> str:
    """Which rows a watermark may come from: date-like ones never past today."""
    column = f"{ALIAS}.{quoting.ident(spec.cursor)}"
    kind = cursor_class(spec, type_sql)
    if kind == "datekey":
        return f"{column} <= to_char(now(), 'YYYYMMDD')::{type_sql}"
    if kind == "temporal":
        return f"{column} <= now()"
    return "TRUE"


def readable(spec: Incremental, type_sql: str, watermark: str) -> bool:
    """Is a stored watermark in the form every session reads the same way? One stored by an
    older syncd under another DateStyle (`11/02/2024`) is not: the dataset is reloaded whole
    instead of being read from a date that may be the wrong one."""
    if cursor_class(spec, type_sql) == "temporal":
        return _ISO.fullmatch(watermark) is not None
    return _WHOLE.fullmatch(watermark) is not None


REWRITE_SPREAD = 0.2  # full refreshes come due within the last fifth of their interval


def rewrite_due(
    every: float | None,
    full_refresh_at: datetime | None,
    now: datetime,
    source_id: str,
    dataset: str,
) -> bool:
    """Is it time to rewrite the municipality's rows whole, trusting nothing stored? Always
    when nothing was ever written whole (a first load, or rows an older syncd landed); then
    every `full_refresh_every`, a little earlier for some (source, dataset) pairs than for
    others, always the same, so municipalities first loaded on one day do not all rewrite on
    one day ever after."""
    if full_refresh_at is None:
        return True
    if every is None:
        return False
    spread = zlib.crc32(f"{source_id}\x00{dataset}".encode()) / 2**32
    return (now - full_refresh_at).total_seconds() >= every * (1 - REWRITE_SPREAD * spread)
