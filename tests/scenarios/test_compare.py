"""`syncd verify` (engine/compare.py, commands/verify.py) on real PostgreSQL: a row changed by
hand on the destination is found, a stored hash that no longer matches its row is no difference
in the rows, and the next full refresh undoes the change."""

from __future__ import annotations

import anyio
import asyncpg

from tests.conftest import DestDb
from tests.scenarios.test_landing_changes import CIDADAOS, SCHEMA, TABLE, last_writes, verify
from tests.support.helpers import assert_dataset_exact, run_pass


async def test_hand_changes_are_seen_by_verify_and_undone_by_a_full_refresh(
    make_sources, dest: DestDb, write_config
):
    sources = await make_sources(2, citizens=120)
    # the landing's own trust in its row hashes: without delta transfer, whose round 1 would
    # find the source unchanged and read no hash (test_delta.py has its twin with delta)
    plain = {**CIDADAOS, "delta": False}
    _, config = write_config(dest, sources, [plain])
    assert (await run_pass(config))[0] == 0
    code, text = await verify(config)
    assert code == 0 and "2 of 2 datasets equal" in text, text
    dst = await dest.connect()
    admin = await asyncpg.connect(sources[0].admin_dsn)
    try:
        one, two = sources[0].id, sources[1].id
        # a row changed by hand (its hash kept), and a hash that no longer matches its row
        await dst.execute(
            f"UPDATE {SCHEMA}.cidadaos SET no_cidadao = 'mexido' WHERE municipio_id_sus = $1 "
            "AND co_seq_fat_cidadao_pec = 5",
            one,
        )
        await dst.execute(
            f"UPDATE {SCHEMA}.cidadaos SET syncd_row_hash = gen_random_uuid() "
            "WHERE municipio_id_sus = $1 AND co_seq_fat_cidadao_pec = 6",
            two,
        )
        code, text = await verify(config)
        assert code == 1, text
        assert [line.split()[:3] for line in text.splitlines() if "differs" in line] == [
            [one, "cidadaos", "differs"]
        ], text  # the wrong hash is no difference in the rows
        # the next pass trusts the hashes: the hand-changed row stays, the bad hash heals
        assert (await run_pass(config))[0] == 0
        assert (await last_writes(dst, two))["cidadaos"][2:4] == (1, 1)
        assert (await verify(config))[0] == 1
        # a full refresh trusts nothing
        _, refresh = write_config(dest, sources, [{**plain, "full_refresh_every": "1s"}])
        await anyio.sleep(1.1)
        assert (await run_pass(refresh))[0] == 0
        _, rows, inserted, deleted, mode = (await last_writes(dst, one))["cidadaos"]
        assert (rows, inserted, deleted, mode) == (120, 120, 120, "snapshot")  # all rewritten
        code, text = await verify(config)
        assert code == 0, text
        await assert_dataset_exact(admin, dst, one, "cidadaos", f"SELECT * FROM {TABLE}")
    finally:
        await admin.close()
        await dst.close()
