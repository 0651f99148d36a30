"""LoRA adapters: the formula against NumPy and Keras's arithmetic, init equality, merging,
freezing in fit, configs and adapter-only checkpoints."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jdense
from jdense import Dense, Dropout, LoRADense, Sequential

RTOL = 1e-5  # float32 matmuls of width <= 64 against float64 NumPy
ATOL = 1e-5
MERGE_TOL = dict(rtol=2e-6, atol=2e-6)  # merged vs adapted: the same sums, rounded in another order (a few ulps)

_run = lambda net, params, x: net.apply(params, x)


def _net(lambda_=0.0):
    return jdense.mlp([8, 16, 3], activation="tanh", lambda_=lambda_)


def _base(sizes=(8, 16, 3), seed=0):
    """Base params drawn with NumPy (nothing to compile)."""
    rng = np.random.default_rng(seed)
    return {f"dense_{i}": {"w": jnp.asarray((rng.normal(size=(m, n)) / np.sqrt(m)).astype(np.float32)),
                           "b": jnp.asarray((rng.normal(size=n) / 10).astype(np.float32))}
            for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:]))}


def _random_adapters(params, seed=1):
    """Adapters with nonzero ``lora_b`` so that the update is visible."""
    rng = np.random.default_rng(seed)
    return {name: {**p, "lora_b": jnp.asarray(rng.normal(size=p["lora_b"].shape).astype(np.float32))} if "lora_b" in p else p
            for name, p in params.items()}


def _x(n, width, seed=2):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32))


def _numpy_forward(net, params, x):
    """The adapted network in float64 NumPy: act(x @ (w + alpha/rank · a @ b) + bias)."""
    acts = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), None: lambda z: z}
    x = np.asarray(x, np.float64)
    for name, layer in zip(net.names, net.layers):
        p = {k: np.asarray(v, np.float64) for k, v in params[name].items()}
        w = p["w"] + (layer.alpha / layer.rank) * p["lora_a"] @ p["lora_b"] if isinstance(layer, LoRADense) else p["w"]
        x = acts[layer.activation](x @ w + p.get("b", 0.0))
    return x


def test_equal_to_the_base_at_init():
    net = _net()
    base = _base()
    lnet = jdense.lora(net, rank=2)
    params = jdense.lora_init(jax.random.key(1), lnet, base)
    x = _x(5, 8)
    np.testing.assert_array_equal(np.asarray(_run(lnet, params, x)), np.asarray(_run(net, base, x)))
    for name in net.names:
        assert params[name]["w"] is base[name]["w"] and params[name]["b"] is base[name]["b"]  # kept, not copied
        assert not np.any(np.asarray(params[name]["lora_b"]))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("alpha", [None, 1.0, 16.0])
def test_formula_against_numpy(activation, alpha):
    net = jdense.mlp([8, 16, 3], activation=activation)
    lnet = jdense.lora(net, rank=2, alpha=alpha)
    params = _random_adapters(jdense.lora_init(jax.random.key(1), lnet, _base()))
    x = _x(6, 8)
    np.testing.assert_allclose(np.asarray(_run(lnet, params, x)), _numpy_forward(lnet, params, x), rtol=RTOL, atol=ATOL)


def test_keras_enable_lora_arithmetic():
    # Keras 3 Dense.enable_lora(rank, lora_alpha=None): lora_alpha defaults to rank,
    # lora_kernel_a (in, rank) is HeUniform, lora_kernel_b (rank, out) zeros, and the
    # call uses kernel = _kernel + (lora_alpha / rank) * lora_kernel_a @ lora_kernel_b.
    rank, fan_in = 4, 128  # the adapter shape of the checkpoint test: nothing new to compile
    layer = LoRADense(fan_in, 32, activation=None, rank=rank)
    assert layer.alpha == rank and layer.scaling == 1.0
    adapters = layer.init_adapters(jax.random.key(0))
    a, b = np.asarray(adapters["lora_a"]), np.asarray(adapters["lora_b"])
    limit = math.sqrt(6.0 / fan_in)  # HeUniform: U(-limit, limit), variance 2 / fan_in
    assert a.shape == (fan_in, rank) and np.abs(a).max() <= limit
    assert abs(a.var() - 2.0 / fan_in) < 0.15 * 2.0 / fan_in  # 512 draws: 4 standard errors
    assert b.shape == (rank, 32) and not b.any()

    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(fan_in, 32)), rng.normal(size=32)
    lora_a, lora_b = rng.normal(size=(fan_in, rank)), rng.normal(size=(rank, 32))
    x = rng.normal(size=(3, fan_in))
    lora_alpha = rank  # Keras's default
    keras_out = x @ (kernel + (lora_alpha / rank) * lora_a @ lora_b) + bias
    params = {k: jnp.asarray(v.astype(np.float32)) for k, v in dict(w=kernel, b=bias, lora_a=lora_a, lora_b=lora_b).items()}
    np.testing.assert_allclose(np.asarray(layer.apply(params, x)), keras_out, rtol=1e-4, atol=1e-3)


def test_merged_equals_adapted():
    net = _net()
    lnet = jdense.lora(net, rank=2, alpha=6.0)
    params = _random_adapters(jdense.lora_init(jax.random.key(1), lnet, _base()))
    merged_net, merged = jdense.merge_lora(lnet, params)
    assert merged_net == net
    assert all(sorted(merged[name]) == ["b", "w"] for name in net.names)
    x = _x(7, 8)
    np.testing.assert_allclose(np.asarray(_run(merged_net, merged, x)), np.asarray(_run(lnet, params, x)), **MERGE_TOL)


def test_parameter_count_of_a_rank_4_adapter():
    net = jdense.mlp([784, 128, 64, 10])
    lnet = jdense.lora(net, rank=4)
    shapes = jax.eval_shape(lnet.init, jax.random.key(0))
    adapter = sum(math.prod(s.shape) for name in lnet.names for k, s in shapes[name].items() if k.startswith("lora_"))
    assert adapter == 4 * ((784 + 128) + (128 + 64) + (64 + 10)) == 4712
    base = sum(math.prod(s.shape) for s in jax.tree.leaves(jax.eval_shape(net.init, jax.random.key(0))))
    assert adapter / base < 0.05


def test_targets_by_name_and_index():
    net = Sequential([Dense(8, 16), Dropout(0.1), Dense(16, 16), Dense(16, 3, activation=None)])
    assert [type(layer) for layer in jdense.lora(net, 2, layers=["dense_1"]).layers] == [Dense, Dropout, LoRADense, Dense]
    assert [type(layer) for layer in jdense.lora(net, 2, layers=[0, -1]).layers] == [LoRADense, Dropout, Dense, LoRADense]
    lnet = jdense.lora(net, 2, layers="dense_2")
    assert lnet.names == net.names and lnet.input_width == 8 and lnet.output_width == 3
    params = jdense.lora_init(jax.random.key(1), lnet, _base((8, 16, 16, 3)))
    assert "lora_a" not in params["dense_0"] and params["dense_2"]["lora_a"].shape == (16, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(rank=0), ValueError, "rank must be a positive int"),
        (dict(rank=2.5), TypeError, "rank must be a positive int"),
        (dict(rank=2, alpha=-1.0), ValueError, "alpha must be a number > 0"),
        (dict(rank=2, layers=["dense_9"]), ValueError, "not in the network"),
        (dict(rank=2, layers=[1]), ValueError, "dropout_0, a Dropout; only plain Dense"),
        (dict(rank=2, layers=[7]), ValueError, "has index 7"),
        (dict(rank=2, layers=[1.0]), TypeError, "layer names such as 'dense_0'"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    net = Sequential([Dense(8, 16), Dropout(0.1), Dense(16, 3)])
    with pytest.raises(error, match=match):
        jdense.lora(net, **kwargs)


def test_stacking_and_bad_params_are_refused():
    net = _net()
    lnet = jdense.lora(net, 2)
    with pytest.raises(ValueError, match="merge_lora first"):
        jdense.lora(lnet, 2, layers=[0])
    with pytest.raises(ValueError, match="no LoRADense"):
        jdense.lora_init(jax.random.key(0), net, _base())
    with pytest.raises(ValueError, match=r"should have shape \(8, 16\)"):
        jdense.lora_init(jax.random.key(0), lnet, _base((4, 16, 3)))
    with pytest.raises(ValueError, match=r"params\['dense_0'\]\['lora_a'\] is missing"):
        lnet.apply(_base(), jnp.ones((1, 8)))
    with pytest.raises(ValueError, match="nothing to merge|no LoRADense"):
        jdense.merge_lora(net, _base())


def test_base_gets_no_gradient_and_mask_says_so():
    lnet = jdense.lora(_net(), 2)
    params = _random_adapters(jdense.lora_init(jax.random.key(1), lnet, _base()))
    x = _x(4, 8)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(lnet.apply(p, x) ** 2)))(params)
    for name in lnet.names:
        assert not np.any(np.asarray(grads[name]["w"])) and not np.any(np.asarray(grads[name]["b"]))
        assert np.any(np.asarray(grads[name]["lora_a"])) and np.any(np.asarray(grads[name]["lora_b"]))
        assert lnet.layers[0].trainable_mask(params[name]) == {"w": False, "b": False, "lora_a": True, "lora_b": True}
    trained = jdense.lora(_net(), 2, train_base=True)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(trained.apply(p, x) ** 2)))(params)
    assert np.any(np.asarray(grads["dense_0"]["w"])) and all(trained.layers[0].trainable_mask(params["dense_0"]).values())


def _data():
    x = np.asarray(_x(96, 8, seed=10))
    return x, np.argmax(x[:, :3] + 0.5 * x[:, 3:6], axis=1).astype(np.int32)


def _fit(lnet, params, optimizer):
    x, y = _data()
    return jdense.fit(lnet, params, x, y, loss="cross_entropy", optimizer=optimizer, epochs=3, batch_size=32,
                      key=jax.random.key(4), verbose=0)


def _assert_only_adapters_changed(lnet, before, after):
    for name in lnet.names:
        np.testing.assert_array_equal(np.asarray(after[name]["w"]), np.asarray(before[name]["w"]))
        np.testing.assert_array_equal(np.asarray(after[name]["b"]), np.asarray(before[name]["b"]))
        assert not np.array_equal(np.asarray(after[name]["lora_b"]), np.asarray(before[name]["lora_b"]))


def test_fit_with_an_optax_mask_from_trainable_mask_keeps_the_base_bit_for_bit():
    net = _net(lambda_=1e-2)
    lnet = jdense.lora(net, 2)
    params = jdense.lora_init(jax.random.key(1), lnet, _base())
    masks = {name: layer.trainable_mask(params[name]) for name, layer in zip(lnet.names, lnet.layers)}
    labels = jax.tree.map(lambda trains: "train" if trains else "freeze", masks)
    tx = optax.multi_transform({"train": optax.adam(1e-2), "freeze": optax.set_to_zero()}, labels)
    result = _fit(lnet, params, tx)
    _assert_only_adapters_changed(lnet, params, result.params)
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_fit_with_jdense_optimizer_keeps_the_base_bit_for_bit():
    # Needs jdense.optimizer's freezing protocol (layer.trainable_mask): without it, the
    # base's L2 term (lambda_ > 0) moves the frozen w.
    net = _net(lambda_=1e-2)
    lnet = jdense.lora(net, 2)
    params = jdense.lora_init(jax.random.key(1), lnet, _base())
    result = _fit(lnet, params, jdense.optimizer(lnet, "adam", 1e-2))
    _assert_only_adapters_changed(lnet, params, result.params)


def test_config_and_full_checkpoint_keep_rank_alpha_and_targets(tmp_path):
    net = _net()
    lnet = jdense.lora(net, 2, alpha=4.0, layers=["dense_1"])
    assert Sequential.from_config(lnet.to_config()) == lnet
    cfg = lnet.to_config()["layers"][1]
    assert (cfg["type"], cfg["rank"], cfg["alpha"], cfg["train_base"]) == ("LoRADense", 2, 4.0, False)
    params = jdense.lora_init(jax.random.key(1), lnet, _base())
    jdense.save(tmp_path / "full.safetensors", params, net=lnet)
    ckpt = jdense.load(tmp_path / "full.safetensors")
    assert ckpt.net == lnet and ckpt.net.layers[1].scaling == 2.0


def test_adapter_only_checkpoint_applies_onto_a_base_checkpoint(tmp_path):
    net = jdense.mlp([64, 128, 10])
    base = _base((64, 128, 10))
    jdense.save(tmp_path / "base.safetensors", base, net=net)
    lnet = jdense.lora(net, 4, alpha=8.0)
    params = _random_adapters(jdense.lora_init(jax.random.key(1), lnet, base))
    path = jdense.save_adapters(tmp_path / "adapters.safetensors", lnet, params, {"task": "digits"})
    size, base_size = path.stat().st_size, (tmp_path / "base.safetensors").stat().st_size
    assert size < 16_000 and size < base_size / 4  # 4·(64+128+128+10) floats, the config and the header

    ckpt = jdense.load_adapters(path, jdense.load(tmp_path / "base.safetensors"))
    assert ckpt.net == lnet and ckpt.metadata == {"task": "digits"}
    x = _x(4, 64, 3)
    np.testing.assert_array_equal(np.asarray(_run(ckpt.net, ckpt.params, x)), np.asarray(_run(lnet, params, x)))

    with pytest.raises(ValueError, match="do not fit the network"):
        jdense.load_adapters(path, _base((64, 32, 10)))
    with pytest.raises(ValueError, match="not an adapter checkpoint"):
        jdense.load_adapters(tmp_path / "base.safetensors", base)


def test_register_layer_names_new_layer_kinds_and_refuses_clashes(monkeypatch):
    # LoRADense and QuantizedDense reach to_config/from_config through jdense.register_layer.
    import dataclasses

    from jdense import network

    monkeypatch.setattr(network, "_LAYER_TYPES", dict(network._LAYER_TYPES))  # leave the registry as it was

    @dataclasses.dataclass(frozen=True)
    class Scale:
        factor: float = 2.0

        def init(self, key):
            return {}

        def apply(self, params, x):
            return self.factor * x

    net = Sequential([Dense(4, 2), Scale(3.0)])
    with pytest.raises(TypeError, match="user layer"):
        net.to_config()
    assert jdense.register_layer(Scale) is Scale
    assert Sequential.from_config(net.to_config()) == net
    with pytest.raises(ValueError, match="already registered"):
        jdense.register_layer(dataclasses.make_dataclass("LoRADense", [("rank", int)]))
    with pytest.raises(TypeError, match="dataclass"):
        jdense.register_layer(int)
