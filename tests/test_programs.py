"""Compile once: fit, evaluate and predict reuse their compiled programs across calls.

A call whose structure (network widths and activations, loss, metrics, optimizer kind,
batch size, data shapes, options) matches an earlier one must compile nothing, whatever
its learning rate, L2 strength, params or data values; its numbers must be the ones a
fresh process computes. A changed structure compiles and gives the right answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest
from test_train import CompileCounter

import jdense
from jdense import programs

RNG = np.random.default_rng(0)
X = RNG.normal(size=(96, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int32) + (X[:, 2] > 1).astype(np.int32)
XV, YV = X[:32], Y[:32]
SIZES = [6, 16, 3]
KW = dict(loss="cross_entropy", epochs=2, batch_size=16, key=jax.random.key(3), verbose=0)


def _fit(net, lr=1e-2, params=None, **kw):
    params = net.init(jax.random.key(0)) if params is None else params
    return jdense.fit(net, params, X, Y, optimizer=jdense.optimizer(net, "adam", lr), **{**KW, **kw})


def _compiles(fn):
    with CompileCounter() as counter:
        result = fn()
    return counter.names, result


def test_new_learning_rate_lambda_and_params_compile_nothing():
    net = jdense.mlp(SIZES, lambda_=1e-4)
    _fit(net, validation_data=(XV, YV))  # compiles the init and the epoch (with validation inside)
    names, _ = _compiles(lambda: _fit(net, lr=3e-4, validation_data=(XV, YV)))
    assert names == [], names
    other = jdense.mlp(SIZES, lambda_=1e-2)  # a new lambda_ is a value in the optimizer state
    names, _ = _compiles(lambda: _fit(other, lr=0.05, params=other.init(jax.random.key(7)), validation_data=(XV, YV)))
    assert names == [], names
    names, _ = _compiles(lambda: _fit(jdense.mlp(SIZES, lambda_=0.0), validation_data=(XV, YV)))
    assert names == [], names
    # Another initializer only changes init's program, never the epoch's.
    glorot = jdense.mlp(SIZES, initializer="glorot_uniform")
    params = glorot.init(jax.random.key(0))
    names, _ = _compiles(lambda: _fit(glorot, params=params, validation_data=(XV, YV)))
    assert names == [], names


def test_repeated_evaluate_and_predict_compile_nothing():
    net = jdense.mlp(SIZES)
    params = net.init(jax.random.key(0))
    jdense.evaluate(net, params, XV, YV, loss="cross_entropy")
    jdense.predict(net, params, XV)
    other = jax.tree.map(lambda a: a * 2, params)
    names, _ = _compiles(lambda: (jdense.evaluate(net, other, XV + 1, YV, loss="cross_entropy"),
                                  jdense.predict(jdense.mlp(SIZES, lambda_=0.3), other, XV - 1)))
    assert names == [], names


def test_a_user_optax_transformation_is_cached_by_identity():
    net = jdense.mlp(SIZES)
    tx = optax.chain(optax.clip(1.0), optax.sgd(0.1))
    run = lambda: jdense.fit(net, net.init(jax.random.key(0)), X, Y, optimizer=tx, **KW)  # noqa: E731
    first = run()
    names, again = _compiles(run)
    assert names == [], names
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("change", ["width", "loss", "batch_size"])
def test_a_changed_structure_compiles_and_is_right(change):
    """The cached program of another structure must not be reused: compare with a cleared cache."""
    net, kw = jdense.mlp(SIZES), {}
    _fit(net)
    if change == "width":
        net = jdense.mlp([6, 9, 3])
    elif change == "loss":
        kw = {"loss": lambda out, t: optax.losses.softmax_cross_entropy_with_integer_labels(out, t) * 2.0}
    else:
        kw = {"batch_size": 12}
    names, cached = _compiles(lambda: _fit(net, **kw))
    assert names, "a new structure must compile"
    programs.training.cache_clear()  # a fresh epoch program (the other caches are not in question here)
    fresh = _fit(net, **kw)
    for a, b in zip(jax.tree.leaves(cached.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cached_fit_is_bitwise_a_fresh_process_fit():
    """A fit run after fits with other learning rates and lambda_ equals the same fit in a new process."""
    net = jdense.mlp(SIZES, lambda_=1e-3)
    for lr in (0.1, 0.003):
        _fit(jdense.mlp(SIZES, lambda_=0.5), lr=lr)
    cached = _fit(net, lr=0.02)
    code = textwrap.dedent(f"""
        import json, jax, numpy as np, jdense
        rng = np.random.default_rng(0)
        X = rng.normal(size=(96, 6)).astype(np.float32)
        Y = (X[:, 0] + X[:, 1] > 0).astype(np.int32) + (X[:, 2] > 1).astype(np.int32)
        net = jdense.mlp({SIZES}, lambda_=1e-3)
        r = jdense.fit(net, net.init(jax.random.key(0)), X, Y, optimizer=jdense.optimizer(net, "adam", 0.02),
                       loss="cross_entropy", epochs=2, batch_size=16, key=jax.random.key(3), verbose=0)
        print(json.dumps([np.asarray(a).tolist() for a in jax.tree.leaves(r.params)]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    for a, b in zip(jax.tree.leaves(cached.params), fresh):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b, np.float32))


def test_cache_is_bounded_and_clears():
    assert programs.training.cache_info().maxsize == programs.CACHE_SIZE
    net = jdense.mlp(SIZES)
    _fit(net)
    assert programs.training.cache_info().currsize >= 1
    jdense.clear_cache()
    assert programs.training.cache_info().currsize == 0
    names, _ = _compiles(lambda: _fit(net))
    assert any("epoch" in n for n in names), names  # compiled again after clearing


def test_clear_cache_forgets_the_population_programs_too():
    """jdense.clear_cache() empties every registered cache: the population's epoch compiles again."""
    net = jdense.mlp(SIZES)
    kw = dict(members=2, loss="cross_entropy", epochs=1, batch_size=16, key=jax.random.key(0), verbose=0)
    jdense.fit_population(net, X, Y, **kw)
    names, _ = _compiles(lambda: jdense.fit_population(net, X, Y, **kw))
    assert names == [], names  # cached
    assert programs.population.cache_info().currsize >= 1
    jdense.clear_cache()
    assert programs.population.cache_info().currsize == 0
    names, _ = _compiles(lambda: jdense.fit_population(net, X, Y, **kw))
    assert any("member_epoch" in n for n in names), names  # compiled again after clearing


def test_programs_are_keyed_by_the_fields_layers_declare():
    """Fields declared with jdense.layers.field(...) that shape no program (lambda_, initializer...) are stripped."""
    a = jdense.Sequential([jdense.Dense(6, 4, lambda_=1e-2, l1=1e-3, initializer="glorot_uniform", trainable=False),
                           jdense.Dropout(0.3), jdense.BatchNorm(4, momentum=0.8)])
    b = jdense.Sequential([jdense.Dense(6, 4), jdense.Dropout(0.3), jdense.BatchNorm(4, momentum=0.8)])
    assert programs.structure(a) == programs.structure(b)
    assert programs.structure(a) != programs.structure(jdense.Sequential([jdense.Dense(6, 4), jdense.Dropout(0.1),
                                                                          jdense.BatchNorm(4, momentum=0.8)]))
    init_a = jdense.network.structure(a, "init")
    assert init_a.layers[0].initializer == "glorot_uniform" and init_a.layers[1].rate == 0.0
    assert init_a.layers[2].momentum == 0.9 and init_a.layers[0].lambda_ == 0.0


def test_hyperparams_are_values_in_the_state():
    net = jdense.mlp(SIZES, lambda_=1e-3)
    tx = jdense.optimizer(net, "sgd", 0.1, clip_norm=2.0)
    assert jdense.optimizer(net, "sgd", 0.5, clip_norm=9.0).update is tx.update  # one structure, one update
    state = tx.init(net.init(jax.random.key(0)))
    assert jdense.hyperparams(state) == {"clip_norm": 2.0, "lambda_": [0.001, 0.001], "learning_rate": 0.1}
    state = jdense.set_hyperparams(state, learning_rate=np.float32(0.25), lambda_=[0.0, 0.5])
    assert jdense.hyperparams(state) == {"clip_norm": 2.0, "lambda_": [0.0, 0.5], "learning_rate": 0.25}
    with pytest.raises(ValueError, match=r"cannot set 'momentum'"):
        jdense.set_hyperparams(state, momentum=0.9)
    with pytest.raises(ValueError, match=r"learning_rate must be a finite positive float"):
        jdense.set_hyperparams(state, learning_rate=float("inf"))
    with pytest.raises(ValueError, match=r"lambda_ needs one value per layer \(2\), got 3"):
        jdense.set_hyperparams(state, lambda_=[0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match=r"needs the state of a jdense.optimizer"):
        jdense.hyperparams(optax.adam(1e-3).init({"w": np.zeros(2)}))
    scheduled = jdense.optimizer(net, "sgd", optax.exponential_decay(0.1, 1, 0.5)).init(net.init(jax.random.key(0)))
    with pytest.raises(ValueError, match=r"follow a schedule"):
        jdense.set_hyperparams(scheduled, learning_rate=0.1)


class HalveAfterFirstEpoch(jdense.Callback):
    def adjust_hyperparams(self, epoch, logs, hyperparams):
        return {"learning_rate": hyperparams["learning_rate"] / 2} if epoch == 0 else None


def test_a_callback_changes_the_learning_rate_without_recompiling():
    net = jdense.mlp(SIZES)
    params = net.init(jax.random.key(0))
    kw = {**KW, "epochs": 3}
    jdense.fit(net, params, X, Y, optimizer=jdense.optimizer(net, "sgd", 0.2), **kw)
    names, r = _compiles(lambda: jdense.fit(net, params, X, Y, optimizer=jdense.optimizer(net, "sgd", 0.2),
                                            callbacks=[HalveAfterFirstEpoch()], **kw))
    assert names == [], names
    assert r.history["learning_rate"] == [0.2, 0.1, 0.1]
    # The same as one epoch at 0.2 followed by two at 0.1, resumed by hand.
    first = jdense.fit(net, params, X, Y, optimizer=jdense.optimizer(net, "sgd", 0.2), **{**kw, "epochs": 1})
    rest = jdense.fit(net, first.params, X, Y, optimizer=jdense.optimizer(net, "sgd", 0.1), initial_epoch=1,
                      opt_state=jdense.set_hyperparams(first.opt_state, learning_rate=0.1), **kw)
    for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(rest.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_first_notebook_cell_compiles_at_most_four_programs():
    """A fresh process: build, init, fit with validation, counting every XLA compilation (keys included)."""
    code = textwrap.dedent("""
        import jax, numpy as np
        names = []
        jax.monitoring.register_event_duration_secs_listener(
            lambda e, d, **k: names.append(k.get("fun_name", "?")) if e == "/jax/core/compile/backend_compile_duration" else None)
        import jdense
        rng = np.random.default_rng(0)
        x = rng.normal(size=(200, 64)).astype(np.float32); y = rng.integers(0, 10, 200).astype(np.int32)
        net = jdense.mlp([64, 32, 10])
        params = net.init(jax.random.key(0))
        jdense.fit(net, params, x[:150], y[:150], loss="cross_entropy", optimizer=jdense.optimizer(net),
                   epochs=2, batch_size=32, key=jax.random.key(1), validation_data=(x[150:], y[150:]), verbose=0)
        print(len(names), names)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    count = int(out.stdout.split()[0])
    assert count <= 4, out.stdout
