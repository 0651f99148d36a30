"""Populations: each member of fit_population trains as jdense.fit trains it alone.

The reference for member ``i`` is a separate ``jdense.fit`` of a network carrying the
member's ``lambda_`` and dropout rate, from ``net.init(jax.random.key(seed_i))``, with
``jdense.optimizer(net_i, base, learning_rate_i)`` and the same key (hence the same
batch order and dropout masks). Populations run as one vmapped program, so the match is
up to float rounding.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import jdense

MEMBER_TOL = 1e-4  # |member param - separate fit param| after 3 epochs (float rounding of batched matmuls)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(80, 6)).astype(np.float32)
Y = ((X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0.5).astype(np.int32))
XV, YV = X[:24], Y[:24]
NET = jdense.mlp([6, 12, 3], dropout=0.2)
KW = dict(loss="cross_entropy", epochs=3, batch_size=16, key=jax.random.key(4), verbose=0)


def _alone(net, member, **kw):
    layers = [dataclasses.replace(layer, lambda_=member.get("lambda_", layer.lambda_)) if isinstance(layer, jdense.Dense)
              else jdense.Dropout(member.get("dropout", layer.rate)) for layer in net.layers]
    net_i = jdense.Sequential(layers)
    return jdense.fit(net_i, net_i.init(jax.random.key(member["seed"])), X, Y,
                      optimizer=jdense.optimizer(net_i, "adam", member.get("learning_rate", 1e-3)), **{**KW, **kw})


@pytest.fixture(scope="module")
def grid_population():
    members = jdense.grid(learning_rate=[1e-3, 2e-2], lambda_=[0.0, 1e-2], dropout=[0.0, 0.3])
    return jdense.fit_population(NET, X, Y, members=members, validation_data=(XV, YV), **KW)


def test_grid_is_the_cartesian_product():
    members = jdense.grid(learning_rate=[1e-3, 3e-3, 1e-2], lambda_=[0.0, 1e-4], seed=range(5))
    assert len(members) == 30
    assert members[0] == {"learning_rate": 1e-3, "lambda_": 0.0, "seed": 0}
    assert members[1] == {"learning_rate": 1e-3, "lambda_": 0.0, "seed": 1}
    assert members[-1] == {"learning_rate": 1e-2, "lambda_": 1e-4, "seed": 4}
    with pytest.raises(ValueError, match="grid axis 'seed' is empty"):
        jdense.grid(seed=[])
    with pytest.raises(TypeError, match="grid axis 'learning_rate' must be an iterable"):
        jdense.grid(learning_rate=1e-3)


@pytest.mark.parametrize("i", [3, 6])  # (lr 1e-3, lambda_ 1e-2, dropout 0.3) and (lr 2e-2, lambda_ 1e-2, dropout 0)
def test_members_equal_separate_fits(grid_population, i):
    member = grid_population.members[i]
    alone = _alone(NET, member, validation_data=(XV, YV))
    mine = grid_population.member(i)
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(mine.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=MEMBER_TOL, rtol=0)
    np.testing.assert_allclose(mine.history["val_loss"], alone.history["val_loss"], atol=MEMBER_TOL)
    assert mine.epochs == alone.epochs == 3


def test_result_shapes_and_population_predict(grid_population):
    pop = grid_population
    assert pop.history["loss"].shape == (3, 8) and pop.history["val_accuracy"].shape == (3, 8)
    assert pop.epochs.tolist() == [3] * 8
    assert jax.tree.leaves(pop.params)[0].shape[0] == 8
    out = np.asarray(jdense.predict(NET, pop.params, XV, population=True))
    assert out.shape == (8, 24, 3)
    for i in (0, 7):
        member = jax.tree.map(lambda a: a[i], pop.params)
        np.testing.assert_allclose(out[i], np.asarray(NET.apply(member, XV)), atol=1e-6)
    per_member = jdense.evaluate(NET, pop.params, XV, YV, loss="cross_entropy", population=True)
    assert per_member["loss"].shape == (8,)
    np.testing.assert_allclose(per_member["loss"], pop.history["val_loss"][-1], rtol=1e-5)
    best = pop.best("val_loss")
    assert pop.history["val_loss"][-1, best] == np.nanmin(pop.history["val_loss"][-1])
    assert pop.best("val_accuracy") == int(np.argmax(pop.history["val_accuracy"][-1]))


def test_ensemble_averages_member_probabilities(grid_population):
    pop = grid_population
    logits = np.asarray(jdense.predict(NET, pop.params, XV, population=True), np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(jdense.ensemble_predict(NET, pop.params, XV), probs.mean(0), rtol=1e-6)
    ens = jdense.ensemble_evaluate(NET, pop.params, XV, YV)
    mean = probs.mean(0)
    np.testing.assert_allclose(ens["loss"], -np.log(mean[np.arange(24), YV]).mean(), rtol=1e-6)
    assert ens["accuracy"] == np.mean(mean.argmax(-1) == YV)


def test_int_members_are_seeds():
    net = jdense.mlp([6, 8, 3])
    pop = jdense.fit_population(net, X, Y, members=3, **{**KW, "epochs": 2})
    assert [m["seed"] for m in pop.members] == [0, 1, 2]
    alone = _alone(net, {"seed": 2}, epochs=2)
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(pop.member(2).params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=MEMBER_TOL, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_early_stopping_acts_per_member(seed):
    """A member with learning rate 0 stops after patience+1 epochs (its training loss changes only in the last
    bits, as the batches come in another order); the other trains on; the stopped one keeps its initial params."""
    net = jdense.mlp([6, 8, 3])
    members = [{"learning_rate": 0.0, "seed": seed}, {"learning_rate": 5e-2, "seed": seed}]
    stop = jdense.EarlyStopping("loss", patience=2, restore_best=False)
    pop = jdense.fit_population(net, X, Y, members=members, callbacks=[stop],
                                **{**KW, "epochs": 8, "key": jax.random.key(seed)})
    assert pop.epochs.tolist() == [3, 8]
    assert np.isnan(pop.history["loss"][3:, 0]).all() and np.isfinite(pop.history["loss"][:, 1]).all()
    for a, b in zip(jax.tree.leaves(net.init(jax.random.key(seed))), jax.tree.leaves(pop.member(0).params)):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    assert len(pop.member(0).history["loss"]) == 3


def test_early_stopping_restores_each_members_best():
    net = jdense.mlp([6, 8, 3])
    members = [{"learning_rate": 0.5, "seed": 1}, {"learning_rate": 1e-2, "seed": 2}]
    stop = jdense.EarlyStopping("val_loss", patience=2, restore_best=True)
    pop = jdense.fit_population(net, X, Y, members=members, callbacks=[stop], validation_data=(XV, YV),
                                **{**KW, "epochs": 6})
    got = jdense.evaluate(net, pop.params, XV, YV, loss="cross_entropy", population=True)["loss"]
    for i in range(2):
        best = np.nanmin(pop.history["val_loss"][:, i])
        np.testing.assert_allclose(got[i], best, rtol=1e-5)


@pytest.mark.parametrize(
    "members, exc, match",
    [
        (0, ValueError, r"members must be a positive count"),
        ([], ValueError, r"members is empty"),
        ([{"learning_rate": 1e-3}, {"lr": 1e-3}], ValueError, r"member 1 has unknown keys \['lr'\]"),
        ([{"learning_rate": -1.0}], ValueError, r"member 0: learning_rate must be a finite non-negative float"),
        ([{"dropout": 1.5}], ValueError, r"member 0: dropout must be a rate in \[0, 1\)"),
        ([{"lambda_": -1e-3}], ValueError, r"member 0: lambda_ must be a finite non-negative float"),
        ([{"seed": "a"}], ValueError, r"member 0: seed must be an int"),
        (["adam"], TypeError, r"member 0 must be a dict"),
        ("five", TypeError, r"members must be a positive int or a list of dicts"),
    ],
)
def test_bad_members(members, exc, match):
    with pytest.raises(exc, match=match):
        jdense.fit_population(NET, X, Y, members=members, **KW)


def test_member_dropout_needs_a_dropout_layer():
    with pytest.raises(ValueError, match=r"a member sets dropout but the network has no Dropout layer"):
        jdense.fit_population(jdense.mlp([6, 8, 3]), X, Y, members=[{"dropout": 0.1}], **KW)


def test_population_checkpoint_round_trip(tmp_path, grid_population):
    pop = grid_population
    path = jdense.save(tmp_path / "pop.safetensors", pop.params, pop.opt_state, state=pop.state)
    back = jdense.load(path, like={"params": pop.params, "opt_state": pop.opt_state, "state": pop.state})
    for a, b in zip(jax.tree.leaves((pop.params, pop.opt_state)), jax.tree.leaves((back.params, back.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    one = pop.member(2)
    path = jdense.save(tmp_path / "one.safetensors", one.params, net=NET)
    np.testing.assert_array_equal(np.asarray(jdense.load(path).params["dense_0"]["w"]),
                                  np.asarray(pop.params["dense_0"]["w"][2]))


def test_population_programs_compile_at_llvm_level_1_on_cpu(monkeypatch):
    """On CPU the population's epoch is compiled with LLVM level 1 unless XLA_FLAGS sets a level; it trains the same."""
    from jdense import programs

    monkeypatch.setenv("XLA_FLAGS", "--xla_llvm_disable_expensive_passes=true")
    assert programs.compiler_options(None) == {"xla_backend_optimization_level": 1}
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert programs.compiler_options(None) is None
    monkeypatch.setenv("XLA_FLAGS", "")
    programs.population.cache_clear()
    try:
        net = jdense.mlp([6, 8, 3])
        pop = jdense.fit_population(net, X, Y, members=[{"seed": 3, "learning_rate": 1e-2}], **KW)
    finally:
        programs.population.cache_clear()
    alone = _alone(net, {"seed": 3, "learning_rate": 1e-2})
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(pop.member(0).params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=MEMBER_TOL, rtol=0)


def test_per_member_sample_weights_equal_separate_weighted_fits():
    """A (members, n) sample_weight gives each member its own weights: member i trains as fit(sample_weight=w[i])."""
    net = jdense.mlp([6, 12, 3])
    w = np.stack([np.ones(80, np.float32), (np.arange(80) % 3 != 0).astype(np.float32),
                  RNG.uniform(0.2, 2.0, 80).astype(np.float32)])
    pop = jdense.fit_population(net, X, Y, members=3, sample_weight=w, **KW)
    for i in range(3):
        alone = _alone(net, pop.members[i], sample_weight=w[i])
        for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(pop.member(i).params)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=MEMBER_TOL, rtol=0)
        np.testing.assert_allclose(pop.member(i).history["loss"], alone.history["loss"], atol=MEMBER_TOL)
    shared = jdense.fit_population(net, X, Y, members=[{"seed": 1}], sample_weight=w[1], **KW)
    np.testing.assert_allclose(shared.history["loss"][:, 0], pop.history["loss"][:, 1], atol=MEMBER_TOL)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(80,\) \(shared\) or \(3, 80\)"):
        jdense.fit_population(net, X, Y, members=3, sample_weight=w[:2], **KW)
    with pytest.raises(ValueError, match=r"0 for every row of members \[1\]"):
        jdense.fit_population(net, X, Y, members=3, sample_weight=w * np.array([[1], [0], [1]], np.float32), **KW)


def test_per_member_l1_equals_a_fit_with_that_l1():
    net = jdense.mlp([6, 12, 3])
    members = [{"l1": 0.0}, {"l1": 1e-2}, {"l1": 3e-2, "lambda_": 1e-3}]
    pop = jdense.fit_population(net, X, Y, members=members, **KW)
    for i, m in enumerate(pop.members):
        net_i = jdense.Sequential([dataclasses.replace(layer, l1=m["l1"], lambda_=m.get("lambda_", 0.0))
                                   for layer in net.layers])
        alone = jdense.fit(net_i, net_i.init(jax.random.key(m["seed"])), X, Y,
                           optimizer=jdense.optimizer(net_i, "adam", 1e-3), **KW)
        for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(pop.member(i).params)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=MEMBER_TOL, rtol=0)
    assert jdense.hyperparams(pop.member(2).opt_state)["l1"] == [0.03, 0.03]
    w1 = [np.abs(np.asarray(pop.member(i).params["dense_0"]["w"])).sum() for i in range(3)]
    assert w1[2] < w1[1] < w1[0]  # a stronger L1 term gives smaller weights
    with pytest.raises(ValueError, match="member 0: l1"):
        jdense.fit_population(net, X, Y, members=[{"l1": -1.0}], **KW)


# --------------------------------------------------------------------------- one trainer: fit's data and checks


def test_population_over_a_memory_map_equals_the_in_memory_population(tmp_path):
    """Streamed from a memory map in chunks that do not divide the epoch: bitwise the in-memory population's params."""
    net = jdense.mlp([6, 12, 3], dropout=0.2)
    members = jdense.grid(learning_rate=[1e-3, 2e-2], dropout=[0.1, 0.3])
    kw = {**KW, "members": members, "validation_data": (XV, YV)}
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    memory = jdense.fit_population(net, X, Y, **kw)
    streamed = jdense.fit_population(net, np.load(tmp_path / "x.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r"),
                                     stream=True, device_memory=4 * 2 * 16 * (6 * 4 + 4 + 4), **kw)  # 2 steps a chunk
    for a, b in zip(jax.tree.leaves((memory.params, memory.opt_state, memory.state)),
                    jax.tree.leaves((streamed.params, streamed.opt_state, streamed.state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for k in memory.history:  # validation runs in another program when streamed: float32 rounding
        np.testing.assert_allclose(streamed.history[k], memory.history[k], rtol=1e-6, atol=1e-6)


def test_population_takes_an_iterable_of_batches_and_validation_split():
    net = jdense.mlp([6, 12, 3])
    batches = [(X[i:i + 16], Y[i:i + 16]) for i in range(0, 80, 16)]
    pop = jdense.fit_population(net, batches, None, members=2, **KW)
    alone = jdense.fit(net, net.init(jax.random.key(1)), batches, None, **KW)
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(pop.member(1).params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=MEMBER_TOL, rtol=0)
    split = jdense.fit_population(net, X, Y, members=1, validation_split=0.25, **KW)
    alone = jdense.fit(net, net.init(jax.random.key(0)), X, Y, validation_split=0.25, **KW)
    np.testing.assert_allclose(split.history["val_loss"][:, 0], alone.history["val_loss"], atol=MEMBER_TOL)


def test_population_optimizer_may_be_a_jdense_optimizer_whose_values_are_the_defaults():
    net = jdense.mlp([6, 12, 3], lambda_=1e-3)
    tx = jdense.optimizer(net, "adam", 2e-2, clip_norm=1.0)
    pop = jdense.fit_population(net, X, Y, members=[{"seed": 0}, {"seed": 1, "learning_rate": 1e-3}], optimizer=tx, **KW)
    assert jdense.hyperparams(pop.member(0).opt_state) == {"clip_norm": 1.0, "lambda_": [0.001, 0.001], "learning_rate": 0.02}
    assert jdense.hyperparams(pop.member(1).opt_state)["learning_rate"] == 0.001
    alone = jdense.fit(net, net.init(jax.random.key(0)), X, Y, optimizer=tx, **KW)
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(pop.member(0).params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=MEMBER_TOL, rtol=0)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(optimizer=None), TypeError, r"optimizer must be a name such as 'adam' or a "
     r"jdense.optimizer\(net, \.\.\.\) result .* got None"),
    (dict(initial_epoch=1), TypeError, r"fit_population does not take initial_epoch=: members start from"),
    (dict(opt_state=None), TypeError, r"fit_population does not take opt_state="),
    (dict(key=None), TypeError, r"fit_population: key= is required.*key=jax\.random\.key\(0\)"),
    (dict(learning_rat=1e-3), TypeError, r"unexpected keyword arguments \['learning_rat'\]: they are neither its own"),
])
def test_population_refuses_arguments_by_their_own_name(kw, exc, match):
    with pytest.raises(exc, match=match) as info:
        jdense.fit_population(NET, X, Y, members=2, **{**KW, **kw})
    assert len(str(info.value)) < 400


def test_a_plain_optax_optimizer_is_refused_by_its_type_not_its_repr():
    import optax

    with pytest.raises(TypeError, match=r"got an optax.*GradientTransformation") as info:
        jdense.fit_population(NET, X, Y, members=2, optimizer=optax.adam(1e-3), **KW)
    assert "PjitFunction" not in str(info.value) and len(str(info.value)) < 400
    with pytest.raises(TypeError, match=r"with a jdense.optimizer\(\.\.\.\): set them in jdense.optimizer"):
        jdense.fit_population(NET, X, Y, members=2, optimizer=jdense.optimizer(NET), clip_norm=1.0, **KW)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(epochs=1.5), TypeError, "epochs must be a positive int, got 1.5 of type float; pass a whole number such as epochs=64."),
    (dict(epochs=0), ValueError, "epochs must be a positive int, got 0; pass a number >= 1."),
    (dict(batch_size=2.5), TypeError, "batch_size must be a positive int, got 2.5 of type float; pass a whole number such as "
     "batch_size=64."),
    (dict(batch_size=0), ValueError, "batch_size must be a positive int, got 0; pass a number >= 1."),
    (dict(batch_size=81), ValueError, "batch_size=81 is larger than the data set (80 samples); pass batch_size<=80, or "
     "batch_size=None for batch gradient descent."),
])
def test_the_same_mistake_raises_the_same_error_in_fit_and_fit_population(kw, exc, match):
    net = jdense.mlp([6, 12, 3])
    errors = []
    for call in (lambda: jdense.fit(net, net.init(jax.random.key(0)), X, Y, **{**KW, **kw}),
                 lambda: jdense.fit_population(net, X, Y, members=2, **{**KW, **kw})):
        with pytest.raises(exc) as info:
            call()
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1] == (exc, match)
    if "batch_size" in kw and kw["batch_size"] != 81:  # inference takes the same batch_size check
        for call in (lambda: jdense.evaluate(net, net.init(jax.random.key(0)), X, Y, loss="cross_entropy", **kw),
                     lambda: jdense.predict(net, net.init(jax.random.key(0)), X, **kw)):
            with pytest.raises(exc) as info:
                call()
            assert str(info.value) == match


def test_cross_validation_folds_as_per_member_weights():
    """Member k trains on the rows outside fold k and validates on fold k: its val_* are evaluate's on that fold."""
    net = jdense.mlp([6, 12, 3])
    fold = np.arange(80) % 3
    train_w = np.stack([(fold != k).astype(np.float32) for k in range(3)])
    members = [{"seed": 5}] * 3
    pop = jdense.fit_population(net, X, Y, members=members, sample_weight=train_w,
                                validation_data=(X, Y, 1.0 - train_w), **KW)
    for k in range(3):
        held_out = jdense.evaluate(net, pop.member(k).params, X[fold == k], Y[fold == k], loss="cross_entropy")
        np.testing.assert_allclose(pop.history["val_loss"][-1, k], held_out["loss"], rtol=1e-5)
        np.testing.assert_allclose(pop.history["val_accuracy"][-1, k], held_out["accuracy"], rtol=1e-6)
    scores = jdense.evaluate(net, pop.params, X, Y, loss="cross_entropy", population=True, sample_weight=1.0 - train_w)
    for k in range(3):
        one = jdense.evaluate(net, pop.member(k).params, X, Y, loss="cross_entropy", sample_weight=1.0 - train_w[k])
        np.testing.assert_allclose(scores["loss"][k], one["loss"], rtol=1e-5)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(80,\) \(shared\) or \(3, 80\)"):
        jdense.evaluate(net, pop.params, X, Y, loss="cross_entropy", population=True, sample_weight=train_w[:2])


# -- the loggers and the progress bar on a population: per-member logs (issues 17, 19) ------------------------------------
def test_loggers_and_progress_bar_take_a_populations_per_member_logs(tmp_path, capsys):
    import pandas as pd

    loggers = [jdense.CSVLogger(tmp_path / "log.csv"), jdense.ProgressBar(2, verbose=2)]
    tb = None
    try:
        import tensorboardX  # noqa: F401

        tb = jdense.TensorBoard(tmp_path / "tb")
        loggers.append(tb)
    except ImportError:
        pass
    pop = jdense.fit_population(NET, X, Y, members=3, validation_split=0.25, callbacks=loggers,
                                **{**KW, "epochs": 2})
    table = pd.read_csv(tmp_path / "log.csv")
    assert list(table.columns[:2]) == ["epoch", "member"] and len(table) == 2 * 3
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        wide = table.pivot(index="epoch", columns="member", values=key).to_numpy()
        np.testing.assert_allclose(wide, pop.history[key], rtol=1e-6)  # the CSV text keeps float64's digits
    printed = capsys.readouterr().out
    best = float(np.nanmin(pop.history["val_loss"][1]))
    assert "epoch 2/2" in printed and f"val_loss best {best:.4f}" in printed
    if tb is not None:
        from test_loggers import _scalars

        scalars = _scalars(tmp_path / "tb" / "validation")
        assert set(scalars) == {f"{k}/member_{i}" for k in ("loss", "accuracy") for i in range(3)}
        steps, values = zip(*scalars["loss/member_2"])
        assert steps == (0, 1)
        np.testing.assert_allclose(values, pop.history["val_loss"][:, 2], rtol=1e-6)  # float32 events


def test_best_checkpoint_is_refused_by_a_population_before_compiling():
    saved = []
    with pytest.raises(TypeError, match=r"fit_population does not run BestCheckpoint.*EarlyStopping\(monitor=\.\.\., "
                                        r"restore_best=True\).*pop\.member\(pop\.best\('val_loss'\)\)"):
        jdense.fit_population(NET, X, Y, members=2, validation_split=0.25,
                              callbacks=[jdense.BestCheckpoint(lambda params, **kw: saved.append(params))], **KW)
    assert saved == []


def test_learning_rate_and_lambda_as_keywords_are_every_members_default():
    kw = {**KW, "epochs": 1}
    given = jdense.fit_population(NET, X, Y, members=[{}, {"learning_rate": 1e-3}], learning_rate=0.05, lambda_=1e-3, **kw)
    spelled = jdense.fit_population(NET, X, Y, members=[{"learning_rate": 0.05, "lambda_": 1e-3},
                                                        {"learning_rate": 1e-3, "lambda_": 1e-3}], **kw)
    for a, b in zip(jax.tree.leaves(given.params), jax.tree.leaves(spelled.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [m["learning_rate"] for m in given.members] == [0.05, 1e-3]  # a member's own value wins
    with pytest.raises(ValueError, match=r"learning_rate must be >= 0, got -0.1"):
        jdense.fit_population(NET, X, Y, members=2, learning_rate=-0.1, **kw)
