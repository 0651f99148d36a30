"""JAX's persistent compilation cache, opt-in: :func:`enable_compilation_cache`.

Importing jdense changes no JAX setting; ``jdense train`` turns the cache on unless told
not to (``--no-compilation-cache`` or ``JDENSE_NO_COMPILATION_CACHE=1``).
"""

from __future__ import annotations

import os
import pathlib

import jax
from jax.experimental.compilation_cache import compilation_cache


def _default_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: a relative value is ignored
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "jdense"


def enable_compilation_cache(path: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Turns on JAX's persistent compilation cache, so a new process reuses compiled programs.

    Sets ``jax_compilation_cache_dir`` and lowers ``jax_persistent_cache_min_compile_time_secs``
    to 0 (JAX's default of 1 s would skip the small programs of a dense network). From
    then on every XLA compilation of this process is looked up in ``path`` first and
    written there when missing; tracing and lowering still run. Entries of another JAX
    version or device are not found, never misused. Like any such cache it is trusted
    code: keep it in a directory that only you can write to.

    Args:
      path: the cache directory, created if missing. Default ``$XDG_CACHE_HOME/jdense``,
        or ``~/.cache/jdense`` when ``XDG_CACHE_HOME`` is unset.

    Returns:
      The absolute path of the cache directory.

    Raises:
      TypeError: if ``path`` is not a ``str`` or ``os.PathLike``.
      ValueError: if ``path`` is empty or names something that is not a directory.
      OSError: if the directory cannot be created.

    Example:
      >>> cache_dir = jdense.enable_compilation_cache()  # once, before the first fit
    """
    if path is None:
        path = _default_dir()
    elif not isinstance(path, str | os.PathLike) or isinstance(os.fspath(path), bytes):
        raise TypeError(f"enable_compilation_cache: path must be a str or pathlib.Path, got {path!r}.")
    if not os.fspath(path):
        raise ValueError("enable_compilation_cache: path is empty; pass a directory, or None for the default.")
    path = pathlib.Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"enable_compilation_cache: {path} exists and is not a directory; pass a directory.")
    path.mkdir(parents=True, exist_ok=True)
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_dir", str(path))
    if previous is not None and previous != str(path):
        compilation_cache.reset_cache()  # JAX opens its cache once; let it reopen at the new path
    return path
