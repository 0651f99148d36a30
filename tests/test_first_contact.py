"""First contact (issue 24): a Keras user's first script runs; near-miss names get a suggestion; predict gives
probabilities and labels; shape errors name the layer and the caller's array; the command line keeps its promises."""

import re
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import optax
import pytest

import jdense
from jdense import checks, cli

pytest.importorskip("sklearn")

KERAS_STYLE = """\
import jax, numpy as np, jdense
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
x, y = load_breast_cancer(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
net = jdense.mlp([30, 16, 8, 1])
stop = jdense.EarlyStopping("val_loss", patience=3, restore_best=True)
result = jdense.fit(net, net.init(jax.random.key(0)), x_train, y_train, loss="binary_cross_entropy", epochs=8,
                    validation_split=0.2, callbacks=[stop], key=jax.random.key(1), verbose=0)
scores = jdense.evaluate(net, result.params, x_test, y_test, loss="binary_cross_entropy", metrics=["accuracy", "f1"])
jdense.save("model.safetensors", result.params, net=net)
model = jdense.load("model.safetensors")
proba = jdense.predict(model.net, model.params, x_test, output="probabilities", loss="binary_cross_entropy")
labels = jdense.predict(model.net, model.params, x_test, output="labels", loss="binary_cross_entropy")
"""


def test_a_keras_style_first_script_runs_without_error(tmp_path, monkeypatch):
    assert len(KERAS_STYLE.splitlines()) == 15
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning
        exec(compile(KERAS_STYLE, "keras_style.py", "exec"), namespace)
    proba, labels, scores, x_test = (namespace[k] for k in ("proba", "labels", "scores", "x_test"))
    assert proba.shape == (len(x_test), 1) and labels.shape == (len(x_test),)
    assert 0.0 <= float(proba.min()) and float(proba.max()) <= 1.0
    np.testing.assert_array_equal(np.asarray(labels), (np.asarray(proba)[:, 0] > 0.5).astype(np.int32))
    assert scores["accuracy"] > 0.85 and scores["f1"] > 0.85  # breast cancer is easy: a working fit is well above


# -- the messages the issue quotes no longer occur -----------------------------------------------------------------
@pytest.mark.parametrize("call, suggestion", [
    (lambda: jdense.losses.per_sample("binary_crossentropy"), "unknown loss 'binary_crossentropy'; did you mean "
                                                             "'binary_cross_entropy'?"),
    (lambda: jdense.losses.per_sample("categorical_crossentropy"), "did you mean 'cross_entropy'?"),
    (lambda: jdense.losses.per_sample("sparse_categorical_crossentropy"), "did you mean 'cross_entropy'?"),
    (lambda: jdense.losses.per_sample("mean_squared_error"), "did you mean 'mse'?"),
    (lambda: jdense.losses.per_sample(("hubber", 2.0)), "did you mean 'huber'?"),
    (lambda: jdense.metrics.get_metric("f1_score"), "unknown metric 'f1_score'; did you mean 'f1'?"),
    (lambda: jdense.metrics.get_metric("acc"), "did you mean 'accuracy'?"),
    (lambda: jdense.activations.get_activation("Relu"), "unknown activation 'Relu'; did you mean 'relu'?"),
    (lambda: jdense.activations.get_activation("sigmoud"), "did you mean 'sigmoid'?"),
    (lambda: jdense.initializers.get_initializer("xavier_uniform"), "did you mean 'glorot_uniform'?"),
    (lambda: jdense.initializers.get_initializer("he_norm"), "did you mean 'he_normal'?"),
    (lambda: jdense.optimizer(jdense.mlp([2, 1]), "Adam"), "unknown optimizer 'Adam'; did you mean 'adam'?"),
    (lambda: jdense.Sequential.from_config({"layers": [{"type": "Dence", "in_features": 2, "out_features": 1}]}),
     "unknown layer kind 'Dence'; did you mean 'Dense'?"),
    (lambda: jdense.EarlyStopping(mode="maximum"), "unknown mode 'maximum'; did you mean 'max'?"),
    (lambda: jdense.quantize(jdense.mlp([2, 1]), {}, "int4"), "unknown mode 'int4'"),
    (lambda: jdense.predict(jdense.mlp([2, 1]), {}, np.ones((1, 2)), output="proba", loss="cross_entropy"),
     "unknown output 'proba'; did you mean 'probabilities'?"),
])
def test_an_unknown_name_suggests_the_closest_valid_one(call, suggestion):
    with pytest.raises(ValueError, match=re.escape(suggestion)):
        call()


def test_no_suggestion_when_nothing_is_close_and_the_list_keeps_its_order():
    with pytest.raises(ValueError) as err:
        jdense.losses.per_sample("hinge")
    assert str(err.value).startswith("unknown loss 'hinge'; expected one of 'mse', 'mae', 'cross_entropy'")
    assert "did you mean" not in str(err.value)
    assert checks.closest("hinge", jdense.losses.PER_SAMPLE) is None


def test_keras_keywords_are_refused_with_a_pointer_to_jdenses_name():
    with pytest.raises(TypeError, match=r"EarlyStopping has no argument 'restore_best_weights' \(the Keras spelling\); "
                                        r"jdense calls it 'restore_best': EarlyStopping\(\.\.\., restore_best=True\)"):
        jdense.EarlyStopping(restore_best_weights=True)
    with pytest.raises(TypeError, match=r"ReduceLROnPlateau has no argument 'epsilon'.*'min_delta'"):
        jdense.ReduceLROnPlateau(epsilon=1e-4)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'patiense'; did you mean 'patience'\?"):
        jdense.EarlyStopping(patiense=3)


def test_a_shape_error_names_the_layer_and_the_callers_array():
    x, y = np.zeros((569, 30), np.float32), np.zeros(569, np.int32)
    net = jdense.mlp([64, 32, 1])
    params = net.init(jax.random.key(0))
    expected = r"x has shape \(569, 30\) \(30 features per sample\) but dense_0 \(Dense\) expects 64 input features"
    for what, call in [
        ("fit", lambda: jdense.fit(net, params, x, y, loss="binary_cross_entropy", key=jax.random.key(0), epochs=1,
                                   batch_size=32, optimizer=jdense.optimizer(net), verbose=0)),
        ("evaluate", lambda: jdense.evaluate(net, params, x, y, loss="binary_cross_entropy")),
        ("predict", lambda: jdense.predict(net, params, x)),
        ("apply", lambda: net.apply(params, x)),
    ]:
        with pytest.raises(ValueError, match=f"^{what}: {expected}.*mlp\\(\\[30, \\.\\.\\.\\]\\)") as err:
            call()
        assert "(1, 30)" not in str(err.value)


def test_a_width_mismatch_after_the_first_layer_names_that_layer():
    net = jdense.Sequential([jdense.Dense(4, 6), jdense.Flatten(), jdense.Dense(6, 2)])
    net.check_input((10, 4))  # fine
    with pytest.raises(ValueError, match=r"^predict: x has shape \(10, 5\) \(5 features per sample\) but dense_0"):
        net.check_input((10, 5), "predict")
    bn = jdense.Sequential([jdense.Flatten(), jdense.BatchNorm(12), jdense.Dense(12, 2)])
    with pytest.raises(ValueError, match=r"x of shape \(3, 2, 5\) reaches batch_norm_0 \(BatchNorm\) as \(3, 10\).*features=12"):
        bn.check_input((3, 2, 5))


# -- predict(output=, loss=) ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def softmax_net():
    net = jdense.mlp([5, 7, 3])
    x = np.random.default_rng(0).normal(size=(11, 5)).astype(np.float32)
    return net, net.init(jax.random.key(3)), x


def test_probabilities_and_labels_follow_the_loss(softmax_net):
    net, params, x = softmax_net
    logits = np.asarray(jdense.predict(net, params, x), np.float64)
    p = np.asarray(jdense.predict(net, params, x, output="probabilities", loss="cross_entropy"))
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)  # softmax by hand
    np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)
    labels = jdense.predict(net, params, x, output="labels", loss="cross_entropy")
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(labels), logits.argmax(-1))
    np.testing.assert_array_equal(np.asarray(jdense.predict(net, params, x, output="logits", loss="cross_entropy")),
                                  logits.astype(np.float32))


def test_binary_probabilities_are_the_sigmoid_and_labels_threshold_at_one_half():
    net = jdense.mlp([4, 1])
    params = net.init(jax.random.key(0))
    x = np.random.default_rng(1).normal(size=(9, 4)).astype(np.float32) * 3
    z = np.asarray(jdense.predict(net, params, x), np.float64)
    p = np.asarray(jdense.predict(net, params, x, output="probabilities", loss="binary_cross_entropy"))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), rtol=1e-5, atol=1e-7)
    labels = np.asarray(jdense.predict(net, params, x, output="labels", loss="binary_cross_entropy"))
    assert labels.shape == (9,)
    np.testing.assert_array_equal(labels, (z[:, 0] > 0).astype(np.int32))


@pytest.mark.parametrize("loss, output, message", [
    (None, "probabilities", r"output='probabilities' needs loss= \(the loss the network was trained with"),
    ("mse", "labels", r"'mse', a regression loss, has no probabilities.*output='logits'"),
    (("huber", 2.0), "probabilities", r"'huber', a regression loss"),
    (lambda o, t: (o - t) ** 2, "probabilities", r"a callable loss has no probabilities"),
    ("crossentropy", "probabilities", r"unknown loss 'crossentropy'; did you mean 'cross_entropy'"),
])
def test_probabilities_need_a_classification_loss(softmax_net, loss, output, message):
    net, params, x = softmax_net
    with pytest.raises(ValueError, match=message):
        jdense.predict(net, params, x, output=output, loss=loss)


def test_population_and_ensemble_outputs(softmax_net):
    net, params, x = softmax_net
    members = jax.tree.map(lambda *a: np.stack(a), params, net.init(jax.random.key(4)))
    logits = np.asarray(jdense.predict(net, members, x, population=True), np.float64)  # (2, n, 3)
    p = np.asarray(jdense.predict(net, members, x, population=True, output="probabilities", loss="cross_entropy"))
    soft = np.exp(logits - logits.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    np.testing.assert_allclose(p, soft, rtol=1e-5, atol=1e-6)
    labels = jdense.predict(net, members, x, population=True, output="labels", loss="cross_entropy")
    np.testing.assert_array_equal(np.asarray(labels), logits.argmax(-1))
    mean = jdense.ensemble_predict(net, members, x)  # default: the members' mean probability
    np.testing.assert_allclose(mean, soft.mean(0), rtol=1e-6)
    np.testing.assert_array_equal(jdense.ensemble_predict(net, members, x, output="labels"), soft.mean(0).argmax(-1))
    np.testing.assert_allclose(jdense.ensemble_predict(net, members, x, output="logits"), logits.mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"'mse', a regression loss"):
        jdense.ensemble_predict(net, members, x, loss="mse", output="labels")


# -- the command line ---------------------------------------------------------------------------------------------------
def _status(argv) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.fixture(autouse=True)
def _no_compilation_cache(monkeypatch):
    monkeypatch.setenv("JDENSE_NO_COMPILATION_CACHE", "1")


def test_cli_metrics_take_commas_or_spaces_and_one_epoch_is_singular(capsys):
    argv = ["train", "--epochs", "1", "--hidden", "8", "--verbose", "0", "--patience", "0", "--metrics"]
    assert cli.main([*argv, "f1", "auc"]) == 0
    spaced = capsys.readouterr().out
    assert cli.main([*argv, "f1,auc"]) == 0
    commas = capsys.readouterr().out
    for out in (spaced, commas):
        assert "auc " in out and "f1 " in out and "(1 epoch in " in out and "1 epochs" not in out


def test_cli_data_errors_use_the_option_spelling_and_exit_2(tmp_path, capsys):
    table = tmp_path / "houses.csv"
    table.write_text("rooms,price\n3,120.5\n4,180.25\n2,99.9\n")
    assert _status(["train", "--data", f"csv:{table}", "--target", "price"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--task regression" in err and 'task="regression"' not in err
    assert _status(["train", "--data", f"csv:{tmp_path / 'missing.csv'}", "--target", "y"]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert _status(["train", "--data", f"mnist:{tmp_path}"]) == 2


def test_cli_choices_suggest_the_closest(capsys):
    assert _status(["train", "--activation", "rellu"]) == 2
    assert "did you mean 'relu'?" in capsys.readouterr().err
    assert _status(["trian"]) == 2
    assert "did you mean 'train'?" in capsys.readouterr().err
    assert _status(["train", "--metrics", "f1_score"]) == 2
    assert "unknown metric 'f1_score'; did you mean 'f1'?" in capsys.readouterr().err
    assert _status(["train", "--data", "digitz"]) == 2
    assert "did you mean 'digits'?" in capsys.readouterr().err
    assert _status(["train", "--task", "regresion", "--data", "csv:x.csv", "--target", "y"]) == 2
    assert "did you mean 'regression'?" in capsys.readouterr().err


def test_cli_help_lists_the_commands_and_points_to_train_help(capsys):
    assert _status(["--help"]) == 0
    out = capsys.readouterr().out
    assert "commands:" in out and "jdense train --help" in out
    assert any(line.split()[:1] == ["train"] and len(line.split()) > 1 for line in out.splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_total_time_does_not_count_the_shells_earlier_commands():
    script = ("import time; t = time.perf_counter(); from jdense.cli import _process_age; "
              "print(_process_age(), time.perf_counter() - t)")
    shell = f"sleep 4 && {sys.executable} -c {textwrap.dedent(repr(script))}"  # bash execs its last command
    out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=180, check=True).stdout
    age, since_import = map(float, out.split())
    assert since_import <= age < since_import + 3.0  # the 4 s of sleep are not this program's


# -- the default batch size shrinks to a small data set; an explicit one too large is still an error (issue 24) ------------
def test_the_default_batch_size_fits_eight_samples_and_an_explicit_one_is_checked():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4)).astype(np.float32), rng.integers(0, 2, 8).astype(np.int32)
    net = jdense.mlp([4, 2])
    params = net.init(jax.random.key(0))
    kw = dict(loss="cross_entropy", epochs=2, key=jax.random.key(1), verbose=0)
    default = jdense.fit(net, params, x, y, **kw)
    whole = jdense.fit(net, params, x, y, batch_size=8, **kw)  # the default became the whole set: the same steps
    for a, b in zip(jax.tree.leaves(default.params), jax.tree.leaves(whole.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    pop = jdense.fit_population(net, x, y, members=2, **kw)
    assert pop.history["loss"].shape == (2, 2)
    with pytest.raises(ValueError, match=r"batch_size=32 is larger than the data set \(8 samples\)"):
        jdense.fit(net, params, x, y, batch_size=32, **kw)
    with pytest.raises(ValueError, match=r"batch_size=16 is larger than the data set \(8 samples\)"):
        jdense.fit_population(net, x, y, members=2, batch_size=16, **kw)


# -- a wrong object is named by its type, never by a several-hundred-character repr (issue 24) -----------------------------
_BIG = np.arange(300.0)  # repr: well over 1,000 characters


@pytest.mark.parametrize("call, type_name", [
    (lambda net, p, x, y: jdense.fit(net, p, x, y, loss=optax.adam(1e-3), key=jax.random.key(0), verbose=0), "optax"),
    (lambda net, p, x, y: jdense.fit(net, p, x, y, loss="cross_entropy", metrics=[optax.adam(1e-3)], key=jax.random.key(0),
                                     verbose=0), "optax"),
    (lambda net, p, x, y: jdense.mlp([4, 5, 3], activation=_BIG), "numpy.ndarray"),
    (lambda net, p, x, y: jdense.optimizer(net, _BIG), "numpy.ndarray"),
    (lambda net, p, x, y: jdense.optimizer(net, "adam", learning_rate=_BIG), "numpy.ndarray"),
    (lambda net, p, x, y: jdense.BestCheckpoint(_BIG), "numpy.ndarray"),
    (lambda net, p, x, y: jdense.fit_population(net, x, y, members=_BIG, loss="cross_entropy", key=jax.random.key(0)),
     "numpy.ndarray"),
    (lambda net, p, x, y: jdense.fit_population(net, x, y, members=[_BIG], loss="cross_entropy", key=jax.random.key(0)),
     "numpy.ndarray"),
    (lambda net, p, x, y: jdense.fit(net, p, x, y, loss="cross_entropy", key=_BIG), "numpy.ndarray"),
])
def test_a_wrong_object_is_named_by_its_type_in_a_short_message(call, type_name):
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int32)
    net = jdense.mlp([4, 3])
    with pytest.raises((TypeError, ValueError)) as info:
        call(net, net.init(jax.random.key(0)), x, y)
    message = str(info.value)
    assert type_name in message and len(message) < 200, message


# -- predict(activation=...) is pointed to output= and loss= (issue 24) -------------------------------------------------
def test_predict_and_ensemble_predict_point_activation_to_output_and_loss():
    net = jdense.mlp([4, 1])
    params = net.init(jax.random.key(0))
    x = np.zeros((3, 4), np.float32)
    for call, owner in ((lambda **kw: jdense.predict(net, params, x, **kw), "predict"),
                        (lambda **kw: jdense.ensemble_predict(net, params, x, **kw), "ensemble_predict")):
        with pytest.raises(TypeError, match=rf"^{owner} has no argument 'activation'; .*output='probabilities'.*"
                                            r"loss='binary_cross_entropy' for a sigmoid"):
            call(activation="sigmoid")
        with pytest.raises(TypeError, match=rf"^{owner} got an unexpected keyword argument 'batchsize'; did you mean "
                                            r"'batch_size'\?"):
            call(batchsize=2)
    p = jdense.predict(net, params, x, output="probabilities", loss="binary_cross_entropy")  # what the hint says works
    np.testing.assert_allclose(np.asarray(p), 1 / (1 + np.exp(-np.asarray(net.apply(params, x)))), rtol=1e-6)
