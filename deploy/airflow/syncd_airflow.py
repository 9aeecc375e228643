"""What the syncd DAGs do, in plain Python: no Airflow import, so syncd's tests run it for real.

Airflow puts the DAG folder on `sys.path`, so the DAG files import this module by name. It uses
only the standard library: nothing to install on the Airflow workers for the HTTP form; the
`syncd once` form needs syncd itself there.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime

log = logging.getLogger("syncd_airflow")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class SyncdFailed(Exception):
    """The sync ran and did not land everything, or syncd could not be asked."""


def _call(method: str, url: str, token: str | None = None, timeout: float = 30) -> dict:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode("utf-8", "replace").strip()
        raise SyncdFailed(f"{method} {url}: HTTP {exc.code} {body}") from None


def trigger(base_url: str, token: str, source_id: str) -> str:
    """Ask the daemon to sync this source now (ahead of its queue, whatever the window).

    Returns `requested_at`, on the daemon's clock: the run asked for starts at or after it.
    """
    quoted = urllib.parse.quote(source_id, safe="")
    answer = _call("POST", f"{base_url.rstrip('/')}/sources/{quoted}/sync", token)
    log.info("syncd accepted the sync of %s (running already: %s)", source_id, answer["running"])
    return answer["requested_at"]


def finished(base_url: str, source_id: str, requested_at: str) -> dict | None:
    """The run asked for at `requested_at`, once it is over: None until then.

    Raises SyncdFailed if that run failed. A run already going when the request came (it
    started before `requested_at`) does not count: the daemon runs the source again after it.
    """
    # that one source only: the whole /status of 5,570 municipalities is 2.5 MB a poke
    query = urllib.parse.urlencode({"id": source_id})
    status = _call("GET", f"{base_url.rstrip('/')}/status?{query}")
    source = status["sources"].get(source_id)
    if source is None:
        raise SyncdFailed(f"source {source_id} is not in syncd's config")
    run = source.get("last_run")
    if source["state"] == "running" or run is None:
        return None
    if datetime.fromisoformat(run["started"]) < datetime.fromisoformat(requested_at):
        return None
    if run["status"] != "ok":
        raise SyncdFailed(
            f"source {source_id}: the sync ended {run['status']}: {source['last_error']}"
        )
    return {"source": source_id, **run, "datasets": source["datasets"]}


def run_once(
    command: Sequence[str],
    config: str,
    sources: Sequence[str] = (),
    datasets: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    credentials_dir: str | None = None,
) -> tuple[int, dict | None]:
    """`syncd once --json` over the selection: (exit code, its JSON document).

    `credentials_dir`: where the secrets the config names no file for are, laid out as in
    /etc/syncd/credentials (`analytics`, `municipios/<id>`): the daemon's config finds them in
    systemd's credentials directory, which exists only inside its unit.
    syncd's log lines (stderr) go to this logger as they come; the document is None only if
    syncd printed none (it was not found, or argparse refused the arguments)."""
    argv = [*command, "once", "--config", config, "--json"]
    if credentials_dir:
        argv += ["--credentials-dir", credentials_dir]
    for source_id in sources:
        argv += ["--source", source_id]
    for dataset in datasets:
        argv += ["--dataset", dataset]
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                env=dict(env) if env is not None else None,
            )
        except OSError as exc:
            raise SyncdFailed(f"cannot run {command[0]}: {exc.strerror or exc}") from None
        assert proc.stderr is not None
        for line in proc.stderr:
            log.info("%s", line.rstrip("\n"))
        code = proc.wait()
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    return code, document


def failure(code: int, document: dict | None) -> str:
    """One line on why `syncd once` did not land everything."""
    if document is None:
        return f"syncd once exited {code} without a report (see the log above)"
    if document.get("error"):
        lines = [document["error"], *document.get("errors", [])]
        return f"syncd once exited {code}: " + "; ".join(lines)
    failed = [
        f"{sid}/{name}: {d['error'] or d['status']}"
        for sid, source in document["sources"].items()
        for name, d in source["datasets"].items()
        if d["status"] != "ok"
    ]
    shown = "; ".join(failed[:10]) + (f" (and {len(failed) - 10} more)" if len(failed) > 10 else "")
    return f"syncd once exited {code}: {shown}"
