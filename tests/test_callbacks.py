"""Callbacks: EarlyStopping, BestCheckpoint, ProgressBar and the callback protocol.

The monitors are first driven by hand with scripted logs (fast, exact), against a
reference rule written here (Keras's: a counter of epochs without an improvement larger
than ``min_delta``, reset on improvement; stop when it reaches ``patience``), then inside
real ``jdense.fit`` runs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jdense

KEY = jax.random.key(3)


def _params_at(epoch):
    """Distinct params and state per scripted epoch, so that restoring the wrong one shows."""
    return {"dense_0": {"w": jnp.full((2, 2), float(epoch)), "b": jnp.full((2,), -float(epoch))}}, {
        "batch_norm_0": {"mean": jnp.full((2,), 10.0 + epoch)}
    }


def _drive(cb, values, monitor="val_loss", extra=None):
    """Run ``cb`` over scripted epochs; returns the epoch at which it asked to stop (or None)."""
    cb.on_train_begin()
    for epoch, value in enumerate(values):
        params, state = _params_at(epoch)
        logs = {"loss": 1.0, monitor: value, **(extra or {})}
        if cb.on_epoch_end(epoch, logs, params, opt_state=("opt", epoch), state=state):
            return epoch
    return None


def _reference_stop(values, patience, min_delta=0.0, sign=1.0):
    """(stop epoch or None, best epoch): Keras's wait counter."""
    best, best_epoch, wait = math.inf, None, 0
    for epoch, value in enumerate(values):
        if sign * value < best - min_delta:
            best, best_epoch, wait = sign * value, epoch, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch, best_epoch
    return None, best_epoch


# --------------------------------------------------------------------------- EarlyStopping, scripted

SCRIPT = [1.0, 0.8, 0.9, 0.85, 0.95, 0.7, 0.75]


@pytest.mark.parametrize("patience", [0, 1, 2, 3, 4, 10])
def test_early_stopping_patience_on_scripted_logs(patience):
    stop = jdense.EarlyStopping("val_loss", patience=patience)
    expected_stop, expected_best = _reference_stop(SCRIPT, patience)
    assert _drive(stop, SCRIPT) == expected_stop
    assert stop.stopped_epoch == expected_stop
    assert stop.best_epoch == expected_best
    params, state = stop.on_train_end(*_params_at(99))
    best_params, best_state = _params_at(expected_best)
    jax.tree.map(np.testing.assert_array_equal, params, best_params)
    jax.tree.map(np.testing.assert_array_equal, state, best_state)


def test_early_stopping_stop_epochs_are_the_documented_ones():
    # Written out once, independently of the reference function above.
    assert _drive(jdense.EarlyStopping(patience=3), SCRIPT) == 4  # best at 1; 2, 3, 4 without improvement
    assert _drive(jdense.EarlyStopping(patience=0), SCRIPT) == 2
    assert _drive(jdense.EarlyStopping(patience=4), SCRIPT) is None  # epoch 5 improves in time


def test_early_stopping_min_delta():
    values = [1.0, 0.95, 0.92, 0.915, 0.912, 0.8]
    for min_delta, expected_stop, expected_best in [(0.1, 2, 0), (0.01, 4, 2), (0.0, None, 5)]:
        stop = jdense.EarlyStopping(patience=2, min_delta=min_delta)
        assert _drive(stop, values) == _reference_stop(values, 2, min_delta=min_delta)[0] == expected_stop
        assert stop.best_epoch == expected_best


def test_float32_rounding_is_not_an_improvement():
    """The same loss summed in another batch order differs in its last bits (1 ulp ~ 1.2e-7 at 1.0)."""
    ulp = float(np.spacing(np.float32(1.0)))
    assert _drive(jdense.EarlyStopping(patience=2), [1.0, 1.0 - ulp, 1.0 - 2 * ulp, 1.0 - 3 * ulp]) == 2
    assert _drive(jdense.EarlyStopping(patience=2, mode="max", monitor="val_accuracy"),
                  [0.5, 0.5 + ulp, 0.5 + 2 * ulp], monitor="val_accuracy") == 2
    assert _drive(jdense.EarlyStopping(patience=2), [1.0, 1.0 - 1e-5, 1.0 - 2e-5, 1.0 - 3e-5]) is None  # real, if small


@pytest.mark.parametrize(
    "monitor, mode, sign",
    [("val_accuracy", "auto", -1.0), ("accuracy", "auto", -1.0), ("val_auc", "max", -1.0),
     ("val_accuracy", "min", 1.0), ("val_loss", "auto", 1.0)],
)
def test_early_stopping_mode(monitor, mode, sign):
    values = [0.5, 0.6, 0.55, 0.58, 0.4, 0.7]
    stop = jdense.EarlyStopping(monitor, patience=2, mode=mode)
    expected_stop, expected_best = _reference_stop(values, 2, sign=sign)
    assert _drive(stop, values, monitor=monitor) == expected_stop
    assert stop.best_epoch == expected_best
    assert expected_best == (1 if sign < 0 else 0)


def test_early_stopping_keeps_a_copy_of_the_best_params():
    """fit donates the live buffers to the next epoch: the callback must copy what it keeps."""
    stop = jdense.EarlyStopping(patience=5)
    stop.on_train_begin()
    params, state = _params_at(7)
    stop.on_epoch_end(0, {"val_loss": 0.5}, params, opt_state=None, state=state)
    for leaf in jax.tree.leaves((params, state)):
        leaf.delete()  # what donation does to them
    restored_params, restored_state = stop.on_train_end(*_params_at(8))
    jax.tree.map(np.testing.assert_array_equal, restored_params, _params_at(7)[0])
    jax.tree.map(np.testing.assert_array_equal, restored_state, _params_at(7)[1])


def test_early_stopping_without_restore_returns_none():
    stop = jdense.EarlyStopping(patience=1, restore_best=False)
    assert _drive(stop, SCRIPT) == 2
    assert stop.on_train_end(*_params_at(9)) is None


def test_early_stopping_resets_on_train_begin():
    stop = jdense.EarlyStopping(patience=1)
    assert _drive(stop, [0.1, 0.2]) == 1
    assert _drive(stop, [5.0, 4.0, 3.0]) is None  # a second run starts from scratch
    assert stop.best_epoch == 2 and stop.stopped_epoch is None


def test_monitoring_a_missing_key_raises_a_helpful_error():
    stop = jdense.EarlyStopping("val_loss", patience=1)
    stop.on_train_begin()
    with pytest.raises(ValueError, match=r"cannot monitor 'val_loss'.*\['accuracy', 'loss'\].*validation_data="):
        stop.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5}, _params_at(0)[0])
    save = jdense.BestCheckpoint(lambda *a, **k: None, monitor="val_acc")
    save.on_train_begin()
    with pytest.raises(ValueError, match=r"cannot monitor 'val_acc'"):
        save.on_epoch_end(0, {"loss": 1.0}, _params_at(0)[0])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [(dict(patience=-1), ValueError, r"patience must be an int >= 0"),
     (dict(patience=1.5), TypeError, r"patience must be an int, got 1\.5 of type float"),
     (dict(monitor=5), TypeError, r"monitor must be the name of a logged value"),
     (dict(mode="maximum"), ValueError, r"unknown mode 'maximum'; did you mean 'max'"),
     (dict(min_delta=-0.1), ValueError, r"min_delta must be >= 0")],
)
def test_early_stopping_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        jdense.EarlyStopping(**kwargs)


def test_early_stopping_nan_in_first_epoch():
    values = [math.nan, math.nan, math.nan]
    stop = jdense.EarlyStopping(patience=2)
    assert _drive(stop, values) == _reference_stop(values, 2)[0] == 1
    assert stop.on_train_end(*_params_at(5)) is None  # nothing to restore


# --------------------------------------------------------------------------- BestCheckpoint, scripted


class Saver:
    def __init__(self):
        self.calls = []

    def __call__(self, params, *, opt_state, state, epoch, metrics):
        self.calls.append(dict(params=jax.tree.map(np.array, params), opt_state=opt_state,
                               state=jax.tree.map(np.array, state), epoch=epoch, metrics=metrics))


def test_best_checkpoint_saves_only_on_improvement():
    saver = Saver()
    values = [1.0, 0.8, 0.9, 0.7, 0.7, 0.75]
    assert _drive(jdense.BestCheckpoint(saver), values, extra={"accuracy": 0.25}) is None  # never stops
    assert [c["epoch"] for c in saver.calls] == [0, 1, 3]  # 0.7 again at epoch 4 is no improvement
    for call in saver.calls:
        assert call["metrics"] == {"loss": 1.0, "val_loss": values[call["epoch"]], "accuracy": 0.25}
        assert call["opt_state"] == ("opt", call["epoch"])
        params, state = _params_at(call["epoch"])
        jax.tree.map(np.testing.assert_array_equal, call["params"], params)
        jax.tree.map(np.testing.assert_array_equal, call["state"], state)


def test_best_checkpoint_mode_max_and_min_delta():
    saver = Saver()
    _drive(jdense.BestCheckpoint(saver, monitor="val_accuracy", min_delta=0.05), [0.5, 0.52, 0.6, 0.9, 0.92],
           monitor="val_accuracy")
    assert [c["epoch"] for c in saver.calls] == [0, 2, 3]


def test_best_checkpoint_needs_a_callable():
    with pytest.raises(TypeError, match=r"save must be a callable"):
        jdense.BestCheckpoint("checkpoints/")


def test_callback_base_class_is_a_no_op():
    cb = jdense.Callback()
    cb.on_train_begin()
    assert cb.on_epoch_end(0, {"loss": 1.0}, {}, opt_state=None, state=None) is None
    assert cb.on_train_end({}, {}) is None


# --------------------------------------------------------------------------- inside fit


D = 3
NET = jdense.mlp([D, 4, 2])


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = np.tanh(x @ rng.normal(size=(D, 2))).astype(np.float32)
    return x, y


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"dense_0": {"w": jnp.asarray(rng.normal(size=(D, 4)) / 2, jnp.float32), "b": jnp.zeros(4, jnp.float32)},
            "dense_1": {"w": jnp.asarray(rng.normal(size=(4, 2)) / 2, jnp.float32), "b": jnp.zeros(2, jnp.float32)}}


X, Y = _data()
X_CLS = X
Y_CLS = (X[:, 0] > 0).astype(np.int32)
DESCENT_STEPS = 3


def test_early_stopping_and_best_checkpoint_in_fit(capsys):
    """Batch GD whose learning rate turns negative after 3 steps: the validation loss (on the
    training set) falls for epochs 0-2 and rises afterwards, so the best epoch is 2 and
    patience=2 stops training at epoch 4."""
    schedule = lambda count: jnp.where(count < DESCENT_STEPS, 0.05, -0.05)
    stop = jdense.EarlyStopping("val_loss", patience=2)
    saver = Saver()
    result = jdense.fit(NET, _params(), X, Y, loss="mse", optimizer=optax.sgd(schedule), epochs=20, batch_size=None,
                        key=KEY, validation_data=(X, Y), callbacks=[stop, jdense.BestCheckpoint(saver)], verbose=0)
    val = result.history["val_loss"]
    assert result.epochs == 5 and len(val) == 5 and len(result.history["loss"]) == 5
    assert np.all(np.diff(val[:DESCENT_STEPS]) < 0) and np.all(np.diff(val[DESCENT_STEPS - 1 :]) > 0)
    assert stop.best_epoch == 2 and stop.stopped_epoch == 4
    assert [c["epoch"] for c in saver.calls] == [0, 1, 2]
    assert saver.calls[-1]["metrics"]["val_loss"] == val[2]
    # restore_best hands back exactly what BestCheckpoint saved at the best epoch.
    jax.tree.map(np.testing.assert_array_equal, result.params, saver.calls[-1]["params"])
    # ... which are the best epoch's params, not the last epoch's.
    final = jdense.evaluate(NET, result.params, X, Y, loss="mse")
    np.testing.assert_allclose(final["loss"], val[2], rtol=1e-6)
    assert val[-1] > val[2] * (1 + 1e-4)
    assert capsys.readouterr().out == ""  # verbose=0


def test_early_stopping_on_a_missing_key_in_fit():
    with pytest.raises(ValueError, match=r"cannot monitor 'val_loss'.*validation_data="):
        jdense.fit(NET, _params(), X, Y, loss="mse", optimizer=optax.sgd(0.1), epochs=3, batch_size=4, key=KEY,
                   callbacks=[jdense.EarlyStopping()], verbose=0)


# --------------------------------------------------------------------------- ProgressBar


def _fit_cls(verbose, epochs=2, callbacks=()):
    return jdense.fit(NET, _params(1), X_CLS, Y_CLS, loss="cross_entropy", optimizer=optax.sgd(0.1), epochs=epochs,
                      batch_size=5, key=KEY, validation_data=(X_CLS[:6], Y_CLS[:6]), callbacks=callbacks,
                      verbose=verbose)


def test_verbose_0_prints_nothing(capsys):
    _fit_cls(verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_verbose_2_prints_one_line_per_epoch_and_a_duck_typed_callback_stops(capsys):
    class StopAfterSecond:  # no base class: any object with on_epoch_end works
        def __init__(self):
            self.seen = []

        def on_epoch_end(self, epoch, logs, params, *, opt_state, state):
            self.seen.append((epoch, sorted(logs)))
            return epoch == 1

    cb = StopAfterSecond()
    result = _fit_cls(verbose=2, epochs=4, callbacks=[cb])
    assert result.epochs == 2 and len(result.history["loss"]) == 2
    assert [e for e, _ in cb.seen] == [0, 1]
    assert cb.seen[0][1] == ["accuracy", "loss", "val_accuracy", "val_loss"]
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"epoch {epoch}/4 ")
        for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert f"{name} " in line
        assert f"loss {result.history['loss'][epoch - 1]:.4f}" in line
    assert "epoch/s" not in captured.err  # no progress bar


def test_verbose_1_shows_the_bar_only(capsys):
    _fit_cls(verbose=1)
    captured = capsys.readouterr()
    assert captured.out == ""  # no line per epoch
    assert "2/2" in captured.err and "val_loss=" in captured.err  # tqdm's bar, metrics in its postfix
    assert "epoch 1/2" not in captured.err


def test_progress_bar_refuses_an_unknown_verbose():
    with pytest.raises(ValueError, match="verbose must be 0"):
        jdense.ProgressBar(epochs=3, verbose=3)


def test_progress_bar_driven_directly(capsys):
    bar = jdense.ProgressBar(epochs=3, verbose=2, initial_epoch=1)
    bar.on_train_begin()
    assert bar.on_epoch_end(1, {"loss": 0.5, "mse": 0.25}, {}) is False
    bar.on_train_end({}, {})
    out = capsys.readouterr().out
    assert out.startswith("epoch 2/3  loss 0.5000  mse 0.2500")
    silent = jdense.ProgressBar(epochs=3, verbose=0)
    silent.on_train_begin()
    silent.on_epoch_end(0, {"loss": 0.5}, {})
    silent.on_train_end({}, {})
    assert capsys.readouterr() == ("", "")


# --------------------------------------------------------------------------- ReduceLROnPlateau


def test_reduce_lr_on_plateau_follows_keras_rule():
    """patience 2, factor 0.5, cooldown 1 on a scripted monitor (Keras's ReduceLROnPlateau, worked by hand)."""
    cb = jdense.ReduceLROnPlateau("val_loss", factor=0.5, patience=2, cooldown=1)
    rate, used = 1.0, []
    for epoch, value in enumerate([1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8]):
        used.append(rate)
        change = cb.adjust_hyperparams(epoch, {"val_loss": value}, {"learning_rate": rate})
        rate = change["learning_rate"] if change else rate
    assert used == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25]
    floor = jdense.ReduceLROnPlateau("loss", factor=0.1, patience=0, min_lr=0.05)
    floor.adjust_hyperparams(0, {"loss": 1.0}, {"learning_rate": 0.2})
    assert floor.adjust_hyperparams(1, {"loss": 2.0}, {"learning_rate": 0.2}) == {"learning_rate": 0.05}
    assert floor.adjust_hyperparams(2, {"loss": 2.0}, {"learning_rate": 0.05}) is None


def test_reduce_lr_on_plateau_in_fit_logs_the_rate_and_compiles_nothing():
    net = jdense.mlp([4, 6, 3])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype(np.float32), rng.integers(0, 3, 40)
    kw = dict(loss="cross_entropy", epochs=4, batch_size=8, key=jax.random.key(0), verbose=0)
    run = lambda: jdense.fit(net, net.init(jax.random.key(1)), x, y, optimizer=jdense.optimizer(net, "sgd", 0.1),  # noqa: E731
                             callbacks=[jdense.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0)], **kw)
    run()
    from test_train import CompileCounter

    with CompileCounter() as counter:
        result = run()
    assert counter.count == 0, counter.names
    assert result.history["learning_rate"] == [0.1, 0.1, 0.05, 0.025]


@pytest.mark.parametrize("kwargs, match", [({"factor": 1.0}, "factor must be in"), ({"patience": -1}, "patience"),
                                           ({"min_lr": -1.0}, "min_lr")])
def test_reduce_lr_on_plateau_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jdense.ReduceLROnPlateau(**kwargs)


# --------------------------------------------------------------------------- directions declared by the metrics

RNG = np.random.default_rng(7)
XD = RNG.normal(size=(120, 5)).astype(np.float32)
YD = ((XD[:, 0] + 0.5 * XD[:, 1] + RNG.normal(scale=0.8, size=120)) > 0).astype(np.int32)
GROWING = ["val_auc", "val_f1", "val_precision", "val_recall"]


def hits(outputs, targets):
    """A callable metric that declares its direction: 1 per correct prediction (higher is better)."""
    return (jnp.argmax(outputs, -1) == targets).astype(jnp.float32)


hits.higher_is_better = True


def misses(outputs, targets):
    """A callable metric without a declaration: lower is better."""
    return (jnp.argmax(outputs, -1) != targets).astype(jnp.float32)


def _expected(values, sign):
    """Independent rule: the epochs at which ``sign * value`` reaches a new best (ties and float32 rounding never)."""
    best, epochs = math.inf, []
    for epoch, v in enumerate(values):
        if sign * v < best - (1e-6 * abs(best) if math.isfinite(best) else 0.0):
            best = sign * v
            epochs.append(epoch)
    return epochs


@pytest.fixture(scope="module")
def direction_run():
    """One fit with an EarlyStopping and a BestCheckpoint per monitor and ReduceLROnPlateau on val_auc."""
    net = jdense.mlp([5, 8, 2])
    monitors = [*GROWING, "val_hits", "val_misses"]
    stops = {m: jdense.EarlyStopping(m, patience=100, restore_best=False) for m in monitors}
    saved = {m: [] for m in monitors}
    bests = {m: jdense.BestCheckpoint(lambda p, epoch, m=m, **kw: saved[m].append(epoch), monitor=m) for m in monitors}
    plateau = jdense.ReduceLROnPlateau("val_auc", factor=0.5, patience=1)
    result = jdense.fit(net, net.init(jax.random.key(0)), XD[:80], YD[:80], loss="cross_entropy",
                        optimizer=jdense.optimizer(net, "sgd", 0.5), epochs=8, batch_size=16, key=KEY, verbose=0,
                        validation_data=(XD[80:], YD[80:]), metrics=["auc", "f1", "precision", "recall", hits, misses],
                        callbacks=[*stops.values(), *bests.values(), plateau])
    return result, stops, saved


@pytest.mark.parametrize("monitor, higher", [*((m, True) for m in GROWING), ("val_hits", True), ("val_misses", False)])
def test_monitors_follow_the_metrics_declared_direction(direction_run, monitor, higher):
    result, stops, saved = direction_run
    values = result.history[monitor]
    assert len(set(values)) > 1  # the metric moved, so a wrong direction would show
    improving = _expected(values, -1.0 if higher else 1.0)
    assert stops[monitor].best_epoch == improving[-1]
    assert saved[monitor] == improving


def test_reduce_lr_on_plateau_maximises_val_auc(direction_run):
    """The learning rate history follows Keras's rule with "improved" meaning a higher val_auc."""
    result, _, _ = direction_run
    auc, rate, expected = result.history["val_auc"], 0.5, []
    best, wait = -math.inf, 0
    for v in auc:
        expected.append(rate)
        if v > best + (1e-6 * abs(best) if math.isfinite(best) else 0.0):
            best, wait = v, 0
        else:
            wait += 1
            if wait >= 1:
                rate, wait = rate * 0.5, 0
    np.testing.assert_allclose(result.history["learning_rate"], expected, rtol=1e-6)


def test_auto_mode_reads_the_declaration_and_known_names():
    assert jdense.metrics.higher_is_better("val_auc") and jdense.metrics.higher_is_better("top_3_accuracy")
    assert not jdense.metrics.higher_is_better("val_loss") and not jdense.metrics.higher_is_better("val_score")
    declared, undeclared = jdense.metrics.get_metric(hits), jdense.metrics.get_metric(misses)
    assert declared.higher_is_better and not undeclared.higher_is_better
    assert jdense.metrics.higher_is_better("val_score", [dataclasses_replace(declared, name="score")])
    stop = jdense.EarlyStopping("val_f1", patience=1)
    assert _drive(stop, [0.5, 0.6, 0.7, 0.65], monitor="val_f1") == 3 and stop.best_epoch == 2
    with pytest.raises(TypeError, match=r"higher_is_better must be True or False"):
        jdense.metrics.get_metric(_declared("yes"))


def _declared(value):
    def score(outputs, targets):
        return jnp.zeros(outputs.shape[0])

    score.higher_is_better = value
    return score


def dataclasses_replace(metric, **changes):
    import dataclasses

    return dataclasses.replace(metric, **changes)


def test_population_best_takes_the_metrics_direction():
    net = jdense.mlp([5, 8, 2])
    pop = jdense.fit_population(net, XD[:80], YD[:80], members=jdense.grid(learning_rate=[1e-3, 3e-2, 3e-1]),
                                loss="cross_entropy", epochs=3, batch_size=16, key=KEY, verbose=0,
                                validation_data=(XD[80:], YD[80:]), metrics=["auc", "f1", hits])
    for monitor in ("val_auc", "val_f1", "val_hits"):
        last = pop.history[monitor][-1]
        assert len(set(last.tolist())) > 1
        assert pop.best(monitor) == int(np.argmax(last))
    assert pop.best("val_loss") == int(np.argmin(pop.history["val_loss"][-1]))
    assert pop.best("val_auc", mode="min") == int(np.argmin(pop.history["val_auc"][-1]))


# -- a monitor's typo gets the closest logged name (issue 24) -----------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda m: jdense.BestCheckpoint(lambda *a, **k: None, monitor=m),
    lambda m: jdense.EarlyStopping(monitor=m),
    lambda m: jdense.ReduceLROnPlateau(monitor=m),
])
def test_a_monitor_typo_suggests_the_logged_name(make):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype(np.float32), rng.integers(0, 2, 16).astype(np.int32)
    net = jdense.mlp([3, 2])
    params = net.init(KEY)
    with pytest.raises(ValueError, match=r"cannot monitor 'val_acc'; did you mean 'val_accuracy'\?"):
        jdense.fit(net, params, x, y, loss="cross_entropy", optimizer=jdense.optimizer(net, "adam", 1e-3), key=KEY,
                   validation_data=(x, y), callbacks=[make("val_acc")], verbose=0)
    cb = make("val_los")  # driven by hand: the logs' own keys
    cb.on_train_begin()
    hook = getattr(cb, "adjust_hyperparams", None)
    logs = {"loss": 1.0, "val_loss": 1.0}
    with pytest.raises(ValueError, match=r"cannot monitor 'val_los'; did you mean 'val_loss'\?"):
        hook(0, logs, {"learning_rate": 1e-3}) if hook else cb.on_epoch_end(0, logs, params)


def test_population_best_suggests_the_history_name():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype(np.float32), rng.integers(0, 2, 16).astype(np.int32)
    pop = jdense.fit_population(jdense.mlp([3, 2]), x, y, members=2, loss="cross_entropy", key=KEY, validation_data=(x, y),
                                verbose=0)
    with pytest.raises(ValueError, match=r"cannot rank by 'val_acc'; did you mean 'val_accuracy'\?"):
        pop.best("val_acc")
