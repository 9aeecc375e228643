"""`syncd trigger ID...`: ask the running daemon to sync sources now, through its HTTP endpoint
`POST /sources/{id}/sync` and the token of `http.token_file`, one line per source."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TextIO

from syncd import config as config_module
from syncd.config.values import SOURCE_ID
from syncd.exitstatus import EXIT_FAILED, EXIT_OK

TIMEOUT = 10.0  # seconds: the daemon answers a trigger at once, whatever it is doing


def base_url(http: config_module.Http) -> str:
    """Where a client on this machine reaches `http.listen` (a wildcard address is loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(http.host, http.host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{http.port}"


def _config_problem(message: str) -> config_module.ConfigError:
    return config_module.ConfigError([config_module.Problem("http.token_file", None, message)])


def read_token(path: Path | None) -> str:
    """The bearer token; a missing or unreadable file is a config error (exit 2)."""
    if path is None:
        raise _config_problem(
            "is not set: the daemon's POST endpoints need a token (or give --token-file)"
        )
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise _config_problem(
            f"{path}: {exc.strerror or exc} (outside the service, give --token-file)"
        ) from None
    if not token:
        raise _config_problem(f"{path} is empty")
    return token


def _post(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url, method="POST", data=b"", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _answer(source_id: str, code: int, body: str, known: bool) -> tuple[bool, str]:
    """(accepted, the line to print) for the daemon's answer."""
    if code == 202:
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        running = " (a sync of it is running: this one follows)" if data.get("running") else ""
        at = data.get("requested_at")
        return True, f"{source_id}: queued{running}" + (f", requested at {at}" if at else "")
    if code == 401:
        return False, (
            f"{source_id}: the daemon refused the token (401): the token file is not the "
            "daemon's http.token_file"
        )
    if code == 403:
        return False, f"{source_id}: the daemon has no http.token_file, so triggers are off (403)"
    if code == 404:
        also = "" if known else "; this config does not list it either"
        return False, f"{source_id}: the daemon knows no source {source_id!r} (404){also}"
    return False, f"{source_id}: the daemon answered {code}"


def run_trigger(
    config: config_module.Config,
    source_ids: list[str],
    token_file: Path | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    bad = [sid for sid in source_ids if not SOURCE_ID.fullmatch(sid)]
    if bad:
        raise config_module.ConfigError(
            [config_module.Problem("ID", None, f"{sid!r} is not a source id") for sid in bad]
        )
    token = read_token(token_file or config.http.token_file)
    base = base_url(config.http)
    failed = False
    for source_id in source_ids:
        try:
            code, body = _post(f"{base}/sources/{source_id}/sync", token)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            print(
                f"no daemon answers at {base} ({reason}): is syncd running, with this "
                f"config's http.listen ({config.http.listen})?",
                file=err,
            )
            return EXIT_FAILED
        accepted, line = _answer(source_id, code, body, config.source(source_id) is not None)
        print(line, file=out if accepted else err)
        failed = failed or not accepted
    return EXIT_FAILED if failed else EXIT_OK
