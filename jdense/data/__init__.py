"""Data utilities for jdense: loaders and preprocessing, in pure NumPy.

Loaders return NumPy arrays (features float32, labels int32); preprocessing
helpers fit their statistics on the training split only.

Example:
    >>> from jdense.data import digits, standardize, train_val_test_split
    >>> x, y = digits()
    >>> (xtr, ytr), (xva, yva), (xte, yte) = train_val_test_split(0, x, y, stratify=True)
    >>> xtr, xva, xte = standardize(xtr, xva, xte)
"""

from .datasets import MNIST_FILES, csv, digits, mnist, read_idx, write_idx
from .preprocessing import (
    MinMaxScaler,
    Standardizer,
    min_max_scale,
    one_hot,
    standardize,
    train_val_test_split,
)

__all__ = [
    "MNIST_FILES",
    "MinMaxScaler",
    "Standardizer",
    "csv",
    "digits",
    "min_max_scale",
    "mnist",
    "one_hot",
    "read_idx",
    "standardize",
    "train_val_test_split",
    "write_idx",
]
