"""A mixed fleet lands: municipal servers on PostgreSQL 10 and on the wheel's newest feed
one dataset whose column types differ between them."""

from __future__ import annotations

import asyncpg

from syncd.lab import embedded


async def test_the_postgresql_10_source_is_10_and_extract_is_double_there(
    source_cluster_10: embedded.Cluster, source_cluster: embedded.Cluster
) -> None:
    """The fixture the rest stands on: the old server answers, and EXTRACT's type moved."""
    types = {}
    for cluster in (source_cluster_10, source_cluster):
        conn = await asyncpg.connect(cluster.dsn())
        try:
            types[cluster.major] = await conn.fetchval(
                "SELECT pg_typeof(EXTRACT(month FROM now()))::text"
            )
        finally:
            await conn.close()
    assert types == {10: "double precision", source_cluster.major: "numeric"}


async def test_the_postgresql_12_destination_is_12(dest_cluster_12: embedded.Cluster) -> None:
    conn = await asyncpg.connect(dest_cluster_12.dsn())
    try:
        assert await conn.fetchval("SHOW server_version_num") < "130000"
    finally:
        await conn.close()
