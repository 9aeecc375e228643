"""The command line through the real `syncd`: --version from the package metadata, the config
path (--config, $SYNCD_CONFIG, /etc/syncd/syncd.yaml), `config print`, warnings summed up,
`trigger` without a daemon, and the completion and man page generated from the parser (run in a
real bash, rendered by a real groff)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from syncd import __version__
from syncd import config as config_module
from syncd.lab import embedded
from syncd.service.runtime import DEFAULT_CONFIG, config_path

from tests.support.helpers import ROOT, run_cli

MINIMAL = """\
destination: {dsn: "postgresql://syncd@127.0.0.1:5432/impulso"}
sources: [{id: "351570", dsn: "postgresql://esus_leitura@10.20.0.7:5433/esus"}]
datasets: [{name: cidadaos, table: public.tb_fat_cidadao_pec}]
"""


def test_version_is_the_projects_from_the_metadata():
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert __version__ == version  # a stale install (pip install -e . again) fails here
    for args in (["--version"], ["run", "--version"], ["config", "print", "--version"]):
        result = run_cli(*args)
        assert (result.returncode, result.stdout) == (0, f"syncd {version}\n"), args


def test_config_path_resolution(tmp_path: Path):
    assert config_path(None, {}) == DEFAULT_CONFIG == Path("/etc/syncd/syncd.yaml")
    assert config_path(None, {"SYNCD_CONFIG": ""}) == DEFAULT_CONFIG
    assert config_path(None, {"SYNCD_CONFIG": "/e.yaml"}) == Path("/e.yaml")
    assert config_path("/c.yaml", {"SYNCD_CONFIG": "/e.yaml"}) == Path("/c.yaml")

    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    env = {"SYNCD_CONFIG": str(good)}
    result = run_cli("check-config", env=env)
    assert result.returncode == 0 and result.stdout == f"{good}: ok (1 sources, 1 datasets)\n"
    missing = tmp_path / "missing.yaml"
    result = run_cli("check-config", "--config", str(missing), env=env)  # --config wins
    assert (result.returncode, result.stderr) == (2, f"{missing}: file not found (--config)\n")
    result = run_cli("status", env={"SYNCD_CONFIG": str(missing)})
    assert result.stderr == f"{missing}: file not found ($SYNCD_CONFIG)\n"
    if not DEFAULT_CONFIG.exists():
        result = run_cli("check-config", env={"SYNCD_CONFIG": ""})
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr == (
            f"{DEFAULT_CONFIG}: file not found (the default; give --config FILE or set "
            "$SYNCD_CONFIG)\n"
        )


RICH = """\
destination:
  dsn: "postgresql://syncd:s3cr3t@127.0.0.1:5432/impulso?sslmode=require&sslpassword=k3y"
  notify_channel: null
  buckets: 8
schedule: {window: "22:00-06:00", interval: 12h, jitter: 90s}
timeouts: {lock: 250ms}
http: {listen: "[::1]:9300", token_file: token}
sources_file: sources.yaml
datasets:
  - {name: cidadaos, table: public.tb_fat_cidadao_pec}
  - name: hipertensos
    query_file: lista.sql
  - name: atendimentos
    table: public.tb_fat_atendimento_individual
    mode: incremental
    cursor: co_seq_fat_atd_ind
    key: [co_seq_fat_atd_ind, co_dim_tempo]
    lookback: 3d
    full_refresh_every: 7d
  - name: contatos
    mode: incremental
    cursor: id
    key: id
    lookback: 500
    variants:
      - {when: {column: public.t.nu_celular}, query: "SELECT id, nu_celular FROM public.t"}
      - {when: {table: public.u}, table: public.u}
      - {table: public.v}
"""


def test_config_print_is_the_effective_config_and_loads_back(tmp_path: Path):
    (tmp_path / "lista.sql").write_text("SELECT *\nFROM tb_fat_cidadao_pec\n-- fim\n;\n")
    (tmp_path / "sources.yaml").write_text(
        '- {id: "351570", name: "São José", dsn: "postgresql://u:pw1@10.0.0.7:5433/esus",'
        " password_file: pw, params: {uf: SP}}\n"
        '- {id: "0012", dsn: "postgresql://u@10.0.0.8/esus?sslmode=verify-full"}\n'
    )
    path = tmp_path / "syncd.yaml"
    path.write_text(RICH)
    path.chmod(0o600)
    result = run_cli("config", "print", "--config", str(path))
    assert result.returncode == 0, result.stderr
    for secret in ("s3cr3t", "k3y", "pw1"):
        assert secret not in result.stdout
    printed = yaml.safe_load(result.stdout)
    assert printed["destination"]["dsn"] == (
        "postgresql://syncd:***@127.0.0.1:5432/impulso?sslmode=require&sslpassword=***"
    )
    assert printed["concurrency"] == {"sources": 32, "per_host": 4, "writers": 16}  # defaults
    assert printed["retry"] == {"attempts": 4, "backoff": "2s", "max_backoff": "2m"}
    assert printed["sources"][1]["id"] == "0012"  # text, as written

    original = config_module.load(path)
    again = config_module.loads(result.stdout, file="printed")
    redacted = dataclasses.replace(
        original.destination, dsn=config_module.dsn.Dsn.parse(printed["destination"]["dsn"])
    )
    first = dataclasses.replace(
        original.sources[0],
        dsn=config_module.dsn.Dsn.parse("postgresql://u:***@10.0.0.7:5433/esus"),
    )
    expected = dataclasses.replace(
        original,
        path=again.path,
        warnings=again.warnings,
        destination=redacted,
        sources=(first, *original.sources[1:]),
    )
    assert again == expected


def test_many_alike_warnings_are_one_line(tmp_path: Path):
    sources = "".join(
        f'  - {{id: "{3500000 + i}", dsn: "postgresql://u@10.0.{i // 250}.{i % 250}/esus", '
        f"password_file: /run/credentials/syncd.service/municipios_{3500000 + i}}}\n"
        for i in range(650)
    )
    path = tmp_path / "syncd.yaml"
    destination, _, datasets = MINIMAL.splitlines(keepends=True)
    path.write_text(destination + "sources:\n" + sources + datasets)
    path.chmod(0o600)
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: 650 sources (3500000, 3500001, 3500002 and 647 more): password_file … does not "
        "exist here (fine if only the service sees it, e.g. a systemd credential)"
    ]


def test_trigger_without_a_token_or_a_daemon(tmp_path: Path):
    port = embedded.free_port()
    path = tmp_path / "syncd.yaml"
    path.write_text(MINIMAL + f'http: {{listen: "127.0.0.1:{port}"}}\n')
    result = run_cli("trigger", "351570", "--config", str(path))
    assert result.returncode == 2
    assert "http.token_file: is not set" in result.stderr and "Traceback" not in result.stderr
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    result = run_cli("trigger", "351570", "--config", str(path), "--token-file", str(token))
    assert result.returncode == 1
    assert result.stderr.startswith(f"no daemon answers at http://127.0.0.1:{port} (")
    assert "s3cr3t-token" not in result.stdout + result.stderr
    result = run_cli("trigger", "351570", "../x", "--config", str(path), "--token-file", str(token))
    assert (result.returncode, result.stderr) == (2, "ID: '../x' is not a source id\n")


def complete(line: str) -> list[str]:
    """What bash offers after `line`, with the script `syncd completion bash` prints."""
    script = run_cli("completion", "bash").stdout
    words = line.split(" ")
    program = (
        script
        + "\nCOMP_WORDS=("
        + " ".join(f"'{w}'" for w in words)
        + f")\nCOMP_CWORD={len(words) - 1}\n_syncd\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    )
    bash = shutil.which("bash")
    assert bash, "bash is needed for the completion test"
    result = subprocess.run(
        [bash, "--norc", "--noprofile"], input=program, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_bash_completion_from_the_parser(tmp_path: Path):
    assert {"status", "stat"} & set(complete("syncd stat")) == {"status"}
    assert set(complete("syncd status --")) >= {"--late", "--json", "--config", "--log-level"}
    assert complete("syncd --log-level w") == ["warning"]
    assert complete("syncd config ") == [
        "-h",
        "--help",
        "--log-level",
        "--log-format",
        "--version",
        "print",
    ]
    assert "--online" in complete("syncd check --o")
    assert complete("syncd completion ")[-1] == "bash"
    os.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("")
    assert complete("syncd run --config mi") == ["mine.yaml"]


MAN = ROOT / "docs" / "syncd.1"


def test_the_man_page_is_current():
    result = run_cli("man")
    assert result.returncode == 0
    assert MAN.read_text() == result.stdout, (
        "docs/syncd.1 is stale: .venv/bin/syncd man > docs/syncd.1"
    )
    for command in ("run", "once", "status", "trigger", "config print", "completion"):
        assert f'.SS "syncd {command}"' in result.stdout


def test_the_man_page_renders_without_warnings():
    groff = shutil.which("groff")
    if groff is None:
        if os.environ.get("CI") == "true":
            pytest.fail("groff is not installed (.ci/run installs it)")
        pytest.skip("groff is not installed")
    result = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-z", str(MAN)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
