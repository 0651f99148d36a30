"""Layer specs: frozen, hashable dataclasses with pure ``init`` and ``apply``.

The layer protocol (what :class:`jdense.Sequential` composes) is two methods,
``init(key) -> params`` and ``apply(params, x) -> y``; a plain pair of functions
``(init_fn, apply_fn)`` works the same way. A layer that draws random numbers or
keeps non-trainable state (Dropout, BatchNorm) adds ``init_state() -> state`` and
``apply_with_state(params, state, x, *, train, key, mask) -> (y, state)``; its state
lives outside the params so that the optimizer never sees it.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import optax

from jdense import checks, dense
from jdense.activations import Activation as ActivationFn
from jdense.activations import get_activation
from jdense.initializers import Initializer, get_initializer

Params = Any
State = Any


def field(default: Any = dataclasses.MISSING, *, shapes: tuple[str, ...] = (), neutral: Any = dataclasses.MISSING):
    """A layer field that shapes only the compiled programs named in ``shapes`` (``"init"``, ``"training"``).

    A field declared without it shapes every program (e.g. ``in_features``). Programs are
    cached per network *structure* (:func:`jdense.network.structure`): the network with
    every field that does not shape that program set to its ``neutral`` value (default:
    the field's default). So networks that differ only in such values (an L2 strength,
    an initializer, a per-layer optimizer) share compiled programs, and a new layer field
    declares here, once, what it shapes.

    Example:
      >>> lambda_: float = field(0.0)                   # a value: read by the optimizer only
      >>> rate: float = field(shapes=("training",), neutral=0.0)
    """
    return dataclasses.field(default=default, metadata={
        "shapes": frozenset(shapes), "neutral": default if neutral is dataclasses.MISSING else neutral})


@runtime_checkable
class Layer(Protocol):
    """What a layer must provide to be composed by :class:`jdense.Sequential`."""

    def init(self, key: jax.Array) -> Params: ...

    def apply(self, params: Params, x: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class Dense:
    """A fully connected layer: ``activation(x @ w + b)``, its weights, bias, initializer and regularization.

    Args:
      in_features: number of input features.
      out_features: number of output features.
      activation: a name (default ``"relu"``), ``None`` for linear, or a callable.
      initializer: ``"auto"`` (He for ReLU-family, Glorot otherwise), a name, or a callable.
      optimizer: an optax transformation for this layer only (``None``: the network's).
      lambda_: L2 strength: the loss gains ``(lambda_/2)·||w||²`` (not on the bias).
      use_bias: whether the layer has a bias ``b``.
      dtype: the params' floating dtype.
      compute_dtype: optionally compute in this dtype (e.g. ``jnp.bfloat16``) for inference.
      l1: L1 strength: the loss gains ``l1·Σ|w|`` (not on the bias).
      trainable: ``False`` freezes the layer: ``fit`` leaves its params unchanged.

    Example:
      >>> layer = Dense(784, 128)
      >>> params = layer.init(jax.random.key(0))
      >>> layer.apply(params, jnp.ones((32, 784))).shape
      (32, 128)
    """

    in_features: int
    out_features: int
    activation: str | ActivationFn | None = "relu"
    initializer: str | Initializer = field("auto", shapes=("init",))
    optimizer: optax.GradientTransformation | None = field(None)
    lambda_: float = field(0.0)
    use_bias: bool = True
    dtype: Any = jnp.float32
    compute_dtype: Any = field(None, shapes=("training",))
    l1: float = field(0.0)
    trainable: bool = field(True)

    name_prefix = "dense"

    def __post_init__(self):
        # NumPy scalars become Python numbers: the layer stays hashable and JSON-ready
        object.__setattr__(self, "in_features", checks.positive_int("in_features", self.in_features))
        object.__setattr__(self, "out_features", checks.positive_int("out_features", self.out_features))
        get_activation(self.activation)
        get_initializer(self.initializer, self.activation)
        object.__setattr__(self, "lambda_", checks.non_negative_float("lambda_", self.lambda_))
        object.__setattr__(self, "l1", checks.non_negative_float("l1", self.l1))
        object.__setattr__(self, "trainable", checks.boolean("trainable", self.trainable))
        object.__setattr__(self, "use_bias", checks.boolean("use_bias", self.use_bias))
        object.__setattr__(self, "dtype", checks.floating_dtype("dtype", self.dtype))
        if self.compute_dtype is not None:
            object.__setattr__(self, "compute_dtype", checks.floating_dtype("compute_dtype", self.compute_dtype))
        if self.optimizer is not None and not isinstance(self.optimizer, optax.GradientTransformation):
            raise TypeError(
                f"optimizer must be an optax.GradientTransformation such as optax.sgd(0.1), got {self.optimizer!r}."
            )

    def init(self, key: jax.Array) -> dense.Params:
        """Params ``{"w", "b"}`` from :func:`jdense.init`."""
        return dense.init(
            key, self.in_features, self.out_features, self.initializer,
            activation=self.activation, use_bias=self.use_bias, dtype=self.dtype,
        )

    def apply(self, params: dense.Params, x: jax.Array) -> jax.Array:
        """``activation(x @ w + b)`` from :func:`jdense.apply`."""
        return dense.apply(params, x, self.activation, compute_dtype=self.compute_dtype)

    def output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.out_features)


@dataclasses.dataclass(frozen=True)
class Flatten:
    """Merge the axes from ``start_axis`` on into one, e.g. ``(N, 28, 28) -> (N, 784)``."""

    start_axis: int = 1

    name_prefix = "flatten"

    def init(self, key: jax.Array) -> Params:
        return {}

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return x.reshape(*x.shape[: self.start_axis], -1)


@dataclasses.dataclass(frozen=True)
class Activation:
    """An activation on its own, with no params: ``activation(x)``, e.g. after a BatchNorm or a Dropout.

    A Dense layer applies its own activation; this layer is for an activation that does not
    directly follow one (what :func:`jdense.from_torch` builds from ``Linear → BatchNorm1d → ReLU``).

    Args:
      activation: a name from :data:`jdense.activations.ACTIVATIONS` (``"relu"``, ``"gelu"``, ...),
        ``None`` for the identity, or a callable (such a network has no config for checkpoints).

    Example:
      >>> net = jdense.Sequential([Dense(4, 8, activation=None), BatchNorm(8), Activation("relu"), Dense(8, 2)])
    """

    activation: str | ActivationFn | None = "relu"

    name_prefix = "activation"

    def __post_init__(self):
        get_activation(self.activation)

    def init(self, key: jax.Array) -> Params:
        return {}

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        return get_activation(self.activation)(x)

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)


@dataclasses.dataclass(frozen=True)
class Dropout:
    """Drop each input with probability ``rate`` in training and scale the rest by ``1/(1-rate)``.

    The identity in evaluation (``train=False``). Training needs a PRNG key.
    """

    rate: float = field(shapes=("training",), neutral=0.0)

    name_prefix = "dropout"

    def __post_init__(self):
        if isinstance(self.rate, bool) or not isinstance(self.rate, numbers.Real) or not 0.0 <= self.rate < 1.0:
            raise ValueError(
                f"Dropout rate must be a probability in [0, 1), got {self.rate!r}; "
                "it is the probability of dropping a unit, e.g. Dropout(0.5)."
            )
        object.__setattr__(self, "rate", float(self.rate))  # e.g. np.float32(0.5): hashable, JSON-ready

    def init(self, key: jax.Array) -> Params:
        return {}

    def init_state(self) -> State:
        return {}

    def apply(self, params: Params, x: jax.Array, *, train: bool = False, key: jax.Array | None = None) -> jax.Array:
        return self.apply_with_state(params, {}, x, train=train, key=key)[0]

    def apply_with_state(self, params, state, x, *, train=False, key=None, mask=None):
        if not train or self.rate == 0.0:
            return x, state
        if key is None:
            raise ValueError("Dropout in training needs a PRNG key: call apply(..., train=True, key=jax.random.key(seed)).")
        keep = jax.random.bernoulli(key, 1.0 - self.rate, jnp.shape(x))
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros((), x.dtype)), state


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    """Batch normalization ``scale · (x − μ) / sqrt(σ² + epsilon) + bias`` over the last axis.

    Training normalizes with the batch's statistics (over every axis but the last) and
    updates the running averages ``running = momentum·running + (1−momentum)·batch``;
    evaluation uses the running averages. Params ``{"scale", "bias"}`` are trained;
    the state ``{"mean", "var"}`` is not. ``trainable=False`` freezes ``scale`` and ``bias``
    (the running averages still follow the data in training mode).
    """

    features: int
    momentum: float = field(0.9, shapes=("training",))
    epsilon: float = field(1e-5, shapes=("training",))
    dtype: Any = jnp.float32
    trainable: bool = field(True)

    name_prefix = "batch_norm"

    def __post_init__(self):
        object.__setattr__(self, "features", checks.positive_int("features", self.features))
        momentum = checks.real("BatchNorm momentum", self.momentum, "a number in [0, 1) such as 0.9")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"BatchNorm momentum must be in [0, 1), got {self.momentum!r}; 0.9 is usual.")
        epsilon = checks.real("BatchNorm epsilon", self.epsilon, "a small number > 0 such as 1e-5")
        if not epsilon > 0:
            raise ValueError(f"BatchNorm epsilon must be > 0, got {self.epsilon!r}; 1e-5 is usual.")
        object.__setattr__(self, "momentum", momentum)
        object.__setattr__(self, "epsilon", epsilon)
        object.__setattr__(self, "dtype", checks.floating_dtype("dtype", self.dtype))
        object.__setattr__(self, "trainable", checks.boolean("trainable", self.trainable))

    def init(self, key: jax.Array) -> Params:
        return {"scale": jnp.ones((self.features,), self.dtype), "bias": jnp.zeros((self.features,), self.dtype)}

    def init_state(self) -> State:
        return {"mean": jnp.zeros((self.features,), jnp.float32), "var": jnp.ones((self.features,), jnp.float32)}

    def apply(self, params: Params, x: jax.Array, *, state: State) -> jax.Array:
        """Inference: normalize with the running averages in ``state``."""
        return self.apply_with_state(params, state, x, train=False)[0]

    def apply_with_state(self, params, state, x, *, train=False, key=None, mask=None):
        if x.shape[-1] != self.features:
            raise ValueError(
                f"BatchNorm(features={self.features}) got x of shape {x.shape}; its last axis must have "
                f"{self.features} entries. Build BatchNorm with the width of the layer before it."
            )
        if train:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            if mask is None:
                mean, var = jnp.mean(xf, axes), jnp.var(xf, axes)
            else:  # statistics over the real rows only (fit pads the last batch)
                w = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x.shape[:-1] + (1,))
                n = jnp.maximum(jnp.sum(w), 1.0)
                mean = jnp.sum(w * xf, axes) / n
                var = jnp.sum(w * (xf - mean) ** 2, axes) / n
            m = self.momentum
            state = {"mean": m * state["mean"] + (1 - m) * mean, "var": m * state["var"] + (1 - m) * var}
        else:
            mean, var = state["mean"], state["var"]
        y = (x - mean.astype(x.dtype)) * jax.lax.rsqrt(var.astype(x.dtype) + self.epsilon)
        return y * params["scale"].astype(x.dtype) + params["bias"].astype(x.dtype), state


@dataclasses.dataclass(frozen=True)
class FunctionLayer:
    """A user-written ``(init_fn, apply_fn)`` pair as a layer (``init_fn(key) -> params``)."""

    init_fn: Callable[[jax.Array], Params]
    apply_fn: Callable[[Params, jax.Array], jax.Array]

    name_prefix = "layer"

    def init(self, key: jax.Array) -> Params:
        return self.init_fn(key)

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        return self.apply_fn(params, x)


def as_layer(layer: Any) -> Layer:
    """Accept a layer object or an ``(init_fn, apply_fn)`` pair; raise a clear error otherwise."""
    if isinstance(layer, tuple) and len(layer) == 2 and all(callable(f) for f in layer):
        return FunctionLayer(*layer)
    if callable(getattr(layer, "init", None)) and callable(getattr(layer, "apply", None)):
        return layer
    raise TypeError(
        f"a layer must have init(key) and apply(params, x) methods, or be a pair (init_fn, apply_fn); "
        f"got {layer!r}. Wrap your functions as (init_fn, apply_fn)."
    )
