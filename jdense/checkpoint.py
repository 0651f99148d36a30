"""Checkpoints: params, optimizer state and BatchNorm state in one safetensors file.

A checkpoint is a `safetensors <https://github.com/huggingface/safetensors>`_ file:
raw tensors plus a JSON header. Loading one never runs code (no pickle), so a
checkpoint from anywhere is safe to open.

What a file holds:

* every array of ``params``, ``opt_state`` and ``state`` under its key path,
  e.g. ``params/dense_0/w``, ``opt_state/0/mu/dense_0/w``, ``state/batch_norm_0/mean``
  (dict keys, sequence indices and NamedTuple field names, joined by ``/``);
* a JSON header (safetensors metadata key ``"jdense"``) with the format version
  (``"jdense-checkpoint/2"``), your ``metadata`` dict, ``net.to_config()`` when a
  network was given (so :func:`load` rebuilds it without your script), the list of
  the optimizer state's leaves and its tree structure, and a CRC-32 of every tensor
  (over its dtype, shape and bytes); float8 tensors (``jdense.quantize(..., "float8")``),
  which safetensors cannot read back into NumPy, are stored as their uint8 bytes and named
  with their dtype under ``views``;
* a CRC-32 of that header (safetensors metadata key ``"jdense_crc32"``).

Loading verifies both checksums and that the stored network config fits the stored
params, so a corrupted file is refused with a ``ValueError`` naming it instead of
giving a wrong model. Files of format ``"jdense-checkpoint/1"`` (no header checksum)
still load.

Saving is atomic: the file is written to a temporary file ``.<name>.<pid>.<random>.tmp``
in the same directory, flushed to disk and renamed over ``path``; a save that fails or
is killed leaves the previous checkpoint untouched. The temporary file of a killed
save is removed by the next :func:`save` or :func:`load` of that checkpoint (once its
writer process is gone).

Example:
  >>> net = jdense.mlp([4, 8, 3], batch_norm=True)
  >>> params, state = net.init(jax.random.key(0)), net.init_state()
  >>> tx = jdense.optimizer(net, "adam", 1e-3)
  >>> opt_state = tx.init(params)
  >>> save("model.safetensors", params, opt_state, {"epoch": 3}, net=net, state=state)
  PosixPath('model.safetensors')
  >>> ckpt = load("model.safetensors")  # params, state, metadata and net; no opt_state
  >>> ckpt.net == net, ckpt.metadata
  (True, {'epoch': 3})
  >>> ckpt = load("model.safetensors", like=dict(params=params, opt_state=opt_state, state=state))
  >>> # ckpt.opt_state has exactly opt_state's structure; resume training with it.

Loading jdense weights into PyTorch: jdense stores a Dense layer's ``w`` as
``(in, out)`` (``y = x @ w + b``), PyTorch's ``nn.Linear.weight`` is ``(out, in)``, so
transpose (and copy: ``np.asarray`` of a JAX array is read-only, which PyTorch warns
about)::

    import numpy as np, torch
    params = load("model.safetensors").params
    linear = torch.nn.Linear(4, 8)
    linear.weight.data = torch.from_numpy(np.asarray(params["dense_0"]["w"]).T.copy())
    linear.bias.data = torch.from_numpy(np.array(params["dense_0"]["b"]))  # np.array copies

A BatchNorm maps onto ``nn.BatchNorm1d`` the same way without transposing: ``scale`` to
``weight``, ``bias`` to ``bias``, and ``state["batch_norm_0"]["mean"]``/``["var"]`` to
``running_mean``/``running_var``; give it the same ``eps``, and for further training
PyTorch's ``momentum=1 - m`` for jdense's ``momentum=m``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import stat
import tempfile
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy

from jdense import checks, version
from jdense.network import Sequential, mismatch

__all__ = ["FORMAT", "Checkpoint", "checkpoint_callback", "load", "read_info", "save", "write_atomically"]

FORMAT = "jdense-checkpoint/2"
"""The format version written in every checkpoint's header."""

_LEGACY = "jdense-checkpoint/1"  # no header checksum; tensor checksums over the bytes only
_HEADER_KEY = "jdense"
_HEADER_CRC_KEY = "jdense_crc32"
_PARTS = ("params", "opt_state", "state")
# dtypes safetensors stores and reads back with numpy
_DTYPES = frozenset(
    "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 bfloat16 float32 float64 complex64".split()
)
# dtypes safetensors stores but cannot read back into numpy: written as uint8 views, named in the header
_VIEWED = frozenset({"float8_e4m3fn", "float8_e5m2"})


@dataclasses.dataclass(frozen=True, eq=False)
class Checkpoint:
    """What :func:`load` returns.

    Attributes:
      params: the trainable params, nested dicts of arrays (``params["dense_0"]["w"]``).
      opt_state: the optimizer state in the structure of ``like["opt_state"]``; ``None``
        when no ``like`` for it was given or the file has none.
      state: the non-trainable state (BatchNorm running statistics), nested dicts;
        ``None`` when the checkpoint was saved without one.
      metadata: the ``metadata`` dict given to :func:`save` (``{}`` if none).
      net: the network rebuilt from its stored config, or ``None`` when the checkpoint
        was saved without ``net`` or the network had no config (a custom activation or
        layer; :func:`read_info` tells why).
    """

    params: dict
    opt_state: Any = None
    state: dict | None = None
    metadata: dict = dataclasses.field(default_factory=dict)
    net: Sequential | None = None

    def __repr__(self) -> str:
        def describe(tree):
            if tree is None:
                return "None"
            leaves = jax.tree.leaves(tree)
            return f"<{len(leaves)} arrays, {sum(int(np.size(x)) for x in leaves):,} values>"

        net = "None" if self.net is None else f"<Sequential {', '.join(self.net.names)}>"
        return (
            f"Checkpoint(params={describe(self.params)}, opt_state={describe(self.opt_state)}, "
            f"state={describe(self.state)}, metadata={self.metadata!r}, net={net})"
        )


# -- names ---------------------------------------------------------------------
def _entry_name(entry: Any) -> str:
    """A stable string for one key path entry: dict key, sequence index or attribute name."""
    if isinstance(entry, jax.tree_util.DictKey):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return entry.name
    if isinstance(entry, jax.tree_util.FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def _flatten(part: str, tree: Any, *, dicts_only: bool) -> tuple[list[str], list[Any], Any]:
    """``(names, leaves, treedef)`` of ``tree``, each name ``part/a/b``."""
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names, leaves = [], []
    for path, leaf in path_leaves:
        parts = [part]
        for entry in path:
            if dicts_only and not (isinstance(entry, jax.tree_util.DictKey) and isinstance(entry.key, str)):
                where = "/".join(parts)
                raise TypeError(
                    f"{part} must be nested dicts with string keys (like net.init's), but {where} holds a "
                    f"{type(entry).__name__} entry {entry}; use dicts."
                )
            name = _entry_name(entry)
            if not name or "/" in name:
                raise ValueError(f"{'/'.join(parts)} has a key {name!r}; keys in a checkpoint must be non-empty and hold no '/'.")
            parts.append(name)
        names.append("/".join(parts))
        leaves.append(leaf)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"two entries of {part} have the same name {name!r} (e.g. keys 1 and '1'); rename one.")
        seen.add(name)
    return names, leaves, treedef


def _to_numpy(name: str, leaf: Any, *, scalars: bool) -> np.ndarray:
    """``leaf`` as a C-contiguous NumPy array that safetensors can store, or a clear error."""
    if isinstance(leaf, jax.Array):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            raise TypeError(f"{name} is a PRNG key array; store jax.random.key_data(key) instead.")
        arr = np.asarray(leaf)
    elif isinstance(leaf, np.ndarray | np.generic):
        arr = np.asarray(leaf)
    elif scalars and isinstance(leaf, bool | int | float):
        arr = np.asarray(leaf)
    else:
        raise TypeError(
            f"{name} is a {type(leaf).__name__}, not an array; params, opt_state and state must be pytrees of "
            "JAX or NumPy arrays."
        )
    if arr.dtype.name not in _DTYPES | _VIEWED:
        supported = ", ".join(sorted(_DTYPES | _VIEWED))
        raise TypeError(f"{name} has dtype {arr.dtype}, which a checkpoint cannot store; supported: {supported}.")
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _crc(arr: np.ndarray, layout: bool = True) -> int:
    """CRC-32 of the tensor's bytes, preceded (``layout``) by its dtype and shape."""
    start = zlib.crc32(f"{arr.dtype.name}{tuple(arr.shape)}".encode()) if layout else 0
    return zlib.crc32(arr.reshape(-1).view(np.uint8), start)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic | jax.Array):
        value = np.asarray(obj).tolist()
        if isinstance(value, bool | int | float | list):
            return value
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _check_target(path: str | os.PathLike) -> pathlib.Path:
    return checks.output_file(path)


def _file_mode(path: pathlib.Path) -> int:
    """The mode the checkpoint gets: the old file's, else 0o666 minus the umask."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(path).st_mode)
    umask = 0o022
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    return 0o666 & ~umask


def _temp_prefix(path: pathlib.Path) -> str:
    return f".{path.name}."


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return True  # ours (another thread may be writing it), or no cheap way to tell
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. another user's process
    return True


def _remove_stale_temps(path: pathlib.Path) -> None:
    """Delete ``.<name>.<pid>.<random>.tmp`` files of ``path`` whose writer process is gone (killed saves)."""
    prefix = _temp_prefix(path)
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid, dot, rest = name[len(prefix) : -len(".tmp")].partition(".")
            if dot and pid.isdigit() and rest and "." not in rest and not _writer_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _fsync_dir(directory: pathlib.Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- save ----------------------------------------------------------------------
def save(
    path: str | os.PathLike,
    params: Mapping[str, Any],
    opt_state: Any = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    net: Sequential | None = None,
    state: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Write a checkpoint atomically: the old file at ``path`` stays until the new one is complete.

    Args:
      path: the file to write (conventionally ``*.safetensors``); its directory must exist.
      params: the trainable params, nested dicts of JAX/NumPy arrays (``net.init``'s output).
      opt_state: optionally the optimizer state (any pytree of arrays, e.g. ``tx.init(params)``).
      metadata: optionally a JSON-serialisable dict with string keys (epoch, metrics, ...);
        NumPy/JAX numbers and arrays in it are stored as Python numbers and lists.
      net: optionally the network, whose ``to_config()`` is stored so that :func:`load`
        rebuilds it. A network without config (custom activation or layer) is fine:
        no config is stored and the reason is recorded (see :func:`read_info`).
      state: optionally the network's non-trainable state (``net.init_state()`` or fit's
        ``result.state``), nested dicts like ``params``.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      ValueError: ``path`` is a directory or its directory does not exist; ``params``
        do not fit ``net`` (the error names the first mismatching leaf); a key is
        empty or holds ``/``.
      TypeError: a leaf is not an array (or has a dtype safetensors cannot store),
        ``params``/``state`` are not nested dicts, or a metadata value is not
        JSON-serialisable (the error names the key).

    Example:
      >>> save("ckpt/model.safetensors", params, opt_state, {"epoch": 10}, net=net, state=state)
      PosixPath('ckpt/model.safetensors')
    """
    path = _check_target(path)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of layer params (from net.init), got {type(params).__name__}.")
    if state is not None and not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict (from net.init_state()), got {type(state).__name__}.")
    if net is not None and not isinstance(net, Sequential):
        raise TypeError(f"net must be a jdense.Sequential, got {type(net).__name__}.")

    # user metadata: every key a str, every value JSON
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}.")
    user: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be strings; got {key!r} of type {type(key).__name__}.")
        try:
            user[key] = json.loads(json.dumps(value, default=_json_default))
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"metadata[{key!r}] is not JSON-serialisable ({err}); store numbers, strings, lists or dicts."
            ) from None

    tensors: dict[str, np.ndarray] = {}
    header: dict[str, Any] = {"format": FORMAT, "metadata": user}
    names, leaves, _ = _flatten("params", params, dicts_only=True)
    tensors.update({n: _to_numpy(n, x, scalars=False) for n, x in zip(names, leaves)})
    if opt_state is not None:
        names, leaves, treedef = _flatten("opt_state", opt_state, dicts_only=False)
        tensors.update({n: _to_numpy(n, x, scalars=True) for n, x in zip(names, leaves)})
        header["opt_state"] = {"leaves": names, "treedef": str(treedef)}
    else:
        header["opt_state"] = None
    if state is not None:
        names, leaves, _ = _flatten("state", state, dicts_only=True)
        tensors.update({n: _to_numpy(n, x, scalars=False) for n, x in zip(names, leaves)})
    header["has_state"] = state is not None

    if net is not None:
        try:
            header["net_config"] = net.to_config()
        except TypeError as err:
            header["net_config"] = None
            header["net_config_error"] = str(err)
        else:
            net.check_params(params, "save")
    else:
        header["net_config"] = None
    views = {name: arr.dtype.name for name, arr in tensors.items() if arr.dtype.name in _VIEWED}
    tensors.update({name: tensors[name].view(np.uint8) for name in views})
    if views:
        header["views"] = views
    header["crc32"] = {name: _crc(arr) for name, arr in tensors.items()}
    header["jdense_version"] = version.VERSION
    blob = json.dumps(header, default=_json_default)

    metadata = {_HEADER_KEY: blob, _HEADER_CRC_KEY: str(zlib.crc32(blob.encode()))}
    return write_atomically(path, lambda tmp: safetensors.numpy.save_file(tensors, tmp, metadata=metadata))


def write_atomically(path: str | os.PathLike, write: Callable[[str], Any]) -> pathlib.Path:
    """Have ``write(tmp)`` fill a temporary file beside ``path``, then rename it over ``path``.

    The temporary file ``.<name>.<pid>.<random>.tmp`` is flushed to disk before the rename,
    so ``path`` holds either the old file or the complete new one, never a partial write;
    when ``write`` raises, the temporary file is removed and ``path`` is untouched. The new
    file keeps the old one's permissions (else 0o666 minus the umask). Used by :func:`save`
    and :func:`jdense.export`.

    Raises:
      ValueError: ``path`` is a directory or its directory does not exist.

    Example:
      >>> write_atomically("notes.txt", lambda tmp: pathlib.Path(tmp).write_text("hello"))
      PosixPath('notes.txt')
    """
    path = _check_target(path)
    _remove_stale_temps(path)
    mode = _file_mode(path)
    tmp: str | None = None
    try:
        prefix = f"{_temp_prefix(path)}{os.getpid()}."
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=prefix, suffix=".tmp", delete=False) as f:
            tmp = f.name
        write(tmp)
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)
        with open(tmp, "r+b") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _fsync_dir(path.parent)
    return path


def _diff(expected: Mapping[str, Any], found: Mapping[str, Any], missing_label: str, extra_label: str) -> str:
    """``"<missing_label>: a, b; <extra_label>: c"`` for the names in only one of the two."""

    def listing(names):
        names = sorted(names)
        return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")

    out = []
    if missing := expected.keys() - found.keys():
        out.append(f"{missing_label}: {listing(missing)}")
    if extra := found.keys() - expected.keys():
        out.append(f"{extra_label}: {listing(extra)}")
    return "; ".join(out)


def checkpoint_callback(
    path: str | os.PathLike, *, net: Sequential | None = None, metadata: Mapping[str, Any] | None = None
) -> Callable[..., pathlib.Path]:
    """A function that saves to ``path`` each time it is called, e.g. as fit's best-model hook.

    Args:
      path: the checkpoint file, overwritten (atomically) by every call.
      net: stored with every save so that :func:`load` rebuilds the network.
      metadata: extra entries stored with every save.

    Returns:
      ``save_best(params, *, opt_state=None, state=None, epoch=None, metrics=None) -> Path``;
      ``epoch`` and ``metrics`` (a dict; JAX/NumPy numbers are fine) go into the metadata.

    Example:
      >>> save_best = checkpoint_callback("best.safetensors", net=net)
      >>> save_best(params, opt_state=opt_state, state=state, epoch=5, metrics={"val_loss": 0.31})
      PosixPath('best.safetensors')
      >>> load("best.safetensors").metadata
      {'epoch': 5, 'metrics': {'val_loss': 0.31}}
    """
    target = _check_target(path)
    extra = dict(metadata or {})

    def save_best(
        params: Mapping[str, Any],
        *,
        opt_state: Any = None,
        state: Mapping[str, Any] | None = None,
        epoch: int | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> pathlib.Path:
        info = dict(extra)
        if epoch is not None:
            info["epoch"] = epoch
        if metrics is not None:
            info["metrics"] = metrics
        return save(target, params, opt_state, info, net=net, state=state)

    return save_best


# -- load ----------------------------------------------------------------------
# what safetensors (and NumPy, for a dtype it cannot view) raise on a damaged file
_UNREADABLE = (safetensors.SafetensorError, ValueError, TypeError, OverflowError, UnicodeError)


def _invalid(path: pathlib.Path, reason: str) -> ValueError:
    return ValueError(f"not a valid jdense checkpoint: {path} ({reason})")


def _existing(path: str | os.PathLike) -> pathlib.Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}.")
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: the file does not exist.")
    if path.is_dir():
        raise _invalid(path, "it is a directory")
    return path


def _parse_header(path: pathlib.Path, raw: Mapping[str, str] | None) -> dict:
    """The jdense header, verified: its checksum, then every field load relies on."""
    if not raw or not isinstance(raw.get(_HEADER_KEY), str):
        raise _invalid(path, "a safetensors file without jdense metadata")
    blob, crc = raw[_HEADER_KEY], raw.get(_HEADER_CRC_KEY)
    if crc is not None and crc != str(zlib.crc32(blob.encode("utf-8", "surrogatepass"))):
        raise _invalid(path, "its jdense metadata fails its checksum: the file is corrupted")
    try:
        header = json.loads(blob)
    except (ValueError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise _invalid(path, f"its jdense metadata is not valid JSON: {reason}") from None
    if not isinstance(header, dict) or not isinstance(header.get("format"), str):
        raise _invalid(path, "its jdense metadata has no format version")
    if header["format"] not in (FORMAT, _LEGACY):
        raise _invalid(path, f"format {header['format']!r}; this jdense reads {FORMAT!r} and {_LEGACY!r}")
    if header["format"] != _LEGACY and crc is None:
        raise _invalid(path, "its jdense metadata has no checksum")
    for key, kind in (("metadata", dict), ("crc32", dict), ("has_state", bool)):
        if not isinstance(header.get(key), kind):
            raise _invalid(path, f"its jdense metadata lacks {key!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in header["crc32"].values()):
        raise _invalid(path, "its tensor checksums are not integers")
    opt = header.get("opt_state")
    if opt is not None and not (
        isinstance(opt, dict)
        and isinstance(opt.get("leaves"), list)
        and all(isinstance(name, str) for name in opt["leaves"])
        and isinstance(opt.get("treedef", ""), str)
    ):
        raise _invalid(path, "its opt_state listing is malformed (expected {'leaves': [names], 'treedef': str})")
    if not isinstance(header.get("net_config"), dict | None):
        raise _invalid(path, "its network config is not a dict")
    return header


def read_info(path: str | os.PathLike) -> dict:
    """The checkpoint's JSON header, without reading its tensors.

    Returns:
      A dict with ``format``, ``metadata`` (yours), ``net_config`` (or ``None``, with
      ``net_config_error`` saying why when a net without config was given),
      ``opt_state`` (``{"leaves": [...], "treedef": "..."}`` or ``None``), ``has_state``,
      ``crc32`` and ``jdense_version``.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: the file is not a jdense checkpoint, or its header fails its checksum.

    Example:
      >>> read_info("model.safetensors")["opt_state"]["leaves"][:2]
      ['opt_state/count', 'opt_state/hyperparams/lambda_']
    """
    path = _existing(path)
    try:
        with safetensors.safe_open(path, framework="np") as f:
            raw = f.metadata()
    except _UNREADABLE as err:
        raise _invalid(path, str(err)) from None
    return _parse_header(path, raw)


def _nest(path: pathlib.Path, flat: Mapping[str, np.ndarray]) -> dict:
    """``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    out: dict = {}
    for name in sorted(flat):
        *parents, last = name.split("/")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise _invalid(path, f"{name} is stored both as a tensor and as a group")
        if last in node:
            raise _invalid(path, f"{name} is stored both as a tensor and as a group")
        node[last] = _as_jax(flat[name])
    return out


def _as_jax(arr: np.ndarray) -> Any:
    """A JAX array, unless JAX would change the dtype (64-bit without jax_enable_x64): then NumPy."""
    if jax.dtypes.canonicalize_dtype(arr.dtype) != arr.dtype:
        return arr
    return jnp.asarray(arr)


def _like_leaf(arr: np.ndarray, like: Any) -> Any:
    """``arr`` as the same kind of object as ``like`` (NumPy, Python scalar or JAX, same device)."""
    if isinstance(like, np.ndarray | np.generic):
        return arr if isinstance(like, np.ndarray) else arr[()]
    if isinstance(like, bool | int | float):
        return arr.item()
    if getattr(like, "weak_type", False) and arr.ndim == 0 and jnp.asarray(arr.item()).dtype == arr.dtype:
        out = jnp.asarray(arr.item())  # keeps JAX's weak type: same promotion as before saving
    else:
        out = _as_jax(arr)
    sharding = getattr(like, "sharding", None)
    if sharding is not None and isinstance(out, jax.Array):
        out = jax.device_put(out, sharding)
    return out


def _unflatten_like(path: pathlib.Path, part: str, like: Any, found: Mapping[str, np.ndarray]) -> Any:
    """``found``'s tensors in ``like``'s structure, checking every name, shape and dtype."""
    names, leaves, treedef = _flatten(part, like, dicts_only=False)
    what = "network" if part != "opt_state" else "network or optimizer"
    expected = dict(zip(names, leaves))
    if expected.keys() != found.keys():
        raise ValueError(
            f"checkpoint {path} was made for another {what}: "
            f"{_diff(expected, found, 'expected but not in the file', 'in the file but not expected')}."
        )
    out, wrong = [], []
    for name, leaf in zip(names, leaves):
        arr = found[name]
        shape = tuple(np.shape(leaf))
        dtype = np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        if tuple(arr.shape) != shape or arr.dtype != dtype:
            wrong.append(f"{name} has shape {tuple(arr.shape)} {arr.dtype} in the file, expected {shape} {dtype}")
        out.append((arr, leaf))
    if wrong:
        more = f"; and {len(wrong) - 4} more" if len(wrong) > 4 else ""
        raise ValueError(f"checkpoint {path} was made for another {what}: {'; '.join(wrong[:4])}{more}.")
    return jax.tree_util.tree_unflatten(treedef, [_like_leaf(arr, leaf) for arr, leaf in out])


def load(path: str | os.PathLike, like: Mapping[str, Any] | Checkpoint | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save`.

    Without ``like``, ``params`` and ``state`` come back as nested dicts of JAX arrays
    (``params["dense_0"]["w"]``), ``net`` is rebuilt from the stored config, and
    ``opt_state`` is ``None``: an optax state is a tree of NamedTuples that only your
    optimizer can describe. Pass ``like`` to get it.

    Args:
      path: the checkpoint file.
      like: optionally a dict with any of the keys ``"params"``, ``"opt_state"`` and
        ``"state"`` (or a :class:`Checkpoint`), each a pytree of the structure wanted,
        e.g. ``dict(params=params, opt_state=tx.init(params))``; arrays or
        ``jax.ShapeDtypeStruct`` leaves. Those parts are rebuilt in exactly that
        structure (NumPy leaves stay NumPy, JAX leaves get the same sharding), and
        every name, shape and dtype must match the file. Parts left out (or ``None``)
        are loaded as without ``like``.

    Returns:
      A :class:`Checkpoint` ``(params, opt_state, state, metadata, net)``.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: the file is not a valid jdense checkpoint (truncated; corrupted: its
        header or a tensor fails its checksum; not safetensors; without jdense
        metadata; or its network config does not fit its params), or it does not fit
        ``like``: the error names the file, the tensor and the expected and found shapes.

    Example:
      >>> ckpt = load("model.safetensors")
      >>> y = ckpt.net.apply(ckpt.params, x, state=ckpt.state)
      >>> tx = jdense.optimizer(ckpt.net, "adam", 1e-3)
      >>> opt_state = load("model.safetensors", like={"opt_state": tx.init(ckpt.params)}).opt_state
    """
    like = _normalize_like(like)
    path = _existing(path)
    _remove_stale_temps(path)
    try:
        with safetensors.safe_open(path, framework="np") as f:  # one open: header and tensors of the same file
            raw = f.metadata()
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except _UNREADABLE as err:
        raise _invalid(path, str(err)) from None
    header = _parse_header(path, raw)

    crcs = header["crc32"]
    if crcs.keys() != tensors.keys():
        raise _invalid(path, "its tensors do not match its jdense metadata")
    layout = header["format"] != _LEGACY
    for name, arr in tensors.items():
        if _crc(arr, layout) != crcs[name]:
            raise _invalid(path, f"{name} fails its checksum: the file is corrupted")
    views = header.get("views", {})
    if not isinstance(views, dict) or any(
        not isinstance(views[n], str) or views[n] not in _VIEWED or n not in tensors or tensors[n].dtype != np.uint8 for n in views
    ):
        raise _invalid(path, "its list of float8 tensors does not match its tensors")
    tensors.update({name: tensors[name].view(jnp.dtype(dtype)) for name, dtype in views.items()})
    by_part: dict[str, dict[str, np.ndarray]] = {p: {} for p in _PARTS}
    for name, arr in tensors.items():
        part = name.split("/", 1)[0]
        if part not in by_part or "/" not in name:
            raise _invalid(path, f"unexpected tensor {name!r}")
        by_part[part][name] = arr
    opt_info = header.get("opt_state")
    if opt_info is None and by_part["opt_state"]:
        raise _invalid(path, "it holds opt_state tensors that its jdense metadata does not list")
    if opt_info is not None and sorted(opt_info["leaves"]) != sorted(by_part["opt_state"]):
        raise _invalid(path, "its opt_state tensors do not match the leaves its jdense metadata lists")
    if not header["has_state"] and by_part["state"]:
        raise _invalid(path, "it holds state tensors that its jdense metadata does not mention")

    def strip(part: str) -> dict[str, np.ndarray]:
        return {name[len(part) + 1 :]: arr for name, arr in by_part[part].items()}

    if like.get("params") is not None:
        params = _unflatten_like(path, "params", like["params"], by_part["params"])
    else:
        params = _nest(path, strip("params"))
    opt_state = None
    if like.get("opt_state") is not None:
        if opt_info is None:
            raise ValueError(f"checkpoint {path} holds no opt_state (it was saved without one), but like has one.")
        opt_state = _unflatten_like(path, "opt_state", like["opt_state"], by_part["opt_state"])
    state = None
    if like.get("state") is not None:
        if not header["has_state"]:
            raise ValueError(f"checkpoint {path} holds no state (it was saved without state=), but like has one.")
        state = _unflatten_like(path, "state", like["state"], by_part["state"])
    elif header["has_state"]:
        state = _nest(path, strip("state"))

    net = None
    if header.get("net_config") is not None:
        try:
            net = Sequential.from_config(header["net_config"])
        except (ValueError, TypeError) as err:
            raise _invalid(path, f"its network config does not build: {err}") from None
        _check_net_fits(path, net, params, state)
    return Checkpoint(params=params, opt_state=opt_state, state=state, metadata=header["metadata"], net=net)


def _check_net_fits(path: pathlib.Path, net: Sequential, params: Any, state: Any) -> None:
    """Refuse a stored network config that does not describe the stored params and state."""
    try:
        problem = mismatch(net, params)
        expected_state = jax.eval_shape(net.init_state)
    except (ValueError, TypeError) as err:
        raise _invalid(path, f"its network config does not build its params: {err}") from None
    if problem is None and state is not None:
        want, have = _shapes("state", expected_state), _shapes("state", state)
        if want.keys() != have.keys():
            problem = _diff(want, have, "the network has state but the file lacks", "the file has state the network lacks")
        else:
            problem = next((f"{n} has shape {have[n]} but the network makes {want[n]}" for n in want if want[n] != have[n]), None)
    if problem is not None:
        raise _invalid(path, f"its network config does not fit its params and state: {problem}")


def _shapes(part: str, tree: Any) -> dict[str, tuple]:
    names, leaves, _ = _flatten(part, tree, dicts_only=False)
    return {name: tuple(np.shape(leaf)) for name, leaf in zip(names, leaves)}


def _normalize_like(like: Any) -> dict[str, Any]:
    if like is None:
        return {}
    if isinstance(like, Checkpoint):
        return {"params": like.params, "opt_state": like.opt_state, "state": like.state}
    if not isinstance(like, Mapping):
        raise TypeError(
            f"like must be a dict such as dict(params=params, opt_state=opt_state, state=state) or a Checkpoint, "
            f"got {type(like).__name__}."
        )
    unknown = set(like) - set(_PARTS)
    if unknown:
        raise ValueError(f"like has unknown keys {sorted(map(str, unknown))}; use params, opt_state and state.")
    return dict(like)
