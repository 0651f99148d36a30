"""Reliability, second round (issue 19): populations, ensembles, LoRA/8-bit, callbacks and loggers refuse bad input
before any compute, naming the argument; a compile-event listener checks "before compute"."""

import contextlib
import math
import os

import jax
import numpy as np
import pytest

import jdense

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def no_compile():
    """Fails when XLA compiles anything inside the block (the refusals must come before any program runs)."""
    compiled = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not compiled, f"{len(compiled)} programs compiled before the error"


def test_the_listener_sees_a_compile():
    with pytest.raises(AssertionError, match="programs compiled"), no_compile():
        jax.jit(lambda a: a * 3.0 + 1.0)(np.arange(7.0))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 4)).astype(np.float32), rng.integers(0, 3, 40).astype(np.int32)


@pytest.fixture(scope="module")
def population(data):
    x, y = data
    net = jdense.mlp([4, 6, 3], batch_norm=True)
    pop = jdense.fit_population(net, x, y, members=[{"learning_rate": 1e-3}, {"learning_rate": 3e-3, "lambda_": 1e-4},
                                                    {"learning_rate": 1e-2}],
                                loss="cross_entropy", epochs=1, batch_size=20, key=jax.random.key(0), verbose=0)
    return net, pop


# -- populations: arguments checked against each other ---------------------------------------------------------------
def test_layers_of_populations_of_different_sizes_are_refused(population, data):
    net, pop = population
    x, y = data
    mixed = {**pop.params, "dense_1": jax.tree.map(lambda a: a[:2], pop.params["dense_1"])}
    with no_compile():
        with pytest.raises(ValueError, match=r"predict: population=True needs one member axis, but params\['batch_norm_0'\]"
                                             r"\['bias'\] has 3 members and params\['dense_1'\]\['b'\] has 2"):
            jdense.predict(net, mixed, x, state=pop.state, population=True)
        with pytest.raises(ValueError, match=r"evaluate: population=True needs one member axis.*populations of different sizes"):
            jdense.evaluate(net, mixed, x, y, loss="cross_entropy", state=pop.state, population=True)


def test_a_state_of_another_network_is_refused(population, data):
    net, pop = population
    x, y = data
    other = jdense.mlp([4, 5, 3], batch_norm=True).init_state()
    other = jax.tree.map(lambda a: np.stack([a] * 3), other)
    one_params, one_bn = jax.tree.map(lambda a: a[0], pop.params), net.init_state()["batch_norm_0"]
    with no_compile():
        with pytest.raises(ValueError, match=r"evaluate: state does not fit this network"):
            jdense.evaluate(net, pop.params, x, y, loss="cross_entropy", state=other, population=True)
        with pytest.raises(ValueError, match=r"predict: state does not fit this network"):
            jdense.predict(net, one_params, x, state=one_bn)


def test_one_networks_params_with_a_populations_state_or_the_reverse(population, data):
    net, pop = population
    x, y = data
    one = pop.member(0)
    with no_compile():
        with pytest.raises(ValueError, match=r"predict: state has a leading member axis: it is a population's state"):
            jdense.predict(net, one.params, x, state=pop.state)
        with pytest.raises(ValueError, match=r"evaluate: params have a leading member axis: they are a population's"):
            jdense.evaluate(net, pop.params, x, y, loss="cross_entropy", state=one.state)
        with pytest.raises(ValueError, match=r"predict: population=True, but params are one network's"):
            jdense.predict(net, one.params, x, state=pop.state, population=True)


def test_population_predict_and_evaluate_still_agree_with_each_member(population, data):
    net, pop = population
    x, y = data
    out = np.asarray(jdense.predict(net, pop.params, x, state=pop.state, population=True))
    for i in range(len(pop)):
        member = pop.member(i)
        np.testing.assert_allclose(out[i], np.asarray(jdense.predict(net, member.params, x, state=member.state)),
                                   rtol=1e-5, atol=1e-6)


def test_hyperparams_of_a_population_state_one_entry_per_member(population):
    net, pop = population
    hp = jdense.hyperparams(pop.opt_state)
    np.testing.assert_allclose(hp["learning_rate"], [1e-3, 3e-3, 1e-2], rtol=1e-6)
    assert np.shape(hp["lambda_"]) == (3, 2) and hp["lambda_"][1] == [1e-4, 1e-4] and hp["lambda_"][0] == [0.0, 0.0]
    state = jdense.set_hyperparams(pop.opt_state, learning_rate=[1e-4, 2e-4, 3e-4], lambda_=0.5)
    hp = jdense.hyperparams(state)
    np.testing.assert_allclose(hp["learning_rate"], [1e-4, 2e-4, 3e-4], rtol=1e-6)
    assert hp["lambda_"] == [[0.5, 0.5]] * 3
    state = jdense.set_hyperparams(pop.opt_state, learning_rate=5e-4, lambda_=[0.0, [1e-3, 2e-3], 1e-2])
    hp = jdense.hyperparams(state)
    assert hp["learning_rate"] == [5e-4] * 3 and hp["lambda_"] == [[0.0, 0.0], [1e-3, 2e-3], [1e-2, 1e-2]]
    with pytest.raises(ValueError, match=r"learning_rate of a population needs one value for all members or one per "
                                         r"member \(3\), got 2"):
        jdense.set_hyperparams(pop.opt_state, learning_rate=[1e-3, 1e-3])
    with pytest.raises(ValueError, match=r"learning_rate \(member 1\) must be a positive float, got 'fast'"):
        jdense.set_hyperparams(pop.opt_state, learning_rate=[1e-3, "fast", 1e-3])
    with pytest.raises(ValueError, match=r"lambda_ of member 0 needs one value per layer \(2\), got 3"):
        jdense.set_hyperparams(pop.opt_state, lambda_=[[0.0] * 3, 0.0, 0.0])


def test_a_population_that_cannot_fit_in_memory_is_refused_before_allocating(data):
    x, y = np.zeros((8, 1000), np.float32), np.zeros(8, np.int32)
    net = jdense.mlp([1000, 1000, 10])
    key = jax.random.key(0)  # made outside: a fresh process compiles its first key
    with no_compile(), pytest.raises(ValueError, match=r"a population of 1,000,000 members needs [\d,]+ bytes \([\d.]+ TiB\).*"
                                                      r"train fewer members at a time.*device holds at most"):
        jdense.fit_population(net, x, y, members=10**6, loss="cross_entropy", epochs=1, batch_size=8,
                              key=key, verbose=0)


# -- ensembles trust neither their labels nor their names ----------------------------------------------------------------
@pytest.mark.parametrize("y, message", [
    (np.zeros(39, np.int32), r"ensemble_evaluate: x has 40 samples but y has 39"),
    (np.full(40, 3, np.int32), r"ensemble_evaluate: 40 labels are outside 0..2 for a network with 3 outputs"),
    (np.r_[np.zeros(39), -1].astype(np.int32), r"1 labels are outside 0..2.*\(e.g. -1\)"),
    (np.zeros(40, np.float32), r"cross_entropy takes integer class labels of shape \(40,\).*pass y.astype\(np.int32\)"),
])
def test_ensemble_evaluate_checks_its_labels(population, data, y, message):
    net, pop = population
    x, _ = data
    with no_compile(), pytest.raises(ValueError, match=message):
        jdense.ensemble_evaluate(net, pop.params, x, y, state=pop.state)


def test_an_ensemble_loss_typo_is_refused_not_averaged_as_logits(population, data):
    net, pop = population
    x, y = data
    with no_compile():
        with pytest.raises(ValueError, match=r"unknown loss 'crossentropy'; did you mean 'cross_entropy'\?"):
            jdense.ensemble_predict(net, pop.params, x, loss="crossentropy", state=pop.state)
        with pytest.raises(ValueError, match=r"unknown loss 'binary_crossentropy'; did you mean 'binary_cross_entropy'"):
            jdense.ensemble_evaluate(net, pop.params, x, y, loss="binary_crossentropy", state=pop.state)
    scores = jdense.ensemble_evaluate(net, pop.params, x, y, state=pop.state)
    p = jdense.ensemble_predict(net, pop.params, x, state=pop.state)
    assert scores["accuracy"] == pytest.approx(float((p.argmax(-1) == y).mean()))
    assert scores["loss"] == pytest.approx(float(-np.log(p[np.arange(40), y]).mean()), rel=1e-6)


# -- values that would make the result NaN or meaningless -------------------------------------------------------------
def test_lora_refuses_an_infinite_or_nan_alpha():
    net = jdense.mlp([4, 3])
    for alpha in (math.inf, math.nan):
        with pytest.raises(ValueError, match=r"alpha must be a finite number > 0.*pass a finite number"):
            jdense.lora(net, 2, alpha=alpha)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quantize_refuses_nonfinite_weights(bad):
    net = jdense.mlp([4, 5, 3])
    params = jax.tree.map(np.array, net.init(jax.random.key(0)))
    params["dense_1"]["w"][2, 1] = bad
    with no_compile(), pytest.raises(ValueError, match=r"params\['dense_1'\]\['w'\] has 1 NaN or infinite weights "
                                                      r"\(the first at \(2, 1\)\)"):
        jdense.quantize(net, params, "int8")


@pytest.mark.parametrize("make, error, message", [
    (lambda: jdense.ReduceLROnPlateau(min_lr=math.inf), ValueError, r"min_lr must be a finite real number >= 0, got inf"),
    (lambda: jdense.ReduceLROnPlateau(min_delta=math.nan), ValueError, r"min_delta must be a finite real number"),
    (lambda: jdense.EarlyStopping(min_delta=math.inf), ValueError, r"min_delta must be a finite real number"),
    (lambda: jdense.EarlyStopping(restore_best="no"), TypeError, r"restore_best must be True or False, got 'no'"),
    (lambda: jdense.EarlyStopping(monitor=5), TypeError, r"monitor must be the name of a logged value.*got 5 of type int"),
    (lambda: jdense.BestCheckpoint(print, monitor=["val_loss"]), TypeError, r"monitor must be the name"),
    (lambda: jdense.CSVLogger("log.csv", append="yes"), TypeError, r"append must be True or False"),
])
def test_callback_values_are_checked_when_made(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_top_k_with_k_at_least_the_classes_warns_as_scikit_learn(data):
    x, y = data
    net = jdense.mlp([4, 3])
    params = net.init(jax.random.key(0))
    with pytest.warns(UserWarning, match=r"evaluate: 'k' \(5\) greater than or equal to the number of classes \(3\) gives "
                                         r"a perfect top_k_accuracy of 1.0, which is meaningless"):
        logs = jdense.evaluate(net, params, x, y, loss="cross_entropy", metrics=["top_k_accuracy", ("top_k_accuracy", 2)])
    assert logs["top_k_accuracy"] == 1.0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # k = 2 < 3 classes: no word
        jdense.evaluate(net, params, x, y, loss="cross_entropy", metrics=[("top_k_accuracy", 2)])


# -- errors that say what is wrong, before any compute ------------------------------------------------------------------
def test_fit_on_a_quantized_network_says_it_is_for_inference(data):
    x, y = data
    net = jdense.mlp([4, 6, 3])
    qnet, qparams = jdense.quantize(net, net.init(jax.random.key(0)), "int8_weight_only")
    with no_compile():
        with pytest.raises(ValueError, match=r"fit: dense_0 is a QuantizedDense: this network is for inference"):
            jdense.fit(qnet, qparams, x, y, loss="cross_entropy", optimizer=jdense.optimizer(qnet), epochs=1,
                       batch_size=8, key=jax.random.key(0), verbose=0)
        with pytest.raises(ValueError, match=r"fit_population: dense_0 is a QuantizedDense"):
            jdense.fit_population(qnet, x, y, members=2, loss="cross_entropy", epochs=1, batch_size=8,
                                  key=jax.random.key(0), verbose=0)


def test_csv_logger_append_to_a_header_without_a_logged_metric_fails_before_training(tmp_path, data):
    x, y = data
    path = tmp_path / "log.csv"
    path.write_text("epoch,loss\n0,1.5\n")
    net = jdense.mlp([4, 3])
    with no_compile(), pytest.raises(ValueError, match=r"CSVLogger: .*log.csv has the columns \['loss'\], but the logs "
                                                      r"add \['accuracy', 'val_accuracy', 'val_loss'\]"):
        jdense.fit(net, net.init(jax.random.key(0)), x, y, loss="cross_entropy", optimizer=jdense.optimizer(net),
                   epochs=1, batch_size=8, key=jax.random.key(0), verbose=0, validation_data=(x, y),
                   callbacks=[jdense.CSVLogger(path, append=True)])
    assert path.read_text() == "epoch,loss\n0,1.5\n"  # untouched


def test_apply_of_text_is_a_type_error_naming_x():
    params = jdense.init(jax.random.key(0), 4, 2)
    net = jdense.mlp([4, 2])
    net_params = net.init(jax.random.key(0))
    with no_compile():
        with pytest.raises(TypeError, match=r"^apply: x must be numeric, got an array of dtype <U1 \(shape \(1, 4\)\)"):
            jdense.apply(params, np.array([["a", "b", "c", "d"]]))
        with pytest.raises(TypeError, match=r"^apply: x must be numeric"):
            net.apply(net_params, [["a", "b", "c", "d"]])


# -- a memory map truncated before the call: an error naming the file, never a SIGBUS (issue 19) ---------------------------
@pytest.fixture
def truncated(tmp_path, data):
    """An x memory map whose file lost rows after it was opened (small: fit reads it into memory)."""
    x, _ = data
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    os.truncate(tmp_path / "x.npy", 128 + 10 * 4 * 4)  # the header and 10 of 40 rows remain
    return xm


@pytest.mark.parametrize("call", ["fit", "validation_data", "evaluate", "predict", "fit_population", "apply"])
def test_a_memory_map_truncated_before_the_call_is_a_value_error_naming_the_file(truncated, data, call):
    x, y = data
    net = jdense.mlp([4, 3])
    params = net.init(jax.random.key(0))
    kw = dict(loss="cross_entropy", epochs=1, batch_size=8, key=jax.random.key(0), verbose=0)
    run = {
        "fit": lambda: jdense.fit(net, params, truncated, y, **kw),
        "validation_data": lambda: jdense.fit(net, params, x, y, validation_data=(truncated, y), **kw),
        "evaluate": lambda: jdense.evaluate(net, params, truncated, y, loss="cross_entropy"),
        "predict": lambda: jdense.predict(net, params, truncated),
        "fit_population": lambda: jdense.fit_population(net, truncated, y, members=2, **kw),
        "apply": lambda: net.apply(params, truncated),
    }[call]
    with no_compile(), pytest.raises(ValueError, match=r"memory map .*x\.npy is 288 bytes but its array needs 768; the file "
                                                      r"was truncated"):
        run()


# -- shape errors name the layer and the caller's array, never a slice of it (issue 24) -------------------------------------
def _train(caller: str, net, params, x, y, **kw):
    """``jdense.fit`` from ``params``, or ``jdense.fit_population`` of 2 members, with the same arguments."""
    if caller == "fit":
        return jdense.fit(net, params, x, y, **kw)
    return jdense.fit_population(net, x, y, members=2, **kw)


def _stream_cases(tmp_path):
    x = np.zeros((256, 3), np.float32)
    y = np.zeros(256, np.int32)
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    return {"memmap": ((xm, y), dict(stream=True), r"\(256, 3\)"), "batches": ((batches, None), {}, r"\(32, 3\)")}


@pytest.mark.parametrize("source", ["memmap", "batches"])
@pytest.mark.parametrize("caller", ["fit", "fit_population"])
def test_a_streamed_source_of_the_wrong_width_shows_its_own_shape(tmp_path, source, caller):
    (x, y), kw, shape = _stream_cases(tmp_path)[source]
    net = jdense.mlp([4, 3])
    common = dict(loss="cross_entropy", epochs=1, key=jax.random.key(0), verbose=0, **kw)
    params = net.init(jax.random.key(0))
    with no_compile(), pytest.raises(ValueError, match=rf"{caller}: x has shape {shape} \(3 features per sample\) but "
                                                      r"dense_0 \(Dense\) expects 4 input features"):
        _train(caller, net, params, x, y, **common)


@pytest.mark.parametrize("caller", ["fit", "fit_population"])
def test_validation_data_of_the_wrong_width_names_the_layer_and_its_shape(data, caller):
    x, y = data
    net = jdense.mlp([4, 3])
    kw = dict(loss="cross_entropy", epochs=1, batch_size=8, key=jax.random.key(0), verbose=0, validation_data=(x[:, :3], y))
    params = net.init(jax.random.key(0))
    with no_compile(), pytest.raises(ValueError, match=rf"^{caller}\(validation_data\): x has shape \(40, 3\) \(3 features "
                                                      r"per sample\) but dense_0 \(Dense\) expects 4"):
        _train(caller, net, params, x, y, **kw)


def test_ensemble_predict_of_one_networks_params_names_itself(population, data):
    net, pop = population
    x, y = data
    with no_compile():
        for call, what in ((lambda: jdense.ensemble_predict(net, pop.member(0).params, x, state=pop.state),
                            "ensemble_predict"),
                           (lambda: jdense.ensemble_evaluate(net, pop.member(0).params, x, y, state=pop.state),
                            "ensemble_evaluate")):
            with pytest.raises(ValueError, match=rf"^{what}: params are one network's \(no member axis\); pass a "
                                                 r"population's params"):
                call()


def test_the_population_memory_check_counts_each_devices_share(monkeypatch):
    from types import SimpleNamespace

    from jdense import population as population_lib

    net = jdense.mlp([100, 100, 10])
    one = jax.eval_shape(net.init, jax.random.key(0))
    tx = jdense.optimizer(net, "adam", 1e-3)
    per_member = sum(math.prod(a.shape) * 4 for a in jax.tree.leaves(one)) * 3  # params, adam's mu and nu
    monkeypatch.setattr(jdense.checks, "device_capacity", lambda: (10 * per_member + per_member // 2, "a test device"))
    with pytest.raises(ValueError, match=r"a population of 40 members needs .*40 x"):
        population_lib._fits_device(40, one, tx)  # on one device: 40 members > 10.5
    four = SimpleNamespace(padded=40, mesh=SimpleNamespace(devices=np.empty(4, object)))
    with pytest.raises(ValueError, match=r"a population of 40 members needs .*40 x .*\(the result gathers them onto one "
                                         r"device\)"):
        population_lib._fits_device(40, one, tx, four)  # trains as 10 per device, but the result holds all 40
    population_lib._fits_device(40, one, tx, four, landing=10)  # gather=False: 10 per device, 10 land: they fit
    with pytest.raises(ValueError, match=r"a population of 44 members on 4 devices needs .*11 members per device"):
        population_lib._fits_device(44, one, tx, SimpleNamespace(padded=44, mesh=SimpleNamespace(devices=np.empty(4, object))),
                                    landing=10)
