"""Secrets found by convention (syncd.config.credentials): systemd's flattened names and the
/etc layout, what the config says winning, missing ones refused inside the service."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd import config
from syncd.config import ConfigError
from syncd.config.credentials import SYNCD_ENV, SYSTEMD_ENV, Credentials

CONFIG = """\
destination:
  dsn: postgresql://syncd@analytics.internal:5432/impulso
sources:
  - id: "351570"
    dsn: postgresql://esus_leitura@10.20.0.7:5433/esus
  - id: "3550308"
    dsn: postgresql://esus_leitura@10.20.0.8:5433/esus
datasets:
  - name: cidadaos
    table: public.tb_fat_cidadao_pec
"""


@pytest.fixture(autouse=True)
def _outside_the_service(monkeypatch):
    for name in (SYSTEMD_ENV, SYNCD_ENV, "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)


def secrets(directory: Path, *names: str) -> Path:
    for name in names:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("s3cr3t\n")
    return directory


def load(text: str, directory: Path | None, strict: bool = False) -> config.Config:
    credentials = Credentials(directory, strict) if directory else None
    return config.loads(text, file="syncd.yaml", credentials=credentials)


def test_systemd_s_flattened_names_are_found(tmp_path):
    d = secrets(tmp_path, "analytics", "http-token", "municipios_351570", "municipios_3550308")
    c = load(CONFIG, d, strict=True)
    assert c.destination.password_file == d / "analytics"
    assert c.http.token_file == d / "http-token"
    assert [s.password_file for s in c.sources] == [
        d / "municipios_351570",
        d / "municipios_3550308",
    ]
    assert c.credentials_dir == d and c.warnings == ()


def test_the_etc_layout_is_found_too(tmp_path):
    d = secrets(tmp_path, "analytics", "municipios/351570", "municipios/3550308")
    c = load(CONFIG, d, strict=True)
    assert [s.password_file for s in c.sources] == [
        d / "municipios" / "351570",
        d / "municipios" / "3550308",
    ]
    assert c.http.token_file is None  # no token: POST endpoints answer 403, as without one


def test_what_the_config_says_wins(tmp_path):
    d = secrets(tmp_path, "analytics", "http-token", "municipios_351570")
    own = secrets(tmp_path / "own", "pw", "token")
    text = CONFIG.replace(
        "  dsn: postgresql://syncd@analytics.internal:5432/impulso",
        f"  dsn: postgresql://syncd@analytics.internal:5432/impulso\n"
        f"  password_file: {own / 'pw'}\nhttp:\n  token_file: {own / 'token'}",
    ).replace(
        "postgresql://esus_leitura@10.20.0.8:5433/esus",
        "postgresql://esus_leitura:na-dsn@10.20.0.8:5433/esus",
    )
    c = load(text, d, strict=True)
    assert c.destination.password_file == own / "pw"
    assert c.http.token_file == own / "token"
    assert c.sources[0].password_file == d / "municipios_351570"
    assert c.sources[1].password_file is None  # its password is in the DSN


def test_a_missing_credential_is_an_error_inside_the_service_and_a_warning_outside(tmp_path):
    d = secrets(tmp_path, "analytics", "municipios_351570")
    with pytest.raises(ConfigError) as info:
        load(CONFIG, d, strict=True)
    assert [str(p) for p in info.value.problems] == [
        f"syncd.yaml:6: sources[1].id: no password_file and no credential "
        f"'municipios_3550308' (or municipios/3550308) in {d}"
    ]
    c = load(CONFIG, d, strict=False)
    assert c.sources[1].password_file is None
    assert [str(w) for w in c.warnings] == [
        f"source 3550308: no password_file and no credential 'municipios_3550308' "
        f"(or municipios/3550308) in {d}",
    ]


def test_other_ways_to_authenticate_need_no_credential(tmp_path):
    d = secrets(tmp_path, "analytics")
    text = CONFIG.replace(
        "@10.20.0.7:5433/esus", "@10.20.0.7:5433/esus?sslcert=/c.pem&sslkey=/k.pem"
    ).replace("@10.20.0.8:5433/esus", "@10.20.0.8:5433/esus?passfile=/etc/syncd/pgpass")
    c = load(text, d, strict=True)
    assert [s.password_file for s in c.sources] == [None, None]
    with_pgpassword = Credentials(d, strict=True, pgpassword=True)
    c = config.loads(CONFIG, file="syncd.yaml", credentials=with_pgpassword)
    assert [s.password_file for s in c.sources] == [None, None]


def test_where_the_directory_comes_from():
    env = {SYSTEMD_ENV: "/run/credentials/syncd.service", SYNCD_ENV: "/etc/syncd/credentials"}
    assert Credentials.find(None, None, {}) is None
    found = Credentials.find(None, None, {SYSTEMD_ENV: env[SYSTEMD_ENV]})
    assert found == Credentials(Path("/run/credentials/syncd.service"), strict=True)
    found = Credentials.find(None, None, env)  # syncd's own variable first; still the service
    assert found == Credentials(Path("/etc/syncd/credentials"), strict=True)
    found = Credentials.find(Path("/srv/creds"), None, {SYNCD_ENV: env[SYNCD_ENV]})
    assert found == Credentials(Path("/srv/creds"), strict=False)
    assert Credentials.find(Path("/srv/creds"), True, {}) == Credentials(Path("/srv/creds"), True)


def test_inside_the_service_a_named_file_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv(SYSTEMD_ENV, str(tmp_path))
    secrets(tmp_path, "analytics", "municipios_3550308")
    text = CONFIG.replace(
        'id: "351570"', f'id: "351570"\n    password_file: {tmp_path / "nowhere"}'
    )
    path = tmp_path / "syncd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:5: sources[0].password_file: {tmp_path / 'nowhere'} does not exist"
    ]
    monkeypatch.delenv(SYSTEMD_ENV)
    assert config.load(path).sources[0].password_file == tmp_path / "nowhere"
