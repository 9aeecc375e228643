"""`bastions:` and `ssh_tunnel:`: the host key required and pinned, names resolved, every
problem with its key path and line; `syncd tunnel enroll`'s port scheme; the tunnel failure
kinds as the rest of syncd sees them (retries, metrics, lost connections, the status page)."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd import config
from syncd.commands import enroll
from syncd.config import Bastion, ConfigError
from syncd.config.bastions import parse_host_key
from syncd.engine.errors import Failure, Kind, classify
from syncd.engine.retry import RetryPolicy
from syncd.engine.tunnel import BastionUnreachable, HostKeyMismatch, TunnelNotConnected
from syncd.observe.metrics import RETRY_REASONS, retry_reason
from syncd.service import statuspage
from syncd.service.statusboard import SourceView

from tests.support.helpers import config_problems

# a real ed25519 public key (its blob names its algorithm, as the check wants)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

BASE = f"""\
destination:
  dsn: postgresql://syncd@analytics.internal:5432/impulso
bastions:
  hub-sp:
    host: bastion.example.org
    user: syncd
    private_key_file: /run/credentials/syncd.service/ssh-key
    host_key: "{KEY}"
sources:
  - id: "3550308"
    dsn: postgresql://leitor@pec.local:5432/esus
    ssh_tunnel: {{bastion: hub-sp}}
  - id: "351570"
    dsn: postgresql://esus_leitura@10.20.0.7:5433/esus
datasets:
  - name: cidadaos
    table: public.tb_fat_cidadao_pec
"""


problems = config_problems


def test_a_bastion_gets_its_defaults_and_its_sources_keep_the_database_address():
    c = config.loads(BASE)
    [hub] = c.bastions
    assert hub == Bastion(
        "hub-sp",
        "bastion.example.org",
        "syncd",
        Path("/run/credentials/syncd.service/ssh-key"),
        KEY,
    )
    assert (hub.port, hub.keepalive_interval, hub.keepalive_count_max) == (22, 15.0, 3)
    assert hub.passphrase_file is None
    tunnelled, direct = c.sources
    assert tunnelled.bastion is hub and direct.bastion is None
    # limits and per-host accounting see the database, as the bastion reaches it (and which
    # bastion: localhost:5433 behind two bastions is two servers), never the bastion itself
    assert tunnelled.dsn.host_key == "pec.local:5432"
    assert tunnelled.host_key == "hub-sp/pec.local:5432"
    assert direct.host_key == direct.dsn.host_key == "10.20.0.7:5433"


def test_every_bastion_key_is_read():
    text = BASE.replace(
        "    user: syncd\n",
        "    user: syncd\n    port: 2222\n    passphrase_file: key.pass\n"
        "    keepalive_interval: 5s\n    keepalive_count_max: 2\n",
    )
    [hub] = config.loads(text, base=Path("/etc/syncd")).bastions
    assert (hub.port, hub.passphrase_file) == (2222, Path("/etc/syncd/key.pass"))
    assert (hub.keepalive_interval, hub.keepalive_count_max) == (5.0, 2)


def test_compression_is_on_unless_a_bastion_says_false():
    [hub] = config.loads(BASE).bastions
    assert hub.compression is True
    off = BASE.replace("    user: syncd\n", "    user: syncd\n    compression: false\n")
    assert config.loads(off).bastions[0].compression is False
    bad = BASE.replace("    user: syncd\n", "    user: syncd\n    compression: zlib\n")
    assert "bastions.hub-sp.compression: is true or false" in problems(bad)[0]


def test_a_missing_host_key_is_an_error_on_its_line_and_cannot_be_turned_off():
    text = BASE.replace(f'    host_key: "{KEY}"\n', "")
    [problem] = problems(text)
    assert problem.startswith("syncd.yaml:4: bastions.hub-sp.host_key: is required")
    assert "cannot be turned off" in problem
    off = BASE.replace(f'    host_key: "{KEY}"\n', "    host_key: null\n")
    assert problems(off)[0].startswith("syncd.yaml:8: bastions.hub-sp.host_key: is required")


@pytest.mark.parametrize(
    "written",
    [
        "ssh-ed25519",
        "ssh-ed25519 not-base64!",
        "ssh-rsa " + KEY.split()[1],  # the blob says ssh-ed25519
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        "yes",
    ],
)
def test_a_malformed_host_key_is_an_error_on_its_line(written: str):
    [problem] = problems(BASE.replace(f'"{KEY}"', f'"{written}"'))
    assert problem.startswith(
        "syncd.yaml:8: bastions.hub-sp.host_key: is not an OpenSSH public key"
    )


def test_ssh_keyscan_lines_and_comments_are_accepted_as_the_key_alone():
    assert parse_host_key(f"bastion.example.org {KEY}") == KEY
    assert parse_host_key(f"{KEY} root@bastion") == KEY


def test_an_unknown_bastion_is_an_error_naming_the_known_ones():
    [problem] = problems(BASE.replace("{bastion: hub-sp}", "{bastion: hub-rj}"))
    assert problem == (
        "syncd.yaml:12: sources[0].ssh_tunnel.bastion: unknown bastion 'hub-rj' (known: hub-sp)"
    )


def test_bastion_entries_are_checked_like_every_section():
    found = problems(
        BASE.replace("    user: syncd\n", "    user: syncd\n    StrictHostKeyChecking: no\n")
        .replace("{bastion: hub-sp}", "{bastion: hub-sp, jump: x}")
        .replace("    host: bastion.example.org\n", "")
    )
    assert found == [
        "syncd.yaml:4: bastions.hub-sp.host: is required",
        "syncd.yaml:6: bastions.hub-sp.StrictHostKeyChecking: unknown key",
        "syncd.yaml:12: sources[0].ssh_tunnel.jump: unknown key",
    ]


def test_ssh_tunnel_in_a_sources_file_names_that_file_and_line(tmp_path: Path):
    (tmp_path / "sources.yaml").write_text(
        '- id: "1"\n  dsn: postgresql://l@pec.local/esus\n  ssh_tunnel: {bastion: hub-sp}\n'
        '- id: "2"\n  dsn: postgresql://l@pec.local/esus\n  ssh_tunnel: {bastion: nope}\n'
    )
    head, _, tail = BASE.partition("sources:\n")
    text = head + "sources_file: sources.yaml\n" + tail[tail.index("datasets:") :]
    [problem] = problems(text, base=tmp_path)
    assert problem.startswith(f"{tmp_path / 'sources.yaml'}:6: sources[1].ssh_tunnel.bastion:")
    ok = text.replace("nope", "hub-sp")
    (tmp_path / "sources.yaml").write_text(
        (tmp_path / "sources.yaml").read_text().replace("nope", "hub-sp")
    )
    c = config.loads(ok, base=tmp_path)
    assert [s.bastion.name if s.bastion else None for s in c.sources] == ["hub-sp", "hub-sp"]


# -- syncd tunnel enroll ------------------------------------------------------------------------


def rendezvous(port: int) -> str:
    """BASE with its tunnelled source enrolled on `port` of the bastion's loopback."""
    return BASE.replace("pec.local:5432", f"127.0.0.1:{port}")


def test_enrolled_ports_are_deterministic_and_never_clash():
    c = config.loads(rendezvous(enroll.preferred_port("4106902")))
    [hub] = c.bastions
    port = enroll.allocate_port(c, "4106902", hub)
    assert port == enroll.preferred_port("4106902") + 1  # the first choice is taken
    assert enroll.allocate_port(c, "4106902", hub) == port  # the same on every run
    assert enroll.allocate_port(c, "3550308", hub) == enroll.preferred_port("4106902")  # its own
    assert all(
        enroll.PORT_BASE <= enroll.preferred_port(str(i)) < enroll.PORT_BASE + enroll.PORT_SPAN
        for i in range(1000)
    )


def test_enroll_prints_the_restricted_key_line_and_the_source_entry(tmp_path: Path):
    c = config.loads(rendezvous(20001))
    pub = tmp_path / "muni.pub"
    pub.write_text(KEY + " root@municipio\n")
    out = io.StringIO()
    assert enroll.enroll(c, "4106902", out, public_key=pub) == 0
    port = enroll.allocate_port(c, "4106902", c.bastions[0])
    text = out.getvalue()
    assert f'restrict,port-forwarding,permitlisten="127.0.0.1:{port}" {KEY} ' in text
    # the tunnel ends on the PEC's own host: no TLS inside it, so SSH compression works
    dsn = f"postgresql://esus_leitura@127.0.0.1:{port}/esus?sslmode=disable"
    assert f'- id: "4106902"\n  dsn: {dsn}\n' in text
    assert "  ssh_tunnel: {bastion: hub-sp}\n" in text


def test_enroll_prints_the_municipal_tunnel_env_with_the_pec_defaults_and_the_pinned_key():
    c = config.loads(rendezvous(20001))
    out = io.StringIO()
    assert enroll.enroll(c, "4106902", out) == 0
    port = enroll.allocate_port(c, "4106902", c.bastions[0])
    lines = out.getvalue().splitlines()
    # a tunnel.env as it is, for Linux and Windows alike: the PEC's database on 127.0.0.1:5433
    env = dict(line.split("=", 1) for line in lines if re.fullmatch(r"[A-Z_]+=.*", line))
    assert env == {
        "TUNNEL_PORT": str(port),
        "RENDEZVOUS_HOST": "bastion.example.org",
        "RENDEZVOUS_PORT": "22",
        "RENDEZVOUS_USER": "tunnel",
        "DB_HOST": "127.0.0.1",
        "DB_PORT": "5433",
    }
    assert f"bastion.example.org {KEY}" in lines  # known_hosts: port 22 has no [host]:port
    assert any("syncd-tunnel.ps1 install" in line for line in lines)

    # another address for municipalities, a PostgreSQL of the server's own, across its network
    out = io.StringIO()
    enroll.enroll(
        c, "4106902", out, address="rdv.example.gov.br:2222", db_host="10.0.0.5", db_port=5432
    )
    lines = out.getvalue().splitlines()
    assert f"[rdv.example.gov.br]:2222 {KEY}" in lines
    assert {"RENDEZVOUS_HOST=rdv.example.gov.br", "RENDEZVOUS_PORT=2222"} <= set(lines)
    assert {"DB_HOST=10.0.0.5", "DB_PORT=5432"} <= set(lines)
    assert f"  dsn: postgresql://esus_leitura@127.0.0.1:{port}/esus" in lines  # TLS: theirs
    for bad in ("rdv:x", "a b", ":22"):
        with pytest.raises(ConfigError, match="--address"):
            enroll.enroll(c, "4106902", io.StringIO(), address=bad)


# -- the tunnel's failures, as the rest of syncd sees them -----------------------------------------


def test_tunnel_failures_are_kinds_with_their_own_retry_reasons():
    down = classify(BastionUnreachable("hub", "refused"))
    assert down.kind == Kind.BASTION_UNREACHABLE and down.retryable and down.lost_connection
    assert str(down) == "bastion hub (bastion_unreachable): refused"
    mismatch = classify(HostKeyMismatch("hub", "SECURITY"))
    assert mismatch.kind == Kind.HOST_KEY_MISMATCH and not mismatch.retryable
    assert classify(TunnelNotConnected("hub", "x")).lost_connection
    for failure in (down, classify(TunnelNotConnected("hub", "x"))):
        assert retry_reason(failure) == str(failure.kind) and retry_reason(failure) in RETRY_REASONS


def test_a_bastion_down_gets_one_retry_whatever_the_policy():
    policy = RetryPolicy(attempts=6, backoff=0.0, max_backoff=0.0)
    down = Failure(True, "down", Kind.BASTION_UNREACHABLE)
    lost = Failure(True, "lost", Kind.CONNECTION)
    assert [policy.allows(down, n) for n in (1, 2)] == [True, False]
    assert [policy.allows(lost, n) for n in (1, 5, 6)] == [True, True, False]
    assert not RetryPolicy(attempts=1, backoff=0, max_backoff=0).allows(down, 1)


def test_the_status_page_counts_and_tags_municipalities_per_bastion():
    at = datetime(2026, 12, 4, tzinfo=UTC)
    sources = {
        "1": SourceView("Um", state=config_status("failed")),
        "2": SourceView("Dois"),
        "3": SourceView("Três"),
        "4": SourceView("Quatro", state=config_status("failed")),
    }
    via = {"1": "hub-sp", "2": "hub-sp", "4": "rdv <b>"}
    rows = statuspage.rows_of(sources, {}, at, via)
    assert {r.id: r.bastion for r in rows} == {
        "1": "hub-sp",
        "2": "hub-sp",
        "3": None,
        "4": via["4"],
    }

    def page(**query: str) -> str:
        return statuspage.page(sources, {}, at, "nonce", "test", query, via)

    everything = page()
    assert (
        '<li class="bastion" data-bastion="hub-sp"><a href="?q=hub-sp"><b>2</b> '
        "via hub-sp, 1 failing</a></li>"
    ) in everything
    assert "<b>1</b> via rdv &lt;b&gt;, 1 failing</a></li>" in everything  # text, not markup
    assert everything.count('<span class="via">via hub-sp</span>') == 2
    assert everything.count('class="via"') == 3
    assert 'data-bastion="hub-sp" data-duration' in everything
    # the filter matches a bastion's name (case ignored); the counts on top stay of every one
    one = page(q="HUB-SP")
    assert ids(one) == {"1", "2"} and "2 of 4 shown" in one
    assert "<b>2</b> via hub-sp, 1 failing" in one and "<b>1</b> via rdv &lt;b&gt;" in one
    assert 'href="?" aria-current="true"><b>2</b> via hub-sp' not in one
    assert '<a href="?" aria-current="true"><b>2</b> via hub-sp' in page(q="hub-sp")
    assert ids(page(state="never", q="hub")) == {"2"}
    # grouped: one heading per bastion and one for the direct, the state order within each
    grouped = page(group="bastion")
    assert re.findall(r'scope="rowgroup">([^<]*)<', grouped) == [
        "direct",
        "via hub-sp",
        "via rdv &lt;b&gt;",
    ]
    assert re.findall(r'<tr class="\w+" data-id="(\w+)"', grouped) == ["3", "1", "2", "4"]
    assert '<a href="?" aria-current="true">by bastion</a>' in grouped
    assert '<a href="?group=bastion">by bastion</a>' in everything
    assert '<input type="hidden" name="group" value="bastion">' in grouped  # typing keeps it
    assert "by bastion" not in statuspage.page(sources, {}, at, "n", "t", {})  # none: no link
    with pytest.raises(statuspage.BadQuery, match="group: 'dataset' is none of bastion"):
        page(group="dataset")


def test_grouped_by_bastion_each_group_is_together_across_pages():
    at = datetime(2026, 12, 4, tzinfo=UTC)
    sources = {str(i): SourceView(f"M{i}") for i in range(10)}
    via = {str(i): f"hub-{i % 3}" for i in range(10) if i % 3}
    rows = statuspage.rows_of(sources, {}, at, via)
    query = statuspage.PageQuery(group="bastion")
    pages = [statuspage.select(rows, replace(query, page=n), 3) for n in range(1, 5)]
    shown = [r for p in pages for r in p.rows]
    assert sorted(r.id for r in shown) == sorted(sources)  # each once
    keys = [statuspage.GROUPS["bastion"](r) for r in shown]
    assert keys == sorted(keys)  # direct, via hub-1, via hub-2: never split by a page
    assert pages[0].bastions == {"hub-1": (3, 0), "hub-2": (3, 0)}


def ids(html: str) -> set[str]:
    return set(re.findall(r'<tr class="\w+" data-id="(\w+)"', html))


def config_status(value: str):
    from syncd.ledger import Status

    return Status(value)
