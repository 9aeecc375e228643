"""Round trips on the municipal link: a snapshot pass over one source with N table datasets costs
at most N + ROUND_TRIP_CONSTANT of them after connecting, counted by a real TCP proxy
between syncd and the municipal server."""

from __future__ import annotations

import pytest

from tests.conftest import QUERY_DATASETS, TABLE_DATASETS
from tests.support.helpers import run_pass
from tests.support.roundtrips import RoundTripProxy

# BEGIN + the savepoint (one simple query), the catalog of every dataset at once (one COPY);
# then one COPY per dataset, and no goodbye but Terminate
ROUND_TRIP_CONSTANT = 2


@pytest.fixture
async def counting(source_cluster):
    proxy = await RoundTripProxy(source_cluster.host, source_cluster.port).start()
    yield proxy
    await proxy.stop()


@pytest.mark.parametrize("n", [1, 2, 4])
async def test_a_snapshot_pass_costs_n_plus_a_constant_round_trips(
    n, make_sources, dest, write_config, counting
):
    (db,) = await make_sources(1)
    entry = db.source_entry(dsn=counting.dsn(db.dbname, user="esus_leitura"))
    _, config = write_config(dest, [entry], TABLE_DATASETS[:n])
    code, out, err = await run_pass(config)  # the first load: tables created, every row new
    assert code == 0, out + err
    counting.clear()
    code, out, err = await run_pass(config)  # the steady pass the budget is about
    assert code == 0, out + err
    (link,) = counting.links  # one session on the municipal link per pass
    assert link.connected_at is not None
    assert link.after_connecting <= n + ROUND_TRIP_CONSTANT, (
        f"{link.after_connecting} round trips after connecting for {n} datasets"
    )


async def test_a_query_dataset_costs_two_once_its_types_are_known(
    make_sources, dest, write_config, counting
):
    """The server parses the query to tell its columns (one round trip), then the COPY; naming
    their types costs one more the first time a process meets them (built-in types are named
    the same by every server of a major version), here in the first pass."""
    (db,) = await make_sources(1)
    entry = db.source_entry(dsn=counting.dsn(db.dbname, user="esus_leitura"))
    _, config = write_config(dest, [entry], [*TABLE_DATASETS[:2], QUERY_DATASETS[1]])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    counting.clear()
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    (link,) = counting.links
    assert link.after_connecting <= 2 + ROUND_TRIP_CONSTANT + 2, link.after_connecting
