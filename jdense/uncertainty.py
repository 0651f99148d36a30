"""How sure the network is: disagreement of an ensemble, MC dropout, temperature scaling, reliability diagrams.

- :func:`uncertainty` splits the predictive entropy of members' (or dropout samples')
  probabilities into the members' expected entropy and their mutual information
  (disagreement); :func:`jdense.ensemble_predict` with ``return_std=True`` gives the spread.
- :func:`mc_predict` samples outputs with dropout active at inference (Gal & Ghahramani 2016),
  every sample in one compiled program.
- :func:`temperature_scale` fits one temperature on validation logits (Guo et al. 2017) and
  appends a :class:`Temperature` layer, so predict, checkpoints and export carry it.
- :func:`plot_calibration` draws a reliability diagram; the metrics ``"ece"``, ``"nll"`` and
  ``"brier"`` (:mod:`jdense.metrics`) measure calibration during ``fit`` and ``evaluate``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from jdense import checks, metrics, programs, train
from jdense.layers import Dense, Dropout
from jdense.network import Sequential, register_layer

TEMPERATURE_RANGE = (1e-2, 1e2)
"""The interval :func:`temperature_scale` searches for T."""

SAMPLE_CHUNK_BYTES = 1 << 20
"""On CPU, :func:`mc_predict` vmaps as many samples at a time as keep a batch's activations near this size.

Measured on the 2-core CPU (64-128-64-10, Dropout(0.2), 1,797 rows, 32 samples): every sample
vmapped at once took 350 ms, against 45-59 ms for 1 to 4 at a time and 42 ms for 32 calls of a
jitted ``apply(train=True)``: the random bits of a large draw spill out of the cache (one
bernoulli of (32, 1797, 192) took 368 ms, 32 of (1797, 192) 36 ms). Other platforms vmap all."""


@register_layer
@dataclasses.dataclass(frozen=True)
class Temperature:
    """Divide the logits by a temperature ``T``: params ``{"t": T}`` (a scalar, 1 at init).

    ``T > 1`` softens the probabilities, ``T < 1`` sharpens them; the argmax never changes.
    Frozen by default (``trainable=False``): a later ``fit`` leaves ``T`` as
    :func:`temperature_scale` set it, since T fitted on training data only grows more confident.

    Example:
      >>> net = jdense.Sequential([jdense.Dense(4, 3, activation=None), Temperature()])
      >>> params = net.init(jax.random.key(0))
      >>> params["temperature_0"]["t"]
      Array(1., dtype=float32)
    """

    trainable: bool = False

    name_prefix = "temperature"

    def __post_init__(self):
        object.__setattr__(self, "trainable", checks.boolean("trainable", self.trainable))

    def init(self, key: jax.Array) -> dict[str, jax.Array]:
        return {"t": jnp.ones((), jnp.float32)}

    def apply(self, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return x / params["t"].astype(x.dtype)

    def output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


@dataclasses.dataclass(frozen=True)
class _SampledDropout(Dropout):
    """Dropout that drops at inference too (MC dropout); only :func:`mc_predict` builds it."""

    def apply_with_state(self, params, state, x, *, train=False, key=None, mask=None):
        return super().apply_with_state(params, state, x, train=True, key=key, mask=mask)


# -- ensembles and samples --------------------------------------------------------------------
def _as_class_probs(probs: Any, name: str, what: str, shape: str) -> np.ndarray:
    """``probs`` as float64 probabilities with a class axis of K >= 2 (a positive-class probability becomes two)."""
    try:
        p = np.asarray(probs, np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what}: {name} must be a numeric array of probabilities; {err}") from None
    axes = shape.count(",") + 1
    if p.ndim not in (axes - 1, axes) or p.size == 0:
        raise ValueError(f"{what}: {name} must have shape {shape} (or without the class axis for a binary "
                         f"classifier's positive-class probability), got {p.shape}.")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"{what}: {name} must be probabilities in [0, 1]; apply jax.nn.softmax (or jax.nn.sigmoid "
                         "for one output) to the logits first.")
    if p.ndim == axes and p.shape[-1] == 1:
        p = p[..., 0]
    if p.ndim == axes - 1:
        return np.stack([1.0 - p, p], axis=-1)
    if not np.allclose(p.sum(-1), 1.0, atol=1e-3):
        raise ValueError(f"{what}: each row of {name} must sum to 1 over its {p.shape[-1]} classes; apply "
                         "jax.nn.softmax to the logits first.")
    return p


def uncertainty(probs_per_member: jax.typing.ArrayLike) -> dict[str, np.ndarray]:
    """Split the predictive entropy of several members' probabilities into aleatoric and epistemic parts.

    With ``p̄`` the members' mean probabilities: ``entropy = H(p̄)``, ``expected_entropy =
    mean_m H(p_m)`` and ``mutual_information = entropy − expected_entropy`` (the members'
    disagreement: 0 when they all agree). In nats.

    Args:
      probs_per_member: ``(members, n, classes)`` probabilities (of an ensemble or of
        :func:`mc_predict`'s samples, after a softmax), or ``(members, n)`` /
        ``(members, n, 1)`` positive-class probabilities of a binary classifier.

    Returns:
      ``{"entropy", "expected_entropy", "mutual_information"}``, each ``(n,)`` float64.

    Raises:
      ValueError: for values outside [0, 1], rows that do not sum to 1, or another number of axes.

    Example:
      >>> probs = jax.nn.softmax(jdense.predict(net, pop.params, x_test, population=True))
      >>> jdense.uncertainty(probs)["mutual_information"].shape       # (n,)
    """
    p = _as_class_probs(probs_per_member, "probs_per_member", "uncertainty", "(members, n, classes)")
    entropy = scipy.special.entr(p.mean(axis=0)).sum(-1)
    expected = scipy.special.entr(p).sum(-1).mean(axis=0)
    return {"entropy": entropy, "expected_entropy": expected,
            "mutual_information": np.maximum(entropy - expected, 0.0)}  # >= 0 by concavity; rounding aside


def _batches(n: int, batch_size: int | None) -> np.ndarray:
    batch = n if batch_size is None else min(checks.positive_int("batch_size", batch_size), n)
    steps = math.ceil(n / batch)
    idx = np.zeros(steps * batch, np.int32)
    idx[:n] = np.arange(n)
    return idx.reshape(steps, batch)


def mc_predict(net: Sequential, params: Any, x: jax.typing.ArrayLike, *, samples: int, key: jax.Array,
               state: Any = None, batch_size: int | None = None) -> jax.Array:
    """Outputs with dropout active at inference (MC dropout), ``samples`` draws in one compiled program.

    The program vmaps over the sample keys (on CPU a few at a time, :data:`SAMPLE_CHUNK_BYTES`).
    Sample ``s`` uses ``jax.random.split(key, samples)[s]``, and each row folds in its index,
    so the same key gives the same samples whatever ``batch_size``. The program is cached by
    the network's structure: a repeat call with new params, data of the same shape or a new
    key compiles nothing. Everything but Dropout runs in inference mode (BatchNorm uses ``state``).

    Args:
      net: a network with at least one ``Dropout`` of rate > 0.
      params, state: as in :func:`jdense.predict`.
      x: the inputs, ``(n, ...)``.
      samples: how many dropout masks to draw.
      key: a PRNG key, e.g. ``jax.random.key(0)``.
      batch_size: rows per step (``None``: all at once).

    Returns:
      The outputs (logits), ``(samples, n, outputs)``.

    Raises:
      ValueError: for a network without Dropout, or bad ``x``/``samples``/``batch_size``.
      TypeError: for a key that is not a PRNG key.

    Example:
      >>> logits = jdense.mc_predict(net, result.params, x_test, samples=32, key=jax.random.key(0))
      >>> jdense.uncertainty(jax.nn.softmax(logits))["mutual_information"]
    """
    if not isinstance(net, Sequential):
        raise TypeError(f"mc_predict: net must be a jdense.Sequential, got {type(net).__name__}.")
    if not any(isinstance(layer, Dropout) and layer.rate > 0 for layer in net.layers):
        raise ValueError("mc_predict: the network has no Dropout layer with rate > 0, so every sample would be the "
                         "same; train a network with dropout (e.g. jdense.mlp(..., dropout=0.1)) or use jdense.predict.")
    samples = checks.positive_int("samples", samples)
    key = checks.prng_key("key", key)
    x = np.asarray(x)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number) or x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"mc_predict: x must be a non-empty numeric array (n, features), got {x.dtype} {x.shape}.")
    net.check_params(params, "mc_predict")
    state = net.init_state() if state is None else state
    idx = _batches(x.shape[0], batch_size)
    sampled = Sequential([_SampledDropout(layer.rate) if isinstance(layer, Dropout) and layer.rate > 0 else layer
                          for layer in net.layers])
    program = programs.sampling(programs.structure(sampled))
    return program(params, state, x, idx, key, samples=samples, chunk=_chunk(net, x, idx.shape[1], samples), n=x.shape[0])


def _chunk(net: Sequential, x: np.ndarray, batch: int, samples: int) -> int:
    """How many samples one vmap step draws (see :data:`SAMPLE_CHUNK_BYTES`)."""
    if jax.default_backend() != "cpu":
        return samples
    widths = math.prod(x.shape[1:]) + sum(layer.out_features for layer in net.layers if isinstance(layer, Dense))
    return max(1, min(samples, SAMPLE_CHUNK_BYTES // (4 * batch * widths)))


# -- temperature scaling ------------------------------------------------------------------------
def _targets(y: Any, width: int) -> np.ndarray:
    """``(n, K)`` class probabilities of the labels (K = 2 for one logit)."""
    y = np.asarray(y)
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise TypeError(f"temperature_scale: y_val must hold numeric labels, got dtype {y.dtype}.")
    if width == 1:
        t = y.astype(np.float64).reshape(y.shape[0], -1)
        if t.shape[1] != 1 or (t < 0).any() or (t > 1).any():
            raise ValueError(f"temperature_scale: a network with one output needs y_val of 0/1 labels (n,), got shape "
                             f"{y.shape} with values in [{y.min()}, {y.max()}].")
        return np.concatenate([1.0 - t, t], axis=1)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        if (y < 0).any() or (y >= width).any():
            raise ValueError(f"temperature_scale: y_val labels must be in 0..{width - 1} for {width} outputs, got "
                             f"values in [{y.min()}, {y.max()}].")
        return np.eye(width)[y]
    if y.ndim == 2 and y.shape[1] == width:
        return y.astype(np.float64)
    raise ValueError(f"temperature_scale: y_val must be integer labels (n,) or one-hot rows (n, {width}), got "
                     f"{y.dtype} {y.shape}.")


def _check_logits(net: Sequential) -> None:
    for name, layer in reversed(list(zip(net.names, net.layers))):
        if isinstance(layer, Dense) and layer.activation not in (None, "linear"):
            raise ValueError(f"temperature_scale divides logits, but the last layer {name} has activation "
                             f"{layer.activation!r}; build the network with a linear last layer (activation=None) and "
                             "train it with loss='cross_entropy' or 'binary_cross_entropy'.")
        if not isinstance(layer, Dropout):
            return


def temperature_scale(net: Sequential, params: Any, x_val: jax.typing.ArrayLike, y_val: jax.typing.ArrayLike, *,
                      state: Any = None) -> tuple[Sequential, dict[str, Any]]:
    """Fit one temperature ``T > 0`` on validation data and divide the network's logits by it.

    ``T`` minimises the validation negative log-likelihood of ``softmax(logits / T)``
    (``sigmoid`` for one output): a bounded 1-D solve (``scipy.optimize.minimize_scalar``,
    Brent's method, on ``log T`` in :data:`TEMPERATURE_RANGE`) over float64 logits; the NLL is
    convex in ``1/T``, so the minimum is the global one. Accuracy is unchanged. A network that
    already ends in a :class:`Temperature` is scaled afresh from its raw logits.

    Args:
      net, params, state: a trained classifier whose last layer outputs logits.
      x_val, y_val: held-out data (not the training set): integer labels or one-hot rows;
        0/1 labels for one output.

    Returns:
      ``(net', params')``: ``net`` with a :class:`Temperature` layer appended and its params
      with ``T`` under the new layer's name (``params'["temperature_0"]["t"]``).

    Raises:
      ValueError, TypeError: for a last layer that is not linear, or bad labels.

    Example:
      >>> net_t, params_t = jdense.temperature_scale(net, result.params, x_val, y_val)
      >>> float(params_t["temperature_0"]["t"])
      1.7
    """
    if not isinstance(net, Sequential):
        raise TypeError(f"temperature_scale: net must be a jdense.Sequential, got {type(net).__name__}.")
    if isinstance(net.layers[-1], Temperature):  # re-fit from the raw logits
        params = {k: v for k, v in params.items() if k != net.names[-1]}
        net = Sequential(net.layers[:-1])
    _check_logits(net)
    logits = np.asarray(train.predict(net, params, x_val, state=state), np.float64)
    logits = logits.reshape(logits.shape[0], -1)
    width = logits.shape[1]
    targets = _targets(y_val, width)
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(f"temperature_scale: x_val has {logits.shape[0]} samples but y_val has {targets.shape[0]}.")
    if width == 1:  # sigmoid(z) = softmax([0, z])[1]
        logits = np.concatenate([np.zeros_like(logits), logits], axis=1)

    def nll(log_t):
        return -np.mean(np.sum(targets * scipy.special.log_softmax(logits / math.exp(log_t), axis=1), axis=1))

    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    import scipy.optimize  # here, not at the top: it adds ~0.3 s to `import jdense`

    t = math.exp(scipy.optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6}).x)
    scaled = Sequential([*net.layers, Temperature()])
    return scaled, {**params, scaled.names[-1]: {"t": jnp.asarray(t, jnp.float32)}}


# -- reliability diagram ------------------------------------------------------------------------
def plot_calibration(y: jax.typing.ArrayLike, probs: jax.typing.ArrayLike, bins: int = metrics.ECE_BINS):
    """A reliability diagram: accuracy against top-class confidence in equal-width bins, the ECE in the title.

    The bins and the ECE are those of the ``"ece"`` metric (:func:`jdense.metrics.reliability`).

    Args:
      y: integer labels ``(n,)`` or one-hot rows (0/1 labels for binary probabilities).
      probs: ``(n, classes)`` probabilities, or ``(n,)`` positive-class probabilities.
      bins: the number of equal-width confidence bins.

    Returns:
      A ``matplotlib.figure.Figure`` (needs matplotlib: ``pip install "jdense[examples]"``).

    Example:
      >>> fig = jdense.plot_calibration(y_test, jdense.ensemble_predict(net, pop.params, x_test))
      >>> fig.axes[0].get_title()
      'ECE = 0.021'
    """
    bins = checks.positive_int("bins", bins)
    p = _as_class_probs(probs, "probs", "plot_calibration", "(n, classes)")
    labels = np.asarray(y)
    labels = labels.argmax(-1) if labels.ndim == 2 and labels.shape[1] == p.shape[1] > 1 else labels.reshape(-1)
    if labels.shape[0] != p.shape[0] or not np.isin(labels, np.arange(p.shape[1])).all():
        raise ValueError(f"plot_calibration: y must hold {p.shape[0]} labels in 0..{p.shape[1] - 1} (or one-hot rows), "
                         f"got shape {np.shape(y)}.")
    stats = np.asarray(metrics.reliability(p.max(-1), p.argmax(-1) == labels, np.ones(p.shape[0]), bins), np.float64)
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError('plot_calibration needs matplotlib: pip install "jdense[examples]".') from err

    count, confidence, correct = stats
    filled = count > 0
    accuracy = np.divide(correct, count, out=np.zeros(bins), where=filled)
    mean_conf = np.divide(confidence, count, out=np.zeros(bins), where=filled)
    edges = np.linspace(0.0, 1.0, bins + 1)[:-1]
    fig, ax = plt.subplots(figsize=(4.2, 4.2), layout="constrained")
    ax.bar(edges[filled], accuracy[filled], width=1 / bins, align="edge", edgecolor="black", label="accuracy")
    ax.bar(edges[filled], (mean_conf - accuracy)[filled], bottom=accuracy[filled], width=1 / bins, align="edge",
           fill=False, hatch="//", edgecolor="tab:red", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top class)", ylabel="accuracy",
           title=f"ECE = {metrics.calibration_error(stats):.3f}")
    ax.legend(loc="upper left")
    return fig


__all__ = ["TEMPERATURE_RANGE", "Temperature", "mc_predict", "plot_calibration", "temperature_scale", "uncertainty"]
