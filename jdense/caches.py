"""Where every cache of compiled programs is registered, so that :func:`jdense.clear_cache` forgets them all.

A module that keeps compiled programs (training and evaluation epochs, the
population's, ``Sequential.init``, the optimizer's init) wraps their builder in
:func:`cached`, or registers its own ``clear`` with :func:`register`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

CACHE_SIZE = 64
"""How many programs of each kind stay compiled (least recently used first out)."""

_CLEARS: list[Callable[[], None]] = []


def register(clear: Callable[[], None]) -> None:
    """Have :func:`clear` call ``clear()`` too (e.g. a dict's ``clear`` method)."""
    _CLEARS.append(clear)


def cached(build: Callable | None = None, *, maxsize: int = CACHE_SIZE):
    """LRU-cache ``build(key)`` and register the cache; a key that cannot be hashed is built each time.

    Example:
      >>> @cached
      ... def program(spec):
      ...     return jax.jit(...)
    """
    if build is None:
        return functools.partial(cached, maxsize=maxsize)
    kept = functools.lru_cache(maxsize=maxsize)(build)

    @functools.wraps(build)
    def get(key):
        try:
            hash(key)
        except TypeError:
            return build(key)
        return kept(key)

    get.cache_clear, get.cache_info = kept.cache_clear, kept.cache_info
    register(kept.cache_clear)
    return get


def clear() -> None:
    """Empty every registered cache: the next call of each program compiles again."""
    for clear_one in _CLEARS:
        clear_one()
