"""Uncertainty: calibration metrics against NumPy and scikit-learn, temperature scaling against a grid
search, MC dropout's samples, the ensemble's spread and the entropy split of :func:`jdense.uncertainty`.

References: ``sklearn.metrics.log_loss``/``brier_score_loss``, ``sklearn.calibration.calibration_curve``
for the per-bin accuracy and confidence, and NumPy formulas written here.
"""

from __future__ import annotations

import contextlib
import importlib

import jax
import numpy as np
import pytest

import jdense
from jdense import metrics

unc = importlib.import_module("jdense.uncertainty")  # the module (the attribute jdense.uncertainty is the function)

sk = pytest.importorskip("sklearn.metrics")
calibration = pytest.importorskip("sklearn.calibration")

EXACT = dict(rtol=1e-5, atol=1e-6)  # float32 sums inside the program against float64 references
RNG = np.random.default_rng(0)
N, D = 50, 5
X = RNG.normal(size=(N, D)).astype(np.float32)
W = RNG.uniform(0.2, 3.0, N).astype(np.float32)


@contextlib.contextmanager
def compiles():
    """Collect the names of the XLA programs compiled inside the block."""
    names: list[str] = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(str(kwargs.get("fun_name", "?")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def ece_reference(probs, y, weights=None, bins=15):
    """Top-class ECE in NumPy: bins (lo, hi] of width 1/bins, as sklearn's calibration_curve assigns them."""
    weights = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    conf, correct = probs.max(-1), (probs.argmax(-1) == y).astype(np.float64)
    ids = np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], conf)
    total = 0.0
    for b in range(bins):
        sel = ids == b
        total += abs(np.sum(weights[sel] * correct[sel]) - np.sum(weights[sel] * conf[sel]))
    return total / weights.sum()


# -- metrics ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_multiclass_nll_brier_ece_against_sklearn_and_numpy(weighted):
    net = jdense.mlp([D, 7, 4], activation="tanh")
    params = jax.tree.map(lambda a: 3 * a, net.init(jax.random.key(1)))  # sharper logits: confidences spread out
    y = RNG.integers(0, 4, N).astype(np.int32)
    w = W if weighted else None
    logs = jdense.evaluate(net, params, X, y, loss="cross_entropy", metrics=["nll", "brier", "ece"], batch_size=16,
                           sample_weight=w)
    probs = softmax(np.asarray(jdense.predict(net, params, X), np.float64))
    np.testing.assert_allclose(logs["nll"], sk.log_loss(y, probs, sample_weight=w, labels=range(4)), **EXACT)
    np.testing.assert_allclose(logs["brier"], sk.brier_score_loss(y, probs, sample_weight=w, labels=range(4)), **EXACT)
    np.testing.assert_allclose(logs["ece"], ece_reference(probs, y, w), **EXACT)
    assert 0.0 < logs["ece"] < 1.0


@pytest.mark.parametrize("width", [1, 2], ids=["one_logit", "two_logits"])
def test_binary_nll_brier_ece_against_sklearn(width):
    net = jdense.mlp([D, 7, width], activation="tanh")
    params = jax.tree.map(lambda a: 3 * a, net.init(jax.random.key(2)))
    z = np.asarray(jdense.predict(net, params, X), np.float64)
    p = sigmoid(z[:, 0]) if width == 1 else softmax(z)[:, 1]
    y = (RNG.uniform(size=N) < p).astype(np.int32)
    loss = "binary_cross_entropy" if width == 1 else "cross_entropy"
    logs = jdense.evaluate(net, params, X, y, loss=loss, metrics=["nll", "brier", "ece"], batch_size=16)
    np.testing.assert_allclose(logs["nll"], sk.log_loss(y, p, labels=[0, 1]), **EXACT)
    np.testing.assert_allclose(logs["brier"], sk.brier_score_loss(y, p), **EXACT)  # (p - y)², one logit or two
    np.testing.assert_allclose(logs["ece"], ece_reference(np.stack([1 - p, p], 1), y), **EXACT)  # top class


def test_reliability_bins_match_sklearn_calibration_curve():
    conf = RNG.uniform(0.3, 1.0, 400)
    correct = (RNG.uniform(size=400) < conf ** 2).astype(np.float64)  # over-confident
    count, conf_sum, correct_sum = np.asarray(metrics.reliability(conf, correct, np.ones(400)), np.float64)
    filled = count > 0
    prob_true, prob_pred = calibration.calibration_curve(correct, conf, n_bins=15, strategy="uniform")
    np.testing.assert_allclose(correct_sum[filled] / count[filled], prob_true, **EXACT)
    np.testing.assert_allclose(conf_sum[filled] / count[filled], prob_pred, **EXACT)
    assert count.sum() == 400


def test_calibration_metrics_are_lower_is_better_and_named():
    for name in ("ece", "nll", "brier"):
        metric = metrics.get_metric(name)
        assert metric.name == name
        if hasattr(metric, "higher_is_better"):
            assert metric.higher_is_better is False


# -- temperature scaling --------------------------------------------------------------------------
def _overconfident(width, scale=4.0, n=3000, seed=3):
    """A linear net whose logits are ``scale`` times the true ones: labels drawn from the true model."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    true_w = rng.normal(size=(D, width)).astype(np.float32)
    z = x @ true_w
    if width == 1:
        y = (rng.uniform(size=n) < sigmoid(z[:, 0])).astype(np.int32)
    else:
        y = np.array([rng.choice(width, p=p) for p in softmax(z.astype(np.float64))], np.int32)
    net = jdense.Sequential([jdense.Dense(D, width, activation=None)])
    params = {"dense_0": {"w": jax.numpy.asarray(scale * true_w), "b": jax.numpy.zeros(width)}}
    return net, params, x, y


def _nll(z, y, t):
    if z.shape[1] == 1:
        p = sigmoid(z[:, 0] / t)
        return -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    s = z / t - (z / t).max(1, keepdims=True)
    return -np.mean(s[np.arange(len(y)), y] - np.log(np.exp(s).sum(1)))


@pytest.fixture(scope="module", params=[3, 1], ids=["softmax", "sigmoid"])
def scaled(request):
    net, params, x, y = _overconfident(request.param)
    net_t, params_t = jdense.temperature_scale(net, params, x, y)
    return net, params, x, y, net_t, params_t


def test_temperature_matches_a_grid_search(scaled):
    net, params, x, y, net_t, params_t = scaled
    t = float(params_t["temperature_0"]["t"])
    z = np.asarray(jdense.predict(net, params, x), np.float64)
    grid = np.arange(1.0, 8.0, 1e-3)
    best = grid[np.argmin([_nll(z, y, g) for g in grid])]
    assert abs(t - best) < 1e-2
    assert 2.5 < t < 6.0  # the logits were 4x too large


def test_temperature_scaling_lowers_nll_and_ece_and_keeps_accuracy(scaled):
    net, params, x, y, net_t, params_t = scaled
    loss = "binary_cross_entropy" if net.output_width == 1 else "cross_entropy"
    names = ["accuracy", "nll", "ece"]
    before = jdense.evaluate(net, params, x, y, loss=loss, metrics=names)
    after = jdense.evaluate(net_t, params_t, x, y, loss=loss, metrics=names)
    assert after["nll"] < before["nll"] - 0.05
    assert after["ece"] < before["ece"] / 2
    assert after["accuracy"] == before["accuracy"]
    z, zt = np.asarray(jdense.predict(net, params, x)), np.asarray(jdense.predict(net_t, params_t, x))
    np.testing.assert_allclose(zt, z / float(params_t["temperature_0"]["t"]), rtol=1e-6)


def test_temperature_survives_a_checkpoint_and_a_later_fit(scaled, tmp_path):
    net, params, x, y, net_t, params_t = scaled
    assert isinstance(net_t.layers[-1], jdense.Temperature) and net_t.names[-1] == "temperature_0"
    jdense.save(tmp_path / "t.safetensors", params_t, net=net_t)
    ck = jdense.load(tmp_path / "t.safetensors")
    assert ck.net == net_t
    np.testing.assert_array_equal(np.asarray(jdense.predict(ck.net, ck.params, x[:20])),
                                  np.asarray(jdense.predict(net_t, params_t, x[:20])))
    loss = "binary_cross_entropy" if net.output_width == 1 else "cross_entropy"
    result = jdense.fit(net_t, params_t, x[:64], y[:64], loss=loss, optimizer=jdense.optimizer(net_t, "sgd", 0.1),
                        epochs=1, batch_size=32, key=jax.random.key(0), verbose=0)
    assert float(result.params["temperature_0"]["t"]) == float(params_t["temperature_0"]["t"])  # frozen
    assert not np.allclose(result.params["dense_0"]["w"], params_t["dense_0"]["w"])


def test_temperature_scaling_again_refits_from_raw_logits(scaled):
    net, params, x, y, net_t, params_t = scaled
    net_tt, params_tt = jdense.temperature_scale(net_t, params_t, x, y)
    assert net_tt == net_t and sorted(params_tt) == sorted(params_t)
    np.testing.assert_allclose(params_tt["temperature_0"]["t"], params_t["temperature_0"]["t"], rtol=1e-6)


def test_temperature_scale_errors():
    net = jdense.Sequential([jdense.Dense(D, 3, activation="softmax")])
    params = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match="activation 'softmax'.*activation=None"):
        jdense.temperature_scale(net, params, X, np.zeros(N, np.int32))
    linear = jdense.Sequential([jdense.Dense(D, 3, activation=None)])
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        jdense.temperature_scale(linear, params, X, np.full(N, 3))
    with pytest.raises(ValueError, match="x_val has 50 samples but y_val has 10"):
        jdense.temperature_scale(linear, params, X, np.zeros(10, np.int32))
    with pytest.raises(TypeError, match="Sequential"):
        jdense.temperature_scale(linear.layers[0], params, X, np.zeros(N, np.int32))


# -- MC dropout -------------------------------------------------------------------------------------
MC_NET = jdense.Sequential([jdense.Dense(D, 32), jdense.Dropout(0.2), jdense.Dense(32, 3, activation=None)])
MC_PARAMS = MC_NET.init(jax.random.key(4))


@pytest.fixture(scope="module")
def mc_samples():
    return np.asarray(jdense.mc_predict(MC_NET, MC_PARAMS, X, samples=2000, key=jax.random.key(0)), np.float64)


def test_mc_predict_mean_approaches_the_dropout_free_output(mc_samples):
    assert mc_samples.shape == (2000, N, 3)
    exact = np.asarray(jdense.predict(MC_NET, MC_PARAMS, X), np.float64)  # linear after dropout: E[output] = exact
    errors = [np.abs(mc_samples[:s].mean(0) - exact).max() for s in (10, 100, 2000)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05 * np.abs(exact).max()
    assert np.std(mc_samples, axis=0).min() > 0  # the samples differ


def test_mc_predict_is_reproducible_from_its_key_and_compiles_once(mc_samples):
    with compiles() as names:
        again = np.asarray(jdense.mc_predict(MC_NET, MC_PARAMS, X, samples=2000, key=jax.random.key(0)))
    assert names == []
    np.testing.assert_array_equal(again, mc_samples.astype(np.float32))
    other = np.asarray(jdense.mc_predict(MC_NET, MC_PARAMS, X, samples=2000, key=jax.random.key(1)))
    assert not np.allclose(other, again)
    batched = np.asarray(jdense.mc_predict(MC_NET, MC_PARAMS, X, samples=3, key=jax.random.key(0), batch_size=16))
    one_go = np.asarray(jdense.mc_predict(MC_NET, MC_PARAMS, X, samples=3, key=jax.random.key(0)))
    np.testing.assert_allclose(batched, one_go, rtol=1e-6, atol=1e-6)  # rows draw from their own keys: same masks


def test_mc_predict_does_not_depend_on_how_many_samples_are_vmapped_at_once(monkeypatch):
    together = np.asarray(jdense.mc_predict(MC_NET, MC_PARAMS, X, samples=3, key=jax.random.key(0)))
    monkeypatch.setattr(unc, "SAMPLE_CHUNK_BYTES", 1)  # one sample at a time instead of 3
    one_by_one = np.asarray(jdense.mc_predict(MC_NET, MC_PARAMS, X, samples=3, key=jax.random.key(0)))
    np.testing.assert_allclose(one_by_one, together, rtol=1e-6, atol=1e-6)


def test_mc_predict_uses_batch_norm_running_statistics():
    net = jdense.mlp([D, 16, 3], dropout=0.2, batch_norm=True)
    params = net.init(jax.random.key(6))
    state = {"batch_norm_0": {"mean": np.full(16, 0.7, np.float32), "var": np.full(16, 0.2, np.float32)}}
    out = np.asarray(jdense.mc_predict(net, params, X, samples=400, key=jax.random.key(0), state=state), np.float64)
    exact = np.asarray(jdense.predict(net, params, X, state=state), np.float64)  # linear after dropout
    fresh = np.asarray(jdense.predict(net, params, X, state=net.init_state()), np.float64)
    error = np.abs(out.mean(0) - exact).max()
    assert error < 0.1 * np.abs(exact).max() < np.abs(out.mean(0) - fresh).max()


def test_mc_predict_drops_at_the_layer_rate():
    net = jdense.Sequential([jdense.Flatten(), jdense.Dropout(0.25)])
    out = np.asarray(jdense.mc_predict(net, {}, np.ones((8, 500), np.float32), samples=4, key=jax.random.key(5)))
    assert out.shape == (4, 8, 500)
    assert set(np.unique(out)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((out == 0).mean() - 0.25) < 0.01  # 16,000 draws: 3 standard errors ~ 0.01


def test_mc_predict_errors():
    plain = jdense.mlp([D, 4, 3])
    with pytest.raises(ValueError, match="no Dropout layer"):
        jdense.mc_predict(plain, plain.init(jax.random.key(0)), X, samples=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="samples must be a positive int"):
        jdense.mc_predict(MC_NET, MC_PARAMS, X, samples=0, key=jax.random.key(0))
    with pytest.raises(TypeError, match="key must be one JAX PRNG key"):
        jdense.mc_predict(MC_NET, MC_PARAMS, X, samples=2, key=0)
    with pytest.raises(ValueError, match="params do not fit"):
        jdense.mc_predict(MC_NET, plain.init(jax.random.key(0)), X, samples=2, key=jax.random.key(0))


# -- ensembles and the entropy split -----------------------------------------------------------------
def _population(net, members=4):
    trees = [net.init(jax.random.key(i)) for i in range(members)]
    return jax.tree.map(lambda *a: np.stack([np.asarray(v) for v in a]), *trees)


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse"])
def test_ensemble_std_against_numpy(loss):
    net = jdense.mlp([D, 6, 1 if loss == "binary_cross_entropy" else 3])
    params = _population(net)
    outs = np.asarray(jdense.predict(net, params, X, population=True), np.float64)
    per_member = {"cross_entropy": softmax, "binary_cross_entropy": sigmoid, "mse": lambda z: z}[loss](outs)
    mean, std = jdense.ensemble_predict(net, params, X, loss=loss, return_std=True)
    np.testing.assert_allclose(mean, per_member.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(std, per_member.std(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(jdense.ensemble_predict(net, params, X, loss=loss), mean)
    with pytest.raises(TypeError, match="return_std must be True or False"):
        jdense.ensemble_predict(net, params, X, loss=loss, return_std="yes")


def test_uncertainty_split_against_numpy():
    probs = softmax(RNG.normal(size=(5, 20, 4)) * 2)
    u = jdense.uncertainty(probs)
    h = lambda p: -np.sum(p * np.log(p), -1)  # noqa: E731
    np.testing.assert_allclose(u["entropy"], h(probs.mean(0)), rtol=1e-12)
    np.testing.assert_allclose(u["expected_entropy"], h(probs).mean(0), rtol=1e-12)
    np.testing.assert_allclose(u["mutual_information"], h(probs.mean(0)) - h(probs).mean(0), rtol=1e-9, atol=1e-15)
    assert (u["mutual_information"] > 0).all()


def test_mutual_information_is_zero_when_members_agree_and_maximal_when_they_split():
    p = softmax(RNG.normal(size=(7, 3)))
    agree = jdense.uncertainty(np.broadcast_to(p, (6, 7, 3)))
    np.testing.assert_allclose(agree["mutual_information"], 0.0, atol=1e-12)
    np.testing.assert_allclose(agree["entropy"], agree["expected_entropy"], rtol=1e-12)
    split = jdense.uncertainty(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]))  # two sure members, opposite classes
    np.testing.assert_allclose([split["entropy"][0], split["expected_entropy"][0], split["mutual_information"][0]],
                               [np.log(2), 0.0, np.log(2)], atol=1e-12)
    q = RNG.uniform(size=(3, 9))  # binary: positive-class probabilities, (members, n) or (members, n, 1)
    two = jdense.uncertainty(np.stack([1 - q, q], -1))
    for form in (q, q[..., None]):
        for k, v in jdense.uncertainty(form).items():
            np.testing.assert_allclose(v, two[k], rtol=1e-12)


def test_uncertainty_errors():
    with pytest.raises(ValueError, match="must sum to 1"):
        jdense.uncertainty(np.full((2, 3, 4), 0.5))
    with pytest.raises(ValueError, match="probabilities in"):
        jdense.uncertainty(np.full((2, 3, 4), 2.0))
    with pytest.raises(ValueError, match=r"shape \(members, n, classes\)"):
        jdense.uncertainty(np.full((2, 3, 4, 5), 0.2))


# -- the reliability diagram ---------------------------------------------------------------------------
def test_plot_calibration_draws_the_bins_and_the_ece():
    plt = pytest.importorskip("matplotlib.pyplot")
    probs = softmax(RNG.normal(size=(300, 4)) * 3)
    y = RNG.integers(0, 4, 300)
    fig = jdense.plot_calibration(y, probs, bins=10)
    ax = fig.axes[0]
    assert ax.get_title() == f"ECE = {ece_reference(probs, y, bins=10):.3f}"
    conf, correct = probs.max(1), (probs.argmax(1) == y).astype(float)
    prob_true, _ = calibration.calibration_curve(correct, conf, n_bins=10)
    heights = [patch.get_height() for patch in ax.containers[0]]
    np.testing.assert_allclose(heights, prob_true, **EXACT)
    plt.close(fig)
    binary = jdense.plot_calibration(y % 2, RNG.uniform(size=300))  # positive-class probabilities
    assert binary.axes[0].get_title().startswith("ECE = ")
    plt.close(binary)
    with pytest.raises(ValueError, match="300 labels in 0..3"):
        jdense.plot_calibration(y[:10], probs)
