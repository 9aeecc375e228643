"""Inputs through the real `syncd` subprocess: odd SQL files land, an empty selection says so,
a chunked POST body is limited, and a SIGHUP that adds a dataset makes it due at once."""

from __future__ import annotations

import http.client
import signal

import asyncpg
import yaml

from syncd.config import clean_query

from tests.scenarios.test_inputs import INHERITANCE, _admin
from tests.support.daemonproc import DaemonProcess, free_port
from tests.support.helpers import assert_dataset_exact, run_cli, run_pass
from tests.unit.test_config_querytext import ODD_ENDINGS


async def test_queries_ending_in_comments_or_starting_with_a_bom_land(
    make_sources, dest, write_config, tmp_path
):
    (db,) = await make_sources(1)
    await _admin(db.admin_dsn, INHERITANCE)
    datasets = []
    for name, text in ODD_ENDINGS.items():
        path = tmp_path / f"{name}.sql"
        path.write_bytes(text.encode())
        datasets.append({"name": name, "query_file": str(path)})
    datasets.append({"name": "inline", "query": ODD_ENDINGS["ponto_e_virgula_comentario"]})
    # wrapped again for an incremental window and its watermark
    datasets.append(
        {"name": "incremental", "query": ODD_ENDINGS["comentario"], "mode": "incremental"}
        | {"cursor": "id", "key": "id"}
    )
    path, config = write_config(dest, [db], datasets)
    assert run_cli("check-config", "--config", str(path)).returncode == 0
    for _ in range(2):  # full, then incremental
        code, out, err = await run_pass(config)
        assert code == 0, out + err
    src = await asyncpg.connect(db.admin_dsn)
    dst = await dest.connect()
    try:
        for name, text in ODD_ENDINGS.items():
            assert await assert_dataset_exact(src, dst, db.id, name, clean_query(text)) == 4
        assert (
            await dst.fetchval("SELECT tipo FROM syncd_data.dolar WHERE id = 1")
            == " -- ; no pai;--"
        )
        assert (
            await dst.fetchval("SELECT tipo FROM syncd_data.escape WHERE id = 1") == "\\no pai' -- "
        )
        modes = await dst.fetch(
            "SELECT mode FROM syncd.ledger WHERE dataset = 'incremental' ORDER BY pass_id"
        )
        assert [m["mode"] for m in modes] == ["full_refresh", "incremental"]
    finally:
        await src.close()
        await dst.close()


async def test_once_with_no_sources_says_so_and_exits_0(dest, write_config):
    path, _ = write_config(dest, [], [{"name": "equipes", "table": "tb_dim_equipe"}])
    result = run_cli("once", "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to sync: the config lists no sources" in result.stderr
    assert "interrupted" not in result.stdout + result.stderr


async def test_a_chunked_post_body_is_limited_like_a_sized_one(
    make_sources, dest, write_config, tmp_path
):
    (db,) = await make_sources(1)
    token = "chunked-t0ken"
    token_file = tmp_path / "token"
    token_file.write_text(token)
    port = free_port()
    path, _ = write_config(
        dest,
        [db],
        [{"name": "equipes", "table": "tb_dim_equipe"}],
        http={"listen": f"127.0.0.1:{port}", "token_file": str(token_file)},
    )
    daemon = DaemonProcess(path, port)
    try:
        daemon.wait_ready()

        def post(chunks: int) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request(
                    "POST",
                    f"/sources/{db.id}/sync",
                    body=iter([b"x" * 1024] * chunks),
                    headers={"Authorization": f"Bearer {token}"},
                    encode_chunked=True,
                )
                return conn.getresponse().status
            finally:
                conn.close()

        assert post(20) == 413  # 20 kB, no Content-Length
        assert post(1) == 202  # a small one is still fine
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()


async def test_sighup_adding_a_dataset_makes_it_due_at_once_for_every_source(
    make_sources, dest, write_config
):
    sources = await make_sources(3)
    port = free_port()
    path, _ = write_config(
        dest,
        sources,
        [{"name": "equipes", "table": "tb_dim_equipe"}],
        http={"listen": f"127.0.0.1:{port}"},
        schedule={"interval": "24h", "jitter": "0s"},
    )
    daemon = DaemonProcess(path, port)
    ids = {s.id for s in sources}
    try:
        daemon.wait_ready()
        daemon.wait_status(lambda s: all(s["sources"][i]["state"] == "ok" for i in ids))
        document = yaml.safe_load(path.read_text())
        document["datasets"].append({"name": "unidades", "table": "tb_dim_unidade_saude"})
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        daemon.signal(signal.SIGHUP)

        def landed(status: dict) -> bool:
            return all(
                status["sources"][i]["datasets"].get("unidades", {}).get("status") == "ok"
                for i in ids
            )

        status = daemon.wait_status(landed, timeout=60)  # not in 24 h
        for i in ids:  # the others' schedule is untouched: next pass a day after the first
            assert status["sources"][i]["next_due"] > status["sources"][i]["last_success"]
    finally:
        daemon.stop()
    dst = await dest.connect()
    try:
        passes = await dst.fetch(
            "SELECT source_id, pass_id, array_agg(dataset ORDER BY dataset) AS datasets "
            "FROM syncd.ledger GROUP BY source_id, pass_id ORDER BY source_id, pass_id"
        )
        assert await dst.fetchval("SELECT count(DISTINCT status) FROM syncd.ledger") == 1
    finally:
        await dst.close()
    by_source: dict[str, list[list[str]]] = {}
    for row in passes:
        by_source.setdefault(row["source_id"], []).append(list(row["datasets"]))
    # a pass of every dataset, then one of just the new one: equipes is not copied again
    assert by_source == {i: [["equipes"], ["unidades"]] for i in ids}
