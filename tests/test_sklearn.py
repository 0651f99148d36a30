"""jdense.sklearn: scikit-learn's own estimator checks, the tools it must work in, and PopulationSearchCV
against GridSearchCV on the same folds."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, make_regression  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, log_loss, make_scorer  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import jdense  # noqa: E402
import jdense.sklearn as jsk  # noqa: E402
from jdense.sklearn import DenseClassifier, DenseRegressor, PopulationSearchCV  # noqa: E402

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles = [0]
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: _compiles.__setitem__(0, _compiles[0] + 1) if event == COMPILE_EVENT else None)


def compiles(fn):
    """How many XLA programs ``fn()`` compiled, and its result."""
    before = _compiles[0]
    out = fn()
    return _compiles[0] - before, out


# Small and fast for the checks (each runs several fits); high enough a rate to pass their score thresholds.
SMALL = dict(hidden=(16,), epochs=20, learning_rate=1e-2, random_state=0)

# Checks that cannot pass as written, each with the reason.
EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data":
        "training runs in float32: weighted and repeated rows agree to float32 rounding (~3e-8), the check asks for "
        "rtol 1e-7 of float64 results; test_sample_weight_equals_repeated_rows checks it at float32 tolerance",
}


@parametrize_with_checks([DenseClassifier(**SMALL), DenseRegressor(**SMALL)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = StandardScaler().fit_transform(x).astype(np.float32)
    return x[:600], y[:600]


# -- the estimators ------------------------------------------------------------------------------
def test_pipeline_on_breast_cancer_matches_logistic_regression():
    x, y = load_breast_cancer(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    pipe = make_pipeline(StandardScaler(), DenseClassifier(hidden=(32,), epochs=30, random_state=0)).fit(xtr, ytr)
    reference = make_pipeline(StandardScaler(), LogisticRegression()).fit(xtr, ytr).score(xte, yte)
    assert pipe.score(xte, yte) >= reference - 0.03  # reference ~0.98
    proba = pipe.predict_proba(xte)
    assert proba.shape == (len(xte), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(pipe.classes_[proba.argmax(axis=1)], pipe.predict(xte))
    assert log_loss(yte, proba) < 0.2


def test_cross_val_score_equals_a_loop_of_clones(digits):
    x, y = digits
    est = DenseClassifier(**SMALL)
    cv = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(est, x, y, cv=cv)
    by_hand = [clone(est).fit(x[tr], y[tr]).score(x[te], y[te]) for tr, te in cv.split(x)]
    np.testing.assert_array_equal(scores, by_hand)  # same random_state: the same networks
    assert scores.min() > 0.85  # 10 classes, chance 0.1


def test_fitted_attributes_and_history(digits):
    x, y = digits
    est = DenseClassifier(hidden=(8, 8), epochs=3, random_state=0).fit(x, y)
    assert est.n_features_in_ == 64 and est.n_iter_ == 3 and len(est.history_["loss"]) == 3
    assert [layer.out_features for layer in est.net_.layers] == [8, 8, 10]
    np.testing.assert_array_equal(est.classes_, np.arange(10))
    logits = np.asarray(jax.jit(est.net_.apply)(est.params_, x[:5]), np.float64)  # params_ are the net's params
    np.testing.assert_allclose(est.predict_proba(x[:5]), np.asarray(jax.nn.softmax(logits)), rtol=1e-5)


def test_estimator_trains_as_jdense_fit(digits):
    """The estimator is jdense.fit of mlp([features, *hidden, classes], lambda_=, dropout=) with seeds from random_state."""
    x, y = digits
    est = DenseClassifier(hidden=(16,), epochs=2, dropout=0.3, lambda_=1e-3, learning_rate=3e-3, random_state=5).fit(x, y)
    init_seed, key_seed, _ = np.random.RandomState(5).randint(0, 2**31 - 1, size=3)
    net = jdense.mlp([64, 16, 10], lambda_=1e-3, dropout=0.3)  # Dropout's rate a constant, as users write it
    ref = jdense.fit(net, net.init(jax.random.key(int(init_seed))), x, y, loss="cross_entropy", batch_size=32, epochs=2,
                     optimizer=jdense.optimizer(net, "adam", 3e-3), key=jax.random.key(int(key_seed)), verbose=0)
    for a, b in zip(jax.tree.leaves(est.params_), jax.tree.leaves(ref.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est.history_["loss"], ref.history["loss"], rtol=1e-5)


@pytest.mark.parametrize("labels", [np.array(["cat", "dog", "emu"]), np.array([-3, 10, 42])])
def test_any_labels_train_as_their_codes(labels):
    x, codes = load_iris(return_X_y=True)
    y = labels[codes]
    est = DenseClassifier(**SMALL).fit(x, y)
    by_code = DenseClassifier(**SMALL).fit(x, codes)
    np.testing.assert_array_equal(est.classes_, np.sort(labels))
    np.testing.assert_array_equal(est.predict_proba(x), by_code.predict_proba(x))  # classes_ order = code order
    np.testing.assert_array_equal(est.predict(x), labels[by_code.predict(x)])
    assert est.score(x, y) > 0.9


def test_pickle_round_trip_predicts_the_same(digits):
    x, y = digits
    est = DenseClassifier(hidden=(16,), epochs=2, random_state=0, dropout=0.2).fit(x, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(x), est.predict_proba(x))
    assert again.get_params() == est.get_params()


def test_multi_output_regression_against_linear_regression():
    x, y = make_regression(n_samples=300, n_features=5, n_targets=2, noise=1.0, random_state=0)
    y = y / y.std(axis=0)
    reg = DenseRegressor(hidden=(32,), epochs=60, learning_rate=1e-2, random_state=0).fit(x, y)
    assert reg.predict(x).shape == (300, 2)
    assert reg.score(x, y) > LinearRegression().fit(x, y).score(x, y) - 0.02  # linear data: ~0.99
    one = DenseRegressor(hidden=(32,), epochs=2, random_state=0).fit(x, y[:, 0])
    assert one.predict(x).shape == (300,)


def test_sample_weight_equals_repeated_rows():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    w = rng.integers(0, 3, 30)
    params = dict(hidden=(8,), epochs=5, batch_size=100, random_state=0)  # one full batch: the same gradients
    weighted = DenseClassifier(**params).fit(x, y, sample_weight=w)
    repeated = DenseClassifier(**params).fit(np.repeat(x, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(weighted.predict_proba(x), repeated.predict_proba(x), rtol=1e-5, atol=1e-6)


def test_dataframe_sets_feature_names():
    pd = pytest.importorskip("pandas")
    x, y = load_iris(return_X_y=True, as_frame=True)
    est = DenseClassifier(hidden=(4,), epochs=1, random_state=0).fit(x, y)
    np.testing.assert_array_equal(est.feature_names_in_, np.asarray(x.columns))
    assert isinstance(x, pd.DataFrame) and est.predict(x).shape == (150,)


def test_not_fitted_and_bad_parameters_raise():
    x, y = load_iris(return_X_y=True)
    with pytest.raises(NotFittedError):
        DenseClassifier().predict(x)
    with pytest.raises(ValueError, match="hidden"):
        DenseClassifier(hidden=(0,)).fit(x, y)
    with pytest.raises(ValueError, match="unknown DenseClassifier optimizer 'adamx'"):
        DenseClassifier(optimizer="adamx").fit(x, y)
    with pytest.raises(ValueError, match="dropout must be a rate in"):
        DenseRegressor(dropout=1.0).fit(x, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        DenseClassifier().fit(x, np.zeros(len(x)))


def test_early_stopping_holds_out_a_stratified_fraction(digits, monkeypatch):
    x, y = digits
    seen = []
    real_fit = jsk.fit
    monkeypatch.setattr(jsk, "fit", lambda *a, **kw: seen.append(kw["validation_data"]) or real_fit(*a, **kw))
    est = DenseClassifier(hidden=(16,), epochs=200, patience=2, early_stopping=True, validation_fraction=0.2,
                          learning_rate=1e-2, random_state=0).fit(x, y)
    xv, yv = seen[0][:2]
    assert len(xv) == 120 and np.bincount(yv).min() >= 10  # 20% of 600, every class held out (stratified)
    assert est.n_iter_ < 200 and len(est.history_["val_loss"]) == est.n_iter_


# -- compiled once ------------------------------------------------------------------------------
def test_grid_search_compiles_one_training_program_per_structure(digits):
    x, y = digits
    cv = KFold(3, shuffle=True, random_state=0)
    base = DenseClassifier(hidden=(15,), epochs=2, dropout=0.1, l1=1e-5, random_state=0)
    first, _ = compiles(lambda: GridSearchCV(base, {"learning_rate": [1e-3]}, cv=cv).fit(x, y))
    grid = {"learning_rate": [1e-2, 3e-3], "lambda_": [0.0, 1e-3], "dropout": [0.2, 0.4], "l1": [1e-4],
            "random_state": [1, 2]}
    again, search = compiles(lambda: GridSearchCV(base, grid, cv=cv).fit(x, y))
    assert first > 0 and again == 0  # 16 new candidates x 3 folds + refit: no new program
    assert search.best_score_ > 0.5


def test_grid_over_dropout_and_l1_from_zero_compiles_no_new_training_program(digits):
    """dropout 0 → 0.2 and l1 0 → 1e-4 are values: the training network always has its member-dropout layer and L1 term."""
    x, y = digits
    cv = KFold(2, shuffle=True, random_state=0)
    base = DenseClassifier(hidden=(13,), epochs=1, random_state=0)  # dropout=0, l1=0: the warm-up of this structure
    first, _ = compiles(lambda: GridSearchCV(base, {"learning_rate": [1e-3]}, cv=cv).fit(x, y))
    again, search = compiles(lambda: GridSearchCV(base, {"dropout": [0.0, 0.2], "l1": [0.0, 1e-4]}, cv=cv).fit(x, y))
    assert first > 0 and again == 0
    assert len(search.cv_results_["params"]) == 4


@pytest.mark.parametrize("dropout, l1", [(0.0, 0.0), (0.0, 1e-3)])
def test_fit_without_dropout_trains_as_a_network_without_dropout(digits, dropout, l1):
    """With dropout=0 the training network's dropout layer keeps every unit (x / 1 = x) and l1=0 adds 0: the same training
    as jdense.fit of the mlp with a Dropout(0.0) (the identity) after the hidden layer, and no L1 term when l1=0.
    net_ is the mlp as written, without Dropout."""
    x, y = digits
    est = DenseClassifier(hidden=(16,), epochs=2, dropout=dropout, l1=l1, learning_rate=3e-3, random_state=5).fit(x, y)
    init_seed, key_seed, _ = np.random.RandomState(5).randint(0, 2**31 - 1, size=3)
    net = jdense.Sequential([jdense.Dense(64, 16, l1=l1), jdense.Dropout(0.0), jdense.Dense(16, 10, None, l1=l1)])
    assert est.net_ == jdense.mlp([64, 16, 10], l1=l1)
    ref = jdense.fit(net, net.init(jax.random.key(int(init_seed))), x, y, loss="cross_entropy", batch_size=32, epochs=2,
                     optimizer=jdense.optimizer(net, "adam", 3e-3), key=jax.random.key(int(key_seed)), verbose=0)
    for a, b in zip(jax.tree.leaves(est.params_), jax.tree.leaves(ref.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


# -- PopulationSearchCV -------------------------------------------------------------------------
def test_population_search_matches_grid_search(digits):
    x, y = digits
    cv = KFold(3, shuffle=True, random_state=0)
    est = DenseClassifier(hidden=(32,), epochs=10, random_state=0)
    grid = {"learning_rate": [1e-5, 3e-3], "lambda_": [0.0, 1e-3]}  # 1e-5 barely moves in 10 epochs: a clear winner
    search = PopulationSearchCV(est, grid, cv=cv).fit(x, y)
    reference = GridSearchCV(est, grid, cv=cv).fit(x, y)
    assert search.best_params_["learning_rate"] == reference.best_params_["learning_rate"] == 3e-3
    assert search.n_splits_ == 3 and search.populations_ == 1
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"], atol=0.05)
    for key in ["params", "mean_test_score", "std_test_score", "rank_test_score", "mean_fit_time", "split0_test_score",
                "split2_test_score", "param_learning_rate"]:
        assert key in search.cv_results_
    assert search.cv_results_["params"] == reference.cv_results_["params"]
    np.testing.assert_array_equal(np.asarray(search.cv_results_["param_lambda_"]),
                                  np.asarray(reference.cv_results_["param_lambda_"]))
    best = search.cv_results_["rank_test_score"].argmin()
    assert search.best_index_ == best and search.best_score_ == search.cv_results_["mean_test_score"][best]
    # the best estimator is refit on every row, as GridSearchCV's
    refit = clone(est).set_params(**search.best_params_).fit(x, y)
    np.testing.assert_array_equal(search.predict_proba(x), refit.predict_proba(x))
    assert search.score(x, y) == refit.score(x, y)
    np.testing.assert_array_equal(search.classes_, np.arange(10))


def test_population_search_compiles_one_program_per_structure(digits):
    x, y = digits
    cv = KFold(3, shuffle=True, random_state=1)
    est = DenseClassifier(hidden=(16,), epochs=2, random_state=0)
    grid = [{"learning_rate": [1e-3, 1e-2], "dropout": [0.0, 0.3]}, {"hidden": [(8,)], "l1": [0.0, 1e-4]}]
    first, search = compiles(lambda: PopulationSearchCV(est, grid, cv=cv, refit=False).fit(x, y))
    assert search.populations_ == 2 and len(search.cv_results_["params"]) == 6
    grid = [{"learning_rate": [3e-3, 3e-2], "dropout": [0.1, 0.0]}, {"hidden": [(8,)], "l1": [1e-3, 1e-5]}]
    again, _ = compiles(lambda: PopulationSearchCV(est, grid, cv=cv, refit=False).fit(x, y))
    assert first > 0 and again == 0  # other values, the same structures: nothing compiles
    with pytest.raises(AttributeError, match="refit=False"):
        search.predict(x)


def test_population_accuracy_from_outputs_equals_the_scorer(digits):
    """scoring None/"accuracy" is computed from all the fold's outputs at once; it equals scikit-learn's
    scorer called member by member (a callable scorer takes that path), bit for bit, with string labels."""
    x, y = digits
    labels = np.array([f"digit {v}" for v in y])
    cv = KFold(3, shuffle=True, random_state=1)
    est = DenseClassifier(hidden=(16,), epochs=2, random_state=0)  # the structure of the test above: no new compile
    grid = {"learning_rate": [1e-3, 1e-2], "dropout": [0.0, 0.3]}
    results = [PopulationSearchCV(est, grid, cv=cv, scoring=scoring, refit=False).fit(x, labels).cv_results_
               for scoring in (None, "accuracy", make_scorer(accuracy_score))]
    for k in range(3):
        reference = results[2][f"split{k}_test_score"]
        assert np.isfinite(reference).all() and (reference > 0).all()
        for result in results[:2]:
            np.testing.assert_array_equal(result[f"split{k}_test_score"], reference)


def test_population_folds_and_validation_rows(digits, monkeypatch):
    """Each member trains on its fold's training rows minus its validation rows, which are the ones
    the estimator's own fit would hold out on that fold; its test fold is never seen."""
    x, y = digits
    calls, fits = [], []
    real_population, real_fit = jsk.fit_population, jsk.fit
    monkeypatch.setattr(jsk, "fit_population", lambda *a, **kw: calls.append(kw) or real_population(*a, **kw))
    monkeypatch.setattr(jsk, "fit", lambda *a, **kw: fits.append(kw["validation_data"]) or real_fit(*a, **kw))
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    est = DenseClassifier(hidden=(16,), epochs=30, patience=1, early_stopping=True, learning_rate=3e-2, random_state=3)
    search = PopulationSearchCV(est, {"lambda_": [0.0, 1e-2]}, cv=cv, refit=False).fit(x, y)
    (kw,) = calls
    w, w_val = kw["sample_weight"], kw["validation_data"][2]
    splits = list(cv.split(x, y))
    assert w.shape == w_val.shape == (6, 600)
    for m in range(6):
        train_rows, test_rows = splits[m % 3]
        fit_rows, val_rows = np.flatnonzero(w[m]), np.flatnonzero(w_val[m])
        assert not np.isin(test_rows, fit_rows).any() and not np.isin(test_rows, val_rows).any()
        assert set(fit_rows) | set(val_rows) == set(train_rows) and not set(fit_rows) & set(val_rows)
        clone(est).fit(x[train_rows], y[train_rows])  # the estimator's own split on this fold
        np.testing.assert_array_equal(np.sort(x[val_rows], axis=0), np.sort(fits[-1][0], axis=0))
    assert kw["members"][0]["lambda_"] == 0.0 and kw["members"][3]["lambda_"] == 1e-2
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_population_members_stop_on_their_own(digits):
    x, y = digits
    est = DenseClassifier(hidden=(16,), epochs=40, patience=2, early_stopping=True, random_state=0)
    calls = []
    real = jsk.fit_population
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jsk, "fit_population", lambda *a, **kw: (lambda r: calls.append(r) or r)(real(*a, **kw)))
        PopulationSearchCV(est, {"learning_rate": [1e-9, 3e-2]}, cv=2, refit=False).fit(x, y)
    epochs = calls[0].epochs
    assert (epochs[:2] == 3).all()  # a rate of 1e-9 never improves (beyond float32 rounding): stops after patience + 1 epochs
    assert (epochs[2:] > 3).all() and (epochs <= 40).all()


def test_population_search_regressor_and_scoring_names():
    x, y = make_regression(n_samples=200, n_features=4, n_targets=2, noise=0.5, random_state=0)
    y = y / y.std(axis=0)
    est = DenseRegressor(hidden=(16,), epochs=20, random_state=0)
    splits = list(KFold(3).split(x))  # cv as an iterable of (train, test) splits
    search = PopulationSearchCV(est, {"learning_rate": [1e-4, 1e-2]}, cv=splits, scoring="neg_mean_squared_error").fit(x, y)
    assert search.best_params_ == {"learning_rate": 1e-2} and search.n_splits_ == 3
    assert (search.cv_results_["mean_test_score"] < 0).all() and search.predict(x).shape == (200, 2)


def test_population_search_bad_arguments():
    x, y = load_iris(return_X_y=True)
    with pytest.raises(TypeError, match="DenseClassifier or DenseRegressor"):
        PopulationSearchCV(LogisticRegression(), {"C": [1.0]}).fit(x, y)
    with pytest.raises(ValueError, match="Invalid parameter 'lr'"):
        PopulationSearchCV(DenseClassifier(), {"lr": [1.0]}).fit(x, y)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        PopulationSearchCV(DenseClassifier(), {"learning_rate": [-1.0]}).fit(x, y)
    with pytest.raises(TypeError, match="one scorer"):
        PopulationSearchCV(DenseClassifier(), {"learning_rate": [1e-3]}, scoring=["accuracy"]).fit(x, y)


# -- fit_population's per-member validation weights (added for PopulationSearchCV) --------------
def test_fit_population_judges_each_member_on_its_own_validation_rows():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(90, 5)).astype(np.float32), rng.integers(0, 3, 90)
    xv, yv = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40)
    w_val = np.zeros((3, 40), np.float32)
    w_val[0, :20], w_val[1, 20:], w_val[2] = 1.0, 2.0, rng.uniform(0, 1, 40)
    net = jdense.mlp([5, 8, 3])
    pop = jdense.fit_population(net, x, y, members=[{"seed": 0}] * 3, loss="cross_entropy", epochs=2, batch_size=16,
                                key=jax.random.key(0), validation_data=(xv, yv, w_val), verbose=0)
    for m in range(3):  # the same network three times, each judged on its own rows
        expected = jdense.evaluate(net, pop.member(m).params, xv, yv, loss="cross_entropy", sample_weight=w_val[m])
        np.testing.assert_allclose(pop.history["val_loss"][-1, m], expected["loss"], rtol=1e-5)
        np.testing.assert_allclose(pop.history["val_accuracy"][-1, m], expected["accuracy"], rtol=1e-6)
    assert pop.history["val_loss"][-1, 0] != pop.history["val_loss"][-1, 1]
    with pytest.raises(ValueError, match=r"shape \(40,\) \(shared\) or \(3, 40\)"):
        jdense.fit_population(net, x, y, members=3, loss="cross_entropy", epochs=1, batch_size=16, key=jax.random.key(0),
                              validation_data=(xv, yv, w_val[:2]), verbose=0)


# -- an optional dependency ---------------------------------------------------------------------
def test_import_without_sklearn_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.delitem(sys.modules, "jdense.sklearn")
    with pytest.raises(ImportError, match=r'pip install "jdense\[sklearn\]"'):
        importlib.import_module("jdense.sklearn")


def test_import_jdense_does_not_import_sklearn():
    code = "import sys, jdense; print('sklearn' in sys.modules, 'jdense.sklearn' in sys.modules)"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", "False"]
