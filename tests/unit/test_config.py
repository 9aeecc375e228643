"""Config: the SPEC's keys into frozen objects; every problem with its key path and line."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from syncd import config
from syncd.config import ConfigError

from tests.support.helpers import config_problems

MINIMAL = """\
destination:
  dsn: postgresql://syncd@analytics.internal:5432/impulso
sources:
  - id: "351570"
    name: "São José dos Campos"
    dsn: postgresql://esus_leitura@10.20.0.7:5433/esus
datasets:
  - name: cidadaos
    table: public.tb_fat_cidadao_pec
"""


problems = config_problems


def test_minimal_config_gets_every_default():
    c = config.loads(MINIMAL)
    assert c.destination.schema == "syncd_data"
    assert c.destination.source_column == "municipio_id_sus"
    assert c.destination.buckets == 16
    assert (c.concurrency.sources, c.concurrency.per_host, c.concurrency.writers) == (32, 4, 16)
    assert c.schedule.interval == 86400 and c.schedule.timezone == "America/Sao_Paulo"
    assert c.schedule.window is None
    assert (c.http.host, c.http.port) == ("127.0.0.1", 9187)
    assert c.sources[0].dsn.host_key == "10.20.0.7:5433"
    assert c.sources[0].name == "São José dos Campos"
    assert c.datasets[0].table == "public.tb_fat_cidadao_pec"
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.concurrency.sources = 1  # type: ignore[misc]


def test_full_config_from_the_spec(tmp_path: Path):
    (tmp_path / "listas").mkdir()
    (tmp_path / "listas" / "gestantes.sql").write_text("SELECT 1 AS um;\n\n")
    (tmp_path / "sources.yaml").write_text(
        '- id: "355030"\n  dsn: postgresql://esus_leitura@10.0.0.9:5433/esus\n'
    )
    text = """\
    destination:
      dsn: postgresql://syncd@analytics.internal:5432/impulso
      password_file: /run/credentials/syncd.service/analytics
      schema: dados
      source_column: id_sus
    concurrency: {sources: 8, per_host: 2, writers: 4}
    schedule:
      interval: 12h
      window: "22:00-06:00"
      timezone: America/Manaus
    http:
      listen: 0.0.0.0:9999
      token_file: token
    timeouts: {connect: 10s, statement: 2h, idle_stream: 90s, lock: 500ms, shutdown_grace: 1m30s}
    retry: {attempts: 6, backoff: 1s, max_backoff: 5m}
    sources:
      - id: "351570"
        dsn: postgresql://esus_leitura@10.20.0.7:5433/esus?sslmode=verify-full&sslrootcert=/etc/ca.pem
        password_file: secrets/351570
    sources_file: sources.yaml
    datasets:
      - name: cidadaos
        table: public.tb_fat_cidadao_pec
      - name: lista_nominal_gestantes
        query_file: listas/gestantes.sql
      - name: inline
        query: |
          SELECT 2 AS dois;
    """
    path = tmp_path / "syncd.yaml"
    path.write_text(textwrap.dedent(text))
    c = config.load(path)
    assert c.destination.schema == "dados" and c.destination.source_column == "id_sus"
    assert c.schedule.interval == 43200 and str(c.schedule.window) == "22:00-06:00"
    assert c.http.token_file == tmp_path / "token"
    assert c.timeouts.shutdown_grace == 90 and c.timeouts.lock == 0.5
    assert [s.id for s in c.sources] == ["351570", "355030"]
    assert c.sources[0].password_file == tmp_path / "secrets" / "351570"
    assert c.dataset("lista_nominal_gestantes").query == "SELECT 1 AS um"
    assert c.dataset("inline").query == "SELECT 2 AS dois"


@pytest.mark.parametrize(
    "text, expected",
    [
        (MINIMAL + "extra: 1\n", "syncd.yaml:10: extra: unknown key"),
        (
            MINIMAL.replace("  schema", "") + "concurrency:\n  sourcez: 3\n",
            "syncd.yaml:11: concurrency.sourcez: unknown key (did you mean 'sources'?)",
        ),
        (
            MINIMAL + "schedule:\n  interval: 24\n",
            "syncd.yaml:11: schedule.interval: 24 is not a duration (like 90s, 15m, 24h, 7d)",
        ),
        (
            MINIMAL + "schedule:\n  interval: 1 day\n",
            "syncd.yaml:11: schedule.interval: '1 day' is not a duration",
        ),
        (
            MINIMAL + "timeouts:\n  connect: -5s\n",
            "syncd.yaml:11: timeouts.connect: '-5s' is not a duration",
        ),
        (MINIMAL + "schedule:\n  window: 25:00-03:00\n", "syncd.yaml:11: schedule.window:"),
        (
            MINIMAL + "schedule:\n  timezone: Mars/Olympus\n",
            "syncd.yaml:11: schedule.timezone: 'Mars/Olympus' is not a known time zone",
        ),
        (
            MINIMAL + "concurrency:\n  sources: 0\n",
            "syncd.yaml:11: concurrency.sources: must be between 1 and 10000",
        ),
        (
            MINIMAL + "concurrency:\n  writers: many\n",
            "syncd.yaml:11: concurrency.writers: must be a whole number",
        ),
        (
            MINIMAL.replace('id: "351570"', 'id: "35-1570"'),
            "syncd.yaml:4: sources[0].id: '35-1570' is not an id of letters, digits and _",
        ),
        (
            MINIMAL.replace("name: cidadaos", "name: Cidadaos"),
            "syncd.yaml:8: datasets[0].name: 'Cidadaos' is not a lowercase identifier",
        ),
        (
            MINIMAL.replace("name: cidadaos", 'name: "x; DROP TABLE y"'),
            "datasets[0].name: 'x; DROP TABLE y' is not a lowercase identifier",
        ),
        (
            MINIMAL.replace("table: public.tb_fat_cidadao_pec", 'table: "public.tb; DROP"'),
            "syncd.yaml:9: datasets[0].table: 'public.tb; DROP' is not a table name",
        ),
        (
            MINIMAL + "  - name: dupla\n    table: a\n    query: SELECT 1\n",
            "syncd.yaml:12: datasets[1].query: give only one of table, query, query_file",
        ),
        (
            MINIMAL + "  - name: vazia\n",
            "syncd.yaml:10: datasets[1]: needs one of table, query, query_file",
        ),
        (
            MINIMAL + "  - name: cidadaos\n    table: b\n",
            "syncd.yaml:10: datasets[1].name: duplicate dataset name 'cidadaos'",
        ),
        (
            MINIMAL.replace(
                "datasets:", '  - id: "351570"\n    dsn: postgresql://x@h/db\ndatasets:'
            ),
            "syncd.yaml:7: sources[1].id: duplicate source id '351570' (first at syncd.yaml:4)",
        ),
        (
            MINIMAL.replace(
                "postgresql://esus_leitura@10.20.0.7:5433/esus", "host=10.20.0.7 dbname=esus"
            ),
            "syncd.yaml:6: sources[0].dsn: must start with postgresql://",
        ),
        (
            MINIMAL.replace(":5433/esus", ":99999/esus"),
            "sources[0].dsn: has a port that is not a number",
        ),
        (
            MINIMAL.replace("  dsn: postgresql://syncd@analytics.internal:5432/impulso\n", ""),
            "syncd.yaml:1: destination.dsn: is required",
        ),
        ("sources: []\ndatasets: []\n", "destination: is required"),
        (MINIMAL + "destination:\n  dsn: x\n", "syncd.yaml:10: duplicate key 'destination'"),
        (MINIMAL + "datasets: [\n", "syncd.yaml:11: invalid YAML"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("", "must be a mapping"),
        (
            MINIMAL + "http:\n  listen: localhost\n",
            "syncd.yaml:11: http.listen: 'localhost' is not host:port",
        ),
        (MINIMAL + "destination_schema: x\n", "destination_schema: unknown key (did you mean"),
        (
            MINIMAL.replace(
                "datasets:",
                "  - id: a\n    dsn: postgresql://x@h/db\n    params: {UF: SP}\ndatasets:",
            ),
            "sources[1].params.UF: parameter names are lowercase identifiers",
        ),
    ],
)
def test_each_problem_names_its_key_path_and_line(text: str, expected: str):
    found = problems(text)
    assert any(p.startswith(expected) or expected in p for p in found), found


def test_every_problem_is_reported_at_once():
    found = problems(
        """\
        destination: {dsn: "mysql://x", schema: Public}
        concurrency: {sources: -1, bogus: 1}
        sources: [{id: "a b", dsn: postgresql://h/db}]
        datasets: [{name: x, table: t, query: q}]
        """
    )
    assert len(found) == 6, found
    assert all(p.startswith("syncd.yaml:") for p in found)


def test_query_file_relative_to_config_and_missing(tmp_path: Path):
    found = problems(MINIMAL + "  - name: l\n    query_file: nope.sql\n", base=tmp_path)
    assert found == [f"syncd.yaml:11: datasets[1].query_file: {tmp_path / 'nope.sql'} not found"]


def test_inline_password_in_world_readable_file_warns(tmp_path: Path):
    path = tmp_path / "syncd.yaml"
    path.write_text(MINIMAL.replace("syncd@analytics", "syncd:s3cr3t@analytics"))
    path.chmod(0o644)
    c = config.load(path)
    assert c.warnings and "readable by every user" in str(c.warnings[0])
    assert "s3cr3t" not in " ".join(map(str, c.warnings))
    assert "s3cr3t" not in str(c.destination.dsn) and "s3cr3t" not in repr(c.destination)
    path.chmod(0o600)
    assert config.load(path).warnings == ()


def test_destination_buckets():
    dsn = "  dsn: postgresql://syncd@analytics.internal:5432/impulso\n"
    with_buckets = MINIMAL.replace(dsn, dsn + "  buckets: 64\n")
    assert config.loads(with_buckets).destination.buckets == 64
    for bad, message in (
        ("0", "must be between 1 and 256"),
        ("257", "must be between 1 and 256"),
        ("lots", "must be a whole number"),
    ):
        text = MINIMAL.replace(dsn, dsn + f"  buckets: {bad}\n")
        assert problems(text) == [f"syncd.yaml:3: destination.buckets: {message}"]


def test_destination_max_size_reads_sizes():
    dsn = "  dsn: postgresql://syncd@analytics.internal:5432/impulso\n"
    assert config.loads(MINIMAL).destination.max_size is None  # no budget unless given
    for text, size in (
        ("400GB", 400 * 1024**3),
        ("500MB", 500 * 1024**2),
        ("1.5TB", int(1.5 * 1024**4)),
        ("2048kb", 2 * 1024**2),
        ('"400 GB"', 400 * 1024**3),
    ):
        loaded = config.loads(MINIMAL.replace(dsn, dsn + f"  max_size: {text}\n"))
        assert loaded.destination.max_size == size, text
    for bad, message in (
        ("lots", "'lots' is not a size (like 500MB, 400GB, 2TB)"),
        ("400B", "must be at least 1MB"),
        ("400", "400 is not a size (like 500MB, 400GB, 2TB)"),  # bytes? megabytes? say so
        ("12PB", "'12PB' is not a size (like 500MB, 400GB, 2TB)"),
        ("-1GB", "'-1GB' is not a size (like 500MB, 400GB, 2TB)"),
    ):
        text = MINIMAL.replace(dsn, dsn + f"  max_size: {bad}\n")
        assert problems(text) == [f"syncd.yaml:3: destination.max_size: {message}"], bad


def test_destination_retype_online_above_reads_sizes_and_zero():
    dsn = "  dsn: postgresql://syncd@analytics.internal:5432/impulso\n"
    assert config.loads(MINIMAL).destination.retype_online_above == 16 * 1024**2
    for text, size in (("0", 0), ('"0"', 0), ("0B", 0), ("1GB", 1024**3), ("512kb", 512 * 1024)):
        loaded = config.loads(MINIMAL.replace(dsn, dsn + f"  retype_online_above: {text}\n"))
        assert loaded.destination.retype_online_above == size, text
    for bad, message in (
        ("some", "'some' is not a size (like 500MB, 400GB, 2TB)"),
        ("400", "400 is not a size (like 500MB, 400GB, 2TB)"),  # bytes? megabytes? say so
    ):
        text = MINIMAL.replace(dsn, dsn + f"  retype_online_above: {bad}\n")
        assert problems(text) == [f"syncd.yaml:3: destination.retype_online_above: {message}"]


def test_destination_statement_timeout_and_disk_probe():
    loaded = config.loads(MINIMAL + "timeouts: {destination_statement: 2h, disk_probe: 30s}\n")
    assert loaded.timeouts.destination_statement == 7200.0
    assert loaded.timeouts.disk_probe == 30.0
    assert config.loads(MINIMAL).timeouts.destination_statement == 3600.0
    assert problems(MINIMAL + "timeouts: {disk_probe: 10ms}\n") == [
        "syncd.yaml:10: timeouts.disk_probe: must be at least 1s"
    ]


def test_select_narrows_and_rejects_unknown_names():
    c = config.loads(MINIMAL)
    assert config.select(c, ["351570"], ["cidadaos"]).sources == c.sources
    with pytest.raises(ConfigError) as info:
        config.select(c, ["999"], ["nada"])
    assert [str(p) for p in info.value.problems] == [
        "--source: unknown source id '999'",
        "--dataset: unknown dataset 'nada'",
    ]


def test_config_print_keeps_the_disk_budget_and_the_new_timeouts_exactly():
    from syncd.config.render import to_yaml

    dsn = "  dsn: postgresql://syncd@analytics.internal:5432/impulso\n"
    for size in ("400GB", "123456789B", "1536MB"):
        text = MINIMAL.replace(dsn, dsn + f"  max_size: {size}\n") + (
            "timeouts: {destination_statement: 90s, disk_probe: 2m}\n"
        )
        loaded = config.loads(text)
        again = config.loads(to_yaml(loaded))
        assert again.destination.max_size == loaded.destination.max_size, size
        assert again.timeouts == loaded.timeouts


def test_delta_defaults_by_kind_and_can_be_chosen():
    from syncd.engine import delta

    c = config.loads(
        MINIMAL.replace(
            "    dsn: postgresql://esus_leitura@10.20.0.7:5433/esus\n",
            "    dsn: postgresql://esus_leitura@10.20.0.7:5433/esus\n  - {id: central, dsn: postgresql://h/db, delta: false}\n",
        )
        + "  - {name: lista, query: SELECT 1 AS um}\n"
        + "  - {name: estavel, query: SELECT 1 AS um, delta: true}\n"
        + "  - {name: inteira, table: public.t, delta: false}\n"
    )
    municipal, central = c.sources
    assert (municipal.delta, central.delta) == (True, False)
    assert [d.delta for d in c.datasets] == [None, None, True, False]
    assert [delta.enabled(d, municipal) for d in c.datasets] == [True, False, True, False]
    assert not any(delta.enabled(d, central) for d in c.datasets)


def test_delta_takes_true_or_false_and_no_incremental():
    found = problems(
        MINIMAL.replace(
            "    table: public.tb_fat_cidadao_pec", "    table: public.t\n    delta: sim"
        )
        + "  - {name: b, table: public.b, mode: incremental, cursor: id, key: id, delta: true}\n"
    )
    assert "syncd.yaml:10: datasets[0].delta: must be true or false" in found, found
    assert any(p.startswith("syncd.yaml:11: datasets[1].delta: only for snapshot") for p in found)
