"""Leave JAX: a network as an ONNX model, a ``jax.export`` artifact, or a PyTorch module.

:func:`export` writes what the file's suffix names:

* ``.onnx``: an ONNX graph (opset 17, built with ``onnx.helper``) with a dynamic batch axis.
  Dense → ``Gemm`` (``MatMul`` + ``Add`` on inputs of another rank); every named activation
  as its ONNX operator or, where ONNX has none at opset 17 (``silu``, ``gelu``), the
  composition of ``jax.nn``'s own definition (so for an :class:`jdense.Activation` layer); Flatten → ``Flatten``/``Reshape``; BatchNorm in
  inference form (``(x - mean) · rsqrt(var + eps) · scale + bias``, jdense's order); Dropout
  removed; Temperature → ``Div`` by its ``T``; LoRA layers merged first (:func:`jdense.merge_lora`). Quantized layers keep jdense's
  arithmetic: weight-only int8 weights are stored as int8 and dequantized in the graph
  (``Cast``, then the per-column scale after the matmul), float8 weights as their exact
  float32 values; mode ``"int8"`` also quantizes each input row as jdense does and multiplies
  in integers (``MatMulInteger``).
* ``.jaxexport``: the inference function serialized by ``jax.export`` (StableHLO, lowered for
  CPU, CUDA and TPU) with a symbolic batch axis; :func:`load_exported` runs it with no
  network definition.

:func:`to_torch` and :func:`from_torch` convert to and from ``torch.nn.Sequential``. torch and
onnx are optional (``pip install "jdense[torch]"``, ``"jdense[onnx]"``), imported when used.

Example:
  >>> net = jdense.mlp([4, 8, 3])
  >>> params = net.init(jax.random.key(0))
  >>> jdense.export(net, params, "model.onnx")
  PosixPath('model.onnx')
  >>> jdense.export(net, params, "model.jaxexport")
  PosixPath('model.jaxexport')
  >>> y = jdense.load_exported("model.jaxexport")(x)     # no network definition needed
  >>> module = jdense.to_torch(net, params)               # torch.nn.Sequential, eval mode
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import pathlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jdense import activations, checkpoint, checks
from jdense.layers import Activation, BatchNorm, Dense, Dropout, Flatten
from jdense.lora import LoRADense, merge_lora
from jdense.network import Sequential
from jdense.quantize import QuantizedDense
from jdense.uncertainty import Temperature

if TYPE_CHECKING:
    import torch

__all__ = ["FORMATS", "OPSET", "PLATFORMS", "export", "from_torch", "load_exported", "to_torch"]

FORMATS = (".onnx", ".jaxexport")
"""The file suffixes :func:`export` writes."""
OPSET = 17
"""The ONNX opset of exported models."""
PLATFORMS = ("cpu", "cuda", "tpu")
"""The platforms a ``.jaxexport`` file is lowered for."""

_MAGIC = b"jdense-jaxexport/1\n"  # then one line of JSON header, then jax.export's serialization
_LAYERS = "Dense, LoRADense, QuantizedDense, Flatten, Dropout, BatchNorm, Activation and Temperature"

# what each jax.nn function is: (kind, default parameter)
_KINDS: dict[Any, tuple[str, Any]] = {
    activations.linear: ("linear", None),
    jax.nn.relu: ("relu", None),
    jax.nn.sigmoid: ("sigmoid", None),
    jnp.tanh: ("tanh", None),
    jax.nn.softmax: ("softmax", None),
    jax.nn.leaky_relu: ("leaky_relu", 0.01),
    jax.nn.elu: ("elu", 1.0),
    jax.nn.gelu: ("gelu", True),  # approximate=True: the tanh form
    jax.nn.silu: ("silu", None),
}
# functools.partial(f, keyword=value) of these is understood too: f -> its keyword
_PARTIALS = {jax.nn.leaky_relu: "negative_slope", jax.nn.elu: "alpha", jax.nn.gelu: "approximate"}


# -- what a network holds --------------------------------------------------------
def _activation(layer: Dense | Activation, name: str, target: str) -> tuple[str, float | None]:
    """``(kind, parameter)`` of a Dense layer's activation; kind ``"gelu_exact"`` for gelu(approximate=False)."""
    fn = activations.get_activation(layer.activation)
    keywords = {}
    if isinstance(fn, functools.partial) and not fn.args:
        fn, keywords = fn.func, fn.keywords
    known = next((kind for f, kind in _KINDS.items() if f is fn), None)
    if known is not None and set(keywords) <= {_PARTIALS.get(fn)}:
        kind, value = known
        value = keywords.get(_PARTIALS.get(fn), value)
        if kind == "gelu":
            return ("gelu" if value else "gelu_exact"), None
        return kind, None if value is None else float(value)
    names = [n for n, f in activations.ACTIVATIONS.items() if any(f is k for k in _KINDS)]
    raise ValueError(
        f"{name} has activation {layer.activation!r}, which {target} cannot express; use a named activation "
        f"({', '.join(names)}), or export to .jaxexport, which runs any JAX function."
    )


def _inference_layers(net: Sequential, params: Any, state: Any, what: str) -> tuple[Sequential, dict, dict]:
    """``(net, params, state)`` checked, with LoRA merged and the initial state by default (as ``predict``)."""
    if not isinstance(net, Sequential):
        raise TypeError(f"{what}: net must be a jdense.Sequential, got {type(net).__name__}.")
    net.check_params(params, what)
    if state is None:
        state = net.init_state()
    if not isinstance(state, Mapping):
        raise TypeError(f"{what}: state must be the dict from net.init_state() (or fit's result.state), got {type(state).__name__}.")
    if any(isinstance(layer, LoRADense) for layer in net.layers):
        net, params = merge_lora(net, params)
    return net, dict(params), dict(state)


def _check_layers(net: Sequential, target: str, fix: str) -> None:
    """Refuse, before any work, a layer that ``target`` cannot express."""
    for name, layer in zip(net.names, net.layers):
        if type(layer) not in (Dense, LoRADense, QuantizedDense, Flatten, Dropout, BatchNorm, Activation, Temperature):
            raise ValueError(
                f"{name} is a {type(layer).__name__}, which has no {target} form; {target} takes {_LAYERS} layers. {fix}"
            )
        if isinstance(layer, Dense | Activation):
            _activation(layer, name, target)
        if isinstance(layer, Dense):
            if layer.compute_dtype is not None:
                raise ValueError(
                    f"{name} computes in {jnp.dtype(layer.compute_dtype).name} (compute_dtype), which {target} does not "
                    f"reproduce; rebuild it with compute_dtype=None (dataclasses.replace(layer, compute_dtype=None)). {fix}"
                )


def _input_shape(net: Sequential, input_shape: Sequence[int] | None, any_rank_ok: bool) -> tuple[tuple[int, ...], bool]:
    """``(shape of one example, any_rank)``: ``any_rank`` when a leading Flatten() takes inputs of any rank."""
    if input_shape is None:
        if net.input_width is not None:
            return (net.input_width,), False
        first, rest = net.layers[0], Sequential(net.layers[1:]) if len(net.layers) > 1 else None
        if isinstance(first, Flatten) and first.start_axis == 1 and rest is not None and rest.input_width:
            return (rest.input_width,), any_rank_ok  # ONNX: (batch, features), what Flatten() leaves as it is
        raise ValueError(
            f"export: the network starts with {net.names[0]}, so the shape of one example is unknown; pass "
            "input_shape=, e.g. input_shape=(8, 8) for 8×8 images (without the batch axis)."
        )
    if isinstance(input_shape, int | np.integer):
        input_shape = (input_shape,)
    if not isinstance(input_shape, Sequence) or not input_shape:
        raise TypeError(f"export: input_shape must be a tuple of positive ints such as (64,), got {input_shape!r}.")
    return tuple(checks.positive_int("input_shape entry", d) for d in input_shape), False


def _run_layer(layer, p, s, x):
    if hasattr(layer, "apply_with_state"):
        return layer.apply_with_state(p, s, x, train=False)[0]
    return layer.apply(p, x)


# -- export ----------------------------------------------------------------------
def export(
    net: Sequential,
    params: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    state: Mapping[str, Any] | None = None,
    input_dtype: Any = jnp.float32,
    input_shape: Sequence[int] | None = None,
) -> pathlib.Path:
    """Write the network for inference as an ONNX model or a ``jax.export`` artifact, by ``path``'s suffix.

    The file is written atomically (:func:`jdense.checkpoint.write_atomically`): a failed
    export leaves an existing file at ``path`` as it was.

    Args:
      net: the network.
      params: its params (``fit``'s ``result.params``).
      path: ``*.onnx`` (run it with onnxruntime or any ONNX runtime) or ``*.jaxexport``
        (run it with :func:`load_exported`).
      state: BatchNorm's running statistics (``fit``'s ``result.state``); default
        ``net.init_state()``, as :func:`jdense.predict`.
      input_dtype: the floating dtype of the inputs; an ONNX graph computes in it (the
        weights are cast to it).
      input_shape: the shape of one example, without the batch axis, e.g. ``(8, 8)``. Needed
        only when it does not follow from the first layers: a network that starts with Dense or
        BatchNorm takes ``(batch, in_features)``; in a ``.jaxexport`` file, one that starts with
        ``Flatten()`` takes inputs of any rank (:func:`load_exported`'s function flattens them),
        but an ONNX input has a fixed rank: ``.onnx`` of such a network takes ``(batch, in_features
        of the first Dense)`` unless ``input_shape`` says otherwise; pass it for N-D inputs, e.g.
        ``input_shape=(8, 8)``.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      ValueError: an unknown suffix; a layer or activation the format cannot express (ONNX
        takes Dense, LoRADense, QuantizedDense, Flatten, Dropout, BatchNorm, Activation and Temperature with the named
        activations; ``.jaxexport`` takes any layer); params that do not fit ``net``.
      ImportError: ``.onnx`` without the onnx package.

    Example:
      >>> jdense.export(net, result.params, "model.onnx", state=result.state)
      PosixPath('model.onnx')
      >>> session = onnxruntime.InferenceSession("model.onnx")
      >>> logits = session.run(None, {"input": x.astype(np.float32)})[0]
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"export: path must be a str or os.PathLike, got {type(path).__name__}.")
    path = pathlib.Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(
            f"export: cannot tell the format of {str(path)!r} from its suffix {path.suffix!r}; name the file "
            "*.onnx (an ONNX model) or *.jaxexport (jax.export's StableHLO)."
        )
    dtype = checks.floating_dtype("input_dtype", input_dtype)
    onnx_file = path.suffix == ".onnx"
    if onnx_file:
        onnx, helper, numpy_helper = _import_onnx()
        _check_layers(net, "ONNX", "Export it to .jaxexport instead, which runs any JAX layer.")
    net, params, state = _inference_layers(net, params, state, "export")
    shape, any_rank = _input_shape(net, input_shape, any_rank_ok=not onnx_file)
    if onnx_file:
        model = _onnx_model(net, params, state, shape, dtype, helper, numpy_helper)
        onnx.checker.check_model(model, full_check=True)
        data = model.SerializeToString()
    else:
        data = _jax_export(net, params, state, shape, any_rank, dtype)
    return checkpoint.write_atomically(path, lambda tmp: pathlib.Path(tmp).write_bytes(data))


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as err:
        raise ImportError(f'exporting to ONNX needs the onnx package: pip install "jdense[onnx]" ({err}).') from err
    return onnx, helper, numpy_helper


class _Graph:
    """Nodes and initializers of an ONNX graph under construction; each tensor named ``layer/what``."""

    def __init__(self, dtype: np.dtype, helper, numpy_helper):
        self.dtype, self.helper, self.numpy_helper = dtype, helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []

    def const(self, name: str, value: Any, dtype: Any = None) -> str:
        array = np.asarray(value)
        if dtype is not None or array.dtype.kind == "f" or array.dtype.name == "bfloat16":
            array = np.asarray(array.astype(dtype or self.dtype))
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, **attributes) -> str:
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [name], name=name, **attributes))
        return name


def _onnx_activation(g: _Graph, kind: str, value: float | None, x: str, name: str) -> str:
    """The activation on tensor ``x``: ONNX's operator, or ``jax.nn``'s formula op by op."""
    if kind == "linear":
        return x
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
    if kind in simple:
        return g.op(simple[kind], [x], f"{name}/{kind}")
    if kind == "softmax":
        return g.op("Softmax", [x], f"{name}/softmax", axis=-1)
    if kind == "leaky_relu":
        return g.op("LeakyRelu", [x], f"{name}/leaky_relu", alpha=value)
    if kind == "elu":
        return g.op("Elu", [x], f"{name}/elu", alpha=value)
    if kind == "silu":  # x · sigmoid(x)
        return g.op("Mul", [x, g.op("Sigmoid", [x], f"{name}/silu/sigmoid")], f"{name}/silu")
    if kind == "gelu":  # jax.nn.gelu: x · 0.5 · (1 + tanh(sqrt(2/π) · (x + 0.044715 · x³)))
        p = f"{name}/gelu"
        cube = g.op("Mul", [g.op("Mul", [x, x], f"{p}/x2"), x], f"{p}/x3")
        inner = g.op("Add", [x, g.op("Mul", [g.const(f"{p}/k", 0.044715), cube], f"{p}/kx3")], f"{p}/sum")
        t = g.op("Tanh", [g.op("Mul", [g.const(f"{p}/c", np.sqrt(2 / np.pi)), inner], f"{p}/arg")], f"{p}/tanh")
        cdf = g.op("Mul", [g.const(f"{p}/half", 0.5), g.op("Add", [g.const(f"{p}/one", 1.0), t], f"{p}/1+tanh")], f"{p}/cdf")
        return g.op("Mul", [x, cdf], p)
    if kind == "gelu_exact":  # jax.nn.gelu(approximate=False): 0.5 · x · (1 + erf(x / √2))
        p = f"{name}/gelu"
        erf = g.op("Erf", [g.op("Mul", [x, g.const(f"{p}/sqrt_half", np.sqrt(0.5))], f"{p}/arg")], f"{p}/erf")
        half_x = g.op("Mul", [g.const(f"{p}/half", 0.5), x], f"{p}/half_x")
        return g.op("Mul", [half_x, g.op("Add", [erf, g.const(f"{p}/one", 1.0)], f"{p}/1+erf")], p)
    raise AssertionError(kind)  # _activation knows no other kind


def _onnx_dense(g: _Graph, layer: Dense, p: Mapping[str, Any], x: str, rank: int, name: str) -> str:
    if type(layer) is QuantizedDense and layer.mode == "int8":  # jdense's per-row int8 activations, int32 dot
        f32 = g.helper.np_dtype_to_tensor_dtype(np.dtype(np.float32))
        if g.dtype != np.float32:
            x = g.op("Cast", [x], f"{name}/x_f32", to=f32)
        amax = g.op("ReduceMax", [g.op("Abs", [x], f"{name}/abs")], f"{name}/amax", axes=[-1], keepdims=1)
        positive = g.op("Greater", [amax, g.const(f"{name}/zero", 0.0, np.float32)], f"{name}/positive")
        x_scale = g.op("Where", [positive, g.op("Div", [amax, g.const(f"{name}/qmax", 127.0, np.float32)], f"{name}/amax/127"),
                                 g.const(f"{name}/one", 1.0, np.float32)], f"{name}/x_scale")
        xq = g.op("Round", [g.op("Div", [x, x_scale], f"{name}/x/x_scale")], f"{name}/round")
        xq = g.op("Clip", [xq, g.const(f"{name}/-qmax", -127.0, np.float32), f"{name}/qmax"], f"{name}/clip")
        xq = g.op("Cast", [xq], f"{name}/xq", to=g.helper.np_dtype_to_tensor_dtype(np.dtype(np.int8)))
        acc = g.op("MatMulInteger", [xq, g.const(f"{name}/q", p["w"])], f"{name}/acc")
        z = g.op("Cast", [acc], f"{name}/acc_f32", to=f32)
        z = g.op("Mul", [g.op("Mul", [z, x_scale], f"{name}/acc*x_scale"), g.const(f"{name}/scale", p["scale"], np.float32)],
                 f"{name}/z")
        if layer.use_bias:
            z = g.op("Add", [z, g.const(f"{name}/b", p["b"], np.float32)], f"{name}/z+b")
        if g.dtype != np.float32:
            z = g.op("Cast", [z], f"{name}/out", to=g.helper.np_dtype_to_tensor_dtype(g.dtype))
        return z
    b = g.const(f"{name}/b", p["b"]) if layer.use_bias else None
    if type(layer) is QuantizedDense:  # weight-only: (x @ dequantized q) · scale + b, as jdense
        q = np.asarray(p["w"])
        if q.dtype == np.int8:
            w = g.op("Cast", [g.const(f"{name}/q", q)], f"{name}/w", to=g.helper.np_dtype_to_tensor_dtype(g.dtype))
        else:  # float8_e4m3fn: every value is exact in float32 (opset 17 has no float8 type)
            w = g.const(f"{name}/w", q.astype(np.float32))
        z = g.op("Mul", [g.op("MatMul", [x, w], f"{name}/matmul"), g.const(f"{name}/scale", p["scale"])], f"{name}/z")
        return z if b is None else g.op("Add", [z, b], f"{name}/z+b")
    w = g.const(f"{name}/w", p["w"])
    if rank == 2:
        return g.op("Gemm", [x, w] + ([b] if b else []), f"{name}/gemm")
    z = g.op("MatMul", [x, w], f"{name}/matmul")
    return z if b is None else g.op("Add", [z, b], f"{name}/z+b")


def _onnx_model(net, params, state, shape, dtype, helper, numpy_helper):
    g = _Graph(np.dtype(dtype), helper, numpy_helper)
    x, spec = "input", jax.ShapeDtypeStruct((2, *shape), dtype)
    for name, layer in zip(net.names, net.layers):
        p, s = params.get(name, {}), state.get(name, {})
        out = jax.eval_shape(functools.partial(_run_layer, layer, p, s), spec)  # checks the shapes, computes nothing
        rank = len(spec.shape)
        if isinstance(layer, Dense):
            z = _onnx_dense(g, layer, p, x, rank, name)
            x = _onnx_activation(g, *_activation(layer, name, "ONNX"), z, name)
        elif isinstance(layer, Activation):
            x = _onnx_activation(g, *_activation(layer, name, "ONNX"), x, name)
        elif isinstance(layer, Flatten):
            start = layer.start_axis % rank
            if start == 0:
                raise ValueError(f"{name} flattens the batch axis (start_axis={layer.start_axis}); an exported model keeps it.")
            if start == 1:
                x = g.op("Flatten", [x], f"{name}/flatten", axis=1)
            else:
                target = g.const(f"{name}/shape", np.array([0] * start + [-1], np.int64), np.int64)
                x = g.op("Reshape", [x, target], f"{name}/reshape")
        elif isinstance(layer, BatchNorm):  # inference form, in jdense's order of operations
            inv = jax.lax.rsqrt(jnp.asarray(s["var"]).astype(jax.dtypes.canonicalize_dtype(dtype)) + layer.epsilon)
            centred = g.op("Sub", [x, g.const(f"{name}/mean", s["mean"])], f"{name}/centred")
            normed = g.op("Mul", [centred, g.const(f"{name}/rsqrt_var", inv)], f"{name}/normed")
            scaled = g.op("Mul", [normed, g.const(f"{name}/scale", p["scale"])], f"{name}/scaled")
            x = g.op("Add", [scaled, g.const(f"{name}/bias", p["bias"])], f"{name}/out")
        elif isinstance(layer, Temperature):  # logits / T, T a scalar initializer in the graph's dtype
            x = g.op("Div", [x, g.const(f"{name}/t", p["t"])], f"{name}/div")
        # Dropout: the identity in inference
        spec = jax.ShapeDtypeStruct(out.shape, dtype)
    if x == "input":
        x = g.op("Identity", [x], "identity")
    g.nodes[-1].output[0] = "output"
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        g.nodes, "jdense", [helper.make_tensor_value_info("input", elem, ["batch", *shape])],
        [helper.make_tensor_value_info("output", elem, ["batch", *spec.shape[1:]])], g.initializers,
    )
    import jdense

    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="jdense",
                             producer_version=jdense.__version__, doc_string=f"jdense network: {', '.join(net.names)}")


# -- jax.export ------------------------------------------------------------------
def _jax_export(net: Sequential, params, state, shape, any_rank, dtype) -> bytes:
    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, *shape), dtype)
    infer = jax.jit(lambda x: net.apply_with_state(params, state, x, train=False)[0])
    exported = jax.export.export(infer, platforms=PLATFORMS)(spec)
    payload = bytes(exported.serialize())
    out = exported.out_avals[0]
    header = {"input_shape": list(shape), "input_dtype": np.dtype(dtype).name, "output_shape": [str(d) for d in out.shape[1:]],
              "output_dtype": np.dtype(out.dtype).name, "layers": list(net.names), "platforms": list(exported.platforms),
              "any_rank": any_rank, "size": len(payload), "crc32": zlib.crc32(payload)}
    return _MAGIC + json.dumps(header).encode() + b"\n" + payload


def load_exported(path: str | os.PathLike) -> Callable[[jax.typing.ArrayLike], jax.Array]:
    """Load a ``.jaxexport`` file written by :func:`export` as a function ``f(x) -> y``.

    The function runs the stored StableHLO (``jax.export.deserialize(...).call``, compiled
    once per batch size); it needs neither the network's definition nor its params. Its
    attributes ``input_shape``, ``input_dtype`` and ``exported`` (the ``jax.export.Exported``)
    describe it.

    Args:
      path: the file.

    Returns:
      ``f(x)`` for ``x`` of shape ``(batch, *input_shape)``; floating inputs are cast to the
      exported dtype.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: the file is not a ``.jaxexport`` file of jdense (another kind of file) or is
        corrupted (it fails its checksum or does not deserialize); the message names it.

    Example:
      >>> f = jdense.load_exported("model.jaxexport")
      >>> y = f(x)
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"load_exported: path must be a str or os.PathLike, got {type(path).__name__}.")
    path = pathlib.Path(path)
    if not path.is_file():
        if path.exists():
            raise ValueError(f"load_exported: {path} is a directory, not a .jaxexport file.")
        raise FileNotFoundError(f"load_exported: no file at {path}.")
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        hint = " (an ONNX model: run it with onnxruntime.InferenceSession)" if path.suffix == ".onnx" else ""
        raise ValueError(
            f"load_exported: {path} is not a jdense .jaxexport file{hint}: it does not start with {_MAGIC[:-1].decode()!r}. "
            "Make one with jdense.export(net, params, 'model.jaxexport')."
        )
    line, _, payload = data[len(_MAGIC):].partition(b"\n")
    try:
        header = json.loads(line)
        in_shape, in_dtype = tuple(int(d) for d in header["input_shape"]), np.dtype(header["input_dtype"])
        size, crc, any_rank = int(header["size"]), int(header["crc32"]), bool(header.get("any_rank"))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"load_exported: {path} is corrupted: its header does not read ({err}).") from None
    if len(payload) != size or zlib.crc32(payload) != crc:
        raise ValueError(f"load_exported: {path} is corrupted: its payload fails its size or checksum (truncated or altered).")
    try:
        exported = jax.export.deserialize(bytearray(payload))
    except Exception as err:  # noqa: BLE001 - any failure of a file that passed its checksum: name the file
        raise ValueError(f"load_exported: {path} does not deserialize with this jax ({type(err).__name__}: {err}).") from None
    call = jax.jit(exported.call)

    def f(x: jax.typing.ArrayLike) -> jax.Array:
        x = jnp.asarray(x)
        if any_rank and x.ndim > 2:  # the network starts with Flatten(): flat inputs are the same inputs
            x = x.reshape(x.shape[0], -1)
        if x.ndim != len(in_shape) + 1 or tuple(x.shape[1:]) != in_shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but {path.name} takes (batch, {', '.join(map(str, in_shape))}); reshape x."
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"x has dtype {x.dtype}; {path.name} takes floating inputs ({in_dtype.name}).")
        return call(x.astype(in_dtype))

    f.input_shape, f.input_dtype, f.exported = in_shape, in_dtype, exported
    f.__doc__ = f"The network exported to {path} (layers {', '.join(header.get('layers', []))})."
    return f


# -- PyTorch ---------------------------------------------------------------------
def _import_torch():
    try:
        import torch
    except ImportError as err:
        raise ImportError(f'converting to and from PyTorch needs torch: pip install "jdense[torch]" ({err}).') from err
    return torch


def _tensor(torch, value: Any) -> torch.Tensor:
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    if array.dtype.name == "float8_e4m3fn":  # numpy has no float8: move the bits
        return torch.from_numpy(np.array(array.view(np.uint8))).view(torch.float8_e4m3fn)
    return torch.from_numpy(np.array(array))  # a writable copy


def _torch_activation(torch, kind: str, value: float | None):
    nn = torch.nn
    return {
        "linear": lambda: None, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "silu": nn.SiLU,
        "softmax": lambda: nn.Softmax(dim=-1), "leaky_relu": lambda: nn.LeakyReLU(value), "elu": lambda: nn.ELU(value),
        "gelu": lambda: nn.GELU(approximate="tanh"), "gelu_exact": nn.GELU,
    }[kind]()


def to_torch(net: Sequential, params: Mapping[str, Any], state: Mapping[str, Any] | None = None) -> torch.nn.Sequential:
    """The network as a ``torch.nn.Sequential`` in eval mode, computing what :func:`jdense.predict` computes.

    Dense → ``nn.Linear`` (weight ``w.T``) and the activation's module (``nn.GELU(approximate="tanh")``
    for jax's default gelu); BatchNorm → ``nn.BatchNorm1d`` with the running statistics of
    ``state`` (the same ``eps``, ``momentum = 1 - m``); Flatten → ``nn.Flatten``; Dropout →
    ``nn.Dropout``; Activation → the activation's module (``nn.Identity`` for ``"linear"``);
    Temperature → :class:`jdense.torch_layers.Temperature` (``x / t``, ``t`` a
    buffer). LoRA layers are merged; weight-only int8 and float8 layers become
    :class:`jdense.torch_layers.QuantizedLinear` (the 8-bit weights as int8 or
    ``torch.float8_e4m3fn`` buffers, bit for bit, and the scale; dequantized in ``forward``),
    ``"int8"`` layers (which also quantize their inputs) :class:`jdense.torch_layers.Int8Linear`,
    so :func:`from_torch` gives back the same params. The modules are named after the layers
    (``dense_0``, ``dense_0_relu``, ...). ``module.train()`` switches Dropout and BatchNorm
    to training.

    Args:
      net: the network.
      params: its params.
      state: BatchNorm's state; default ``net.init_state()``.

    Returns:
      A ``torch.nn.Sequential`` in eval mode, with parameters of the params' dtypes.

    Raises:
      ValueError: a layer PyTorch has no module for (a user layer, a callable activation
        other than jax.nn's, a layer with ``compute_dtype``, a BatchNorm on inputs of more than
        two axes), naming it.
      ImportError: torch is not installed.

    Example:
      >>> module = jdense.to_torch(net, params)
      >>> y = module(torch.from_numpy(x))   # equals jdense.predict(net, params, x)
    """
    torch = _import_torch()
    if not isinstance(net, Sequential):
        raise TypeError(f"to_torch: net must be a jdense.Sequential, got {type(net).__name__}.")
    _check_layers(net, "PyTorch", "Export it with jdense.export(net, params, 'model.jaxexport') instead.")
    from jdense.torch_layers import Int8Linear, QuantizedLinear
    from jdense.torch_layers import Temperature as TorchTemperature

    rank = None  # of the inputs, where a Flatten tells it
    for name, layer in zip(net.names, net.layers):
        if isinstance(layer, Flatten) and layer.start_axis > 0:
            rank = layer.start_axis + 1
        if isinstance(layer, BatchNorm) and rank is not None and rank > 2:
            raise ValueError(
                f"{name} normalizes the last axis of {rank}-D inputs, but nn.BatchNorm1d normalizes axis 1; PyTorch has no "
                "module for that. Export it with jdense.export(net, params, 'model.onnx') instead."
            )
    net, params, state = _inference_layers(net, params, state, "to_torch")
    modules: dict[str, Any] = {}
    with torch.no_grad():
        for name, layer in zip(net.names, net.layers):
            p = params.get(name, {})
            if isinstance(layer, Dense):
                w = p["w"]
                if type(layer) is QuantizedDense:
                    if layer.mode == "int8":
                        linear = Int8Linear(layer.in_features, layer.out_features, bias=layer.use_bias)
                    else:  # weight-only: the 8-bit weights, dequantized in forward
                        linear = QuantizedLinear(layer.in_features, layer.out_features, bias=layer.use_bias, mode=layer.mode,
                                                 dtype=getattr(torch, jnp.dtype(layer.dtype).name))
                    linear.scale.copy_(_tensor(torch, p["scale"]))
                else:
                    linear = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.use_bias,
                                             dtype=getattr(torch, jnp.dtype(w.dtype).name))
                linear.weight.copy_(_tensor(torch, w).T)
                if layer.use_bias:
                    linear.bias.copy_(_tensor(torch, p["b"]))
                modules[name] = linear
                kind, value = _activation(layer, name, "PyTorch")
                if kind != "linear":
                    modules[f"{name}_{kind}"] = _torch_activation(torch, kind, value)
            elif isinstance(layer, Activation):
                kind, value = _activation(layer, name, "PyTorch")
                modules[name] = _torch_activation(torch, kind, value) or torch.nn.Identity()
            elif isinstance(layer, BatchNorm):
                scale = _tensor(torch, p["scale"])
                bn = torch.nn.BatchNorm1d(layer.features, eps=layer.epsilon, momentum=round(1.0 - layer.momentum, 12), dtype=scale.dtype)
                bn.weight.copy_(scale)
                bn.bias.copy_(_tensor(torch, p["bias"]))
                bn.running_mean.copy_(_tensor(torch, state[name]["mean"]))
                bn.running_var.copy_(_tensor(torch, state[name]["var"]))
                modules[name] = bn
            elif isinstance(layer, Flatten):
                if layer.start_axis == 0:
                    raise ValueError(f"{name} flattens the batch axis (start_axis=0); nn.Flatten keeps it.")
                modules[name] = torch.nn.Flatten(start_dim=layer.start_axis)
            elif isinstance(layer, Temperature):
                temperature = TorchTemperature(trainable=layer.trainable)
                temperature.t = _tensor(torch, p["t"])
                modules[name] = temperature
            else:
                modules[name] = torch.nn.Dropout(layer.rate)
    return torch.nn.Sequential(collections.OrderedDict(modules)).eval()


def _from_torch_activation(torch, module) -> Any:
    """The jdense activation of an activation module, None if ``module`` is none."""
    nn = torch.nn
    simple = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu"}
    if type(module) in simple:
        return simple[type(module)]
    if type(module) is nn.Softmax and module.dim in (-1, 1):  # dim=1 is the last axis of (batch, features)
        return "softmax"
    if type(module) is nn.LeakyReLU:
        slope = float(module.negative_slope)
        return "leaky_relu" if slope == 0.01 else functools.partial(jax.nn.leaky_relu, negative_slope=slope)
    if type(module) is nn.ELU:
        return "elu" if float(module.alpha) == 1.0 else functools.partial(jax.nn.elu, alpha=float(module.alpha))
    if type(module) is nn.GELU:
        return "gelu" if module.approximate == "tanh" else functools.partial(jax.nn.gelu, approximate=False)
    return None


def _array(tensor) -> jax.Array:
    tensor = tensor.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
        return jnp.asarray(tensor.float().numpy()).astype(jnp.bfloat16)
    if str(tensor.dtype) == "torch.float8_e4m3fn":  # the bits, unchanged
        return jnp.asarray(tensor.view(_import_torch().uint8).numpy().view(jnp.float8_e4m3fn))
    return jnp.asarray(tensor.numpy())


def from_torch(module: torch.nn.Sequential) -> tuple[Sequential, dict, dict]:
    """A jdense network, params and state from a ``torch.nn.Sequential``; it computes ``module.eval()``'s outputs.

    Takes ``nn.Linear`` (and :class:`jdense.torch_layers.Int8Linear` and ``QuantizedLinear``, which
    become :class:`jdense.QuantizedDense`), the activation modules ``ReLU``, ``Sigmoid``, ``Tanh``,
    ``Softmax(dim=-1)``, ``LeakyReLU``, ``ELU``, ``GELU``, ``SiLU`` (right after a Linear: the
    Dense layer's activation; elsewhere, e.g. after ``BatchNorm1d`` or ``Dropout``: an
    :class:`jdense.Activation` layer), ``nn.BatchNorm1d`` (with running statistics), ``nn.Flatten``
    (``end_dim=-1``), ``nn.Dropout``, :class:`jdense.torch_layers.Temperature`, ``nn.Identity``
    (skipped) and nested ``nn.Sequential``. An exact
    ``GELU()``, a ``LeakyReLU`` slope other than 0.01 or an ``ELU`` alpha other than 1 become
    ``functools.partial`` of the ``jax.nn`` function (such a network has no config for
    :func:`jdense.save`'s ``net=``). ``Softmax(dim=1)`` is read as the last axis, which it is
    for ``(batch, features)`` inputs.

    Args:
      module: a ``torch.nn.Sequential``.

    Returns:
      ``(net, params, state)``: ``state`` holds BatchNorm's running statistics (``{}`` without
      BatchNorm). ``jdense.predict(net, params, x, state=state)`` equals ``module.eval()(x)``.

    Raises:
      TypeError: ``module`` is not an ``nn.Sequential``.
      ValueError: a module jdense has no layer for; the message names it and its position.
      ImportError: torch is not installed.

    Example:
      >>> net, params, state = jdense.from_torch(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU()))
    """
    torch = _import_torch()
    from jdense.torch_layers import Int8Linear, QuantizedLinear
    from jdense.torch_layers import Temperature as TorchTemperature

    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"from_torch takes a torch.nn.Sequential, got {type(module).__name__}; wrap your modules in one.")

    def walk(seq, prefix):
        for key, child in seq.named_children():
            if type(child) is nn.Sequential:
                yield from walk(child, f"{prefix}{key}.")
            elif type(child) is not nn.Identity:
                yield f"{prefix}{key}", child

    children = list(walk(module, ""))
    if not children:
        raise ValueError("from_torch: the nn.Sequential holds no module.")
    layers, params, state = [], [], []
    open_linear = False  # the last layer is a Linear without its activation yet
    for key, child in children:
        where = f"module {key!r} ({child!r})"
        activation = _from_torch_activation(torch, child)
        if activation is not None:
            if open_linear:  # the Linear's own activation
                layers[-1], open_linear = dataclasses.replace(layers[-1], activation=activation), False
            else:  # after BatchNorm1d, Dropout, another activation, ...: a layer of its own
                layers.append(Activation(activation))
                params.append({})
                state.append(None)
            continue
        open_linear = type(child) in (nn.Linear, Int8Linear, QuantizedLinear)
        if type(child) is QuantizedLinear:
            p = {"w": _array(child.weight).T, "scale": _array(child.scale)} | ({} if child.bias is None else {"b": _array(child.bias)})
            dtype = _array(torch.zeros((), dtype=child.dtype)).dtype
            layers.append(QuantizedDense(child.in_features, child.out_features, activation=None, use_bias=child.bias is not None,
                                         mode=child.mode, dtype=dtype))
            params.append(p)
            state.append(None)
        elif type(child) is Int8Linear:
            p = {"w": _array(child.weight).T, "scale": _array(child.scale)} | ({} if child.bias is None else {"b": _array(child.bias)})
            layers.append(QuantizedDense(child.in_features, child.out_features, activation=None, use_bias=child.bias is not None,
                                         mode="int8"))
            params.append(p)
            state.append(None)
        elif type(child) is nn.Linear:
            w = _array(child.weight).T
            p = {"w": w} if child.bias is None else {"w": w, "b": _array(child.bias)}
            layers.append(Dense(child.in_features, child.out_features, activation=None, use_bias=child.bias is not None,
                                dtype=w.dtype))
            params.append(p)
            state.append(None)
        elif type(child) is nn.BatchNorm1d:
            if child.running_mean is None:
                raise ValueError(f"from_torch: {where} keeps no running statistics (track_running_stats=False); jdense's "
                                 "BatchNorm normalizes with them in inference.")
            features = child.num_features
            scale = _array(child.weight) if child.affine else jnp.ones(features, _array(child.running_mean).dtype)
            bias = _array(child.bias) if child.affine else jnp.zeros(features, scale.dtype)
            momentum = 0.9 if child.momentum is None else 1.0 - float(child.momentum)
            layers.append(BatchNorm(features, momentum=momentum, epsilon=float(child.eps), dtype=scale.dtype))
            params.append({"scale": scale, "bias": bias})
            mean, var = (_array(t).astype(jnp.float32) for t in (child.running_mean, child.running_var))
            state.append({"mean": mean, "var": var})
        elif type(child) is nn.Flatten:
            if child.end_dim != -1 or child.start_dim < 1:
                raise ValueError(f"from_torch: {where} flattens axes {child.start_dim}..{child.end_dim}; jdense's Flatten "
                                 "merges every axis from start_axis >= 1 to the last (end_dim=-1).")
            layers.append(Flatten(child.start_dim))
            params.append({})
            state.append(None)
        elif type(child) is nn.Dropout:
            layers.append(Dropout(float(child.p)))
            params.append({})
            state.append(None)
        elif type(child) is TorchTemperature:
            layers.append(Temperature(trainable=child.trainable))
            params.append({"t": _array(child.t)})
            state.append(None)
        else:
            raise ValueError(
                f"from_torch: {where} has no jdense layer; from_torch takes Linear, BatchNorm1d, Flatten, Dropout, Identity, "
                "jdense.torch_layers.Int8Linear, QuantizedLinear and Temperature and the activations ReLU, Sigmoid, Tanh, Softmax, "
                "LeakyReLU, ELU, GELU and SiLU."
            )
    net = Sequential(layers)
    out_params = {name: p for name, p in zip(net.names, params) if p}
    out_state = {name: s for name, s in zip(net.names, state) if s is not None}
    net.check_params(out_params, "from_torch")
    return net, out_params, out_state

