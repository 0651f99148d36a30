"""Metrics as ``(update, result)`` pairs: statistics summed over batches inside the compiled
epoch, finished on the host once per epoch (optax's pattern, applied to metrics).

``update(outputs, targets, weights)`` returns the batch's weighted sufficient statistics,
an array of the shape ``shape(width)`` (``width``: the network's output width); the
epoch adds them up. ``result(statistics, count, width)`` turns the sums into the value,
with ``count`` the summed weights. Means of per-sample values are the simplest case (``shape``
is ``()``); precision, recall and F1 sum a confusion count per class, AUC a histogram
of scores over fixed thresholds. Outputs are read as logits: the argmax for several
outputs, ``output > 0`` for a single one.

| name | statistics | value |
|---|---|---|
| ``"accuracy"`` | per-sample 0/1 | mean |
| ``"top_k_accuracy"`` (k=5), ``("top_k_accuracy", k)`` | label among the k largest outputs | mean |
| ``"precision"``, ``"recall"``, ``"f1"`` | true positives, predicted and true counts per class | binary (one logit) or macro |
| ``"auc"`` | histograms of the positive-class score over 1000 bins | ROC AUC (binary; one-vs-rest macro for several classes) |
| ``"mse"``, ``"mae"``, ``"rmse"`` | per-sample errors (mean over features) | mean (root mean for rmse) |
| ``"nll"`` | per-sample negative log-likelihood of the label (softmax; sigmoid for one logit) | mean |
| ``"brier"`` | per-sample squared error of the probabilities (as ``sklearn.metrics.brier_score_loss``) | mean |
| ``"ece"`` | per bin of top-class confidence (15 equal-width bins): weight, confidence, correct | expected calibration error |
| a callable ``(outputs, targets) -> (batch,)`` | per-sample values | mean |

Every metric declares its direction, ``higher_is_better``: monitors in mode ``"auto"``
(:class:`jdense.EarlyStopping`, :class:`jdense.ReduceLROnPlateau`,
:class:`jdense.BestCheckpoint`, :meth:`jdense.PopulationResult.best`) maximise the
metrics that declare ``True`` and minimise the rest. A callable metric declares it with
an attribute (``fn.higher_is_better = True``); without one it is lower-is-better unless
its name is a known metric's.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdense import checks, losses

AUC_BINS = 1000
ECE_BINS = 15


@dataclasses.dataclass(frozen=True, eq=False)
class Metric:
    """A named metric: ``update(outputs, targets, weights) -> statistics``, summed over batches,
    and ``result(statistics, count, width) -> float`` on the host.

    Attributes:
      name: the key in the logs (``val_`` + name for validation data).
      update: the batch's weighted sufficient statistics, inside the compiled epoch.
      result: the value from the epoch's summed statistics, on the host.
      shape: ``shape(width)``, the statistics' shape for a network of output width ``width``.
      higher_is_better: the direction monitors use in mode ``"auto"``.
    """

    name: str
    update: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    result: Callable[[np.ndarray, float, int], float]
    shape: Callable[[int], tuple[int, ...]] = lambda width: ()
    higher_is_better: bool = False
    caveat: Callable[[int], str | None] = lambda width: None  # why the value means nothing at this width, if it does not


def _classes(width: int) -> int:
    return max(width, 2)


def _predicted(outputs: jax.Array) -> jax.Array:
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return (outputs.reshape(outputs.shape[0]) > 0).astype(jnp.int32)
    return jnp.argmax(outputs, axis=-1)


def accuracy(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """1.0 where the predicted class is the target class, else 0.0, per sample."""
    return (_predicted(outputs) == losses.labels_of(outputs, targets)).astype(jnp.float32)


def mean_metric(name: str, per_sample: Callable[[jax.Array, jax.Array], jax.Array],
                finish: Callable[[float], float] = lambda v: v, higher_is_better: bool = False) -> Metric:
    """The weighted mean of per-sample values (``finish`` applied to it, e.g. ``math.sqrt``)."""

    def update(outputs, targets, weights):
        return jnp.sum(weights * per_sample(outputs, targets).astype(jnp.float32))

    def result(stats, count, width):
        return finish(float(stats) / count) if count > 0 else math.nan

    return Metric(name, update, result, higher_is_better=higher_is_better)


def top_k(k: int) -> Metric:
    """Whether the label is among the ``k`` largest outputs (ties count in its favour)."""

    def per_sample(outputs, targets):
        labels = losses.labels_of(outputs, targets)
        score = jnp.take_along_axis(outputs, labels[:, None], axis=-1)
        return (jnp.sum(outputs > score, axis=-1) < k).astype(jnp.float32)

    def caveat(width):
        if k >= _classes(width):
            return (f"'k' ({k}) greater than or equal to the number of classes ({_classes(width)}) gives a perfect "
                    f"{'top_k_accuracy' if k == 5 else f'top_{k}_accuracy'} of 1.0, which is meaningless; pass "
                    f"('top_k_accuracy', k) with k < {_classes(width)}.")
        return None

    metric = mean_metric("top_k_accuracy" if k == 5 else f"top_{k}_accuracy", per_sample, higher_is_better=True)
    return dataclasses.replace(metric, caveat=caveat)


def check_width(metrics, width: int, what: str) -> None:
    """Warn (as scikit-learn's ``top_k_accuracy_score`` does) for each metric that means nothing at this output width."""
    for metric in metrics:
        if (message := metric.caveat(width)) is not None:
            warnings.warn(f"{what}: {message}", UserWarning, stacklevel=3)


def _confusion(outputs, targets, weights):
    """Per class: weighted true positives, predicted counts and true counts, shape (3, classes)."""
    width = outputs.shape[-1] if outputs.ndim > 1 else 1
    predicted = jax.nn.one_hot(_predicted(outputs), _classes(width))
    true = jax.nn.one_hot(losses.labels_of(outputs, targets), _classes(width))
    w = weights[:, None]
    return jnp.stack([jnp.sum(w * predicted * true, 0), jnp.sum(w * predicted, 0), jnp.sum(w * true, 0)])


def _ratio(a, b):
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def _classification(name: str) -> Metric:
    def result(stats, count, width):
        tp, predicted, true = np.asarray(stats, np.float64)
        precision, recall = _ratio(tp, predicted), _ratio(tp, true)
        f1 = _ratio(2 * precision * recall, precision + recall)
        value = {"precision": precision, "recall": recall, "f1": f1}[name]
        if width == 1:
            return float(value[1])  # one logit: binary, the positive class
        present = (predicted > 0) | (true > 0)  # macro average over the classes seen
        return float(value[present].mean()) if present.any() else math.nan

    return Metric(name, _confusion, result, lambda width: (3, _classes(width)), higher_is_better=True)


def _auc_scores(outputs):
    """(batch, K) positive-class probabilities: K = 1 for binary outputs, else one per class."""
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return jax.nn.sigmoid(outputs.reshape(outputs.shape[0], 1))
    probs = jax.nn.softmax(outputs, axis=-1)
    return probs[:, 1:2] if outputs.shape[-1] == 2 else probs


def _auc_update(outputs, targets, weights):
    scores = _auc_scores(outputs.astype(jnp.float32))
    k = scores.shape[1]
    labels = losses.labels_of(outputs, targets)
    positive = (labels[:, None] == (jnp.arange(k) + (1 if k == 1 else 0))[None, :])
    bins = jnp.clip((scores * AUC_BINS).astype(jnp.int32), 0, AUC_BINS - 1)
    classes = jnp.broadcast_to(jnp.arange(k)[None, :], bins.shape)
    negative = (~positive).astype(jnp.int32)
    w = jnp.broadcast_to(weights[:, None], bins.shape)
    return jnp.zeros((k, 2, AUC_BINS), jnp.float32).at[classes, negative, bins].add(w)


def _auc_result(stats, count, width):
    aucs = []
    for pos, neg in np.asarray(stats, np.float64):
        if pos.sum() <= 0 or neg.sum() <= 0:
            continue
        tpr = np.concatenate([[0.0], np.cumsum(pos[::-1]) / pos.sum()])  # thresholds from high to low
        fpr = np.concatenate([[0.0], np.cumsum(neg[::-1]) / neg.sum()])
        aucs.append(float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)))
    return float(np.mean(aucs)) if aucs else math.nan


def _auc_shape(width):
    return (1 if width <= 2 else width, 2, AUC_BINS)


def log_probabilities(outputs: jax.Array) -> jax.Array:
    """Log-probabilities of the classes, ``(batch, K)``: log-softmax, or ``(log(1 - p), log p)`` for one logit."""
    outputs = outputs.astype(jnp.float32)
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        z = outputs.reshape(outputs.shape[0], 1)
        return jnp.concatenate([jax.nn.log_sigmoid(-z), jax.nn.log_sigmoid(z)], axis=-1)
    return jax.nn.log_softmax(outputs, axis=-1)


def nll(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative log-likelihood of the label, per sample (cross-entropy of the logits)."""
    labels = losses.labels_of(outputs, targets)
    return -jnp.take_along_axis(log_probabilities(outputs), labels[:, None], axis=-1)[:, 0]


def brier(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Squared error of the probabilities against the one-hot label, per sample.

    Summed over the classes, halved for two classes (so one logit and two give the same
    value): ``sklearn.metrics.brier_score_loss``'s convention.
    """
    log_p = log_probabilities(outputs)
    onehot = jax.nn.one_hot(losses.labels_of(outputs, targets), log_p.shape[-1])
    squared = jnp.sum((jnp.exp(log_p) - onehot) ** 2, axis=-1)
    return squared / 2 if log_p.shape[-1] == 2 else squared


def reliability(confidence: jax.typing.ArrayLike, correct: jax.typing.ArrayLike, weights: jax.typing.ArrayLike,
                bins: int = ECE_BINS) -> jax.Array:
    """Per equal-width bin of confidence, ``(lo, hi]`` (0 in the first): summed weight, weighted confidence and
    weighted correctness, shape ``(3, bins)``; the statistics of ``"ece"`` and of :func:`jdense.plot_calibration`."""
    confidence = jnp.asarray(confidence, jnp.float32)
    w = jnp.asarray(weights, jnp.float32)
    index = jnp.clip(jnp.ceil(confidence * bins).astype(jnp.int32) - 1, 0, bins - 1)
    rows = jnp.stack([w, w * confidence, w * jnp.asarray(correct, jnp.float32)], axis=-1)
    return jax.ops.segment_sum(rows, index, num_segments=bins).T


def _ece_update(outputs, targets, weights):
    confidence = jnp.exp(jnp.max(log_probabilities(outputs), axis=-1))
    correct = _predicted(outputs) == losses.labels_of(outputs, targets)
    return reliability(confidence, correct, weights)


def calibration_error(stats: np.ndarray) -> float:
    """The expected calibration error from :func:`reliability`'s statistics: ``Σ_bins |correct − confidence| / Σ weight``."""
    count, confidence, correct = np.asarray(stats, np.float64)
    total = count.sum()
    return float(np.abs(correct - confidence).sum() / total) if total > 0 else math.nan


_NAMED: dict[str, Callable[[], Metric]] = {
    "accuracy": lambda: mean_metric("accuracy", accuracy, higher_is_better=True),
    "top_k_accuracy": lambda: top_k(5),
    "precision": lambda: _classification("precision"),
    "recall": lambda: _classification("recall"),
    "f1": lambda: _classification("f1"),
    "auc": lambda: Metric("auc", _auc_update, _auc_result, _auc_shape, higher_is_better=True),
    "mse": lambda: mean_metric("mse", losses.PER_SAMPLE["mse"]),
    "mae": lambda: mean_metric("mae", losses.PER_SAMPLE["mae"]),
    "rmse": lambda: mean_metric("rmse", losses.PER_SAMPLE["mse"], math.sqrt),
    "nll": lambda: mean_metric("nll", nll),
    "brier": lambda: mean_metric("brier", brier),
    "ece": lambda: Metric("ece", _ece_update, lambda stats, count, width: calibration_error(stats), lambda width: (3, ECE_BINS)),
}
METRICS = tuple(_NAMED)
_HIGHER = frozenset(name for name, make in _NAMED.items() if make().higher_is_better)

# Per-sample functions by name, for users who compute metrics themselves.
PER_SAMPLE = {"accuracy": accuracy, "mse": losses.PER_SAMPLE["mse"], "mae": losses.PER_SAMPLE["mae"], "nll": nll, "brier": brier}


@functools.lru_cache(maxsize=256)
def get_metric(spec: Any) -> Metric:
    """The :class:`Metric` for a name, ``("top_k_accuracy", k)``, a callable or a Metric.

    The same spec gives the same object, so compiled programs are reused across calls.

    Raises:
      ValueError: for an unknown name or a bad ``k``.
      TypeError: for anything else.
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        checks.choice("metric", spec, METRICS,
                       also="('top_k_accuracy', k) or a callable (outputs, targets) -> per-sample values")
        return _NAMED[spec]()
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "top_k_accuracy":
        k = spec[1]
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"top_k_accuracy needs k >= 1, got {checks.short(k)}.")
        return top_k(int(k))
    if callable(spec):
        name = getattr(spec, "__name__", "metric")
        declared = getattr(spec, "higher_is_better", None)
        if declared is not None and not isinstance(declared, bool):
            raise TypeError(f"metric {name!r}: higher_is_better must be True or False, got {checks.short(declared)}.")
        return mean_metric(name, spec, higher_is_better=_known_direction(name) if declared is None else declared)
    raise TypeError(f"a metric must be a name, ('top_k_accuracy', k) or a callable, got {checks.short(spec)}.")


def _known_direction(name: str) -> bool:
    """The name rule, only for names jdense knows: its metrics that grow with quality, and accuracies."""
    return name in _HIGHER or name.endswith("accuracy")


def higher_is_better(monitor: str, metrics=()) -> bool:
    """Whether a larger value of the log entry ``monitor`` is better (``"val_"`` prefixes ignored).

    The direction declared by the metric of that name among ``metrics`` (:class:`Metric`
    objects), else the direction of jdense's metric of that name; the loss, unknown
    names and the learning rate are lower-is-better.

    Example:
      >>> jdense.metrics.higher_is_better("val_auc")
      True
    """
    name = monitor[4:] if monitor.startswith("val_") else monitor
    for m in metrics:
        if m.name == name:
            return bool(m.higher_is_better)
    return _known_direction(name)
