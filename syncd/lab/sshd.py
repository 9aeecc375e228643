"""A real OpenSSH server for tests and benchmarks: `sshd -D -e` on 127.0.0.1 with its own host
key, authorized_keys and config, all in one directory (Debian's openssh-server)."""

from __future__ import annotations

import contextlib
import getpass
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def missing_openssh() -> list[str]:
    """What of OpenSSH this machine lacks (nothing: the sshd and ssh this module runs)."""
    return [p for p in (str(SSHD), "ssh", "ssh-keygen") if shutil.which(p) is None]


def keygen(path: Path, comment: str = "syncd-test") -> str:
    """A new ed25519 key pair at `path` (no passphrase); returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return Path(f"{path}.pub").read_text().strip()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A port below 32768 (the machine's ephemeral range is for port 0) that is free now."""
    for _ in range(200):
        port = random.randrange(low, high)
        if _port_free(port):
            return port
    raise RuntimeError("no free port found")


class Sshd:
    """One sshd on 127.0.0.1:port; `authorize(line)` adds an authorized_keys line."""

    def __init__(self, directory: Path, max_sessions: int = 10, log_level: str = "VERBOSE"):
        self.max_sessions = max_sessions
        self.log_level = log_level  # DEBUG: each connection's negotiated algorithms too
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.host_key = keygen(self.dir / "host_ed25519", "bastion-host")
        self.client_key_file = self.dir / "syncd_ed25519"
        self.client_key = keygen(self.client_key_file, "syncd")
        self.authorized = self.dir / "authorized_keys"
        self.authorized.write_text(self.client_key + "\n")
        self.authorized.chmod(0o600)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "sshd.log"

    def authorize(self, line: str) -> None:
        with self.authorized.open("a") as f:
            f.write(line.strip() + "\n")

    def _write_config(self) -> Path:
        path = self.dir / "sshd_config"
        path.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.dir / 'host_ed25519'}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "AllowTcpForwarding yes",
                    "GatewayPorts no",
                    "MaxStartups 200",
                    f"MaxSessions {self.max_sessions}",
                    f"LogLevel {self.log_level}",
                    "",
                ]
            )
        )
        return path

    def start(self) -> Sshd:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
        for _ in range(10):
            self.port = self.port or free_port()
            config = self._write_config()
            log = self.log.open("ab")
            self.proc = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config.resolve())],
                stdout=log,
                stderr=log,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
                ):
                    return self
                time.sleep(0.05)
            self.stop()
            self.port = 0  # taken meanwhile: another port
        raise RuntimeError(f"sshd did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def bastion(self, port: int | None = None, **extra: object) -> dict[str, object]:
        """A `bastions:` entry for this sshd (or for a proxy in front of it, at `port`)."""
        return {
            "host": "127.0.0.1",
            "port": port or self.port,
            "user": self.user,
            "private_key_file": str(self.client_key_file),
            "host_key": self.host_key,
            **extra,
        }

    def known_hosts(self, path: Path, port: int | None = None) -> Path:
        path.write_text(f"[127.0.0.1]:{port or self.port} {self.host_key}\n")
        return path
