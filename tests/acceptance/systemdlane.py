"""A real systemd (the host's, 252 on Debian 12) as PID 1 of private namespaces, running the
shipped unit; `systemctl` reaches it through `nsenter`. The namespaces are made by
`systemd-lane.sh` (read it for what is shared with the host and what is not).

The one danger is the host's /tmp, shared with the namespaces: systemd-tmpfiles --boot --remove
would empty it. The manager sees no unit but the lane's own (SYSTEMD_UNIT_PATH), and every
tmpfiles unit is masked besides; `Lane` checks a marker file in /tmp before and after.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pty
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from tests.support.helpers import ROOT

SCRIPT = Path(__file__).with_name("systemd-lane.sh")
UNIT = ROOT / "systemd" / "syncd.service"
TARGET = "syncd-lane.target"
# what DefaultDependencies=yes asks for, as empty targets: the distribution's would start
# udev, journald, tmpfiles and the rest of a boot
STUB_TARGETS = ("sysinit.target", "basic.target", "shutdown.target")
# masked whatever SYSTEMD_UNIT_PATH says: `systemd-tmpfiles --boot --remove` empties /tmp
MASKED = (
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup-dev-early.service",
    "systemd-tmpfiles-clean.service",
    "systemd-tmpfiles-clean.timer",
)
HIDDEN = ("/root/", "/home/", "/run/user/")  # ProtectHome=yes
TOOLS = ("unshare", "nsenter", "setpriv", "systemctl")
SYSTEMD = Path("/lib/systemd/systemd")


def missing() -> str | None:
    """Why the lane cannot run here, or None."""
    if os.geteuid() != 0:
        return "the systemd lane needs root (namespaces, mounts, cgroups)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is not installed (Debian's systemd package)"
    if interpreter() is None:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return f"no python{version} outside {', '.join(HIDDEN)} (ProtectHome= hides them)"
    if not (ROOT / ".venv").is_dir():
        return f"{ROOT / '.venv'} does not exist (make creates it)"
    return None


def interpreter() -> Path | None:
    """This Python (same minor version: the environment's compiled modules load in it) at a
    path the service can see: ProtectHome= hides /root, where pyenv puts it."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [os.path.realpath(sys._base_executable)]
    candidates += [f"{d}/python{version}" for d in ("/usr/local/bin", "/usr/bin")]
    for candidate in candidates:
        path = Path(os.path.realpath(candidate))
        if path.is_file() and not str(path).startswith(HIDDEN):
            return path
    return None


def tmpfiles_units() -> list[str]:
    """Every tmpfiles unit the distribution ships, and the ones it might."""
    found = {
        Path(p).name
        for d in ("/lib/systemd/system", "/usr/lib/systemd/system", "/etc/systemd/system")
        for p in glob.glob(f"{d}/*tmpfiles*")
    }
    return sorted(found | set(MASKED))


def free_id() -> int:
    """A uid and gid that no user or group of the host has."""
    for candidate in range(64900, 65500):
        with contextlib.suppress(KeyError):
            pwd.getpwuid(candidate)
            continue
        import grp

        with contextlib.suppress(KeyError):
            grp.getgrgid(candidate)
            continue
        return candidate
    raise RuntimeError("no free uid in 64900-65499")


class Lane:
    """One systemd manager: `start()`, then `systemctl(...)`, then `close()`."""

    def __init__(self, state: Path, dropins: dict[str, str] | None = None) -> None:
        self.state = state
        self.units = state / "units"
        self.etc = state / "etc-syncd"  # /etc/syncd inside
        self.log_path = state / "syncd.log"  # the daemon's stdout and stderr
        self.console_path = state / "console.log"  # the manager's own log
        self.uid = free_id()
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._marker: Path | None = None
        self._console_fds: tuple[int, ...] = ()
        self._out: IO[bytes] | None = None
        self._private_before: set[str] = set()
        self._prepare(dropins or {})

    # -- the state directory -------------------------------------------------------------

    def _prepare(self, dropins: dict[str, str]) -> None:
        self.units.mkdir(parents=True)
        self.etc.mkdir()
        shutil.copyfile(UNIT, self.units / UNIT.name)  # as shipped: the test compares it
        (self.units / TARGET).write_text(
            "[Unit]\nDescription=syncd lane: nothing but what the test starts\n"
        )
        for name in STUB_TARGETS:
            (self.units / name).write_text(
                f"[Unit]\nDescription={name} (syncd lane: nothing to do)\nDefaultDependencies=no\n"
            )
        for name in tmpfiles_units():
            (self.units / name).symlink_to("/dev/null")
        dropin_dir = self.units / "syncd.service.d"
        dropin_dir.mkdir()
        # the lane runs no journald: the daemon's output goes to a file the test reads
        (dropin_dir / "lane-log.conf").write_text(
            f"[Service]\nStandardOutput=append:{self.log_path}\nStandardError=inherit\n"
        )
        for name, text in dropins.items():
            (dropin_dir / name).write_text(text)
        (self.state / "passwd").write_text(
            f"syncd:x:{self.uid}:{self.uid}:syncd (lane):/nonexistent:/usr/sbin/nologin\n"
        )
        (self.state / "group").write_text(f"syncd:x:{self.uid}:\n")
        self._venv()

    def _venv(self) -> None:
        """/opt/syncd/.venv as `pip install .` would leave it, made of this checkout and the
        test's own environment (its shebangs name /opt/syncd/.venv: the checkout may live
        under /root, which ProtectHome= hides)."""
        venv = self.state / "venv"
        python = interpreter()
        assert python is not None, missing()
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        site = venv / "lib" / f"python{version}" / "site-packages"
        site.mkdir(parents=True)
        (venv / "bin").mkdir()
        (venv / "deps").mkdir()
        (venv / "pyvenv.cfg").write_text(
            f"home = {python.parent}\ninclude-system-site-packages = false\n"
            f"version = {sys.version.split()[0]}\n"
        )
        (venv / "bin" / "python").symlink_to(python)
        (site / "syncd-lane.pth").write_text("/opt/syncd\n/opt/syncd/.venv/deps\n")
        script = venv / "bin" / "syncd"
        script.write_text(
            "#!/opt/syncd/.venv/bin/python\nimport sys\nfrom syncd.cli import main\n"
            "sys.exit(main())\n"
        )
        script.chmod(0o755)

    @property
    def deps(self) -> str:
        return sysconfig.get_paths()["purelib"]

    # -- the manager ---------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.close()
            raise

    def _start(self, timeout: float) -> None:
        self._private_before = set(_private_tmp())
        fd, marker = tempfile.mkstemp(prefix="syncd-lane-marker-", dir="/tmp")
        os.close(fd)
        self._marker = Path(marker)
        master, slave = pty.openpty()
        # both ends stay open until close(): with no slave open, reads fail and the console
        # would fill up and block the manager
        self._console_fds = (master, slave)
        threading.Thread(target=self._drain_console, args=(master,), daemon=True).start()
        self._out = open(self.state / "lane.out", "wb")
        self._proc = subprocess.Popen(
            ["/bin/sh", str(SCRIPT), str(self.state), os.ttyname(slave), str(ROOT), self.deps],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while self.pid is None:  # unshare's child, once it is systemd
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the lane did not start:\n{self.output()}")
            self.pid = _systemd_child(self._proc.pid)
            time.sleep(0.05)
        while True:  # the manager answers once its private bus is up
            state = self.systemctl("is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError(f"systemd never came up ({state}):\n{self.output()}")
            time.sleep(0.1)

    def _drain_console(self, fd: int) -> None:
        with open(self.console_path, "ab") as out:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    return
                if not data:
                    return
                out.write(data)
                out.flush()

    def output(self) -> str:
        parts = []
        for path in (self.state / "lane.out", self.console_path, self.log_path):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    def run(
        self, *argv: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess:
        """A command inside the namespaces (as root, in the manager's mount and PID ones)."""
        assert self.pid is not None
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-p", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)}: exit {result.returncode}\n{result.stdout}{result.stderr}\n"
                f"{self.output()}"
            )
        return result

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "-p", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, unit: str, predicate, timeout: float = 120) -> dict[str, str]:
        """Poll `systemctl show` until predicate(properties) (the limit guards a hang)."""
        props = ("ActiveState", "SubState", "Result", "MainPID", "NRestarts", "ExecMainStatus")
        deadline = time.monotonic() + timeout
        while True:
            shown = self.show(unit, *props)
            if predicate(shown):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{unit} never got there: {shown}\n{self.output()}")
            time.sleep(0.2)

    def daemon_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        """Every unit stopped (systemd removes their PrivateTmp= directories, in the host's
        /tmp), then SIGKILL to the namespace's PID 1 takes every process in it along; then the
        cgroups made for it are removed and the /tmp marker is checked."""
        if self._proc is not None:
            if self.pid is not None:
                with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                    self.run("systemctl", "stop", "syncd.service", check=False, timeout=150)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, 9)
            self._proc.wait(60)
            for private in set(_private_tmp()) - self._private_before:
                shutil.rmtree(private, ignore_errors=True)  # a unit killed mid-restart
        if self._out is not None:
            self._out.close()
        for fd in self._console_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        cgroups = self.state / "cgroups"
        if cgroups.exists():
            for top in reversed(cgroups.read_text().split()):
                _remove_cgroup(Path(top))
        if self._marker is not None:
            assert self._marker.exists(), "the host's /tmp was cleaned from inside the lane"
            self._marker.unlink()


def _private_tmp() -> list[str]:
    return glob.glob("/tmp/systemd-private-*-syncd.service-*") + glob.glob(
        "/var/tmp/systemd-private-*-syncd.service-*"
    )


def _systemd_child(pid: int) -> int | None:
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "unshare":
            return None  # still the script, making cgroups
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                return int(child)
    except OSError:
        pass
    return None


def _remove_cgroup(top: Path) -> None:
    """cgroup directories go with rmdir, deepest first; their processes are gone already, but
    the kernel may take a moment to let go of them."""
    deadline = time.monotonic() + 30
    for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _rmdir(path, deadline)
    _rmdir(top, deadline)


def _rmdir(path: Path, deadline: float) -> None:
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
