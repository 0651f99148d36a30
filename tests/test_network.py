"""Sequential, mlp and summary: structure, NumPy forward/backward references, finite differences,
config round trip, and composition with a user-written (init, apply) convolution."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import jdense
from jdense import BatchNorm, Dense, Dropout, Flatten, Sequential, mlp, summary

F32_TOL = dict(rtol=1e-5, atol=1e-5)  # float32 network output vs a float64 NumPy reference
GRAD_TOL = dict(rtol=1e-4, atol=1e-6)  # float32 gradients vs NumPy backprop
FD_TOL = dict(atol=1e-5, rtol=1e-5)  # float64 jax.grad vs central finite differences (check_grads)


def _np_params(net, seed=0):
    """Random params for ``net``'s Dense layers drawn with NumPy (non-zero biases), keyed like ``net.init``.

    Tests that are not about initialization use these: every new shape drawn with
    ``jax.random`` costs an XLA compilation.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, layer in zip(net.names, net.layers):
        if isinstance(layer, Dense):
            w = rng.normal(size=(layer.in_features, layer.out_features)) / np.sqrt(layer.in_features)
            b = 0.1 * rng.normal(size=(layer.out_features,))
            params[name] = {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
        elif isinstance(layer, BatchNorm):
            params[name] = {"scale": jnp.ones((layer.features,)), "bias": jnp.zeros((layer.features,))}
    return params


def _shapes(net):
    """``net.init``'s params as a tree of shapes, traced without running (no compilation)."""
    return jax.tree.map(lambda s: s.shape, jax.eval_shape(net.init, jax.random.key(0)))


def _np_mlp(params, names, x, activations):
    """Forward pass in float64, keeping each layer's input and pre-activation for backprop."""
    h, cache = np.asarray(x, np.float64), []
    for name, act in zip(names, activations):
        w, b = (np.asarray(params[name][k], np.float64) for k in ("w", "b"))
        z = h @ w + b
        cache.append((h, z))
        h = np.tanh(z) if act == "tanh" else z
    return h, cache


def test_mlp_structure_and_names():
    net = mlp([4, 3, 3, 2], activation="tanh", lambda_=1e-3)
    assert net.names == ("dense_0", "dense_1", "dense_2")
    assert [(layer.in_features, layer.out_features, layer.activation) for layer in net.layers] == [
        (4, 3, "tanh"), (3, 3, "tanh"), (3, 2, None),
    ]
    assert all(layer.lambda_ == 1e-3 for layer in net.layers)
    params = net.init(jax.random.key(0))
    assert jax.tree.map(jnp.shape, params) == {
        "dense_0": {"w": (4, 3), "b": (3,)}, "dense_1": {"w": (3, 3), "b": (3,)}, "dense_2": {"w": (3, 2), "b": (2,)},
    }
    assert (net.input_width, net.output_width) == (4, 2)
    # one key per layer: different layers get different weights; the same key gives the same params
    assert not np.array_equal(np.asarray(params["dense_0"]["w"][:3]), np.asarray(params["dense_1"]["w"]))
    again = net.init(jax.random.key(0))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, again)


def test_mlp_with_batch_norm_and_dropout_names():
    net = mlp([4, 8, 8, 1], dropout=0.5, batch_norm=True, use_bias=False)
    assert net.names == ("dense_0", "batch_norm_0", "dropout_0", "dense_1", "batch_norm_1", "dropout_1", "dense_2")
    params = _shapes(net)
    assert set(params) == {"dense_0", "batch_norm_0", "dense_1", "batch_norm_1", "dense_2"}  # no empty dropout entry
    assert all(set(params[f"dense_{i}"]) == {"w"} for i in range(3))
    assert set(net.init_state()) == {"batch_norm_0", "batch_norm_1"}
    assert net.needs_key and net.has_state


def test_sequential_apply_matches_numpy():
    net = mlp([4, 5, 3], activation="tanh")
    params = _np_params(net, 1)
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    expected, _ = _np_mlp(params, net.names, x, ["tanh", None])
    np.testing.assert_allclose(np.asarray(net.apply(params, x)), expected, **F32_TOL)
    np.testing.assert_allclose(np.asarray(net(params, x[:1])), expected[:1], **F32_TOL)  # batch of 1, __call__


def test_three_layer_grad_matches_numpy_backprop():
    """jax.grad through Sequential equals the seed's formulas applied layer by layer."""
    net = mlp([3, 5, 4, 2], activation="tanh")
    params = _np_params(net, 2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 3)).astype(np.float32)
    t = rng.normal(size=(7, 2)).astype(np.float32)
    grads = jax.jit(jax.grad(lambda p: 0.5 * jnp.sum((net.apply(p, x) - t) ** 2)))(params)

    y, cache = _np_mlp(params, net.names, x, ["tanh", "tanh", None])
    dl_dy = y - t
    for name, (h, z), act in reversed(list(zip(net.names, cache, ["tanh", "tanh", None]))):
        delta = dl_dy * (1.0 - np.tanh(z) ** 2 if act == "tanh" else 1.0)  # dL/dy ⊙ σ'(z)
        np.testing.assert_allclose(np.asarray(grads[name]["w"]), h.T @ delta, **GRAD_TOL)
        np.testing.assert_allclose(np.asarray(grads[name]["b"]), delta.sum(0), **GRAD_TOL)
        dl_dy = delta @ np.asarray(params[name]["w"], np.float64).T


def test_three_layer_grad_finite_differences_float64():
    assert not jax.config.jax_enable_x64
    with jax.enable_x64(True):
        net = mlp([3, 4, 4, 2], activation="tanh", dtype=jnp.float64)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), _np_params(net, 3))
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(params))
        rng = np.random.default_rng(3)
        x = jnp.asarray(rng.normal(size=(5, 3)))
        t = jnp.asarray(rng.normal(size=(5, 2)))

        @jax.jit  # one compilation for each transformation check_grads applies
        def loss(p, x):
            return jnp.mean((net.apply(p, x) - t) ** 2)

        assert loss(params, x).dtype == jnp.float64
        check_grads(loss, (params, x), order=1, modes=("rev",), **FD_TOL)
    assert not jax.config.jax_enable_x64  # restored
    assert jnp.ones(1).dtype == jnp.float32


# --------------------------------------------------------------------------- Flatten and user layers


def test_flatten_then_dense():
    net = Sequential([Flatten(), Dense(784, 10, activation=None)])
    assert net.names == ("flatten_0", "dense_0")
    assert _shapes(net) == {"dense_0": {"w": (784, 10), "b": (10,)}}
    params = _np_params(net, 4)
    x = np.random.default_rng(4).normal(size=(2, 28, 28)).astype(np.float32)
    y = net.apply(params, x)
    expected = x.reshape(2, 784).astype(np.float64) @ np.asarray(params["dense_0"]["w"], np.float64) + np.asarray(
        params["dense_0"]["b"], np.float64
    )
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4)


CONV_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv_init(key):
    return {"k": 0.3 * jax.random.normal(key, (3, 3, 1, 4)), "c": jnp.zeros((4,))}


def _conv_apply(params, x):
    y = jax.lax.conv_general_dilated(x, params["k"], (1, 1), "SAME", dimension_numbers=CONV_DIMS)
    return jax.nn.relu(y + params["c"])


def _np_conv_same(x, k):
    """3x3 'SAME' cross-correlation with zero padding, NHWC x HWIO, written as loops."""
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, k.shape[-1]))
    for i in range(h):
        for j in range(w):
            out[:, i, j, :] = np.einsum("nabc,abco->no", xp[:, i : i + 3, j : j + 3, :], k)
    return out


def _images(n, rng):
    """8x8 images, label 1 when the top half is brighter than the bottom half."""
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    x[labels == 1, :4] += 1.0
    x[labels == 0, 4:] += 1.0
    return x, labels


def test_user_convolution_composes_and_trains():
    net = Sequential([(_conv_init, _conv_apply), Flatten(), Dense(8 * 8 * 4, 2, activation=None)])
    assert net.names == ("layer_0", "flatten_0", "dense_0")
    assert _shapes(net) == {"layer_0": {"k": (3, 3, 1, 4), "c": (4,)}, "dense_0": {"w": (256, 2), "b": (2,)}}
    params = {"layer_0": _conv_init(jax.random.key(5)), **_np_params(net, 5)}
    x, labels = _images(32, np.random.default_rng(5))

    # the composed forward pass equals conv -> relu -> reshape -> matmul in NumPy
    feats = np.maximum(_np_conv_same(x.astype(np.float64), np.asarray(params["layer_0"]["k"], np.float64)), 0.0)
    expected = feats.reshape(32, -1) @ np.asarray(params["dense_0"]["w"], np.float64) + np.asarray(params["dense_0"]["b"])
    np.testing.assert_allclose(np.asarray(jax.jit(net.apply)(params, x)), expected, rtol=1e-4, atol=1e-4)

    @jax.jit
    def step(p):
        value, grads = jax.value_and_grad(lambda p: jdense.losses.cross_entropy(net.apply(p, x), labels))(p)
        return jax.tree.map(lambda a, g: a - 0.05 * g, p, grads), value

    values = []
    for _ in range(11):
        params, value = step(params)  # value: the loss before this step's update
        values.append(float(value))
    assert values[-1] < 0.7 * values[0], values
    assert set(params) == {"layer_0", "dense_0"}


@dataclasses.dataclass  # mutable, hence unhashable: the most natural way to write a layer class
class _Scale:
    width: int

    def init(self, key):
        return {"s": jnp.full((self.width,), 2.0)}

    def apply(self, params, x):
        return x * params["s"]


def test_user_layer_object_composes():
    net = Sequential([Dense(4, 3, activation="tanh"), _Scale(3)])
    assert net.names == ("dense_0", "layer_0")
    key = jax.random.key(8)
    params = net.init(key)
    dense_key = jax.random.split(key, 2)[0]  # one key per layer, in order
    np.testing.assert_array_equal(np.asarray(params["dense_0"]["w"]), np.asarray(net.layers[0].init(dense_key)["w"]))
    np.testing.assert_array_equal(np.asarray(params["layer_0"]["s"]), np.full(3, 2.0, np.float32))
    x = np.random.default_rng(8).normal(size=(5, 4)).astype(np.float32)
    expected = 2.0 * np.tanh(x.astype(np.float64) @ np.asarray(params["dense_0"]["w"], np.float64))
    np.testing.assert_allclose(np.asarray(net.apply(params, x)), expected, **F32_TOL)


# --------------------------------------------------------------------------- summary


FLOPS_TOL = 0.10  # summary's count vs XLA's cost analysis (the bound)


def _rows(text):
    """{layer name: (output shape, params, FLOPs)} from summary's table."""
    rows = {}
    for line in text.splitlines():
        cells = [c for c in line.split("   ") if c.strip()]
        if len(cells) == 4 and "_" in cells[0] and "(" in cells[0]:
            rows[cells[0].split()[0]] = (cells[1].strip(), int(cells[2].replace(",", "")),
                                         None if cells[3].strip() == "?" else int(cells[3].replace(",", "")))
    return rows


def _total(text, label):
    line = next(line for line in text.splitlines() if line.startswith(label))
    return int(line[len(label):].split()[0].replace(",", ""))


def test_summary_shapes_counts_and_flops():
    lines = []
    text = summary(mlp([784, 128, 64, 10]), print_fn=lines.append)
    assert lines == [text]
    rows = _rows(text)
    sizes = [(784, 128, True), (128, 64, True), (64, 10, False)]  # by hand: w + b; 2·in·out + bias (+ relu)
    for i, (n_in, n_out, relu) in enumerate(sizes):
        flops = 2 * n_in * n_out + n_out + (n_out if relu else 0)
        assert rows[f"dense_{i}"] == (f"(None, {n_out})", n_in * n_out + n_out, flops)
    assert f"Total params: {sum(r[1] for r in rows.values()):,}" in text
    assert "Total params: 109,386" in text and "Trainable params: 109,386" in text and "Non-trainable params: 0" in text
    assert _total(text, "Forward FLOPs per sample:") == sum(r[2] for r in rows.values()) == 218_762
    # backward: two matmuls per Dense (δ @ wᵀ, xᵀ @ δ), one in the first (no gradient for the data)
    assert _total(text, "Training step FLOPs per sample:") == 3 * 218_762 - 2 * 784 * 128


def test_summary_of_conv_flatten_dense_and_batch_norm():
    net = Sequential([(_conv_init, _conv_apply), Flatten(), Dense(256, 8), BatchNorm(8), Dropout(0.5), Dense(8, 1)])
    text = summary(net, (8, 8, 1), print_fn=lambda s: None)
    rows = _rows(text)
    expected = {
        "layer_0": ("(None, 8, 8, 4)", 3 * 3 * 1 * 4 + 4),
        "flatten_0": ("(None, 256)", 0),
        "dense_0": ("(None, 8)", 256 * 8 + 8),
        "batch_norm_0": ("(None, 8)", 2 * 8),  # scale and bias; running stats are state, not params
        "dropout_0": ("(None, 8)", 0),
        "dense_1": ("(None, 1)", 8 + 1),
    }
    for name, (shape, count) in expected.items():
        assert rows[name][:2] == (shape, count), rows[name]
    assert f"Total params: {sum(c for _, c in expected.values()):,}" in text
    assert "State (not params, not trained by gradients): 16" in text  # BatchNorm's mean and var
    conv_flops = 8 * 8 * 4 * (2 * 3 * 3 * 1 + 1)  # per output: 9 multiply-adds and the bias
    assert rows["layer_0"][2] == pytest.approx(conv_flops, rel=FLOPS_TOL)  # from XLA: a user layer
    assert rows["flatten_0"][2] == rows["dropout_0"][2] == 0
    with pytest.raises(ValueError, match="input_shape"):
        summary(net, print_fn=lambda s: None)


def _xla_flops(fn, *args):
    cost = jax.jit(fn).lower(*args).cost_analysis()  # of the lowered program: no compilation needed
    return (cost[0] if isinstance(cost, list | tuple) else cost)["flops"]


@pytest.mark.parametrize("net,input_shape", [
    (mlp([784, 128, 64, 10]), None),
    (mlp([64, 256, 256, 10], "tanh", batch_norm=True, dropout=0.3), None),
    (Sequential([Flatten(), Dense(784, 300, "gelu"), Dense(300, 100, "sigmoid"), Dense(100, 1, None)]), (28, 28)),
], ids=["relu", "tanh_batch_norm_dropout", "flatten_gelu_sigmoid"])
def test_summary_flops_match_xla_cost_analysis(net, input_shape):
    """Forward and training-step FLOPs per sample against XLA's own count of the compiled programs."""
    text = summary(net, input_shape, print_fn=lambda s: None)
    batch = 32  # per-sample counts at a realistic batch (a batch of 1 makes XLA turn matmuls into other ops)
    x = jax.ShapeDtypeStruct((batch, *(input_shape or (net.input_width,))), jnp.float32)
    params, state = jax.eval_shape(net.init, jax.random.key(0)), net.init_state()  # shapes suffice
    forward = lambda p, s, x: net.apply_with_state(p, s, x)[0]
    assert _total(text, "Forward FLOPs per sample:") == pytest.approx(
        _xla_flops(forward, params, state, x) / batch, rel=FLOPS_TOL)
    y = jnp.ones((batch, net.output_width))
    step = jax.grad(lambda p, s, x: jnp.mean((forward(p, s, x) - y) ** 2))  # the loss is a few FLOPs per sample
    assert _total(text, "Training step FLOPs per sample:") == pytest.approx(
        _xla_flops(step, params, state, x) / batch, rel=FLOPS_TOL)


@dataclasses.dataclass(frozen=True)
class _Frozen:
    """A user layer that training must leave alone: ``trainable = False``."""

    n: int
    trainable = False

    def init(self, key):
        return {"w": jnp.ones((self.n, self.n)), "b": jnp.zeros((self.n,))}

    def apply(self, params, x):
        return x @ params["w"] + params["b"]


@dataclasses.dataclass(frozen=True)
class _FrozenWeights(_Frozen):
    """Trainable except for ``w``, through the ``trainable_mask`` protocol."""

    trainable = True

    def trainable_mask(self, params):
        return {"w": False, "b": True}


@dataclasses.dataclass(frozen=True)
class _FrozenDense(Dense):
    """A Dense layer under the freezing protocol (``trainable = False``), with or without Dense's own field."""

    trainable: bool = False


def test_summary_training_flops_skip_frozen_layers():
    """A frozen first layer needs neither gradient: XLA's step, differentiated for the trainable params only."""
    net = Sequential([_FrozenDense(784, 128), Dense(128, 64), Dense(64, 10, activation=None)])
    text = summary(net, print_fn=lambda s: None)
    assert "Non-trainable params: 100,480" in text
    batch = 32
    params = jax.eval_shape(net.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((batch, 784), jnp.float32)

    def loss(trainable, frozen, x):
        return jnp.mean(net.apply({**frozen, **trainable}, x) ** 2)

    trainable = {k: v for k, v in params.items() if k != "dense_0"}
    xla = _xla_flops(jax.grad(loss), trainable, {"dense_0": params["dense_0"]}, x) / batch
    assert _total(text, "Training step FLOPs per sample:") == pytest.approx(xla, rel=FLOPS_TOL)
    assert _total(text, "Training step FLOPs per sample:") < 2 * _total(text, "Forward FLOPs per sample:")


def test_summary_counts_trainable_and_non_trainable_params():
    net = Sequential([Dense(4, 8), _Frozen(8), _FrozenWeights(8), BatchNorm(8), Dense(8, 2)])
    text = summary(net, print_fn=lambda s: None)
    total = (4 * 8 + 8) + (8 * 8 + 8) + (8 * 8 + 8) + 2 * 8 + (8 * 2 + 2)
    frozen = (8 * 8 + 8) + 8 * 8  # all of _Frozen, w of _FrozenWeights
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {total - frozen:,}" in text and f"Non-trainable params: {frozen:,}" in text
    assert _rows(text)["layer_0"][2] == pytest.approx(2 * 8 * 8 + 8, rel=FLOPS_TOL)  # user layers: XLA's count


def test_summary_trainable_mask_may_be_a_prefix_and_must_hold_bools():
    @dataclasses.dataclass(frozen=True)
    class AllFrozen(_Frozen):
        trainable = True

        def trainable_mask(self, params):
            return False  # a prefix of the params: the whole layer

    @dataclasses.dataclass(frozen=True)
    class BadMask(_Frozen):
        trainable = True

        def trainable_mask(self, params):
            return {"w": "no", "b": True}

    assert "Non-trainable params: 72" in summary(Sequential([AllFrozen(8)]), (8,), print_fn=lambda s: None)
    with pytest.raises(TypeError, match=r"layer_0.trainable_mask\(params\) must return a pytree of bools"):
        summary(Sequential([BadMask(8)]), (8,), print_fn=lambda s: None)


# --------------------------------------------------------------------------- config


def test_config_round_trip():
    net = Sequential([
        Dense(4, 8, activation="tanh", initializer="he_uniform", lambda_=1e-3, use_bias=False),
        BatchNorm(8, momentum=0.95),
        Dropout(0.25),
        Dense(8, 3, activation=None, dtype=jnp.bfloat16),
    ])
    config = json.loads(json.dumps(net.to_config()))  # JSON-ready
    rebuilt = Sequential.from_config(config)
    assert rebuilt == net and hash(rebuilt) == hash(net)
    assert rebuilt.names == net.names
    assert rebuilt.layers[0].initializer == "he_uniform" and rebuilt.layers[3].dtype == jnp.bfloat16
    shapes = jax.eval_shape(rebuilt.init, jax.random.key(0))
    assert set(shapes["dense_0"]) == {"w"} and shapes["dense_1"]["w"].dtype == jnp.bfloat16


def test_mlp_config_round_trip():
    net = mlp([3, 6, 6, 2], activation="gelu", output_activation="softmax", dropout=0.1, batch_norm=True)
    assert Sequential.from_config(net.to_config()) == net


def test_config_refuses_python_objects():
    with pytest.raises(TypeError, match="only names"):
        Sequential([Dense(3, 2, activation=jnp.sin)]).to_config()
    with pytest.raises(TypeError, match="own optimizer"):
        Sequential([Dense(3, 2, optimizer=optax.sgd(0.1))]).to_config()
    with pytest.raises(TypeError, match="user layer"):
        Sequential([(_conv_init, _conv_apply)]).to_config()
    with pytest.raises(ValueError, match="not a jdense network config"):
        Sequential.from_config({"layers": [{"type": "Conv2D"}]})


# --------------------------------------------------------------------------- state, keys and errors


def test_batch_norm_network_train_updates_state_and_eval_uses_it():
    net = mlp([3, 4, 2], batch_norm=True)
    params, state = _np_params(net, 7), net.init_state()
    x = jnp.asarray(np.random.default_rng(7).normal(size=(6, 3)).astype(np.float32))
    y_train, new_state = net.apply_with_state(params, state, x, train=True)
    w, b = (np.asarray(params["dense_0"][k], np.float64) for k in ("w", "b"))
    h = np.maximum(np.asarray(x, np.float64) @ w + b, 0.0)
    np.testing.assert_allclose(np.asarray(new_state["batch_norm_0"]["mean"]), 0.1 * h.mean(0), **F32_TOL)
    np.testing.assert_allclose(np.asarray(new_state["batch_norm_0"]["var"]), 0.9 + 0.1 * h.var(0), **F32_TOL)
    y_eval = net.apply(params, x, state=new_state)
    assert y_train.shape == y_eval.shape == (6, 2)
    assert not np.allclose(np.asarray(y_train), np.asarray(y_eval))


def test_batch_norm_network_needs_state():
    net = mlp([3, 4, 2], batch_norm=True)
    params = _np_params(net)
    with pytest.raises(ValueError, match=r"this network has BatchNorm: pass state="):
        net.apply(params, jnp.ones((2, 3)))


def test_dropout_network_training_needs_key():
    net = mlp([3, 4, 2], dropout=0.5)
    params = _np_params(net)
    with pytest.raises(ValueError, match=r"has Dropout.*key="):
        net.apply(params, jnp.ones((2, 3)), train=True)
    np.testing.assert_array_equal(  # evaluation needs no key and drops nothing
        np.asarray(net.apply(params, jnp.ones((2, 3)))),
        np.asarray(Sequential([net.layers[0], net.layers[2]]).apply(
            {"dense_0": params["dense_0"], "dense_1": params["dense_1"]}, jnp.ones((2, 3)))),
    )


def test_sequential_mismatched_widths():
    with pytest.raises(ValueError, match=r"dense_1 has in_features=5 but the layer before it gives 4 features"):
        Sequential([Dense(3, 4), Dense(5, 2)])


def test_sequential_mismatched_batch_norm_width():
    with pytest.raises(ValueError, match=r"batch_norm_0 has features=3 but the layer before it gives 4"):
        Sequential([Dense(3, 4), BatchNorm(3)])


def test_sequential_wrong_input_width():
    net = mlp([3, 4, 2])
    with pytest.raises(ValueError, match=r"x has shape \(2, 5\) \(5 features per sample\) but dense_0 \(Dense\) expects 3 .*in_features=3"):
        net.apply(_np_params(net), jnp.ones((2, 5)))


@pytest.mark.parametrize("layers", [[], Dense(3, 2), "dense"], ids=["empty", "bare layer", "string"])
def test_sequential_needs_a_list_of_layers(layers):
    with pytest.raises((TypeError, ValueError), match="Sequential"):
        Sequential(layers)


def test_sequential_refuses_non_layers():
    with pytest.raises(TypeError, match=r"a layer must have init\(key\) and apply\(params, x\)"):
        Sequential([Dense(3, 2), 42])


@pytest.mark.parametrize("sizes", [[3], [3, 0, 2], 5], ids=["one", "zero", "int"])
def test_mlp_bad_sizes(sizes):
    with pytest.raises((TypeError, ValueError), match="sizes"):
        mlp(sizes)


# --------------------------------------------------------------------------- params of another network


def test_params_of_another_architecture_are_refused_naming_the_leaf():
    """The issue's case: params of mlp([4, 5, 9]) used to run in mlp([4, 8, 3]) and return shape (n, 9)."""
    net = mlp([4, 8, 3])
    other = _np_params(mlp([4, 5, 9]))
    with pytest.raises(ValueError, match=r"apply: params do not fit this network: params\['dense_0'\]\['b'\] has shape "
                       r"\(5,\) float32 but this network expects \(8,\) float32"):
        net.apply(other, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"^fit: params do not fit"):
        net.check_params(other, "fit")
    net.check_params(_np_params(net))  # its own params pass
    net.check_params(jax.eval_shape(net.init, jax.random.key(0)))  # shapes alone are enough


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda p: {"dense_0": p["dense_0"]}, r"params has no 'dense_1' \(the network's layers with params are dense_0, dense_1\)"),
        (lambda p: {**p, "dense_2": p["dense_1"]}, r"params has 'dense_2', which this network has no params for"),
        (lambda p: {**p, "dense_0": {"w": p["dense_0"]["w"]}}, r"params\['dense_0'\]\['b'\] is missing \(expected shape \(8,\) float32\)"),
        (lambda p: {**p, "dense_0": {**p["dense_0"], "v": p["dense_0"]["b"]}}, r"params\['dense_0'\]\['v'\] is not a param"),
        (lambda p: {**p, "dense_0": [p["dense_0"]["b"], p["dense_0"]["w"]]}, r"params\['dense_0'\]\[0\] is not a param"),
        (lambda p: {**p, "dense_1": {**p["dense_1"], "w": p["dense_1"]["w"].T}}, r"params\['dense_1'\]\['w'\] has shape \(3, 8\)"),
        (lambda p: {**p, "dense_1": {**p["dense_1"], "w": np.ones((8, 3), np.int32)}}, r"has shape \(8, 3\) int32 but .* \(8, 3\) float32"),
    ],
    ids=["missing layer", "extra layer", "missing leaf", "extra leaf", "list", "transposed", "integer"],
)
def test_check_params_names_the_first_mismatch(change, match):
    net = mlp([4, 8, 3])
    with pytest.raises(ValueError, match=match):
        net.check_params(change(_np_params(net)))


def test_check_params_accepts_other_float_dtypes():
    """Mixed precision keeps the tree and shapes; only the kind of dtype (floating) must match."""
    net = mlp([4, 8, 3])
    net.check_params(jax.tree.map(lambda x: x.astype(jnp.bfloat16), _np_params(net)))


@pytest.mark.parametrize("params,match", [
    (jax.random.key(0), r"params must be the dict from net.init\(key\); got a PRNG key \(.*\) — did you swap the arguments\?"),
    (jax.random.PRNGKey(0), r"params must be the dict from net.init\(key\); got a PRNG key \(.*uint32\) — did you swap"),
    ([{"w": jnp.ones((4, 8))}], r"params must be the dict from net.init\(key\) .*got list"),
], ids=["typed key", "raw key", "list"])
def test_params_not_a_dict_is_a_type_error(params, match):
    net = mlp([4, 8, 3])
    with pytest.raises(TypeError, match=r"^apply: " + match):
        net.apply(params, jnp.ones((2, 4)))
    with pytest.raises(TypeError, match=r"^fit: params must be the dict"):
        net.check_params(params, "fit")


def test_an_array_for_params_is_described():
    with pytest.raises(TypeError, match=r"got an array of shape \(2, 4\) and dtype float32"):
        mlp([4, 8, 3]).apply(jnp.ones((2, 4)), jnp.ones((2, 4)))


def test_state_not_a_dict_is_a_type_error():
    net = mlp([3, 4, 2], batch_norm=True)
    with pytest.raises(TypeError, match=r"state must be the dict from net.init_state\(\).*got list"):
        net.apply(_np_params(net), jnp.ones((2, 3)), state=[1])


def test_check_params_with_user_layers():
    """A traceable user layer is checked like the built-in ones; one that needs concrete values is skipped."""
    traced = jdense.Sequential([(lambda key: {"c": jnp.ones(3)}, lambda p, x: x * p["c"]), Dense(3, 2)])
    params = {"layer_0": {"c": jnp.ones(3)}, "dense_0": _np_params(mlp([3, 2]))["dense_0"]}
    traced.check_params(params)
    with pytest.raises(ValueError, match=r"params\['layer_0'\]\['c'\] has shape \(4,\)"):
        traced.check_params({**params, "layer_0": {"c": jnp.ones(4)}})

    def concrete_init(key):
        return {"c": jnp.full((3,), float(np.asarray(jax.random.key_data(key))[-1] % 2))}

    opaque = jdense.Sequential([(concrete_init, lambda p, x: x * p["c"]), Dense(3, 2)])
    opaque.check_params(params)
    with pytest.raises(ValueError, match=r"params\['dense_0'\]\['w'\]"):
        opaque.check_params({**params, "dense_0": {"w": jnp.ones((4, 2)), "b": jnp.ones(2)}})


# --------------------------------------------------------------------------- params too large for the device


def test_init_refuses_params_larger_than_the_device_naming_the_layer():
    """mlp([10**9, 10**9]).init used to abort the process (XLA "Check failed")."""
    with pytest.raises(ValueError, match=r"^dense_0 needs 4,000,000,004,000,000,000 bytes \(3\.5 EiB\) for its params "
                       r"\(w \(1000000000, 1000000000\) float32 and b \(1000000000,\) float32\), but the device holds at most"):
        mlp([10**9, 10**9]).init(jax.random.key(0))


def test_init_refuses_layers_that_fit_one_by_one_but_not_together(monkeypatch):
    from jdense import checks

    monkeypatch.setattr(checks, "device_capacity", lambda: (10_000, "a 10 kB test device"))
    net = mlp([40, 40, 40])  # 2 x 6,560 bytes
    with pytest.raises(ValueError, match=r"^this network needs 13,120 bytes .*\(2 layers, the largest dense_0\).*10,000 bytes"):
        net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"^dense_1 needs 24,600 bytes .*w \(40, 150\) float32 and b \(150,\) float32"):
        mlp([40, 40, 150]).init(jax.random.key(0))
