"""The document into a Config (config/build.py), refused with one line per problem: values YAML
would change (ids read as numbers), PostgreSQL's own schemas as the data schema, and problems in
a sources file named with that file and line."""

from __future__ import annotations

import textwrap

import pytest

from syncd import config
from syncd.config import ConfigError


def _problems(text: str, base=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.loads(textwrap.dedent(text), base=base, file="syncd.yaml")
    return [str(p) for p in info.value.problems]


BASE = """\
destination:
  dsn: postgresql://syncd@analytics.internal/impulso
datasets:
  - name: cidadaos
    table: public.tb_fat_cidadao_pec
"""


def test_ids_yaml_would_change_are_refused_with_their_line():
    text = BASE + textwrap.dedent(
        """\
        sources:
          - id: 012345
            dsn: postgresql://esus@10.0.0.1/esus
          - id: 3_549_904
            dsn: postgresql://esus@10.0.0.2/esus
          - id: 351570
            name: 0755
            dsn: postgresql://esus@10.0.0.3/esus
            params: {co_ibge: 03549904, peso: 1.50, ok: 7, ativo: true}  # 8, 9: not octal, a string
        """
    )
    found = _problems(text)
    assert found == [
        "syncd.yaml:7: sources[0].id: YAML reads 012345 as the number 5349, not as text; "
        'quote it to keep it as written: "012345"',
        "syncd.yaml:9: sources[1].id: YAML reads 3_549_904 as the number 3549904, not as text; "
        'quote it to keep it as written: "3_549_904"',
        "syncd.yaml:12: sources[2].name: YAML reads 0755 as the number 493, not as text; "
        'quote it to keep it as written: "0755"',
        "syncd.yaml:14: sources[2].params.peso: YAML reads 1.50 as the number 1.5, not as "
        'text; quote it to keep it as written: "1.50"',
    ]
    # a plain number YAML reads as written stays as written; quoted ids are strings anyway
    fine = text.replace("012345", '"012345"').replace("3_549_904", '"3_549_904"')
    fine = fine.replace("0755", '"0755"')
    c = config.loads(fine.replace("1.50", '"1.50"'))
    assert [s.id for s in c.sources] == ["012345", "3_549_904", "351570"]
    assert dict(c.sources[2].params) == {
        "co_ibge": "03549904",
        "peso": "1.50",
        "ok": "7",
        "ativo": "true",
    }
    assert c.sources[2].name == "0755"


@pytest.mark.parametrize(
    "schema", ["pg_temp", "pg_toast", "pg_catalog", "information_schema", "pg_anything"]
)
def test_postgresql_schemas_are_refused_as_the_data_schema(schema):
    text = BASE.replace("impulso\n", f"impulso\n  schema: {schema}\n") + textwrap.dedent(
        """\
        sources:
          - id: "1"
            dsn: postgresql://esus@10.0.0.1/esus
        """
    )
    (problem,) = _problems(text)
    assert problem.startswith(f"syncd.yaml:3: destination.schema: '{schema}'")


def test_sources_file_problems_carry_their_file_and_line(tmp_path):
    (tmp_path / "sources.yaml").write_text(
        textwrap.dedent(
            """\
            - id: "351570"
              dsn: postgresql://esus@10.0.0.1/esus
            - id: "bad id!"
              dsn: postgresql://esus@10.0.0.2/esus
            - id: 012345
              dsn: postgresql://esus@10.0.0.3/esus
              colour: blue
            - id: "351570"
              dsn: nope://x
            """
        )
    )
    found = _problems(BASE + "sources_file: sources.yaml\n", base=tmp_path)
    where = str(tmp_path / "sources.yaml")
    assert found == [
        f"{where}:3: sources[1].id: 'bad id!' is not an id of letters, digits and _ (up to 32)",
        f"{where}:5: sources[2].id: YAML reads 012345 as the number 5349, not as text; "
        'quote it to keep it as written: "012345"',
        f"{where}:7: sources[2].colour: unknown key",  # nothing close
        f"{where}:9: sources[3].dsn: must start with postgresql:// (key=value strings are "
        "not supported)",
    ]
