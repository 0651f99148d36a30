"""Losses against hand-written NumPy and optax's own functions, with sample and class weights (Σ w·ℓ / Σ w)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
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


def test_loss_must_be_name_tuple_or_callable():
    for bad in (3, ["huber", 2.0], (), (2.0, "huber")):
        with pytest.raises(TypeError, match=r"loss must be a name \('mse'.*a tuple \(name, \*params\)"):
            losses.per_sample(bad)


# --------------------------------------------------------------------------- huber, log_cosh, focal


def _np_huber(d, delta):  # Keras's Huber arithmetic
    a = np.abs(d)
    return np.where(a <= delta, 0.5 * d**2, delta * (a - 0.5 * delta))


def _np_log_cosh(d):  # log cosh d = |d| + log(1 + e^{-2|d|}) - log 2, stable for large |d|
    a = np.abs(d)
    return a + np.log1p(np.exp(-2 * a)) - np.log(2.0)


def _np_focal(z, y, gamma, alpha):  # Lin et al. 2017, eq. 5, on logits z
    p = 1 / (1 + np.exp(-z))
    p_t = y * p + (1 - y) * (1 - p)
    loss = (np.logaddexp(0.0, z) - y * z) * (1 - p_t) ** gamma
    return loss if alpha is None else (y * alpha + (1 - y) * (1 - alpha)) * loss


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("batch,features", [(1, 3), (5, 3), (5, 1)], ids=["batch1", "batch5", "one_output"])
def test_huber_against_numpy_and_optax(delta, batch, features):
    rng = _rng(11)
    o = (2 * rng.normal(size=(batch, features))).astype(np.float32)
    t = rng.normal(size=(batch, features)).astype(np.float32)
    per = losses.per_sample(("huber", delta))(jnp.asarray(o), t)
    np.testing.assert_allclose(np.asarray(per), _np_huber(o.astype(np.float64) - t, delta).mean(1), **LOSS_TOL)
    np.testing.assert_allclose(np.asarray(per), np.asarray(optax.losses.huber_loss(o, t, delta=delta).mean(-1)),
                               **LOSS_TOL)
    _close(jax.jit(functools.partial(losses.huber, delta=delta))(o, t), _np_huber(o.astype(np.float64) - t, delta).mean())


def test_huber_default_delta_is_optax_default():
    o = jnp.asarray([[3.0, 0.5]])
    t = jnp.zeros((1, 2))
    expected = float(optax.losses.huber_loss(o, t).mean())  # optax's delta=1.0
    _close(JIT["huber"](o, t), expected)
    _close(losses.get_loss("huber")(o, t), (2.5 + 0.125) / 2)


@pytest.mark.parametrize("batch,features", [(1, 3), (5, 3)], ids=["batch1", "batch5"])
def test_log_cosh_against_numpy_and_optax(batch, features):
    rng = _rng(12)
    o = (5 * rng.normal(size=(batch, features))).astype(np.float32)
    t = rng.normal(size=(batch, features)).astype(np.float32)
    d = o.astype(np.float64) - t
    per = losses.per_sample("log_cosh")(jnp.asarray(o), t)
    np.testing.assert_allclose(np.asarray(per), np.log(np.cosh(d)).mean(1), **LOSS_TOL)
    np.testing.assert_allclose(np.asarray(per), np.asarray(optax.losses.log_cosh(o, t).mean(-1)), **LOSS_TOL)
    _close(JIT["log_cosh"](o, t), _np_log_cosh(d).mean())
    _close(JIT["log_cosh"](jnp.asarray([[100.0]]), jnp.zeros(1)), 100.0 - np.log(2.0))  # no overflow


@pytest.mark.parametrize("gamma,alpha", [(2.0, None), (0.5, 0.25), (0.0, None)])
@pytest.mark.parametrize("shape", ["flat", "column"])
def test_sigmoid_focal_against_numpy_and_optax(gamma, alpha, shape):
    rng = _rng(13)
    z = (3 * rng.normal(size=(5, 1))).astype(np.float32)
    y = np.asarray([0, 1, 1, 0, 1], np.float32)
    expected = _np_focal(z[:, 0].astype(np.float64), y, gamma, alpha)
    per = losses.per_sample(("sigmoid_focal", gamma, alpha))(jnp.asarray(z), y if shape == "flat" else y[:, None])
    np.testing.assert_allclose(np.asarray(per), expected, **LOSS_TOL)
    reference = optax.losses.sigmoid_focal_loss(z, y[:, None], alpha=alpha, gamma=gamma)[:, 0]
    np.testing.assert_allclose(np.asarray(per), np.asarray(reference), **LOSS_TOL)
    focal = jax.jit(functools.partial(losses.sigmoid_focal, gamma=gamma, alpha=alpha))
    _close(focal(z, y), expected.mean())
    if gamma == 0.0:  # focal with gamma 0 and no alpha is binary cross-entropy
        _close(focal(z, y), float(JIT["binary_cross_entropy"](z, y)))


def test_new_losses_take_sample_and_class_weights():
    rng = _rng(14)
    o = rng.normal(size=(5, 2)).astype(np.float32)
    t = rng.normal(size=(5, 2)).astype(np.float32)
    w = np.asarray([1.0, 0.0, 2.0, 0.5, 3.0], np.float32)
    _close(losses.huber(o, t, delta=0.5, sample_weight=w), _wmean(_np_huber(o.astype(np.float64) - t, 0.5).mean(1), w))
    _close(JIT["log_cosh"](o, t, sample_weight=w), _wmean(_np_log_cosh(o.astype(np.float64) - t).mean(1), w))
    z = rng.normal(size=(5, 1)).astype(np.float32)
    y = np.asarray([0, 1, 1, 0, 1], np.float32)
    cw = np.asarray([3.0, 1.0], np.float32)
    _close(JIT["sigmoid_focal"](z, y, class_weight=cw), _wmean(_np_focal(z[:, 0].astype(np.float64), y, 2.0, None),
                                                               cw[y.astype(int)]))


def test_same_parameters_give_the_same_function():
    """What keeps a compiled program cached: equal specs are one object, and a jit keyed on it traces once."""
    assert losses.per_sample(("huber", 2.0)) is losses.per_sample(("huber", 2))
    assert losses.per_sample("huber") is losses.per_sample(("huber", 1.0)) is losses.per_sample(("huber",))
    assert losses.per_sample(("sigmoid_focal", 2.0)) is losses.per_sample("sigmoid_focal")
    assert losses.per_sample(("sigmoid_focal", 1.0, 0.25)) is not losses.per_sample(("sigmoid_focal", 1.0, 0.5))
    assert losses.per_sample(("log_cosh",)) is losses.per_sample("log_cosh")
    assert losses.get_loss(("huber", 2.0)) is losses.get_loss(("huber", 2.0))
    assert losses.get_loss(("huber",)) is losses.huber
    total = jax.jit(lambda fn, o, t: fn(o, t).sum(), static_argnums=0)
    o, t = jnp.ones((4, 2)), jnp.zeros((4, 2))
    for _ in range(3):
        total(losses.per_sample(("huber", 0.5)), o, t)
    assert total._cache_size() == 1
    _close(losses.get_loss(("huber", 0.5))(o, t), 0.5 * (1 - 0.25))


def test_names_and_kinds():
    assert losses.name_of(("huber", 2.0)) == "huber" and losses.name_of("mse") == "mse"
    assert losses.name_of(lambda o, t: o) is None
    assert {"huber", "log_cosh"} <= losses.REGRESSION and "sigmoid_focal" in losses.CLASSIFICATION
    assert set(losses.LOSSES) == set(losses.PER_SAMPLE) == losses.REGRESSION | losses.CLASSIFICATION | {"kl_divergence"}


@pytest.mark.parametrize("spec,message", [
    (("huber", 0.0), r"huber: delta must be a finite number > 0, got 0.0"),
    (("huber", float("inf")), r"huber: delta must be a finite number > 0"),
    (("huber", True), r"huber: delta must be a finite number > 0, got True"),
    (("huber", 1.0, 2.0), r"loss 'huber' takes delta; got 2 values"),
    (("sigmoid_focal", -1.0), r"sigmoid_focal: gamma must be a finite number >= 0, got -1.0"),
    (("sigmoid_focal", 2.0, 1.5), r"sigmoid_focal: alpha must be None or a weight in \[0, 1\]"),
    (("log_cosh", 1.0), r"loss 'log_cosh' takes no parameters"),
    (("hinge", 1.0), r"unknown loss 'hinge'"),
])
def test_bad_loss_parameters(spec, message):
    with pytest.raises(ValueError, match=message):
        losses.per_sample(spec)
    with pytest.raises(ValueError, match=message):
        losses.get_loss(spec)


def test_fit_takes_a_parameterised_loss():
    import jdense

    rng = _rng(15)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ np.asarray([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=64)).astype(np.float32)
    net = jdense.mlp([3, 8, 1])
    params = net.init(jax.random.key(0))
    result = jdense.fit(net, params, x, y, loss=("huber", 0.5), optimizer=optax.adam(1e-2), epochs=2,
                        batch_size=64, key=jax.random.key(1), verbose=0)
    outputs = net.apply(result.params, x)
    expected = _np_huber(np.asarray(outputs, np.float64)[:, 0] - y, 0.5).mean()
    got = jdense.evaluate(net, result.params, x, y, loss=("huber", 0.5))["loss"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.isfinite(result.history["loss"]).all()
