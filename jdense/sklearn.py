"""scikit-learn estimators over jdense, and a grid search that trains as populations.

:class:`DenseClassifier` and :class:`DenseRegressor` follow scikit-learn's conventions
(``BaseEstimator``, ``validate_data``, ``check_is_fitted``, ``LabelEncoder``), so they work in
``Pipeline``, ``GridSearchCV``, ``cross_val_score`` and ``clone``. Each fit is one
:func:`jdense.fit`; learning rate, L2/L1 strengths, dropout rate and seed are values of the
compiled program, so a grid over them compiles one training program per structure.

:class:`PopulationSearchCV` has ``GridSearchCV``'s interface but trains every candidate x fold
of one structure in a single :func:`jdense.fit_population`: each member's fold is a row of
per-member sample weights (0 on the rows it must not see).

Needs scikit-learn: ``pip install "jdense[sklearn]"``.

Example:
  >>> from jdense.sklearn import DenseClassifier, PopulationSearchCV
  >>> search = PopulationSearchCV(DenseClassifier(epochs=20), {"learning_rate": [1e-3, 1e-2]}, cv=3)
  >>> search.fit(x, y).best_params_
"""

from __future__ import annotations

import dataclasses
import numbers
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, RegressorMixin, clone, is_classifier
    from sklearn.metrics import check_scoring
    from sklearn.model_selection import ParameterGrid, check_cv, train_test_split
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as err:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(f'jdense.sklearn needs scikit-learn >= 1.6: pip install "jdense[sklearn]" ({err}).') from None

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import rankdata

from jdense import _checks, optim
from jdense.callbacks import EarlyStopping
from jdense.layers import Dropout
from jdense.network import Sequential, mlp
from jdense.population import MemberDropout, fit_population
from jdense.train import fit, predict

VALUES = ("learning_rate", "lambda_", "l1", "dropout", "random_state")
"""Parameters that are values of a population's members; the others split a grid into populations."""


_BLOCK = 256


def _seeds(random_state, count: int = 3) -> list[int]:
    """Seeds for init, the batch-order key and the validation split, drawn from ``random_state``."""
    return [int(s) for s in check_random_state(random_state).randint(0, 2**31 - 1, size=count)]


def _validation_rows(rows: np.ndarray, y: np.ndarray | None, fraction: float, seed: int):
    """``rows`` split into (training, validation) rows as the estimator does (stratified on ``y`` when it can)."""
    try:
        return train_test_split(rows, test_size=fraction, random_state=seed, stratify=y)
    except ValueError:  # a class too small to stratify, or too few rows: split without stratification
        if y is None:
            raise
        return train_test_split(rows, test_size=fraction, random_state=seed)


def _predict(net: Sequential, params, X: np.ndarray, population: bool = False) -> np.ndarray:
    """Outputs in float64, computed in blocks of ``_BLOCK`` rows (zero-padded).

    Every row goes through the same ``(_BLOCK, features)`` matmuls whatever ``len(X)``, so a
    row's prediction does not depend on the other rows (scikit-learn checks subset and order
    invariance bit for bit), and all sizes up to a multiple of ``_BLOCK`` share a program.
    """
    n = X.shape[0]
    padded = np.zeros((-(-n // _BLOCK) * _BLOCK, *X.shape[1:]), np.float32)
    padded[:n] = X
    out = predict(net, params, padded, batch_size=_BLOCK, population=population)
    return np.asarray(out, np.float64)[..., :n, :]


class _DenseEstimator(BaseEstimator):
    """What the classifier and the regressor share; ``__init__`` only stores its arguments."""

    _loss = "mse"

    def __init__(self, hidden=(64,), activation="relu", optimizer="adam", learning_rate=1e-3, lambda_=0.0, l1=0.0,
                 dropout=0.0, batch_size=32, epochs=200, early_stopping=False, validation_fraction=0.1, patience=10,
                 random_state=None, verbose=0):
        self.hidden = hidden
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.lambda_ = lambda_
        self.l1 = l1
        self.dropout = dropout
        self.batch_size = batch_size
        self.epochs = epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose

    # -- checks ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        """Every parameter checked before anything trains; the error names it and the fix."""
        name = type(self).__name__
        hidden = self.hidden
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if isinstance(hidden, str) or not isinstance(hidden, Sequence):
            raise TypeError(f"{name}: hidden must be a tuple of layer widths such as (64,) or (128, 64), got {self.hidden!r}.")
        for width in hidden:
            _checks.positive_int(f"{name}: every entry of hidden", width)
        _checks.choice(f"{name} optimizer", self.optimizer, optim.OPTIMIZERS)
        _checks.real(f"{name}: learning_rate", self.learning_rate, "a finite number > 0")
        if not self.learning_rate > 0:
            raise ValueError(f"{name}: learning_rate must be > 0, got {self.learning_rate}; e.g. 1e-3.")
        for param in ("lambda_", "l1"):
            _checks.non_negative_float(f"{name}: {param}", getattr(self, param))
        _checks.real(f"{name}: dropout", self.dropout, "a rate in [0, 1)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{name}: dropout must be a rate in [0, 1), got {self.dropout}; e.g. 0.2, or 0.0 for none.")
        _checks.positive_int(f"{name}: batch_size", self.batch_size)
        _checks.positive_int(f"{name}: epochs", self.epochs)
        _checks.positive_int(f"{name}: patience", self.patience)
        _checks.boolean(f"{name}: early_stopping", self.early_stopping)
        _checks.real(f"{name}: validation_fraction", self.validation_fraction, "a fraction in (0, 1)")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"{name}: validation_fraction must be in (0, 1), got {self.validation_fraction}; e.g. 0.1.")
        if isinstance(self.verbose, bool) or not isinstance(self.verbose, numbers.Integral) or self.verbose < 0:
            raise ValueError(f"{name}: verbose must be an int >= 0 (0 silent, 1 a progress bar), got {self.verbose!r}.")
        check_random_state(self.random_state)  # its own clear error for a bad seed

    def _hidden(self) -> tuple[int, ...]:
        return (self.hidden,) if isinstance(self.hidden, numbers.Integral) else tuple(int(h) for h in self.hidden)

    def _network(self, n_in: int, n_out: int, dropout: float, l1: float) -> Sequential:
        """The trained network: Dense layers with every layer's L2/L1 (values of the optimizer) and Dropout."""
        return mlp([n_in, *self._hidden(), n_out], self.activation, lambda_=float(self.lambda_), l1=float(l1),
                   dropout=float(dropout))

    # -- subclasses: targets ----------------------------------------------------------------
    def _targets(self, y, reset: bool):  # (encoded y, output width)
        raise NotImplementedError

    def _stratify(self, y):
        return None

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Train a fresh network on ``X, y`` (one :func:`jdense.fit`) and return ``self``.

        Args:
          X: ``(n, features)`` numbers (a DataFrame sets ``feature_names_in_``).
          y: the targets: class labels of any type, or numbers (``(n,)`` or ``(n, outputs)``).
          sample_weight: optional ``(n,)`` weights of the loss.

        Returns:
          ``self``, with ``net_``, ``params_``, ``history_``, ``n_iter_`` and ``n_features_in_``.
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32, **self._validate_kwargs)
        y, width = self._targets(y, reset=True)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float32)
            if sample_weight.shape != (X.shape[0],):
                raise ValueError(f"sample_weight must have one weight per sample, shape ({X.shape[0]},), "
                                 f"got {sample_weight.shape}.")
            if not sample_weight.any():
                raise ValueError("sample_weight is zero for every sample: nothing would be learned; give some rows a weight > 0.")
        init_seed, key_seed, split_seed = _seeds(self.random_state)
        rows = np.arange(X.shape[0])
        validation = None
        if self.early_stopping:
            rows, val_rows = _validation_rows(rows, self._stratify(y), self.validation_fraction, split_seed)
            sw_val = None if sample_weight is None else sample_weight[val_rows]
            validation = (X[val_rows], y[val_rows]) + (() if sw_val is None else (sw_val,))
        x_fit, y_fit = X[rows], y[rows]
        sw_fit = None if sample_weight is None else sample_weight[rows]
        batch = self._batch(len(rows))

        net = self._network(X.shape[1], width, self.dropout, self.l1)
        # Dropout's rate is a value of the network state (as in a population), not a constant of the program.
        train_net = Sequential([MemberDropout() if type(layer) is Dropout else layer for layer in net.layers])
        state = {name: {"keep": np.float32(1.0 - self.dropout)} if isinstance(layer, MemberDropout) else {}
                 for name, layer in zip(train_net.names, train_net.layers)}
        state = {k: v for k, v in state.items() if v} or None
        callbacks = [EarlyStopping("val_loss", patience=int(self.patience), restore_best=True)] if validation else []
        result = fit(train_net, net.init(jax.random.key(init_seed)), x_fit, y_fit, loss=self._loss,
                     optimizer=optim.optimizer(net, self.optimizer, float(self.learning_rate)), batch_size=batch,
                     epochs=int(self.epochs), key=jax.random.key(key_seed), state=state, sample_weight=sw_fit,
                     validation_data=validation, callbacks=callbacks, verbose=int(self.verbose), metrics=[])
        self.net_, self.params_ = net, result.params
        self.history_, self.n_iter_ = result.history, int(result.epochs)
        return self

    def _batch(self, n: int) -> int:
        if self.batch_size > n:
            warnings.warn(f"batch_size={self.batch_size} is larger than the {n} training rows; clipped to {n}.",
                          UserWarning, stacklevel=3)
        return min(int(self.batch_size), n)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "params_")  # not check_is_fitted's default: the parameter lambda_ ends in "_" too

    def _outputs(self, X) -> np.ndarray:
        """The network's outputs for ``X`` (precomputed ones when PopulationSearchCV scores this member)."""
        check_is_fitted(self)
        cached = getattr(self, "_cached_outputs", None)
        if cached is not None and cached[0] is X:
            return cached[1]
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return _predict(self.net_, self.params_, X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class DenseClassifier(ClassifierMixin, _DenseEstimator):
    """A dense network classifier with scikit-learn's interface (softmax cross-entropy, Adam by default).

    Args:
      hidden: widths of the hidden layers, e.g. ``(64,)`` or ``(128, 64)``; ``()`` is
        multinomial logistic regression.
      activation: the hidden layers' activation (a :mod:`jdense.activations` name).
      optimizer: ``"adam"``, ``"sgd"``, ``"momentum"``, ``"rmsprop"`` or ``"adamw"``.
      learning_rate: the optimizer's learning rate.
      lambda_, l1: L2 and L1 strengths on every layer's weights.
      dropout: the rate of a Dropout after every hidden layer (0: none).
      batch_size, epochs: minibatch size (clipped to the training rows) and epochs.
      early_stopping: hold out ``validation_fraction`` of the rows (stratified) and stop
        when their loss has not improved for ``patience`` epochs, keeping the best epoch.
      random_state: an int, a ``RandomState`` or None (a different network each fit).
      verbose: 1 shows a progress bar.

    Attributes:
      classes_, n_features_in_, feature_names_in_ (for a DataFrame), net_, params_,
      history_ (``jdense.fit``'s history), n_iter_ (epochs run).

    Example:
      >>> clf = DenseClassifier(hidden=(32,), epochs=50, random_state=0).fit(x, y)
      >>> clf.predict_proba(x[:2]).shape
      (2, 10)
    """

    _loss = "cross_entropy"
    _validate_kwargs: dict = {}

    def _targets(self, y, reset: bool):
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if reset:
            self._encoder = LabelEncoder().fit(y)
            self.classes_ = self._encoder.classes_
            if len(self.classes_) < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 classes in y, got 1 class: {self.classes_[0]!r}.")
        return self._encoder.transform(y).astype(np.int32), len(self.classes_)

    def _stratify(self, y):
        return y

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, classes)``, columns in ``classes_`` order (softmax of the outputs)."""
        return np.asarray(jax.nn.softmax(jnp.asarray(self._outputs(X)), axis=-1), np.float64)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row, as a label of ``classes_``."""
        outputs = self._outputs(X)  # first: NotFittedError before fit
        return self.classes_[np.argmax(outputs, axis=-1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


class DenseRegressor(RegressorMixin, _DenseEstimator):
    """A dense network regressor with scikit-learn's interface (mean squared error; multi-output).

    Takes the parameters of :class:`DenseClassifier`. ``predict`` returns ``(n,)`` for a
    1-D ``y`` and ``(n, outputs)`` for a 2-D one. Targets are not scaled: put large ones
    through ``sklearn.compose.TransformedTargetRegressor`` with a ``StandardScaler``.

    Example:
      >>> reg = DenseRegressor(hidden=(32,), epochs=100, learning_rate=1e-2).fit(x, y)
      >>> reg.predict(x[:3]).shape
      (3,)
    """

    _validate_kwargs = {"multi_output": True, "y_numeric": True}

    def _targets(self, y, reset: bool):
        y = np.asarray(y, np.float32)
        if reset:
            self._one_d = y.ndim == 1
        y2 = y.reshape(-1, 1) if y.ndim == 1 else y
        return y2, y2.shape[1]

    def predict(self, X) -> np.ndarray:
        """The predicted targets: ``(n,)``, or ``(n, outputs)`` when ``y`` was 2-D."""
        out = self._outputs(X)
        return out[:, 0] if self._one_d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
