"""Every log line names its event, and every module logs under its own name (STYLE lesson 13):
read from the source, so a new log call without an `event` fails here, not in an operator's
query."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

from syncd.logevents import MEANINGS, Event
from syncd.observe.telemetry import JsonFormatter, TextFormatter

SYNCD = Path(__file__).resolve().parents[2] / "syncd"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
# loggers that are not a module's own: the root (handlers, level) and third-party level tweaks
NOT_OWN = {
    ("observe/telemetry.py", "logging.getLogger()"),
    ("observe/telemetry.py", "logging.getLogger(noisy)"),  # asyncio, aiohttp.access, opentelemetry
    ("engine/tunnel/ssh.py", "logging.getLogger('asyncssh')"),
}


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(SYNCD)), ast.parse(path.read_text(), str(path)))
        for path in sorted(SYNCD.rglob("*.py"))
    ]


def _is_log_call(call: ast.Call) -> bool:
    """`log.warning(...)`, `logging.error(...)`, `logging.getLogger(...).info(...)`."""
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr not in LEVELS:
        return False
    target = func.value
    if isinstance(target, ast.Name):
        return target.id in {"log", "logger", "logging"}
    return isinstance(target, ast.Call) and ast.unparse(target.func) == "logging.getLogger"


def _event_of(call: ast.Call) -> str | None:
    """The `Event` member an `extra={"event": Event.X, ...}` names; None without one."""
    for keyword in call.keywords:
        if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
            for key, value in zip(keyword.value.keys, keyword.value.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "event"
                    and isinstance(value, ast.Attribute)
                    and ast.unparse(value.value) == "Event"
                ):
                    return value.attr
    return None


def _log_calls() -> list[tuple[str, int, str | None]]:
    return [
        (name, node.lineno, _event_of(node))
        for name, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _is_log_call(node)
    ]


def test_the_checker_sees_the_log_calls():
    calls = _log_calls()
    assert len(calls) > 30
    assert ("engine/retry.py", "RETRY") in {(name, event) for name, _, event in calls}


def test_every_log_call_names_an_event():
    missing = [f"syncd/{name}:{line}" for name, line, event in _log_calls() if event is None]
    assert not missing, "log calls without extra={'event': Event.X}: " + ", ".join(missing)


def test_every_module_logs_under_its_own_name():
    wrong = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "logging.getLogger"):
                continue
            args = [ast.unparse(a) for a in node.args]
            if args != ["__name__"] and (name, ast.unparse(node)) not in NOT_OWN:
                wrong.append(f"syncd/{name}:{node.lineno}: {ast.unparse(node)}")
    assert not wrong, wrong


def test_the_event_list_is_what_is_logged():
    used = {event for _, _, event in _log_calls() if event is not None}
    listed = {member.name for member in Event}
    assert used - listed == set(), "logged but not in syncd/logevents.py"
    assert listed - used == set(), "listed in syncd/logevents.py but never logged"
    assert set(MEANINGS) == set(Event)
    assert all(MEANINGS[e].strip() for e in Event)
    assert all(e.value == e.name.lower() for e in Event)  # stable snake_case


def _record(event: Event | None) -> logging.LogRecord:
    record = logging.LogRecord("syncd.service.reloader", logging.ERROR, __file__, 1, "m", (), None)
    if event is not None:
        record.event = event
    return record


def test_both_log_formats_show_the_event():
    assert json.loads(JsonFormatter().format(_record(Event.RELOAD_REJECTED)))["event"] == (
        "reload_rejected"
    )
    assert (
        TextFormatter()
        .format(_record(Event.RELOAD_REJECTED))
        .endswith("syncd.service.reloader: m event=reload_rejected")
    )
    # a third-party library's line has no event, and shows none
    assert "event" not in json.loads(JsonFormatter().format(_record(None)))
    assert "event=" not in TextFormatter().format(_record(None))
