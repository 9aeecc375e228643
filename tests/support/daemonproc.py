"""Run `syncd run` as a real subprocess, with a fake NOTIFY_SOCKET and its HTTP port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from syncd.lab import embedded

from tests.support.helpers import ROOT


class NotifySocket:
    """A datagram socket playing systemd: records every sd_notify message."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="syncd-notify-"))
        self.path = str(self.dir / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append(data.decode())

    def lines(self) -> list[str]:
        return [line for message in self.messages for line in message.splitlines()]

    def states(self) -> list[str]:
        """READY=1, RELOADING=1, STOPPING=1 in order (WATCHDOG and STATUS left out)."""
        return [line for line in self.lines() if line in ("READY=1", "RELOADING=1", "STOPPING=1")]

    def wait_for(self, predicate, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.states()):
                return
            time.sleep(0.05)
        raise AssertionError(f"sd_notify never got there; saw {self.states()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class DaemonProcess:
    def __init__(self, config_path: Path, port: int, env: dict | None = None):
        self.config_path = config_path
        self.port = port
        self.notify = NotifySocket()
        self.log_path = config_path.with_suffix(".log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "syncd",
                "--log-level",
                "info",
                "run",
                "--config",
                str(config_path),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "NOTIFY_SOCKET": self.notify.path, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 60) -> None:
        self.notify.wait_for(lambda s: "READY=1" in s, timeout)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        return request("GET", self.url(path))

    def post(
        self, path: str, token: str | None = None, body: bytes | None = None
    ) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return request("POST", self.url(path), headers, body)

    def status(self) -> dict:
        code, text = self.get("/status")
        assert code == 200, text
        return json.loads(text)

    def wait_status(self, predicate, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"syncd exited {self.proc.returncode}:\n{self.log()}"
            try:
                last = self.status()
            except (OSError, AssertionError):
                time.sleep(0.1)
                continue
            if predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(
            f"status never matched; last: {json.dumps(last)[:2000]}\n{self.log()[-3000:]}"
        )

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.notify.close()


def request(
    method: str, url: str, headers: dict | None = None, body: bytes | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def free_port() -> int:
    return embedded.free_port()
