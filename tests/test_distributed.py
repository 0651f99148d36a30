"""Multi-process data-parallel training on JAX's own runtime (``jax.distributed``), on loopback.

Two processes on this machine, each with 2 CPU devices, join through
``jdense.parallel.initialize`` (gloo CPU collectives) into one run of 4 devices and train
the same network data-parallel. Their params must equal one process's plain ``fit``. The
processes are always killed at the end, and the whole test is bounded by ``TIMEOUT``.
"""

import importlib.util
import os
import pathlib

import jax
import numpy as np
import pytest
import worker_processes  # tests/ is on sys.path (pytest prepends a test file's folder)

import jdense

HERE = pathlib.Path(__file__).resolve().parent
TIMEOUT = 120  # seconds for both processes together
TOL = 1e-5
NPROC = 2


def _worker_module():
    spec = importlib.util.spec_from_file_location("_distributed_worker", HERE / "_distributed_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gloo_missing(stderr: str) -> bool:
    s = stderr.lower()
    return "gloo" in s and any(w in s for w in ("not available", "not built", "unimplemented", "unsupported", "unknown"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if "jax_cpu_collectives_implementation" not in jax.config.values:
        pytest.skip(f"jaxlib {jax.__version__} has no CPU collectives option (jax_cpu_collectives_implementation)")
    out = tmp_path_factory.mktemp("distributed")
    env = dict(os.environ)  # XLA_FLAGS: the suite's fast compilation (conftest); the workers set their device count
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    port = worker_processes.free_port()
    logs = [open(out / f"rank{i}.log", "w+") for i in range(NPROC)]
    procs = [worker_processes.start([HERE / "_distributed_worker.py", i, NPROC, port, out], env, logs[i]) for i in range(NPROC)]
    try:
        reference = _single_process()  # meanwhile, the one-process reference
    finally:
        codes, text = worker_processes.wait(procs, logs, "rank", TIMEOUT)
    if any(c != 0 for c in codes):
        if _gloo_missing(text):
            pytest.skip(f"gloo CPU collectives are not available in this jaxlib:\n{text}")
        pytest.fail(f"the {NPROC} processes did not finish cleanly within {TIMEOUT} s:\n{text}")
    return [dict(np.load(out / f"rank{i}.npz")) for i in range(NPROC)], reference


def _single_process():
    net, params, x, y, kw = _worker_module().problem()
    result = jdense.fit(net, params, x, y, **kw)
    return result, jdense.predict(net, result.params, x[:256], batch_size=128, state=result.state)


def test_two_processes_form_one_run_of_four_devices(runs):
    for r in runs[0]:
        assert r["devices"].tolist() == [NPROC, 4, 2]  # processes, global devices, local devices


def test_two_processes_train_the_same_params_as_one(runs):
    runs, (result, pred) = runs
    flat = _worker_module().flat({"params": result.params, "state": result.state})
    for r in runs:
        for name, ref in flat.items():
            np.testing.assert_allclose(r[name], ref, atol=TOL, rtol=TOL, err_msg=name)
        np.testing.assert_allclose(r["loss"], result.history["loss"], atol=TOL, rtol=TOL)
        np.testing.assert_allclose(r["pred"], np.asarray(pred), atol=1e-4, rtol=1e-4)
    for name in flat:  # and both processes hold exactly the same copy
        np.testing.assert_array_equal(runs[0][name], runs[1][name])


def test_streamed_and_per_process_shards_train_as_one_process(runs):
    """Streaming the whole set equals the in-memory fit; per-process shards equal one process fed their joined batches."""
    runs, (result, _) = runs
    worker = _worker_module()
    net, params, x, y, kw = worker.problem()
    joined = jdense.fit(net, params, worker.shard_batches(x, y, kw["key"], kw["epochs"], NPROC, kw["batch_size"]), None,
                        steps_per_epoch=worker.SHARD_ROWS // kw["batch_size"], **kw)
    for prefix, reference in (("streamed", result), ("own", joined)):
        for name, ref in worker.flat({"params": reference.params, "state": reference.state}).items():
            for r in runs:
                np.testing.assert_allclose(r[prefix + name], ref, atol=TOL, rtol=TOL, err_msg=prefix + name)
    for r in runs:
        np.testing.assert_allclose(r["own_loss"], joined.history["loss"], atol=TOL, rtol=TOL)
        np.testing.assert_allclose(r["own_val_loss"], joined.history["val_loss"], atol=TOL, rtol=TOL)


def test_processes_feeding_different_data_are_caught(runs):
    for r in runs[0]:
        assert "different data" in str(r["mismatch"])
