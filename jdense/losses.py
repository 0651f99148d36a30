"""Losses by name over :mod:`optax.losses`, each with sample and class weights.

Every loss takes the network's raw outputs (logits for the classification losses)
and returns the weighted mean over the batch,
``Σ_i w_i·ℓ_i / Σ_i w_i`` with ``w_i = sample_weight_i · class_weight[label_i]``
(the plain mean when no weights are given). ``per_sample`` gives the unreduced
``ℓ_i`` that :func:`jdense.fit` weights itself.

| name | targets | per-sample loss |
|---|---|---|
| ``"mse"`` | same shape as outputs | mean of ``optax.losses.squared_error`` over the features |
| ``"mae"`` | same shape as outputs | mean of ``|outputs − targets|`` over the features |
| ``"cross_entropy"`` | integer labels or one-hot / probabilities | ``optax.losses.softmax_cross_entropy[_with_integer_labels]`` |
| ``"binary_cross_entropy"`` | 0/1 labels, shape ``(N,)`` or ``(N, 1)`` | ``optax.losses.sigmoid_binary_cross_entropy`` |
| ``"kl_divergence"`` | probabilities | ``optax.losses.kl_divergence(log_softmax(outputs), targets)`` |
| ``"huber"`` | same shape as outputs | mean of ``optax.losses.huber_loss`` (``delta=1.0``) over the features |
| ``"log_cosh"`` | same shape as outputs | mean of ``optax.losses.log_cosh`` over the features |
| ``"sigmoid_focal"`` | 0/1 labels, like binary | mean of ``optax.losses.sigmoid_focal_loss`` (``gamma=2.0, alpha=None``) |

A loss with parameters is named with them as a tuple, ``(name, *params)`` in the
order above: ``("huber", 2.0)`` is Huber with ``delta=2.0``; ``("sigmoid_focal", 1.0, 0.25)``
is ``gamma=1.0, alpha=0.25``. The same name and parameters give the same function
object every time, so programs compiled for one fit are reused by the next.

Example:
  >>> per = per_sample(("huber", 2.0))
  >>> per is per_sample(("huber", 2)) and per_sample("huber") is per_sample(("huber", 1.0))
  True
  >>> # jdense.fit(..., loss=("huber", 2.0))
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jdense import checks

PerSampleLoss = Callable[[jax.Array, jax.Array], jax.Array]


def _match(outputs: jax.Array, targets: jax.Array, name: str) -> jax.Array:
    """Targets shaped like outputs; ``(N,)`` targets for ``(N, 1)`` outputs are accepted."""
    targets = jnp.asarray(targets)
    if outputs.ndim == targets.ndim + 1 and outputs.shape[-1] == 1:
        targets = targets[..., None]
    if outputs.shape != targets.shape:
        raise ValueError(
            f"{name}: outputs have shape {outputs.shape} but targets have shape {targets.shape}; "
            "they must match (or targets may drop a trailing axis of size 1)."
        )
    return targets.astype(outputs.dtype)


def _feature_mean(values: jax.Array) -> jax.Array:
    return values.reshape(values.shape[0], -1).mean(axis=-1) if values.ndim > 1 else values


def _mse(outputs, targets):
    return _feature_mean(optax.losses.squared_error(outputs, _match(outputs, targets, "mse")))


def _mae(outputs, targets):
    # optax has no absolute-error loss; this is its squared_error with abs in place of square.
    return _feature_mean(jnp.abs(outputs - _match(outputs, targets, "mae")))


def _is_integer_labels(outputs, targets) -> bool:
    targets = jnp.asarray(targets)
    return jnp.issubdtype(targets.dtype, jnp.integer) and targets.ndim == outputs.ndim - 1


def _cross_entropy(outputs, targets):
    targets = jnp.asarray(targets)
    if _is_integer_labels(outputs, targets):
        return optax.losses.softmax_cross_entropy_with_integer_labels(outputs, targets)
    if outputs.shape != targets.shape:
        raise ValueError(
            f"cross_entropy: outputs have shape {outputs.shape}; targets must be integer labels of shape "
            f"{outputs.shape[:-1]} or one-hot of shape {outputs.shape}, got {targets.shape} ({targets.dtype})."
        )
    return optax.losses.softmax_cross_entropy(outputs, targets.astype(outputs.dtype))


def _binary_cross_entropy(outputs, targets):
    return _feature_mean(
        optax.losses.sigmoid_binary_cross_entropy(outputs, _match(outputs, targets, "binary_cross_entropy"))
    )


def _kl_divergence(outputs, targets):
    targets = jnp.asarray(targets)
    if outputs.shape != targets.shape:
        raise ValueError(f"kl_divergence: outputs {outputs.shape} and target probabilities {targets.shape} must match.")
    return optax.losses.kl_divergence(jax.nn.log_softmax(outputs), targets.astype(outputs.dtype))


def _log_cosh(outputs, targets):
    return _feature_mean(optax.losses.log_cosh(outputs, _match(outputs, targets, "log_cosh")))


# Parameterised losses: one cached function per parameter value (same value, same object).
@functools.cache
def _huber(delta: float) -> PerSampleLoss:
    def huber(outputs, targets):
        return _feature_mean(optax.losses.huber_loss(outputs, _match(outputs, targets, "huber"), delta=delta))

    return huber


@functools.cache
def _sigmoid_focal(gamma: float, alpha: float | None) -> PerSampleLoss:
    def sigmoid_focal(outputs, targets):
        labels = _match(outputs, targets, "sigmoid_focal")
        return _feature_mean(optax.losses.sigmoid_focal_loss(outputs, labels, alpha=alpha, gamma=gamma))

    return sigmoid_focal


def _delta(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"huber: {name} must be a finite number > 0, got {checks.short(value)}; e.g. (\"huber\", 1.0).")
    return float(value)


def _gamma(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ValueError(f"sigmoid_focal: {name} must be a finite number >= 0, got {checks.short(value)}; 2.0 is usual.")
    return float(value)


def _alpha(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"sigmoid_focal: {name} must be None or a weight in [0, 1] for class 1, got {checks.short(value)}.")
    return float(value)


# name -> (cached factory, ((parameter, default, check), ...)) in tuple order.
_PARAMETERISED = {
    "huber": (_huber, (("delta", 1.0, _delta),)),
    "sigmoid_focal": (_sigmoid_focal, (("gamma", 2.0, _gamma), ("alpha", None, _alpha))),
}

PER_SAMPLE: dict[str, PerSampleLoss] = {
    "mse": _mse,
    "mae": _mae,
    "cross_entropy": _cross_entropy,
    "binary_cross_entropy": _binary_cross_entropy,
    "kl_divergence": _kl_divergence,
    "huber": _huber(1.0),
    "log_cosh": _log_cosh,
    "sigmoid_focal": _sigmoid_focal(2.0, None),
}
CLASSIFICATION = frozenset({"cross_entropy", "binary_cross_entropy", "sigmoid_focal"})
REGRESSION = frozenset({"mse", "mae", "huber", "log_cosh"})

_SPEC_HELP = (
    "loss must be a name ({names}), a tuple (name, *params) such as (\"huber\", 2.0) or "
    "(\"sigmoid_focal\", 2.0, 0.25), or a callable (outputs, targets) -> per-sample losses; got {loss}."
)


def _params(loss: tuple) -> tuple[str, tuple]:
    """Validate a ``(name, *params)`` tuple; return the name and every parameter, defaults filled in."""
    if not loss or not isinstance(loss[0], str):
        raise TypeError(_SPEC_HELP.format(names=", ".join(map(repr, PER_SAMPLE)), loss=checks.short(loss)))
    name, values = loss[0], loss[1:]
    if name not in PER_SAMPLE:
        per_sample(name)  # raises the unknown-name error
    spec = _PARAMETERISED.get(name, (None, ()))[1]
    if len(values) > len(spec):
        takes = ", ".join(p for p, _, _ in spec) or "no parameters"
        raise ValueError(f"loss {name!r} takes {takes}; got {len(values)} values in {checks.short(loss)}.")
    values = values + tuple(default for _, default, _ in spec[len(values):])
    return name, tuple(check(p, v) for (p, _, check), v in zip(spec, values))


def per_sample(loss: str | tuple | PerSampleLoss) -> PerSampleLoss:
    """The unreduced loss ``(outputs, targets) -> (batch,)`` for a name, a ``(name, *params)`` tuple or a callable.

    The same name and parameters always give the same function object.

    Raises:
      ValueError: for an unknown name or a bad parameter.
      TypeError: for anything else.
    """
    if isinstance(loss, optax.GradientTransformation):  # a tuple too: caught before it is read as (name, *params)
        raise TypeError(f"loss got an optimizer ({checks.short(loss, 0)}); pass it as optimizer=, and loss= a name such as "
                        "'cross_entropy' or 'mse'.")
    if isinstance(loss, str):
        checks.choice("loss", loss, PER_SAMPLE,
                       also="a tuple (name, *params) or a callable (outputs, targets) -> per-sample losses")
        return PER_SAMPLE[loss]
    if isinstance(loss, tuple):
        name, values = _params(loss)
        return _PARAMETERISED[name][0](*values) if values else PER_SAMPLE[name]
    if callable(loss):
        return loss
    raise TypeError(_SPEC_HELP.format(names=", ".join(map(repr, PER_SAMPLE)), loss=checks.short(loss)))


def name_of(loss: str | tuple | PerSampleLoss) -> str | None:
    """The name of a loss given by name or ``(name, *params)``; ``None`` for a callable.

    Example:
      >>> name_of(("huber", 2.0)) in REGRESSION
      True
    """
    if isinstance(loss, tuple):
        return _params(loss)[0]
    per_sample(loss)  # validates
    return loss if isinstance(loss, str) else None


OUTPUTS = ("logits", "probabilities", "labels")
"""What :func:`jdense.predict` can return (``output=``)."""
PREDICT_HINTS = {
    name: "the output's link comes from the training loss: pass output='probabilities' (or 'labels') with "
          "loss='binary_cross_entropy' for a sigmoid, loss='cross_entropy' for a softmax."
    for name in ("activation", "final_activation", "output_activation", "apply_softmax", "apply_sigmoid")
}
"""Keywords of other libraries' predict that :func:`jdense.predict` spells as ``output=`` and ``loss=``."""
SOFTMAX = frozenset({"cross_entropy", "kl_divergence"})
"""Losses whose outputs are logits of a softmax (probabilities: ``jax.nn.softmax``)."""
SIGMOID = frozenset({"binary_cross_entropy", "sigmoid_focal"})
"""Losses whose outputs are logits of independent sigmoids (probabilities: ``jax.nn.sigmoid``)."""


def _labels(probabilities: jax.Array, sigmoid: bool) -> jax.Array:
    if not sigmoid:
        return jnp.argmax(probabilities, axis=-1).astype(jnp.int32)
    labels = (probabilities > 0.5).astype(jnp.int32)
    return labels[..., 0] if labels.shape[-1] == 1 else labels


def link(loss: str | tuple | Callable | None, output: str = "logits", what: str = "predict") -> Callable[[jax.Array], jax.Array]:
    """The function from a network's raw outputs to ``output`` for a network trained with ``loss``.

    ``"logits"``: the outputs as they are. ``"probabilities"``: softmax over the last axis for
    ``"cross_entropy"`` (and ``"kl_divergence"``), sigmoid for ``"binary_cross_entropy"`` (and
    ``"sigmoid_focal"``). ``"labels"``: the argmax of the softmax, or ``sigmoid > 0.5`` as int32
    (one output: shape ``(n,)``).

    Raises:
      ValueError: an unknown ``output``; probabilities or labels without ``loss``, for a
        regression loss, or for a callable loss.

    Example:
      >>> link("binary_cross_entropy", "labels")(jnp.asarray([[2.0], [-1.0]]))
      Array([1, 0], dtype=int32)
    """
    checks.choice("output", output, OUTPUTS)
    name = name_of(loss) if loss is not None else None  # validates the loss (with a suggestion for a typo)
    if output == "logits":
        return lambda outputs: outputs
    if loss is None:
        raise ValueError(f"{what}: output={output!r} needs loss= (the loss the network was trained with, e.g. "
                         "loss='cross_entropy' for softmax outputs, loss='binary_cross_entropy' for one sigmoid output).")
    if name is None or name not in SOFTMAX | SIGMOID:
        kind = "a callable loss" if name is None else f"{name!r}, a regression loss,"
        raise ValueError(f"{what}: output={output!r} needs a classification loss ('cross_entropy' or "
                         f"'binary_cross_entropy'); {kind} has no probabilities: its outputs are the predictions, "
                         "so use output='logits'.")
    sigmoid = name in SIGMOID
    to_probabilities = jax.nn.sigmoid if sigmoid else functools.partial(jax.nn.softmax, axis=-1)
    if output == "probabilities":
        return to_probabilities
    return lambda outputs: _labels(to_probabilities(outputs), sigmoid)


def labels_of(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Integer class of each sample: the label itself, the argmax of one-hot targets, or 0/1."""
    targets = jnp.asarray(targets)
    if _is_integer_labels(outputs, targets) or outputs.shape[-1] == 1 or outputs.ndim == 1:
        return targets.reshape(targets.shape[0]).astype(jnp.int32)
    return jnp.argmax(targets, axis=-1)


def sample_weights(
    outputs: jax.Array,
    targets: jax.Array,
    sample_weight: jax.typing.ArrayLike | None = None,
    class_weight: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Per-sample weights ``sample_weight · class_weight[label]`` (ones when both are None)."""
    w = jnp.ones((outputs.shape[0],), jnp.float32)
    if sample_weight is not None:
        w = w * jnp.asarray(sample_weight, jnp.float32).reshape(outputs.shape[0])
    if class_weight is not None:
        w = w * jnp.asarray(class_weight, jnp.float32)[labels_of(outputs, targets)]
    return w


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    """``Σ w·v / Σ w`` in float32 (0 when every weight is 0)."""
    values = values.astype(jnp.float32)
    return jnp.sum(weights * values) / jnp.maximum(jnp.sum(weights), jnp.finfo(jnp.float32).tiny)


def _weighted(fn: PerSampleLoss, outputs, targets, sample_weight, class_weight) -> jax.Array:
    outputs = jnp.asarray(outputs)
    return weighted_mean(fn(outputs, targets), sample_weights(outputs, targets, sample_weight, class_weight))


def _reduced(name: str) -> Callable[..., jax.Array]:
    fn = PER_SAMPLE[name]

    def loss(outputs, targets, *, sample_weight=None, class_weight=None):
        return _weighted(fn, outputs, targets, sample_weight, class_weight)

    loss.__name__ = name
    loss.__doc__ = (
        f"The {name} loss: weighted mean over the batch of the per-sample values (see jdense.losses).\n\n"
        "Args:\n  outputs: the network's outputs (logits for classification).\n  targets: see the module table.\n"
        "  sample_weight: optional (batch,) weights.\n  class_weight: optional (num_classes,) weights.\n\n"
        "Returns:\n  A float32 scalar."
    )
    return loss


mse = _reduced("mse")
mae = _reduced("mae")
cross_entropy = _reduced("cross_entropy")
binary_cross_entropy = _reduced("binary_cross_entropy")
kl_divergence = _reduced("kl_divergence")
log_cosh = _reduced("log_cosh")


def huber(outputs: jax.Array, targets: jax.Array, *, delta: float = 1.0,
          sample_weight: jax.typing.ArrayLike | None = None,
          class_weight: jax.typing.ArrayLike | None = None) -> jax.Array:
    """Huber loss: weighted batch mean of the feature mean of ``optax.losses.huber_loss``.

    Per element ``½d²`` for ``|d| ≤ delta`` and ``delta·(|d| − ½delta)`` beyond, with
    ``d = outputs − targets`` (Keras's ``Huber`` arithmetic).

    Args:
      outputs: the network's outputs.
      targets: same shape as outputs (or without a trailing axis of size 1).
      delta: where the loss turns from quadratic to linear, > 0.
      sample_weight: optional (batch,) weights.
      class_weight: optional (num_classes,) weights.

    Returns:
      A float32 scalar.

    Example:
      >>> float(huber(jnp.asarray([[3.0]]), jnp.asarray([[0.0]]), delta=1.0))
      2.5
    """
    return _weighted(per_sample(("huber", delta)), outputs, targets, sample_weight, class_weight)


def sigmoid_focal(outputs: jax.Array, targets: jax.Array, *, gamma: float = 2.0, alpha: float | None = None,
                  sample_weight: jax.typing.ArrayLike | None = None,
                  class_weight: jax.typing.ArrayLike | None = None) -> jax.Array:
    """Binary focal loss on logits (Lin et al. 2017), from ``optax.losses.sigmoid_focal_loss``.

    ``−α_t·(1 − p_t)^gamma·log p_t`` per output, averaged over the outputs: binary
    cross-entropy with the well-classified samples down-weighted.

    Args:
      outputs: logits, shape ``(N, 1)`` (or ``(N, k)`` for k independent labels).
      targets: 0/1 labels shaped like outputs (or ``(N,)`` for ``(N, 1)`` outputs).
      gamma: focusing exponent >= 0; 0 gives binary cross-entropy.
      alpha: weight in [0, 1] of class 1 (``1 − alpha`` for class 0), or None for none.
      sample_weight: optional (batch,) weights.
      class_weight: optional (2,) weights.

    Returns:
      A float32 scalar.

    Example:
      >>> loss = sigmoid_focal(jnp.zeros((4, 1)), jnp.asarray([0, 1, 1, 0]), gamma=0.0)
      >>> round(float(loss), 4)  # log 2, as binary cross-entropy at logit 0
      0.6931
    """
    return _weighted(per_sample(("sigmoid_focal", gamma, alpha)), outputs, targets, sample_weight, class_weight)


LOSSES = {"mse": mse, "mae": mae, "cross_entropy": cross_entropy,
          "binary_cross_entropy": binary_cross_entropy, "kl_divergence": kl_divergence,
          "huber": huber, "log_cosh": log_cosh, "sigmoid_focal": sigmoid_focal}


@functools.cache
def _reduced_with(name: str, values: tuple) -> Callable[..., jax.Array]:
    return functools.partial(LOSSES[name], **{p: v for (p, _, _), v in zip(_PARAMETERISED[name][1], values)})


def get_loss(loss: str | tuple | Callable) -> Callable:
    """The reduced loss (``outputs, targets, *, sample_weight, class_weight -> scalar``).

    For a name, a ``(name, *params)`` tuple (one cached object per value) or a callable.
    """
    if isinstance(loss, tuple):
        name, values = _params(loss)
        defaults = tuple(default for _, default, _ in _PARAMETERISED.get(name, (None, ()))[1])
        return LOSSES[name] if values == defaults else _reduced_with(name, values)
    per_sample(loss)  # validates
    return LOSSES[loss] if isinstance(loss, str) else loss
