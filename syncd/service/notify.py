"""sd_notify(3) in a few lines: READY, RELOADING, STOPPING, WATCHDOG to $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket
import time

from syncd.logevents import Event

log = logging.getLogger(__name__)


class Notifier:
    """Sends state lines to systemd; does nothing when NOTIFY_SOCKET is not set."""

    def __init__(self, address: str | None):
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace socket
        self.address = address

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:  # systemd gone or the socket unreachable: not worth dying for
            log.warning("sd_notify failed: %s", exc, extra={"event": Event.SD_NOTIFY_FAILED})

    def ready(self, status: str = "serving") -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: draining in-flight syncs")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC, in seconds, when systemd asks for pings (and they are for us)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2
