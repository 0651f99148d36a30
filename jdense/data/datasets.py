"""Dataset loaders: scikit-learn digits, MNIST IDX files and the user's CSV tables.

All loaders return plain NumPy arrays: features as float32 and targets as
int32 (classification) or float32 (regression). Nothing is downloaded: MNIST
is read from a directory you provide, digits ships inside scikit-learn.
"""

from __future__ import annotations

import codecs
import csv as _csv
import gzip
import io
import math
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .preprocessing import _nonfinite_rows

__all__ = [
    "MNIST_FILES",
    "csv",
    "digits",
    "mnist",
    "read_idx",
    "write_idx",
]

PathLike = str | os.PathLike[str]

#: The four standard MNIST file names (each may also end in ``.gz``).
MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# IDX element type codes (third byte of the magic number) -> big-endian dtype.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (N, rows, cols)
_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (N,)


# ---------------------------------------------------------------------------
# shared validation
# ---------------------------------------------------------------------------


def _check_finite_features(
    x: NDArray[Any],
    source: str,
    *,
    locate: Callable[[int], str] | None = None,
    note: str = "",
) -> None:
    """Raise a ValueError counting the rows of ``x`` that hold NaN or Inf.

    Shared by every loader so the message is the same everywhere.

    Args:
      x: Feature array, samples on the first axis.
      source: How the data was loaded, e.g. ``"csv('data.csv')"``.
      locate: Turns the 0-based index of the first bad row into a location
        for the message (e.g. ``"line 7"``); defaults to ``"index i"``.
      note: Extra detail placed in the parenthesis (e.g. about empty cells).
    """
    bad = _nonfinite_rows(x)
    count = int(bad.sum())
    if count:
        first = int(np.flatnonzero(bad)[0])
        where = locate(first) if locate is not None else f"index {first}"
        rows = "1 row has" if count == 1 else f"{count} rows have"
        raise ValueError(
            f"{source}: {rows} NaN or Inf in their features (of {x.shape[0]} rows; {note}first at {where}); "
            "clean or drop them first"
        )


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


def digits() -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    """Load scikit-learn's bundled 8x8 handwritten digits (no download).

    Returns:
      ``(x, y)`` with ``x`` float32 of shape ``(1797, 64)`` scaled to
      ``[0, 1]`` and ``y`` int32 class labels ``0..9`` of shape ``(1797,)``.

    Raises:
      ModuleNotFoundError: If scikit-learn is not installed.

    Example:
      >>> x, y = digits()
      >>> (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(0, x, y)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ModuleNotFoundError('digits() needs scikit-learn: pip install "jdense[examples]"') from err
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)
    y = np.asarray(bunch.target, dtype=np.int32)
    return x, y


# ---------------------------------------------------------------------------
# IDX / MNIST
# ---------------------------------------------------------------------------


def _read_bytes(path: Path, caller: str) -> bytes:
    """Read a file, transparently gunzipping it if it is gzip-compressed."""
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(
            f"{caller}: file '{path}' is a damaged or truncated gzip archive ({err}); "
            "re-download it or replace it with the uncompressed file"
        ) from err


def _load_idx(path: Path, caller: str, expected_magic: int | None = None, kind: str = "") -> NDArray[Any]:
    """Read and validates one IDX file; see ``read_idx``."""
    data = _read_bytes(path, caller)
    if len(data) < 4:
        raise ValueError(
            f"{caller}: file '{path}' is truncated: {len(data)} bytes, too short for the 4-byte IDX magic number; re-download it"
        )
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{caller}: file '{path}' has magic number 0x{magic:08X}, expected 0x{expected_magic:08X} ({kind}); "
            "check the file is the right one (not swapped with another file, an HTML error page, or corrupted)"
        )
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{caller}: file '{path}' is not an IDX file: magic number 0x{magic:08X} should be 0x0000TTDD "
            f"with type TT in {{08, 09, 0B, 0C, 0D, 0E}} and DD >= 1 dimensions (MNIST uses 0x{_IMAGES_MAGIC:08X} "
            f"for images, 0x{_LABELS_MAGIC:08X} for labels); check it is the right (uncorrupted) file"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"{caller}: file '{path}' is truncated: the header declares {ndim} dimensions ({header_size} bytes) "
            f"but the file has only {len(data)} bytes; re-download it"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a huge header cannot overflow
    found = len(data) - header_size
    dims = " x ".join(str(d) for d in shape)
    if found < expected:
        raise ValueError(
            f"{caller}: file '{path}' is truncated: the header declares shape {dims} ({expected} bytes of data) "
            f"but only {found} bytes follow it; re-download the file"
        )
    if found > expected:
        raise ValueError(
            f"{caller}: file '{path}' has {found - expected} unexpected trailing bytes after the {expected} bytes "
            f"declared by its header (shape {dims}); the file is corrupted, re-download it"
        )
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header_size)
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def read_idx(path: PathLike) -> NDArray[Any]:
    """Read an IDX file (the MNIST container format), plain or gzip-compressed.

    Args:
      path: File to read; gzip compression is detected from the content.

    Returns:
      An array with the shape and element type stored in the header
      (``uint8`` for MNIST), in native byte order.

    Raises:
      FileNotFoundError: If ``path`` does not exist.
      ValueError: If the header is not a valid IDX header or the data size
        does not match the dimensions it declares (e.g. a truncated file).

    Example:
      >>> labels = read_idx("mnist/t10k-labels-idx1-ubyte.gz")
    """
    file = Path(path).expanduser()
    caller = f"read_idx('{path}')"
    if not file.is_file():
        raise FileNotFoundError(f"{caller}: no such file '{file}'; check the path")
    return _load_idx(file, caller)


def write_idx(path: PathLike, array: ArrayLike) -> None:
    """Write an array in IDX format, gzip-compressed if ``path`` ends in ``.gz``.

    MNIST files hold ``uint8`` arrays; ``int8``, ``int16``, ``int32``,
    ``float32`` and ``float64`` arrays are also valid IDX and are written too.

    Args:
      path: Destination file; its parent directory must exist.
      array: Array with at least one dimension (e.g. ``(N, 28, 28)`` uint8
        images or ``(N,)`` uint8 labels).

    Raises:
      TypeError: If the dtype has no IDX type code (e.g. int64).
      ValueError: If ``array`` is 0-dimensional or has too many dimensions.

    Example:
      >>> write_idx(tmp / "t10k-labels-idx1-ubyte.gz", np.array([7, 2, 1], dtype=np.uint8))
    """
    arr = np.asarray(array)
    codes = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code for code, dt in _IDX_DTYPES.items()}
    native = arr.dtype.newbyteorder("=") if arr.dtype.itemsize > 1 else arr.dtype
    if native not in codes:
        raise TypeError(
            f"write_idx: array dtype {arr.dtype} has no IDX type code; expected uint8 (MNIST), int8, int16, int32, "
            "float32 or float64, e.g. array.astype(np.uint8)"
        )
    if not 1 <= arr.ndim <= 255:
        raise ValueError(f"write_idx: array must have 1 to 255 dimensions, got shape {arr.shape}")
    if any(d >= 2**32 for d in arr.shape):
        raise ValueError(f"write_idx: every dimension must be < 2**32, got shape {arr.shape}")
    code = codes[native]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes()
    path = Path(path).expanduser()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)


def _mnist_expected() -> str:
    names = ", ".join(MNIST_FILES)
    return f"expected the four MNIST IDX files {names} (each may also end in .gz)"


def _find_mnist_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def mnist(
    directory: PathLike,
) -> tuple[tuple[NDArray[np.float32], NDArray[np.int32]], tuple[NDArray[np.float32], NDArray[np.int32]]]:
    """Load MNIST (or a same-format set such as Fashion-MNIST) from IDX files.

    Nothing is downloaded: ``directory`` must already hold
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or
    with a ``.gz`` suffix (the plain file wins if both exist).

    Args:
      directory: Folder containing the four files.

    Returns:
      ``((x_train, y_train), (x_test, y_test))`` where images are float32 of
      shape ``(N, rows, cols)`` scaled to ``[0, 1]`` (flatten them with
      ``jdense.Flatten`` or ``x.reshape(len(x), -1)``) and labels are int32.

    Raises:
      FileNotFoundError: If the directory or one of the files is missing.
      ValueError: If a file has the wrong magic number, is truncated or
        corrupted, or image and label counts differ.

    Example:
      >>> (x_train, y_train), (x_test, y_test) = mnist("~/data/mnist")
      >>> x_train.shape
      (60000, 28, 28)
    """
    root = Path(directory).expanduser()
    caller = f"mnist('{directory}')"
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise FileNotFoundError(
            f"{caller}: directory '{root}' {what}; {_mnist_expected()}. "
            "Download them (e.g. from a MNIST mirror) into one folder and pass that folder"
        )
    found = {name: _find_mnist_file(root, name) for name in MNIST_FILES}
    missing = [name for name, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"{caller}: missing {', '.join(missing)} in '{root}'; {_mnist_expected()}. Put the missing files in that folder"
        )

    def load(name: str, magic: int, kind: str) -> NDArray[Any]:
        path = found[name]
        assert path is not None
        return _load_idx(path, caller, magic, kind)

    def split(prefix: str) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
        images = load(f"{prefix}-images-idx3-ubyte", _IMAGES_MAGIC, "MNIST images: unsigned bytes, 3 dimensions")
        labels = load(f"{prefix}-labels-idx1-ubyte", _LABELS_MAGIC, "MNIST labels: unsigned bytes, 1 dimension")
        if images.size == 0:
            raise ValueError(
                f"{caller}: '{found[f'{prefix}-images-idx3-ubyte']}' holds no images (shape "
                f"{' x '.join(map(str, images.shape))}); the file is empty or corrupted, re-download it"
            )
        if labels.size and labels.max() > 9:
            bad = np.flatnonzero(labels > 9)
            raise ValueError(
                f"{caller}: '{found[f'{prefix}-labels-idx1-ubyte']}' holds {bad.size} label(s) outside 0..9 "
                f"(first {int(labels[bad[0]])} at index {int(bad[0])}); MNIST labels are digits 0..9, "
                "check it is an MNIST-format labels file (not corrupted), or re-download it"
            )
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{caller}: '{found[f'{prefix}-images-idx3-ubyte']}' holds {images.shape[0]} images but "
                f"'{found[f'{prefix}-labels-idx1-ubyte']}' holds {labels.shape[0]} labels; the counts must be "
                "equal, check the files belong together"
            )
        x = images.astype(np.float32) / np.float32(255.0)
        return x, labels.astype(np.int32)

    return split("train"), split("t10k")


# ---------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------


def _encoding_name(encoding: str) -> str:
    name = codecs.lookup(encoding).name
    return "UTF-8" if name in ("utf-8", "utf-8-sig") else encoding


def _parse_float(cell: str) -> float:
    """Parse a numeric cell; an empty cell is a missing value (NaN)."""
    text = cell.strip()
    if not text:
        return float("nan")
    return float(text)


def _csv_arguments(path: PathLike, target, task, delimiter, encoding) -> tuple[Path, str]:
    """:func:`csv`'s arguments checked: ``(the file, how errors name the call)``."""
    file = Path(path).expanduser()
    source = f"csv('{path}')"
    if task not in ("classification", "regression"):
        raise ValueError(f'{source}: task must be "classification" or "regression", got {task!r}')
    if not isinstance(target, str):
        raise TypeError(
            f'{source}: target must be the name of a column (str), got {type(target).__name__} {target!r}; e.g. target="label"'
        )
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f'{source}: delimiter must be a single character, got {delimiter!r}; e.g. delimiter=";"')
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(f"{source}: unknown encoding {encoding!r}; pass e.g. encoding='utf-8' or 'latin-1'") from None
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise FileNotFoundError(f"{source}: '{file}' {what}; check the path to your CSV file")
    return file, source


def _read_table(file: Path, source: str, target: str, delimiter: str, encoding: str):
    """The header, the non-blank data rows and their line numbers of a CSV file, checked (see :func:`csv`)."""
    data = file.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        start = err.start + len(data) - len(err.object)  # the decoder may have dropped a byte-order mark
        line = data.count(b"\n", 0, start) + 1
        raise ValueError(
            f"{source}: '{file}' is not {_encoding_name(encoding)} text: byte 0x{data[start]:02X} on line {line} (offset "
            f"{start}) cannot be decoded; pass the file's encoding, e.g. encoding='latin-1' or "
            "encoding='cp1252', or re-save the file as UTF-8"
        ) from None

    reader = _csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    for row in reader:
        if not row or all(not cell.strip() for cell in row):
            continue  # blank line
        if header is None:
            header = [cell.strip() for cell in row]
            continue
        rows.append(row)
        lines.append(reader.line_num)

    if header is None:
        raise ValueError(f"{source}: the file is empty; expected a header row naming the columns, then data rows")
    unnamed = [j + 1 for j, name in enumerate(header) if not name]
    if unnamed:
        raise ValueError(
            f"{source}: header column(s) {unnamed} (1-based) have no name, got header {header}; name every column "
            "(a trailing delimiter at the end of each line also creates an empty column: remove it)"
        )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ValueError(f"{source}: duplicate column names {duplicates} in the header; give every column a unique name")
    if target not in header:
        hint = ""
        if len(header) == 1:
            hint = f" (only one column was found: if the file is not separated by {delimiter!r}, pass delimiter=...)"
        raise ValueError(f"{source}: target column {target!r} not found; the columns are {header}{hint}")
    if not rows:
        raise ValueError(f"{source}: the file has a header but no data rows; add at least one row")
    if len(header) == 1:
        raise ValueError(f"{source}: the only column is the target {target!r}; there are no feature columns")
    return header, rows, lines


def csv(
    path: PathLike,
    target: str,
    *,
    task: Literal["classification", "regression"] = "classification",
    delimiter: str = ",",
    encoding: str = "utf-8-sig",
) -> tuple[NDArray[np.float32], NDArray[Any]]:
    """Load a numeric table with a header row from a CSV file.

    Every column except ``target`` is a feature and must be numeric. Empty
    cells count as missing values and, like ``nan``/``inf``, make the load
    fail with the number of affected rows so you can clean the file first.

    Args:
      path: CSV file (UTF-8, optional BOM) whose first row names the columns.
      target: Name of the target column.
      task: ``"classification"`` (integer class labels) or
        ``"regression"`` (real-valued target).
      delimiter: One-character field separator, e.g. ``";"`` or ``"\\t"``.
      encoding: The file's text encoding; the default reads UTF-8 with or
        without a byte-order mark. E.g. ``"latin-1"`` or ``"cp1252"`` for
        files saved by older spreadsheet programs.

    Returns:
      ``(x, y)`` with ``x`` float32 of shape ``(num_rows, num_features)``
      (columns in file order) and ``y`` int32 for classification or float32
      for regression, of shape ``(num_rows,)``.

    Raises:
      FileNotFoundError: If ``path`` does not exist.
      ValueError: If the file is not text in ``encoding``, the header or
        target column is missing, a row has the wrong number of fields, a
        feature cell is not numeric, features hold NaN/Inf/empty cells or
        values beyond float32's range, or the target does not fit ``task``.
      TypeError: If ``target`` is not a string.

    Example:
      >>> x, y = csv("iris.csv", target="species")
      >>> x, y = csv("houses.csv", target="price", task="regression")
    """
    file, source = _csv_arguments(path, target, task, delimiter, encoding)
    header, rows, lines = _read_table(file, source, target, delimiter, encoding)
    width = len(header)
    t_col = header.index(target)
    feature_cols = [j for j in range(width) if j != t_col]
    x = np.empty((len(rows), len(feature_cols)), dtype=np.float64)
    y_raw: list[str] = []
    for i, (row, line) in enumerate(zip(rows, lines)):
        if len(row) != width:
            raise ValueError(
                f"{source}: line {line} has {len(row)} fields but the header has {width} ({header}); "
                "fix that row (check for stray or missing delimiters or unquoted text containing one)"
            )
        for k, j in enumerate(feature_cols):
            try:
                x[i, k] = _parse_float(row[j])
            except ValueError:
                raise ValueError(
                    f"{source}: row {i + 1} (line {line}), column {header[j]!r} has non-numeric value {row[j]!r}; "
                    "feature columns must be numeric: encode categories as numbers (e.g. one-hot) or drop the column"
                ) from None
        y_raw.append(row[t_col].strip())

    _check_finite_features(x, source, locate=lambda i: f"line {lines[i]}", note="empty cells count as NaN; ")
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    over = np.argwhere(np.isinf(x32))
    if over.size:
        i, k = over[0]
        raise ValueError(
            f"{source}: row {i + 1} (line {lines[i]}), column {header[feature_cols[k]]!r} has value "
            f"{rows[i][feature_cols[k]].strip()!r}, beyond float32's range (±3.4e38) ({len(over)} such value(s)); "
            "rescale that column (e.g. change its unit) or drop it"
        )

    if task == "regression":
        y = np.empty(len(rows), dtype=np.float64)
        for i, cell in enumerate(y_raw):
            try:
                y[i] = float(cell) if cell else float("nan")
            except ValueError:
                raise ValueError(
                    f"{source}: target column {target!r} has non-numeric value {cell!r} at line {lines[i]}; "
                    'a regression target must be numeric (use task="classification" with integer labels for classes)'
                ) from None
        bad_y = ~np.isfinite(y)
        if bad_y.any():
            count = int(bad_y.sum())
            rows_txt = "1 row has" if count == 1 else f"{count} rows have"
            raise ValueError(
                f"{source}: {rows_txt} NaN, Inf or an empty value in target column {target!r} "
                f"(first at line {lines[int(np.flatnonzero(bad_y)[0])]}); clean or drop them first"
            )
        with np.errstate(over="ignore"):
            y32 = y.astype(np.float32)
        if np.isinf(y32).any():
            i = int(np.flatnonzero(np.isinf(y32))[0])
            raise ValueError(
                f"{source}: row {i + 1} (line {lines[i]}), target column {target!r} has value {y_raw[i]!r}, beyond "
                "float32's range (±3.4e38); rescale the target (e.g. change its unit)"
            )
        return x32, y32

    labels = np.empty(len(rows), dtype=np.int64)
    for i, cell in enumerate(y_raw):
        try:
            value = float(cell)
            ok = value.is_integer() and abs(value) < 2**31
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f'{source}: target column {target!r} must hold integer class labels for task="classification", '
                f'but line {lines[i]} has {cell!r}; pass task="regression" for a continuous target, or encode '
                "the classes as integers 0..K-1"
            )
        labels[i] = int(value)
    return x32, labels.astype(np.int32)
