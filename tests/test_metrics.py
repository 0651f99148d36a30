"""Metrics summed inside the compiled program against scikit-learn on the same predictions.

``jdense.evaluate`` runs the metrics' statistics through several batches (batch_size 16
of 50 samples: the last batch padded); the reference is ``sklearn.metrics`` on the
network's own outputs from ``jdense.predict``, with and without sample weights.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

sk = pytest.importorskip("sklearn.metrics")

import jdense  # noqa: E402

EXACT = dict(rtol=1e-5, atol=1e-6)  # counts summed in float32 vs sklearn in float64
AUC_TOL = 1e-2  # a 1000-bin histogram against the exact ROC AUC

RNG = np.random.default_rng(0)
N = 50
X = RNG.normal(size=(N, 5)).astype(np.float32)
W = RNG.uniform(0.2, 3.0, N).astype(np.float32)


def _net(outputs):
    return jdense.mlp([5, 7, outputs], activation="tanh")


def _eval(net, params, y, metrics, sample_weight=None, loss="cross_entropy"):
    return jdense.evaluate(net, params, X, y, loss=loss, metrics=metrics, batch_size=16, sample_weight=sample_weight)


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_multiclass_precision_recall_f1_top_k_against_sklearn(weighted):
    net = _net(4)
    params = net.init(jax.random.key(1))
    y = RNG.integers(0, 4, N).astype(np.int32)
    w = W if weighted else None
    logs = _eval(net, params, y, ["accuracy", "precision", "recall", "f1", ("top_k_accuracy", 2), "auc"], w)
    out = np.asarray(jdense.predict(net, params, X))
    pred = out.argmax(-1)
    np.testing.assert_allclose(logs["accuracy"], sk.accuracy_score(y, pred, sample_weight=w), **EXACT)
    for name, fn in (("precision", sk.precision_score), ("recall", sk.recall_score), ("f1", sk.f1_score)):
        np.testing.assert_allclose(logs[name], fn(y, pred, average="macro", sample_weight=w, zero_division=0), **EXACT)
    np.testing.assert_allclose(logs["top_2_accuracy"],
                               sk.top_k_accuracy_score(y, out, k=2, labels=range(4), sample_weight=w), **EXACT)
    probs = np.exp(out - out.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = sk.roc_auc_score(y, probs, multi_class="ovr", average="macro", sample_weight=w)
    assert abs(logs["auc"] - expected) < AUC_TOL


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_binary_metrics_against_sklearn(weighted):
    net = _net(1)
    params = net.init(jax.random.key(2))
    logits = np.asarray(jdense.predict(net, params, X)).ravel()
    y = (logits + RNG.normal(scale=0.3, size=N) > np.median(logits)).astype(np.int32)  # informative labels
    w = W if weighted else None
    logs = _eval(net, params, y, ["accuracy", "precision", "recall", "f1", "auc"], w, loss="binary_cross_entropy")
    pred = (logits > 0).astype(np.int32)
    for name, fn in (("precision", sk.precision_score), ("recall", sk.recall_score), ("f1", sk.f1_score)):
        np.testing.assert_allclose(logs[name], fn(y, pred, sample_weight=w, zero_division=0), **EXACT)
    assert abs(logs["auc"] - sk.roc_auc_score(y, 1 / (1 + np.exp(-logits)), sample_weight=w)) < AUC_TOL


def test_regression_metrics_and_a_callable():
    net = jdense.mlp([5, 6, 1])
    params = net.init(jax.random.key(3))
    y = RNG.normal(size=N).astype(np.float32)

    def cube_error(outputs, targets):
        return (outputs.reshape(-1) - targets) ** 3

    logs = _eval(net, params, y, ["mse", "mae", "rmse", cube_error], W, loss="mse")
    out = np.asarray(jdense.predict(net, params, X)).ravel()
    np.testing.assert_allclose(logs["mse"], sk.mean_squared_error(y, out, sample_weight=W), **EXACT)
    np.testing.assert_allclose(logs["mae"], sk.mean_absolute_error(y, out, sample_weight=W), **EXACT)
    np.testing.assert_allclose(logs["rmse"], np.sqrt(sk.mean_squared_error(y, out, sample_weight=W)), **EXACT)
    np.testing.assert_allclose(logs["cube_error"], np.average((out - y) ** 3, weights=W), **EXACT)
    np.testing.assert_allclose(logs["loss"], logs["mse"], **EXACT)


def test_fit_logs_metrics_computed_in_the_epoch():
    """Validation metrics of the last epoch equal evaluate on the trained params."""
    net = _net(3)
    y = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0).astype(np.int32)
    r = jdense.fit(net, net.init(jax.random.key(0)), X, y, loss="cross_entropy", optimizer=jdense.optimizer(net, "adam", 1e-2),
                   epochs=3, batch_size=8, key=jax.random.key(1), validation_data=(X, y), verbose=0,
                   metrics=["accuracy", "f1", "auc"])
    logs = jdense.evaluate(net, r.params, X, y, loss="cross_entropy", metrics=["accuracy", "f1", "auc"])
    for k in ("accuracy", "f1", "auc", "loss"):
        np.testing.assert_allclose(r.history[f"val_{k}"][-1], logs[k], rtol=1e-5)


def test_sample_weights_in_fit_equal_repeated_rows():
    """Integer sample weights equal repeating rows, with the whole set as one batch (batch gradient descent)."""
    net = jdense.mlp([5, 4, 3])
    params = net.init(jax.random.key(0))
    y = RNG.integers(0, 3, N).astype(np.int32)
    counts = RNG.integers(1, 4, N)
    kw = dict(loss="cross_entropy", epochs=3, batch_size=None, key=jax.random.key(1), verbose=0)
    weighted = jdense.fit(net, params, X, y, optimizer=jdense.optimizer(net, "sgd", 0.1), sample_weight=counts, **kw)
    repeated = jdense.fit(net, params, np.repeat(X, counts, 0), np.repeat(y, counts), optimizer=jdense.optimizer(net, "sgd", 0.1),
                          **kw)
    for a, b in zip(jax.tree.leaves(weighted.params), jax.tree.leaves(repeated.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weighted.history["loss"], repeated.history["loss"], rtol=1e-5)


def test_sample_and_class_weights_multiply():
    net = _net(3)
    params = net.init(jax.random.key(0))
    y = RNG.integers(0, 3, N).astype(np.int32)
    cw = np.array([1.0, 2.0, 0.5], np.float32)
    both = jdense.evaluate(net, params, X, y, loss="cross_entropy", sample_weight=W, class_weight=cw)
    out = np.asarray(jdense.predict(net, params, X), np.float64)
    logp = out - out.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    w = W * cw[y]
    np.testing.assert_allclose(both["loss"], np.sum(-logp[np.arange(N), y] * w) / w.sum(), rtol=1e-5)


def test_validation_split_takes_the_last_rows_before_shuffling():
    net = _net(3)
    params = net.init(jax.random.key(0))
    y = RNG.integers(0, 3, N).astype(np.int32)
    kw = dict(loss="cross_entropy", epochs=2, batch_size=8, key=jax.random.key(1), verbose=0)
    split = jdense.fit(net, params, X, y, optimizer=jdense.optimizer(net), validation_split=0.2, **kw)
    explicit = jdense.fit(net, params, X[:40], y[:40], optimizer=jdense.optimizer(net), validation_data=(X[40:], y[40:]), **kw)
    assert split.history == explicit.history


def test_unknown_and_bad_metrics():
    net = _net(3)
    params = net.init(jax.random.key(0))
    y = np.zeros(N, np.int32)
    with pytest.raises(ValueError, match=r"unknown metric 'f2'"):
        _eval(net, params, y, ["f2"])
    with pytest.raises(ValueError, match=r"top_k_accuracy needs k >= 1"):
        _eval(net, params, y, [("top_k_accuracy", 0)])
    with pytest.raises(ValueError, match=r"distinct names"):
        _eval(net, params, y, ["accuracy", "accuracy"])
