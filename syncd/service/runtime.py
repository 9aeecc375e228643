"""How a command runs: its config found and loaded with warnings logged, its coroutine on
uvloop."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVarTuple

import anyio

from syncd import config as config_module
from syncd.logevents import Event

Args = TypeVarTuple("Args")

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/syncd/syncd.yaml")
CONFIG_VARIABLE = "SYNCD_CONFIG"


def config_path(given: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """`--config` wins, then $SYNCD_CONFIG (when not empty), then /etc/syncd/syncd.yaml."""
    return Path(given or environ.get(CONFIG_VARIABLE) or DEFAULT_CONFIG)


def config_origin(given: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """Where `config_path` found the path, for a message about a file that is not there."""
    if given:
        return "--config"
    if environ.get(CONFIG_VARIABLE):
        return f"${CONFIG_VARIABLE}"
    return f"the default; give --config FILE or set ${CONFIG_VARIABLE}"


def run_async(func: Callable[[*Args], Awaitable[int]], *args: *Args) -> int:
    options: dict[str, bool]
    try:
        import uvloop  # noqa: F401

        options = {"use_uvloop": True}
    except ImportError:  # pragma: no cover - platforms without uvloop
        options = {}
    return anyio.run(func, *args, backend="asyncio", backend_options=options)


def read_config(
    given: str | None,
    credentials_dir: Path | None = None,
    *,
    strict_credentials: bool | None = None,
) -> config_module.Config:
    """The config a command names (`config_path`), its secrets looked for in
    `credentials_dir` (else the environment's, see config.credentials); a file that is not
    there says where its path came from."""
    path = config_path(given)
    try:
        return config_module.load(path, credentials_dir, strict_credentials=strict_credentials)
    except config_module.ConfigError:
        if not path.exists():
            origin = config_origin(given)
            raise config_module.ConfigError(
                [config_module.Problem("", None, f"file not found ({origin})", str(path))]
            ) from None
        raise


def load_config(given: str | None, credentials_dir: Path | None = None) -> config_module.Config:
    """`read_config`, its warnings logged, alike ones once (`config.summarize`)."""
    config = read_config(given, credentials_dir)
    for line in config_module.summarize(config.warnings):
        log.warning("%s", line, extra={"event": Event.CONFIG_WARNING})
    return config
