"""Networks built from layers: :class:`Sequential`, the :func:`mlp` shorthand and :func:`summary`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdense import _checks
from jdense.layers import BatchNorm, Dense, Dropout, Flatten, FunctionLayer, Layer, as_layer

Params = dict[str, Any]
State = dict[str, Any]

_LAYER_TYPES = {cls.__name__: cls for cls in (Dense, Flatten, Dropout, BatchNorm)}


@dataclasses.dataclass(frozen=True, init=False)
class Sequential:
    """Layers applied one after the other, with params keyed by layer name.

    Names are given per kind in order: ``dense_0``, ``dense_1``, ``batch_norm_0``,
    ``dropout_0``, ...; params (and BatchNorm's state) are plain dicts keyed by them,
    holding only the layers that have any. The network is hashable and can be a
    static argument of ``jax.jit``.

    Example:
      >>> net = Sequential([Dense(4, 8), Dense(8, 3, activation=None)])
      >>> params = net.init(jax.random.key(0))
      >>> net.apply(params, jnp.ones((2, 4))).shape
      (2, 3)
    """

    layers: tuple
    names: tuple

    def __init__(self, layers: Sequence[Any]):
        if isinstance(layers, Layer) or not isinstance(layers, Sequence) or isinstance(layers, str):
            raise TypeError("Sequential takes a list of layers, e.g. Sequential([Dense(4, 8), Dense(8, 1)]).")
        if len(layers) == 0:
            raise ValueError("Sequential needs at least one layer.")
        layers = tuple(as_layer(layer) for layer in layers)
        counts: dict[str, int] = {}
        names = []
        for layer in layers:
            prefix = getattr(layer, "name_prefix", "layer")
            names.append(f"{prefix}_{counts.get(prefix, 0)}")
            counts[prefix] = counts.get(prefix, 0) + 1
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "names", tuple(names))
        previous = None
        for name, layer in zip(self.names, layers):
            if isinstance(layer, Dense) and previous is not None and previous != layer.in_features:
                raise ValueError(
                    f"{name} has in_features={layer.in_features} but the layer before it gives "
                    f"{previous} features; make them equal."
                )
            if isinstance(layer, Dense):
                previous = layer.out_features
            elif isinstance(layer, BatchNorm):
                if previous is not None and previous != layer.features:
                    raise ValueError(
                        f"{name} has features={layer.features} but the layer before it gives {previous}; make them equal."
                    )
            elif not isinstance(layer, Dropout):
                previous = None  # unknown width after a user layer or Flatten

    # -- construction -------------------------------------------------------
    def init(self, key: jax.Array) -> Params:
        """Trainable params of every layer, ``{name: layer_params}``; one key per layer.

        Compiled as one XLA program (eagerly, each initializer's ops would compile one by one)
        when every layer is hashable; a user layer that is not (e.g. a plain ``@dataclass``)
        is initialized eagerly instead.
        """
        try:
            hash(self)
        except TypeError:
            return self._init(key)
        return _jit_init(self, key)

    def _init(self, key: jax.Array) -> Params:
        keys = jax.random.split(key, len(self.layers))
        params = {}
        for name, layer, k in zip(self.names, self.layers, keys):
            p = layer.init(k)
            if jax.tree.leaves(p):
                params[name] = p
        return params

    def init_state(self) -> State:
        """Non-trainable state (BatchNorm running averages), ``{name: state}``; ``{}`` if none."""
        return {
            name: layer.init_state()
            for name, layer in zip(self.names, self.layers)
            if hasattr(layer, "init_state") and jax.tree.leaves(layer.init_state())
        }

    @property
    def has_state(self) -> bool:
        return any(isinstance(layer, BatchNorm) for layer in self.layers) or bool(self.init_state())

    @property
    def needs_key(self) -> bool:
        """True when training draws random numbers (a Dropout with rate > 0)."""
        return any(isinstance(layer, Dropout) and layer.rate > 0 for layer in self.layers)

    # -- running ------------------------------------------------------------
    def apply_with_state(
        self,
        params: Params,
        state: State,
        x: jax.typing.ArrayLike,
        *,
        train: bool = False,
        key: jax.Array | None = None,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        """Run the network and return ``(outputs, new_state)``.

        Args:
          params: from :meth:`init`.
          state: from :meth:`init_state` (or a previous call).
          x: a batch of inputs.
          train: training mode (Dropout drops, BatchNorm uses and updates batch statistics).
          key: PRNG key, needed when ``train=True`` and the network has Dropout.
          mask: optional ``(batch,)`` weights of real samples (fit pads its last batch);
            BatchNorm computes its statistics over the real samples only.
        """
        if train and key is None and self.needs_key:
            raise ValueError("this network has Dropout: apply(..., train=True) needs key=jax.random.key(...).")
        new_state = dict(state)
        for i, (name, layer) in enumerate(zip(self.names, self.layers)):
            p = params.get(name, {})
            if hasattr(layer, "apply_with_state"):
                k = None if key is None else jax.random.fold_in(key, i)
                s = state.get(name, {})
                if isinstance(layer, BatchNorm) and not s:
                    raise ValueError(
                        f"{name} needs its state: pass state=net.init_state() (or the trained state that "
                        "fit returns as result.state)."
                    )
                x, s = layer.apply_with_state(p, s, x, train=train, key=k, mask=mask)
                if s:
                    new_state[name] = s
            else:
                x = layer.apply(p, x)
        return x, new_state

    def apply(
        self,
        params: Params,
        x: jax.typing.ArrayLike,
        *,
        state: State | None = None,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> jax.Array:
        """Run the network and return its outputs (inference by default).

        A network with BatchNorm needs ``state`` (``net.init_state()`` or ``fit``'s
        ``result.state``); ``train=True`` with Dropout needs ``key``.
        """
        if state is None:
            state = self.init_state() if (train or not self.has_state) else None
        if state is None:
            raise ValueError(
                "this network has BatchNorm: pass state= (fit's result.state, or net.init_state() before training)."
            )
        return self.apply_with_state(params, state, x, train=train, key=key)[0]

    __call__ = apply

    # -- description -------------------------------------------------------
    @property
    def input_width(self) -> int | None:
        """in_features of the first layer if it is Dense (or after Dropout/BatchNorm), else None."""
        for layer in self.layers:
            if isinstance(layer, Dense):
                return layer.in_features
            if isinstance(layer, BatchNorm):
                return layer.features
            if not isinstance(layer, Dropout):
                return None
        return None

    @property
    def output_width(self) -> int | None:
        """out_features of the last Dense layer when nothing after it changes the width."""
        for layer in reversed(self.layers):
            if isinstance(layer, Dense):
                return layer.out_features
            if not isinstance(layer, Dropout | BatchNorm):
                return None
        return None

    def to_config(self) -> dict:
        """A JSON-ready description from which :meth:`from_config` rebuilds the network.

        Raises:
          TypeError: if a layer holds a Python object (a callable activation or
            initializer, a per-layer optimizer, a user layer) that has no name.
        """
        layers = []
        for name, layer in zip(self.names, self.layers):
            if type(layer).__name__ not in _LAYER_TYPES:
                raise TypeError(f"{name} is a user layer ({type(layer).__name__}); it has no config.")
            cfg = {"type": type(layer).__name__}
            for field in dataclasses.fields(layer):
                value = getattr(layer, field.name)
                if field.name in ("dtype", "compute_dtype") and value is not None:
                    value = jnp.dtype(value).name
                elif field.name == "optimizer" and value is not None:
                    raise TypeError(f"{name} has its own optimizer; an optax transformation has no config.")
                elif value is not None and not isinstance(value, str | int | float | bool):
                    raise TypeError(f"{name}.{field.name} is {value!r}; only names can go in a config.")
                cfg[field.name] = value
            layers.append(cfg)
        return {"layers": layers}

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        """Rebuild a network from :meth:`to_config`'s output."""
        try:
            specs = config["layers"]
            return cls([_LAYER_TYPES[c["type"]](**{k: v for k, v in c.items() if k != "type"}) for c in specs])
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a jdense network config: {config!r} ({err}).") from err


_jit_init = jax.jit(Sequential._init, static_argnums=0)


def mlp(
    sizes: Sequence[int],
    activation: str | Any = "relu",
    output_activation: str | Any = None,
    *,
    initializer: str | Any = "auto",
    lambda_: float = 0.0,
    dropout: float = 0.0,
    batch_norm: bool = False,
    use_bias: bool = True,
    dtype: Any = jnp.float32,
) -> Sequential:
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]`` of :class:`Dense` layers.

    Args:
      sizes: layer widths including input and output, e.g. ``[784, 128, 64, 10]``.
      activation: the hidden layers' activation.
      output_activation: the last layer's (default ``None``: logits, for the losses
        that take logits).
      initializer: for every layer (``"auto"`` follows each layer's activation).
      lambda_: L2 strength on every layer's weights.
      dropout: if > 0, a Dropout with this rate after each hidden layer.
      batch_norm: if True, a BatchNorm after each hidden layer (before dropout).
      use_bias, dtype: passed to every Dense.

    Example:
      >>> net = mlp([784, 128, 64, 10], lambda_=1e-4)
      >>> [layer.out_features for layer in net.layers]
      [128, 64, 10]
    """
    if isinstance(sizes, str | int) or not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, e.g. [64, 32, 10]; got {sizes!r}.")
    for s in sizes:
        _checks.positive_int("every entry of sizes", s)
    layers: list[Any] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(
            Dense(n_in, n_out, output_activation if last else activation, initializer,
                  lambda_=lambda_, use_bias=use_bias, dtype=dtype)
        )
        if not last:
            if batch_norm:
                layers.append(BatchNorm(n_out, dtype=dtype))
            if dropout:
                layers.append(Dropout(dropout))
    return Sequential(layers)


def _size(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _non_trainable(name: str, layer, params) -> int:
    """Params of a layer that training leaves alone: all if ``trainable`` is False, else its mask's False leaves."""
    if not getattr(layer, "trainable", True):
        return _size(params)
    if not hasattr(layer, "trainable_mask"):
        return 0

    def frozen(m, sub):
        if not isinstance(m, bool | np.bool_):
            raise TypeError(f"{name}.trainable_mask(params) must return a pytree of bools shaped like the params "
                            f"(or a prefix of them), got a leaf {m!r}.")
        return 0 if m else _size(sub)

    return sum(jax.tree.leaves(jax.tree.map(frozen, layer.trainable_mask(params), params)))


def _dense_flops(layer: Dense, input_shape: tuple) -> int:
    """2·in·out multiply-adds, plus one per output for the bias and one for the activation."""
    per_row = 2 * layer.in_features * layer.out_features
    per_row += layer.out_features * (int(layer.use_bias) + int(layer.activation not in (None, "linear")))
    return math.prod(input_shape[:-1]) * per_row  # one sample's leading axes, usually none


def _xla_flops(fn, *args) -> int | None:
    """FLOPs that XLA's cost analysis counts for ``fn(*args)`` (None where the backend gives none)."""
    try:
        cost = jax.jit(fn).lower(*args).cost_analysis()
    except Exception:  # a backend without cost analysis: the column shows "?"
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if cost is None:
        return None
    flops = cost.get("flops", 0.0)  # absent where the program does no arithmetic
    return None if flops < 0 else round(flops)


def summary(net: Sequential, input_shape: Sequence[int] | None = None, *, print_fn=print) -> str:
    """Print (and return) a table of layers, output shapes, parameter counts and FLOPs, like Keras.

    The FLOPs column counts one sample's forward pass: ``2·in·out`` for a Dense layer's
    multiply-adds plus one per output for its bias and one for its activation (XLA, whose
    count this matches for ReLU, files tanh and sigmoid under transcendentals instead);
    other layers (BatchNorm, Dense subclasses, user layers) as XLA's cost analysis counts
    their ``apply`` on one sample, ``?`` where the backend gives no count. A training step costs about
    three forward passes: the backward pass of a Dense layer is two matmuls, ``δ @ wᵀ``
    for its input and ``xᵀ @ δ`` for ``w``, less the first where no trainable params
    come before the layer (the first layer needs no gradient for the data) and the
    second where the layer is frozen (within 1% of XLA's count for 784-128-64-10).

    Params are non-trainable when their layer has ``trainable = False``, or where its
    ``trainable_mask(params)`` (called with the params' shapes) returns False. State
    (BatchNorm's running statistics) is not params; its size has a line of its own.

    Args:
      net: the network.
      input_shape: one sample's shape, e.g. ``(28, 28)``; by default the first Dense's
        ``(in_features,)``.
      print_fn: where to write the table (``print``); pass ``lambda s: None`` to only get it.

    Returns:
      The table as a string.

    Example:
      >>> text = summary(mlp([784, 128, 64, 10]), print_fn=lambda s: None)
      >>> text.splitlines()[-3:-1]
      ['Forward FLOPs per sample: 218,762', 'Training step FLOPs per sample: 455,582 (forward + backward)']
    """
    if input_shape is None:
        if net.input_width is None:
            raise ValueError("summary needs input_shape= (one sample's shape) when the network does not start with Dense.")
        input_shape = (net.input_width,)
    params = jax.eval_shape(net.init, jax.random.key(0))
    state = net.init_state()
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    rows = [("Layer (type)", "Output shape", "Params", "FLOPs")]
    total = frozen = forward = skipped = 0  # skipped: backward matmuls that training does not need
    unknown, trained_before = False, False
    for name, layer in zip(net.names, net.layers):
        sub = Sequential([layer])
        p = {sub.names[0]: params[name]} if name in params else {}
        s = {sub.names[0]: state[name]} if name in state else {}
        run = lambda p, s, x, sub=sub: sub.apply_with_state(p, s, x)[0]
        count = _size(params.get(name, {}))
        layer_frozen = _non_trainable(name, layer, params.get(name, {}))
        if type(layer) is Dense:  # subclasses (LoRA, quantized) compute more or otherwise: XLA counts them
            flops = _dense_flops(layer, x.shape[1:])
        else:
            flops = 0 if isinstance(layer, Dropout | Flatten) else _xla_flops(run, p, s, x)
        if isinstance(layer, Dense):
            matmul = 2 * layer.in_features * layer.out_features * math.prod(x.shape[1:-1])
            skipped += matmul * ((not trained_before) + (not getattr(layer, "trainable", True)))
        x = jax.eval_shape(run, p, s, x)
        trained_before |= count > layer_frozen
        total += count
        frozen += layer_frozen
        forward += flops or 0
        unknown |= flops is None
        kind = type(layer).__name__ if not isinstance(layer, FunctionLayer) else "function"
        rows.append((f"{name} ({kind})", str((None, *x.shape[1:])), f"{count:,}", "?" if flops is None else f"{flops:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = "-" * (sum(widths) + 9)
    fmt = lambda r: f"{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]:>{widths[2]}}   {r[3]:>{widths[3]}}"  # noqa: E731
    totals = [f"Total params: {total:,}", f"Trainable params: {total - frozen:,}", f"Non-trainable params: {frozen:,}"]
    if state:
        totals.append(f"State (not params, not trained by gradients): {_size(state):,}")
    without = " (without the layers marked ?)" if unknown else ""
    totals.append(f"Forward FLOPs per sample: {forward:,}{without}")
    totals.append(f"Training step FLOPs per sample: {3 * forward - skipped:,} (forward + backward){without}")
    text = "\n".join([line, fmt(rows[0]), line, *map(fmt, rows[1:]), line, *totals, line])
    print_fn(text)
    return text
