"""LoRA: low-rank adapters on Dense layers, trained while the base weights stay frozen.

:func:`lora` swaps Dense layers for :class:`LoRADense`, which computes
``activation(x @ (w + (alpha/rank)·a @ b) + bias)`` (Hu et al. 2021; the arithmetic of
Keras's ``Dense.enable_lora``). ``a: (in, rank)`` starts He-uniform and ``b: (rank, out)``
zeros, so the adapted network starts equal to the base. :func:`merge_lora` folds the
adapters back into plain Dense params; :func:`save_adapters` and :func:`load_adapters`
store only what was trained (kilobytes) and put it back onto a base's params.

Freezing: a :class:`LoRADense` stops gradients into its base ``w``/``b`` and says so in
``trainable_mask(params)`` (True for the adapters), the protocol ``jdense.optimizer``
reads to give frozen leaves no update, optimizer state or weight decay.

Example:
  >>> net = jdense.mlp([64, 32, 10])
  >>> base = net.init(jax.random.key(0))            # or a trained checkpoint's params
  >>> lnet = jdense.lora(net, rank=4)
  >>> params = jdense.lora_init(jax.random.key(1), lnet, base)
  >>> result = jdense.fit(lnet, params, x, y, loss="cross_entropy", optimizer=jdense.optimizer(lnet),
  ...                     epochs=5, batch_size=32, key=jax.random.key(2))
  >>> net2, merged = jdense.merge_lora(lnet, result.params)   # plain Dense again
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jdense import checkpoint, checks, dense
from jdense.layers import Dense
from jdense.network import Sequential, register_layer

__all__ = ["LoRADense", "load_adapters", "lora", "lora_init", "merge_lora", "save_adapters"]

Params = dict[str, Any]
_ADAPTERS = ("lora_a", "lora_b")
_CONFIG_KEY = "jdense_lora_net"  # metadata entry of an adapter checkpoint holding the LoRA network's config
# compiled once per shape and shared by every layer (eagerly, its ops would compile one by one)
_he_uniform = jax.jit(jax.nn.initializers.he_uniform(), static_argnums=(1, 2))


@register_layer
@dataclasses.dataclass(frozen=True)
class LoRADense(Dense):
    """A :class:`jdense.Dense` with a low-rank update: ``activation(x @ (w + (alpha/rank)·a @ b) + bias)``.

    Params ``{"w", "b", "lora_a": (in, rank), "lora_b": (rank, out)}``. Made by
    :func:`lora`; takes every :class:`jdense.Dense` argument plus:

    Args:
      rank: the adapter's rank ``r``.
      alpha: the scale numerator: the update is ``(alpha/rank)·a @ b``. ``None``: ``rank``
        (scale 1, as Keras).
      train_base: also train ``w`` and ``b`` (default False: only the adapters train).

    Example:
      >>> layer = LoRADense(8, 4, rank=2)
      >>> params = layer.init(jax.random.key(0))
      >>> sorted(params), layer.trainable_mask(params)["w"]
      (['b', 'lora_a', 'lora_b', 'w'], False)
    """

    rank: int = 4
    alpha: float | None = None
    train_base: bool = False

    def __post_init__(self):
        super().__post_init__()
        checks.positive_int("rank", self.rank)
        alpha = self.rank if self.alpha is None else self.alpha
        alpha = checks.real("alpha", alpha, "a finite number > 0 (the update is scaled by alpha/rank) or None for rank")
        if not alpha > 0:
            raise ValueError(f"alpha must be a number > 0 (the update is scaled by alpha/rank) or None for rank, got {alpha!r}.")
        if not isinstance(self.train_base, bool):
            raise TypeError(f"train_base must be True or False, got {self.train_base!r}.")
        object.__setattr__(self, "rank", int(self.rank))
        object.__setattr__(self, "alpha", float(alpha))

    @property
    def scaling(self) -> float:
        """``alpha / rank``, the factor on ``a @ b``."""
        return self.alpha / self.rank

    def init(self, key: jax.Array) -> Params:
        """Random base params (as :class:`jdense.Dense`) and fresh adapters."""
        k_base, k_adapters = jax.random.split(key)
        return {**super().init(k_base), **self.init_adapters(k_adapters)}

    def init_adapters(self, key: jax.Array) -> Params:
        """``{"lora_a": he_uniform (in, rank), "lora_b": zeros (rank, out)}`` (``jax.nn.initializers``)."""
        a = _he_uniform(key, (self.in_features, self.rank), self.dtype)
        return {"lora_a": a, "lora_b": jnp.zeros((self.rank, self.out_features), self.dtype)}

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """``activation(x @ (w + (alpha/rank)·a @ b) + bias)`` through :func:`jdense.apply`."""
        _check_adapters(params, "params")
        base = {k: v for k, v in params.items() if k not in _ADAPTERS}
        if not self.train_base:
            base = jax.lax.stop_gradient(base)
        w = base["w"] + self.scaling * (params["lora_a"] @ params["lora_b"])
        return dense.apply({**base, "w": w}, x, self.activation, compute_dtype=self.compute_dtype)

    def trainable_mask(self, params: Params) -> dict[str, bool]:
        """True for the leaves that train: the adapters, and ``w``/``b`` only with ``train_base``."""
        return {k: self.train_base or k in _ADAPTERS for k in params}


def _check_adapters(params: Any, what: str) -> None:
    if not isinstance(params, Mapping) or not all(k in params for k in ("w", *_ADAPTERS)):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(
            f"{what} of a LoRADense need 'w', 'lora_a' and 'lora_b', got {got}; "
            "make them with jdense.lora_init(key, lora_net, base_params)."
        )


def _dense_fields(layer: Dense) -> dict[str, Any]:
    return {f.name: getattr(layer, f.name) for f in dataclasses.fields(Dense)}


def _check_net(net: Any, what: str = "net") -> None:
    if not isinstance(net, Sequential):
        raise TypeError(f"{what} must be a jdense.Sequential (from Sequential([...]) or mlp([...])), got {type(net).__name__}.")


def _lora_names(net: Sequential, what: str = "lora_net") -> list[str]:
    names = [name for name, layer in zip(net.names, net.layers) if isinstance(layer, LoRADense)]
    if not names:
        raise ValueError(f"{what} has no LoRADense layer; make one with jdense.lora(net, rank).")
    return names


def _targets(net: Sequential, layers: Any) -> set[int]:
    """Indices of the Dense layers named (``"dense_1"``) or indexed (``1``) in ``layers``; all if None."""
    if layers is None:
        found = {i for i, layer in enumerate(net.layers) if type(layer) is Dense}
        if not found:
            raise ValueError("net has no Dense layer to adapt; jdense.lora adds adapters to Dense layers.")
        return found
    if isinstance(layers, str | int):
        layers = [layers]
    if not isinstance(layers, Sequence) or len(layers) == 0:
        raise TypeError(f"layers must be None (every Dense) or a non-empty list of names or indices, got {layers!r}.")
    found = set()
    for t in layers:
        if isinstance(t, str):
            if t not in net.names:
                raise ValueError(f"layers names {t!r}, which is not in the network; its layers are {list(net.names)}.")
            i = net.names.index(t)
        elif isinstance(t, int) and not isinstance(t, bool):
            if not -len(net.layers) <= t < len(net.layers):
                raise ValueError(f"layers has index {t}, but the network has {len(net.layers)} layers.")
            i = t % len(net.layers)
        else:
            raise TypeError(f"layers entries must be layer names such as 'dense_0' or int indices, got {t!r}.")
        if type(net.layers[i]) is not Dense:
            kind = type(net.layers[i]).__name__
            raise ValueError(
                f"layers names {net.names[i]}, a {kind}; only plain Dense layers take adapters"
                + (" (merge_lora first to stack new adapters)." if kind == "LoRADense" else ".")
            )
        found.add(i)
    return found


def lora(
    net: Sequential,
    rank: int,
    alpha: float | None = None,
    layers: Sequence[str | int] | str | int | None = None,
    *,
    train_base: bool = False,
) -> Sequential:
    """The network with LoRA adapters on its Dense layers (all, or those in ``layers``).

    Args:
      net: the base network.
      rank: the adapters' rank (a positive int; 4 to 16 is usual).
      alpha: the update is scaled by ``alpha/rank``; ``None`` means ``rank`` (scale 1, as Keras).
      layers: ``None`` for every Dense layer, or names (``"dense_1"``) or indices into
        ``net.layers`` of the Dense layers to adapt.
      train_base: also train the base ``w``/``b`` of the adapted layers.

    Returns:
      A :class:`jdense.Sequential` with :class:`LoRADense` in place of the targets; layer
      names (and so params keys) are unchanged. Build its params with :func:`lora_init`.

    Raises:
      TypeError, ValueError: for a bad ``rank``/``alpha``, or a target that is not a Dense layer.

    Example:
      >>> lnet = jdense.lora(jdense.mlp([64, 32, 10]), rank=4, layers=["dense_1"])
      >>> [type(layer).__name__ for layer in lnet.layers]
      ['Dense', 'LoRADense']
    """
    _check_net(net)
    checks.positive_int("rank", rank)
    targets = _targets(net, layers)
    return Sequential([
        LoRADense(**_dense_fields(layer), rank=rank, alpha=alpha, train_base=train_base) if i in targets else layer
        for i, layer in enumerate(net.layers)
    ])


def lora_init(key: jax.Array, lora_net: Sequential, base_params: Mapping[str, Any]) -> Params:
    """Params for ``lora_net``: ``base_params`` as they are, plus fresh adapters.

    Args:
      key: a PRNG key for the ``lora_a`` matrices (layer ``i`` draws with ``fold_in(key, i)``).
      lora_net: from :func:`lora`.
      base_params: the base network's params (``net.init(...)``, fit's or a checkpoint's).

    Returns:
      ``{name: {"w", "b", "lora_a", "lora_b"}}`` for the adapted layers, the other layers'
      params unchanged; the adapted network's outputs equal the base's (``lora_b`` is zero).

    Raises:
      ValueError: ``base_params`` do not fit ``lora_net`` or already hold adapters.

    Example:
      >>> params = jdense.lora_init(jax.random.key(1), lnet, base)
      >>> params["dense_1"]["lora_a"].shape
      (32, 4)
    """
    _check_net(lora_net, "lora_net")
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a JAX PRNG key such as jax.random.key(0), got {type(key).__name__}.")
    if not isinstance(base_params, Mapping):
        raise TypeError(f"base_params must be the base network's params dict (net.init's), got {type(base_params).__name__}.")
    names = _lora_names(lora_net)
    params = dict(base_params)
    for name in names:
        i = lora_net.names.index(name)
        layer, k = lora_net.layers[i], jax.random.fold_in(key, i)  # a layer's adapters do not depend on the other targets
        p = base_params.get(name)
        shape = (layer.in_features, layer.out_features)
        if not isinstance(p, Mapping) or "w" not in p or tuple(jnp.shape(p["w"])) != shape:
            got = tuple(jnp.shape(p["w"])) if isinstance(p, Mapping) and "w" in p else "nothing"
            raise ValueError(
                f"base_params[{name!r}]['w'] should have shape {shape}, got {got}; "
                "pass the params of the network given to jdense.lora."
            )
        if any(a in p for a in _ADAPTERS):
            raise ValueError(f"base_params[{name!r}] already holds adapters; pass base params (merge_lora gives them).")
        params[name] = {**p, **layer.init_adapters(k)}
    return params


def merge_lora(lora_net: Sequential, params: Mapping[str, Any]) -> tuple[Sequential, Params]:
    """Fold the adapters into plain Dense layers: ``w ← w + (alpha/rank)·a @ b``.

    Args:
      lora_net: a network with :class:`LoRADense` layers.
      params: its params.

    Returns:
      ``(net, params)``: every LoRADense becomes the :class:`jdense.Dense` it was made from,
      with params ``{"w", "b"}``; outputs equal the adapted network's within float rounding.

    Example:
      >>> net2, merged = jdense.merge_lora(lnet, params)
      >>> sorted(merged["dense_1"])
      ['b', 'w']
    """
    _check_net(lora_net, "lora_net")
    _lora_names(lora_net)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be lora_net's params dict (lora_init's), got {type(params).__name__}.")
    layers, out = [], dict(params)
    for name, layer in zip(lora_net.names, lora_net.layers):
        if isinstance(layer, LoRADense):
            p = params.get(name)
            _check_adapters(p, f"params[{name!r}]")
            w = p["w"] + layer.scaling * (p["lora_a"] @ p["lora_b"])
            out[name] = {k: v for k, v in p.items() if k not in _ADAPTERS} | {"w": w.astype(p["w"].dtype)}
            layer = Dense(**_dense_fields(layer))
        layers.append(layer)
    return Sequential(layers), out


def save_adapters(
    path: str | os.PathLike,
    lora_net: Sequential,
    params: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Save only what trains (the adapters; also ``w``/``b`` with ``train_base``) and the network's config.

    The file is a :func:`jdense.save` checkpoint of those tensors; the LoRA network's config
    (rank, alpha, targets) goes in its metadata, so :func:`load_adapters` rebuilds the
    network and applies the adapters onto a base's params.

    Args:
      path: the file to write, e.g. ``"adapters.safetensors"``.
      lora_net: the network (its config must be describable: named activations, no per-layer optimizer).
      params: its params.
      metadata: optionally your JSON-ready dict, returned by :func:`load_adapters`.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Example:
      >>> jdense.save_adapters("adapters.safetensors", lnet, result.params)
      PosixPath('adapters.safetensors')
    """
    _check_net(lora_net, "lora_net")
    metadata = dict(metadata or {})
    if _CONFIG_KEY in metadata:
        raise ValueError(f"metadata key {_CONFIG_KEY!r} is reserved for the network's config; rename yours.")
    trained = {}
    for name in _lora_names(lora_net):
        layer, p = lora_net.layers[lora_net.names.index(name)], params.get(name)
        _check_adapters(p, f"params[{name!r}]")
        mask = layer.trainable_mask(p)
        trained[name] = {k: v for k, v in p.items() if mask[k]}
    return checkpoint.save(path, trained, metadata={**metadata, _CONFIG_KEY: lora_net.to_config()})


def load_adapters(path: str | os.PathLike, base_params: Mapping[str, Any] | checkpoint.Checkpoint) -> checkpoint.Checkpoint:
    """Read :func:`save_adapters`' file and apply it onto ``base_params``.

    Args:
      path: the adapter checkpoint.
      base_params: the base network's params, or a :class:`jdense.Checkpoint` of it
        (``jdense.load("base.safetensors")``).

    Returns:
      A :class:`jdense.Checkpoint` whose ``net`` is the LoRA network and whose ``params``
      are the base's with the saved tensors in place; ``metadata`` is yours.

    Raises:
      ValueError: the file is not an adapter checkpoint, or ``base_params`` do not fit its network.

    Example:
      >>> ckpt = jdense.load_adapters("adapters.safetensors", jdense.load("base.safetensors"))
      >>> logits = jdense.predict(ckpt.net, ckpt.params, x)
    """
    if isinstance(base_params, checkpoint.Checkpoint):
        base_params = base_params.params
    if not isinstance(base_params, Mapping):
        raise TypeError(f"base_params must be a params dict or a jdense.Checkpoint, got {type(base_params).__name__}.")
    saved = checkpoint.load(path)
    metadata = dict(saved.metadata)
    config = metadata.pop(_CONFIG_KEY, None)
    if config is None:
        raise ValueError(f"{path} is not an adapter checkpoint (save_adapters writes those); for a full one use jdense.load.")
    net = Sequential.from_config(config)
    params = dict(base_params)
    for name, tensors in saved.params.items():
        params[name] = {**params.get(name, {}), **tensors}
    expected, got = _shapes(jax.eval_shape(net.init, jax.random.key(0))), _shapes(params)
    wrong = [f"{k}: {got.get(k, 'missing')} (expected {expected.get(k, 'nothing')})"
             for k in sorted(expected.keys() | got.keys()) if expected.get(k) != got.get(k)]
    if wrong:
        raise ValueError(
            f"base_params do not fit the network of {path}: {'; '.join(wrong[:4])}; "
            "pass the params of the base network the adapters were trained on."
        )
    return checkpoint.Checkpoint(params=params, metadata=metadata, net=net)


def _shapes(tree: Any) -> dict[str, str]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): f"{tuple(jnp.shape(x))} {jnp.dtype(x.dtype).name}" for p, x in flat}
