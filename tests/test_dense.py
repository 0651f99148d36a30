"""The pure dense layer (``jdense.init`` / ``jdense.apply``) against NumPy and the seed's formulas.

References are written in NumPy (float64) from the definitions: ``y = σ(x @ w + b)`` and the
seed's backpropagation ``dL/dw = xᵀ (dL/dy ⊙ σ'(z))``, ``dL/db = Σ_batch dL/dy ⊙ σ'(z)``.
"""

from __future__ import annotations

import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdense
from jdense import initializers

# Tolerances, named once.
F32_TOL = dict(rtol=1e-5, atol=1e-6)  # float32 forward pass vs a float64 NumPy reference
GRAD_TOL = dict(rtol=1e-4, atol=1e-6)  # float32 gradients vs the NumPy backprop formulas
LOW_PRECISION_TOL = {  # forward pass in half precision vs float64 NumPy
    jnp.bfloat16: dict(rtol=3e-2, atol=3e-2),
    jnp.float16: dict(rtol=3e-3, atol=3e-3),
}
VAR_RTOL = 0.02  # relative error of an initializer's sample variance (500k draws: ~0.3% std)
ORTHO_ATOL = 1e-5  # |WᵀW - I| for the orthogonal initializer in float32
# Most tests use a batch of 5, 4 inputs and 3 outputs, so that eager ops compile once.

# --------------------------------------------------------------------------- NumPy references


def _np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_gelu_tanh(z):  # jax.nn.gelu's default, approximate=True
    return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)))


def square(z):
    """A custom callable activation, valid for both NumPy and JAX arrays."""
    return z * z


NP_ACTIVATIONS = {
    None: lambda z: z,
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": _np_sigmoid,
    "tanh": np.tanh,
    "softmax": _np_softmax,
    "leaky_relu": lambda z: np.where(z >= 0, z, 0.01 * z),
    "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
    "gelu": _np_gelu_tanh,
    "silu": lambda z: z * _np_sigmoid(z),
    "swish": lambda z: z * _np_sigmoid(z),
    square: square,
}
ACTIVATION_IDS = [a.__name__ if callable(a) else str(a) for a in NP_ACTIVATIONS]

# σ'(z) for the seed's backprop formula.
NP_DERIVATIVES = {
    "relu": lambda z: (z > 0).astype(z.dtype),
    "tanh": lambda z: 1.0 - np.tanh(z) ** 2,
    "sigmoid": lambda z: _np_sigmoid(z) * (1.0 - _np_sigmoid(z)),
    "linear": lambda z: np.ones_like(z),
    "elu": lambda z: np.where(z > 0, 1.0, np.exp(z)),
}


def _random_params(rng, n_in, n_out, use_bias=True):
    params = {"w": rng.normal(size=(n_in, n_out)).astype(np.float32)}
    if use_bias:
        params["b"] = rng.normal(size=(n_out,)).astype(np.float32)
    return params


def _np_apply(params, x, activation):
    z = np.asarray(x, np.float64) @ np.asarray(params["w"], np.float64)
    if "b" in params:
        z = z + np.asarray(params["b"], np.float64)
    return NP_ACTIVATIONS[activation](z)


# --------------------------------------------------------------------------- forward pass


def _check_apply(activation, lead, n_in=4, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    params = _random_params(rng, n_in, n_out)
    x = rng.normal(size=(*lead, n_in)).astype(np.float32)
    y = jdense.apply(jax.tree.map(jnp.asarray, params), x, activation)
    assert y.shape == (*lead, n_out)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), _np_apply(params, x, activation), **F32_TOL)


@pytest.mark.parametrize("activation", list(NP_ACTIVATIONS), ids=ACTIVATION_IDS)
def test_apply_matches_numpy(activation):
    _check_apply(activation, (5,))


@pytest.mark.parametrize("lead", [(), (1,), (2, 5)], ids=["vector", "batch1", "lead2x5"])
def test_apply_on_any_leading_axes(lead):
    _check_apply("tanh", lead)


def test_apply_one_output():
    _check_apply("sigmoid", (5,), n_out=1)


@pytest.mark.parametrize("activation,shape", [("relu", (1, 1, 1)), ("softmax", (5, 4, 3))], ids=["relu-1x1x1", "softmax-5x4x3"])
def test_apply_without_bias(activation, shape):
    batch, n_in, n_out = shape
    shapes = jax.eval_shape(lambda key: jdense.init(key, n_in, n_out, use_bias=False), jax.random.key(1))
    assert jax.tree.map(lambda a: a.shape, shapes) == {"w": (n_in, n_out)}
    rng = np.random.default_rng(1)
    params = _random_params(rng, n_in, n_out, use_bias=False)
    x = rng.normal(size=(batch, n_in)).astype(np.float32)
    y = jdense.apply(params, x, activation)
    assert y.shape == (batch, n_out)
    np.testing.assert_allclose(np.asarray(y), _np_apply(params, x, activation), **F32_TOL)


def test_default_activation_is_relu_and_default_bias_is_zero():
    params = jdense.init(jax.random.key(0), 4, 3)
    np.testing.assert_array_equal(np.asarray(params["b"]), np.zeros(3, np.float32))
    x = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(jdense.apply(params, x)), _np_apply(params, x, "relu"), **F32_TOL)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("activation", ["tanh"])
def test_apply_preserves_param_dtype(dtype, activation):
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), _random_params(rng, 4, 3))
    x = jnp.asarray(rng.normal(size=(5, 4)), dtype)
    y = jdense.apply(params, x, activation)
    assert y.dtype == dtype
    np_params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    tol = LOW_PRECISION_TOL.get(dtype, F32_TOL)
    np.testing.assert_allclose(np.asarray(y, np.float64), _np_apply(np_params, np.asarray(x, np.float64), activation), **tol)


def test_compute_dtype_runs_matmul_in_bfloat16():
    params = jdense.init(jax.random.key(4), 4, 3, "glorot_uniform")
    x = np.random.default_rng(4).normal(size=(5, 4)).astype(np.float32)
    y = jdense.apply(params, x, "tanh", compute_dtype=jnp.bfloat16)
    assert y.dtype == jnp.bfloat16
    assert params["w"].dtype == jnp.float32  # params stay as stored
    np.testing.assert_allclose(np.asarray(y, np.float64), _np_apply(params, x, "tanh"), **LOW_PRECISION_TOL[jnp.bfloat16])


# --------------------------------------------------------------------------- gradients vs the seed


@pytest.mark.parametrize(
    "activation,shape,use_bias",
    [(a, (5, 4, 3), True) for a in ("relu", "tanh", "sigmoid", "linear", "elu")]
    + [("relu", (1, 4, 1), True), ("tanh", (5, 4, 3), False), ("sigmoid", (1, 4, 1), False)],
    ids=["relu", "tanh", "sigmoid", "linear", "elu", "relu-batch1-out1", "tanh-no_bias", "sigmoid-batch1-out1-no_bias"],
)
def test_grad_matches_seed_backprop(activation, shape, use_bias):
    """jax.grad of 0.5·||y - t||² equals the seed's dL/dw = xᵀ(dL/dy ⊙ σ'(z)), dL/db = Σ dL/dy ⊙ σ'(z)."""
    batch, n_in, n_out = shape
    rng = np.random.default_rng(5)
    params = _random_params(rng, n_in, n_out, use_bias)
    x = rng.normal(size=(batch, n_in)).astype(np.float32)
    t = rng.normal(size=(batch, n_out)).astype(np.float32)

    def loss(p, x):
        return 0.5 * jnp.sum((jdense.apply(p, x, activation) - t) ** 2)

    grads, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(jax.tree.map(jnp.asarray, params), x)

    x64, w64 = x.astype(np.float64), params["w"].astype(np.float64)
    z = x64 @ w64 + (params["b"].astype(np.float64) if use_bias else 0.0)
    dl_dy = NP_ACTIVATIONS[activation](z) - t  # dL/dy for 0.5·||y - t||²
    delta = dl_dy * NP_DERIVATIVES[activation](z)  # dL/dy ⊙ σ'(z)
    np.testing.assert_allclose(np.asarray(grads["w"]), x64.T @ delta, **GRAD_TOL)
    np.testing.assert_allclose(np.asarray(grad_x), delta @ w64.T, **GRAD_TOL)
    if use_bias:
        np.testing.assert_allclose(np.asarray(grads["b"]), delta.sum(axis=0), **GRAD_TOL)
    else:
        assert set(grads) == {"w"}


# --------------------------------------------------------------------------- transformations


@pytest.mark.parametrize("activation", ["tanh", "softmax"])
def test_jit_and_vmap_agree_with_eager(activation):
    rng = np.random.default_rng(6)
    params = jax.tree.map(jnp.asarray, _random_params(rng, 4, 3))
    x = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))
    eager = jdense.apply(params, x, activation)
    jitted = jax.jit(jdense.apply, static_argnums=2)(params, x, activation)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), **F32_TOL)
    # one sample of shape (4,) at a time (jitted, to compile once rather than op by op)
    mapped = jax.jit(jax.vmap(lambda xi: jdense.apply(params, xi, activation)))(x)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(eager), **F32_TOL)


def test_grad_under_jit_and_vmap_agrees_with_eager():
    rng = np.random.default_rng(7)
    params = jax.tree.map(jnp.asarray, _random_params(rng, 4, 3))
    x = jnp.asarray(rng.normal(size=(5, 4)).astype(np.float32))

    def loss(p, xi):
        return jnp.sum(jdense.apply(p, xi, "tanh") ** 2)

    g_eager = jax.grad(loss)(params, x)
    g_jit = jax.jit(jax.grad(loss))(params, x)
    g_per_sample = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(params, x)  # summed over samples = batch grad
    for name in params:
        np.testing.assert_allclose(np.asarray(g_jit[name]), np.asarray(g_eager[name]), **GRAD_TOL)
        np.testing.assert_allclose(np.asarray(g_per_sample[name].sum(0)), np.asarray(g_eager[name]), **GRAD_TOL)


# --------------------------------------------------------------------------- initializers

FAN_IN, FAN_OUT = 1000, 500
EXPECTED_VARIANCE = {
    "he_normal": 2.0 / FAN_IN,
    "he_uniform": 2.0 / FAN_IN,
    "glorot_normal": 2.0 / (FAN_IN + FAN_OUT),
    "glorot_uniform": 2.0 / (FAN_IN + FAN_OUT),
    "lecun_normal": 1.0 / FAN_IN,
    "lecun_uniform": 1.0 / FAN_IN,
}
# Largest |w| / std: sqrt(3) for a uniform; a normal truncated at 2 std of the untruncated
# one (jax's variance_scaling) has std 0.8796·σ, so |w| <= 2/0.8796 std.
MAX_OVER_STD = {"uniform": math.sqrt(3.0), "normal": 2.0 / 0.87962566103423978}


def _check_variance(w, expected, kind):
    w = np.asarray(w, np.float64)
    var = w.var()
    assert abs(var - expected) <= VAR_RTOL * expected, f"variance {var:.3e}, expected {expected:.3e}"
    assert abs(w.mean()) <= 5 * math.sqrt(expected / w.size)
    assert np.abs(w).max() <= MAX_OVER_STD[kind] * math.sqrt(expected) * (1 + 1e-6)
    if kind == "normal":  # a bell, not a box: values beyond the uniform's bound exist
        assert np.abs(w).max() > MAX_OVER_STD["uniform"] * math.sqrt(expected)


@pytest.mark.parametrize("name", list(EXPECTED_VARIANCE))
def test_initializer_variance(name):
    params = jdense.init(jax.random.key(7), FAN_IN, FAN_OUT, name)
    _check_variance(params["w"], EXPECTED_VARIANCE[name], name.split("_")[1])


@pytest.mark.parametrize("shape", [(4, 3)], ids=lambda s: "x".join(map(str, s)))
def test_orthogonal_initializer(shape):
    w = np.asarray(jdense.init(jax.random.key(8), *shape, "orthogonal")["w"], np.float64)
    small = min(shape)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T  # the smaller Gram matrix is the identity
    np.testing.assert_allclose(gram, np.eye(small), rtol=0, atol=ORTHO_ATOL)


@pytest.mark.parametrize("name,value", [("zeros", 0.0), ("ones", 1.0)])
def test_constant_initializers(name, value):
    w = jdense.init(jax.random.key(9), 4, 3, name)["w"]
    np.testing.assert_array_equal(np.asarray(w), np.full((4, 3), value, np.float32))


RELU_FAMILY = ["relu", "leaky_relu", "elu", "gelu", "silu", "swish"]
GLOROT_FAMILY = [None, "linear", "tanh", "sigmoid", "softmax", square]


@pytest.mark.parametrize(
    "activation,rule",
    [(a, "he_normal") for a in RELU_FAMILY] + [(a, "glorot_uniform") for a in GLOROT_FAMILY],
    ids=[*RELU_FAMILY, *[a.__name__ if callable(a) else str(a) for a in GLOROT_FAMILY]],
)
def test_auto_initializer_follows_activation(activation, rule):
    key = jax.random.key(10)
    w = jdense.init(key, FAN_IN, FAN_OUT, "auto", activation=activation)["w"]
    _check_variance(w, EXPECTED_VARIANCE[rule], rule.split("_")[1])
    np.testing.assert_array_equal(np.asarray(w), np.asarray(jdense.init(key, FAN_IN, FAN_OUT, rule)["w"]))


ALL_INITIALIZERS = [*initializers.INITIALIZERS, "auto"]


@pytest.mark.parametrize("name", ALL_INITIALIZERS)
def test_initializer_is_deterministic_per_key(name):
    a = jdense.init(jax.random.key(11), 4, 3, name)
    b = jdense.init(jax.random.key(11), 4, 3, name)
    np.testing.assert_array_equal(np.asarray(a["w"]), np.asarray(b["w"]))  # bitwise
    c = jdense.init(jax.random.key(12), 4, 3, name)
    if name in ("zeros", "ones"):
        np.testing.assert_array_equal(np.asarray(a["w"]), np.asarray(c["w"]))
    else:
        assert not np.array_equal(np.asarray(a["w"]), np.asarray(c["w"]))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("name", ALL_INITIALIZERS)
def test_initializer_preserves_dtype(name, dtype):
    params = jdense.init(jax.random.key(13), 4, 3, name, dtype=dtype)
    assert params["w"].dtype == dtype and params["b"].dtype == dtype
    assert params["w"].shape == (4, 3) and params["b"].shape == (3,)
    assert np.all(np.isfinite(np.asarray(params["w"], np.float32)))


def test_custom_callable_initializer():
    seen = []

    def half(key, shape, dtype):
        seen.append((shape, jnp.dtype(dtype)))
        return jnp.full(shape, 0.5, dtype)

    params = jdense.init(jax.random.key(14), 3, 2, half, dtype=jnp.bfloat16)
    assert seen == [((3, 2), jnp.dtype(jnp.bfloat16))]
    np.testing.assert_array_equal(np.asarray(params["w"], np.float32), np.full((3, 2), 0.5, np.float32))
    assert params["w"].dtype == jnp.bfloat16


# --------------------------------------------------------------------------- bad inputs


def test_apply_wrong_width_names_expected_and_given():
    params = jdense.init(jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match=r"in_features=4.*given width 3"):
        jdense.apply(params, jnp.ones((5, 3)))


def test_apply_wrong_width_under_jit():
    params = jdense.init(jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match=r"in_features=4.*given width 5"):
        jax.jit(jdense.apply)(params, jnp.ones((2, 5)))


def test_apply_scalar_input_is_refused():
    params = jdense.init(jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match=r"in_features=4"):
        jdense.apply(params, 1.0)


def test_unknown_activation_lists_valid_ones():
    params = jdense.init(jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match=r"unknown activation 'relu6'.*'relu'.*'sigmoid'.*'tanh'"):
        jdense.apply(params, jnp.ones((1, 4)), "relu6")


def test_unknown_activation_refused_at_init_with_auto():
    with pytest.raises(ValueError, match=r"unknown activation 'rlu'.*'relu'"):
        jdense.init(jax.random.key(0), 3, 2, activation="rlu")


def test_unknown_initializer_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown initializer 'xavier'.*'auto'.*'glorot_uniform'.*'he_normal'.*'orthogonal'"):
        jdense.init(jax.random.key(0), 3, 2, "xavier")


@pytest.mark.parametrize("argument", ["in_features", "out_features"])
@pytest.mark.parametrize(
    "value,error", [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)], ids=["0", "-1", "2.5", "True"]
)
def test_sizes_must_be_positive_ints(argument, value, error):
    sizes = {"in_features": 3, "out_features": 2, argument: value}
    with pytest.raises(error, match=rf"{argument} must be a positive int, got {value!r}"):
        jdense.init(jax.random.key(0), sizes["in_features"], sizes["out_features"])


def test_non_floating_dtype_is_refused():
    with pytest.raises(TypeError, match=r"dtype must be a floating dtype.*int32"):
        jdense.init(jax.random.key(0), 3, 2, dtype=jnp.int32)


def test_params_must_be_a_dict_with_w():
    with pytest.raises(TypeError, match=r"params must be the dict made by jdense.init"):
        jdense.apply([jnp.ones((4, 3))], jnp.ones((1, 4)))


@pytest.mark.parametrize("w_shape", [(4,), (4, 3, 1), ()], ids=["1-D", "3-D", "scalar"])
def test_apply_refuses_w_that_is_not_2d(w_shape):
    """A 1-D w used to give a result (x @ w is a dot product); now the params are refused."""
    with pytest.raises(ValueError, match=rf"params\['w'\] must be 2-D \(in_features, out_features\), got shape {re.escape(str(w_shape))}"):
        jdense.apply({"w": jnp.ones(w_shape), "b": jnp.zeros(3)}, jnp.ones((5, 4)))


@pytest.mark.parametrize("b_shape", [(2,), (1, 3), ()], ids=["narrow", "2-D", "scalar"])
def test_apply_refuses_bias_of_another_width(b_shape):
    params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(b_shape)}
    expected = rf"params\['b'\] must have shape \(3,\) to match w of shape \(4, 3\), got {re.escape(str(b_shape))}"
    with pytest.raises(ValueError, match=expected):
        jdense.apply(params, jnp.ones((5, 4)))
    with pytest.raises(ValueError, match=r"params\['b'\] must have shape \(3,\)"):  # static shapes: also under jit
        jax.jit(jdense.apply)(params, jnp.ones((5, 4)))


def test_use_bias_must_be_a_bool():
    with pytest.raises(TypeError, match=r"use_bias must be True or False, got 'no'"):
        jdense.init(jax.random.key(0), 3, 2, use_bias="no")
    assert set(jdense.init(jax.random.key(0), 3, 2, use_bias=np.bool_(False))) == {"w"}


def test_params_larger_than_the_device_are_refused_before_allocating():
    """10**6 x 10**6 float32 is 4 TB: refused at once (it used to return and fail later)."""
    with pytest.raises(ValueError, match=r"this dense layer needs 4,000,004,000,000 bytes \(3\.6 TiB\) for its params "
                       r"\(w \(1000000, 1000000\) float32 and b \(1000000,\) float32\), but the device holds at most [\d,]+ bytes"):
        jdense.init(jax.random.key(0), 10**6, 10**6)


def test_capacity_is_the_device_limit_or_the_host_memory(monkeypatch):
    from jdense import checks

    capacity, where = checks.device_capacity()
    stats = jax.devices()[0].memory_stats()
    if stats and "bytes_limit" in stats:
        assert capacity == stats["bytes_limit"]
    else:
        assert capacity == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") and "host memory" in where
    # with a device of 1 MiB, a 1,000 x 300 float32 layer (1,201,200 bytes) no longer fits; 1,000 x 200 does
    monkeypatch.setattr(checks, "device_capacity", lambda: (2**20, "a 1 MiB test device"))
    with pytest.raises(ValueError, match=r"needs 1,201,200 bytes \(1\.1 MiB\).*at most 1,048,576 bytes \(1\.0 MiB; a 1 MiB test device\)"):
        jdense.init(jax.random.key(0), 1000, 300)
    assert jax.eval_shape(lambda: jdense.init(jax.random.key(0), 1000, 200))["w"].shape == (1000, 200)


@pytest.mark.parametrize("use_bias", [True, False])
def test_param_shapes_are_init_shapes_without_allocating(use_bias):
    shapes = jdense.dense.param_shapes(4, 3, use_bias=use_bias, dtype=jnp.bfloat16)
    assert shapes == jax.eval_shape(lambda: jdense.init(jax.random.key(0), 4, 3, use_bias=use_bias, dtype=jnp.bfloat16))
    assert jdense.dense.param_shapes(10**9, 10**9)["w"].shape == (10**9, 10**9)  # describing is not allocating
