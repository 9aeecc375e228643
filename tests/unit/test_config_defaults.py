"""Every default is stated once, in syncd.config.model, and a config that leaves a key out gets it."""

from __future__ import annotations

import dataclasses

import pytest

from syncd import config
from syncd.config import (
    Concurrency,
    DatasetMode,
    DestinationSettings,
    Http,
    Retry,
    Schedule,
    Timeouts,
)

MINIMAL = """\
destination:
  dsn: postgresql://syncd@analytics.internal:5432/impulso
sources:
  - id: "351570"
    dsn: postgresql://esus_leitura@10.20.0.7:5433/esus
datasets:
  - name: cidadaos
    table: public.tb_fat_cidadao_pec
"""
SECTIONS = ("concurrency", "schedule", "http", "timeouts", "retry")


def test_a_minimal_config_holds_the_model_defaults():
    c = config.loads(MINIMAL)
    assert c.destination == DestinationSettings(c.destination.dsn)
    assert c.concurrency == Concurrency()
    assert c.schedule == Schedule()
    assert c.http == Http()
    assert c.timeouts == Timeouts()
    assert c.retry == Retry()
    assert c.datasets[0].incremental is None
    assert c.datasets[0].mode == DatasetMode.SNAPSHOT == "snapshot"  # a StrEnum: still text


@pytest.mark.parametrize("empty", ["{}", "null", ""])
def test_an_empty_section_holds_the_model_defaults(empty: str):
    text = MINIMAL + "".join(f"{name}: {empty}\n" for name in SECTIONS)
    text = text.replace("  dsn: postgresql://syncd@", "  schema:\n  dsn: postgresql://syncd@", 1)
    c = config.loads(text)
    assert c.destination == DestinationSettings(c.destination.dsn)
    assert (c.concurrency, c.schedule, c.http, c.timeouts, c.retry) == (
        Concurrency(),
        Schedule(),
        Http(),
        Timeouts(),
        Retry(),
    )


def test_the_defaults_are_the_ones_the_readme_documents():
    c = config.loads(MINIMAL)
    d = c.destination
    assert (d.schema, d.source_column, d.buckets, d.notify_channel, d.password_file) == (
        "syncd_data",
        "municipio_id_sus",
        16,
        "syncd",
        None,
    )
    assert c.concurrency == Concurrency(sources=32, per_host=4, writers=16)
    assert c.schedule == Schedule(
        interval=86400.0,
        window=None,
        timezone="America/Sao_Paulo",
        jitter=600.0,
        failed_backoff=300.0,
        failed_backoff_max=7200.0,
    )
    assert c.http.listen == "127.0.0.1:9187" and c.http.token_file is None
    assert c.timeouts == Timeouts(
        connect=30.0, statement=3600.0, idle_stream=300.0, lock=0.5, shutdown_grace=60.0
    )
    assert c.retry == Retry(attempts=4, backoff=2.0, max_backoff=120.0)
    assert config.DEFAULT_BUCKETS == 16


def _with_defaults(monkeypatch: pytest.MonkeyPatch, cls: type, **changes: object) -> None:
    """Change the defaults a dataclass's __init__ fills in, as if its fields said otherwise."""
    init = cls.__init__
    with_default = [f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING]
    defaults = [
        changes.pop(name, value)
        for name, value in zip(with_default, init.__defaults__, strict=True)
    ]
    assert not changes, f"no such field with a default: {changes}"
    monkeypatch.setattr(init, "__defaults__", tuple(defaults))


def test_the_builders_read_their_defaults_from_the_model(monkeypatch: pytest.MonkeyPatch):
    """No builder keeps a copy: another default in the model is what a loaded config gets."""
    _with_defaults(monkeypatch, Concurrency, sources=7, per_host=2, writers=3)
    _with_defaults(monkeypatch, Schedule, interval=60.0, timezone="America/Manaus", jitter=1.0)
    _with_defaults(monkeypatch, Schedule, failed_backoff=2.0, failed_backoff_max=4.0)
    _with_defaults(monkeypatch, Http, host="0.0.0.0", port=9999)
    _with_defaults(monkeypatch, Timeouts, connect=1.0, statement=2.0, idle_stream=3.0)
    _with_defaults(monkeypatch, Timeouts, lock=0.25, shutdown_grace=5.0)
    _with_defaults(monkeypatch, Retry, attempts=9, backoff=0.5, max_backoff=1.0)
    for text in (MINIMAL, MINIMAL + "".join(f"{name}: {{}}\n" for name in SECTIONS)):
        c = config.loads(text)
        assert c.concurrency == Concurrency(7, 2, 3)
        assert c.schedule == Schedule(60.0, None, "America/Manaus", 1.0, 2.0, 4.0)
        assert (c.http.host, c.http.port) == ("0.0.0.0", 9999)
        assert c.timeouts == Timeouts(1.0, 2.0, 3.0, 0.25, 5.0)
        assert c.retry == Retry(9, 0.5, 1.0)


def test_a_wrong_time_zone_or_listen_cites_the_default_as_example(monkeypatch):
    _with_defaults(monkeypatch, Schedule, timezone="America/Manaus")
    _with_defaults(monkeypatch, Http, host="::1", port=9999)
    text = MINIMAL + "schedule: {timezone: Mars/Olympus}\nhttp: {listen: localhost}\n"
    with pytest.raises(config.ConfigError) as info:
        config.loads(text, file="syncd.yaml")
    assert [str(p) for p in info.value.problems] == [
        "syncd.yaml:9: schedule.timezone: 'Mars/Olympus' is not a known time zone "
        "(like America/Manaus)",
        "syncd.yaml:10: http.listen: 'localhost' is not host:port (like [::1]:9999)",
    ]


@pytest.mark.parametrize(
    "host, port, listen",
    [
        ("127.0.0.1", 9187, "127.0.0.1:9187"),
        ("0.0.0.0", 80, "0.0.0.0:80"),
        ("syncd.internal", 9187, "syncd.internal:9187"),
        ("::1", 9187, "[::1]:9187"),
    ],
)
def test_http_listen_is_written_as_the_config_takes_it(host: str, port: int, listen: str):
    assert Http(host, port).listen == listen
    assert config.parse_listen(listen) == (host, port)
    c = config.loads(MINIMAL + f'http: {{listen: "{listen}"}}\n')
    assert c.http == Http(host, port)


def test_notify_channel_null_or_empty_means_no_notification_and_absent_the_default():
    dsn = "  dsn: postgresql://syncd@analytics.internal:5432/impulso\n"
    for written, expected in (("null", None), ('""', None), ("dados_prontos", "dados_prontos")):
        text = MINIMAL.replace(dsn, dsn + f"  notify_channel: {written}\n")
        assert config.loads(text).destination.notify_channel == expected
    assert config.loads(MINIMAL).destination.notify_channel == "syncd"
