"""The update: an optax optimizer for a network's params, with each layer's L2 term.

L2 convention: a layer with ``lambda_`` adds ``(lambda_/2)·||w||²`` to the loss, so its
gradient gains ``lambda_·w`` (as ``optax.add_decayed_weights`` and PyTorch's
``weight_decay``); biases and BatchNorm params are never decayed. By default the term
is *coupled*: added to the gradient before the optimizer scales it, which is the same as
penalizing the loss. ``decoupled=True`` adds it after the optimizer's scaling and
before the learning rate (AdamW, Loshchilov & Hutter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from jdense.network import Sequential

_SCALERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda: optax.identity(),
    "momentum": lambda momentum=0.9, nesterov=False: optax.trace(decay=momentum, nesterov=nesterov),
    "rmsprop": lambda decay=0.9, eps=1e-8: optax.scale_by_rms(decay=decay, eps=eps),
    "adam": lambda b1=0.9, b2=0.999, eps=1e-8: optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
    "adamw": lambda b1=0.9, b2=0.999, eps=1e-8: optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
}
OPTIMIZERS = tuple(_SCALERS)


def _l2_terms(net: Sequential, only: Callable[[str], bool] = lambda name: True) -> list[optax.GradientTransformation]:
    """One ``optax.add_decayed_weights`` per distinct lambda_, masked to those layers' ``w``."""
    groups: dict[float, set[str]] = {}
    for name, layer in zip(net.names, net.layers):
        lam = float(getattr(layer, "lambda_", 0.0))
        if lam > 0 and only(name):
            groups.setdefault(lam, set()).add(name)

    def mask_for(names):
        def mask(params):
            return {
                layer: jax.tree_util.tree_map_with_path(
                    lambda path, _: layer in names and getattr(path[-1], "key", None) == "w", sub
                )
                for layer, sub in params.items()
            }

        return mask

    return [optax.add_decayed_weights(lam, mask=mask_for(names)) for lam, names in groups.items()]


def optimizer(
    net: Sequential,
    base: str | optax.GradientTransformation = "adam",
    learning_rate: float | optax.Schedule = 1e-3,
    *,
    decoupled: bool = False,
    clip_norm: float | None = None,
    **base_kwargs: Any,
) -> optax.GradientTransformation:
    """An optax transformation for ``net``'s params with every layer's L2 term.

    Args:
      net: the network whose layers carry ``lambda_`` and optional ``optimizer``.
      base: ``"sgd"``, ``"momentum"``, ``"rmsprop"``, ``"adam"``, ``"adamw"`` (Adam with
        decoupled decay) or any optax transformation (which then includes its own
        learning rate, and ``learning_rate`` is unused).
      learning_rate: a float or an optax schedule (step -> rate).
      decoupled: add the L2 term after the optimizer's scaling (AdamW style) instead of
        to the gradient. Needs a named ``base``. A layer with its own optimizer always
        gets the coupled term.
      clip_norm: if given, clip the gradient's global norm first (``optax.clip_by_global_norm``).
      **base_kwargs: passed to the named base, e.g. ``b1=0.9`` for adam or ``momentum=0.95``.

    Returns:
      An ``optax.GradientTransformation``; a layer's own ``optimizer`` replaces the base
      for that layer (``optax.multi_transform``).

    Example:
      >>> net = jdense.mlp([4, 8, 1], lambda_=1e-4)
      >>> tx = optimizer(net, "adam", 1e-3)
      >>> opt_state = tx.init(net.init(jax.random.key(0)))
    """
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a jdense.Sequential (from Sequential([...]) or mlp([...])), got {type(net).__name__}.")
    named = isinstance(base, str)
    if named and base not in _SCALERS:
        valid = ", ".join(map(repr, OPTIMIZERS))
        raise ValueError(f"unknown optimizer {base!r}; expected one of {valid} or an optax transformation.")
    if not named and not isinstance(base, optax.GradientTransformation):
        raise TypeError(f"base must be a name or an optax.GradientTransformation, got {base!r}.")
    if not named and (decoupled or base_kwargs):
        raise ValueError(
            "decoupled=True and optimizer keyword arguments need a named base such as 'adam'; with your own "
            "optax transformation, put optax.add_decayed_weights inside it yourself."
        )
    if not callable(learning_rate) and not (isinstance(learning_rate, int | float) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive float or an optax schedule, got {learning_rate!r}.")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm!r}.")
    decoupled = decoupled or base == "adamw"

    l2 = _l2_terms(net)
    if named:
        try:
            scaler = _SCALERS[base](**base_kwargs)
        except TypeError as err:
            raise TypeError(f"optimizer {base!r} does not take {sorted(base_kwargs)}: {err}") from err
        rate = optax.scale_by_learning_rate(learning_rate)
        base_tx = optax.chain(scaler, *l2, rate) if decoupled else optax.chain(scaler, rate)
    else:
        base_tx = base

    own = {name: layer.optimizer for name, layer in zip(net.names, net.layers) if getattr(layer, "optimizer", None)}
    if own:
        transforms = {"jdense_base": base_tx, **{f"own:{name}": tx for name, tx in own.items()}}

        def labels(params):
            return {
                layer: jax.tree.map(lambda _: f"own:{layer}" if layer in own else "jdense_base", sub)
                for layer, sub in params.items()
            }

        body = optax.multi_transform(transforms, labels)
        coupled_l2 = _l2_terms(net, only=own.__contains__) if decoupled else l2
        body = optax.chain(*coupled_l2, body) if coupled_l2 else body
    else:
        body = optax.chain(*l2, base_tx) if (l2 and not decoupled) else base_tx
    return optax.chain(optax.clip_by_global_norm(clip_norm), body) if clip_norm is not None else body
