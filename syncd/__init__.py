"""syncd: keeps a central analytical PostgreSQL fed from many municipal e-SUS APS PEC databases.

The package in layers, top to bottom: a module imports its own layer and those below it, never
those above (tests/unit/test_architecture.py). Each package's docstring maps its modules.

    cli.py          argument parsing only; each command calls one function in `commands/`
                    (`run`: `service/daemon.py`; `demo`: `lab/demo.py`)
    __main__.py     `python -m syncd`: the CLI
    lab/            demo, embedded PostgreSQL, synthetic PEC: for `make demo`, tests, benchmarks
    commands/       what each CLI command does, one module per command; runs once and exits
    service/        what keeps running: the daemon behind `syncd run` and what it serves
    observe/        telemetry (traces, logs), Prometheus metrics, reports for people
    engine/         what moves data; knows nothing of daemons or people
    ledger/         schema `syncd`: the ledger, its migrations, statuses and modes
    sql/            the ledger's SQL: `migrations/NNNN_*.sql` and `ledger.sql` (queries by name)
    config/         YAML -> frozen, validated objects; each default stated once
    safetext.py     text from outside made safe to show (control characters escaped)
    exitstatus.py   what `syncd` exits with: the shared statuses and each command's
    logevents.py    every log line's `event`: the fixed list, one meaning each
"""

from importlib import metadata

try:
    # the one source of the version is pyproject.toml, read back from the installed metadata
    __version__ = metadata.version("syncd")
except metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"
