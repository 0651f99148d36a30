"""scikit-learn estimators over jdense, and a grid search that trains as populations.

:class:`DenseClassifier` and :class:`DenseRegressor` follow scikit-learn's conventions
(``BaseEstimator``, ``validate_data``, ``check_is_fitted``, ``LabelEncoder``), so they work in
``Pipeline``, ``GridSearchCV``, ``cross_val_score`` and ``clone``. Each fit is one
:func:`jdense.fit`; learning rate, L2/L1 strengths, dropout rate and seed are values of the
compiled program, so a grid over them compiles one training program per structure (``hidden``,
``activation``, ``batch_size``, ``epochs``, ``optimizer``, ...). The trained network always holds
a dropout layer whose keep probability is a value (1 for ``dropout=0``) and an L1 term whose
strength is a value (0 for ``l1=0``): a grid from ``dropout=0`` to ``0.2`` or ``l1=0`` to ``1e-4``
compiles nothing new, at the cost of one random draw per hidden unit and step in a fit without dropout.

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
import numpy as np
import optax
from scipy.special import softmax
from scipy.stats import rankdata

from jdense import checks, optim
from jdense.callbacks import EarlyStopping
from jdense.layers import Dropout
from jdense.network import Sequential, mlp
from jdense.population import MemberDropout, fit_population
from jdense.train import fit, predict

VALUES = ("learning_rate", "lambda_", "l1", "dropout", "random_state")
"""Parameters that are values of a population's members; the others split a grid into populations."""


_BLOCK = 256
_PLACEHOLDER_RATE = 0.5  # makes mlp build its Dropout layers, whose rate then becomes a state value (0 included)
_PLACEHOLDER_L1 = 1.0  # builds the optimizer's L1 term, whose strength is then set (to 0 for l1=0)


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


@dataclasses.dataclass(frozen=True)
class _ValueDropout(MemberDropout):
    """:class:`jdense.population.MemberDropout` (the keep probability a state value) that skips its random draw
    when it keeps every unit (``dropout=0``): ``lax.cond`` runs one branch, so a fit without dropout pays no
    draw, and draws exactly MemberDropout's otherwise."""

    def apply_with_state(self, params, state, x, *, train=False, key=None, mask=None):
        if not train:
            return x, state
        draw = lambda x: super(_ValueDropout, self).apply_with_state(params, state, x, train=True, key=key)[0]
        return jax.lax.cond(state["keep"] < 1.0, draw, lambda x: x, x), state


def _rate_as_value(net: Sequential) -> Sequential:
    """``net`` with each Dropout's rate a value of the network state (as in a population), not a constant of
    the program: networks that differ only in their rates share the compiled programs."""
    return Sequential([_ValueDropout() if type(layer) is Dropout else layer for layer in net.layers])


def _predict(net: Sequential, params, X: np.ndarray, population: bool = False) -> np.ndarray:
    """Outputs in float64, computed in blocks of ``_BLOCK`` rows (zero-padded).

    Every row goes through the same ``(_BLOCK, features)`` matmuls whatever ``len(X)``, so a
    row's prediction does not depend on the other rows (scikit-learn checks subset and order
    invariance bit for bit), and all sizes up to a multiple of ``_BLOCK`` share a program.
    """
    n = X.shape[0]
    padded = np.zeros((-(-n // _BLOCK) * _BLOCK, *X.shape[1:]), np.float32)
    padded[:n] = X
    inference = Sequential([layer for layer in net.layers if not isinstance(layer, Dropout)])  # the identity there
    out = predict(inference, params, padded, batch_size=_BLOCK, population=population)
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
            checks.positive_int(f"{name}: every entry of hidden", width)
        checks.choice(f"{name} optimizer", self.optimizer, optim.OPTIMIZERS)
        checks.real(f"{name}: learning_rate", self.learning_rate, "a finite number > 0")
        if not self.learning_rate > 0:
            raise ValueError(f"{name}: learning_rate must be > 0, got {self.learning_rate}; e.g. 1e-3.")
        for param in ("lambda_", "l1"):
            checks.non_negative_float(f"{name}: {param}", getattr(self, param))
        checks.real(f"{name}: dropout", self.dropout, "a rate in [0, 1)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{name}: dropout must be a rate in [0, 1), got {self.dropout}; e.g. 0.2, or 0.0 for none.")
        checks.positive_int(f"{name}: batch_size", self.batch_size)
        checks.positive_int(f"{name}: epochs", self.epochs)
        checks.positive_int(f"{name}: patience", self.patience)
        checks.boolean(f"{name}: early_stopping", self.early_stopping)
        checks.real(f"{name}: validation_fraction", self.validation_fraction, "a fraction in (0, 1)")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"{name}: validation_fraction must be in (0, 1), got {self.validation_fraction}; e.g. 0.1.")
        if isinstance(self.verbose, bool) or not isinstance(self.verbose, numbers.Integral) or self.verbose < 0:
            raise ValueError(f"{name}: verbose must be an int >= 0 (0 silent, 1 a progress bar), got {self.verbose!r}.")
        check_random_state(self.random_state)  # its own clear error for a bad seed

    def _hidden(self) -> tuple[int, ...]:
        return (self.hidden,) if isinstance(self.hidden, numbers.Integral) else tuple(int(h) for h in self.hidden)

    def _network(self, n_in: int, n_out: int, dropout: float, l1: float) -> Sequential:
        """The network (``net_``): Dense layers with every layer's L2/L1 (values of the optimizer) and Dropout."""
        return mlp([n_in, *self._hidden(), n_out], self.activation, lambda_=float(self.lambda_), l1=float(l1),
                   dropout=float(dropout))

    def _training_network(self, n_in: int, n_out: int) -> Sequential:
        """The network ``fit`` initializes and trains, whatever ``dropout`` and ``l1`` are: a member-dropout layer
        after every hidden layer (its keep probability a state value, 1 for ``dropout=0``) and an L1 term in the
        optimizer (its strength a value, 0 for ``l1=0``). So its compiled programs depend on neither, and a grid
        over them compiles once. Its params are ``net_``'s (Dropout has none)."""
        return _rate_as_value(self._network(n_in, n_out, _PLACEHOLDER_RATE, _PLACEHOLDER_L1))

    # -- subclasses: targets ----------------------------------------------------------------
    def _targets(self, y):  # (encoded y, output width); learns classes_ or the shape of y
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
        y, width = self._targets(y)
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
        train_net = self._training_network(X.shape[1], width)
        state = jax.tree.map(lambda keep: np.float32(1.0 - self.dropout), train_net.init_state())  # its only values
        params = train_net.init(jax.random.key(init_seed))  # one key per layer, Dropout's included, whatever the rate
        tx = optim.optimizer(train_net, self.optimizer, float(self.learning_rate))  # its L1 term: the placeholder's
        values = {**tx.init.hyperparams, "l1": [float(self.l1)] * len(tx.init.hyperparams["l1"])}  # the real strength
        tx = optax.GradientTransformationExtraArgs(optim.OptimizerInit(tx.init.program, values), tx.update)
        callbacks = [EarlyStopping("val_loss", patience=int(self.patience), restore_best=True)] if validation else []
        result = fit(train_net, params, x_fit, y_fit, loss=self._loss, optimizer=tx, batch_size=batch,
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
      classes_: the class labels seen by ``fit``, in the order of ``predict_proba``'s columns.
      n_features_in_: the number of features seen by ``fit``.
      feature_names_in_: the column names, when ``fit`` was given a DataFrame.
      net_: the fitted network (a ``jdense.Sequential``).
      params_: its trained params (``jdense.predict(clf.net_, clf.params_, x)`` gives the logits).
      history_: ``jdense.fit``'s history.
      n_iter_: the epochs run.

    Example:
      >>> clf = DenseClassifier(hidden=(32,), epochs=50, random_state=0).fit(x, y)
      >>> clf.predict_proba(x[:2]).shape
      (2, 10)
    """

    _loss = "cross_entropy"
    _validate_kwargs: dict = {}

    def _targets(self, y):
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes in y, got 1 class: {self.classes_[0]!r}.")
        return self._encoder.transform(y).astype(np.int32), len(self.classes_)

    def _stratify(self, y):
        return y

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, classes)``, columns in ``classes_`` order (softmax of the outputs)."""
        return softmax(self._outputs(X), axis=-1)  # in float64: rows sum to 1 to float64 rounding

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

    def _targets(self, y):
        y = np.asarray(y, np.float32)
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


def _structure(estimator: _DenseEstimator) -> str:
    """What splits a grid into populations: every parameter that is not a member value."""
    return repr(sorted((k, v) for k, v in estimator.get_params().items() if k not in VALUES))


def _fitted_like(template: _DenseEstimator, candidate: _DenseEstimator) -> _DenseEstimator:
    """A copy of ``candidate`` with the data attributes ``template`` learned in ``validate_data``/targets."""
    member = clone(candidate)
    for name in ("n_features_in_", "feature_names_in_", "classes_", "_encoder", "_one_d"):
        if hasattr(template, name):
            setattr(member, name, getattr(template, name))
    return member


def _search_has(method: str):
    return lambda self: hasattr(self.best_estimator_ if hasattr(self, "best_estimator_") else self.estimator, method)


class PopulationSearchCV(MetaEstimatorMixin, BaseEstimator):
    """``GridSearchCV`` over a :class:`DenseClassifier`/:class:`DenseRegressor`, trained as populations.

    Every candidate x fold is a member of one :func:`jdense.fit_population`: its
    ``learning_rate``, ``lambda_``, ``l1``, ``dropout`` and ``random_state`` (the init seed) are
    member values, and its fold is its row of per-member sample weights (0 on the rows it
    must not see: its test fold, and with ``early_stopping`` its validation rows, which are
    drawn from its own training rows as the estimator's ``fit`` draws them). Candidates that
    differ in any other parameter (``hidden``, ``activation``, ``optimizer``, ``batch_size``,
    ``epochs``, ``early_stopping``, ...) go to separate populations. Each member is scored
    with the scikit-learn scorer on its test fold, from one ``jdense.predict(...,
    population=True)`` of the whole population.

    The search finds what ``GridSearchCV(estimator, param_grid, cv=cv)`` finds up to the
    batches: members share one batch order over all rows, with ``batch_size`` scaled by
    ``rows / training rows`` so that each member still sees about ``batch_size`` of its own
    rows per step, and the same number of steps per epoch. A classifier's members all have
    an output for every class of ``y`` (a fold that misses a class still has its output).

    Args:
      estimator: a :class:`DenseClassifier` or :class:`DenseRegressor` (its parameters are
        the defaults of every candidate).
      param_grid: a dict of parameter name -> list of values, or a list of such dicts.
      cv: the number of folds (``KFold``, or ``StratifiedKFold`` for a classifier), a
        splitter, or an iterable of ``(train, test)`` index arrays.
      scoring: None (the estimator's ``score``), a scorer name such as ``"accuracy"`` or
        ``"neg_log_loss"``, or a callable ``scorer(estimator, X, y)``.
      refit: refit the best candidate on all rows as ``best_estimator_`` (one ``jdense.fit``).
      verbose: 1 prints one line per population, 2 also shows its progress bar.

    Attributes:
      cv_results_: as ``GridSearchCV``'s: ``params``, ``param_<name>``, ``split<k>_test_score``,
        ``mean_test_score``, ``std_test_score``, ``rank_test_score``, ``mean_fit_time`` (a
        population's time shared by its members), ``std_fit_time``, ``mean_score_time``,
        ``std_score_time``.
      best_index_, best_params_, best_score_, best_estimator_, n_splits_, scorer_,
        refit_time_: as ``GridSearchCV``'s.
      populations_: how many populations trained.

    Example:
      >>> search = PopulationSearchCV(DenseClassifier(epochs=30), {"learning_rate": [1e-3, 1e-2],
      ...                             "lambda_": [0.0, 1e-3]}, cv=5).fit(x, y)
      >>> search.best_params_, search.best_score_
    """

    def __init__(self, estimator, param_grid, *, cv=5, scoring=None, refit=True, verbose=0):
        self.estimator = estimator
        self.param_grid = param_grid
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.verbose = verbose

    def _check(self):
        if not isinstance(self.estimator, _DenseEstimator):
            raise TypeError("PopulationSearchCV: estimator must be a jdense.sklearn.DenseClassifier or DenseRegressor, "
                            f"got {type(self.estimator).__name__}; for other estimators use sklearn's GridSearchCV.")
        if isinstance(self.scoring, list | tuple | set | dict):
            raise TypeError(f"PopulationSearchCV: scoring must be one scorer name or callable, got {self.scoring!r}; "
                            "several metrics at once are not supported.")
        checks.boolean("PopulationSearchCV: refit", self.refit)
        if isinstance(self.verbose, bool) or not isinstance(self.verbose, numbers.Integral) or self.verbose < 0:
            raise ValueError(f"PopulationSearchCV: verbose must be an int >= 0, got {self.verbose!r}.")
        if isinstance(self.param_grid, Mapping | Sequence) and not isinstance(self.param_grid, str) and not self.param_grid:
            raise ValueError("PopulationSearchCV: param_grid is empty; give it a dict such as {'learning_rate': [1e-3, 1e-2]}.")
        candidates = list(ParameterGrid(self.param_grid))  # sklearn's checks of the grid's form
        estimators = [clone(self.estimator).set_params(**params) for params in candidates]  # unknown names raise
        for est in estimators:
            est._check_params()
        return candidates, estimators

    def fit(self, X, y, sample_weight=None, *, groups=None):
        """Run the search: one :func:`jdense.fit_population` per structure, then refit the best candidate.

        Args:
          X, y: the data, as for the estimator's ``fit``.
          sample_weight: optional ``(n,)`` weights of the training loss (scores are unweighted,
            as ``GridSearchCV``'s without metadata routing).
          groups: group labels for a group splitter such as ``GroupKFold``.

        Returns:
          ``self``.
        """
        candidates, estimators = self._check()
        self.scorer_ = check_scoring(self.estimator, scoring=self.scoring)
        self.multimetric_ = False
        data = clone(self.estimator)
        X_in, y_in = X, y
        X, y = validate_data(data, X, y, dtype=np.float32, **data._validate_kwargs)
        y_raw = y
        y, width = data._targets(y)
        n = X.shape[0]
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, np.float32)
            if sample_weight.shape != (n,):
                raise ValueError(f"sample_weight must have one weight per sample, shape ({n},), got {sample_weight.shape}.")
        splits = [(np.asarray(tr), np.asarray(te))
                  for tr, te in check_cv(self.cv, y_raw, classifier=is_classifier(self.estimator)).split(X, y_raw, groups)]
        self.n_splits_ = len(splits)

        populations: dict[str, list[int]] = {}
        for i, est in enumerate(estimators):
            populations.setdefault(_structure(est), []).append(i)
        n_candidates = len(candidates)
        scores = np.full((n_candidates, self.n_splits_), np.nan)
        fit_times = np.zeros((n_candidates, self.n_splits_))
        score_times = np.zeros((n_candidates, self.n_splits_))
        for p, indices in enumerate(populations.values()):
            start = time.perf_counter()
            group = [estimators[i] for i in indices]
            members, net, pop = self._fit_population(data, group, X, y, width, sample_weight, splits)
            seconds = time.perf_counter() - start
            fit_times[indices] = seconds / (len(indices) * self.n_splits_)
            if self.verbose:
                print(f"PopulationSearchCV: population {p + 1}/{len(populations)}: {len(indices)} candidates x "
                      f"{self.n_splits_} folds = {len(indices) * self.n_splits_} members in {seconds:.1f} s")
            params = jax.tree.map(np.asarray, pop.params)  # sliced per member on the host
            for k, (_, test) in enumerate(splits):  # a fold's members predict its test rows, all in one call
                start = time.perf_counter()
                fold = [j for j, (_, f) in enumerate(members) if f == k]
                x_test = X[test]
                outputs = _predict(net, jax.tree.map(lambda a, fold=fold: a[fold], params), x_test, population=True)
                rows = [indices[members[j][0]] for j in fold]
                if self._accuracy(data):  # the estimator's own score: all the fold's members at once
                    scores[rows, k] = np.mean(data.classes_[np.argmax(outputs, axis=-1)] == y_raw[test], axis=-1)
                    score_times[rows, k] = (time.perf_counter() - start) / len(fold)
                    continue
                share = (time.perf_counter() - start) / len(fold)
                for o, j in enumerate(fold):
                    start, i = time.perf_counter(), indices[members[j][0]]
                    member = _fitted_like(data, estimators[i])
                    member.net_, member.params_ = net, jax.tree.map(lambda a, j=j: a[j], params)
                    ran = int(pop.epochs[j])
                    member.history_ = {key: [float(v) for v in h[:ran, j]] for key, h in pop.history.items()}
                    member.n_iter_ = ran
                    member._cached_outputs = (x_test, outputs[o])
                    scores[i, k] = self.scorer_(member, x_test, y_raw[test])
                    score_times[i, k] = share + time.perf_counter() - start
        self.populations_ = len(populations)
        self.cv_results_ = self._results(candidates, scores, fit_times, score_times)
        self.best_index_ = int(np.argmin(self.cv_results_["rank_test_score"]))
        self.best_params_ = candidates[self.best_index_]
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        if self.refit:
            start = time.perf_counter()
            self.best_estimator_ = clone(self.estimator).set_params(**self.best_params_).fit(X_in, y_in, sample_weight)
            self.refit_time_ = time.perf_counter() - start
        return self

    def _accuracy(self, data) -> bool:
        """Whether the score is a classifier's accuracy (``scoring`` None or ``"accuracy"``), which the search
        computes from the members' outputs directly: the mean of ``predict(X) == y``, as ``accuracy_score``
        without weights (tested equal to the scorer's). Any other scoring calls the scorer once per member."""
        return is_classifier(data) and (self.scoring is None or self.scoring == "accuracy")

    def _fit_population(self, data, group, X, y, width, sample_weight, splits):
        """Train ``group`` (candidates of one structure) x folds as one population: ``(members, net, result)``,
        ``members`` listing each member's (index in ``group``, fold)."""
        first = group[0]
        n = X.shape[0]
        # every member has a dropout and an l1 value (0 for none), so the program does not depend on them
        net = first._network(X.shape[1], width, _PLACEHOLDER_RATE, 0.0)
        weights, val_weights, members, specs = [], [], [], []
        for i, est in enumerate(group):
            init_seed, _, split_seed = _seeds(est.random_state)
            for k, (train_rows, _) in enumerate(splits):
                rows, w_val = train_rows, np.zeros(n, np.float32)
                if est.early_stopping:  # validation rows from the member's own training rows, as fit draws them
                    rows, val_rows = _validation_rows(train_rows, data._stratify(y[train_rows]), est.validation_fraction,
                                                      split_seed)
                    w_val[val_rows] = 1.0 if sample_weight is None else sample_weight[val_rows]
                w = np.zeros(n, np.float32)
                w[rows] = 1.0 if sample_weight is None else sample_weight[rows]
                weights.append(w)
                val_weights.append(w_val)
                member = {"seed": init_seed, "learning_rate": float(est.learning_rate), "lambda_": float(est.lambda_),
                          "dropout": float(est.dropout), "l1": float(est.l1)}
                specs.append(member)
                members.append((i, k))
        weights = np.stack(weights)
        fit_rows = float(np.mean([np.count_nonzero(w) for w in weights]))
        own_batch = min(int(first.batch_size), int(fit_rows))  # what the estimator's fit would use (clipped)
        batch = min(n, max(1, round(own_batch * n / fit_rows)))
        stop = first.early_stopping
        pop = fit_population(
            net, X, y, members=specs, loss=first._loss, optimizer=first.optimizer, epochs=int(first.epochs),
            batch_size=batch, key=jax.random.key(_seeds(first.random_state)[1]), sample_weight=weights,
            validation_data=(X, y, np.stack(val_weights)) if stop else None, metrics=[],
            callbacks=[EarlyStopping("val_loss", patience=int(first.patience), restore_best=True)] if stop else [],
            verbose=int(self.verbose > 1))
        return members, net, pop

    def _results(self, candidates, scores, fit_times, score_times) -> dict[str, Any]:
        """``cv_results_`` laid out as ``GridSearchCV``'s (ranks: best 1, ties share the lowest, NaN last)."""
        results: dict[str, Any] = {
            "mean_fit_time": fit_times.mean(axis=1), "std_fit_time": fit_times.std(axis=1),
            "mean_score_time": score_times.mean(axis=1), "std_score_time": score_times.std(axis=1),
        }
        names = sorted({name for params in candidates for name in params})
        for name in names:
            column = np.ma.MaskedArray(np.empty(len(candidates), dtype=object), mask=True)
            for i, params in enumerate(candidates):
                if name in params:
                    column[i] = params[name]
            results[f"param_{name}"] = column
        results["params"] = candidates
        for k in range(scores.shape[1]):
            results[f"split{k}_test_score"] = scores[:, k]
        means = scores.mean(axis=1)
        results["mean_test_score"] = means
        results["std_test_score"] = scores.std(axis=1)
        if np.isnan(means).all():
            ranks = np.ones(len(means), np.int32)
        else:
            ranks = rankdata(-np.nan_to_num(means, nan=np.nanmin(means) - 1), method="min").astype(np.int32)
        results["rank_test_score"] = ranks
        return results

    # -- the best estimator's methods ---------------------------------------------------------
    def _best(self):
        check_is_fitted(self, "cv_results_")
        if not self.refit:
            raise AttributeError("this PopulationSearchCV was fit with refit=False: it has no best_estimator_ to predict "
                                 "with; pass refit=True, or read cv_results_ and best_params_.")
        return self.best_estimator_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "cv_results_")

    @available_if(_search_has("predict"))
    def predict(self, X):
        """The best estimator's ``predict``."""
        return self._best().predict(X)

    @available_if(_search_has("predict_proba"))
    def predict_proba(self, X):
        """The best estimator's ``predict_proba`` (classifiers)."""
        return self._best().predict_proba(X)

    def score(self, X, y) -> float:
        """The best estimator's score with the search's scorer (``scoring``, or the estimator's ``score``)."""
        return float(self.scorer_(self._best(), X, y))

    @property
    def classes_(self):
        return self._best().classes_

    @property
    def n_features_in_(self):
        return self._best().n_features_in_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self.estimator.__sklearn_tags__()
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags, tags.regressor_tags, tags.target_tags = inner.classifier_tags, inner.regressor_tags, \
            inner.target_tags
        return tags


__all__ = ["VALUES", "DenseClassifier", "DenseRegressor", "PopulationSearchCV"]
