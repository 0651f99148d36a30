"""Networks built from layers: :class:`Sequential`, the :func:`mlp` shorthand and :func:`summary`."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdense import caches, checks, dense
from jdense.layers import Activation, BatchNorm, Dense, Dropout, Flatten, FunctionLayer, Layer, as_layer

Params = dict[str, Any]
State = dict[str, Any]

_LAYER_TYPES = {cls.__name__: cls for cls in (Dense, Flatten, Dropout, BatchNorm, Activation)}


def register_layer(cls: type) -> type:
    """Let :meth:`Sequential.to_config`/:meth:`Sequential.from_config` name a layer class.

    The class must be a dataclass whose fields are names and numbers (its config is
    ``{"type": cls.__name__, **fields}``); returns ``cls``, so it works as a decorator.

    Raises:
      TypeError: ``cls`` is not a dataclass.
      ValueError: another class is registered under the same name.

    Example:
      >>> @register_layer
      ... @dataclasses.dataclass(frozen=True)
      ... class Scale:
      ...     factor: float = 2.0
      ...     def init(self, key): return {}
      ...     def apply(self, params, x): return self.factor * x
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_layer takes a dataclass layer class, got {checks.short(cls)}; decorate it with @dataclasses.dataclass.")
    known = _LAYER_TYPES.get(cls.__name__)
    same = known is not None and (known.__module__, known.__qualname__) == (cls.__module__, cls.__qualname__)
    if known is not None and not same:  # the same class again (e.g. a reloaded module) replaces itself
        raise ValueError(f"a layer class named {cls.__name__!r} is already registered ({known!r}); rename yours.")
    _LAYER_TYPES[cls.__name__] = cls
    return cls


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
            elif not isinstance(layer, Dropout | Activation):
                previous = None  # unknown width after a user layer or Flatten

    # -- construction -------------------------------------------------------
    def init(self, key: jax.Array) -> Params:
        """Trainable params of every layer, ``{name: layer_params}``; one key per layer.

        Compiled as one XLA program (eagerly, each initializer's ops would compile one by one)
        when every layer is hashable; a user layer that is not (e.g. a plain ``@dataclass``)
        is initialized eagerly instead.

        Raises:
          ValueError: before anything is allocated, when a layer's params (or all of them
            together) would not fit in the default device's memory; the error names the
            layer, its bytes and the device's capacity.
        """
        shapes = self._param_shapes()  # refuses a layer too large for the device
        largest = max(shapes, key=lambda name: checks.nbytes(shapes[name]))
        detail = f"{len(self.layers)} layers, the largest {largest}"
        checks.fits_device("this network", checks.nbytes(shapes), detail)
        try:
            program = _init_program(structure(self, "init"))
        except TypeError:
            return self._init(key)
        return program(key)

    def _param_shapes(self) -> dict[str, Any]:
        """Each layer's params as ``jax.ShapeDtypeStruct`` leaves (None where a user layer cannot be traced).

        Derived from static shapes (``jax.eval_shape`` for layers other than Dense: traced,
        never compiled) and cached per network. Raises for a layer too large for the device.
        """
        try:
            return _param_shapes(self)
        except TypeError:  # an unhashable user layer
            return _param_shapes.__wrapped__(self)

    def check_params(self, params: Any, what: str = "apply") -> None:
        """Refuse params that were not made for this network, before any compute.

        Compares the params' tree (layer names and keys) and every leaf's shape and
        kind of dtype (floating, integer, ...) with what :meth:`init` makes, derived
        from static shapes (cached per network), so it is cheap enough for every call.

        Args:
          params: the params to check (``net.init(key)``'s output, or trained params).
          what: the operation that received them, for the message (``"fit"``, ...).

        Raises:
          TypeError: ``params`` is not a dict (e.g. a list, or a PRNG key passed in its place).
          ValueError: a layer's params are missing or extra, or a leaf has another shape
            or kind of dtype; the error names the first such leaf and the shape expected.

        Example:
          >>> net = mlp([4, 8, 3])
          >>> net.check_params(mlp([4, 5, 9]).init(jax.random.key(0)))
          Traceback (most recent call last):
          ValueError: apply: params do not fit this network: params['dense_0']['b'] has shape (5,) float32 but this
          network expects (8,) float32; ...
        """
        if _is_key(params):
            raise TypeError(
                f"{what}: params must be the dict from net.init(key); got a PRNG key ({_describe(params)}) "
                "— did you swap the arguments?"
            )
        if not isinstance(params, Mapping):
            raise TypeError(
                f"{what}: params must be the dict from net.init(key) (one entry per layer with params, e.g. "
                f"'dense_0'); got {_describe(params) if hasattr(params, 'shape') else type(params).__name__}."
            )
        if (problem := mismatch(self, params)) is not None:
            raise ValueError(
                f"{what}: params do not fit this network: {problem}; pass the params this network's init made "
                "(or that fit returned for it), or build the network they belong to."
            )

    def check_input(self, shape: tuple, what: str = "apply") -> None:
        """Refuse inputs of ``shape`` that a layer cannot take, naming the layer and the caller's shape.

        Follows the widths through Dense, BatchNorm, Dropout and Flatten layers on static
        shapes (nothing traced); stops at the first user layer, whose width it cannot know.

        Raises:
          ValueError: e.g. ``fit: x has shape (569, 30) (30 features per sample) but dense_0 expects 64``.
        """
        shape = tuple(shape)
        current = shape
        for i, (name, layer) in enumerate(zip(self.names, self.layers)):
            width = layer.in_features if isinstance(layer, Dense) else layer.features if isinstance(layer, BatchNorm) else None
            field = "in_features" if isinstance(layer, Dense) else "features"
            if width is not None and (len(current) < 2 or current[-1] != width):
                given = f"{current[-1]} features per sample" if len(current) >= 2 else "no feature axis"
                if i == 0 or current == shape:
                    fix = (f"build the network for {current[-1]} inputs (e.g. mlp([{current[-1]}, ...])) or pass x with "
                           f"{width} features" if len(current) >= 2 else f"pass x of shape (samples, {width})")
                    raise ValueError(f"{what}: x has shape {shape} ({given}) but {name} ({type(layer).__name__}) expects "
                                     f"{width} input features ({field}={width}); {fix}.")
                raise ValueError(f"{what}: x of shape {shape} reaches {name} ({type(layer).__name__}) as {current}, but "
                                 f"{name} expects {width} input features ({field}={width}); make it take the width of "
                                 "the layer before it.")
            if isinstance(layer, Dense):
                current = (*current[:-1], layer.out_features)
            elif isinstance(layer, Flatten):
                current = (*current[:layer.start_axis], math.prod(current[layer.start_axis:]))
            elif not isinstance(layer, Dropout | BatchNorm | Activation):
                return

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
                if isinstance(layer, Dense) and (jnp.ndim(x) == 0 or jnp.shape(x)[-1] != layer.in_features):
                    raise ValueError(f"{name} expects inputs of width {layer.in_features} on the last axis, but the "
                                     f"{'input' if i == 0 else 'layer before it gives'} {jnp.shape(x)}; make the widths equal.")
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
        self.check_params(params, "apply")
        self.check_input(np.shape(checks.numeric_array("x", x, "apply")), "apply")
        if not isinstance(state, Mapping):
            raise TypeError(
                f"apply: state must be the dict from net.init_state() (or fit's result.state); got "
                f"{type(state).__name__}."
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
            if not isinstance(layer, Dropout | Activation):
                return None
        return None

    @property
    def output_width(self) -> int | None:
        """out_features of the last Dense layer when nothing after it changes the width."""
        for layer in reversed(self.layers):
            if isinstance(layer, Dense):
                return layer.out_features
            if not isinstance(layer, Dropout | BatchNorm | Activation):
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
                    raise TypeError(f"{name}.{field.name} is {checks.short(value)}; only names can go in a config.")
                cfg[field.name] = value
            layers.append(cfg)
        return {"layers": layers}

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        """Rebuild a network from :meth:`to_config`'s output."""
        try:
            specs = config["layers"]
            for c in specs:
                if isinstance(c.get("type"), str) and c["type"] not in _LAYER_TYPES:
                    try:
                        checks.choice("layer kind", c["type"], _LAYER_TYPES, also="a class registered with jdense.register_layer")
                    except ValueError as err:
                        raise ValueError(f"not a jdense network config: {err}") from None
            return cls([_LAYER_TYPES[c["type"]](**{k: v for k, v in c.items() if k != "type"}) for c in specs])
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a jdense network config: {checks.short(config)} ({err}).") from err


def structure(net: Sequential, program: str) -> Sequential:
    """``net`` with only what shapes ``program`` (``"init"`` or ``"training"``): networks with one structure share it.

    Each layer field declared with :func:`jdense.layers.field` and not shaping ``program``
    is set to its neutral value (e.g. ``lambda_`` to 0: the optimizer reads it, no
    compiled program does); other fields, and layers that are not dataclasses, are kept.
    """
    def strip(layer):
        if not dataclasses.is_dataclass(layer):
            return layer
        changes = {f.name: f.metadata["neutral"] for f in dataclasses.fields(layer)
                   if "shapes" in f.metadata and program not in f.metadata["shapes"]
                   and getattr(layer, f.name) != f.metadata["neutral"]}
        return dataclasses.replace(layer, **changes) if changes else layer

    return Sequential([strip(layer) for layer in net.layers])


@caches.cached
def _init_program(net: Sequential):
    """``Sequential.init`` of this structure as one compiled program (cached; see ``jdense.clear_cache``)."""
    return jax.jit(net._init)


@functools.lru_cache(maxsize=64)
def _param_shapes(net: Sequential) -> dict[str, Any]:
    out = {}
    for name, layer in zip(net.names, net.layers):
        if type(layer) is Dense:  # no tracing: its initializer costs ~10 ms to trace (subclasses may add params)
            out[name] = dense.param_shapes(layer.in_features, layer.out_features, use_bias=layer.use_bias, dtype=layer.dtype)
        else:
            try:
                out[name] = jax.eval_shape(lambda layer=layer: layer.init(jax.random.key(0)))
            except Exception:
                if type(layer).__name__ in _LAYER_TYPES:
                    raise
                out[name] = None  # a user layer whose init needs concrete values
        checks.params_fit_device(name, out[name])
    return out


def mismatch(net: Sequential, params: Mapping[str, Any]) -> str | None:
    """How ``params`` differ from what ``net.init`` makes (the first difference), or None."""
    shapes = net._param_shapes()
    for name, expected in shapes.items():
        got = params.get(name)
        if not jax.tree.leaves(expected) and not jax.tree.leaves(got):
            continue
        if got is None:
            with_params = _listing(n for n, t in shapes.items() if jax.tree.leaves(t))
            return f"params has no {name!r} (the network's layers with params are {with_params})"
        if expected is None:  # a user layer whose params cannot be described abstractly
            continue
        want = dict(jax.tree_util.tree_flatten_with_path({name: expected})[0])
        have = dict(jax.tree_util.tree_flatten_with_path({name: got})[0])
        for path in have:
            if path not in want:
                return f"{_where(path)} is not a param of this network ({name} has {_listing(map(_where, want))})"
        for path, spec in want.items():
            if path not in have:
                return f"{_where(path)} is missing (expected shape {spec.shape} {spec.dtype})"
            shape, dtype = _shape_dtype(have[path])
            if shape != spec.shape or _kind(dtype) != _kind(spec.dtype):
                return f"{_where(path)} has shape {shape} {dtype} but this network expects {spec.shape} {spec.dtype}"
    extra = [
        repr(name) for name in params
        if jax.tree.leaves(params[name]) and (name not in shapes or (shapes[name] is not None and not jax.tree.leaves(shapes[name])))
    ]
    if extra:
        return f"params has {_listing(extra)}, which this network has no params for (its layers are {_listing(net.names)})"
    return None


def _is_key(x: Any) -> bool:
    """A typed PRNG key, or a raw ``uint32`` key of shape ``(2,)`` (``jax.random.PRNGKey``)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return False
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return True
    return dtype == jnp.uint32 and jnp.shape(x) == (2,)


def _describe(x: Any) -> str:
    return f"an array of shape {jnp.shape(x)} and dtype {x.dtype}"


def _shape_dtype(leaf: Any) -> tuple[tuple, Any]:
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), leaf.dtype
    arr = np.asarray(leaf)
    return arr.shape, arr.dtype


def _kind(dtype: Any) -> str:
    for kind in (jnp.floating, jnp.complexfloating, jnp.integer, jnp.bool_):
        if jnp.issubdtype(dtype, kind):
            return kind.__name__
    return str(dtype)


def _where(path: tuple) -> str:
    return f"params{jax.tree_util.keystr(path)}"


def _listing(names) -> str:
    names = list(names)
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "") if names else "none"


def mlp(
    sizes: Sequence[int],
    activation: str | Any = "relu",
    output_activation: str | Any = None,
    *,
    initializer: str | Any = "auto",
    lambda_: float = 0.0,
    l1: float = 0.0,
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
      l1: L1 strength on every layer's weights.
      dropout: if > 0, a Dropout with this rate after each hidden layer.
      batch_norm: if True, a BatchNorm after each hidden layer (before dropout).
      use_bias, dtype: passed to every Dense.

    Example:
      >>> net = mlp([784, 128, 64, 10], lambda_=1e-4)
      >>> [layer.out_features for layer in net.layers]
      [128, 64, 10]
    """
    if isinstance(sizes, str | int) or not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, e.g. [64, 32, 10]; got {checks.short(sizes)}.")
    for s in sizes:
        checks.positive_int("every entry of sizes", s)
    layers: list[Any] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(
            Dense(n_in, n_out, output_activation if last else activation, initializer,
                  lambda_=lambda_, l1=l1, use_bias=use_bias, dtype=dtype)
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
                            f"(or a prefix of them), got a leaf {checks.short(m)}.")
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
