"""Eager argument checks shared by the modules: each error names the argument,
what was given, what was expected, and how to fix it."""

from __future__ import annotations

import functools
import math
import numbers
import os

import jax
import jax.numpy as jnp
import numpy as np


def positive_int(name: str, value) -> int:
    """Return ``value`` if it is a positive Python/NumPy integer, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be a positive int, got {short(value)} of type {type(value).__name__}; "
            f"pass a whole number such as {name}=64."
        )
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}; pass a number >= 1.")
    return int(value)


def integer(name: str, value, low: int = 0) -> int:
    """Return ``value`` as an int if it is a Python/NumPy integer >= ``low`` (bools refused), else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {short(value)} of type {type(value).__name__}; e.g. {name}={max(low, 1)}.")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}.")
    return int(value)


def batch_size(value, n: int) -> int:
    """A training batch size for ``n`` samples: ``None`` is all of them, else a positive int at most ``n``."""
    if value is None:
        return n  # batch gradient descent: the whole set each step
    value = positive_int("batch_size", value)
    if value > n:
        raise ValueError(
            f"batch_size={value} is larger than the data set ({n} samples); pass batch_size<={n}, "
            "or batch_size=None for batch gradient descent."
        )
    return value


def short(value, limit: int = 60) -> str:
    """``repr(value)`` when it is short, else its type's name: an error never prints a several-hundred-character repr."""
    text = repr(value)
    return text if len(text) <= limit else f"a {type(value).__module__}.{type(value).__qualname__}"


def real(name: str, value, expected: str) -> float:
    """Return ``value`` as a Python float if it is a finite real number (NumPy scalars too), else raise."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be {expected}, got {short(value)} of type {type(value).__name__}; pass a number, not a "
            "string or an array."
        )
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {expected}, got {value}; pass a finite number.")
    return float(value)


def non_negative_float(name: str, value) -> float:
    """Return ``value`` as a float if it is a finite real number >= 0, else raise."""
    value = real(name, value, "a finite real number >= 0")
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}; use 0.0 to switch it off.")
    return value


def boolean(name: str, value) -> bool:
    """Return ``value`` as a Python bool if it is a bool (or NumPy bool), else raise."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r} of type {type(value).__name__}.")
    return bool(value)


def floating_dtype(name: str, dtype) -> jnp.dtype:
    """Return ``dtype`` as a NumPy dtype if it is a floating type, else raise."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{name} must be a floating dtype such as jnp.float32, got {dtype!r}.") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(
            f"{name} must be a floating dtype (float32, bfloat16, float16, float64), got {dt}; "
            f"parameters must be differentiable, so pass e.g. {name}=jnp.float32."
        )
    return dt


def choice(name: str, value: str, valid) -> str:
    """Return ``value`` if it is one of ``valid``, else raise listing them."""
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, sorted(valid)))}.")
    return value


def _size(nbytes: int) -> str:
    """``nbytes`` in the largest binary unit that keeps it >= 1, e.g. ``"3.7 TiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if nbytes < 1024 or unit == "EiB":
            return f"{nbytes:,.0f} {unit}" if unit == "B" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    raise AssertionError  # unreachable


@functools.lru_cache(maxsize=8)
def _capacity(device: jax.Device) -> tuple[int, str] | None:
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # some backends do not implement it
        pass
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device} memory"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), f"{device}, host memory"
    except (AttributeError, ValueError, OSError):
        return None


def device_capacity() -> tuple[int, str] | None:
    """``(bytes, description)`` the default device can hold at most, or None if unknown.

    The device's ``memory_stats()["bytes_limit"]`` (GPU/TPU), else the host's physical
    memory (CPU).
    """
    device = jax.config.jax_default_device
    if device is None or isinstance(device, str):
        device = jax.devices(device)[0]
    return _capacity(device)


def fits_device(what: str, nbytes: int, detail: str) -> None:
    """Raise before anything is allocated when ``nbytes`` of params cannot fit on the default device."""
    capacity = device_capacity()
    if capacity is not None and nbytes > capacity[0]:
        limit, where = capacity
        raise ValueError(
            f"{what} needs {nbytes:,} bytes ({_size(nbytes)}) for its params ({detail}), but the device "
            f"holds at most {limit:,} bytes ({_size(limit)}; {where}); use fewer features, a smaller "
            "dtype (e.g. dtype=jnp.bfloat16) or a device with more memory."
        )


def nbytes(shapes) -> int:
    """Bytes of a tree of arrays or ``jax.ShapeDtypeStruct`` leaves."""
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(shapes))


def params_fit_device(what: str, shapes) -> None:
    """:func:`fits_device` for a tree of ``jax.ShapeDtypeStruct`` leaves, listing them in the message."""
    if (capacity := device_capacity()) is None or nbytes(shapes) <= capacity[0]:
        return
    leaves = sorted(jax.tree_util.tree_flatten_with_path(shapes)[0], key=lambda item: -nbytes(item[1]))  # largest first
    detail = " and ".join(
        f"{'/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)} {tuple(leaf.shape)} {np.dtype(leaf.dtype).name}"
        for path, leaf in leaves
    )
    fits_device(what, nbytes(shapes), detail)


def prng_key(name: str, value) -> jax.Array:
    """Return ``value`` as a typed PRNG key if it is one (or a raw ``jax.random.PRNGKey``), else raise."""
    dtype = getattr(value, "dtype", None)
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and value.shape == ():
        return value
    if isinstance(value, jax.Array | np.ndarray) and dtype == np.uint32 and value.shape == (2,):
        return jax.random.wrap_key_data(jnp.asarray(value))
    raise TypeError(f"{name} must be one JAX PRNG key such as jax.random.key(0), got {value!r}; "
                    f"pass {name}=jax.random.key(seed).")
