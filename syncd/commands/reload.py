"""`syncd reload`: SIGHUP to the daemon, then wait until it says how the reload went.

systemd 252 (Debian 12, RHEL 9) lacks Type=notify-reload, and `ExecReload=kill -HUP $MAINPID`
returns before the daemon has even read its config: `systemctl reload` would report success for
a config that is then rejected, and a reload ordered before another unit's would not be. So the
unit runs `syncd reload --pid $MAINPID`, which waits for the acknowledgement.

The acknowledgement is a small file in the service's runtime directory, written by the daemon
(`syncd.service.reloadstate` says its format). The helper reads the generation, signals, and
waits for a greater one from the same pid. Exit 0 when the new config was applied, 1 when it was
rejected (systemctl reload then fails, and says why), 3 when no acknowledgement came in time
(`syncd.exitstatus`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from syncd.exitstatus import EXIT_CONFIG, EXIT_NO_ANSWER, EXIT_OK, EXIT_REJECTED
from syncd.service.reloadstate import ReloadOutcome, read_state


def reload(
    pid: int,
    directory: Path | None,
    timeout: float,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    if directory is None:
        print(
            "syncd reload: no state directory (set RuntimeDirectory=syncd in the unit, "
            "or pass --state-dir)",
            file=err,
        )
        return EXIT_CONFIG
    before = read_state(directory)
    generation = before.generation if before is not None and before.pid == pid else 0
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"syncd reload: no process {pid}", file=err)
        return EXIT_NO_ANSWER
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(directory)
        if state is not None and state.pid == pid and state.generation > generation:
            if state.outcome == ReloadOutcome.SUCCESS:
                print(f"syncd reload: {state.message}", file=out)
                return EXIT_OK
            print(
                f"syncd reload: rejected, still running the previous config: {state.message}",
                file=err,
            )
            return EXIT_REJECTED
        time.sleep(0.05)
    print(f"syncd reload: no acknowledgement from {pid} within {timeout:g}s", file=err)
    return EXIT_NO_ANSWER
