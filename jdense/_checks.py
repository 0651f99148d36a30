"""Eager argument checks shared by the modules: each error names the argument,
what was given, what was expected, and how to fix it."""

from __future__ import annotations

import numbers

import jax.numpy as jnp
import numpy as np


def positive_int(name: str, value) -> int:
    """Return ``value`` if it is a positive Python/NumPy integer, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be a positive int, got {value!r} of type {type(value).__name__}; "
            f"pass a whole number such as {name}=64."
        )
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}; pass a number >= 1.")
    return int(value)


def non_negative_float(name: str, value) -> float:
    """Return ``value`` as a float if it is a real number >= 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {value!r}.")
    if not value >= 0:  # also catches NaN
        raise ValueError(f"{name} must be >= 0, got {value}; use 0.0 to switch it off.")
    return float(value)


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


def boolean(name: str, value) -> bool:
    """Return ``value`` if it is a bool (NumPy's included), else raise."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return bool(value)
