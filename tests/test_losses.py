"""Losses against hand-written NumPy, with sample and class weights (Σ w·ℓ / Σ w)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdense import losses

LOSS_TOL = dict(rtol=1e-5, atol=1e-6)  # float32 loss vs float64 NumPy
# Classification tests share 5 samples x 3 classes, so that each eager op compiles once.

# Each loss compiled as one program for the value tests (eagerly, each of its ops would
# compile on its own); the error tests below call the plain functions.
JIT = {name: jax.jit(fn) for name, fn in losses.LOSSES.items()}


def _rng(seed=0):
    return np.random.default_rng(seed)


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _one_hot(labels, k):
    return np.eye(k)[labels]


def _wmean(values, weights=None):
    weights = np.ones_like(values) if weights is None else np.asarray(weights, np.float64)
    return (weights * values).sum() / weights.sum()


def _close(actual, expected):
    assert np.shape(actual) == ()
    assert jnp.asarray(actual).dtype == jnp.float32
    np.testing.assert_allclose(float(actual), expected, **LOSS_TOL)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("batch,features", [(1, 3), (5, 3), (5, 1)], ids=["batch1", "batch5", "one_output"])
def test_mse_and_mae(batch, features):
    rng = _rng(1)
    o = rng.normal(size=(batch, features)).astype(np.float32)
    t = rng.normal(size=(batch, features)).astype(np.float32)
    d = o.astype(np.float64) - t
    _close(JIT["mse"](o, t), ((d**2).mean(axis=1)).mean())
    _close(JIT["mae"](o, t), (np.abs(d).mean(axis=1)).mean())


def test_regression_targets_may_drop_a_trailing_unit_axis():
    rng = _rng(2)
    o = rng.normal(size=(5, 1)).astype(np.float32)
    t = rng.normal(size=(5,)).astype(np.float32)
    _close(JIT["mse"](o, t), ((o[:, 0].astype(np.float64) - t) ** 2).mean())
    _close(JIT["mse"](o[:, 0], t), ((o[:, 0].astype(np.float64) - t) ** 2).mean())  # 1-D outputs


@pytest.mark.parametrize("batch,classes", [(1, 3), (5, 3), (5, 2)], ids=["batch1", "batch5", "two_classes"])
def test_cross_entropy_integer_labels_and_one_hot_agree(batch, classes):
    rng = _rng(3)
    logits = (3 * rng.normal(size=(batch, classes))).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    expected = -_np_log_softmax(logits.astype(np.float64))[np.arange(batch), labels].mean()
    from_int = JIT["cross_entropy"](logits, jnp.asarray(labels, jnp.int32))
    from_one_hot = JIT["cross_entropy"](logits, _one_hot(labels, classes).astype(np.float32))
    _close(from_int, expected)
    _close(from_one_hot, expected)
    np.testing.assert_allclose(float(from_int), float(from_one_hot), **LOSS_TOL)


def test_cross_entropy_soft_targets():
    rng = _rng(4)
    logits = rng.normal(size=(5, 3)).astype(np.float32)
    probs = rng.dirichlet(np.ones(3), size=5).astype(np.float32)
    _close(JIT["cross_entropy"](logits, probs), -(probs * _np_log_softmax(logits.astype(np.float64))).sum(1).mean())


@pytest.mark.parametrize("batch,shape", [(1, "flat"), (5, "column")])
def test_binary_cross_entropy_from_logits(batch, shape):
    rng = _rng(5)
    logits = (4 * rng.normal(size=(batch, 1))).astype(np.float32)
    labels = rng.integers(0, 2, batch).astype(np.float32)
    z = logits[:, 0].astype(np.float64)
    expected = np.mean(np.logaddexp(0.0, z) - labels * z)  # -[t log σ(z) + (1-t) log(1-σ(z))], stable
    naive = -np.mean(labels * np.log(1 / (1 + np.exp(-z))) + (1 - labels) * np.log(1 - 1 / (1 + np.exp(-z))))
    np.testing.assert_allclose(expected, naive, rtol=1e-9)
    targets = labels if shape == "flat" else labels[:, None]
    _close(JIT["binary_cross_entropy"](logits, targets), expected)


def test_binary_cross_entropy_is_stable_for_large_logits():
    value = JIT["binary_cross_entropy"](jnp.asarray([[100.0], [-100.0]]), jnp.asarray([0.0, 1.0]))
    _close(value, 100.0)


def test_kl_divergence():
    rng = _rng(6)
    logits = rng.normal(size=(5, 3)).astype(np.float32)
    p = rng.dirichlet(np.ones(3), size=5)
    p[0] = [0.0, 0.5, 0.5]  # a zero probability contributes 0
    p = p.astype(np.float32)
    p64 = p.astype(np.float64)
    log_q = _np_log_softmax(logits.astype(np.float64))
    log_p = np.log(np.where(p64 > 0, p64, 1.0))
    _close(JIT["kl_divergence"](logits, p), (p64 * (log_p - log_q)).sum(1).mean())
    _close(JIT["kl_divergence"](np.log(p + 1e-30), p), 0.0)  # KL(p || p) = 0


# --------------------------------------------------------------------------- weights


def test_sample_weight_is_a_weighted_mean():
    rng = _rng(7)
    o = rng.normal(size=(5, 3)).astype(np.float32)
    t = rng.normal(size=(5, 3)).astype(np.float32)
    w = np.asarray([1.0, 0.0, 2.0, 0.5, 3.0], np.float32)
    per = ((o.astype(np.float64) - t) ** 2).mean(1)
    _close(JIT["mse"](o, t, sample_weight=w), _wmean(per, w))
    _close(losses.mse(o, t, sample_weight=w), _wmean(per, w))  # eager, as well as compiled
    _close(JIT["mse"](o, t, sample_weight=np.ones(5)), per.mean())
    _close(JIT["mse"](o, t, sample_weight=np.zeros(5)), 0.0)  # all-zero weights give 0, not NaN


@pytest.mark.parametrize("targets", ["integer", "one_hot"])
def test_class_weight_cross_entropy(targets):
    rng = _rng(8)
    logits = rng.normal(size=(5, 3)).astype(np.float32)
    labels = np.asarray([0, 1, 2, 2, 0])
    cw = np.asarray([1.0, 2.0, 0.5], np.float32)
    sw = np.asarray([1.0, 1.0, 2.0, 0.0, 3.0], np.float32)
    per = -_np_log_softmax(logits.astype(np.float64))[np.arange(5), labels]
    y = labels.astype(np.int32) if targets == "integer" else _one_hot(labels, 3).astype(np.float32)
    _close(JIT["cross_entropy"](logits, y, class_weight=cw), _wmean(per, cw[labels]))
    _close(JIT["cross_entropy"](logits, y, sample_weight=sw, class_weight=cw), _wmean(per, sw * cw[labels]))


def test_class_weight_binary_cross_entropy():
    rng = _rng(9)
    logits = rng.normal(size=(5, 1)).astype(np.float32)
    labels = np.asarray([0, 1, 1, 0, 1], np.float32)
    cw = np.asarray([3.0, 1.0], np.float32)
    z = logits[:, 0].astype(np.float64)
    per = np.logaddexp(0.0, z) - labels * z
    _close(JIT["binary_cross_entropy"](logits, labels, class_weight=cw), _wmean(per, cw[labels.astype(int)]))


def test_per_sample_is_unreduced():
    rng = _rng(10)
    o = rng.normal(size=(5, 3)).astype(np.float32)
    t = rng.normal(size=(5, 3)).astype(np.float32)
    values = losses.per_sample("mae")(jnp.asarray(o), t)
    assert values.shape == (5,)
    np.testing.assert_allclose(np.asarray(values), np.abs(o.astype(np.float64) - t).mean(1), **LOSS_TOL)
    assert losses.get_loss("mse") is losses.mse
    custom = lambda o, t: jnp.sum(o, axis=-1)
    assert losses.get_loss(custom) is custom


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["mse", "mae", "binary_cross_entropy"])
def test_shape_mismatch_is_refused(name):
    with pytest.raises(ValueError, match=rf"{name}: outputs have shape \(4, 2\) but targets have shape \(4, 3\)"):
        losses.get_loss(name)(jnp.zeros((4, 2)), jnp.zeros((4, 3)))


def test_cross_entropy_bad_targets_shape():
    with pytest.raises(ValueError, match=r"cross_entropy: outputs have shape \(4, 3\).*got \(4, 2\)"):
        losses.cross_entropy(jnp.zeros((4, 3)), jnp.zeros((4, 2)))


def test_kl_divergence_shape_mismatch():
    with pytest.raises(ValueError, match=r"kl_divergence: outputs \(4, 3\) and target probabilities \(4, 2\)"):
        losses.kl_divergence(jnp.zeros((4, 3)), jnp.zeros((4, 2)))


def test_unknown_loss_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; expected one of 'mse', 'mae', 'cross_entropy'"):
        losses.get_loss("hinge")


def test_loss_must_be_name_or_callable():
    with pytest.raises(TypeError, match="loss must be a name or a callable"):
        losses.per_sample(3)
