"""The settings every destination session pins, whatever the analytical database's or role's
defaults say.

The analytical database is shared: its DBA sets defaults for the analysts (`ALTER DATABASE ...
SET statement_timeout = '2s'`, `default_transaction_isolation = serializable`...). Settings sent
at connect (asyncpg's `server_settings`, the startup packet) beat database and role defaults,
cost no extra round trip, and hold on every connection of the pool, so each one the landing
relies on is sent there:

- `statement_timeout`: syncd's own bound (`timeouts.destination_statement`), not the analysts';
- `default_transaction_isolation`: read committed. Landings read their own rows and take row
  locks only; under serializable, concurrent first landings of several municipalities fail with
  serialization failures, and DDL racing on a new dataset table sees "already exists";
- `lock_timeout` 0 for the session: the landing and the DDL set their own (`timeouts.lock`) per
  transaction; the ledger's migration waits for another instance's on purpose;
- `idle_in_transaction_session_timeout` 0: a landing may wait, idle in its transaction, for a
  writer slot or a slow source (`timeouts.idle_stream` bounds that instead);
- `search_path`: only `pg_catalog` and `pg_temp` (last): syncd names every relation with its
  schema, so an analyst's object in a schema the DBA put first can never stand in for one of
  syncd's;
- `quote_all_identifiers` off: the dataset tables are recognised by `pg_get_partkeydef`'s text;
- `standard_conforming_strings` on: the few literals in DDL are written for it;
- the text forms of dates and numbers (`TEXT_SETTINGS`): watermarks are computed there.

`default_transaction_read_only` is deliberately not pinned: a DBA who makes the database
read-only means it, and the landing is refused with the server's own words, named as the
destination's. `temp_file_limit` cannot be pinned: only a superuser may set it (syncd's role is
not one); the landing spills nothing to temporary files in the usual case, and when it does the
error names the limit and the destination. `idle_session_timeout` exists from PostgreSQL 14 on
(a startup packet naming it fails on 12 and 13), so it is set once per new connection where the
server knows it (`pin_late`).
"""

from __future__ import annotations

import asyncpg

from syncd.config import Timeouts
from syncd.engine.connect import APPLICATION_NAME, SERVER_KEEPALIVES
from syncd.engine.incremental import TEXT_SETTINGS

IDLE_SESSION_TIMEOUT_FROM = 14  # the server version that has idle_session_timeout


def server_settings(timeouts: Timeouts) -> dict[str, str]:
    """What every destination session sends at connect."""
    return {
        "application_name": APPLICATION_NAME,
        **SERVER_KEEPALIVES,
        **TEXT_SETTINGS,
        "statement_timeout": str(max(1, int(timeouts.destination_statement * 1000))),
        "default_transaction_isolation": "read committed",
        "lock_timeout": "0",
        "idle_in_transaction_session_timeout": "0",
        "search_path": "pg_catalog, pg_temp",
        "quote_all_identifiers": "off",
        "standard_conforming_strings": "on",
    }


async def pin_late(conn: asyncpg.Connection) -> None:
    """What cannot go in the startup packet of every server version: a pooled connection idle
    between passes must not be cut by the DBA's `idle_session_timeout`."""
    if conn.get_server_version().major >= IDLE_SESSION_TIMEOUT_FROM:
        await conn.execute("SET idle_session_timeout = 0")


async def reset_pooled(conn: asyncpg.Connection) -> None:
    """The pool's reset of a released connection: asyncpg's own (RESET ALL among it), then
    `pin_late` again. What the startup packet set survives RESET ALL; a SET does not, and the
    pool resets a connection every time it comes back."""
    await conn.reset()
    await pin_late(conn)
