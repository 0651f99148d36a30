"""Weight initializers by name, all taken from :mod:`jax.nn.initializers`.

The default, ``"auto"``, picks from the activation: He normal (variance
``2 / fan_in``) for the ReLU family, Glorot uniform (variance
``2 / (fan_in + fan_out)``) for linear, tanh, sigmoid, softmax and any custom
callable. Any callable ``init(key, shape, dtype) -> array`` works too.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.nn import initializers as jinit

from jdense import checks
from jdense.activations import Activation, get_activation, is_relu_family

Initializer = Callable[..., jax.Array]


def _orthogonal(key: jax.Array, shape: tuple, dtype=jnp.float32) -> jax.Array:
    """``jax.nn.initializers.orthogonal`` drawn in at least float32, then cast to ``dtype``.

    Its QR decomposition has no bfloat16/float16 kernel (on CPU it raises), so
    low-precision params are drawn in float32 and rounded.
    """
    return jinit.orthogonal()(key, shape, jnp.promote_types(dtype, jnp.float32)).astype(dtype)


INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": jinit.glorot_uniform(),
    "glorot_normal": jinit.glorot_normal(),
    "he_uniform": jinit.he_uniform(),
    "he_normal": jinit.he_normal(),
    "lecun_uniform": jinit.lecun_uniform(),
    "lecun_normal": jinit.lecun_normal(),
    "orthogonal": _orthogonal,
    "zeros": jinit.zeros,
    "ones": jinit.ones,
}


def get_initializer(
    initializer: str | Initializer = "auto", activation: str | Activation | None = "relu"
) -> Initializer:
    """Return the weight initializer for a name (``"auto"`` resolved from ``activation``).

    Args:
      initializer: ``"auto"``, a name in ``INITIALIZERS`` or a callable
        ``(key, shape, dtype) -> array``.
      activation: the layer's activation; used only by ``"auto"``.

    Returns:
      A ``jax.nn.initializers``-style function ``(key, shape, dtype) -> array``.

    Raises:
      ValueError: for an unknown name (the message lists the valid ones).

    Example:
      >>> w = get_initializer("auto", "relu")(jax.random.key(0), (784, 128))
    """
    if isinstance(initializer, str):
        if initializer == "auto":
            get_activation(activation)  # validate the name before choosing
            return INITIALIZERS["he_normal" if is_relu_family(activation) else "glorot_uniform"]
        checks.choice("initializer", initializer, ("auto", *INITIALIZERS), also="a callable (key, shape, dtype) -> array")
        return INITIALIZERS[initializer]
    if callable(initializer):
        return initializer
    raise TypeError(f"initializer must be a name or a callable (key, shape, dtype) -> array, got {checks.short(initializer)}.")
