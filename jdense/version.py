"""The package's version, read once from its installed metadata (``pyproject.toml`` is the one place it is written)."""

from __future__ import annotations

import importlib.metadata


def _read() -> str:
    try:
        return importlib.metadata.version("jdense")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


VERSION = _read()
"""e.g. ``"0.1.0"``; ``jdense.__version__`` and the checkpoints' ``jdense_version`` are this."""
