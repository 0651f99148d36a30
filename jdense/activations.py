"""Activation functions by name, all taken from :mod:`jax.nn`.

``None`` and ``"linear"`` mean the identity. Any callable ``f(x) -> y`` works too.
``RELU_FAMILY`` names the activations that the ``"auto"`` initializer gives He init.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jdense import checks

Activation = Callable[[jax.Array], jax.Array]


def linear(x: jax.Array) -> jax.Array:
    """The identity: a dense layer without a non-linearity."""
    return x


ACTIVATIONS: dict[str, Activation] = {
    "linear": linear,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": jax.nn.softmax,
    "leaky_relu": jax.nn.leaky_relu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}

RELU_FAMILY = frozenset({"relu", "leaky_relu", "elu", "gelu", "silu", "swish"})


def get_activation(activation: str | Activation | None) -> Activation:
    """Return the function for an activation name, ``None`` or a callable.

    Args:
      activation: a name in ``ACTIVATIONS``, ``None`` (identity) or a callable.

    Returns:
      A function ``x -> y`` applied elementwise (softmax: over the last axis).

    Raises:
      ValueError: for an unknown name (the message lists the valid ones).
      TypeError: for anything that is neither a string, ``None`` nor callable.

    Example:
      >>> get_activation("relu")(jnp.array([-1.0, 2.0]))
      Array([0., 2.], dtype=float32)
    """
    if activation is None:
        return linear
    if isinstance(activation, str):
        checks.choice("activation", activation, ACTIVATIONS, also="None (linear) or a callable")
        return ACTIVATIONS[activation]
    if callable(activation):
        return activation
    raise TypeError(f"activation must be a name, None or a callable, got {checks.short(activation)}.")


def is_relu_family(activation: str | Activation | None) -> bool:
    """True for the activations that want He initialization (ReLU and its smooth cousins)."""
    return isinstance(activation, str) and activation in RELU_FAMILY
