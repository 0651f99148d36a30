"""jdense.optimizer against optax on explicitly penalized losses, plus a small end-to-end training run."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jdense
from jdense import Dense, Sequential, losses, mlp

UPDATE_ATOL = 1e-6  # |jdense update - optax reference update| (updates are ~lr = 1e-2)
EXACT_RTOL = 1e-6  # updates that are one or two float32 products of the same numbers
LR = 1e-2


# Every test but the last uses a 3 -> tanh 4 -> 2 network (its layers differ only in lambda_
# and optimizer), so that the gradient and the eager optimizer ops compile once for the file.
NET = mlp([3, 4, 2], activation="tanh")
TWO_LAMBDAS = Sequential([Dense(3, 4, activation="tanh", lambda_=0.1), Dense(4, 2, activation=None, lambda_=0.01)])


def _penalty(net, params):
    """Σ_layers (λ/2)·||w||², weights only."""
    return sum(
        0.5 * layer.lambda_ * jnp.sum(params[name]["w"] ** 2) for name, layer in zip(net.names, net.layers)
    )


@jax.jit
def _mse_grad(params, x, t):
    """Gradient of the unpenalized MSE loss."""
    return jax.grad(lambda p: losses.mse(NET.apply(p, x), t))(params)


@jax.jit
def _penalized_grad(params, x, t):
    """Gradient of MSE + Σ (λ/2)·||w||² with TWO_LAMBDAS' lambdas, written out by hand."""
    return jax.grad(lambda p: losses.mse(NET.apply(p, x), t) + _penalty(TWO_LAMBDAS, p))(params)


def _setup(net, seed=0):
    """NumPy-drawn params with non-zero biases (so that decaying them would show), and the loss gradients."""
    assert [(layer.in_features, layer.out_features, layer.activation) for layer in net.layers] == [
        (3, 4, "tanh"), (4, 2, None),
    ]
    rng = np.random.default_rng(seed)
    params = {
        name: {
            "w": jnp.asarray(rng.normal(size=(layer.in_features, layer.out_features)) / np.sqrt(layer.in_features), "float32"),
            "b": jnp.asarray(0.3 + 0.1 * rng.normal(size=(layer.out_features,)), jnp.float32),
        }
        for name, layer in zip(net.names, net.layers)
    }
    x = rng.normal(size=(8, 3)).astype(np.float32)
    t = rng.normal(size=(8, 2)).astype(np.float32)
    return params, lambda p: _mse_grad(p, x, t), lambda p: _penalized_grad(p, x, t)


def _run(tx, params, grad, steps):
    """Apply ``steps`` updates of ``tx`` to ``params`` following ``grad(params)``; return each update."""
    state = tx.init(params)
    updates = []
    for _ in range(steps):
        u, state = tx.update(grad(params), state, params)
        params = optax.apply_updates(params, u)
        updates.append(u)
    return updates


def _assert_trees_close(actual, expected, atol=UPDATE_ATOL, rtol=0.0):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=atol, rtol=rtol)


def _weights_only(params):
    return {name: {k: k == "w" for k in sub} for name, sub in params.items()}


# --------------------------------------------------------------------------- L2


def test_sgd_l2_is_gradient_plus_lambda_w_on_weights_only():
    params, grad, _ = _setup(TWO_LAMBDAS)
    (u,) = _run(jdense.optimizer(TWO_LAMBDAS, "sgd", 0.1), params, grad, steps=1)
    g = grad(params)
    for name, lam in zip(TWO_LAMBDAS.names, (0.1, 0.01)):
        w, gw = np.asarray(params[name]["w"]), np.asarray(g[name]["w"])
        np.testing.assert_allclose(np.asarray(u[name]["w"]), -0.1 * (gw + lam * w), rtol=EXACT_RTOL, atol=1e-8)
        np.testing.assert_allclose(np.asarray(u[name]["b"]), -0.1 * np.asarray(g[name]["b"]), rtol=EXACT_RTOL, atol=1e-8)


@pytest.mark.parametrize("steps", [1, 3], ids=["one_step", "three_steps"])
def test_adam_l2_equals_adam_on_penalized_loss(steps):
    params, grad, penalized_grad = _setup(TWO_LAMBDAS)
    ours = _run(jdense.optimizer(TWO_LAMBDAS, "adam", LR), params, grad, steps)
    reference = _run(optax.adam(LR), params, penalized_grad, steps)
    for u, r in zip(ours, reference):
        _assert_trees_close(u, r)


@pytest.mark.parametrize("base", ["adam", "adamw"])
def test_decoupled_equals_adamw_masked_to_weights(base):
    net = mlp([3, 4, 2], activation="tanh", lambda_=0.1)
    params, grad, _ = _setup(net)
    ours = _run(jdense.optimizer(net, base, LR, decoupled=(base == "adam")), params, grad, steps=3)
    reference = _run(optax.adamw(LR, weight_decay=0.1, mask=_weights_only), params, grad, steps=3)
    for u, r in zip(ours, reference):
        _assert_trees_close(u, r)


# --------------------------------------------------------------------------- per-layer optimizer


def test_layer_with_its_own_optimizer_gets_that_update():
    net = Sequential([Dense(3, 4, activation="tanh", optimizer=optax.sgd(0.1)), Dense(4, 2, activation=None)])
    params, grad, _ = _setup(net)
    ours = _run(jdense.optimizer(net, "adam", LR), params, grad, steps=2)
    own = _run(optax.sgd(0.1), params["dense_0"], lambda p: grad({**params, "dense_0": p})["dense_0"], steps=1)[0]
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), ours[0]["dense_0"], own)
    g = grad(params)["dense_0"]
    _assert_trees_close(ours[0]["dense_0"], jax.tree.map(lambda x: -0.1 * x, g), atol=0.0, rtol=EXACT_RTOL)
    # the other layer follows the base optimizer, with a state of its own
    reference = _run(optax.adam(LR), params, grad, steps=1)[0]
    _assert_trees_close(ours[0]["dense_1"], reference["dense_1"])


def test_own_optimizer_layer_gets_coupled_l2():
    net = Sequential([Dense(3, 4, activation="tanh", optimizer=optax.sgd(0.1), lambda_=0.5), Dense(4, 2, activation=None)])
    params, grad, _ = _setup(net)
    for decoupled in (False, True):
        (u,) = _run(jdense.optimizer(net, "adam", LR, decoupled=decoupled), params, grad, steps=1)
        g = grad(params)["dense_0"]
        w = np.asarray(params["dense_0"]["w"])
        expected = -0.1 * (np.asarray(g["w"]) + 0.5 * w)
        np.testing.assert_allclose(np.asarray(u["dense_0"]["w"]), expected, rtol=EXACT_RTOL, atol=1e-8)
        np.testing.assert_allclose(np.asarray(u["dense_0"]["b"]), -0.1 * np.asarray(g["b"]), rtol=EXACT_RTOL, atol=1e-8)


# --------------------------------------------------------------------------- schedule and clipping

def test_schedule_as_learning_rate():
    params, grad, _ = _setup(NET)
    schedule = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    tx = jdense.optimizer(NET, "sgd", schedule)
    g = grad(params)
    state = tx.init(params)
    for step in range(3):
        u, state = tx.update(g, state, params)
        _assert_trees_close(u, jax.tree.map(lambda x: -0.1 * 0.5**step * x, g), atol=1e-9, rtol=EXACT_RTOL)


def test_clip_norm():
    params, grad, _ = _setup(NET)
    g = grad(params)
    norm = float(optax.tree.norm(g))
    assert norm > 0.05
    tx = jdense.optimizer(NET, "sgd", 1.0, clip_norm=0.05)
    clipped, _ = tx.update(g, tx.init(params), params)
    _assert_trees_close(clipped, jax.tree.map(lambda x: -x * (0.05 / norm), g), atol=1e-8, rtol=EXACT_RTOL)
    np.testing.assert_allclose(float(optax.tree.norm(clipped)), 0.05, rtol=EXACT_RTOL)
    tx = jdense.optimizer(NET, "sgd", 1.0, clip_norm=10 * norm)
    untouched, _ = tx.update(g, tx.init(params), params)
    _assert_trees_close(untouched, jax.tree.map(lambda x: -x, g), atol=0.0, rtol=EXACT_RTOL)


# --------------------------------------------------------------------------- named bases


@pytest.mark.parametrize(
    "base,kwargs,reference",
    [
        ("sgd", {}, optax.sgd(LR)),
        ("momentum", {}, optax.sgd(LR, momentum=0.9)),
        ("momentum", {"momentum": 0.5, "nesterov": True}, optax.sgd(LR, momentum=0.5, nesterov=True)),
        ("rmsprop", {}, optax.rmsprop(LR)),
        ("adam", {}, optax.adam(LR)),
        ("adam", {"b1": 0.8, "eps": 1e-6}, optax.adam(LR, b1=0.8, eps=1e-6)),
        ("adamw", {}, optax.adamw(LR, weight_decay=0.0)),
    ],
    ids=["sgd", "momentum", "nesterov", "rmsprop", "adam", "adam-kwargs", "adamw"],
)
def test_named_base_matches_optax(base, kwargs, reference):
    params, grad, _ = _setup(NET)
    ours = _run(jdense.optimizer(NET, base, LR, **kwargs), params, grad, steps=3)
    for u, r in zip(ours, _run(reference, params, grad, steps=3)):
        _assert_trees_close(u, r)


def test_custom_optax_base_is_used_as_is():
    params, grad, _ = _setup(NET)
    tx = optax.chain(optax.scale_by_adam(), optax.scale(-LR))
    _assert_trees_close(_run(jdense.optimizer(NET, tx), params, grad, 2)[1], _run(tx, params, grad, 2)[1])


# --------------------------------------------------------------------------- errors


def test_unknown_optimizer_name():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adagrad'; expected one of 'sgd', 'momentum', 'rmsprop', 'adam'"):
        jdense.optimizer(NET, "adagrad")


def test_negative_lambda_is_refused():
    with pytest.raises(ValueError, match=r"lambda_ must be >= 0, got -0.001"):
        mlp([3, 4, 2], lambda_=-1e-3)


@pytest.mark.parametrize("learning_rate", [0.0, -1e-3, "fast"])
def test_bad_learning_rate(learning_rate):
    with pytest.raises(ValueError, match=r"learning_rate must be a positive float or an optax schedule"):
        jdense.optimizer(NET, "adam", learning_rate)


def test_bad_clip_norm():
    with pytest.raises(ValueError, match=r"clip_norm must be > 0"):
        jdense.optimizer(NET, "adam", clip_norm=0.0)


def test_decoupled_needs_a_named_base():
    with pytest.raises(ValueError, match=r"decoupled=True and optimizer keyword arguments need a named base"):
        jdense.optimizer(NET, optax.sgd(0.1), decoupled=True)


def test_unknown_base_keyword():
    with pytest.raises(TypeError, match=r"optimizer 'adam' does not take \['momentum'\]"):
        jdense.optimizer(NET, "adam", momentum=0.9)


def test_sgd_refuses_keywords_it_would_ignore():
    with pytest.raises(TypeError, match=r"optimizer 'sgd' does not take \['momentum'\]"):
        jdense.optimizer(NET, "sgd", 0.1, momentum=0.9)


def test_net_must_be_sequential():
    with pytest.raises(TypeError, match=r"net must be a jdense.Sequential"):
        jdense.optimizer(Dense(3, 2), "adam")


# --------------------------------------------------------------------------- end to end


def _two_moons(n, rng):
    t = rng.uniform(0.0, math.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper[:, None], np.stack([np.cos(t), np.sin(t)], 1), np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
    x = x + 0.1 * rng.normal(size=x.shape)
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32), upper.astype(np.float32)


STEPS = 300
BCE_THRESHOLD = 0.1  # final training binary cross-entropy (it starts near log 2 = 0.69)
ACCURACY_THRESHOLD = 0.97


def test_three_layer_network_trains_on_two_moons():
    """mlp([2, 16, 16, 1]) with a plain jitted loop reaches a low loss; judged by a NumPy forward pass."""
    x, y = _two_moons(256, np.random.default_rng(0))
    net = mlp([2, 16, 16, 1], activation="relu")
    params = net.init(jax.random.key(0))
    tx = jdense.optimizer(net, "adam", 1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        value, grads = jax.value_and_grad(lambda p: losses.binary_cross_entropy(net.apply(p, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    values = []
    for _ in range(STEPS):
        params, opt_state, value = step(params, opt_state)
        values.append(value)
    # NumPy forward pass and loss on the trained params
    h = x.astype(np.float64)
    for i, name in enumerate(net.names):
        h = h @ np.asarray(params[name]["w"], np.float64) + np.asarray(params[name]["b"], np.float64)
        h = np.maximum(h, 0.0) if i < 2 else h
    logits = h[:, 0]
    bce = np.mean(np.logaddexp(0.0, logits) - y * logits)
    accuracy = np.mean((logits > 0) == (y == 1))
    assert float(values[0]) > 0.5 and bce < BCE_THRESHOLD, (float(values[0]), bce)
    assert accuracy >= ACCURACY_THRESHOLD
    np.testing.assert_allclose(float(values[-1]), bce, rtol=0.2)  # the jitted loss agrees one step earlier


# --------------------------------------------------------------------------- L1 and freezing


def test_l1_and_l2_equal_sgd_on_the_penalized_loss():
    """g + lambda_*w + l1*sign(w) on weights only: jax.grad of mse + (lambda_/2)||w||^2 + l1*sum|w| (Keras L1L2)."""
    net = Sequential([Dense(3, 4, activation="tanh", lambda_=0.1, l1=0.05), Dense(4, 2, activation=None, l1=0.2)])
    params, grad, _ = _setup(net)
    rng = np.random.default_rng(1)
    x, t = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=(8, 2)).astype(np.float32)

    def penalized(p):
        penalty = sum(0.5 * layer.lambda_ * jnp.sum(p[n]["w"] ** 2) + layer.l1 * jnp.sum(jnp.abs(p[n]["w"]))
                      for n, layer in zip(net.names, net.layers))
        return losses.mse(net.apply(p, x), t) + penalty

    (u,) = _run(jdense.optimizer(net, "sgd", 0.1), params, lambda p: jax.grad(lambda q: losses.mse(net.apply(q, x), t))(p), 1)
    _assert_trees_close(u, jax.tree.map(lambda g: -0.1 * g, jax.grad(penalized)(params)), atol=1e-7, rtol=EXACT_RTOL)


def test_frozen_layers_get_no_update_no_state_and_no_decay():
    net = Sequential([Dense(3, 4, activation="tanh", lambda_=0.5, trainable=False), Dense(4, 2, activation=None, lambda_=0.5)])
    params, grad, _ = _setup(net)
    tx = jdense.optimizer(net, "adam", 0.1)
    state = tx.init(params)
    adam = [n for n in jax.tree.leaves(state, is_leaf=lambda n: type(n).__name__ == "ScaleByAdamState")
            if type(n).__name__ == "ScaleByAdamState"]
    assert adam and all("dense_0" not in jax.tree.leaves(n.mu, is_leaf=lambda v: v is None) for n in adam)
    assert all(not jax.tree.leaves(n.mu.get("dense_0", {})) for n in adam)  # no moments for the frozen layer
    updates = _run(tx, params, grad, 3)
    for u in updates:
        assert all(float(jnp.abs(v).max()) == 0.0 for v in jax.tree.leaves(u["dense_0"]))
        assert float(jnp.abs(u["dense_1"]["w"]).max()) > 0


def test_fit_leaves_frozen_params_bit_for_bit():
    net = jdense.Sequential([Dense(3, 6, trainable=False, lambda_=1e-2), jdense.BatchNorm(6, trainable=False),
                             Dense(6, 2, activation=None)])
    params = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 3)).astype(np.float32), rng.integers(0, 2, 32)
    r = jdense.fit(net, params, x, y, loss="cross_entropy", optimizer=jdense.optimizer(net, "adam", 0.05), epochs=3,
                   batch_size=8, key=jax.random.key(1), verbose=0)
    for name in ("dense_0", "batch_norm_0"):
        for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(r.params[name])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(params["dense_1"]["w"]), np.asarray(r.params["dense_1"]["w"]))
