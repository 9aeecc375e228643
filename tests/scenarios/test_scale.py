"""650 municipalities, 5% of them broken or blackholed: every healthy one lands, the pass ends
within its timeouts, exit 1 naming the failed ones."""

from __future__ import annotations

import anyio
import pytest

from tests.conftest import TABLE_DATASETS
from tests.support.faultproxy import FaultProxy
from tests.support.helpers import run_pass

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


@pytest.mark.slow
async def test_650_municipalities_with_5_percent_failing(
    make_sources, dest, write_config, source_cluster
):
    # 650 sources over 26 databases (25 sources each, distinct ids): the point is the fan-out
    databases = await make_sources(26)
    hole = await FaultProxy(source_cluster.host, source_cluster.port).start()
    hole.blackhole = True
    entries, broken, blackholed = [], set(), set()
    try:
        for i in range(650):
            sid = f"{100000 + i}"
            db = databases[i % len(databases)]
            dsn = source_cluster.dsn(db.dbname, user="esus_leitura", host=HOSTS[i % 3])
            if i % 40 == 7:  # 17 sources: a database that does not exist
                dsn = source_cluster.dsn("nao_existe", user="esus_leitura")
                broken.add(sid)
            elif i % 40 == 27:  # 16 sources: answers nothing at all
                dsn = hole.dsn(db.dbname, user="esus_leitura")
                blackholed.add(sid)
            entries.append({"id": sid, "dsn": dsn})
        assert len(broken) + len(blackholed) == 33  # 5%
        _, config = write_config(
            dest,
            entries,
            [TABLE_DATASETS[3], TABLE_DATASETS[4]],
            concurrency={"sources": 32, "per_host": 16, "writers": 16},
            timeouts={"connect": "2s", "idle_stream": "5s"},
            retry={"attempts": 2, "backoff": "100ms", "max_backoff": "200ms"},
        )
        with anyio.fail_after(600):  # a hang guard: without timeouts this pass never ends
            code, out, _err = await run_pass(config)
    finally:
        await hole.stop()
    assert code == 1
    assert "617 of 650 sources ok" in out
    failed_lines = out[out.index("failed:") :].splitlines()[1:]
    named = {line.split()[0] for line in failed_lines}
    assert named == broken | blackholed
    for sid in blackholed:
        assert any(
            line.startswith(f"  {sid} ") and "within timeouts.connect (2s)" in line
            for line in failed_lines
        )
    for sid in broken:
        assert any(
            line.startswith(f"  {sid} ") and 'database "nao_existe" does not exist' in line
            for line in failed_lines
        )
    dst = await dest.connect()
    try:
        landed = await dst.fetchval(
            "SELECT count(DISTINCT municipio_id_sus) FROM syncd_data.dim_equipe"
        )
        assert landed == 617
        assert (
            await dst.fetchval("SELECT count(*) FROM syncd.ledger WHERE status = 'ok'") == 617 * 2
        )
    finally:
        await dst.close()
