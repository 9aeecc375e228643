"""Identifiers and literals quoted (engine/quoting.py), round-tripped through a real PostgreSQL:
what goes in as a name or a value comes back as written, and a NUL is refused."""

from __future__ import annotations

import pytest

from syncd.engine import quoting


async def test_quoting_round_trips_through_postgresql(dest):
    dst = await dest.connect()
    try:
        for name in ['a"b', "x; DROP TABLE t; --", "ação", 'q""q', "  spaces  "]:
            await dst.execute(f"CREATE TABLE {quoting.ident(name)} (v text)")
            await dst.execute(f"INSERT INTO {quoting.ident(name)} VALUES ({quoting.literal(name)})")
            assert await dst.fetchval(f"SELECT v FROM {quoting.ident(name)}") == name
        with pytest.raises(ValueError):
            quoting.ident("nul\x00")
        with pytest.raises(ValueError):
            quoting.literal("nul\x00")
    finally:
        await dst.close()
