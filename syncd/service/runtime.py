"""How a command runs: its config loaded with warnings logged, its coroutine on uvloop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVarTuple

import anyio

from syncd import config as config_module

# what every command exits with: done; something failed (named on stderr); the config is wrong
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

Args = TypeVarTuple("Args")


def run_async(func: Callable[[*Args], Awaitable[int]], *args: *Args) -> int:
    options: dict[str, bool]
    try:
        import uvloop  # noqa: F401

        options = {"use_uvloop": True}
    except ImportError:  # pragma: no cover - platforms without uvloop
        options = {}
    return anyio.run(func, *args, backend="asyncio", backend_options=options)


def load_config(path: str, credentials_dir: Path | None = None) -> config_module.Config:
    config = config_module.load(path, credentials_dir)
    for warning in config.warnings:
        logging.getLogger("syncd.config").warning("%s", warning)
    return config
