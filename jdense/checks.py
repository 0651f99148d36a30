"""Eager argument checks shared by the modules: each error names the argument,
what was given, what was expected, and how to fix it."""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np


def positive_int(name: str, value) -> int:
    """Return ``value`` if it is a positive Python/NumPy integer, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be a positive int, got {short(value)} of type {type(value).__name__}; "
            f"pass a whole number such as {name}=64."
        )
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}; pass a number >= 1.")
    return int(value)


def integer(name: str, value, low: int = 0) -> int:
    """Return ``value`` as an int if it is a Python/NumPy integer >= ``low`` (bools refused), else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {short(value)} of type {type(value).__name__}; e.g. {name}={max(low, 1)}.")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}.")
    return int(value)


class _Default(int):
    """An int that is a signature's default (``BATCH_SIZE is value`` tells it from the same number passed)."""

    __slots__ = ()


BATCH_SIZE = _Default(32)
"""fit's and fit_population's default ``batch_size`` (32, as Keras): unlike an explicit 32, it shrinks to a
smaller data set instead of raising (Keras does the same; so does the CLI)."""


def batch_size(value, n: int) -> int:
    """A training batch size for ``n`` samples: ``None`` is all of them, the default (:data:`BATCH_SIZE`) at most
    all of them, else a positive int at most ``n`` (an explicit size larger than the data set is an error)."""
    if value is None:
        return n  # batch gradient descent: the whole set each step
    if value is BATCH_SIZE:
        return min(int(value), n)
    value = positive_int("batch_size", value)
    if value > n:
        raise ValueError(
            f"batch_size={value} is larger than the data set ({n} samples); pass batch_size<={n}, "
            "or batch_size=None for batch gradient descent."
        )
    return value


def short(value, limit: int = 60) -> str:
    """``repr(value)`` when it is short, else its type's name: an error never prints a several-hundred-character repr."""
    text = repr(value)
    if len(text) <= limit:
        return text
    name = f"{type(value).__module__.split('.')[0]}.{type(value).__qualname__}"  # optax's, not optax._src.base's
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def real(name: str, value, expected: str) -> float:
    """Return ``value`` as a Python float if it is a finite real number (NumPy scalars too), else raise."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be {expected}, got {short(value)} of type {type(value).__name__}; pass a number, not a "
            "string or an array."
        )
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {expected}, got {value}; pass a finite number.")
    return float(value)


def non_negative_float(name: str, value) -> float:
    """Return ``value`` as a float if it is a finite real number >= 0, else raise."""
    value = real(name, value, "a finite real number >= 0")
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}; use 0.0 to switch it off.")
    return value


def boolean(name: str, value) -> bool:
    """Return ``value`` as a Python bool if it is a bool (or NumPy bool), else raise."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {short(value)} of type {type(value).__name__}.")
    return bool(value)


def floating_dtype(name: str, dtype) -> jnp.dtype:
    """Return ``dtype`` as a NumPy dtype if it is a floating type, else raise."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{name} must be a floating dtype such as jnp.float32, got {short(dtype)}.") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(
            f"{name} must be a floating dtype (float32, bfloat16, float16, float64), got {dt}; "
            f"parameters must be differentiable, so pass e.g. {name}=jnp.float32."
        )
    return dt


def choice(name: str, value: str, valid, *, also: str = "") -> str:
    """Return ``value`` if it is one of ``valid``, else raise listing them, with the closest as a suggestion.

    ``also`` names what else is accepted (e.g. ``"a callable (outputs, targets) -> values"``).
    """
    if value not in valid:
        listed = ", ".join(map(repr, sorted(valid) if isinstance(valid, set | frozenset) else valid))
        best = closest(value, valid)
        hint = f"; did you mean {best!r}? Expected" if best is not None else "; expected"
        raise ValueError(f"unknown {name} {short(value)}{hint} one of {listed}{', or ' + also if also else ''}.")
    return value


def _size(nbytes: int) -> str:
    """``nbytes`` in the largest binary unit that keeps it >= 1, e.g. ``"3.7 TiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if nbytes < 1024 or unit == "EiB":
            return f"{nbytes:,.0f} {unit}" if unit == "B" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    raise AssertionError  # unreachable


@functools.lru_cache(maxsize=8)
def _capacity(device: jax.Device) -> tuple[int, str] | None:
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # some backends do not implement it
        pass
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device} memory"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), f"{device}, host memory"
    except (AttributeError, ValueError, OSError):
        return None


def device_capacity() -> tuple[int, str] | None:
    """``(bytes, description)`` the default device can hold at most, or None if unknown.

    The device's ``memory_stats()["bytes_limit"]`` (GPU/TPU), else the host's physical
    memory (CPU).
    """
    device = jax.config.jax_default_device
    if device is None or isinstance(device, str):
        device = jax.devices(device)[0]
    return _capacity(device)


def fits_device(what: str, nbytes: int, detail: str) -> None:
    """Raise before anything is allocated when ``nbytes`` of params cannot fit on the default device."""
    capacity = device_capacity()
    if capacity is not None and nbytes > capacity[0]:
        limit, where = capacity
        raise ValueError(
            f"{what} needs {nbytes:,} bytes ({_size(nbytes)}) for its params ({detail}), but the device "
            f"holds at most {limit:,} bytes ({_size(limit)}; {where}); use fewer features, a smaller "
            "dtype (e.g. dtype=jnp.bfloat16) or a device with more memory."
        )


def nbytes(shapes) -> int:
    """Bytes of a tree of arrays or ``jax.ShapeDtypeStruct`` leaves."""
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(shapes))


def params_fit_device(what: str, shapes) -> None:
    """:func:`fits_device` for a tree of ``jax.ShapeDtypeStruct`` leaves, listing them in the message."""
    if (capacity := device_capacity()) is None or nbytes(shapes) <= capacity[0]:
        return
    leaves = sorted(jax.tree_util.tree_flatten_with_path(shapes)[0], key=lambda item: -nbytes(item[1]))  # largest first
    detail = " and ".join(
        f"{'/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)} {tuple(leaf.shape)} {np.dtype(leaf.dtype).name}"
        for path, leaf in leaves
    )
    fits_device(what, nbytes(shapes), detail)


# -- files written ---------------------------------------------------------------------------
def output_file(path, name: str = "path", example: str = "model.safetensors", action: str = "save to") -> pathlib.Path:
    """``path`` as a Path if a file can be written there (not a directory; its directory exists), else raise
    before anything runs (not at the first epoch)."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}.")
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name such as {path / example}.")
    if not path.parent.is_dir():
        raise ValueError(f"cannot {action} {path}: the directory {path.parent} does not exist; create it first.")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"cannot {action} {path}: the directory {path.parent} is not writable; choose another place.")
    return path


def output_dir(path, name: str = "logdir", action: str = "write under") -> pathlib.Path:
    """``path`` as a Path if it is a directory or can be made one (its nearest existing ancestor is a writable
    directory), else raise before anything runs."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}.")
    path = pathlib.Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot {action} {path}: {existing} is a file, not a directory; pass another {name}.")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"cannot {action} {path}: the directory {existing} is not writable; pass another {name}.")
    return path


# -- name suggestions ---------------------------------------------------------------------
KERAS_NAMES = {
    "binary_crossentropy": "binary_cross_entropy",
    "categorical_crossentropy": "cross_entropy",
    "sparse_categorical_crossentropy": "cross_entropy",
    "crossentropy": "cross_entropy",
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "root_mean_squared_error": "rmse",
    "kullback_leibler_divergence": "kl_divergence",
    "kld": "kl_divergence",
    "logcosh": "log_cosh",
    "huber_loss": "huber",
    "binary_focal_crossentropy": "sigmoid_focal",
    "f1_score": "f1",
    "acc": "accuracy",
    "binary_accuracy": "accuracy",
    "categorical_accuracy": "accuracy",
    "sparse_categorical_accuracy": "accuracy",
    "top_k_categorical_accuracy": "top_k_accuracy",
    "sparse_top_k_categorical_accuracy": "top_k_accuracy",
    "roc_auc": "auc",
    "xavier": "glorot_uniform",
    "xavier_uniform": "glorot_uniform",
    "glorot": "glorot_uniform",
    "kaiming": "he_normal",
    "xavier_normal": "glorot_normal",
    "kaiming_uniform": "he_uniform",
    "kaiming_normal": "he_normal",
    "identity": "linear",
}
"""Keras (and PyTorch) spellings of names jdense spells otherwise: pointed to, never silently accepted."""


def closest(value, valid) -> str | None:
    """The valid name ``value`` most likely means (a Keras spelling, another case, or a near miss by
    ``difflib.get_close_matches``), or None."""
    if not isinstance(value, str):
        return None
    names = [v for v in valid if isinstance(v, str)]
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    by_key = {n.lower(): n for n in names}
    prefix, rest = ("val_", key[4:]) if key.startswith("val_") else ("", key)  # a logged name: "val_acc"
    keras = KERAS_NAMES.get(rest) or KERAS_NAMES.get(rest.replace("_", ""))
    for guess in (key, KERAS_NAMES.get(key), KERAS_NAMES.get(key.replace("_", "")), keras and prefix + keras):
        if guess is not None and guess.lower() in by_key:
            return by_key[guess.lower()]
    match = difflib.get_close_matches(key, list(by_key), n=1, cutoff=0.6)
    if match:
        return by_key[match[0]]
    starts = [n for low, n in by_key.items() if len(key) >= 3 and low.startswith(key)]  # "proba": "probabilities"
    return starts[0] if len(starts) == 1 else None


def did_you_mean(value, valid) -> str:
    """``"; did you mean 'x'?"`` for the closest valid name (see :func:`closest`), or ``""``."""
    best = closest(value, valid)
    return f"; did you mean {best!r}?" if best is not None and best != value else ""


def keywords(owner: str, kwargs: dict, aliases: dict[str, str], accepted=(), hints: dict[str, str] | None = None) -> None:
    """Refuse unexpected keywords: another library's spelling (``aliases``: theirs -> ours) gets a pointer to
    jdense's name, an argument jdense asks for otherwise (``hints``: name -> what to pass instead) its hint,
    anything else the closest of ``accepted``. One spelling per argument, never two."""
    for name in kwargs:
        if hints and name in hints:
            raise TypeError(f"{owner} has no argument {name!r}; {hints[name]}")
        if name in aliases:
            raise TypeError(f"{owner} has no argument {name!r} (the Keras spelling); jdense calls it {aliases[name]!r}: "
                            f"{owner}(..., {aliases[name]}={short(kwargs[name])}).")
        raise TypeError(f"{owner} got an unexpected keyword argument {name!r}{did_you_mean(name, accepted)}.")


# -- arrays -----------------------------------------------------------------------------------
def memmap_intact(a, what: str) -> None:
    """Raise a ValueError naming the file (instead of the SIGBUS that kills Python on reading) when ``a`` is a
    memory map (or a view of one) whose file is now shorter than the array: truncated or rewritten after it was opened."""
    filename = getattr(a, "filename", None)
    if not isinstance(a, np.memmap) or not filename:
        return
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    start = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    need = int(a.offset) + start + (a.nbytes if a.flags.c_contiguous else root.nbytes - start)
    try:
        size = os.stat(filename).st_size
    except OSError as err:
        raise ValueError(f"{what}: cannot read the memory map {filename} any more ({err}); was it moved or deleted?") from None
    if size < need:
        raise ValueError(f"{what}: the memory map {filename} is {size:,} bytes but its array needs {need:,}; the file was "
                         "truncated or rewritten after the memory map was opened. Restore the file (or open a new "
                         "np.memmap of it).")


def numeric_array(name: str, value, what: str = ""):
    """``value`` if it is a JAX array (tracers too), else as a NumPy array if numeric or bool; else a clear error."""
    if isinstance(value, jax.Array):
        return value
    prefix = f"{what}: " if what else ""
    memmap_intact(value, what or name)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged rows, objects
        raise TypeError(f"{prefix}{name} must be a rectangular numeric array (rows of equal length), got "
                        f"{type(value).__name__}; {err}") from None
    if array.dtype.kind not in "biufc":
        raise TypeError(f"{prefix}{name} must be numeric, got an array of dtype {array.dtype} (shape {array.shape}); "
                        f"convert it first, e.g. {name}.astype(np.float32), or encode text as numbers.")
    return array


def trainable(what: str, net, params) -> None:
    """Refuse to train a network that is for inference (a layer with ``inference_only``, e.g. a quantized
    one) or whose params are not floating (gradients need real values)."""
    for name, layer in zip(net.names, net.layers):
        if getattr(layer, "inference_only", False):
            raise ValueError(
                f"{what}: {name} is a {type(layer).__name__}: this network is for inference (predict, evaluate, save), "
                "not training; train the float network and quantize it afterwards.")
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not jnp.issubdtype(getattr(leaf, "dtype", np.asarray(leaf).dtype), jnp.floating):
            raise TypeError(f"{what}: params{jax.tree_util.keystr(path)} has dtype {leaf.dtype}; training needs floating "
                            "params (gradients are real numbers): pass the float params, e.g. from net.init(key).")


def member_count(what: str, **trees) -> int:
    """The size of the leading member axis that every leaf of these trees (a population's) shares, else raise."""
    first = None
    for tree_name, tree in trees.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            shape = np.shape(leaf)
            where = f"{tree_name}{jax.tree_util.keystr(path)}"
            if not shape:
                raise ValueError(f"{what}: population=True, but {where} has no leading member axis (a scalar); pass a "
                                 "population's params and state (fit_population's result), or population=False.")
            if first is None:
                first = (where, shape[0])
            elif shape[0] != first[1]:
                raise ValueError(
                    f"{what}: population=True needs one member axis, but {first[0]} has {first[1]} members and {where} "
                    f"has {shape[0]}; pass params and state of one population (did you mix layers or states of "
                    "populations of different sizes?)."
                )
    if first is None:
        raise ValueError(f"{what}: population=True, but params hold no arrays.")
    return first[1]


def prng_key(name: str, value) -> jax.Array:
    """Return ``value`` as a typed PRNG key if it is one (or a raw ``jax.random.PRNGKey``), else raise."""
    dtype = getattr(value, "dtype", None)
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and value.shape == ():
        return value
    if isinstance(value, jax.Array | np.ndarray) and dtype == np.uint32 and value.shape == (2,):
        return jax.random.wrap_key_data(jnp.asarray(value))
    raise TypeError(f"{name} must be one JAX PRNG key such as jax.random.key(0), got {short(value)}; "
                    f"pass {name}=jax.random.key(seed).")
