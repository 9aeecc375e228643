"""The written forms of single values: durations, daily windows, listen addresses."""

from __future__ import annotations

from datetime import time

import pytest

from syncd.config import format_duration, parse_duration, parse_listen, parse_window


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("24h", 86400.0),
        ("7d", 604800.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1d12h", 129600.0),
        ("1.5h", 5400.0),
        ("0s", 0.0),
        ("  2m  ", 120.0),
        ("30s30s", 60.0),  # a sum, in any order
    ],
)
def test_durations_take_a_unit_and_sum(text: str, seconds: float):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "90",
        "24",
        "1 day",
        "1h 30m",
        "-5s",
        "+5s",
        "5 s",
        "5sec",
        "1h30",
        ".5h",
        "5S",
        "h",
        "1e3s",
        "soon",
        90,
        1.5,
        True,
        None,
        ["1s"],
    ],
)
def test_what_is_not_a_duration(value: object):
    assert parse_duration(value) is None


@pytest.mark.parametrize(
    "seconds, text",
    [
        (86400.0, "1d"),
        (172800.0, "2d"),
        (7200.0, "2h"),
        (90000.0, "25h"),
        (60.0, "1m"),
        (5400.0, "90m"),
        (90.0, "90s"),
        (1.0, "1s"),
        (0.5, "0.5s"),
        (0.1, "0.1s"),
        (0.01, "0.01s"),
    ],
)
def test_a_duration_is_written_in_its_largest_whole_unit(seconds: float, text: str):
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text, start, end",
    [
        ("03:00-13:00", time(3), time(13)),
        ("22:00-06:00", time(22), time(6)),  # crosses midnight
        ("22:00-24:00", time(22), time(0)),
        ("3:05-4:00", time(3, 5), time(4)),
        (" 03:00 - 13:30 ", time(3), time(13, 30)),
        ("00:00-23:59", time(0), time(23, 59)),
    ],
)
def test_a_daily_window(text: str, start: time, end: time):
    window = parse_window(text)
    assert window is not None and (window.start, window.end) == (start, end)
    assert parse_window(str(window)) == window


@pytest.mark.parametrize(
    "text",
    [
        "25:00-03:00",
        "24:00-03:00",
        "03:00-24:30",
        "03:60-04:00",
        "03:00-04:60",
        "10:00-10:00",  # empty
        "00:00-24:00",  # the whole day is no window: leave `window` out
        "0300-1300",
        "03:00",
        "03:00-13:00-14:00",
        "3h-13h",
        "",
    ],
)
def test_what_is_not_a_daily_window(text: str):
    assert parse_window(text) is None


def test_a_window_is_written_as_the_config_takes_it():
    window = parse_window("3:05-24:00")
    assert str(window) == "03:05-00:00"


@pytest.mark.parametrize(
    "text, address",
    [
        ("127.0.0.1:9187", ("127.0.0.1", 9187)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        (":9187", ("0.0.0.0", 9187)),  # no host: every interface
        ("[::1]:9187", ("::1", 9187)),
        ("[::]:9187", ("::", 9187)),
        ("syncd.internal:9187", ("syncd.internal", 9187)),
        (" localhost:8080 ", ("localhost", 8080)),
        ("h:0", ("h", 0)),
        ("h:65535", ("h", 65535)),
    ],
)
def test_a_listen_address(text: str, address: tuple[str, int]):
    assert parse_listen(text) == address


@pytest.mark.parametrize(
    "text", ["localhost", "9187", "h:65536", "h:-1", "h:80a", "h:", "h: 80", ""]
)
def test_what_is_not_a_listen_address(text: str):
    assert parse_listen(text) is None
