"""What `syncd` exits with: the statuses every command shares, and what each command's mean.

The table is where a reader of the CLI looks for them; `syncd.cli` puts each command's line in
its `--help` (the parser's epilog) and `SUMMARY` in the man page, and `tools/reference.py` takes
both from the parser into docs/reference/cli.md (a unit test fails when a command has none).
"""

from __future__ import annotations

# done; something failed (each named on stderr); the config or the command line is wrong
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
# `syncd reload`: the daemon rejected the new config (1), or gave no answer in time (3)
EXIT_REJECTED, EXIT_NO_ANSWER = EXIT_FAILED, 3

SUMMARY = """0: done (all succeeded). 1: something failed, each named on stderr.
    2: the config or the command line is wrong (each problem with its file, line and key path)."""

# each command's statuses; 130 after Ctrl-C, for every command
EXIT_STATUS = {
    "run": "0 after a clean SIGTERM/SIGINT, 2 bad config",
    "once": "0 all succeeded (or nothing to sync), 1 any failed or skipped, 2 bad config",
    "check-config": "0 valid (warnings allowed), 2 invalid",
    "check": "0 all pass (warnings allowed), 1 any fails, 2 bad config",
    "status": "0, 1 the destination cannot be reached, 2 bad config",
    "verify": "0 all equal, 1 any differs or cannot be compared, 2 bad config",
    "trigger": "0 all queued, 1 any refused or no daemon answers, 2 bad config",
    "config print": "0, 2 bad config",
    "reload": "0 applied, 1 rejected, 2 no state directory, 3 no answer",
    "tunnel enroll": "0, 2 bad config or input",
    "demo": "0, 1 the embedded PostgreSQL or the machine failed",
    "completion": "0",
    "man": "0",
}


def exit_status(command: str) -> str | None:
    """The `exit status: ...` line of a command's --help, or None for a command with none."""
    text = EXIT_STATUS.get(command)
    return f"exit status: {text}" if text else None
