"""Tests for jdense.data: preprocessing helpers and dataset loaders."""

from __future__ import annotations

import gzip
import json
import re
import sys

import numpy as np
import pytest

from jdense.data import (
    MNIST_FILES,
    MinMaxScaler,
    Standardizer,
    csv,
    digits,
    min_max_scale,
    mnist,
    one_hot,
    read_idx,
    standardize,
    train_val_test_split,
    write_idx,
)

RTOL = 1e-5
ATOL = 1e-6


@pytest.fixture
def splits():
    rng = np.random.default_rng(0)
    x_train = rng.normal(3.0, 2.0, size=(50, 4)).astype(np.float32)
    x_train[:, 2] = 7.0  # constant feature
    x_val = rng.normal(3.0, 2.0, size=(10, 4)).astype(np.float32)
    x_test = rng.normal(3.0, 2.0, size=(20, 4)).astype(np.float32)
    return x_train, x_val, x_test


# ---------------------------------------------------------------------------
# standardize / min_max_scale
# ---------------------------------------------------------------------------


def test_standardize_matches_numpy_and_uses_train_statistics(splits):
    x_train, x_val, x_test = splits
    mean = x_train.astype(np.float64).mean(axis=0)
    std = x_train.astype(np.float64).std(axis=0)
    std[2] = 1.0  # constant feature: only centred
    out = standardize(x_train, x_val, x_test)
    assert isinstance(out, tuple) and len(out) == 3
    for got, raw in zip(out, splits):
        assert got.dtype == np.float32 and got.shape == raw.shape
        np.testing.assert_allclose(got, (raw - mean) / std, rtol=RTOL, atol=ATOL)
    tr, va, _ = out
    np.testing.assert_allclose(tr.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(tr.std(axis=0)[[0, 1, 3]], 1.0, rtol=1e-5)
    # The validation split is not re-fitted: its own mean is not zero.
    assert not np.allclose(va.mean(axis=0)[[0, 1, 3]], 0.0, atol=1e-3)


def test_standardize_constant_feature_has_no_nan(splits):
    x_train, x_val, _ = splits
    tr, va = standardize(x_train, x_val)
    assert np.isfinite(tr).all() and np.isfinite(va).all()
    np.testing.assert_array_equal(tr[:, 2], 0.0)
    np.testing.assert_allclose(va[:, 2], x_val[:, 2] - 7.0, rtol=RTOL, atol=ATOL)
    (only,) = standardize(np.ones((3, 2)))
    np.testing.assert_array_equal(only, 0.0)


def test_standardizer_roundtrip_and_frozen(splits):
    x_train, x_val, _ = splits
    s = Standardizer.fit(x_train)
    restored = Standardizer.from_dict(json.loads(json.dumps(s.to_dict())))
    np.testing.assert_array_equal(restored.mean, s.mean)
    np.testing.assert_array_equal(restored.std, s.std)
    np.testing.assert_allclose(restored.transform(x_val), standardize(x_train, x_val)[1], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(s.inverse_transform(s.transform(x_val)), x_val, rtol=RTOL, atol=1e-5)
    with pytest.raises(AttributeError):
        s.mean = np.zeros(4)  # type: ignore[misc]
    with pytest.raises(ValueError):
        s.mean[0] = 1.0  # read-only statistics
    with pytest.raises(ValueError, match="per-sample shape"):
        s.transform(np.zeros((2, 3)))


def test_standardize_rejects_nan_in_train():
    x = np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, np.inf]])
    with pytest.raises(ValueError, match="2 rows have NaN or Inf"):
        standardize(x)


def test_min_max_scale_matches_numpy(splits):
    x_train, x_val, x_test = splits
    lo, hi = x_train.min(axis=0).astype(np.float64), x_train.max(axis=0).astype(np.float64)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = min_max_scale(x_train, x_val, x_test, feature_range=(-1.0, 1.0))
    for got, raw in zip(out, splits):
        np.testing.assert_allclose(got, -1.0 + (raw - lo) / span * 2.0, rtol=RTOL, atol=ATOL)
    tr = out[0]
    np.testing.assert_allclose(tr.min(axis=0)[[0, 1, 3]], -1.0, atol=ATOL)
    np.testing.assert_allclose(tr.max(axis=0)[[0, 1, 3]], 1.0, atol=ATOL)
    assert np.isfinite(np.concatenate(out)).all()
    np.testing.assert_array_equal(tr[:, 2], -1.0)  # constant feature -> low end


def test_min_max_default_range_and_scaler_dict():
    x = np.array([[0.0, 10.0], [4.0, 20.0]])
    (got,) = min_max_scale(x)
    np.testing.assert_allclose(got, [[0.0, 0.0], [1.0, 1.0]])
    m = MinMaxScaler.fit(x, feature_range=(2.0, 4.0))
    again = MinMaxScaler.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_allclose(again.transform([[2.0, 15.0]]), [[3.0, 3.0]])
    with pytest.raises(ValueError, match="feature_range"):
        min_max_scale(x, feature_range=(1.0, 1.0))


def test_integer_input_becomes_float32():
    (got,) = standardize(np.array([[1, 2], [3, 4]]))
    assert got.dtype == np.float32
    (got64,) = standardize(np.array([[1.0, 2.0], [3.0, 5.0]]))
    assert got64.dtype == np.float64


# ---------------------------------------------------------------------------
# one_hot
# ---------------------------------------------------------------------------


def test_one_hot():
    got = one_hot(np.array([0, 2, 1, 2]))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.eye(3, dtype=np.float32)[[0, 2, 1, 2]])
    assert one_hot([1, 0], num_classes=5).shape == (2, 5)
    assert one_hot(np.array([[0, 1], [1, 0]])).shape == (2, 2, 2)
    np.testing.assert_array_equal(one_hot(np.array([1.0, 0.0])), [[0, 1], [1, 0]])


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "pattern"),
    [
        ([0, 3], {"num_classes": 3}, ValueError, r"\[0, 3\).*e\.g\. 3"),
        ([-1, 0], {}, ValueError, "out-of-range"),
        ([0.5, 1.0], {}, ValueError, "non-integral value 0.5"),
        (["a", "b"], {}, TypeError, "integer class indices"),
        ([], {}, ValueError, "num_classes"),
        ([0], {"num_classes": 0}, ValueError, "num_classes must be >= 1"),
    ],
)
def test_one_hot_validation(labels, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        one_hot(labels, **kwargs)


# ---------------------------------------------------------------------------
# train_val_test_split
# ---------------------------------------------------------------------------


def _ids(n=100):
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(n)
    return x, y


def test_split_sizes_disjoint_and_aligned():
    x, y = _ids(100)
    (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(0, x, y, val=0.1, test=0.2)
    assert (len(xtr), len(xva), len(xte)) == (70, 10, 20)
    ids = np.concatenate([ytr, yva, yte])
    np.testing.assert_array_equal(np.sort(ids), np.arange(100))  # disjoint and complete
    for xs, ys in ((xtr, ytr), (xva, yva), (xte, yte)):
        np.testing.assert_array_equal(xs[:, 0], ys)  # rows stay paired
    assert not np.array_equal(ytr, np.sort(ytr))  # shuffled


def test_split_deterministic_per_seed():
    x, y = _ids(60)
    a = train_val_test_split(3, x, y)
    b = train_val_test_split(3, x, y)
    c = train_val_test_split(4, x, y)
    for (_, ya), (_, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][1], c[0][1])


def test_split_accepts_jax_keys():
    jax = pytest.importorskip("jax")
    x, y = _ids(50)
    a = train_val_test_split(jax.random.key(1), x, y)
    b = train_val_test_split(jax.random.key(1), x, y)
    c = train_val_test_split(jax.random.PRNGKey(1), x, y)
    d = train_val_test_split(jax.random.key(2), x, y)
    np.testing.assert_array_equal(a[0][1], b[0][1])
    np.testing.assert_array_equal(a[0][1], c[0][1])  # same key data, same split
    assert not np.array_equal(a[0][1], d[0][1])
    with pytest.raises(ValueError, match="single JAX key"):
        train_val_test_split(jax.random.split(jax.random.key(0), 3), x, y)


def test_split_stratify_keeps_proportions():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    x = np.arange(len(y), dtype=np.float32)[:, None]
    splits = train_val_test_split(7, x, y, val=0.1, test=0.2, stratify=True)
    sizes = [len(ys) for _, ys in splits]
    assert sizes == [700, 100, 200]
    for (_, ys), frac in zip(splits, (0.7, 0.1, 0.2)):
        counts = np.bincount(ys, minlength=3)
        np.testing.assert_allclose(counts, frac * np.array([500, 300, 200]), atol=1.0)
    ids = np.concatenate([xs[:, 0] for xs, _ in splits])
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(y)))
    # One-hot targets stratify by their argmax.
    (_, yo), _, _ = train_val_test_split(7, x, np.eye(3)[y], stratify=True)
    np.testing.assert_allclose(yo.sum(axis=0), 0.7 * np.array([500, 300, 200]), atol=1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"val": 1.0}, ValueError, r"val must be a fraction in \[0, 1\)"),
        ({"test": -0.1}, ValueError, "test must be a fraction"),
        ({"val": 0.5, "test": 0.5}, ValueError, "val \\+ test must be < 1"),
        ({"val": "0.1"}, TypeError, "val must be a fraction"),
    ],
)
def test_split_validates_fractions(kwargs, error, pattern):
    x, y = _ids(10)
    with pytest.raises(error, match=pattern):
        train_val_test_split(0, x, y, **kwargs)


def test_split_validates_inputs():
    x, y = _ids(10)
    with pytest.raises(ValueError, match="same number of samples"):
        train_val_test_split(0, x, y[:9])
    with pytest.raises(TypeError, match="int seed or a JAX PRNG key"):
        train_val_test_split("seed", x, y)
    with pytest.raises(TypeError, match="int seed or a JAX PRNG key"):
        train_val_test_split(True, x, y)


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


def test_digits_shape_dtype_range():
    pytest.importorskip("sklearn")
    x, y = digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.unique(y), np.arange(10))


def test_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'digits\(\) needs scikit-learn: pip install "jdense\[examples\]"'):
        digits()


# ---------------------------------------------------------------------------
# IDX / mnist
# ---------------------------------------------------------------------------


def _write_mnist(directory, suffix="", n_train=5, n_test=3, rows=4, cols=3):
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 0, 0] = 255
    for name, arr in arrays.items():
        write_idx(directory / (name + suffix), arr)
    return arrays


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_mnist_roundtrip(tmp_path, suffix):
    arrays = _write_mnist(tmp_path, suffix)
    (xtr, ytr), (xte, yte) = mnist(tmp_path)
    assert xtr.shape == (5, 4, 3) and xtr.dtype == np.float32
    assert xte.shape == (3, 4, 3) and yte.dtype == np.int32 and ytr.dtype == np.int32
    np.testing.assert_allclose(xtr, arrays["train-images-idx3-ubyte"] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(xte, arrays["t10k-images-idx3-ubyte"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ytr, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(yte, arrays["t10k-labels-idx1-ubyte"])
    assert xtr.min() >= 0.0 and xtr.max() == 1.0
    if suffix:
        with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "rb") as f:
            assert f.read(4) == b"\x00\x00\x08\x01"


def test_write_read_idx_header_and_other_dtypes(tmp_path):
    labels = np.array([7, 2, 1], dtype=np.uint8)
    write_idx(tmp_path / "l", labels)
    raw = (tmp_path / "l").read_bytes()
    assert raw == b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + labels.tobytes()
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    write_idx(tmp_path / "f.gz", floats)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.gz"), floats)
    with pytest.raises(TypeError, match="astype"):
        write_idx(tmp_path / "bad", np.arange(3, dtype=np.int64))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_mnist_truncated_file(tmp_path, suffix):
    _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    data = path.read_bytes()[:-7]
    path.unlink()
    target = tmp_path / ("train-images-idx3-ubyte" + suffix)
    target.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(ValueError, match="truncated") as info:
        mnist(tmp_path)
    assert str(target) in str(info.value)


def test_mnist_truncated_gzip_stream(tmp_path):
    _write_mnist(tmp_path, ".gz")
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz.*truncated"):
        mnist(tmp_path)


def test_mnist_wrong_magic(tmp_path):
    arrays = _write_mnist(tmp_path)
    # A labels file where images are expected (swapped files).
    write_idx(tmp_path / "t10k-images-idx3-ubyte", arrays["t10k-labels-idx1-ubyte"])
    with pytest.raises(ValueError, match="magic number 0x00000801, expected 0x00000803") as info:
        mnist(tmp_path)
    assert "t10k-images-idx3-ubyte" in str(info.value)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match="expected 0x00000801"):
        mnist(tmp_path)


def test_mnist_count_mismatch(tmp_path):
    _write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="5 images but .* 4 labels"):
        mnist(tmp_path)


@pytest.mark.parametrize("dims", [(2**31, 2**31, 4), (2**32 - 1,) * 3], ids=["wraps to 0", "wraps"])
def test_idx_header_sizes_that_overflow_name_the_file(tmp_path, dims):
    """Sizes whose product overflows int64 (2**64 wrapped to 0 used to reach a raw reshape error)."""
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in dims))
    expected = f"{dims[0] * dims[1] * dims[2]} bytes of data"
    with pytest.raises(ValueError, match=rf"file '{re.escape(str(path))}' is truncated: .* \({expected}\) but only 0 bytes"):
        read_idx(path)


def test_mnist_labels_outside_0_to_9_name_the_file(tmp_path):
    arrays = _write_mnist(tmp_path)
    labels = arrays["t10k-labels-idx1-ubyte"].copy()
    labels[[1, 2]] = [10, 255]
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    with pytest.raises(ValueError, match=rf"'{re.escape(str(path))}' holds 2 label\(s\) outside 0..9 \(first 10 at index 1\)"):
        mnist(tmp_path)


def test_mnist_without_images_names_the_file(tmp_path):
    _write_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((0, 4, 3), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(0, np.uint8))
    path = tmp_path / "train-images-idx3-ubyte"
    with pytest.raises(ValueError, match=rf"'{re.escape(str(path))}' holds no images \(shape 0 x 4 x 3\)"):
        mnist(tmp_path)


def test_mnist_missing_directory_and_file(tmp_path):
    missing_dir = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as info:
        mnist(missing_dir)
    msg = str(info.value)
    assert str(missing_dir) in msg and ".gz" in msg
    assert all(name in msg for name in MNIST_FILES)

    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte") as info:
        mnist(tmp_path)
    msg = str(info.value)
    assert all(name in msg for name in MNIST_FILES) and ".gz" in msg


# ---------------------------------------------------------------------------
# csv
# ---------------------------------------------------------------------------


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_classification_roundtrip(tmp_path):
    x = np.array([[1.5, -2.0, 3.0], [0.0, 4.25, -1.0], [2.0, 2.0, 2.0]], dtype=np.float32)
    y = np.array([1, 0, 2])
    lines = ["a,label,b,c"] + [f"{r[0]},{t},{r[1]},{r[2]}" for r, t in zip(x, y)]
    path = _write(tmp_path / "data.csv", "\n".join(lines) + "\n\n")
    gx, gy = csv(path, "label")
    assert gx.dtype == np.float32 and gy.dtype == np.int32
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)


def test_csv_regression_and_delimiter(tmp_path):
    path = _write(tmp_path / "r.csv", "x1;price;x2\n1;2.5;3\n4;-0.5;6\n")
    gx, gy = csv(path, "price", task="regression", delimiter=";")
    assert gy.dtype == np.float32 and gx.dtype == np.float32
    np.testing.assert_allclose(gy, [2.5, -0.5])
    np.testing.assert_allclose(gx, [[1, 3], [4, 6]])


def test_csv_integral_float_labels_accepted(tmp_path):
    path = _write(tmp_path / "d.csv", "f,y\n0.1,1.0\n0.2,0\n")
    _, gy = csv(path, "y")
    np.testing.assert_array_equal(gy, [1, 0])


def test_csv_non_integral_label_refused(tmp_path):
    path = _write(tmp_path / "d.csv", "f,y\n0.1,1\n0.2,2.5\n")
    with pytest.raises(ValueError) as info:
        csv(path, "y")
    msg = str(info.value)
    assert "'y'" in msg and "'2.5'" in msg and 'task="regression"' in msg


def test_csv_nan_rows_counted(tmp_path):
    text = "a,b,y\n1,2,0\nnan,2,1\n3,inf,0\n4,,1\n5,6,1\n"
    path = _write(tmp_path / "data.csv", text)
    with pytest.raises(ValueError, match=r"3 rows have NaN or Inf in their features.*clean or drop them first"):
        csv(path, "y")


def test_csv_unknown_target_lists_columns(tmp_path):
    path = _write(tmp_path / "d.csv", "alpha,beta,gamma\n1,2,3\n")
    with pytest.raises(ValueError, match=r"'label' not found.*\['alpha', 'beta', 'gamma'\]"):
        csv(path, "label")


def test_csv_non_numeric_feature_names_row_and_column(tmp_path):
    path = _write(tmp_path / "d.csv", "size,color,y\n1,2,0\n3,red,1\n")
    with pytest.raises(ValueError, match=r"row 2 \(line 3\), column 'color' has non-numeric value 'red'"):
        csv(path, "y")


def test_csv_missing_file_and_bad_rows(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        csv(missing, "y")
    path = _write(tmp_path / "d.csv", "a,y\n1,0\n2,1,3\n")
    with pytest.raises(ValueError, match="line 3 has 3 fields but the header has 2"):
        csv(path, "y")
    with pytest.raises(ValueError, match=r"column\(s\) \[3\] \(1-based\) have no name"):
        csv(_write(tmp_path / "e.csv", "a,y,\n1,0,\n"), "y")
    with pytest.raises(ValueError, match="task must be"):
        csv(path, "y", task="ranking")  # type: ignore[arg-type]


def test_csv_in_another_encoding_names_the_file_and_the_fix(tmp_path):
    """Latin-1 bytes used to raise a raw UnicodeDecodeError without the file's name."""
    path = tmp_path / "latin.csv"
    path.write_bytes("größe,y\n1,0\n2,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"'{re.escape(str(path))}' is not UTF-8 text: byte 0xF6 on line 1 \(offset 2\).*"
                       r"encoding='latin-1'"):
        csv(path, "y")
    x, y = csv(path, "y", encoding="latin-1")
    np.testing.assert_array_equal(x, [[1.0], [2.0]])
    np.testing.assert_array_equal(y, [0, 1])
    bom = tmp_path / "bom.csv"  # the offset counts the byte-order mark the decoder drops
    bom.write_bytes(b"\xef\xbb\xbfa,y\n1,0\n\xe92,1\n")
    with pytest.raises(ValueError, match=r"byte 0xE9 on line 3 \(offset 11\)"):
        csv(bom, "y")
    with pytest.raises(ValueError, match="unknown encoding 'klingon'"):
        csv(path, "y", encoding="klingon")


@pytest.mark.parametrize("value", ["1e39", "-3.5e38"])
def test_csv_value_beyond_float32_names_file_column_and_row(tmp_path, value):
    """A value that becomes inf in float32 used to load silently as inf."""
    path = _write(tmp_path / "big.csv", f"a,b,y\n1,2,0\n3,{value},1\n")
    with pytest.raises(ValueError, match=rf"csv\('{re.escape(str(path))}'\): row 2 \(line 3\), column 'b' has value "
                       rf"'{value}', beyond float32's range"):
        csv(path, "y")
    path = _write(tmp_path / "target.csv", f"a,y\n1,2\n3,{value}\n")
    with pytest.raises(ValueError, match=r"row 2 \(line 3\), target column 'y' .* beyond float32's range"):
        csv(path, "y", task="regression")
    largest = float(np.finfo(np.float32).max)  # the largest float32 itself still loads
    x, _ = csv(_write(tmp_path / "max.csv", f"a,y\n{largest!r},0\n"), "y")
    assert x[0, 0] == np.finfo(np.float32).max
