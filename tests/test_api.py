"""The public surface: names in ``jdense.__all__``, and layer specs as ``jax.jit`` static arguments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jdense
from jdense import Dense

CORE = ["init", "apply", "Dense", "Flatten", "Dropout", "BatchNorm", "Sequential", "mlp", "summary", "optimizer", "losses"]


def test_every_public_name_exists():
    assert len(jdense.__all__) == len(set(jdense.__all__))
    missing = [name for name in jdense.__all__ if not hasattr(jdense, name)]
    assert missing == []


def test_core_names_are_public():
    assert set(CORE) <= set(jdense.__all__)
    assert callable(jdense.init) and callable(jdense.apply) and callable(jdense.optimizer)
    assert callable(jdense.losses.cross_entropy)


def test_dense_is_hashable_and_compares_by_value():
    a = Dense(4, 3, activation="tanh", lambda_=1e-3)
    b = Dense(4, 3, activation="tanh", lambda_=1e-3)
    assert a == b and hash(a) == hash(b)
    assert a != Dense(4, 3, activation="relu", lambda_=1e-3)
    assert len({a, b, Dense(4, 2)}) == 2
    hash(Dense(4, 3, optimizer=optax.sgd(0.1)))  # with a per-layer optimizer too


def test_dense_is_a_jit_static_argument_without_recompiling():
    traces = []

    def run(layer, params, x):
        traces.append(layer)
        return layer.apply(params, x)

    run_jit = jax.jit(run, static_argnums=0)
    layer = Dense(4, 3, activation="tanh")
    params = layer.init(jax.random.key(0))
    x = jnp.ones((5, 4))
    first = run_jit(layer, params, x)
    second = run_jit(Dense(4, 3, activation="tanh"), params, x + 1.0)  # an equal, distinct instance
    assert len(traces) == 1
    np.testing.assert_allclose(np.asarray(first), np.asarray(layer.apply(params, x)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(second), np.asarray(layer.apply(params, x + 1.0)), rtol=1e-6)
    run_jit(Dense(4, 3, activation="relu"), params, x)  # a different layer does retrace
    assert len(traces) == 2


def test_sequential_is_a_jit_static_argument_without_recompiling():
    traces = []

    def run(net, params, x):
        traces.append(net)
        return net.apply(params, x)

    run_jit = jax.jit(run, static_argnums=0)
    params = {"dense_0": {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}, "dense_1": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}}
    run_jit(jdense.mlp([4, 3, 2]), params, jnp.ones((5, 4)))
    run_jit(jdense.mlp([4, 3, 2]), params, jnp.ones((5, 4)))
    assert len(traces) == 1
