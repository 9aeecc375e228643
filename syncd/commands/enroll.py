"""`syncd tunnel enroll ID`: a municipality that can only dial out gets a reverse-tunnel port on
a rendezvous bastion, the `authorized_keys` line that lets its key hold that one port, and the
source entry that reaches it.

The port scheme (docs/bastions.md): ports 20000-29999 on the bastion's loopback. A municipality's
port is 20000 + (the first 4 bytes of SHA-256 of its id, mod 10000), so the same id gets the same
port on every run and every machine; if another source of that bastion already holds it in the
config, the next free one up (wrapping at 29999). An id already enrolled keeps its port. Only
the config is read: enrolling writes nothing, the operator adds what it prints.

PEC's defaults: its bundled PostgreSQL listens on 127.0.0.1, port 5433 (the Linux and the Windows
installers alike), so the printed tunnel.env says DB_HOST=127.0.0.1 and DB_PORT=5433. A tunnel
that ends on the database's own host carries the session in SSH from the municipal server's
loopback to the rendezvous host's: the printed DSN asks for no TLS inside it (`sslmode=disable`),
which SSH compression could not shrink (docs/configure/bastions.md, "Compression").
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TextIO

from syncd.config import Bastion, Config, ConfigError, Problem
from syncd.config.bastions import parse_host_key
from syncd.config.values import SOURCE_ID, is_loopback

PORT_BASE, PORT_SPAN = 20000, 10000
KEY_PLACEHOLDER = "<the municipality's public key: ssh-ed25519 AAAA...>"
PEC_DB_HOST, PEC_DB_PORT = "127.0.0.1", 5433  # the PEC's bundled PostgreSQL, Linux and Windows


def preferred_port(source_id: str) -> int:
    digest = hashlib.sha256(source_id.encode()).digest()
    return PORT_BASE + int.from_bytes(digest[:4], "big") % PORT_SPAN


def allocate_port(config: Config, source_id: str, bastion: Bastion) -> int:
    """The municipality's port on `bastion`: its own if enrolled, else the scheme's."""
    reverse = [
        s
        for s in config.sources
        if s.bastion is not None and s.bastion.name == bastion.name and is_loopback(s.dsn.host)
    ]
    for s in reverse:
        if s.id == source_id:
            return s.dsn.port
    taken = {s.dsn.port for s in reverse}
    start = preferred_port(source_id) - PORT_BASE
    for step in range(PORT_SPAN):
        port = PORT_BASE + (start + step) % PORT_SPAN
        if port not in taken:
            return port
    raise ConfigError([Problem("sources", None, f"every port of {bastion.name} is taken")])


def _bastion(config: Config, name: str | None) -> Bastion:
    if name is not None:
        for b in config.bastions:
            if b.name == name:
                return b
        known = ", ".join(b.name for b in config.bastions) or "none"
        raise ConfigError(
            [Problem("--bastion", None, f"unknown bastion {name!r} (known: {known})")]
        )
    if len(config.bastions) == 1:
        return config.bastions[0]
    why = "the config has no bastions:" if not config.bastions else "the config has several"
    raise ConfigError([Problem("--bastion", None, f"name the rendezvous bastion ({why})")])


def _public_key(path: Path | None) -> str:
    if path is None:
        return KEY_PLACEHOLDER
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([Problem("--public-key", None, f"{path}: {reason}")]) from None
    key = parse_host_key(text.splitlines()[0] if text else "")
    if key is None:
        raise ConfigError(
            [Problem("--public-key", None, f"{path} is not an OpenSSH public key (a .pub file)")]
        )
    return key


def _address(text: str | None, bastion: Bastion) -> tuple[str, int]:
    """The rendezvous host as municipalities dial it: `--address HOST[:PORT]`, else the
    bastion's own host and port."""
    if text is None:
        return bastion.host, bastion.port
    host, port = text, bastion.port
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        port_text = ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError([Problem("--address", None, f"{text!r}: the port is not a number")])
        port = int(port_text)
    if not host or any(c.isspace() for c in host):
        raise ConfigError([Problem("--address", None, f"{text!r} is not HOST or HOST:PORT")])
    return host, port


def known_hosts_line(host: str, port: int, key: str) -> str:
    """OpenSSH's known_hosts entry: `host key` on port 22, `[host]:port key` elsewhere."""
    return f"{host} {key}" if port == 22 else f"[{host}]:{port} {key}"


def enroll(
    config: Config,
    source_id: str,
    out: TextIO,
    *,
    bastion_name: str | None = None,
    public_key: Path | None = None,
    user: str = "esus_leitura",
    database: str = "esus",
    db_host: str = PEC_DB_HOST,
    db_port: int = PEC_DB_PORT,
    address: str | None = None,
) -> int:
    if not SOURCE_ID.fullmatch(source_id):
        raise ConfigError(
            [Problem("ID", None, f"{source_id!r} is not an id of letters, digits and _ (up to 32)")]
        )
    if not 0 < db_port < 65536:
        raise ConfigError([Problem("--db-port", None, f"{db_port} is not a TCP port")])
    bastion = _bastion(config, bastion_name)
    key = _public_key(public_key)
    port = allocate_port(config, source_id, bastion)
    host, ssh_port = _address(address, bastion)
    enrolled = config.source(source_id) is not None
    # the tunnel ends on the database's host: SSH all the way, and TLS would defeat compression
    on_db_host = is_loopback(db_host)
    query = "?sslmode=disable" if on_db_host else ""
    why = (
        "the tunnel ends on the database's own host, so no TLS inside it: SSH encrypts,\n"
        "#    and compresses what TLS would not"
        if on_db_host
        else f"the municipal server reaches the database at {db_host} across its network:\n"
        "#    add ?sslmode=verify-full&sslrootcert=... if that hop needs encrypting"
    )
    out.write(
        f"# municipality {source_id}: reverse tunnel through {bastion.name} "
        f"({bastion.address}), port 127.0.0.1:{port} there"
        + (" (already in the config)" if enrolled else "")
        + "\n\n"
        "# 1. On the rendezvous host, append to the tunnel user's authorized_keys (this key may\n"
        "#    hold that one port and nothing else: no shell, no other forward):\n"
        f'restrict,port-forwarding,permitlisten="127.0.0.1:{port}" {key} '
        f"syncd-tunnel-{source_id}\n\n"
        "# 2. Add to sources: in the syncd config (the DSN's host is as the bastion sees it;\n"
        f"#    {why}):\n"
        f'- id: "{source_id}"\n'
        f"  dsn: postgresql://{user}@127.0.0.1:{port}/{database}{query}\n"
        f"  ssh_tunnel: {{bastion: {bastion.name}}}\n\n"
        "# 3. Send the municipality (deploy/tunnel/, docs/tunnel-municipio.pt-BR.md) its\n"
        "#    tunnel.env, these lines (/etc/syncd-tunnel/ on Linux,\n"
        "#    C:\\ProgramData\\syncd-tunnel\\ on Windows):\n"
        f"TUNNEL_PORT={port}\n"
        f"RENDEZVOUS_HOST={host}\n"
        f"RENDEZVOUS_PORT={ssh_port}\n"
        "RENDEZVOUS_USER=tunnel\n"
        f"DB_HOST={db_host}\n"
        f"DB_PORT={db_port}\n"
        "#    and known_hosts beside it, this line (the rendezvous host's key, pinned):\n"
        f"{known_hosts_line(host, ssh_port, bastion.host_key)}\n"
        "#    with the kit's ssh_config. Then, on Linux: systemctl enable --now syncd-tunnel\n"
        "#    on Windows, as Administrator: powershell -ExecutionPolicy Bypass -File\n"
        "#    syncd-tunnel.ps1 install\n"
    )
    return 0
