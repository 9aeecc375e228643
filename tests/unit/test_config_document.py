"""YAML with line numbers (syncd.config.document) and the section getters that cite them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from syncd.config.document import MAX_CONFIG_BYTES, Document, compose, parse_yaml, read_yaml
from syncd.config.problem import Problem, key_path
from syncd.config.section import Section
from syncd.config.values import SOURCE_ID

TEXT = """\
# a comment
destination:
  dsn: postgresql://h/db

sources:
  - id: "351570"
    dsn: postgresql://a/b
  - {id: 012345, dsn: postgresql://c/d}
flags: {ativo: true, peso: 1.50, when: 2024-01-02, texto: "1.50"}
1: numbered
"""


def test_every_key_path_has_its_line():
    doc = compose(TEXT, "syncd.yaml")
    assert doc.file == "syncd.yaml"
    assert doc.lines[()] == 2
    assert doc.lines[("destination",)] == 2
    assert doc.lines[("destination", "dsn")] == 3
    assert doc.lines[("sources",)] == 5
    assert doc.lines[("sources", 0)] == 6
    assert doc.lines[("sources", 0, "id")] == 6
    assert doc.lines[("sources", 0, "dsn")] == 7
    assert doc.lines[("sources", 1)] == 8
    assert doc.lines[("sources", 1, "dsn")] == 8
    assert doc.lines[("flags", "peso")] == 9
    assert doc.lines[(1,)] == 10
    assert doc.data["sources"][1] == {"id": 5349, "dsn": "postgresql://c/d"}  # octal, as YAML 1.1


def test_scalars_yaml_did_not_read_as_text_keep_what_the_file_says():
    doc = compose(TEXT, "syncd.yaml")
    assert doc.texts[("sources", 1, "id")] == "012345"
    assert doc.texts[("flags", "peso")] == "1.50"
    assert doc.texts[("flags", "ativo")] == "true"
    assert doc.texts[("flags", "when")] == "2024-01-02"
    for quoted_or_plain_text in (("flags", "texto"), ("sources", 0, "id"), ("destination", "dsn")):
        assert quoted_or_plain_text not in doc.texts


def test_a_document_seen_under_a_key_shifts_its_paths_not_its_lines():
    doc = compose('- id: "1"\n  dsn: postgresql://h/db\n- id: 0755\n', "sources.yaml")
    under = doc.under("sources")
    assert under.data is doc.data and under.file == "sources.yaml"
    assert under.lines[("sources", 1, "id")] == 3
    assert under.texts == {("sources", 1, "id"): "0755"}
    assert ("sources",) in under.lines and () not in under.lines


def _problems(text: str) -> list[str]:
    problems: list[Problem] = []
    assert parse_yaml(text, "syncd.yaml", problems) is None
    return [str(p) for p in problems]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a: 1\nb:\n  c: 2\n  c: 3\n", "syncd.yaml:4: b: duplicate key 'c'"),
        ("a: 1\na: 2\n", "syncd.yaml:2: duplicate key 'a'"),
        ("? [x, y]\n: 1\n", "syncd.yaml:1: keys must be plain text"),
        ("a: 1\nb: [\n", "syncd.yaml:3: invalid YAML: expected the node content"),
        ("a: !!python/name:os.system x\n", "syncd.yaml:1: invalid YAML: could not determine"),
        ("a: 2024-02-30\n", "syncd.yaml: invalid YAML value: day is out of range"),
        ("[" * 5000 + "]" * 5000, "syncd.yaml: invalid YAML: nested too deeply"),
        ("a: 1\n---\nb: 2\n", "syncd.yaml:2: invalid YAML: but found another document"),
    ],
)
def test_what_yaml_refuses_is_one_problem_with_its_line(text: str, expected: str):
    found = _problems(text)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_an_alias_bomb_is_refused_before_it_expands():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
        for i in range(8)
    )
    assert _problems(bomb) == [
        "syncd.yaml: invalid YAML: the document expands to too many values (alias bomb?)"
    ]


def test_empty_text_is_a_document_of_nothing():
    doc = parse_yaml("# nothing\n", "syncd.yaml", [])
    assert isinstance(doc, Document) and doc.data is None


def test_reading_a_file_names_what_is_wrong_with_it(tmp_path: Path):
    problems: list[Problem] = []
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\n")
    doc = read_yaml(good, problems)
    assert doc is not None and doc.data == {"a": 1} and doc.file == str(good)

    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("nome: São Paulo\n".encode("latin-1"))
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)  # sparse: nothing is written
    for path in (tmp_path / "missing.yaml", tmp_path, latin1, big):
        assert read_yaml(path, problems) is None
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'missing.yaml'}: file not found",
        f"{tmp_path}: is a directory, not a file",
        f"{latin1}: is not UTF-8 text (invalid continuation byte)",
        f"{big}: file is larger than 16 MiB",
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_says_permission_denied(tmp_path: Path):
    path = tmp_path / "secret.yaml"
    path.write_text("a: 1\n")
    path.chmod(0)
    problems: list[Problem] = []
    assert read_yaml(path, problems) is None
    assert [str(p) for p in problems] == [f"{path}: permission denied"]


@pytest.mark.parametrize(
    "path, written",
    [
        ((), ""),
        (("sources", 3, "dsn"), "sources[3].dsn"),
        (("datasets", 0, "variants", 1, "when"), "datasets[0].variants[1].when"),
        (("concurrency", "a b"), "concurrency['a b']"),
        (("concurrency", "a\nb"), "concurrency['a\\nb']"),
        (("flags", True), "flags[True]"),
        (("flags", 1.5), "flags[1.5]"),
        (("params", "$x-y_1"), "params.$x-y_1"),
    ],
)
def test_a_key_path_is_written_as_problems_show_it(path: tuple, written: str):
    assert key_path(path) == written


def test_a_problem_is_one_line_whatever_it_holds():
    assert str(Problem("a.b", 3, "wrong", "syncd.yaml")) == "syncd.yaml:3: a.b: wrong"
    assert str(Problem("a.b", None, "wrong", "syncd.yaml")) == "syncd.yaml: a.b: wrong"
    assert str(Problem("", 2, "bad YAML", "syncd.yaml")) == "syncd.yaml:2: bad YAML"
    assert str(Problem("--source", None, "unknown")) == "--source: unknown"
    assert str(Problem("k", 1, "line\r\nbreak\x1b[31m", "f")) == "f:1: k: line\\r\\nbreak\\x1b[31m"


SECTION_TEXT = """\
top:
  name: cidadaos
  id: 012345
  plain: 351570
  ratio: 1.50
  count: 12
  flag: yes
  wait: 1h30m
  short: 50ms
  bad_wait: soon
  extra: 1
"""


def _section() -> tuple[Section, list[Problem]]:
    problems: list[Problem] = []
    doc = compose(SECTION_TEXT, "syncd.yaml")
    return Section(doc, (), problems).sub("top"), problems


def test_section_getters_return_the_value_or_the_default_and_cite_the_line():
    sec, problems = _section()
    assert sec.string("name") == "cidadaos"
    assert sec.string("missing") is None
    assert sec.string("missing", "fallback") == "fallback"
    assert sec.string("plain", pattern=SOURCE_ID, what="an id") == "351570"  # as written
    assert sec.string("id", "fallback") == "fallback"  # octal: YAML changed it
    assert sec.string("ratio") is None
    assert sec.string("flag", "fallback") == "fallback"  # `yes` is a bool in YAML 1.1
    assert sec.string("name", pattern=SOURCE_ID, what="an id") == "cidadaos"
    assert sec.integer("count", 1) == 12
    assert sec.integer("count", 1, maximum=10) == 1
    assert sec.duration("wait", 0.0) == 5400.0
    assert sec.duration("absent") is None and sec.duration("absent", 7.0) == 7.0
    assert sec.duration("short", 9.0, minimum=0.1) == 9.0
    assert sec.duration("bad_wait") is None
    sec.check_unknown()
    assert [str(p) for p in problems] == [
        "syncd.yaml:3: top.id: YAML reads 012345 as the number 5349, not as text; quote it to "
        'keep it as written: "012345"',
        "syncd.yaml:5: top.ratio: YAML reads 1.50 as the number 1.5, not as text; quote it to "
        'keep it as written: "1.50"',
        "syncd.yaml:7: top.flag: must be a string",
        "syncd.yaml:6: top.count: must be between 1 and 10",
        "syncd.yaml:9: top.short: must be at least 0.1s",
        "syncd.yaml:10: top.bad_wait: 'soon' is not a duration (like 90s, 15m, 24h, 7d)",
        "syncd.yaml:11: top.extra: unknown key",
    ]


def test_a_required_key_that_is_missing_cites_its_section_line():
    sec, problems = _section()
    assert sec.string("dsn", required=True) is None
    assert [str(p) for p in problems] == ["syncd.yaml:1: top.dsn: is required"]


def test_each_yields_the_mappings_of_a_list_and_names_the_rest():
    problems: list[Problem] = []
    doc = compose("items:\n  - {a: 1}\n  - 5\n  - {a: 2}\nnot_a_list: 3\n", "syncd.yaml")
    root = Section(doc, (), problems)
    sections = list(root.each("items"))
    assert [s.raw("a") for s in sections] == [1, 2]
    assert [s.path for s in sections] == [("items", 0), ("items", 2)]
    assert list(root.each("not_a_list")) == [] and list(root.each("absent")) == []
    assert [str(p) for p in problems] == [
        "syncd.yaml:3: items[1]: must be a mapping (one entry)",
        "syncd.yaml:5: not_a_list: must be a list",
    ]


def test_a_relative_path_value_is_relative_to_the_base(tmp_path: Path):
    doc = compose("a: sub/file\nb: /etc/abs\n", "syncd.yaml")
    sec = Section(doc, (), [])
    assert sec.path_value("a", tmp_path) == tmp_path / "sub" / "file"
    assert sec.path_value("b", tmp_path) == Path("/etc/abs")
    assert sec.path_value("a", None) == Path("sub/file")
    assert sec.path_value("c", tmp_path) is None
