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
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

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


PER_SAMPLE: dict[str, PerSampleLoss] = {
    "mse": _mse,
    "mae": _mae,
    "cross_entropy": _cross_entropy,
    "binary_cross_entropy": _binary_cross_entropy,
    "kl_divergence": _kl_divergence,
}
CLASSIFICATION = frozenset({"cross_entropy", "binary_cross_entropy"})


def per_sample(loss: str | PerSampleLoss) -> PerSampleLoss:
    """The unreduced loss ``(outputs, targets) -> (batch,)`` for a name or a callable."""
    if isinstance(loss, str):
        if loss not in PER_SAMPLE:
            raise ValueError(
                f"unknown loss {loss!r}; expected one of {', '.join(map(repr, PER_SAMPLE))} or a callable "
                "(outputs, targets) -> per-sample losses."
            )
        return PER_SAMPLE[loss]
    if callable(loss):
        return loss
    raise TypeError(f"loss must be a name or a callable, got {loss!r}.")


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


def _reduced(name: str) -> Callable[..., jax.Array]:
    fn = PER_SAMPLE[name]

    def loss(outputs, targets, *, sample_weight=None, class_weight=None):
        outputs = jnp.asarray(outputs)
        values = fn(outputs, targets)
        return weighted_mean(values, sample_weights(outputs, targets, sample_weight, class_weight))

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

LOSSES = {"mse": mse, "mae": mae, "cross_entropy": cross_entropy,
          "binary_cross_entropy": binary_cross_entropy, "kl_divergence": kl_divergence}


def get_loss(loss: str | Callable) -> Callable:
    """The reduced loss for a name (``outputs, targets, *, sample_weight, class_weight -> scalar``)."""
    per_sample(loss)  # validates
    return LOSSES[loss] if isinstance(loss, str) else loss
