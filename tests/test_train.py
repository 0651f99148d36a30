"""Compiled training (``jdense.fit``, ``evaluate``, ``predict``) against independent references.

The references are written in NumPy (float64) from the definitions: a two-layer ReLU
network ``z = relu(x @ w0 + b0) @ w1 + b1``, its backpropagation by hand, and a plain
SGD (with optional momentum, as ``optax.sgd``) loop over minibatches. The per-epoch
order is the documented one: ``np.random.default_rng([*key_data(key), epoch]).permutation(n)``
when the batch is smaller than the data set, the natural order otherwise; each minibatch's
gradient is the (class-weighted) mean over its real samples, so the last partial batch
counts its samples exactly once.

Every compiled ``fit`` costs an XLA compile (~0.5 s on CPU), so the networks are tiny and
fits shared by several tests live in module-scoped fixtures.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jdense

# Tolerances, named once.
PARAM_TOL = dict(rtol=1e-5, atol=1e-6)  # fit's float32 params vs the float64 NumPy loop (a few dozen steps)
LOG_TOL = dict(rtol=1e-5, atol=1e-6)  # logged loss/metrics (float32 sums) vs float64 NumPy
RESUME_TOL = dict(rtol=0, atol=1e-6)  # resumed vs uninterrupted run (bitwise expected on CPU)
CALLABLE_LOSS_TOL = dict(rtol=1e-6, atol=1e-7)  # a loss callable vs the built-in of the same formula
BF16_TOL = dict(rtol=5e-2, atol=3e-2)  # bfloat16 forward/backward (8 mantissa bits) vs float64, 20 steps

N, D, C = 10, 3, 3  # samples, input width, classes of the small sets
KEY = jax.random.key(1)
SEED = [int(s) for s in np.asarray(jax.random.key_data(KEY)).ravel().astype(np.uint32)]

# --------------------------------------------------------------------------- NumPy references


def _np(params):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


def _np_forward(params, x):
    p = _np(params)
    z1 = x @ p["dense_0"]["w"] + p["dense_0"]["b"]
    h = np.maximum(z1, 0.0)
    return z1, h, h @ p["dense_1"]["w"] + p["dense_1"]["b"]


def _np_logits(params, x):
    return _np_forward(params, np.asarray(x, np.float64))[2]


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_per_sample(kind, z, y):
    """(per-sample loss, its derivative with respect to the outputs z)."""
    if kind == "cross_entropy":
        logp = _np_log_softmax(z)
        onehot = np.eye(z.shape[-1])[y]
        return -logp[np.arange(len(y)), y], np.exp(logp) - onehot
    if kind == "mse":
        diff = z - y
        return (diff**2).mean(-1), 2.0 * diff / z.shape[-1]
    raise AssertionError(kind)


def _np_metrics(kind, z, y):
    if kind == "cross_entropy":
        return {"accuracy": (z.argmax(-1) == y).astype(np.float64)}
    return {"mse": ((z - y) ** 2).mean(-1), "mae": np.abs(z - y).mean(-1)}


def _np_grads(params, x, y, kind, weights):
    """Per-sample losses and the gradient of the weighted mean loss, by backpropagation."""
    p = _np(params)
    z1, h, z = _np_forward(params, x)
    values, dz = _np_per_sample(kind, z, y)
    dz = dz * (weights / weights.sum())[:, None]
    dz1 = (dz @ p["dense_1"]["w"].T) * (z1 > 0)
    grads = {
        "dense_0": {"w": x.T @ dz1, "b": dz1.sum(0)},
        "dense_1": {"w": h.T @ dz, "b": dz.sum(0)},
    }
    return values, z, grads


def _epoch_order(n, batch, epoch, seed=SEED):
    return np.arange(n) if batch >= n else np.random.default_rng([*seed, epoch]).permutation(n)


def np_train(params, x, y, kind, *, lr, batch_size, epochs, momentum=0.0, class_weight=None,
             skip_nonfinite=False, seed=SEED):
    """Minibatch SGD (``optax.sgd(lr, momentum)``) in float64; returns per-epoch params and logs."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    batch = n if batch_size is None else batch_size
    p = _np(params)
    trace = jax.tree.map(np.zeros_like, p)
    per_epoch, logs = [], []
    for epoch in range(epochs):
        order = _epoch_order(n, batch, epoch, seed)
        sums = {}
        for start in range(0, n, batch):
            b = order[start : start + batch]
            w = np.ones(len(b)) if class_weight is None else np.asarray(class_weight, np.float64)[y[b]]
            values, z, g = _np_grads(p, x[b], y[b], kind, w)
            for name, v in {"loss": values, **_np_metrics(kind, z, y[b])}.items():
                sums[name] = sums.get(name, 0.0) + float((w * v).sum())
            sums["count"] = sums.get("count", 0.0) + float(w.sum())
            if skip_nonfinite and not all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(g)):
                continue
            trace = jax.tree.map(lambda t, gi: gi + momentum * t, trace, g)
            p = jax.tree.map(lambda pi, t: pi - lr * t, p, trace)
        per_epoch.append(p)
        count = sums.pop("count")
        logs.append({k: v / count for k, v in sums.items()})
    return per_epoch, logs


def assert_tree_allclose(actual, expected, **tol):
    a_leaves, a_def = jax.tree.flatten(actual)
    e_leaves, e_def = jax.tree.flatten(expected)
    assert a_def == e_def, (a_def, e_def)
    for a, e in zip(a_leaves, e_leaves):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), **tol)


def assert_tree_equal(actual, expected):
    a_leaves, a_def = jax.tree.flatten(actual)
    e_leaves, e_def = jax.tree.flatten(expected)
    assert a_def == e_def, (a_def, e_def)
    for a, e in zip(a_leaves, e_leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def tree_all_finite(tree) -> bool:
    return all(bool(np.isfinite(np.asarray(leaf, np.float64)).all()) for leaf in jax.tree.leaves(tree))


class Recorder(jdense.Callback):
    """Keeps a host copy of the params, state and logs at the end of every epoch."""

    def __init__(self):
        self.epochs, self.params, self.states, self.logs = [], [], [], []

    def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
        self.epochs.append(epoch)
        self.params.append(jax.tree.map(np.array, params))
        self.states.append(jax.tree.map(np.array, state))
        self.logs.append(dict(logs))
        return False


class CompileCounter:
    """Counts XLA compilations (jax.monitoring's backend-compile event) while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.names: list[str] = []

    def _listener(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.names.append(str(kwargs.get("fun_name", "?")))

    @property
    def count(self) -> int:
        return len(self.names)

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)
        return False


# --------------------------------------------------------------------------- data and shared fits


def _classification(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = (x @ rng.normal(size=(D, C))).argmax(-1).astype(np.int32)
    return x, y


def _regression(n, seed, out=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = (np.tanh(x @ rng.normal(size=(D, out))) + 0.1 * rng.normal(size=(n, out))).astype(np.float32)
    return x, y


CLS_NET = jdense.mlp([D, 4, C])
REG_NET = jdense.mlp([D, 4, 2])
X, Y = _classification(N, 0)
XR, YR = _regression(N, 1)
XR_VAL, YR_VAL = _regression(7, 2)


def _params(net, seed=0):
    """Random params with ``net.init``'s structure, drawn in NumPy (no compile per network shape)."""
    rng = np.random.default_rng(100 + seed)
    params = {}
    for name, layer in zip(net.names, net.layers):
        if isinstance(layer, jdense.Dense):
            w = rng.normal(size=(layer.in_features, layer.out_features)) / math.sqrt(layer.in_features)
            params[name] = {"w": jnp.asarray(w, jnp.float32),
                            "b": jnp.asarray(0.1 * rng.normal(size=layer.out_features), jnp.float32)}
        elif isinstance(layer, jdense.BatchNorm):
            params[name] = {"scale": jnp.ones(layer.features, jnp.float32), "bias": jnp.zeros(layer.features, jnp.float32)}
    expected = jax.eval_shape(net.init, jax.random.key(0))  # traced, not compiled
    assert jax.tree.structure(params) == jax.tree.structure(expected)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == jax.tree.map(lambda a: (a.shape, a.dtype), expected)
    return params


def _fit(net, params, x, y, **kw):
    kw.setdefault("key", KEY)
    kw.setdefault("verbose", 0)
    return jdense.fit(net, params, x, y, **kw)


@pytest.fixture(scope="module")
def minibatch_run():
    """n=10, batch 4 (last batch has 2 samples), SGD with momentum, 2 epochs, classification."""
    params = _params(CLS_NET)
    snapshot = jax.tree.map(np.array, params)
    x, y = X.copy(), Y.copy()
    rec = Recorder()
    result = _fit(CLS_NET, params, x, y, loss="cross_entropy", optimizer=optax.sgd(0.3, momentum=0.9),
                  epochs=2, batch_size=4, callbacks=[rec])
    return dict(params=params, snapshot=snapshot, x=x, y=y, rec=rec, result=result)


@pytest.fixture(scope="module")
def regression_run():
    params = _params(REG_NET)
    rec = Recorder()
    result = _fit(REG_NET, params, XR, YR, loss="mse", optimizer=optax.sgd(0.1), epochs=2, batch_size=4,
                  validation_data=(XR_VAL, YR_VAL), callbacks=[rec])
    return dict(params=params, rec=rec, result=result)


# --------------------------------------------------------------------------- gradient-descent variants


def test_batch_gradient_descent_is_one_full_batch_step_per_epoch():
    params = _params(CLS_NET)
    rec = Recorder()
    result = _fit(CLS_NET, params, X, Y, loss="cross_entropy", optimizer=optax.sgd(0.5), epochs=2,
                  batch_size=None, callbacks=[rec])
    expected, logs = np_train(params, X, Y, "cross_entropy", lr=0.5, batch_size=None, epochs=2)
    assert_tree_allclose(rec.params[0], expected[0], **PARAM_TOL)  # one step after epoch 1
    # The same first step written with jax.grad and optax directly.
    tx = optax.sgd(0.5)

    @jax.jit
    def optax_step(p):
        def loss_fn(p):
            h = jax.nn.relu(X @ p["dense_0"]["w"] + p["dense_0"]["b"])
            return optax.losses.softmax_cross_entropy_with_integer_labels(h @ p["dense_1"]["w"] + p["dense_1"]["b"], Y).mean()

        updates, _ = tx.update(jax.grad(loss_fn)(p), tx.init(p), p)
        return optax.apply_updates(p, updates)

    assert_tree_allclose(rec.params[0], optax_step(params), **PARAM_TOL)
    assert_tree_allclose(result.params, expected[1], **PARAM_TOL)
    # Logged loss of a full-batch epoch: the loss before that epoch's single step.
    np.testing.assert_allclose(result.history["loss"], [lg["loss"] for lg in logs], **LOG_TOL)
    np.testing.assert_allclose(result.history["accuracy"], [lg["accuracy"] for lg in logs], **LOG_TOL)
    assert result.epochs == 2


def test_stochastic_gradient_descent_follows_the_per_epoch_permutation():
    params = _params(CLS_NET)
    rec = Recorder()
    result = _fit(CLS_NET, params, X, Y, loss="cross_entropy", optimizer=optax.sgd(0.2), epochs=2,
                  batch_size=1, callbacks=[rec])
    expected, logs = np_train(params, X, Y, "cross_entropy", lr=0.2, batch_size=1, epochs=2)
    assert_tree_allclose(rec.params[0], expected[0], **PARAM_TOL)
    assert_tree_allclose(result.params, expected[1], **PARAM_TOL)
    np.testing.assert_allclose(result.history["loss"], [lg["loss"] for lg in logs], **LOG_TOL)
    # The reference is sensitive to the order: another seed's permutation gives other params.
    other, _ = np_train(params, X, Y, "cross_entropy", lr=0.2, batch_size=1, epochs=1, seed=[7, 7])
    assert not np.allclose(other[0]["dense_0"]["w"], expected[0]["dense_0"]["w"], **PARAM_TOL)


def test_minibatch_with_partial_last_batch(minibatch_run):
    """n=10, batch 4: batches of 4, 4, 2; the last one's gradient is the mean over its 2 samples."""
    run = minibatch_run
    expected, logs = np_train(run["params"], X, Y, "cross_entropy", lr=0.3, momentum=0.9, batch_size=4, epochs=2)
    assert_tree_allclose(run["rec"].params[0], expected[0], **PARAM_TOL)
    assert_tree_allclose(run["result"].params, expected[1], **PARAM_TOL)
    history = run["result"].history
    assert set(history) == {"loss", "accuracy"}
    np.testing.assert_allclose(history["loss"], [lg["loss"] for lg in logs], **LOG_TOL)
    np.testing.assert_allclose(history["accuracy"], [lg["accuracy"] for lg in logs], **LOG_TOL)
    assert run["rec"].epochs == [0, 1]
    assert run["result"].epochs == 2


def test_partial_batch_counts_every_sample_once_with_a_linear_loss():
    """With a loss linear in the params the gradient is constant, so one epoch of SGD moves the
    params by exactly -lr * (sum over batches of the batch-mean gradient); the logged loss is
    the mean over all 10 samples, each taken at the params of its own step."""
    net = jdense.Sequential([jdense.Dense(D, 2, activation=None)])
    params = _params(net, 3)
    t = np.random.default_rng(4).normal(size=(N, 2)).astype(np.float32)
    lr, batch = 0.1, 4
    result = _fit(net, params, X, t, loss=lambda o, y: jnp.sum(o * y, axis=-1), optimizer=optax.sgd(lr),
                  epochs=1, batch_size=batch)
    x64, t64 = X.astype(np.float64), t.astype(np.float64)
    order = _epoch_order(N, batch, 0)
    w, b = (np.asarray(params["dense_0"][k], np.float64) for k in ("w", "b"))
    loss_sum = 0.0
    for start in range(0, N, batch):
        idx = order[start : start + batch]
        loss_sum += float(((x64[idx] @ w + b) * t64[idx]).sum())
        w = w - lr * np.einsum("ni,nj->ij", x64[idx], t64[idx]) / len(idx)
        b = b - lr * t64[idx].mean(0)
    assert len(range(0, N, batch)) == 3 and N - 2 * batch == 2  # the last batch really is partial
    assert_tree_allclose(result.params, {"dense_0": {"w": w, "b": b}}, **PARAM_TOL)
    np.testing.assert_allclose(result.history["loss"][0], loss_sum / N, **LOG_TOL)
    assert set(result.history) == {"loss"}  # no default metrics for a callable loss


def test_partial_batch_logged_loss_with_zero_learning_rate():
    """lr=0: params never move, so the logged loss and accuracy are the plain means over all samples."""
    params = _params(CLS_NET, 5)
    result = _fit(CLS_NET, params, X, Y, loss="cross_entropy", optimizer=optax.sgd(0.0), epochs=1, batch_size=4)
    values, _ = _np_per_sample("cross_entropy", _np_logits(params, X), Y)
    np.testing.assert_allclose(result.history["loss"][0], values.mean(), **LOG_TOL)
    acc = (_np_logits(params, X).argmax(-1) == Y).mean()
    np.testing.assert_allclose(result.history["accuracy"][0], acc, **LOG_TOL)
    assert_tree_equal(result.params, params)


# --------------------------------------------------------------------------- logged metrics, evaluate, predict


def test_regression_logs_mse_mae_and_validation_metrics(regression_run):
    run = regression_run
    history = run["result"].history
    assert set(history) == {"loss", "mse", "mae", "val_loss", "val_mse", "val_mae"}
    expected, logs = np_train(run["params"], XR, YR, "mse", lr=0.1, batch_size=4, epochs=2)
    assert_tree_allclose(run["result"].params, expected[1], **PARAM_TOL)
    for name in ("loss", "mse", "mae"):
        np.testing.assert_allclose(history[name], [lg[name] for lg in logs], **LOG_TOL, err_msg=name)
    np.testing.assert_allclose(history["loss"], history["mse"], **LOG_TOL)
    # Validation metrics: the end-of-epoch params on the validation set.
    for epoch, p in enumerate(run["rec"].params):
        z = _np_logits(p, XR_VAL)
        m = _np_metrics("mse", z, YR_VAL)
        np.testing.assert_allclose(history["val_loss"][epoch], m["mse"].mean(), **LOG_TOL)
        np.testing.assert_allclose(history["val_mse"][epoch], m["mse"].mean(), **LOG_TOL)
        np.testing.assert_allclose(history["val_mae"][epoch], m["mae"].mean(), **LOG_TOL)
    # The callbacks saw the same logs that the history holds.
    assert [lg["val_mae"] for lg in run["rec"].logs] == history["val_mae"]


@pytest.mark.parametrize("batch_size", [None, 3])
def test_evaluate_matches_numpy(minibatch_run, batch_size):
    params = minibatch_run["result"].params
    logs = jdense.evaluate(CLS_NET, params, X, Y, loss="cross_entropy", batch_size=batch_size)
    z = _np_logits(params, X)
    values, _ = _np_per_sample("cross_entropy", z, Y)
    assert set(logs) == {"loss", "accuracy"}
    np.testing.assert_allclose(logs["loss"], values.mean(), **LOG_TOL)
    np.testing.assert_allclose(logs["accuracy"], (z.argmax(-1) == Y).mean(), **LOG_TOL)


def test_evaluate_regression_metrics(regression_run):
    params = regression_run["result"].params
    logs = jdense.evaluate(REG_NET, params, XR_VAL, YR_VAL, loss="mse", batch_size=3)
    m = _np_metrics("mse", _np_logits(params, XR_VAL), YR_VAL)
    np.testing.assert_allclose(logs["loss"], m["mse"].mean(), **LOG_TOL)
    np.testing.assert_allclose(logs["mae"], m["mae"].mean(), **LOG_TOL)
    # The last epoch's val_* logs are evaluate() of the final params.
    np.testing.assert_allclose(regression_run["result"].history["val_loss"][-1], logs["loss"], **LOG_TOL)


@pytest.mark.parametrize("batch_size", [None, 3, 10])
def test_predict_matches_apply(minibatch_run, batch_size):
    params = minibatch_run["result"].params
    out = jdense.predict(CLS_NET, params, X, batch_size=batch_size)
    assert out.shape == (N, C)
    np.testing.assert_allclose(np.asarray(out), np.asarray(CLS_NET.apply(params, X)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), _np_logits(params, X), **LOG_TOL)


# --------------------------------------------------------------------------- non-finite losses


def test_huge_learning_rate_raises_naming_the_epoch():
    with pytest.raises(FloatingPointError, match=r"in epoch 1\b"):
        _fit(REG_NET, _params(REG_NET), XR, YR, loss="mse", optimizer=optax.sgd(1e8), epochs=3, batch_size=2)


def test_nan_in_x_raises_before_training_naming_the_rows():
    x = XR.copy()
    x[4, 1] = np.nan
    x[7, 0] = np.inf
    with CompileCounter() as counter, pytest.raises(ValueError, match=r"fit: x has 2 of 10 rows with NaN or infinite "
                                                                      r"values \(the first is row 4\)"):
        _fit(REG_NET, _params(REG_NET), x, YR, loss="mse", optimizer=optax.sgd(0.1), epochs=2, batch_size=5)
    assert counter.count == 0
    with pytest.raises(ValueError, match=r"fit\(validation_data\): y has 1 of 10 rows"):
        _fit(REG_NET, _params(REG_NET), XR, YR, loss="mse", optimizer=optax.sgd(0.1), epochs=2, batch_size=5,
             validation_data=(XR, np.where(np.arange(10)[:, None] == 3, np.nan, YR)))
    with pytest.raises(ValueError, match=r"evaluate: x has 1 of 10 rows"):
        jdense.evaluate(REG_NET, _params(REG_NET), x[:5].tolist() + XR[5:].tolist(), YR, loss="mse")


def test_a_diverging_fit_raises_naming_the_epoch():
    with pytest.raises(FloatingPointError, match=r"epoch 1\b.*skip_nonfinite"):
        _fit(REG_NET, _params(REG_NET), XR, YR * 1e30, loss="mse", optimizer=optax.sgd(1e30), epochs=2, batch_size=5)


def test_skip_nonfinite_skips_only_the_bad_steps():
    """One NaN sample with batch_size=1: its step is skipped, every other step is plain SGD."""
    x = X.copy()
    x[6, 0] = np.nan
    params = _params(CLS_NET)
    result = _fit(CLS_NET, params, x, Y, loss="cross_entropy", optimizer=optax.sgd(0.2), epochs=2, batch_size=1,
                  skip_nonfinite=True)
    assert tree_all_finite(result.params)
    expected, _ = np_train(params, x, Y, "cross_entropy", lr=0.2, batch_size=1, epochs=2, skip_nonfinite=True)
    assert_tree_allclose(result.params, expected[1], **PARAM_TOL)
    assert math.isfinite(result.history["loss"][0])  # the skipped step is left out of the logged mean


def test_skip_nonfinite_with_huge_learning_rate_keeps_finite_params():
    result = _fit(REG_NET, _params(REG_NET), XR, YR, loss="mse", optimizer=optax.sgd(1e8), epochs=3, batch_size=2,
                  skip_nonfinite=True)
    assert result.epochs == 3
    assert tree_all_finite(result.params)


def test_skip_nonfinite_keeps_finite_params_when_every_step_is_bad():
    x = XR.copy()
    x[:, 0] = np.nan  # every full-batch step has NaN gradients
    params = _params(REG_NET)
    result = _fit(REG_NET, params, x, YR, loss="mse", optimizer=optax.sgd(0.1), epochs=12, batch_size=None,
                  skip_nonfinite=True)
    assert tree_all_finite(result.params), "skip_nonfinite=True let NaN updates through after 10 bad steps"
    assert_tree_equal(result.params, params)


def test_skip_nonfinite_keeps_batchnorm_state_finite():
    net = jdense.mlp([D, 4, 2], batch_norm=True)
    x = XR.copy()
    x[3, 1] = np.nan
    result = _fit(net, _params(net), x, YR, loss="mse", optimizer=optax.sgd(0.1), epochs=1, batch_size=2,
                  skip_nonfinite=True)
    assert tree_all_finite(result.params)
    assert tree_all_finite(result.state), f"BatchNorm state became {result.state}"
    assert np.isfinite(np.asarray(jdense.predict(net, result.params, XR, state=result.state))).all()


# --------------------------------------------------------------------------- compilation, determinism, inputs


def test_fit_compiles_once_not_per_epoch():
    net = jdense.mlp([D, 5, C])
    params = _params(net, 2)

    class CountAtEpochEnd(jdense.Callback):
        def __init__(self, counter):
            self.counter, self.counts = counter, []

        def on_epoch_end(self, epoch, logs, params, *, opt_state=None, state=None):
            self.counts.append(self.counter.count)

    def run(epochs):
        with CompileCounter() as counter:
            probe = CountAtEpochEnd(counter)
            _fit(net, params, X, Y, loss="cross_entropy", optimizer=optax.adam(1e-2), epochs=epochs, batch_size=4,
                 validation_data=(X[:7], Y[:7]), callbacks=[probe])
        return counter, probe.counts

    run(1)  # warm-up: small eager helpers (key handling, copies, staging the data) compile once per process
    c2, counts2 = run(2)
    c6, counts6 = run(6)
    assert c2.count >= 1, "the compile listener saw nothing; the test would be vacuous"
    assert c2.count == c6.count, (c2.names, c6.names)
    # Nothing compiles after the first epoch.
    assert counts2 == [counts2[0]] * 2 and counts6 == [counts6[0]] * 6
    assert counts6[-1] == c6.count


def test_same_key_is_bitwise_deterministic_and_inputs_survive(minibatch_run):
    run = minibatch_run
    again = _fit(CLS_NET, run["params"], run["x"], run["y"], loss="cross_entropy",
                 optimizer=optax.sgd(0.3, momentum=0.9), epochs=2, batch_size=4)
    assert_tree_equal(again.params, run["result"].params)
    assert again.history == run["result"].history
    # The caller's params (JAX arrays) are neither mutated nor deleted by donation.
    for leaf in jax.tree.leaves(run["params"]):
        assert not leaf.is_deleted()
    assert_tree_equal(run["params"], run["snapshot"])
    np.testing.assert_array_equal(run["x"], X)
    np.testing.assert_array_equal(run["y"], Y)
    # The returned arrays are alive too.
    assert tree_all_finite(run["result"].params) and tree_all_finite(run["result"].opt_state)


def test_different_key_gives_different_params(minibatch_run):
    other = _fit(CLS_NET, minibatch_run["params"], X, Y, loss="cross_entropy", optimizer=optax.sgd(0.3, momentum=0.9),
                 epochs=2, batch_size=4, key=jax.random.key(2))
    assert not np.array_equal(np.asarray(other.params["dense_0"]["w"]),
                              np.asarray(minibatch_run["result"].params["dense_0"]["w"]))


# --------------------------------------------------------------------------- Dropout + BatchNorm, resume


XB, YB = _classification(32, 11)
BN_NET = jdense.mlp([D, 8, C], dropout=0.2, batch_norm=True)
BN_EPOCHS = 6


def _bn_fit(params, **kw):
    return _fit(BN_NET, params, XB, YB, loss="cross_entropy", optimizer=jdense.optimizer(BN_NET, "adam", 2e-2),
                batch_size=8, **kw)


@pytest.fixture(scope="module")
def bn_run():
    params = _params(BN_NET, 4)
    full = _bn_fit(params, epochs=BN_EPOCHS)
    half = _bn_fit(params, epochs=BN_EPOCHS // 2)
    half_snapshot = jax.tree.map(np.array, (half.params, half.opt_state, half.state))
    resumed = _bn_fit(half.params, opt_state=half.opt_state, state=half.state, initial_epoch=BN_EPOCHS // 2,
                      epochs=BN_EPOCHS)
    return dict(params=params, full=full, half=half, half_snapshot=half_snapshot, resumed=resumed)


def test_dropout_batchnorm_trains_and_updates_state(bn_run):
    full = bn_run["full"]
    assert full.history["loss"][-1] < full.history["loss"][0]
    init_state = BN_NET.init_state()
    assert set(full.state) == set(init_state) == {"batch_norm_0"}
    assert not np.allclose(full.state["batch_norm_0"]["mean"], init_state["batch_norm_0"]["mean"])
    assert not np.allclose(full.state["batch_norm_0"]["var"], init_state["batch_norm_0"]["var"])
    assert tree_all_finite(full.state)


def test_dropout_batchnorm_inference_mode(bn_run):
    full = bn_run["full"]
    out1 = jdense.predict(BN_NET, full.params, XB, batch_size=5, state=full.state)
    out2 = jdense.predict(BN_NET, full.params, XB, batch_size=5, state=full.state)
    np.testing.assert_array_equal(np.asarray(out1), np.asarray(out2))  # deterministic: no dropout
    expected = BN_NET.apply(full.params, XB, state=full.state)
    np.testing.assert_allclose(np.asarray(out1), np.asarray(expected), rtol=1e-6, atol=1e-6)
    # The running statistics are used, not the batch's and not the initial ones.
    initial = BN_NET.apply(full.params, XB, state=BN_NET.init_state())
    assert not np.allclose(np.asarray(out1), np.asarray(initial), atol=1e-3)
    logs = jdense.evaluate(BN_NET, full.params, XB, YB, loss="cross_entropy", state=full.state, batch_size=7)
    z = np.asarray(expected, np.float64)
    np.testing.assert_allclose(logs["loss"], -_np_log_softmax(z)[np.arange(len(YB)), YB].mean(), **LOG_TOL)
    np.testing.assert_allclose(logs["accuracy"], (z.argmax(-1) == YB).mean(), **LOG_TOL)


def test_resume_repeats_an_uninterrupted_run(bn_run):
    full, resumed = bn_run["full"], bn_run["resumed"]
    assert resumed.epochs == BN_EPOCHS
    assert_tree_allclose(resumed.params, full.params, **RESUME_TOL)
    assert_tree_allclose(resumed.state, full.state, **RESUME_TOL)
    assert_tree_allclose(resumed.opt_state, full.opt_state, **RESUME_TOL)
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"][BN_EPOCHS // 2 :], **RESUME_TOL)
    # The arrays handed back to fit for resuming are still usable and unchanged.
    half = bn_run["half"]
    assert_tree_equal((half.params, half.opt_state, half.state), bn_run["half_snapshot"])


def test_batchnorm_statistics_ignore_the_padding():
    """lr=0 keeps the params fixed; the running averages then follow the real rows of each batch."""
    net = jdense.mlp([D, 4, 2], batch_norm=True)
    params = _params(net, 6)
    result = _fit(net, params, XR, YR, loss="mse", optimizer=optax.sgd(0.0), epochs=1, batch_size=4)
    p = _np(params)
    h = np.maximum(XR.astype(np.float64) @ p["dense_0"]["w"] + p["dense_0"]["b"], 0.0)
    mean, var = np.zeros(4), np.ones(4)
    order = _epoch_order(N, 4, 0)
    for start in range(0, N, 4):
        hb = h[order[start : start + 4]]
        mean = 0.9 * mean + 0.1 * hb.mean(0)
        var = 0.9 * var + 0.1 * hb.var(0)
    np.testing.assert_allclose(result.state["batch_norm_0"]["mean"], mean, **LOG_TOL)
    np.testing.assert_allclose(result.state["batch_norm_0"]["var"], var, **LOG_TOL)


# --------------------------------------------------------------------------- class weights


CLASS_WEIGHTS = [2.0, 1.0, 0.5]


@pytest.mark.parametrize("class_weight", [{0: 2.0, 2: 0.5}, CLASS_WEIGHTS], ids=["dict", "sequence"])
def test_class_weight_weights_loss_and_gradient(class_weight):
    params = _params(CLS_NET, 7)
    result = _fit(CLS_NET, params, X, Y, loss="cross_entropy", optimizer=optax.sgd(0.3), epochs=1, batch_size=4,
                  class_weight=class_weight)
    expected, logs = np_train(params, X, Y, "cross_entropy", lr=0.3, batch_size=4, epochs=1,
                              class_weight=CLASS_WEIGHTS)
    assert_tree_allclose(result.params, expected[0], **PARAM_TOL)
    np.testing.assert_allclose(result.history["loss"][0], logs[0]["loss"], **LOG_TOL)
    unweighted, _ = np_train(params, X, Y, "cross_entropy", lr=0.3, batch_size=4, epochs=1)
    assert not np.allclose(unweighted[0]["dense_1"]["b"], expected[0]["dense_1"]["b"], **PARAM_TOL)


def test_class_weight_logged_loss_at_fixed_params():
    """lr=0: the logged loss is sum_i w[y_i] * loss_i / sum_i w[y_i] over the whole set."""
    params = _params(CLS_NET, 8)
    result = _fit(CLS_NET, params, X, Y, loss="cross_entropy", optimizer=optax.sgd(0.0), epochs=1, batch_size=3,
                  class_weight=CLASS_WEIGHTS)
    values, _ = _np_per_sample("cross_entropy", _np_logits(params, X), Y)
    w = np.asarray(CLASS_WEIGHTS)[Y]
    np.testing.assert_allclose(result.history["loss"][0], (w * values).sum() / w.sum(), **LOG_TOL)


def test_binary_cross_entropy_with_class_weight_at_fixed_params():
    """One output unit, 0/1 labels: sigmoid cross-entropy, accuracy of ``logit > 0``, class weights by label."""
    net = jdense.mlp([D, 4, 1])
    params = _params(net, 10)
    y = (X[:, 0] > 0).astype(np.float32)
    result = _fit(net, params, X, y, loss="binary_cross_entropy", optimizer=optax.sgd(0.0), epochs=1, batch_size=4,
                  class_weight={1: 3.0})
    z = _np_logits(params, X)[:, 0]
    values = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    w = np.where(y == 1, 3.0, 1.0)
    np.testing.assert_allclose(result.history["loss"][0], (w * values).sum() / w.sum(), **LOG_TOL)
    logs = jdense.evaluate(net, params, X, y, loss="binary_cross_entropy")
    np.testing.assert_allclose(logs["loss"], values.mean(), **LOG_TOL)
    np.testing.assert_allclose(logs["accuracy"], ((z > 0) == (y == 1)).mean(), **LOG_TOL)


@pytest.mark.parametrize(
    "class_weight, match",
    [({3: 1.0}, r"class_weight has class 3"), ({-1: 1.0}, r"class_weight has class -1"),
     ([1.0, 2.0], r"one weight per class"), ([1.0, -1.0, 1.0], r"finite and >= 0")],
)
def test_class_weight_errors(class_weight, match):
    with pytest.raises(ValueError, match=match):
        _fit(CLS_NET, _params(CLS_NET), X, Y, loss="cross_entropy", optimizer=optax.sgd(0.1), epochs=1, batch_size=4,
             class_weight=class_weight)


# --------------------------------------------------------------------------- guards before compiling


def _guard_kwargs():
    return dict(net=CLS_NET, params=_params(CLS_NET), x=X, y=Y, loss="cross_entropy", optimizer=optax.sgd(0.1),
                epochs=1, batch_size=4, key=KEY, verbose=0)


BCE_NET = jdense.mlp([D, 4, 1])
GUARDS = {
    "x_y_length": (dict(y=Y[:7]), ValueError, r"x has 10 samples but y has 7"),
    "labels_out_of_range": (dict(y=np.where(Y == 0, 3, Y)), ValueError, r"outside 0\.\.2 for a network with 3 outputs"),
    "negative_label": (dict(y=np.where(Y == 0, -1, Y)), ValueError, r"outside 0\.\.2"),
    "val_labels_out_of_range": (dict(validation_data=(X, np.full(N, 5))), ValueError, r"validation_data.*outside"),
    "empty": (dict(x=X[:0], y=Y[:0]), ValueError, r"x is empty"),
    "batch_too_large": (dict(batch_size=11), ValueError, r"batch_size=11 is larger than the data set \(10 samples\)"),
    "batch_zero": (dict(batch_size=0), ValueError, r"batch_size must be a positive int"),
    "epochs_zero": (dict(epochs=0), ValueError, r"epochs must be a positive int"),
    "initial_epoch": (dict(epochs=2, initial_epoch=2), ValueError, r"initial_epoch"),
    "unknown_loss": (dict(loss="hinge"), ValueError, r"unknown loss 'hinge'"),
    "unknown_metric": (dict(metrics=["f2"]), ValueError, r"unknown metric 'f2'"),
    "optimizer_not_optax": (dict(optimizer=5), TypeError, r"optimizer must be a name such as 'adam' .* or an optax"),
    "optimizer_unknown_name": (dict(optimizer="adamm"), ValueError, r"unknown optimizer 'adamm'"),
    "key_missing": (dict(key=None), TypeError, r"key= is required.*key=jax\.random\.key\(0\)"),
    "epochs_float": (dict(epochs=1.5), TypeError, r"epochs must be a positive int, got 1\.5 of type float"),
    "batch_float": (dict(batch_size=4.0), TypeError, r"batch_size must be a positive int, got 4\.0 of type float"),
    "y_none": (dict(y=None), TypeError, r"fit: y is None but x is a ndarray; pass the targets y"),
    "bce_labels": (dict(net=BCE_NET, params=_params(BCE_NET), loss="binary_cross_entropy",
                        y=np.linspace(0, 1, N).astype(np.float32)), ValueError, r"needs labels 0 or 1"),
    "val_length": (dict(validation_data=(X, Y[:5])), ValueError, r"validation_data.*x has 10 samples but y has 5"),
    "key_not_a_key": (dict(key=0), TypeError, r"PRNG key"),
    "not_a_callback": (dict(callbacks=[object()]), TypeError, r"is not a callback"),
    "bad_validation_data": (dict(validation_data=(X,)), TypeError, r"validation_data must be a pair"),
    # Reproductions from the reliability issue: each a clear error naming the argument, before compiling.
    "string_y": (dict(y=np.array(["a"] * N)), TypeError, r"fit: y must be numeric, got dtype <U1"),
    "ragged_x": (dict(x=[[1.0, 2.0, 3.0]] * 9 + [[1.0]]), ValueError, r"fit: x must be a rectangular numeric array"),
    "class_weight_name": (dict(class_weight={"cat": 2}), TypeError, r"class_weight keys must be class indices"),
    "class_weight_zeros": (dict(class_weight=[0.0, 0.0, 0.0]), ValueError, r"class_weight is 0 for every class"),
    "initial_epoch_string": (dict(initial_epoch="1"), TypeError, r"initial_epoch must be an int, got '1'"),
    "key_float_array": (dict(key=jnp.ones(2)), TypeError, r"key must be a JAX PRNG key"),
    "compute_dtype_int": (dict(compute_dtype=jnp.int32), TypeError, r"compute_dtype must be a floating dtype"),
    "state_list": (dict(state=[1]), TypeError, r"fit: state must be a dict like net.init_state\(\)"),
    "params_other_net": (dict(params=jdense.mlp([D, 5, 9]).init(jax.random.key(0))), ValueError,
                         r"fit: params do not fit this network"),
    "params_key": (dict(params=jax.random.key(0)), TypeError, r"got a PRNG key .* did you swap the arguments"),
    "opt_state_other": (dict(opt_state=optax.adam(1e-3).init({"w": jnp.zeros(3)})), ValueError,
                        r"opt_state does not fit this optimizer"),
    "monitor_without_validation": (dict(callbacks=[jdense.EarlyStopping("val_loss")]), ValueError,
                                   r"cannot monitor 'val_loss'.*pass validation_data="),
    "sample_weight_length": (dict(sample_weight=np.ones(3)), ValueError, r"sample_weight must have one weight per sample"),
    "split_and_data": (dict(validation_split=0.2, validation_data=(X, Y)), ValueError, r"not both"),
    "split_range": (dict(validation_split=1.5), ValueError, r"validation_split must be a fraction in \(0, 1\)"),
}


def test_numpy_scalars_and_a_single_callback_are_accepted():
    """NumPy numbers are ordinary numbers; one callback needs no list."""
    params = _params(CLS_NET)
    seen = []

    class Note(jdense.Callback):
        def on_epoch_end(self, epoch, logs, params, **kw):
            seen.append(epoch)

    r = jdense.fit(CLS_NET, params, X, Y, loss="cross_entropy", optimizer=jdense.optimizer(CLS_NET, "sgd", np.float32(0.1)),
                   epochs=np.int64(2), batch_size=np.int32(5), initial_epoch=np.int64(0), key=KEY, verbose=0,
                   callbacks=Note())
    assert r.epochs == 2 and seen == [0, 1]


@pytest.mark.parametrize("case", list(GUARDS))
def test_guards_raise_before_compiling(case):
    override, exc, match = GUARDS[case]
    kwargs = {**_guard_kwargs(), **override}
    net, params, x, y = (kwargs.pop(k) for k in ("net", "params", "x", "y"))
    with pytest.raises(exc, match=match):  # first call: eager helpers may compile once per process
        jdense.fit(net, params, x, y, **kwargs)
    with CompileCounter() as counter, pytest.raises(exc, match=match):
        jdense.fit(net, params, x, y, **kwargs)
    assert counter.count == 0, counter.names


def test_evaluate_and_predict_guards():
    params = _params(CLS_NET)
    with pytest.raises(ValueError, match=r"evaluate: 1 labels are outside 0\.\.2"):
        jdense.evaluate(CLS_NET, params, X, np.where(np.arange(N) == 0, 7, Y), loss="cross_entropy")
    # A batch larger than the data is clamped to it in inference (as the README's batch_size=1024).
    assert jdense.evaluate(CLS_NET, params, X, Y, loss="cross_entropy", batch_size=11) == jdense.evaluate(
        CLS_NET, params, X, Y, loss="cross_entropy")
    with pytest.raises(ValueError, match=r"evaluate: x has 10 samples but y has 9"):
        jdense.evaluate(CLS_NET, params, X, Y[:9], loss="cross_entropy")
    np.testing.assert_array_equal(jdense.predict(CLS_NET, params, X, batch_size=11), jdense.predict(CLS_NET, params, X))
    with pytest.raises(ValueError, match=r"predict: x is empty"):
        jdense.predict(CLS_NET, params, X[:0])


def test_loss_callable_with_per_sample_values_matches_builtin(regression_run):
    result = _fit(REG_NET, regression_run["params"], XR, YR,
                  loss=lambda o, t: optax.losses.squared_error(o, t).mean(-1), optimizer=optax.sgd(0.1), epochs=2,
                  batch_size=4, validation_data=(XR_VAL, YR_VAL))
    reference = regression_run["result"]
    assert set(result.history) == {"loss", "val_loss"}
    assert_tree_allclose(result.params, reference.params, **CALLABLE_LOSS_TOL)
    for name in ("loss", "val_loss"):
        np.testing.assert_allclose(result.history[name], reference.history[name], **CALLABLE_LOSS_TOL)


def test_loss_callable_returning_a_scalar_raises():
    with pytest.raises(ValueError, match=r"per-sample losses of shape \(4,\)"):
        _fit(REG_NET, _params(REG_NET), XR, YR, loss=lambda o, t: optax.losses.squared_error(o, t).mean(),
             optimizer=optax.sgd(0.1), epochs=1, batch_size=4)


# --------------------------------------------------------------------------- mixed precision


def test_bfloat16_compute_trains_and_keeps_float32_params():
    net = jdense.mlp([D, 8, C])
    params = _params(net, 9)
    result = _fit(net, params, XB, YB, loss="cross_entropy", optimizer=optax.sgd(0.3, momentum=0.5), epochs=5,
                  batch_size=8, compute_dtype=jnp.bfloat16)
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert all(np.isfinite(result.history["loss"]))
    for leaf in jax.tree.leaves(result.params):
        assert leaf.dtype == jnp.float32
    # Near the float64 run, but not float32-close: the pass really ran in bfloat16.
    expected, logs = np_train(params, XB, YB, "cross_entropy", lr=0.3, momentum=0.5, batch_size=8, epochs=5)
    assert_tree_allclose(result.params, expected[-1], **BF16_TOL)
    np.testing.assert_allclose(result.history["loss"], [lg["loss"] for lg in logs], **BF16_TOL)
    assert not np.allclose(result.history["loss"], [lg["loss"] for lg in logs], **LOG_TOL)
    for leaf in jax.tree.leaves(result.opt_state):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32


def test_float16_dynamic_loss_scaling_trains_what_would_underflow():
    """A loss so small that its float16 gradients underflow to 0 trains with loss scaling, close to float32."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype(np.float32), rng.normal(size=(64, 1)).astype(np.float32)
    net = jdense.mlp([8, 16, 1])
    p0 = net.init(jax.random.key(0))

    def tiny(out, t):  # mse scaled by 1e-9: dL/d(outputs) ~ 1e-10, below float16's smallest subnormal (6e-8)
        return 1e-9 * jnp.mean((out - t.reshape(out.shape)) ** 2, axis=-1)

    def grads_f16(p):
        half = jax.tree.map(lambda a: a.astype(jnp.float16), p)
        return jax.grad(lambda q: jnp.mean(tiny(net.apply(q, x.astype(jnp.float16)).astype(jnp.float32), y)))(half)

    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads_f16(p0)))  # no scaling: nothing learns
    kw = dict(loss=tiny, epochs=3, batch_size=16, key=KEY, verbose=0)
    r16 = jdense.fit(net, p0, x, y, optimizer=jdense.optimizer(net, "sgd", 1e7), compute_dtype=jnp.float16, **kw)
    r32 = jdense.fit(net, p0, x, y, optimizer=jdense.optimizer(net, "sgd", 1e7), **kw)
    for a, b, c in zip(jax.tree.leaves(r16.params), jax.tree.leaves(r32.params), jax.tree.leaves(p0)):
        moved = float(jnp.abs(b - c).max())
        assert moved > 0.05 and float(jnp.abs(a - b).max()) < 0.01 * moved * 10  # float16 tracks float32 (~1e-3 rel.)
    assert float(r16.state["loss_scale"]["scale"]) == 2.0**15 and int(r16.state["loss_scale"]["good_steps"]) == 12
    again = jdense.fit(net, r16.params, x, y, optimizer=jdense.optimizer(net, "sgd", 1e7), compute_dtype=jnp.float16,
                       state=r16.state, **{**kw, "epochs": 1})  # resumes with its scale
    assert int(again.state["loss_scale"]["good_steps"]) == 16


def test_fit_copies_the_data_set_at_most_once():
    """Peak RSS of a fit on 400,000 x 64 float32 rows (102 MB) rises by at most 2.5x the data (the data itself included)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import resource, jax, numpy as np, jdense
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        net = jdense.mlp([64, 32, 10])
        kw = dict(loss="cross_entropy", batch_size=1024, key=jax.random.key(1), verbose=0, epochs=1)
        small = np.ones((4096, 64), np.float32)
        jdense.fit(net, net.init(jax.random.key(0)), small, np.zeros(4096, np.int32), optimizer=jdense.optimizer(net), **kw)
        base = peak()
        x = np.random.default_rng(0).standard_normal((400_000, 64), dtype=np.float32)
        y = np.zeros(400_000, np.int32)
        jdense.fit(net, net.init(jax.random.key(0)), x, y, optimizer=jdense.optimizer(net), **kw)
        print((peak() - base) / (x.nbytes + y.nbytes))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert float(out.stdout.split()[-1]) <= 2.5, out.stdout
