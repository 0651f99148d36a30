"""PyTorch modules for the jdense layers PyTorch has no module for (imported by :func:`jdense.to_torch`; needs torch).

Example:
  >>> qnet, qparams = jdense.quantize(net, params, "int8")
  >>> module = jdense.to_torch(qnet, qparams)        # holds Int8Linear modules
  >>> qnet, qparams = jdense.quantize(net, params, "float8")
  >>> module = jdense.to_torch(qnet, qparams)        # holds QuantizedLinear modules (float8 weights)
  >>> net_t, params_t = jdense.temperature_scale(net, params, x_val, y_val)
  >>> module = jdense.to_torch(net_t, params_t)      # ends in a Temperature module
"""

from __future__ import annotations

import torch

__all__ = ["Int8Linear", "QuantizedLinear", "Temperature"]


class Int8Linear(torch.nn.Module):
    """:class:`jdense.QuantizedDense` in mode ``"int8"``: int8 weights, each input row quantized on the fly.

    ``x_scale = max|x| / 127`` per row (1 for a zero row), ``xq = clamp(round(x / x_scale), ±127)``,
    ``y = (xq @ weightᵀ) · x_scale · scale + bias``; the integer dot is exact (computed in float64,
    where every sum of int8 products is an integer below 2⁵³), as jdense's int32 one.

    Args:
      in_features: input width.
      out_features: output width.
      bias: whether the layer adds ``bias``.

    Attributes:
      weight: ``(out_features, in_features)`` int8 buffer.
      scale: ``(out_features,)`` float32 buffer, one scale per output.
      bias: ``(out_features,)`` float32 parameter, or None.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.bias = torch.nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        amax = x.abs().amax(dim=-1, keepdim=True)
        x_scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
        xq = torch.clamp(torch.round(x / x_scale), -127.0, 127.0)
        z = (xq.double() @ self.weight.double().T).float() * x_scale * self.scale
        return z if self.bias is None else z + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class QuantizedLinear(torch.nn.Module):
    """:class:`jdense.QuantizedDense` in a weight-only mode: 8-bit weights, dequantized in ``forward``.

    ``y = (x @ weight.to(dtype)ᵀ) · scale + bias``, jdense's order of operations: the 8-bit
    weights themselves are kept (int8 for ``"int8_weight_only"``, ``torch.float8_e4m3fn`` for
    ``"float8"``, both exact copies of jdense's), so :func:`jdense.from_torch` reads back the
    same params bit for bit.

    Args:
      in_features: input width.
      out_features: output width.
      bias: whether the layer adds ``bias``.
      mode: ``"int8_weight_only"`` or ``"float8"``.
      dtype: the dtype the layer computes in (jdense's ``dtype``), default float32.

    Attributes:
      weight: ``(out_features, in_features)`` int8 or float8_e4m3fn buffer.
      scale: ``(out_features,)`` float32 buffer, one scale per output.
      bias: ``(out_features,)`` parameter of ``dtype``, or None.
    """

    MODES = {"int8_weight_only": torch.int8, "float8": torch.float8_e4m3fn}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, mode: str = "int8_weight_only",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"QuantizedLinear mode must be one of {sorted(self.MODES)}, got {mode!r}; mode 'int8' is Int8Linear.")
        self.in_features, self.out_features, self.mode, self.dtype = in_features, out_features, mode, dtype
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=self.MODES[mode]))
        self.register_buffer("scale", torch.ones(out_features))
        self.bias = torch.nn.Parameter(torch.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.to(self.dtype) @ self.weight.to(self.dtype).T) * self.scale.to(self.dtype)
        return z if self.bias is None else z + self.bias.to(z.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, mode={self.mode!r}"


class Temperature(torch.nn.Module):
    """:class:`jdense.Temperature`: the logits divided by a temperature, ``y = x / t``.

    Args:
      t: the temperature ``T > 0`` (what :func:`jdense.temperature_scale` fitted).
      trainable: the jdense layer's ``trainable`` flag, kept for :func:`jdense.from_torch`; ``t``
        stays a buffer either way (an optimizer over ``module.parameters()`` leaves it alone).

    Attributes:
      t: a scalar float32 buffer (saved in ``state_dict``).
    """

    def __init__(self, t: float = 1.0, *, trainable: bool = False):
        super().__init__()
        self.trainable = bool(trainable)
        self.register_buffer("t", torch.tensor(float(t)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.t.to(x.dtype)

    def extra_repr(self) -> str:
        return f"t={float(self.t):.6g}, trainable={self.trainable}"
