"""`bastions:` and each source's `ssh_tunnel:`: SSH hosts syncd reaches municipalities through.

A bastion's `host_key` is required and pinned; there is no way to turn host-key checking off.
It is checked here for its form only (an OpenSSH public key line: algorithm, base64 blob whose
own algorithm name matches): whether the bastion presents it is known only when connecting.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from pathlib import Path

from syncd.config.model import Bastion
from syncd.config.section import Section

BASTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
HOST_KEY_ALGORITHMS = (
    "ssh-ed25519",
    "ssh-ed448",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
HOST_KEY_EXAMPLE = 'host_key: "ssh-ed25519 AAAAC3Nza..." (from the bastion\'s ssh-keyscan)'


def parse_host_key(text: str) -> str | None:
    """The key as `algorithm base64`, or None when `text` is not an OpenSSH public key.

    Also accepts a line of `ssh-keyscan` or known_hosts (the host names before the key) and a
    trailing comment; both are dropped."""
    words = text.split()
    if len(words) >= 2 and words[0] not in HOST_KEY_ALGORITHMS and words[1] in HOST_KEY_ALGORITHMS:
        words = words[1:]  # ssh-keyscan's "host algorithm key"
    if len(words) < 2 or words[0] not in HOST_KEY_ALGORITHMS:
        return None
    algorithm, blob = words[0], words[1]
    try:
        raw = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", raw[:4])
    except (binascii.Error, ValueError, struct.error):
        return None
    if raw[4 : 4 + length] != algorithm.encode() or len(raw) <= 4 + length:
        return None
    return f"{algorithm} {blob}"


def build_bastions(root: Section, base: Path) -> dict[str, Bastion | None]:
    """Every bastion by name; None for one whose entry has problems (already recorded)."""
    raw = root.raw("bastions")
    if raw is None:
        return {}
    sec = Section(root.doc, ("bastions",), root.problems, raw)
    if not sec.is_mapping("bastion name: {host, user, private_key_file, host_key, ...}"):
        return {}
    result: dict[str, Bastion | None] = {}
    for name, value in sec.mapping.items():
        sec.used.add(str(name))
        if not isinstance(name, str) or not BASTION_NAME.fullmatch(name):
            sec.problem(name, "bastion names are letters, digits, '_', '-' and '.' (up to 63)")
            continue
        result[name] = _bastion(
            Section(sec.doc, ("bastions", name), sec.problems, value), name, base
        )
    return result


def _bastion(sec: Section, name: str, base: Path) -> Bastion | None:
    if not sec.is_mapping("host, port, user, private_key_file, host_key, ..."):
        return None
    d = Bastion(name, "", "", Path(), "")
    host = sec.string("host", required=True)
    port = sec.integer("port", d.port, maximum=65535)
    user = sec.string("user", required=True)
    key_file = sec.path_value("private_key_file", base)
    if key_file is None and not sec.has("private_key_file"):
        sec.problem("private_key_file", "is required (the key syncd authenticates with)")
    passphrase_file = sec.path_value("passphrase_file", base)
    host_key = None
    raw_key = sec.string("host_key")
    if raw_key is None:
        sec.problem(
            "host_key",
            f"is required: the bastion's public host key, pinned ({HOST_KEY_EXAMPLE}); "
            "host-key checking cannot be turned off",
        )
    else:
        host_key = parse_host_key(raw_key)
        if host_key is None:
            sec.problem(
                "host_key",
                f"is not an OpenSSH public key ({HOST_KEY_EXAMPLE}; algorithms: "
                f"{', '.join(HOST_KEY_ALGORITHMS[:6])}...)",
            )
    interval = sec.duration("keepalive_interval", d.keepalive_interval, minimum=0.1)
    count = sec.integer("keepalive_count_max", d.keepalive_count_max, maximum=100)
    compression = sec.raw("compression")
    if compression is None:
        compression = d.compression
    elif not isinstance(compression, bool):
        sec.problem("compression", "is true or false")
        compression = d.compression
    sec.check_unknown()
    if host is None or user is None or key_file is None or host_key is None:
        return None
    return Bastion(
        name, host, user, key_file, host_key, port, passphrase_file, interval, count,
        compression=compression,
    )  # fmt: skip


def ssh_tunnel(sec: Section, bastions: dict[str, Bastion | None]) -> Bastion | None:
    """A source's `ssh_tunnel: {bastion: NAME}`: the bastion it names, which must exist."""
    raw = sec.raw("ssh_tunnel")
    if raw is None:
        return None
    tsec = Section(sec.doc, (*sec.path, "ssh_tunnel"), sec.problems, raw)
    if not tsec.is_mapping("bastion: NAME"):
        return None
    name = tsec.string("bastion", required=True)
    tsec.check_unknown()
    if name is None:
        return None
    bastion = bastions.get(name)
    if name not in bastions:
        known = ", ".join(sorted(bastions)) or "none is configured under bastions:"
        tsec.problem("bastion", f"unknown bastion {name!r} (known: {known})")
    return bastion
