"""deploy/sources/csv2sources.py, the docs' way from a CSV of IBGE codes and hosts to a
sources_file: run on the example CSV the docs show, its output loads as a config."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from syncd import config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "sources" / "csv2sources.py"
sources_yaml = runpy.run_path(str(SCRIPT))["sources_yaml"]


def test_the_example_csv_becomes_sources_that_load(tmp_path: Path):
    csv = ROOT / "deploy" / "sources" / "municipios.example.csv"
    (tmp_path / "municipios.yaml").write_text("\n".join(sources_yaml(str(csv))) + "\n")
    (tmp_path / "syncd.yaml").write_text(
        "destination: {dsn: 'postgresql://syncd@analytics.internal/impulso'}\n"
        "sources_file: municipios.yaml\n"
        "datasets: [{name: cidadaos, table: public.tb_fat_cidadao_pec}]\n"
    )
    loaded = config.load(tmp_path / "syncd.yaml", credentials_dir=tmp_path)
    assert [s.id for s in loaded.sources] == ["351570", "355030", "012345"]  # ids stay text
    assert [s.name for s in loaded.sources] == [
        "São José dos Campos",
        "São Paulo",
        "Cidade, com vírgula",
    ]
    assert loaded.sources[2].dsn.host_key == "fd00::7:5433"  # bracketed IPv6, the PEC's port


@pytest.mark.parametrize(
    "row", ["351570,,5433,sem host", "35157x,host,5433,letras", "351570,host,porta,porta"]
)
def test_a_row_that_cannot_be_a_source_names_its_csv_line(tmp_path: Path, row: str):
    csv = tmp_path / "m.csv"
    csv.write_text(f"ibge,host,port,name\n355030,h,5433,ok\n{row}\n")
    with pytest.raises(SystemExit, match=rf"^{csv}:3: "):
        list(sources_yaml(str(csv)))


def test_a_repeated_ibge_code_is_refused(tmp_path: Path):
    csv = tmp_path / "m.csv"
    csv.write_text("ibge,host,port\n355030,a,5433\n355030,b,5433\n")
    with pytest.raises(SystemExit, match=r":3: .*repeated"):
        list(sources_yaml(str(csv)))
