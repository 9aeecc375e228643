"""Any YAML at all: a valid Config or exit 2 with one line per problem, never a traceback."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd import cli
from syncd import config as config_module

VALID = {
    "destination": {"dsn": "postgresql://syncd@analytics:5432/impulso", "schema": "dados"},
    "concurrency": {"sources": 4, "per_host": 2, "writers": 2},
    "schedule": {"interval": "24h", "window": "03:00-13:00", "timezone": "America/Sao_Paulo"},
    "http": {"listen": "127.0.0.1:9187"},
    "timeouts": {"connect": "30s"},
    "retry": {"attempts": 3},
    "sources": [
        {
            "id": "351570",
            "name": "São José",
            "dsn": "postgresql://u@10.0.0.1:5433/esus",
            "params": {"uf": "SP"},
        }
    ],
    "datasets": [
        {"name": "cidadaos", "table": "public.tb_fat_cidadao_pec"},
        {"name": "lista", "query": "SELECT 1"},
    ],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "24h",
            "-1s",
            "0",
            "03:00-13:00",
            "25:99-1",
            "postgresql://",
            "a.b.c",
            "America/Nowhere",
            "9" * 400,
            "*",
            "&anchor",
            "\x00",
            "~",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=12), st.integers(), st.booleans()), children, max_size=4
        ),
    ),
    max_leaves=20,
)


def check(text: str) -> None:
    """Through the real CLI entry point, in process: exit 0 or 2, never an exception."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "syncd.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["check-config", "--config", str(path)])
        assert code in (0, 2)
        if code == 2:
            lines = err.getvalue().strip().splitlines()
            assert lines and all(line.strip() for line in lines)
            assert "Traceback" not in err.getvalue()


FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    check(text)


@FUZZ
@given(values)
def test_arbitrary_yaml_structures(document):
    check(yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(VALID)), st.text(max_size=10), values),
        min_size=1,
        max_size=4,
    )
)
def test_a_valid_config_with_random_damage(damage):
    document = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in VALID.items()}
    for section, key, value in damage:
        part = document[section]
        if isinstance(part, dict):
            part[key or "x"] = value
        elif part:
            part[0] = value if not isinstance(part[0], dict) else {**part[0], (key or "x"): value}
    check(yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "syncd.yaml"
        path.write_bytes(data)
        try:
            config_module.load(path)
        except config_module.ConfigError as exc:
            assert exc.problems


def test_yaml_bombs_and_deep_nesting_are_refused():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    check(bomb)
    check("[" * 5000 + "]" * 5000)
    check("{a: " * 3000 + "1" + "}" * 3000)
    check("destination: !!python/object/apply:os.system ['echo pwned']\n")


def test_the_valid_base_is_valid():
    config_module.loads(yaml.safe_dump(VALID))


def test_keys_with_control_characters_stay_on_one_line():
    """Found by hypothesis: a key holding a carriage return split its problem over two lines."""
    check('concurrency:\n  "\\x1E\\r": null\n  sources: 4\n')
    with pytest.raises(config_module.ConfigError) as info:
        config_module.loads('concurrency:\n  "a\\nb": 1\n', file="syncd.yaml")
    problems = [str(p) for p in info.value.problems]
    assert "syncd.yaml:2: concurrency['a\\nb']: unknown key" in problems
    assert all("\n" not in p and "\r" not in p for p in problems)
