"""Post-training quantization of Dense layers: int8 or float8 weights, one float32 scale per output.

:func:`quantize` turns every :class:`jdense.Dense` into a :class:`QuantizedDense` whose
weight ``w`` is stored in 8 bits with a per-column scale (symmetric absmax:
``scale = max|w[:, j]| / qmax``, ``q = round(w / scale)``), so a layer computes
``activation((x @ q) * scale + b)``. The modes:

* ``"int8"``: weights int8; activations quantized per row on the fly the same way, so the
  dot is int8 × int8 → int32 (``jax.lax.dot_general(..., preferred_element_type=int32)``)
  and ``z = acc · x_scale · scale + b`` (Keras's ``Dense.quantize("int8")`` arithmetic).
* ``"int8_weight_only"``: weights int8, cast to the compute dtype inside the matmul.
* ``"float8"``: weights ``float8_e4m3fn`` (qmax 448), cast inside the matmul.

Quantized networks are for inference (``apply``, ``jdense.predict``, checkpoints); the
int8 tensors are what :func:`jdense.save` stores, a quarter of float32's bytes.

Which mode (``benchmarks/bench_quant.py``): on XLA:CPU none is faster than float32 (no
fast int8/float8 matmul there, and the weight-only modes convert the weights on every
call, which costs ~10× at batch 1 on a 4096-wide network); int8 pays in memory.
On CPU prefer ``"int8_weight_only"``: the smaller error (digits 784-128-64-10 logits:
0.47% against 0.73% for ``"int8"``, 2.2% for ``"float8"``). ``"int8"`` is the mode for
accelerators with int8 matmul units (not measured here).

Example:
  >>> qnet, qparams = jdense.quantize(net, params, "int8")
  >>> logits = jdense.predict(qnet, qparams, x)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdense import checks
from jdense.activations import get_activation
from jdense.layers import Dense
from jdense.network import Sequential, register_layer

__all__ = ["MODES", "QuantizedDense", "quantize"]

Params = dict[str, Any]
MODES = ("int8", "int8_weight_only", "float8")
"""The quantization modes :func:`quantize` takes."""

_STORAGE = {"int8": (jnp.int8, 127.0), "int8_weight_only": (jnp.int8, 127.0), "float8": (jnp.float8_e4m3fn, 448.0)}


def _absmax(x: jax.Array, mode: str, axis: int) -> tuple[jax.Array, jax.Array]:
    """``(q, scale)`` with ``x ≈ q · scale``; ``scale = max|x| / qmax`` along ``axis`` (kept)."""
    dtype, qmax = _STORAGE[mode]
    x = x.astype(jnp.float32)
    amax = jnp.max(jnp.abs(x), axis=axis, keepdims=True)
    scale = jnp.where(amax > 0, amax / qmax, 1.0)  # an all-zero column: q = 0 with any scale
    q = x / scale
    if jnp.issubdtype(dtype, jnp.integer):
        q = jnp.clip(jnp.round(q), -qmax, qmax)
    return q.astype(dtype), scale


@functools.partial(jax.jit, static_argnums=1)  # one program per shape and mode (eagerly: one per op)
def _quantize_params(params: Params, mode: str) -> Params:
    """A Dense layer's ``{"w", "b"}`` as ``{"w": q, "scale": (out,) float32, "b"}``."""
    q, scale = _absmax(params["w"], mode, axis=0)
    return {**params, "w": q, "scale": scale[0]}


@register_layer
@dataclasses.dataclass(frozen=True)
class QuantizedDense(Dense):
    """A :class:`jdense.Dense` with 8-bit weights: ``activation((x @ q) * scale + b)``, for inference.

    Params ``{"w": (in, out) int8 or float8_e4m3fn, "scale": (out,) float32, "b"}``. Made
    by :func:`quantize`; takes every :class:`jdense.Dense` argument plus ``mode``
    (one of :data:`MODES`). The weight-only modes compute in ``compute_dtype`` (default
    ``dtype``); ``"int8"`` accumulates in int32 and returns float32.

    Example:
      >>> layer = QuantizedDense(8, 4, mode="int8")
      >>> params = layer.init(jax.random.key(0))
      >>> params["w"].dtype, layer.apply(params, jnp.ones((2, 8))).shape
      (dtype('int8'), (2, 4))
    """

    mode: str = "int8"

    inference_only = True  # fit refuses it before compiling: int8/float8 weights have no gradient

    def __post_init__(self):
        super().__post_init__()
        checks.choice("mode", self.mode, MODES)

    def init(self, key: jax.Array) -> Params:
        """A random :class:`jdense.Dense` init, quantized (gives the params' shapes and dtypes)."""
        return _quantize_params(super().init(key), self.mode)

    def apply(self, params: Params, x: jax.typing.ArrayLike) -> jax.Array:
        """``activation((x @ q) * scale + b)``, the dot in int32 for ``"int8"``."""
        if not isinstance(params, Mapping) or "w" not in params or "scale" not in params:
            raise ValueError(
                f"params of a QuantizedDense need 'w' and 'scale'; make them with jdense.quantize(net, params, {self.mode!r})."
            )
        q, scale, b = params["w"], params["scale"], params.get("b")
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x has shape {x.shape} but this layer expects inputs of width in_features={self.in_features} "
                "on the last axis; reshape x or quantize the network built for it."
            )
        if self.mode == "int8":
            xq, x_scale = _absmax(x, "int8", axis=-1)
            acc = jax.lax.dot_general(xq, q, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32)
            z = acc.astype(jnp.float32) * x_scale * scale
        else:
            dtype = self.compute_dtype or self.dtype
            z = (x.astype(dtype) @ q.astype(dtype)) * scale.astype(dtype)
        if b is not None:
            z = z + b.astype(z.dtype)
        return get_activation(self.activation)(z)


def quantize(net: Sequential, params: Mapping[str, Any], mode: str = "int8") -> tuple[Sequential, Params]:
    """Quantize every Dense layer's weights to 8 bits with one float32 scale per output unit.

    Args:
      net: a network of :class:`jdense.Dense` (and any other) layers; LoRA adapters must
        be merged first (:func:`jdense.merge_lora`).
      params: its (trained) params.
      mode: ``"int8"`` (int8 weights and per-row dynamic int8 activations, int32 dot),
        ``"int8_weight_only"`` or ``"float8"`` (e4m3 weights).

    Returns:
      ``(qnet, qparams)``: Dense layers become :class:`QuantizedDense` with params
      ``{"w": q, "scale", "b"}``; other layers and their params are unchanged.

    Raises:
      ValueError, TypeError: an unknown ``mode``, no Dense layer, a LoRA or already
        quantized layer, or params that do not fit ``net``.

    Example:
      >>> qnet, qparams = jdense.quantize(net, params, "int8")
      >>> qparams["dense_0"]["w"].dtype
      dtype('int8')
    """
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a jdense.Sequential, got {type(net).__name__}.")
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be the network's params dict (net.init's), got {type(params).__name__}.")
    checks.choice("mode", mode, MODES)
    for name, layer in zip(net.names, net.layers):  # every check first: nothing is quantized (compiled) before
        if isinstance(layer, Dense) and type(layer) is not Dense:
            fix = "merge_lora first" if type(layer).__name__ == "LoRADense" else "quantize the float network instead"
            raise ValueError(f"{name} is a {type(layer).__name__}; quantize takes plain Dense layers ({fix}).")
        if type(layer) is Dense:
            p = params.get(name)
            shape = (layer.in_features, layer.out_features)
            if not isinstance(p, Mapping) or "w" not in p or tuple(jnp.shape(p["w"])) != shape:
                raise ValueError(f"params[{name!r}]['w'] should have shape {shape}; pass the params of net.")
            bad = ~np.isfinite(np.asarray(p["w"], np.float32))
            if bad.any():  # a NaN or Inf would set its column's scale: the whole column would be garbage
                raise ValueError(f"params[{name!r}]['w'] has {int(bad.sum())} NaN or infinite weights (the first at "
                                 f"{tuple(int(i) for i in np.argwhere(bad)[0])}); quantize the params of a finite, "
                                 "trained network (a diverged fit leaves such weights).")
    if not any(type(layer) is Dense for layer in net.layers):
        raise ValueError("net has no Dense layer to quantize.")
    layers, out = [], dict(params)
    for name, layer in zip(net.names, net.layers):
        if type(layer) is Dense:
            out[name] = {**params[name], **_quantize_params({"w": params[name]["w"]}, mode)}
            layer = QuantizedDense(**{f.name: getattr(layer, f.name) for f in dataclasses.fields(Dense)}, mode=mode)
        layers.append(layer)
    return Sequential(layers), out
