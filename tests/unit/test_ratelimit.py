"""`max_rate`: its written forms, the config keys, the token bucket on an injected clock, the
capped sink, the caps a reload changes in place, and where the cap is shown."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest

from syncd import config as config_module
from syncd.commands.status import status_document
from syncd.config.values import format_rate, parse_rate
from syncd.engine.ratelimit import BURST_SECONDS, RateCaps, TokenBucket, capped
from syncd.observe.report import caps_lines
from syncd.service.statusboard import StatusBoard
from syncd.service.statuspage import page

from tests.support.helpers import config_problems


@pytest.mark.parametrize(
    "text, rate",
    [
        ("2MB/s", 2_000_000),
        ("500kB/s", 500_000),
        ("500KB/s", 500_000),
        ("1.5MiB/s", 1.5 * 2**20),
        ("64KiB/s", 65_536),
        ("1GB/s", 1e9),
        ("20Mbit/s", 2_500_000),
        ("20Mbps", 2_500_000),
        ("800kbit/s", 100_000),
        ("2 MB/s", 2_000_000),
        ("4096B/s", 4096),
    ],
)
def test_rates_are_bytes_per_second_from_bytes_or_bits(text: str, rate: float):
    assert parse_rate(text) == pytest.approx(rate)


@pytest.mark.parametrize(
    "value, says",
    [
        ("20Mb/s", "could be bytes or bits; write MB/s for bytes or Mbit/s for bits"),
        ("2mb/s", "could be bytes or bits"),
        ("2MB", "a rate is per second (2MB/s)"),
        ("fast", "is not a rate (like 2MB/s"),
        ("2TB/s", "is not a rate"),
        (2_000_000, "give a unit"),
        (True, "give a unit"),
    ],
)
def test_a_rate_without_a_clear_unit_is_refused_saying_why(value: object, says: str):
    answer = parse_rate(value)
    assert isinstance(answer, str) and says in answer


@pytest.mark.parametrize("rate", [1000, 2_000_000, 2_500_000, 800_000, 1e9])
def test_a_formatted_rate_reads_back(rate: float):
    assert parse_rate(format_rate(rate)) == pytest.approx(rate)


CONFIG = """\
destination: {dsn: "postgresql://u@h/db"}
bastions:
  norte:
    host: bastion.example
    user: syncd
    private_key_file: /etc/syncd/key
    host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq2/ppdqBwxqrSx4hsBI8Ct3zyxl/ZXyKfxtpnhuFcM"
    max_rate: %(bastion)s
sources:
  - {id: "1", dsn: "postgresql://u@h/m1", max_rate: %(source)s}
  - {id: "2", dsn: "postgresql://u@localhost/m2", ssh_tunnel: {bastion: norte}}
  - {id: "3", dsn: "postgresql://u@localhost/m3", ssh_tunnel: {bastion: norte}, max_rate: 1MB/s}
datasets:
  - {name: cidadaos, table: tb_fat_cidadao_pec}
"""


def load(source: str = "2MB/s", bastion: str = "10Mbit/s") -> config_module.Config:
    return config_module.loads(CONFIG % {"source": source, "bastion": bastion}, file="syncd.yaml")


def test_max_rate_on_a_source_and_on_a_bastion():
    config = load()
    one, two, three = config.sources
    assert one.max_rate == 2_000_000 and one.bastion is None
    assert two.max_rate is None and two.bastion is not None
    assert two.bastion.max_rate == 1_250_000
    assert three.max_rate == 1_000_000


def test_a_wrong_max_rate_is_a_config_problem_with_its_line():
    problems = config_problems(CONFIG % {"source": "20Mb/s", "bastion": "100B/s"})
    assert any(
        p.startswith("syncd.yaml:") and "sources[0].max_rate" in p and "Mbit/s for bits" in p
        for p in problems
    ), problems
    assert any("bastions.norte.max_rate" in p and "at least 1kB/s" in p for p in problems)


class Clock:
    """Time that passes only when the bucket sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_a_bucket_lets_through_its_rate_and_no_more():
    clock = Clock()
    bucket = TokenBucket(1000.0, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await bucket.take(500)  # 5,000 bytes: 5 s at 1,000 B/s, less the idle burst
    assert clock.now - 100.0 == pytest.approx(5.0 - BURST_SECONDS)
    assert max(clock.slept) <= 0.25  # in short naps: a reload is heard within one


async def test_a_bucket_without_a_rate_never_waits():
    clock = Clock()
    bucket = TokenBucket(None, clock=clock, sleep=clock.sleep)
    await bucket.take(10**9)
    assert clock.slept == []


async def test_a_new_rate_applies_to_a_debt_being_paid():
    clock = Clock()
    bucket = TokenBucket(1000.0, clock=clock, sleep=clock.sleep)

    async def faster_after_a_second(seconds: float) -> None:
        await clock.sleep(seconds)
        if clock.now - 100.0 >= 1.0:
            bucket.rate = 1_000_000.0  # the reload

    bucket._sleep = faster_after_a_second
    await bucket.take(10_000)  # 10 s at the old rate
    assert clock.now - 100.0 < 1.3


async def test_the_capped_sink_pays_in_pieces_and_passes_every_byte_in_order():
    clock = Clock()
    bucket = TokenBucket(4096.0, clock=clock, sleep=clock.sleep)
    got: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        got.append(chunk)

    data = bytes(range(256)) * 64  # 16 KiB
    await capped(sink, (bucket,))(data)
    assert b"".join(got) == data
    assert max(len(c) for c in got) == 1024  # a quarter second of 4 KiB/s, the floor
    assert clock.now - 100.0 == pytest.approx((len(data) - 4096 * BURST_SECONDS) / 4096)


async def test_two_buckets_the_lower_rate_holds():
    clock = Clock()
    own = TokenBucket(10_000.0, clock=clock, sleep=clock.sleep)
    shared = TokenBucket(2_000.0, clock=clock, sleep=clock.sleep)

    async def sink(chunk: bytes) -> None:
        pass

    await capped(sink, (own, shared))(b"x" * 20_000)
    assert clock.now - 100.0 >= (20_000 - 2_000 * BURST_SECONDS) / 2_000 - 1e-6


def test_a_reload_sets_the_same_buckets_new_rates():
    caps = RateCaps()
    config = load()
    caps.configure(config.sources)
    one, two, three = config.sources
    held_one, held_two = caps.buckets(one), caps.buckets(two)  # a transfer under way holds them
    assert [b.rate for b in held_one] == [2_000_000]
    assert [b.rate for b in held_two] == [None, 1_250_000]
    assert caps.buckets(three)[1] is held_two[1]  # the bastion's: one, shared
    assert caps.rate(three) == 1_000_000  # its own is lower

    reloaded = load(source="500kB/s", bastion="100kB/s")
    caps.configure(reloaded.sources)
    assert [b.rate for b in held_one] == [500_000]
    assert [b.rate for b in held_two] == [None, 100_000]
    assert caps.rate(reloaded.sources[2]) == 100_000

    uncapped = config_module.loads(
        (CONFIG % {"source": "null", "bastion": "null"}).replace(", max_rate: 1MB/s", ""),
        file="syncd.yaml",
    )
    caps.configure(uncapped.sources)
    assert [b.rate for b in held_one + held_two] == [None, None, None]


def test_the_cap_shows_in_status_and_on_the_page():
    config = load()
    document = status_document(config, [], datetime.now(UTC))
    shown = {sid: s["max_rate"] for sid, s in document["sources"].items()}
    assert shown == {"1": "2MB/s", "2": "1.25MB/s shared via norte", "3": "1MB/s"}
    assert caps_lines(config) == [
        "bandwidth caps (max_rate):",
        "  1  2MB/s",
        "  2  1.25MB/s shared via norte",
        "  3  1MB/s",
    ]
    board = StatusBoard()
    board.configure(config)
    assert board.sources["1"].max_rate == "2MB/s"
    html = page(board.sources, {}, datetime.now(UTC), "n0nce", "test", {})
    assert '<span class="cap" title="bandwidth cap (max_rate)">max 2MB/s</span>' in html
    assert "max 1.25MB/s shared via norte" in html
    board.configure(load(source="500kB/s"))  # a reload
    assert board.sources["1"].max_rate == "500kB/s"


async def test_a_bucket_serves_its_sharers_in_turn():
    clock = Clock()
    bucket = TokenBucket(1000.0, clock=clock, sleep=clock.sleep)
    order: list[str] = []

    async def take(name: str) -> None:
        await bucket.take(1000)
        order.append(name)

    async with anyio.create_task_group() as tg:
        for name in "abc":
            tg.start_soon(take, name)
    assert order == ["a", "b", "c"]
    assert clock.now - 100.0 == pytest.approx(3.0 - BURST_SECONDS)
