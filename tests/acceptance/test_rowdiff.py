"""Writing only what changed, through the real `syncd` subprocess: the pure-Python differ (no accelerator)
lands what the C one does."""

from __future__ import annotations

import asyncpg

from tests.conftest import DestDb
from tests.scenarios.test_landing_changes import CIDADAOS, TABLE, last_writes
from tests.support.helpers import assert_dataset_exact, run_cli


async def test_the_pure_python_differ_lands_what_the_c_one_does(
    make_sources, dest: DestDb, write_config
):
    """Passes alternate between the two differs over changing rows: each finds exactly what the
    other wrote (the hashes are the same), and the rows are the source's."""
    (src,) = await make_sources(1, citizens=150)
    path, _ = write_config(dest, [src], [CIDADAOS])
    admin = await asyncpg.connect(src.admin_dsn)
    dst = await dest.connect()
    try:
        for n, pure in enumerate(["1", "0", "1", "0"]):
            result = run_cli("once", "--config", str(path), env={"SYNCD_PURE_PYTHON_DIFF": pure})
            assert result.returncode == 0, result.stdout + result.stderr
            inserted, deleted = (await last_writes(dst, src.id))["cidadaos"][2:4]
            assert (inserted, deleted) == ((150, 0) if n == 0 else (5, 5)), (n, pure)
            await assert_dataset_exact(admin, dst, src.id, "cidadaos", f"SELECT * FROM {TABLE}")
            await admin.execute(
                f"UPDATE {TABLE} SET nu_cns = left(md5(random()::text), 15) "
                f"WHERE co_seq_fat_cidadao_pec % 30 = {n}"
            )
    finally:
        await admin.close()
        await dst.close()
