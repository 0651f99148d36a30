"""Layer specs (Dense, Flatten, Dropout, BatchNorm, FunctionLayer) against NumPy references."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jdense
from jdense import Dense, Dropout, Flatten, FunctionLayer

F32_TOL = dict(rtol=1e-5, atol=1e-6)  # float32 result vs a float64 NumPy reference
ONE_ULP = 2.0**-23  # x / (1 - rate) may be compiled as x * (1 / (1 - rate)): one float32 rounding apart
RATE_ATOL = 0.02  # |fraction dropped - rate| over 10,000 units (binomial std <= 0.005)
MEAN_ATOL = 0.04  # |mean(dropout(ones)) - 1| over 10,000 units (std <= 0.01 for rate <= 0.5)
DROPOUT_SHAPE = (100, 100)  # one shape for every Dropout test: the mask's sampler compiles once


# --------------------------------------------------------------------------- Dense spec


@pytest.mark.parametrize("activation", ["relu", None])
def test_dense_layer_is_init_and_apply(activation):
    layer = Dense(4, 3, activation=activation, initializer="glorot_normal")
    key = jax.random.key(0)
    params = layer.init(key)
    expected = jdense.init(key, 4, 3, "glorot_normal", activation=activation)
    np.testing.assert_array_equal(np.asarray(params["w"]), np.asarray(expected["w"]))
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(layer.apply(params, x)), np.asarray(jdense.apply(params, x, activation)))
    assert layer.output_shape((5, 4)) == (5, 3)


def test_dense_layer_without_bias():
    layer = Dense(4, 1, activation=None, use_bias=False, initializer="ones")
    params = layer.init(jax.random.key(0))
    assert set(params) == {"w"}
    x = np.arange(4, dtype=np.float32)[None]
    np.testing.assert_allclose(np.asarray(layer.apply(params, x)), [[6.0]], **F32_TOL)


def test_dense_layer_normalizes_dtype():
    layer = Dense(4, 3, dtype="bfloat16")
    assert layer.dtype == jnp.dtype(jnp.bfloat16)
    assert layer.init(jax.random.key(0))["w"].dtype == jnp.bfloat16
    assert layer == Dense(4, 3, dtype=jnp.bfloat16)


@pytest.mark.parametrize("value", [-0.1, -1])
def test_dense_negative_lambda_is_refused(value):
    with pytest.raises(ValueError, match=r"lambda_ must be >= 0, got -"):
        Dense(4, 3, lambda_=value)


def test_dense_non_floating_dtype_is_refused():
    with pytest.raises(TypeError, match=r"dtype must be a floating dtype.*int32"):
        Dense(4, 3, dtype=jnp.int32)


@pytest.mark.parametrize("value,error", [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)])
def test_dense_sizes_are_checked_at_construction(value, error):
    with pytest.raises(error, match=r"out_features must be a positive int"):
        Dense(4, value)
    with pytest.raises(error, match=r"in_features must be a positive int"):
        Dense(value, 3)


def test_dense_unknown_names_are_refused_at_construction():
    with pytest.raises(ValueError, match=r"unknown activation 'relu6'.*'relu'"):
        Dense(4, 3, activation="relu6")
    with pytest.raises(ValueError, match=r"unknown initializer 'xavier'.*'glorot_uniform'"):
        Dense(4, 3, initializer="xavier")


def test_dense_optimizer_must_be_an_optax_transformation():
    with pytest.raises(TypeError, match=r"optimizer must be an optax.GradientTransformation"):
        Dense(4, 3, optimizer="sgd")
    Dense(4, 3, optimizer=optax.sgd(0.1))  # accepted


# --------------------------------------------------------------------------- Flatten


def test_flatten_images():
    x = np.random.default_rng(1).normal(size=(3, 28, 28)).astype(np.float32)
    y = Flatten().apply({}, x)
    assert y.shape == (3, 784)
    np.testing.assert_array_equal(np.asarray(y), x.reshape(3, 784))
    assert Flatten().init(jax.random.key(0)) == {}


def test_flatten_from_a_later_axis():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(np.asarray(Flatten(start_axis=2).apply({}, x)), x.reshape(2, 3, 20))


# --------------------------------------------------------------------------- Activation


@pytest.mark.parametrize("name, reference", [
    ("relu", lambda x: np.maximum(x, 0)), ("tanh", np.tanh), (None, lambda x: x), ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
    ("softmax", lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
])
def test_activation_layer_has_no_params_and_applies_its_function(name, reference):
    layer = jdense.Activation(name)
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    assert layer.init(jax.random.key(0)) == {}
    np.testing.assert_allclose(layer.apply({}, x), reference(x.astype(np.float64)), **F32_TOL)
    net = jdense.Sequential([Dense(5, 4, activation=None), jdense.BatchNorm(4), layer, Dense(4, 2)])
    assert net.names[2] == "activation_0" and net.input_width == 5 and net.output_width == 2
    assert set(net.init(jax.random.key(0))) == {"dense_0", "batch_norm_0", "dense_1"}


def test_activation_layer_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="relu"):
        jdense.Activation("rleu")


# --------------------------------------------------------------------------- Dropout


def test_dropout_eval_is_identity():
    x = jnp.asarray(np.random.default_rng(2).normal(size=DROPOUT_SHAPE).astype(np.float32))
    layer = Dropout(0.5)
    assert layer.apply({}, x) is x
    y, state = layer.apply_with_state({}, {}, x, train=False, key=jax.random.key(0))
    assert y is x and state == {}


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_dropout_train_drops_rate_and_scales_survivors(rate):
    x = jnp.ones(DROPOUT_SHAPE, jnp.float32)
    key = jax.random.key(3)
    y = np.asarray(Dropout(rate).apply({}, x, train=True, key=key))
    scale = np.float32(1.0) / np.float32(1.0 - rate)
    # Every value is exactly 0 or 1/(1-rate), and the kept ones are where a Bernoulli(1-rate) draw says.
    assert set(np.unique(y)) <= {np.float32(0.0), scale}
    keep = np.asarray(jax.random.bernoulli(key, 1.0 - rate, x.shape))
    np.testing.assert_array_equal(y, np.where(keep, scale, np.float32(0.0)))
    assert abs((y == 0).mean() - rate) <= RATE_ATOL
    assert abs(y.mean() - 1.0) <= MEAN_ATOL  # the scaling preserves the mean


def test_dropout_scales_values_exactly():
    x = jnp.asarray(np.random.default_rng(4).normal(size=DROPOUT_SHAPE).astype(np.float32))
    y = np.asarray(Dropout(0.25).apply({}, x, train=True, key=jax.random.key(5)))
    kept = y != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(y[kept], (np.asarray(x) / np.float32(0.75))[kept], rtol=ONE_ULP, atol=0)


def test_dropout_different_keys_give_different_masks():
    x = jnp.ones(DROPOUT_SHAPE)
    a = Dropout(0.5).apply({}, x, train=True, key=jax.random.key(0))
    b = Dropout(0.5).apply({}, x, train=True, key=jax.random.key(1))
    c = Dropout(0.5).apply({}, x, train=True, key=jax.random.key(0))
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


def test_dropout_rate_zero_is_identity_in_training():
    x = jnp.ones((3, 3))
    assert Dropout(0.0).apply({}, x, train=True) is x


def test_dropout_training_needs_a_key():
    with pytest.raises(ValueError, match=r"Dropout in training needs a PRNG key"):
        Dropout(0.5).apply({}, jnp.ones((2, 2)), train=True)


def test_dropout_rate_may_be_a_numpy_scalar():
    layer = Dropout(np.float32(0.25))
    assert layer.rate == 0.25 and type(layer.rate) is float
    assert layer == Dropout(0.25) and hash(layer) == hash(Dropout(0.25))


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, float("nan"), True, "0.5"], ids=["1.0", "-0.1", "1.5", "nan", "True", "str"])
def test_dropout_rate_outside_unit_interval_is_refused(rate):
    with pytest.raises(ValueError, match=r"Dropout rate must be a probability in \[0, 1\)"):
        Dropout(rate)


# --------------------------------------------------------------------------- BatchNorm


def _np_batch_norm(x, scale, bias, epsilon, axes):
    mean = x.mean(axis=axes)
    var = ((x - mean) ** 2).mean(axis=axes)  # biased
    return (x - mean) / np.sqrt(var + epsilon) * scale + bias, mean, var


@pytest.mark.parametrize("shape", [(6, 3), (2, 4, 3)], ids=["2d", "3d"])
def test_batch_norm_training_matches_numpy(shape):
    rng = np.random.default_rng(6)
    x = rng.normal(loc=2.0, scale=3.0, size=shape).astype(np.float32)
    layer = jdense.BatchNorm(3, momentum=0.8, epsilon=1e-3)
    params = {"scale": jnp.asarray([1.0, 2.0, 0.5]), "bias": jnp.asarray([0.0, -1.0, 3.0])}
    state = {"mean": jnp.asarray([0.5, 0.0, -0.5]), "var": jnp.asarray([1.0, 2.0, 0.5])}
    y, new_state = jax.jit(layer.apply_with_state, static_argnames="train")(params, state, jnp.asarray(x), train=True)

    axes = tuple(range(len(shape) - 1))
    x64 = x.astype(np.float64)
    y_ref, mean, var = _np_batch_norm(x64, np.asarray(params["scale"]), np.asarray(params["bias"]), 1e-3, axes)
    np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-4, atol=1e-5)
    # running = momentum·running + (1 − momentum)·batch, with the biased batch variance
    np.testing.assert_allclose(np.asarray(new_state["mean"]), 0.8 * np.asarray(state["mean"]) + 0.2 * mean, **F32_TOL)
    np.testing.assert_allclose(np.asarray(new_state["var"]), 0.8 * np.asarray(state["var"]) + 0.2 * var, **F32_TOL)
    assert y.dtype == jnp.float32


def test_batch_norm_eval_uses_running_stats():
    x = np.random.default_rng(7).normal(size=(5, 3)).astype(np.float32)
    layer = jdense.BatchNorm(3)
    params = {"scale": jnp.asarray([1.0, 2.0, 0.5]), "bias": jnp.asarray([0.0, -1.0, 3.0])}
    state = {"mean": jnp.asarray([0.5, 0.0, -0.5]), "var": jnp.asarray([1.0, 2.0, 0.5])}
    y = layer.apply(params, jnp.asarray(x), state=state)
    expected = (x - np.asarray(state["mean"])) / np.sqrt(np.asarray(state["var"]) + 1e-5) * np.asarray(
        params["scale"]
    ) + np.asarray(params["bias"])
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
    _, same_state = layer.apply_with_state(params, state, jnp.asarray(x), train=False)
    assert same_state is state  # evaluation leaves the running averages alone


def test_batch_norm_mask_uses_real_rows_only():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    x[4:] = 1e3  # padding rows that must not count
    mask = jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32)
    layer = jdense.BatchNorm(3, momentum=0.5)
    params, state = layer.init(jax.random.key(0)), layer.init_state()
    y, new_state = jax.jit(layer.apply_with_state, static_argnames="train")(params, state, jnp.asarray(x), train=True, mask=mask)
    y_ref, mean, var = _np_batch_norm(x[:4].astype(np.float64), 1.0, 0.0, 1e-5, (0,))
    np.testing.assert_allclose(np.asarray(y)[:4], y_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_state["mean"]), 0.5 * mean, **F32_TOL)
    np.testing.assert_allclose(np.asarray(new_state["var"]), 0.5 + 0.5 * var, rtol=1e-5, atol=1e-5)


def test_batch_norm_state_is_not_in_params():
    layer = jdense.BatchNorm(4)
    params = layer.init(jax.random.key(0))
    assert set(params) == {"scale", "bias"}
    np.testing.assert_array_equal(np.asarray(params["scale"]), np.ones(4))
    np.testing.assert_array_equal(np.asarray(params["bias"]), np.zeros(4))
    state = layer.init_state()
    assert set(state) == {"mean", "var"}
    net = jdense.mlp([3, 4, 2], batch_norm=True)
    assert set(jax.eval_shape(net.init, jax.random.key(0))["batch_norm_0"]) == {"scale", "bias"}
    assert set(net.init_state()) == {"batch_norm_0"}


def test_batch_norm_wrong_width_is_refused():
    layer = jdense.BatchNorm(4)
    with pytest.raises(ValueError, match=r"BatchNorm\(features=4\) got x of shape \(2, 3\)"):
        layer.apply_with_state(layer.init(jax.random.key(0)), layer.init_state(), jnp.ones((2, 3)), train=True)


@pytest.mark.parametrize("kwargs,match", [({"momentum": 1.0}, "momentum"), ({"epsilon": 0.0}, "epsilon")])
def test_batch_norm_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jdense.BatchNorm(3, **kwargs)


@pytest.mark.parametrize("kwargs", [{"epsilon": "tiny"}, {"momentum": "0.9"}, {"momentum": None}, {"epsilon": True},
                                    {"epsilon": np.array([1e-5])}], ids=["eps str", "momentum str", "None", "bool", "array"])
def test_batch_norm_non_numbers_are_type_errors(kwargs):
    """BatchNorm(epsilon="tiny") used to fail with a raw comparison error between str and int."""
    (name, value), = kwargs.items()
    with pytest.raises(TypeError, match=rf"BatchNorm {name} must be a .*number.*got {re.escape(repr(value))}"):
        jdense.BatchNorm(3, **kwargs)


@pytest.mark.parametrize("kwargs", [{"epsilon": float("inf")}, {"epsilon": float("nan")}, {"momentum": float("nan")}])
def test_batch_norm_non_finite_is_refused(kwargs):
    with pytest.raises(ValueError, match="finite"):
        jdense.BatchNorm(3, **kwargs)


def test_numpy_scalars_become_python_numbers():
    """NumPy scalars are ordinary numbers to users; stored as Python numbers the layers stay hashable and JSON-ready."""
    dense = Dense(np.int64(4), np.int32(3), lambda_=np.float32(1e-4), use_bias=np.bool_(True))
    bn = jdense.BatchNorm(np.int64(8), momentum=np.float32(0.5), epsilon=np.float64(1e-3))
    assert dense == Dense(4, 3, lambda_=float(np.float32(1e-4)))
    assert bn == jdense.BatchNorm(8, momentum=0.5, epsilon=1e-3)
    fields = (dense.in_features, dense.out_features, dense.lambda_, dense.use_bias, bn.features, bn.momentum, bn.epsilon)
    assert [type(v) for v in fields] == [int, int, float, bool, int, float, float]
    hash(dense), hash(bn)
    config = jdense.Sequential([dense, jdense.BatchNorm(3)]).to_config()
    assert jdense.Sequential.from_config(json.loads(json.dumps(config))).layers[0] == dense


@pytest.mark.parametrize("value", [float("inf"), float("nan"), np.float32("inf")], ids=["inf", "nan", "np inf"])
def test_dense_non_finite_lambda_is_refused(value):
    with pytest.raises(ValueError, match=r"lambda_ must be a finite real number >= 0, got (inf|nan); pass a finite number"):
        Dense(4, 3, lambda_=value)


@pytest.mark.parametrize("value", ["0.1", None, True])
def test_dense_lambda_must_be_a_number(value):
    with pytest.raises(TypeError, match=rf"lambda_ must be a finite real number >= 0, got {re.escape(repr(value))}"):
        Dense(4, 3, lambda_=value)


@pytest.mark.parametrize("value", ["no", 0, 1.0, None])
def test_dense_use_bias_must_be_a_bool(value):
    with pytest.raises(TypeError, match=rf"use_bias must be True or False, got {re.escape(repr(value))}"):
        Dense(4, 3, use_bias=value)


# --------------------------------------------------------------------------- FunctionLayer


def test_function_layer_wraps_a_pair():
    layer = FunctionLayer(lambda key: {"c": jnp.full((3,), 2.0)}, lambda p, x: x * p["c"])
    params = layer.init(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(layer.apply(params, jnp.ones((2, 3)))), np.full((2, 3), 2.0))
    assert isinstance(layer, jdense.Layer)
