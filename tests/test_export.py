"""Export and PyTorch interop: onnxruntime, jax.export and torch compute what jdense.predict computes.

Every comparison is against ``jdense.predict`` in float32 within 1e-5 relative: ``|y - ref| <=
1e-5·|ref| + 1e-5·max|ref|`` (the second term covers outputs near zero, where a matmul's rounding
is relative to its summands, not to the result). Each network is exported once per module.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdense
from jdense import Activation, BatchNorm, Dense, Dropout, Flatten
from jdense.cli import main
from jdense.quantize import MODES

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

GELU_EXACT = functools.partial(jax.nn.gelu, approximate=False)
LEAKY_02 = functools.partial(jax.nn.leaky_relu, negative_slope=0.2)
ACTIVATIONS = [*jdense.activations.ACTIVATIONS, None, GELU_EXACT, LEAKY_02]


def close(y, ref):
    y, ref = np.asarray(y), np.asarray(ref)
    assert y.shape == ref.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def _random_params(net, seed):
    """Params of ``net`` drawn N(0, 1/2) with NumPy (LoRA's lora_b too, so that the adapters matter); nothing compiles."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    return jax.tree.map(lambda s: jnp.asarray(0.7 * rng.normal(size=s.shape), s.dtype), shapes)


def _trained_state(net):
    """BatchNorm statistics that are not the initial (0, 1), as after training."""
    return {name: {"mean": jnp.linspace(-0.5, 0.5, s["mean"].shape[0]), "var": jnp.linspace(0.3, 2.0, s["var"].shape[0])}
            for name, s in net.init_state().items()}


def _zoo():
    """Flatten, BatchNorm, Activation layers, Dropout and one Dense per activation (with and without bias), one after the other."""
    layers = [Flatten(), Dense(6, 8, activation=None), BatchNorm(8), Activation("gelu"), Dropout(0.3), Activation(LEAKY_02)]
    layers += [Dense(8, 8, activation=a, use_bias=i % 3 != 0) for i, a in enumerate(ACTIVATIONS)]
    net = jdense.Sequential([*layers, Dense(8, 3, activation=None)])
    return net, _random_params(net, 0), _trained_state(net), (2, 3)


def _lora():
    net = jdense.mlp([5, 16, 4], "tanh")
    lnet = jdense.lora(net, rank=2)
    return lnet, _random_params(lnet, 1), None, (5,)


def _quantized(mode):
    net = jdense.mlp([5, 16, 16, 4], "silu", batch_norm=True)
    qnet, qparams = jdense.quantize(net, _random_params(net, 4), mode)
    return qnet, qparams, _trained_state(net), (5,)


def _rank3():
    """Flatten(start_axis=2) keeps a middle axis: Reshape, MatMul + Add and BatchNorm on 3-D inputs."""
    net = jdense.Sequential([Flatten(start_axis=2), Dense(12, 5, activation="elu"), BatchNorm(5), Dense(5, 2, activation=None)])
    return net, _random_params(net, 5), _trained_state(net), (2, 3, 4)


def _temperature():
    """jdense.temperature_scale's network: the logits of a BatchNorm MLP divided by the fitted T (a Temperature layer)."""
    net = jdense.mlp([5, 16, 4], "relu", batch_norm=True)
    params, state = _random_params(net, 7), _trained_state(net)
    x_val = np.random.default_rng(8).normal(size=(64, 5)).astype(np.float32)
    logits = np.asarray(jdense.predict(net, params, x_val, state=state))
    y_val = np.argmax(logits + np.random.default_rng(9).normal(scale=2 * logits.std(), size=logits.shape), axis=1)
    tnet, tparams = jdense.temperature_scale(net, params, x_val, y_val, state=state)
    assert isinstance(tnet.layers[-1], jdense.Temperature) and abs(float(tparams["temperature_0"]["t"]) - 1) > 0.1
    return tnet, tparams, state, (5,)


CASES = {"zoo": _zoo, "lora": _lora, "int8": functools.partial(_quantized, "int8"),
         "int8_weight_only": functools.partial(_quantized, "int8_weight_only"), "float8": functools.partial(_quantized, "float8"),
         "rank3": _rank3, "temperature": _temperature}


@dataclasses.dataclass
class Case:
    net: jdense.Sequential
    params: dict
    state: dict | None
    x: np.ndarray  # 37 rows; x[:1] is the batch of one
    ref: np.ndarray
    ref1: np.ndarray
    onnx_path: object
    jax_path: object


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    net, params, state, shape = CASES[request.param]()
    x = np.random.default_rng(0).normal(size=(37, *shape)).astype(np.float32)
    ref = np.asarray(jdense.predict(net, params, x, state=state))
    ref1 = np.asarray(jdense.predict(net, params, x[:1], state=state))
    folder = tmp_path_factory.mktemp(request.param)
    onnx_shape = shape if net.input_width is None else None
    onnx_path = jdense.export(net, params, folder / "model.onnx", state=state, input_shape=onnx_shape)
    jax_shape = shape if request.param == "rank3" else None  # in a .jaxexport file the zoo's Flatten() takes any rank
    jax_path = jdense.export(net, params, folder / "model.jaxexport", state=state, input_shape=jax_shape)
    return Case(net, params, state, x, ref, ref1, onnx_path, jax_path)


def test_onnxruntime_matches_predict_for_batches_of_1_and_37(case):
    model = onnx.load(case.onnx_path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(node.op_type == "Dropout" for node in model.graph.node)
    session = ort.InferenceSession(str(case.onnx_path), providers=["CPUExecutionProvider"])
    close(session.run(None, {"input": case.x})[0], case.ref)
    close(session.run(None, {"input": case.x[:1]})[0], case.ref1)


def test_load_exported_matches_predict(case):
    f = jdense.load_exported(case.jax_path)
    if case.net.names[0] == "flatten_0" and case.net.layers[0].start_axis == 1:
        assert f.input_shape == (6,)  # flat inputs; x of shape (37, 2, 3) is flattened by f
    close(f(case.x), case.ref)
    close(f(case.x[:1]), case.ref1)
    assert not isinstance(f.exported.in_avals[0].shape[0], int)  # the batch axis is symbolic


def test_to_torch_matches_predict(case):
    if case.net.names[0] == "flatten_0" and case.net.layers[0].start_axis == 2:  # BatchNorm1d would normalize axis 1
        with pytest.raises(ValueError, match="batch_norm_0"):
            jdense.to_torch(case.net, case.params, case.state)
        return
    module = jdense.to_torch(case.net, case.params, case.state)
    assert isinstance(module, torch.nn.Sequential) and not module.training
    with torch.no_grad():
        close(module(torch.from_numpy(case.x)).numpy(), case.ref)
        close(module(torch.from_numpy(case.x[:1])).numpy(), case.ref1)


@pytest.mark.parametrize("build", [_zoo, *(functools.partial(_quantized, m) for m in MODES), _temperature],
                         ids=["zoo", *MODES, "temperature"])
def test_round_trip_through_torch_gives_the_same_network_and_params(build):
    net, params, state, _ = build()
    net2, params2, state2 = jdense.from_torch(jdense.to_torch(net, params, state))
    assert net2.names == net.names
    assert [type(layer) for layer in net2.layers] == [type(layer) for layer in net.layers]
    assert [layer for layer in net2.layers if isinstance(layer, jdense.Temperature)] == [
        layer for layer in net.layers if isinstance(layer, jdense.Temperature)]
    for layer, layer2 in zip(net.layers, net2.layers):
        if isinstance(layer, Dense | Activation):
            want = {"swish": "silu", "linear": None}.get(layer.activation, layer.activation)
            assert layer2.activation == want or (layer2.activation.func, layer2.activation.keywords) == (
                layer.activation.func, layer.activation.keywords)
    assert [getattr(layer, "mode", None) for layer in net2.layers] == [getattr(layer, "mode", None) for layer in net.layers]
    for tree, tree2 in ((params, params2), (state, state2)):
        assert jax.tree.structure(tree) == jax.tree.structure(tree2)
        for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(tree2)):  # bit for bit, int8 and float8 weights included
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def test_from_torch_reproduces_the_torch_module():
    torch.manual_seed(0)
    nn = torch.nn
    bn = nn.BatchNorm1d(16, eps=1e-3, momentum=0.2)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    module = nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.GELU(), bn, nn.Dropout(0.2),
                           nn.Sequential(nn.Linear(16, 8, bias=False), nn.LeakyReLU(0.2), nn.Identity()),
                           nn.Linear(8, 8), nn.ELU(0.5), nn.Linear(8, 3), nn.Softmax(dim=1)).eval()
    x = np.random.default_rng(1).normal(size=(37, 2, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    net, params, state = jdense.from_torch(module)
    assert [type(layer).__name__ for layer in net.layers] == ["Flatten", "Dense", "BatchNorm", "Dropout", "Dense", "Dense", "Dense"]
    assert net.layers[2].epsilon == 1e-3 and net.layers[2].momentum == pytest.approx(0.8)
    close(jdense.predict(net, params, x, state=state), expected)


def test_unsupported_layers_and_activations_are_named():
    custom = jdense.Sequential([Dense(4, 8), (lambda key: {}, lambda params, x: 2 * x)])
    params = _random_params(custom, 0)
    with pytest.raises(ValueError, match="layer_0 is a FunctionLayer, which has no ONNX form"):
        jdense.export(custom, params, "never.onnx")
    with pytest.raises(ValueError, match="layer_0 is a FunctionLayer, which has no PyTorch form"):
        jdense.to_torch(custom, params)
    odd = jdense.Sequential([Dense(4, 3, activation=jnp.sin)])
    with pytest.raises(ValueError, match="dense_0 has activation .*sin"):
        jdense.export(odd, _random_params(odd, 0), "never.onnx")
    with pytest.raises(ValueError, match="suffix '.txt'"):
        jdense.export(odd, _random_params(odd, 0), "model.txt")
    flat = jdense.Sequential([Flatten(start_axis=2), Dense(4, 2)])
    with pytest.raises(ValueError, match="input_shape="):
        jdense.export(flat, _random_params(flat, 0), "m.onnx")
    nn = torch.nn
    with pytest.raises(ValueError, match=r"module '1' \(Conv1d"):
        jdense.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Conv1d(1, 1, 1)))
    with pytest.raises(ValueError, match=r"module '1' \(Softmax\(dim=0\)\) has no jdense layer"):
        jdense.from_torch(nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=0)))
    with pytest.raises(TypeError, match="torch.nn.Sequential, got Linear"):
        jdense.from_torch(nn.Linear(4, 4))


def test_jaxexport_runs_any_layer(tmp_path):
    """A user layer has no ONNX form, but jax.export stores whatever JAX runs."""
    net = jdense.Sequential([Dense(3, 4, activation=jnp.sin), (lambda key: {}, lambda params, x: 2 * x)])
    params = _random_params(net, 0)
    f = jdense.load_exported(jdense.export(net, params, tmp_path / "custom.jaxexport"))
    x = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    close(f(x), jdense.predict(net, params, x))
    with pytest.raises(ValueError, match=r"takes \(batch, 3\)"):
        f(np.ones((5, 4), np.float32))


def test_bad_files_are_refused_by_name(tmp_path):
    net = jdense.mlp([3, 4, 2])
    params = _random_params(net, 0)
    good = jdense.export(net, params, tmp_path / "m.jaxexport").read_bytes()
    model = jdense.export(net, params, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"m.onnx is not a jdense .jaxexport file \(an ONNX model"):
        jdense.load_exported(model)
    (tmp_path / "cut.jaxexport").write_bytes(good[:-10])
    with pytest.raises(ValueError, match="cut.jaxexport is corrupted"):
        jdense.load_exported(tmp_path / "cut.jaxexport")
    flipped = bytearray(good)
    flipped[-100] ^= 0xFF
    (tmp_path / "flip.jaxexport").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flip.jaxexport is corrupted"):
        jdense.load_exported(tmp_path / "flip.jaxexport")
    with pytest.raises(FileNotFoundError, match="none.jaxexport"):
        jdense.load_exported(tmp_path / "none.jaxexport")


def test_a_failed_export_leaves_the_previous_file(tmp_path, monkeypatch):
    net = jdense.mlp([3, 4, 2])
    params = _random_params(net, 0)
    path = jdense.export(net, params, tmp_path / "m.onnx")
    before = path.read_bytes()

    def half_then_fail(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr("pathlib.Path.write_bytes", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        jdense.export(net, _random_params(net, 1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left


def test_cli_export(tmp_path, capsys):
    net = jdense.mlp([4, 8, 3], batch_norm=True)
    params, state = _random_params(net, 6), _trained_state(net)
    jdense.save(tmp_path / "ckpt.safetensors", params, net=net, state=state)
    assert main(["export", str(tmp_path / "ckpt.safetensors"), str(tmp_path / "out.onnx")]) == 0
    out = capsys.readouterr().out
    size = (tmp_path / "out.onnx").stat().st_size
    assert out == f"wrote {tmp_path / 'out.onnx'} ({size:,} bytes)\n"
    x = np.random.default_rng(3).normal(size=(7, 4)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"])
    close(session.run(None, {"input": x})[0], jdense.predict(net, params, x, state=state))
    assert main(["export", str(tmp_path / "ckpt.safetensors"), str(tmp_path / "out.txt")]) == 2
    assert main(["export", str(tmp_path / "missing.safetensors"), str(tmp_path / "out.onnx")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("jdense export: error: OUT must end in .onnx or .jaxexport")
    assert err[1].startswith("jdense export: error: no checkpoint at") and len(err) == 2


def test_temperature_in_torch_and_onnx(tmp_path):
    """T is a torch buffer (not a parameter) and one ONNX Div; a trainable Temperature keeps its flag through torch."""
    from jdense.torch_layers import Temperature as TorchTemperature

    net = jdense.Sequential([Dense(4, 3, activation=None), jdense.Temperature(trainable=True)])
    params = _random_params(net, 10) | {"temperature_0": {"t": jnp.float32(0.4)}}
    module = jdense.to_torch(net, params)
    temperature = module.temperature_0
    assert isinstance(temperature, TorchTemperature) and float(temperature.t) == pytest.approx(0.4)
    assert "temperature_0.t" in module.state_dict() and all(not n.startswith("temperature_0") for n, _ in module.named_parameters())
    x = np.random.default_rng(11).normal(size=(9, 4)).astype(np.float32)
    with torch.no_grad():
        close(module(torch.from_numpy(x)).numpy(), np.asarray(jdense.predict(net, params, x)))
    net2, params2, _ = jdense.from_torch(module)
    assert net2.layers[-1] == jdense.Temperature(trainable=True) and float(params2["temperature_0"]["t"]) == np.float32(0.4)
    model = onnx.load(jdense.export(net, params, tmp_path / "t.onnx"))
    div = [node for node in model.graph.node if node.op_type == "Div"]
    assert len(div) == 1 and div[0].output[0] == "output"
    t = next(i for i in model.graph.initializer if i.name == div[0].input[1])
    assert onnx.numpy_helper.to_array(t) == np.float32(0.4)


def test_cli_export_of_a_temperature_scaled_checkpoint(tmp_path, capsys):
    net, params, state, _ = _temperature()
    jdense.save(tmp_path / "ckpt.safetensors", params, net=net, state=state)
    x = np.random.default_rng(12).normal(size=(7, 5)).astype(np.float32)
    ref = np.asarray(jdense.predict(net, params, x, state=state))
    assert main(["export", str(tmp_path / "ckpt.safetensors"), str(tmp_path / "out.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "out.onnx"), providers=["CPUExecutionProvider"])
    close(session.run(None, {"input": x})[0], ref)
    assert main(["export", str(tmp_path / "ckpt.safetensors"), str(tmp_path / "out.jaxexport")]) == 0
    close(jdense.load_exported(tmp_path / "out.jaxexport")(x), ref)
    assert capsys.readouterr().out.count("wrote ") == 2


@pytest.mark.parametrize("middle", ["batch_norm", "dropout"])
def test_from_torch_takes_an_activation_that_does_not_follow_a_linear(middle):
    """Linear → BatchNorm1d → ReLU → Linear and Linear → Dropout → ReLU → Linear: the ReLU becomes an Activation layer."""
    torch.manual_seed(1)
    nn = torch.nn
    between = nn.BatchNorm1d(5) if middle == "batch_norm" else nn.Dropout(0.4)
    module = nn.Sequential(nn.Linear(6, 5), between, nn.ReLU(), nn.Linear(5, 2))
    x = np.random.default_rng(2).normal(size=(37, 6)).astype(np.float32)
    module.train()
    with torch.no_grad():
        module(torch.from_numpy(3 * x + 1))  # BatchNorm's running statistics move away from (0, 1)
        expected = module.eval()(torch.from_numpy(x)).numpy()
    net, params, state = jdense.from_torch(module)
    kinds = ["Dense", "BatchNorm" if middle == "batch_norm" else "Dropout", "Activation", "Dense"]
    assert [type(layer).__name__ for layer in net.layers] == kinds
    assert net.layers[0].activation is None and net.layers[2] == Activation("relu")
    close(jdense.predict(net, params, x, state=state), expected)


def test_activation_layer_in_onnx_jaxexport_and_torch_equals_predict(tmp_path):
    """An Activation layer of each kind between BatchNorms: ONNX, .jaxexport and to_torch compute what predict computes."""
    layers = [Dense(4, 6, activation=None)]
    for a in ACTIVATIONS:
        layers += [BatchNorm(6), Activation(a)]
    net = jdense.Sequential([*layers, Dense(6, 3, activation=None)])
    params, state = _random_params(net, 11), _trained_state(net)
    x = np.random.default_rng(3).normal(size=(9, 4)).astype(np.float32)
    ref = np.asarray(jdense.predict(net, params, x, state=state))
    session = ort.InferenceSession(str(jdense.export(net, params, tmp_path / "m.onnx", state=state)), providers=["CPUExecutionProvider"])
    close(session.run(None, {"input": x})[0], ref)
    close(jdense.load_exported(jdense.export(net, params, tmp_path / "m.jaxexport", state=state))(x), ref)
    module = jdense.to_torch(net, params, state)
    with torch.no_grad():
        close(module(torch.from_numpy(x)).numpy(), ref)
    named = [layer for layer in net.layers if isinstance(layer, Activation) and isinstance(layer.activation, str)]
    saved = jdense.Sequential([Dense(4, 6), BatchNorm(6), *named[:2]])
    assert jdense.Sequential.from_config(saved.to_config()) == saved  # a checkpoint rebuilds Activation layers


def test_onnx_of_a_network_starting_with_flatten_takes_flat_inputs_by_default(tmp_path):
    """No input_shape=: the ONNX input is (batch, in_features of the first Dense); input_shape=(3, 4) still gives 3-D inputs."""
    net = jdense.Sequential([Flatten(), Dense(12, 3, activation=None)])
    params = _random_params(net, 12)
    x = np.random.default_rng(4).normal(size=(5, 3, 4)).astype(np.float32)
    ref = np.asarray(jdense.predict(net, params, x))
    flat = onnx.load(jdense.export(net, params, tmp_path / "flat.onnx"))
    assert [d.dim_param or d.dim_value for d in flat.graph.input[0].type.tensor_type.shape.dim] == ["batch", 12]
    close(ort.InferenceSession(flat.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x.reshape(5, 12)})[0], ref)
    image = jdense.export(net, params, tmp_path / "image.onnx", input_shape=(3, 4))
    close(ort.InferenceSession(str(image), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0], ref)
