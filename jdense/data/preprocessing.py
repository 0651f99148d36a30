"""Pure NumPy preprocessing helpers: scaling, one-hot encoding and splitting.

Everything here works on NumPy arrays (anything ``np.asarray`` accepts,
including JAX arrays) and returns NumPy arrays. Statistics are always fitted
on the training split only and then applied unchanged to the other splits,
so no information leaks from validation or test data into training.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MinMaxScaler",
    "Standardizer",
    "min_max_scale",
    "one_hot",
    "standardize",
    "train_val_test_split",
]

Split = tuple[NDArray[Any], NDArray[Any]]


# ---------------------------------------------------------------------------
# shared private helpers
# ---------------------------------------------------------------------------


def _describe(value: Any) -> str:
    """Short human description of a received value for error messages."""
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _as_float_array(x: ArrayLike, name: str, caller: str) -> NDArray[Any]:
    """Convert ``x`` to a floating NumPy array with at least one sample.

    Floating inputs keep their dtype; integer and boolean inputs become
    float32 (the default dtype of the networks in jdense).
    """
    try:
        arr = np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise TypeError(
            f"{caller}: {name} must be array-like numbers, got {_describe(x)}; pass a NumPy array of shape (num_samples, ...)"
        ) from err
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float32)
    elif arr.dtype.kind != "f":
        raise TypeError(
            f"{caller}: {name} must hold numbers, got dtype {arr.dtype}; "
            "convert it with np.asarray(..., dtype=np.float32) after encoding any text columns"
        )
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(
            f"{caller}: {name} must have shape (num_samples, ...) with at least one sample, "
            f"got shape {arr.shape}; pass a non-empty array"
        )
    return arr


def _nonfinite_rows(x: NDArray[Any]) -> NDArray[np.bool_]:
    """Boolean mask over the first axis: True where a row holds NaN or Inf."""
    bad = ~np.isfinite(x)
    if bad.ndim > 1:
        bad = bad.reshape(bad.shape[0], -1).any(axis=1)
    return bad


def _check_finite(x: NDArray[Any], name: str, caller: str) -> None:
    bad = _nonfinite_rows(x)
    count = int(bad.sum())
    if count:
        first = int(np.flatnonzero(bad)[0])
        rows = "1 row has" if count == 1 else f"{count} rows have"
        raise ValueError(
            f"{caller}: {rows} NaN or Inf in {name} (of {x.shape[0]} rows; first at index {first}); "
            "clean or drop them before fitting, e.g. x = x[np.isfinite(x).all(axis=1)]"
        )


def _check_trailing_shape(x: NDArray[Any], shape: tuple[int, ...], caller: str) -> None:
    if len(shape) and (x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape) :]) != shape):
        raise ValueError(
            f"{caller}: x must have per-sample shape {shape} (the shape the statistics were fitted on), "
            f"got an array of shape {x.shape}; transform data with the same features as the training set"
        )


def _readonly(a: NDArray[Any]) -> NDArray[Any]:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------
# standardization
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Standardizer:
    """Per-feature mean/std statistics for z-score standardization.

    Statistics are computed over the first (sample) axis, so a ``(N, F)``
    table gives ``F`` statistics and an ``(N, 28, 28)`` image stack gives
    per-pixel ``(28, 28)`` statistics. The arrays are stored as read-only
    float64 so a fitted standardizer cannot be changed by accident.

    Attributes:
      mean: Per-feature mean of the training data.
      std: Per-feature scale, strictly positive. Constant features (standard
        deviation at most ``eps`` when fitted) get a scale of 1, so they
        become 0 after centring instead of NaN or huge values.

    Example:
      >>> s = Standardizer.fit(x_train)
      >>> x_val = s.transform(x_val)
      >>> restored = Standardizer.from_dict(s.to_dict())  # e.g. via JSON
    """

    mean: NDArray[np.float64]
    std: NDArray[np.float64]

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if mean.shape != std.shape:
            raise ValueError(
                f"Standardizer: mean and std must have the same shape, got {mean.shape} and {std.shape}; "
                "build it with Standardizer.fit(x_train)"
            )
        if not np.all(np.isfinite(mean)):
            raise ValueError("Standardizer: mean holds NaN or Inf; fit it on finite data")
        if not np.all(np.isfinite(std) & (std > 0)):
            raise ValueError(
                "Standardizer: std must be finite and strictly positive everywhere, got "
                f"min {np.min(std) if std.size else 'n/a'}; build it with Standardizer.fit(x_train), "
                "which replaces constant features' std by 1"
            )
        object.__setattr__(self, "mean", _readonly(mean))
        object.__setattr__(self, "std", _readonly(std))

    @classmethod
    def fit(cls, x: ArrayLike, eps: float = 1e-8) -> Standardizer:
        """Fit mean and (population) standard deviation over the first axis.

        Args:
          x: Training data of shape ``(num_samples, ...)``.
          eps: Features whose standard deviation is ``<= eps`` are treated as
            constant and get a scale of 1.

        Returns:
          The fitted ``Standardizer``.

        Raises:
          TypeError: If ``x`` is not numeric.
          ValueError: If ``x`` is empty, holds NaN/Inf, or ``eps`` is negative.

        Example:
          >>> s = Standardizer.fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
          >>> s.mean, s.std
          (array([2., 5.]), array([1., 1.]))
        """
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"Standardizer.fit: eps must be a number >= 0, got {eps!r}; e.g. eps=1e-8")
        arr = _as_float_array(x, "x", "Standardizer.fit")
        _check_finite(arr, "x", "Standardizer.fit")
        arr64 = arr.astype(np.float64)
        mean = arr64.mean(axis=0)
        std = arr64.std(axis=0)
        std = np.where(std <= eps, 1.0, std)
        return cls(mean, std)

    def transform(self, x: ArrayLike) -> NDArray[Any]:
        """Apply ``(x - mean) / std``.

        Args:
          x: Data whose trailing shape matches the fitted statistics.

        Returns:
          The standardized array; floating inputs keep their dtype, integer
          inputs become float32.

        Raises:
          TypeError: If ``x`` is not numeric.
          ValueError: If the feature shape differs from the fitted one.

        Example:
          >>> x_test = Standardizer.fit(x_train).transform(x_test)
        """
        arr = _as_float_array(x, "x", "Standardizer.transform")
        _check_trailing_shape(arr, self.mean.shape, "Standardizer.transform")
        return ((arr.astype(np.float64) - self.mean) / self.std).astype(arr.dtype)

    def inverse_transform(self, x: ArrayLike) -> NDArray[Any]:
        """Undo ``transform``: returns ``x * std + mean``.

        Args:
          x: Standardized data whose trailing shape matches the statistics.

        Returns:
          Data on the original scale (same dtype rules as ``transform``).

        Raises:
          TypeError: If ``x`` is not numeric.
          ValueError: If the feature shape differs from the fitted one.

        Example:
          >>> s.inverse_transform(s.transform(x))  # ~= x
        """
        arr = _as_float_array(x, "x", "Standardizer.inverse_transform")
        _check_trailing_shape(arr, self.mean.shape, "Standardizer.inverse_transform")
        return (arr.astype(np.float64) * self.std + self.mean).astype(arr.dtype)

    def to_dict(self) -> dict[str, Any]:
        """Return the statistics as JSON-serializable nested lists.

        Returns:
          ``{"mean": [...], "std": [...]}``.

        Example:
          >>> json.dump(s.to_dict(), f)
        """
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Standardizer:
        """Rebuild a standardizer saved with ``to_dict``.

        Args:
          state: A mapping with ``"mean"`` and ``"std"`` entries.

        Returns:
          The restored ``Standardizer``.

        Raises:
          ValueError: If keys are missing or the statistics are invalid.

        Example:
          >>> s = Standardizer.from_dict(json.load(f))
        """
        missing = [k for k in ("mean", "std") if k not in state]
        if missing:
            raise ValueError(
                f"Standardizer.from_dict: state is missing {missing}, got keys {sorted(state)}; "
                "pass the dict produced by Standardizer.to_dict()"
            )
        return cls(np.asarray(state["mean"]), np.asarray(state["std"]))


def standardize(x_train: ArrayLike, *others: ArrayLike, eps: float = 1e-8) -> tuple[NDArray[Any], ...]:
    """Standardize splits with statistics fitted on the training split only.

    Args:
      x_train: Training data ``(num_samples, ...)``; mean/std are fitted here.
      *others: Further splits (validation, test, ...) transformed with the
        training statistics.
      eps: Features whose training std is ``<= eps`` are only centred.

    Returns:
      A tuple of standardized arrays, training split first, then ``others``
      in order (a 1-tuple when no others are given). Use ``Standardizer`` to
      keep the statistics.

    Raises:
      TypeError: If an input is not numeric.
      ValueError: If ``x_train`` is empty or holds NaN/Inf, or a split's
        feature shape differs from the training one.

    Example:
      >>> x_train, x_val, x_test = standardize(x_train, x_val, x_test)
    """
    scaler = Standardizer.fit(x_train, eps=eps)
    return tuple(scaler.transform(a) for a in (x_train, *others))


# ---------------------------------------------------------------------------
# min-max scaling
# ---------------------------------------------------------------------------


def _check_range(feature_range: Any, caller: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in feature_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"{caller}: feature_range must be a pair (low, high) of numbers, got {feature_range!r}; e.g. feature_range=(0.0, 1.0)"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(
            f"{caller}: feature_range must satisfy low < high (both finite), got {feature_range!r}; "
            "e.g. feature_range=(-1.0, 1.0)"
        )
    return lo, hi


@dataclass(frozen=True, eq=False)
class MinMaxScaler:
    """Per-feature minimum/maximum statistics for min-max scaling.

    ``transform`` maps the fitted minimum to ``feature_range[0]`` and the
    fitted maximum to ``feature_range[1]``. Constant features map to
    ``feature_range[0]``. Values outside the fitted range (e.g. in the test
    split) are not clipped.

    Attributes:
      data_min: Per-feature minimum of the training data.
      data_max: Per-feature maximum of the training data.
      feature_range: Target ``(low, high)`` interval.

    Example:
      >>> m = MinMaxScaler.fit(x_train, feature_range=(-1.0, 1.0))
      >>> x_test = m.transform(x_test)
    """

    data_min: NDArray[np.float64]
    data_max: NDArray[np.float64]
    feature_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        lo_arr = np.asarray(self.data_min, dtype=np.float64)
        hi_arr = np.asarray(self.data_max, dtype=np.float64)
        if lo_arr.shape != hi_arr.shape:
            raise ValueError(
                f"MinMaxScaler: data_min and data_max must have the same shape, got {lo_arr.shape} and "
                f"{hi_arr.shape}; build it with MinMaxScaler.fit(x_train)"
            )
        if not (np.all(np.isfinite(lo_arr)) and np.all(np.isfinite(hi_arr)) and np.all(hi_arr >= lo_arr)):
            raise ValueError(
                "MinMaxScaler: data_min/data_max must be finite with data_max >= data_min; "
                "build it with MinMaxScaler.fit(x_train)"
            )
        object.__setattr__(self, "data_min", _readonly(lo_arr))
        object.__setattr__(self, "data_max", _readonly(hi_arr))
        object.__setattr__(self, "feature_range", _check_range(self.feature_range, "MinMaxScaler"))

    @classmethod
    def fit(cls, x: ArrayLike, feature_range: tuple[float, float] = (0.0, 1.0)) -> MinMaxScaler:
        """Fit per-feature minimum and maximum over the first axis.

        Args:
          x: Training data of shape ``(num_samples, ...)``.
          feature_range: Target ``(low, high)`` interval, ``low < high``.

        Returns:
          The fitted ``MinMaxScaler``.

        Raises:
          TypeError: If ``x`` is not numeric.
          ValueError: If ``x`` is empty or holds NaN/Inf, or the range is invalid.

        Example:
          >>> MinMaxScaler.fit(np.array([[0.0], [4.0]])).transform(np.array([[1.0]]))
          array([[0.25]])
        """
        feature_range = _check_range(feature_range, "MinMaxScaler.fit")
        arr = _as_float_array(x, "x", "MinMaxScaler.fit")
        _check_finite(arr, "x", "MinMaxScaler.fit")
        arr64 = arr.astype(np.float64)
        return cls(arr64.min(axis=0), arr64.max(axis=0), feature_range)

    def transform(self, x: ArrayLike) -> NDArray[Any]:
        """Map ``x`` linearly so the fitted range becomes ``feature_range``.

        Args:
          x: Data whose trailing shape matches the fitted statistics.

        Returns:
          The scaled array; floating inputs keep their dtype, integer inputs
          become float32.

        Raises:
          TypeError: If ``x`` is not numeric.
          ValueError: If the feature shape differs from the fitted one.

        Example:
          >>> x_val = MinMaxScaler.fit(x_train).transform(x_val)
        """
        arr = _as_float_array(x, "x", "MinMaxScaler.transform")
        _check_trailing_shape(arr, self.data_min.shape, "MinMaxScaler.transform")
        lo, hi = self.feature_range
        span = self.data_max - self.data_min
        span = np.where(span > 0, span, 1.0)
        out = lo + (arr.astype(np.float64) - self.data_min) / span * (hi - lo)
        return out.astype(arr.dtype)

    def to_dict(self) -> dict[str, Any]:
        """Return the statistics as JSON-serializable values.

        Returns:
          ``{"data_min": [...], "data_max": [...], "feature_range": [lo, hi]}``.

        Example:
          >>> json.dump(m.to_dict(), f)
        """
        return {
            "data_min": self.data_min.tolist(),
            "data_max": self.data_max.tolist(),
            "feature_range": list(self.feature_range),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> MinMaxScaler:
        """Rebuild a scaler saved with ``to_dict``.

        Args:
          state: A mapping with ``"data_min"``, ``"data_max"`` and optionally
            ``"feature_range"``.

        Returns:
          The restored ``MinMaxScaler``.

        Raises:
          ValueError: If keys are missing or the statistics are invalid.

        Example:
          >>> m = MinMaxScaler.from_dict(json.load(f))
        """
        missing = [k for k in ("data_min", "data_max") if k not in state]
        if missing:
            raise ValueError(
                f"MinMaxScaler.from_dict: state is missing {missing}, got keys {sorted(state)}; "
                "pass the dict produced by MinMaxScaler.to_dict()"
            )
        return cls(
            np.asarray(state["data_min"]),
            np.asarray(state["data_max"]),
            tuple(state.get("feature_range", (0.0, 1.0))),
        )


def min_max_scale(
    x_train: ArrayLike,
    *others: ArrayLike,
    feature_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[NDArray[Any], ...]:
    """Min-max scales splits with the range fitted on the training split only.

    Args:
      x_train: Training data ``(num_samples, ...)``; min/max are fitted here.
      *others: Further splits scaled with the training statistics (values
        outside the training range fall outside ``feature_range``).
      feature_range: Target ``(low, high)`` interval, ``low < high``.

    Returns:
      A tuple of scaled arrays, training split first, then ``others`` in
      order. Use ``MinMaxScaler`` to keep the statistics.

    Raises:
      TypeError: If an input is not numeric.
      ValueError: If ``x_train`` is empty or holds NaN/Inf, the range is
        invalid, or a split's feature shape differs from the training one.

    Example:
      >>> x_train, x_test = min_max_scale(x_train, x_test, feature_range=(-1.0, 1.0))
    """
    scaler = MinMaxScaler.fit(x_train, feature_range=feature_range)
    return tuple(scaler.transform(a) for a in (x_train, *others))


# ---------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------


def _as_int_labels(labels: ArrayLike, name: str, caller: str) -> NDArray[np.int64]:
    arr = np.asarray(labels)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        integral = finite & (arr == np.round(np.where(finite, arr, 0.0)))
        if not np.all(integral):
            bad = arr[~integral].ravel()[0]
            raise ValueError(
                f"{caller}: {name} must be integer class indices, got non-integral value {float(bad)!r}; "
                "pass integer labels such as np.array([0, 2, 1])"
            )
        return arr.astype(np.int64)
    raise TypeError(
        f"{caller}: {name} must be integer class indices, got dtype {arr.dtype}; "
        "map classes to integers 0..K-1 first (e.g. np.unique(y, return_inverse=True)[1])"
    )


def one_hot(labels: ArrayLike, num_classes: int | None = None) -> NDArray[np.float32]:
    """One-hot encodes integer class labels.

    Args:
      labels: Integer class indices of any shape (integral floats such as
        ``2.0`` are accepted), each in ``[0, num_classes)``.
      num_classes: Number of classes; inferred as ``max(labels) + 1`` when
        omitted (pass it explicitly so every split gets the same width).

    Returns:
      A float32 array of shape ``labels.shape + (num_classes,)``.

    Raises:
      TypeError: If labels are not numeric or ``num_classes`` is not an int.
      ValueError: If labels are non-integral, negative or ``>= num_classes``,
        or ``num_classes`` cannot be inferred from empty labels.

    Example:
      >>> one_hot([0, 2], num_classes=3)
      array([[1., 0., 0.],
         [0., 0., 1.]], dtype=float32)
    """
    arr = _as_int_labels(labels, "labels", "one_hot")
    if num_classes is None:
        if arr.size == 0:
            raise ValueError("one_hot: cannot infer num_classes from empty labels; pass num_classes=K")
        num_classes = int(arr.max()) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"one_hot: num_classes must be an int >= 1, got {_describe(num_classes)}; e.g. num_classes=10")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"one_hot: num_classes must be >= 1, got {num_classes}; e.g. num_classes=10")
    if arr.size:
        bad = arr[(arr < 0) | (arr >= num_classes)]
        if bad.size:
            raise ValueError(
                f"one_hot: labels must lie in [0, {num_classes}), got {bad.size} out-of-range value(s), "
                f"e.g. {int(bad[0])}; pass a larger num_classes or re-map the labels to 0..K-1"
            )
    return (arr[..., None] == np.arange(num_classes)).astype(np.float32)


# ---------------------------------------------------------------------------
# splitting
# ---------------------------------------------------------------------------


def _rng_from(key_or_seed: Any) -> np.random.Generator:
    """Build a NumPy generator from an int seed or a JAX PRNG key."""
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, (bool, np.bool_)):
        seed = int(key_or_seed)
        if seed < 0:
            raise ValueError(f"train_val_test_split: key_or_seed must be a non-negative int seed, got {seed}; e.g. 0")
        return np.random.default_rng(seed)
    if "jax" in sys.modules:  # a JAX key can only exist if jax was already imported
        import jax  # lazy: jdense.data never imports jax for int seeds

        if not isinstance(key_or_seed, jax.Array):
            raise TypeError(
                "train_val_test_split: key_or_seed must be an int seed or a JAX PRNG key, got "
                f"{_describe(key_or_seed)}; e.g. train_val_test_split(0, x, y) or "
                "train_val_test_split(jax.random.key(0), x, y)"
            )
        key = key_or_seed
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValueError(
                    f"train_val_test_split: key_or_seed must be a single JAX key, got a batch of shape "
                    f"{key.shape}; pass one key, e.g. jax.random.split(key)[0]"
                )
            data = jax.random.key_data(key)
        elif key.dtype == np.uint32 and key.ndim == 1:
            data = key  # legacy raw key from jax.random.PRNGKey
        else:
            raise TypeError(
                f"train_val_test_split: key_or_seed must be an int seed or a JAX PRNG key, got a JAX array "
                f"of shape {key.shape} and dtype {key.dtype}; use jax.random.key(0) or an int"
            )
        words = [int(w) for w in np.asarray(data).ravel()]
        return np.random.default_rng(words)
    raise TypeError(
        f"train_val_test_split: key_or_seed must be an int seed or a JAX PRNG key, got {_describe(key_or_seed)}; "
        "e.g. train_val_test_split(0, x, y) or train_val_test_split(jax.random.key(0), x, y)"
    )


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"train_val_test_split: {name} must be a fraction in [0, 1), got {_describe(value)}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"train_val_test_split: {name} must be a fraction in [0, 1), got {value}; e.g. {name}=0.1")
    return value


def train_val_test_split(
    key_or_seed: Any,
    x: ArrayLike,
    y: ArrayLike,
    *,
    val: float = 0.1,
    test: float = 0.2,
    stratify: bool = False,
) -> tuple[Split, Split, Split]:
    """Shuffle samples and splits them into train, validation and test sets.

    The split sizes are ``round(test * n)`` and ``round(val * n)``; the rest
    is training data. The same seed (or JAX key) always gives the same split.

    Args:
      key_or_seed: A non-negative int seed or a JAX PRNG key
        (``jax.random.key(0)`` or legacy ``jax.random.PRNGKey(0)``).
      x: Features with ``num_samples`` on the first axis.
      y: Targets with ``num_samples`` on the first axis.
      val: Validation fraction in ``[0, 1)``.
      test: Test fraction in ``[0, 1)``; ``val + test`` must be below 1.
      stratify: If True, each class keeps (to within one sample) its
        proportion in every split. Classes are taken from ``y`` (1-D
        labels) or its argmax (2-D one-hot targets).

    Returns:
      ``((x_train, y_train), (x_val, y_val), (x_test, y_test))`` as NumPy
      arrays; an empty split has zero rows.

    Raises:
      TypeError: If ``key_or_seed`` or a fraction has the wrong type.
      ValueError: If fractions are out of range, ``x`` and ``y`` lengths
        differ, or the training split would be empty.

    Example:
      >>> (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(0, x, y, val=0.1, test=0.2)
    """
    rng = _rng_from(key_or_seed)
    val = _check_fraction(val, "val")
    test = _check_fraction(test, "test")
    if val + test >= 1.0:
        raise ValueError(
            f"train_val_test_split: val + test must be < 1 to leave training data, got val={val} + test={test} "
            f"= {val + test}; lower one of them"
        )
    x_arr, y_arr = np.asarray(x), np.asarray(y)
    if x_arr.ndim == 0 or y_arr.ndim == 0:
        raise ValueError(
            f"train_val_test_split: x and y must have samples on the first axis, got shapes {x_arr.shape} and {y_arr.shape}"
        )
    n = x_arr.shape[0]
    if y_arr.shape[0] != n:
        raise ValueError(
            f"train_val_test_split: x and y must have the same number of samples, got {n} and "
            f"{y_arr.shape[0]}; check they come from the same dataset"
        )
    n_test = math.floor(test * n + 0.5)
    n_val = math.floor(val * n + 0.5)
    if n - n_test - n_val < 1:
        raise ValueError(
            f"train_val_test_split: {n} samples with val={val}, test={test} leave no training samples; "
            "use more data or smaller fractions"
        )

    if stratify:
        if y_arr.ndim == 1:
            labels = y_arr
        elif y_arr.ndim == 2:
            labels = y_arr.argmax(axis=1)
        else:
            raise ValueError(
                f"train_val_test_split: stratify=True needs 1-D labels or 2-D one-hot targets, got y of shape "
                f"{y_arr.shape}; pass stratify=False"
            )
        _, inverse = np.unique(labels, return_inverse=True)
        inverse = inverse.ravel()
        # Spread each class evenly over [0, 1) in random order, then cut the
        # globally sorted ranks: every cut takes ~the same fraction per class.
        rank = np.empty(n, dtype=np.float64)
        for c in range(int(inverse.max()) + 1 if n else 0):
            members = rng.permutation(np.flatnonzero(inverse == c))
            rank[members] = (np.arange(members.size) + rng.random()) / members.size
        order = np.lexsort((rng.random(n), rank))
    else:
        order = rng.permutation(n)

    test_idx = rng.permutation(order[:n_test])
    val_idx = rng.permutation(order[n_test : n_test + n_val])
    train_idx = rng.permutation(order[n_test + n_val :])
    return (
        (x_arr[train_idx], y_arr[train_idx]),
        (x_arr[val_idx], y_arr[val_idx]),
        (x_arr[test_idx], y_arr[test_idx]),
    )
