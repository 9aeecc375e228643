"""Which row differ `run` and `once` use, chosen once at start from the config's `differ:`
(engine/rowdiff/choice.py): never silently slow. The pure-Python one is said with its reason in
a warning here, `syncd_row_differ_compiled` in /metrics, a finding in `check`, a line on the
status page; `differ: compiled` refuses to start without the compiled one (exit 2)."""

from __future__ import annotations

import logging

from syncd.config import ConfigError, DifferMode, Problem
from syncd.engine import rowdiff
from syncd.logevents import Event

log = logging.getLogger(__name__)


def start_differ(mode: DifferMode) -> rowdiff.DifferChoice:
    """The differ for this process; ConfigError (one line, exit 2) when `mode` demands the
    compiled one and it cannot run."""
    try:
        choice = rowdiff.use(mode)
    except rowdiff.DifferRefused as exc:
        raise ConfigError([Problem("", None, str(exc))]) from None
    if not choice.compiled:
        log.warning(
            "the pure-Python row differ runs (several times slower): %s",
            choice.reason,
            extra={"event": Event.DIFFER_PURE_PYTHON},
        )
    return choice
