"""syncd: keeps a central analytical PostgreSQL fed from many municipal e-SUS APS PEC databases."""

from importlib import metadata

try:
    # the one source of the version is pyproject.toml, read back from the installed metadata
    __version__ = metadata.version("syncd")
except metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"
