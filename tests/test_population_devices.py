"""Populations spread over devices: members split along a "members" axis equal the one-device population.

JAX's device count is fixed when its backend starts, so the multi-device runs happen in
subprocesses (tests/_population_devices_worker.py): one process with 2 CPU devices
(``jdense.cpu_devices(2)``), and 2 loopback processes of one CPU device each joined by
``jax.distributed``. The reference is the same population on one device. Not bitwise:
XLA:CPU compiles the step for the members each device holds, and a different count
rounds Adam's update differently in the last bits (measured ≤ 1.2e-7 on these params).
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import worker_processes  # tests/ is on sys.path (pytest prepends a test file's folder)

import jdense

HERE = pathlib.Path(__file__).resolve().parent
TOL = 1e-6  # spread vs one device: float rounding only (see the module docstring)
TIMEOUT = 240
NPROC = 2


def _env():
    # XLA_FLAGS carries the suite's fast compilation (conftest); the workers set their own device counts.
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}


def _worker_module():
    spec = importlib.util.spec_from_file_location("_population_devices_worker", HERE / "_population_devices_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Start both subprocess runs together; meanwhile compute the one-process reference here."""
    out = tmp_path_factory.mktemp("population_devices")
    worker = HERE / "_population_devices_worker.py"
    logs = [open(out / f"log{i}.txt", "w+") for i in range(NPROC + 1)]
    port = worker_processes.free_port()
    procs = [worker_processes.start([worker, "devices", out / "devices.npz"], _env(), logs[0])]
    distributed = "jax_cpu_collectives_implementation" in jax.config.values
    if distributed:
        procs += [worker_processes.start([worker, "distributed", i, NPROC, port, out], _env(), logs[i + 1]) for i in range(NPROC)]
    net, x, y, members, kw = _worker_module().problem()
    reference = jdense.fit_population(net, x, y, members=members, **kw)  # one process, one device, every member
    codes, text = worker_processes.wait(procs, logs[:len(procs)], "worker", TIMEOUT)
    if codes[0] != 0:
        pytest.fail(f"the 2-device worker failed:\n{text}")
    ranks = None
    if distributed and all(c == 0 for c in codes[1:]):
        ranks = [dict(np.load(out / f"rank{i}.npz")) for i in range(NPROC)]
    elif distributed and "gloo" not in text.lower():
        pytest.fail(f"the {NPROC} loopback processes did not finish cleanly:\n{text}")
    return dict(np.load(out / "devices.npz")), ranks, _worker_module().result("", reference)


def _close(report, got: str, want: str, keys=None):
    pairs = [(k, k.replace(got, want, 1)) for k in report if k.startswith(got)]
    assert pairs
    for k, ref in pairs:
        if keys is None or any(s in k for s in keys):
            np.testing.assert_allclose(report[k], report[ref], atol=TOL, rtol=TOL, err_msg=k)


@pytest.mark.parametrize("name", ["even", "odd"])  # 4 members (2 a device), 5 members (one padding member)
def test_spread_population_equals_one_device(reports, name):
    r = reports[0]
    assert r["devices"] == 2
    _close(r, f"{name}_spread_", f"{name}_one_")  # params, optimizer and network state, history, predictions
    assert r[f"{name}_spread_history_loss"].shape == r[f"{name}_one_history_loss"].shape  # (epochs, members): no padding
    assert set(r[f"{name}_on"]) == {"cpu:0"}  # results gathered onto one device, as a one-device run returns them


def test_per_member_weights_on_spread_members(reports):
    """sample_weight (members, n) and validation weights (members, n_val): the padding member gets a copy of a row."""
    r = reports[0]
    if "weighted_spread_epochs" not in r:
        pytest.skip("this fit_population has no per-member sample_weight")
    _close(r, "weighted_spread_", "weighted_one_")
    assert r["weighted_spread_history_val_loss"].shape[1] == 5


def test_streamed_populations_stay_on_one_device(reports):
    r = reports[0]
    if "error_streamed" not in r:
        pytest.skip("this fit_population does not stream")
    assert "streamed data train the population on one device, got devices=2" in str(r["error_streamed"])
    np.testing.assert_allclose(r["streamed_loss"], r["streamed_one_loss"], atol=TOL, rtol=TOL)


def test_padding_never_reaches_callbacks_or_results(reports):
    r = reports[0]
    assert r["layouts"].tolist() == [1, 1, 6, 2]  # 1 member: one device, no padding; 5 members: 3 a device
    assert r["odd_seen"].tolist() == [5] and r["even_seen"].tolist() == [4]
    assert r["odd_spread_params['dense_0']['w']"].shape[0] == 5
    assert r["odd_spread_predict"].shape[0] == 5 and r["odd_spread_evaluate"].shape == (5,)


def test_early_stopping_and_restore_best_on_spread_members(reports):
    """Member 2 has learning rate 0: EarlyStopping(loss, patience=1) stops it after 2 epochs on both layouts."""
    r = reports[0]
    assert r["odd_spread_epochs"].tolist() == r["odd_one_epochs"].tolist() == [4, 4, 2, 4, 4]
    assert np.isnan(r["odd_spread_history_loss"][2:, 2]).all()
    np.testing.assert_allclose(r["odd_spread_evaluate"], r["odd_one_evaluate"], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(r["odd_spread_ensemble"], r["odd_one_ensemble"], atol=TOL, rtol=TOL)


def test_checkpoint_of_spread_members_round_trips(reports):
    assert bool(reports[0]["checkpoint_equal"])


def test_cpu_devices_before_and_after_the_backend_starts(reports):
    r = reports[0]
    assert r["before"] == 2 and r["again"] == 2  # the count in use again: a no-op
    assert "already started with 2 CPU device(s)" in str(r["after_error"]) and "before any JAX operation" in str(r["after_error"])


def test_bad_devices_are_refused(reports):
    r = reports[0]
    assert str(r["error_both"]).startswith("ValueError: fit_population: pass either mesh=")
    assert "devices=3 must be between 1 and the 2 device(s)" in str(r["error_many"])
    assert str(r["error_type"]).startswith("TypeError: fit_population: devices must be None")


def test_two_processes_holding_half_the_members_equal_one_process(reports):
    _, ranks, reference = reports
    if ranks is None:
        pytest.skip("gloo CPU collectives are not available in this jaxlib")
    for rank, r in enumerate(ranks):
        assert r["devices"].tolist() == [NPROC, 2, 1]
        for k, ref in reference.items():  # gathered: every member, on every process
            np.testing.assert_allclose(r["all_" + k], ref, atol=TOL, rtol=TOL, err_msg=f"rank {rank} {k}")
        mine = r["mine_indices"]  # 5 members padded to 6: rank 0 holds 0-2, rank 1 holds 3-4
        assert mine.tolist() == ([0, 1, 2] if rank == 0 else [3, 4])
        for k, ref in reference.items():
            np.testing.assert_allclose(r["mine_" + k], ref[:, mine] if k.startswith("history_") else ref[mine],
                                       atol=TOL, rtol=TOL, err_msg=f"rank {rank} own {k}")


def test_cpu_devices_checks_its_argument():
    with pytest.raises(ValueError, match=r"cpu_devices: n must be at least 1, got 0"):
        jdense.cpu_devices(0)
    with pytest.raises(TypeError, match=r"cpu_devices: n must be a positive int"):
        jdense.cpu_devices(1.5)
    have = len(jax.devices("cpu"))  # starts this process's backend, if no test has yet
    assert jdense.cpu_devices(have) == have
    with pytest.raises(RuntimeError, match=rf"already started with {have} CPU device"):
        jdense.cpu_devices(have + 1)


def test_importing_jdense_changes_no_jax_setting():
    code = "import jax; before = dict(jax.config.values); import jdense; print(before == dict(jax.config.values))"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


_INIT_CHECK = """
import jax, numpy as np, jdense
net = jdense.Sequential([jdense.Dense(7, 33, initializer="he_normal"), jdense.Dense(33, 9, initializer="glorot_normal"),
                         jdense.Dense(9, 4, activation=None, initializer="orthogonal")])
x, y = np.zeros((8, 7), np.float32), np.zeros(8, np.int32)
pop = jdense.fit_population(net, x, y, members=[{"learning_rate": 0.0, "seed": s} for s in (0, 5)], loss="cross_entropy",
                            epochs=1, batch_size=8, key=jax.random.key(0), verbose=0)
print(all(np.array_equal(np.asarray(a[i]), np.asarray(b)) for i, s in enumerate((0, 5))
          for a, b in zip(jax.tree.leaves(pop.params), jax.tree.leaves(net.init(jax.random.key(s))))))
"""


def test_members_start_bitwise_from_net_init_at_xlas_default_level():
    """The population compiles its members' init at LLVM level 1 (faster to compile); the params must be net.init's bitwise.

    Run without the suite's XLA_FLAGS (which lower every level and so would hide a difference)."""
    env = {**_env(), "XLA_FLAGS": ""}
    out = subprocess.run([sys.executable, "-c", _INIT_CHECK], env=env, capture_output=True, text=True, timeout=180)
    assert out.stdout.strip() == "True", out.stderr[-2000:]
