"""The update: an optax optimizer for a network's params, with each layer's L2 and L1 terms.

L2 convention: a layer with ``lambda_`` adds ``(lambda_/2)·||w||²`` to the loss, so its
gradient gains ``lambda_·w`` (as ``optax.add_decayed_weights`` and PyTorch's
``weight_decay``); a layer with ``l1`` adds ``l1·Σ|w|``, so its gradient gains
``l1·sign(w)`` (Keras's ``regularizers.L1``). Biases and BatchNorm params are never
decayed. By default the terms are *coupled*: added to the gradient before the optimizer
scales it, which is the same as penalizing the loss. ``decoupled=True`` adds the L2 term
after the optimizer's scaling and before the learning rate (AdamW, Loshchilov & Hutter).

Hyperparameters are values, not constants: the learning rate, ``clip_norm`` and every
layer's ``lambda_`` and ``l1`` live in the optimizer state (``optax.inject_hyperparams``),
and optimizers of the same *structure* share one ``update`` function. So a compiled
training step serves every learning rate and every regularization strength, and
:func:`set_hyperparams` changes them between epochs without recompiling.

Layers whose params must not train (``trainable=False``, or a ``trainable_mask(params)``
method returning a tree of bools) get no update, no optimizer state and no decay
(``optax.multi_transform`` with ``optax.set_to_zero``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jdense import caches, checks
from jdense.network import Sequential

_SCALERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda: optax.identity(),
    "momentum": lambda momentum=0.9, nesterov=False: optax.trace(decay=momentum, nesterov=nesterov),
    "rmsprop": lambda decay=0.9, eps=1e-8: optax.scale_by_rms(decay=decay, eps=eps),
    "adam": lambda b1=0.9, b2=0.999, eps=1e-8: optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
    "adamw": lambda b1=0.9, b2=0.999, eps=1e-8: optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
}
OPTIMIZERS = tuple(_SCALERS)
_TRAIN, _FROZEN = "train", "frozen"


@dataclasses.dataclass(frozen=True)
class _Structure:
    """Everything that shapes the optimizer's update, and nothing that is only a value."""

    base: str | optax.GradientTransformation
    base_kwargs: tuple
    decoupled: bool
    clip: bool
    schedule: Callable | None
    penalized: tuple[str, ...]  # the layers with lambda_, in order: the entries of the lambda_ and l1 values
    l1: bool  # whether any layer has an L1 term (an extra pass over the weights, so only when used)
    own: tuple[tuple[str, optax.GradientTransformation], ...]
    frozen: tuple[tuple[str, Any], ...]  # (layer name, False or the layer with trainable_mask)


def _weight_mask(layer_name: str):
    def mask(params):
        return {
            name: jax.tree_util.tree_map_with_path(
                lambda path, _: name == layer_name and getattr(path[-1], "key", None) == "w", sub
            )
            for name, sub in params.items()
        }

    return mask


def _add_l1(strength, mask) -> optax.GradientTransformation:
    """``g + strength·sign(w)`` on the masked leaves (optax has the L2 term, not this one)."""

    def update(updates, state, params):
        return jax.tree.map(lambda g, w: g + strength * jnp.sign(w).astype(g.dtype), updates, params), state

    return optax.masked(optax.GradientTransformation(lambda _: optax.EmptyState(), update), mask)


def _l2_terms(s: _Structure, lambda_, only: Callable[[str], bool] = lambda _: True) -> list:
    """Per layer: ``optax.add_decayed_weights(lambda_[i])`` masked to its ``w``."""
    return [optax.add_decayed_weights(lambda_[i], mask=_weight_mask(name)) for i, name in enumerate(s.penalized) if only(name)]


def _l1_terms(s: _Structure, l1) -> list:
    return [_add_l1(l1[i], _weight_mask(name)) for i, name in enumerate(s.penalized)]


def _labels(s: _Structure, params):
    """multi_transform labels: "frozen", "own:<layer>" or "train" for every leaf."""
    frozen, own = dict(s.frozen), dict(s.own)

    def label(name, sub):
        if name in frozen:
            layer = frozen[name]
            if layer is False:
                return jax.tree.map(lambda _: _FROZEN, sub)
            return jax.tree.map(lambda t: _TRAIN if t else _FROZEN, layer.trainable_mask(sub))
        return jax.tree.map(lambda _: f"own:{name}" if name in own else _TRAIN, sub)

    return {name: label(name, sub) for name, sub in params.items()}


def _factory(s: _Structure):
    """The transformation as a function of its values, for ``optax.inject_hyperparams``."""

    def make(learning_rate, clip_norm=None, lambda_=None, l1=None):
        own = dict(s.own)
        if isinstance(s.base, str):
            scaler = _SCALERS[s.base](**dict(s.base_kwargs))
            decayed = _l2_terms(s, lambda_) if s.decoupled else []
            base_tx = optax.chain(scaler, *decayed, optax.scale_by_learning_rate(learning_rate))
        else:
            base_tx = s.base
        # Coupled terms: L1 always; L2 unless decoupled, where only layers with their own optimizer get it.
        coupled = _l2_terms(s, lambda_, own.__contains__ if s.decoupled else (lambda _: True))
        coupled += _l1_terms(s, l1) if s.l1 else []
        if own or s.frozen:
            transforms = {_TRAIN: base_tx, _FROZEN: optax.set_to_zero(), **{f"own:{n}": tx for n, tx in own.items()}}
            body = optax.multi_transform(transforms, functools.partial(_labels, s))
            if coupled:  # the penalties go before the partition, but never onto frozen leaves
                body = optax.chain(optax.masked(optax.chain(*coupled), _trainable_mask(s)), body)
        else:
            body = optax.chain(*coupled, base_tx) if coupled else base_tx
        return optax.chain(optax.clip_by_global_norm(clip_norm), body) if s.clip else body

    return make


def _trainable_mask(s: _Structure):
    return lambda params: jax.tree.map(lambda label: label != _FROZEN, _labels(s, params))


@dataclasses.dataclass(frozen=True)
class _Program:
    """The shared, compiled part of every optimizer of one structure."""

    tx: optax.GradientTransformation  # built with placeholder values; only its structure matters
    init: Callable  # jitted (params, hyperparams) -> state


def _placeholders(s: _Structure) -> dict[str, Any]:
    values: dict[str, Any] = {"learning_rate": s.schedule if s.schedule is not None else 1e-3}
    if s.clip:
        values["clip_norm"] = 1.0
    if s.penalized:
        values["lambda_"] = np.zeros(len(s.penalized), np.float32)
    if s.l1:
        values["l1"] = np.zeros(len(s.penalized), np.float32)
    return values


def _build(s: _Structure) -> _Program:
    tx = optax.inject_hyperparams(_factory(s), hyperparam_dtype=jnp.float32)(**_placeholders(s))

    def init(params, hyperparams):
        return with_values(tx.init(params), hyperparams)

    return _Program(tx, jax.jit(init))


_program = caches.cached(_build, maxsize=128)


def with_values(state, hyperparams: dict):
    """``state`` (of a :func:`optimizer`) with these hyperparameter values (arrays or numbers)."""
    return state._replace(hyperparams={**state.hyperparams, **hyperparams})


@dataclasses.dataclass(frozen=True, eq=False)
class OptimizerInit:
    """The ``init`` of a :func:`optimizer`: the structure's compiled init with this optimizer's values.

    Attributes:
      program: the :class:`_Program` shared by every optimizer of this structure.
      hyperparams: this optimizer's values, ``{"learning_rate": 1e-3, "lambda_/dense_0": 1e-4, ...}``.
    """

    program: _Program
    hyperparams: dict[str, float]

    def __call__(self, params):
        return self.program.init(params, host_values(self.hyperparams))


def host_values(hyperparams: dict[str, Any]) -> dict[str, np.ndarray]:
    """Hyperparameter values as float32 NumPy arrays: one dtype, so no value ever recompiles."""
    return {k: np.asarray(v, np.float32) for k, v in hyperparams.items()}


def _number(name: str, value, *, positive: bool) -> float:
    """A finite real (NumPy scalars and 0-d arrays included), > 0 or >= 0; else a clear error."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} float, got {checks.short(value)}.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite {'positive' if positive else 'non-negative'} float, got {checks.short(value)}.")
    return value


def optimizer(
    net: Sequential,
    base: str | optax.GradientTransformation = "adam",
    learning_rate: float | optax.Schedule = 1e-3,
    *,
    decoupled: bool = False,
    clip_norm: float | None = None,
    **base_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """An optax transformation for ``net``'s params with every layer's L2 and L1 terms.

    The learning rate, ``clip_norm`` and the layers' ``lambda_``/``l1`` are values in the
    optimizer state, so optimizers that differ only in them share one compiled training
    step (see :func:`hyperparams` and :func:`set_hyperparams`).

    Args:
      net: the network whose layers carry ``lambda_``, ``l1``, ``trainable`` and optional
        ``optimizer``.
      base: ``"sgd"``, ``"momentum"``, ``"rmsprop"``, ``"adam"``, ``"adamw"`` (Adam with
        decoupled decay) or any optax transformation (which then includes its own
        learning rate, and ``learning_rate`` is unused).
      learning_rate: a positive float or an optax schedule (step -> rate).
      decoupled: add the L2 term after the optimizer's scaling (AdamW style) instead of
        to the gradient. Needs a named ``base``. A layer with its own optimizer always
        gets the coupled term; L1 is always coupled.
      clip_norm: if given, clip the gradient's global norm first (``optax.clip_by_global_norm``).
      **base_kwargs: passed to the named base, e.g. ``b1=0.9`` for adam or ``momentum=0.95``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; a layer's own ``optimizer`` replaces the
      base for that layer (``optax.multi_transform``), frozen params get no update.

    Raises:
      ValueError, TypeError: for an unknown base, a learning rate or ``clip_norm`` that is
        not a finite positive number, keywords the base does not take.

    Example:
      >>> net = jdense.mlp([4, 8, 1], lambda_=1e-4)
      >>> tx = optimizer(net, "adam", 1e-3)
      >>> opt_state = tx.init(net.init(jax.random.key(0)))
      >>> jdense.hyperparams(opt_state)["learning_rate"]
      0.001
    """
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a jdense.Sequential (from Sequential([...]) or mlp([...])), got {type(net).__name__}.")
    named = isinstance(base, str)
    if named:
        checks.choice("optimizer", base, OPTIMIZERS, also="an optax transformation")
    if not named and not isinstance(base, optax.GradientTransformation):
        raise TypeError(f"base must be a name or an optax.GradientTransformation, got {checks.short(base)}.")
    if not named and (decoupled or base_kwargs):
        raise ValueError(
            "decoupled=True and optimizer keyword arguments need a named base such as 'adam'; with your own "
            "optax transformation, put optax.add_decayed_weights inside it yourself."
        )
    if not callable(learning_rate):
        try:
            learning_rate = _number("learning_rate", learning_rate, positive=True)
        except ValueError:
            raise ValueError(
                f"learning_rate must be a positive float or an optax schedule, got {checks.short(learning_rate)}; e.g. 1e-3."
            ) from None
    if clip_norm is not None:
        try:
            clip_norm = _number("clip_norm", clip_norm, positive=True)
        except ValueError:
            raise ValueError(f"clip_norm must be > 0 or None, got {checks.short(clip_norm)}; e.g. clip_norm=1.0.") from None
    if named:
        try:
            _SCALERS[base](**base_kwargs)
        except TypeError as err:
            raise TypeError(f"optimizer {checks.short(base)} does not take {sorted(base_kwargs)}: {err}") from err

    penalized = tuple(name for name, layer in zip(net.names, net.layers) if hasattr(layer, "lambda_"))
    layers = dict(zip(net.names, net.layers))
    values: dict[str, Any] = {}
    if penalized:
        values["lambda_"] = [float(layers[name].lambda_) for name in penalized]
    if any(getattr(layers[name], "l1", 0.0) for name in penalized):
        values["l1"] = [float(getattr(layers[name], "l1", 0.0)) for name in penalized]
    frozen = tuple(
        (name, False if getattr(layer, "trainable", True) is False else layer)
        for name, layer in zip(net.names, net.layers)
        if getattr(layer, "trainable", True) is False or callable(getattr(layer, "trainable_mask", None))
    )
    own = tuple((name, layer.optimizer) for name, layer in zip(net.names, net.layers) if getattr(layer, "optimizer", None))
    structure = _Structure(
        base=base, base_kwargs=tuple(sorted(base_kwargs.items())), decoupled=decoupled or base == "adamw",
        clip=clip_norm is not None, schedule=learning_rate if callable(learning_rate) else None,
        penalized=penalized, l1="l1" in values, own=own, frozen=frozen,
    )
    try:
        program = _program(structure)
    except TypeError:  # an unhashable keyword or layer: build it for this optimizer alone
        program = _build(structure)
    if not callable(learning_rate):
        values["learning_rate"] = learning_rate
    if clip_norm is not None:
        values["clip_norm"] = clip_norm
    return optax.GradientTransformationExtraArgs(OptimizerInit(program, values), program.tx.update)


def hyperparams(opt_state) -> dict[str, Any]:
    """The current hyperparameter values of a :func:`optimizer`'s state.

    Returns:
      ``{"learning_rate": float, "clip_norm": float, "lambda_": [one per layer], "l1": [...]}``
      (``clip_norm`` and ``l1`` only when the optimizer has them; ``lambda_`` and ``l1``
      list the layers that have ``lambda_``, in order). For a population's state
      (:func:`jdense.fit_population`) every value has one more level, one entry per member:
      ``{"learning_rate": [member 0's, ...], "lambda_": [[member 0's per layer], ...]}``.

    Example:
      >>> jdense.hyperparams(result.opt_state)
      {'lambda_': [0.0001, 0.0001, 0.0001], 'learning_rate': 0.001}
    """
    hp = getattr(opt_state, "hyperparams", None)
    if not isinstance(hp, dict):
        raise TypeError(
            "hyperparams needs the state of a jdense.optimizer (its learning rate and L2/L1 strengths live there); "
            f"got {type(opt_state).__name__}. With your own optax transformation, wrap it in optax.inject_hyperparams."
        )
    def readable(v):  # float32 values as their shortest decimal (0.001, not 0.0010000000474974513), nested per axis
        a = np.asarray(v, np.float32)
        return float(str(a)) if a.ndim == 0 else [readable(x) for x in a]

    return {k: readable(v) for k, v in sorted(hp.items())}


def _member_values(name: str, value, shape: tuple) -> np.ndarray:
    """A population's ``name`` values of ``shape`` ((N,) or (N, layers)) from one value for all or one per member."""
    positive = name in ("learning_rate", "clip_norm")
    per_member = isinstance(value, list | tuple) or (isinstance(value, np.ndarray) and value.ndim > 0)
    if per_member and len(value) != shape[0]:
        raise ValueError(f"{name} of a population needs one value for all members or one per member ({shape[0]}), "
                         f"got {len(value)}.")
    items = list(value) if per_member else [value] * shape[0]
    out = np.empty(shape, np.float32)
    for i, item in enumerate(items):
        if len(shape) == 1:
            out[i] = _number(f"{name} (member {i})", item, positive=positive)
            continue
        per_layer = isinstance(item, list | tuple) or (isinstance(item, np.ndarray) and item.ndim > 0)
        layers = list(item) if per_layer else [item] * shape[1]
        if len(layers) != shape[1]:
            raise ValueError(f"{name} of member {i} needs one value per layer ({shape[1]}), got {len(layers)}.")
        out[i] = [_number(f"{name} (member {i})", v, positive=positive) for v in layers]
    return out


def set_hyperparams(opt_state, **values: Any):
    """A copy of ``opt_state`` with new hyperparameter values; nothing recompiles.

    Args:
      opt_state: the state of a :func:`optimizer` (e.g. ``result.opt_state``), or a
        population's (``pop.opt_state``).
      **values: ``learning_rate=``, ``clip_norm=``, and ``lambda_=`` / ``l1=`` as one
        number for every layer or a sequence with one per layer (see :func:`hyperparams`).
        For a population: one number for every member, or a sequence with one per member
        (for ``lambda_``/``l1`` each entry is a number or a list with one per layer).

    Raises:
      TypeError: if the state is not a jdense optimizer's.
      ValueError: for an unknown name, a scheduled learning rate, or a value that is not
        a finite number (> 0 for the learning rate and clip_norm, >= 0 for the penalties).

    Example:
      >>> opt_state = jdense.set_hyperparams(result.opt_state, learning_rate=1e-4)
    """
    current = hyperparams(opt_state)
    scheduled = set(getattr(opt_state, "hyperparams_states", {}))
    members = np.shape(getattr(opt_state, "count", 0))  # (N,) for a population's state
    new = {}
    for name, value in values.items():
        if name not in current or name in scheduled:
            raise ValueError(
                f"cannot set {name!r}: this optimizer's values are {sorted(set(current) - scheduled)}"
                + (f"; {sorted(scheduled)} follow a schedule" if scheduled else "") + "."
            )
        shape = np.shape(current[name])
        if members:  # a population: one value for all members or one per member, each checked
            new[name] = _member_values(name, value, shape)
        elif shape:  # per layer: one number for all, or one each
            items = list(value) if isinstance(value, list | tuple | np.ndarray) else [value] * shape[0]
            if len(items) != shape[0]:
                raise ValueError(f"{name} needs one value per layer ({shape[0]}), got {len(items)}.")
            new[name] = [_number(name, v, positive=False) for v in items]
        else:
            new[name] = _number(name, value, positive=name in ("learning_rate", "clip_norm"))
    return with_values(opt_state, {k: jax.device_put(v) for k, v in host_values(new).items()})
