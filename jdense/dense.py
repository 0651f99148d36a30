"""The dense layer as two pure functions: ``init`` makes its params, ``apply`` runs it.

Textbooks write a dense layer as ``y = σ(W x + b)`` for one column vector ``x``.
jdense works on row-major batches ``x`` of shape ``(..., in_features)`` and stores
``w`` with shape ``(in_features, out_features)``, the transpose of that ``W``
(the layout of Keras, Flax and stax), so that ``y = σ(x @ w + b)``. Backpropagation is
``jax.grad`` of a loss written with ``apply``: it yields the textbook backpropagation formulas
``dL/dw = xᵀ (dL/dy ⊙ σ'(z))`` and ``dL/db = Σ_batch dL/dy ⊙ σ'(z)`` with ``z = x @ w + b``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jdense import checks
from jdense.activations import Activation, get_activation
from jdense.initializers import Initializer, get_initializer

Params = dict[str, jax.Array]


def init(
    key: jax.Array,
    in_features: int,
    out_features: int,
    initializer: str | Initializer = "auto",
    *,
    activation: str | Activation | None = "relu",
    use_bias: bool = True,
    dtype: Any = jnp.float32,
) -> Params:
    """Create a dense layer's params ``{"w": (in, out), "b": (out,)}``.

    Args:
      key: a JAX PRNG key; the same key gives bitwise the same params.
      in_features: number of input features (a positive int).
      out_features: number of output features (a positive int).
      initializer: ``"auto"`` (He for ReLU-family activations, Glorot otherwise), a
        name from :data:`jdense.initializers.INITIALIZERS`, or a callable
        ``(key, shape, dtype) -> array``.
      activation: the activation the layer will use; only ``"auto"`` looks at it.
      use_bias: whether to create ``"b"`` (zeros).
      dtype: a floating dtype for the params.

    Returns:
      A dict ``{"w": w, "b": b}`` (no ``"b"`` when ``use_bias=False``).

    Raises:
      TypeError, ValueError: for non-positive sizes, unknown names or a non-floating dtype.
      ValueError: when the params would not fit in the default device's memory
        (checked on the sizes, before anything is allocated).

    Example:
      >>> params = init(jax.random.key(0), 784, 128)
      >>> params["w"].shape, params["b"].shape
      ((784, 128), (128,))
    """
    shapes = param_shapes(in_features, out_features, use_bias=use_bias, dtype=dtype)
    w_init = get_initializer(initializer, activation)
    checks.params_fit_device("this dense layer", shapes)
    params = {"w": w_init(key, shapes["w"].shape, shapes["w"].dtype)}
    if use_bias:
        params["b"] = jnp.zeros(shapes["b"].shape, shapes["b"].dtype)
    return params


def param_shapes(
    in_features: int, out_features: int, *, use_bias: bool = True, dtype: Any = jnp.float32
) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes and dtypes of :func:`init`'s params, without allocating (or tracing) anything.

    Raises:
      TypeError, ValueError: for non-positive sizes, a non-bool ``use_bias`` or a non-floating dtype.

    Example:
      >>> param_shapes(784, 128)["w"]
      ShapeDtypeStruct(shape=(784, 128), dtype=float32)
    """
    in_features = checks.positive_int("in_features", in_features)
    out_features = checks.positive_int("out_features", out_features)
    dtype = checks.floating_dtype("dtype", dtype)
    shapes = {"w": jax.ShapeDtypeStruct((in_features, out_features), dtype)}
    if checks.boolean("use_bias", use_bias):
        shapes["b"] = jax.ShapeDtypeStruct((out_features,), dtype)
    return shapes


def apply(
    params: Params,
    x: jax.typing.ArrayLike,
    activation: str | Activation | None = "relu",
    *,
    compute_dtype: Any = None,
) -> jax.Array:
    """Compute ``activation(x @ w + b)`` for ``x`` of shape ``(..., in_features)``.

    Args:
      params: the dict made by :func:`init`.
      x: inputs whose last axis has ``in_features`` entries.
      activation: a name, ``None`` (linear) or a callable; default ``"relu"``.
      compute_dtype: optionally run the matmul in this dtype (e.g. ``jnp.bfloat16``);
        the params stay as stored.

    Returns:
      An array of shape ``(..., out_features)``.

    Raises:
      ValueError: when ``w`` is not 2-D, ``b`` is not ``(out_features,)``, or ``x``'s
        last axis is not ``in_features`` (checked on static shapes, so it also fires
        under ``jax.jit``).

    Example:
      >>> params = init(jax.random.key(0), 3, 2)
      >>> apply(params, jnp.ones((5, 3))).shape
      (5, 2)
    """
    if not isinstance(params, dict) or "w" not in params:
        raise TypeError(f"params must be the dict made by jdense.init, with a 'w' entry; got {type(params).__name__}.")
    fn = get_activation(activation)
    w, b = params["w"], params.get("b")
    if jnp.ndim(w) != 2:
        raise ValueError(
            f"params['w'] must be 2-D (in_features, out_features), got shape {jnp.shape(w)}; "
            "pass the params made by jdense.init(key, in_features, out_features)."
        )
    if b is not None and jnp.shape(b) != (w.shape[1],):
        raise ValueError(
            f"params['b'] must have shape ({w.shape[1]},) to match w of shape {w.shape}, got {jnp.shape(b)}; "
            "pass the params made by jdense.init(key, in_features, out_features)."
        )
    x = jnp.asarray(checks.numeric_array("x", x, "apply"))
    if x.ndim == 0 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"x has shape {x.shape} but this dense layer expects inputs of width "
            f"in_features={w.shape[0]} on the last axis (given width {x.shape[-1] if x.ndim else 'none'}); "
            "reshape x or build the layer with the right in_features."
        )
    if compute_dtype is not None:
        compute_dtype = checks.floating_dtype("compute_dtype", compute_dtype)
        x, w = x.astype(compute_dtype), w.astype(compute_dtype)
        b = None if b is None else b.astype(compute_dtype)
    z = x @ w
    if b is not None:
        z = z + b
    return fn(z)
