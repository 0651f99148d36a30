"""Metrics as per-sample values, so that they sum over batches exactly.

``accuracy`` reads outputs as logits: the argmax for several outputs, ``output > 0``
for a single one (sigmoid probability above one half).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jdense import losses


def accuracy(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """1.0 where the predicted class is the target class, else 0.0, per sample."""
    labels = losses.labels_of(outputs, targets)
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        predicted = (outputs.reshape(outputs.shape[0]) > 0).astype(jnp.int32)
    else:
        predicted = jnp.argmax(outputs, axis=-1)
    return (predicted == labels).astype(jnp.float32)


METRICS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "accuracy": accuracy,
    "mse": losses.PER_SAMPLE["mse"],
    "mae": losses.PER_SAMPLE["mae"],
}


def get_metric(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Per-sample metric ``(outputs, targets) -> (batch,)`` for a name."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(map(repr, METRICS))}.")
    return METRICS[name]
