"""Data-parallel ``fit`` on a device mesh, FSDP-style params, and mixed precision.

The device count is fixed when JAX starts, so the multi-device checks run once in a
subprocess with 4 forced CPU devices (tests/_parallel_worker.py) and each test below reads
one part of its report. Reference: plain single-device ``fit`` with the same key and data.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdense
from jdense import parallel

HERE = pathlib.Path(__file__).resolve().parent
TOL = 1e-5  # float32 rounding: the mesh sums each batch's gradient in a different order


@pytest.fixture(scope="module", autouse=True)
def worker():
    """Start the 4-device subprocess first; the in-process tests below run while it works."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(HERE / "_parallel_worker.py")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    yield proc
    if proc.poll() is None:  # always end it, even when a test failed or was deselected
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


@pytest.fixture(scope="module")
def report(worker):
    try:
        stdout, stderr = worker.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.communicate()
        pytest.fail("the 4-device worker did not finish within 300 s")
    assert worker.returncode == 0, f"worker failed:\n{stderr[-4000:]}"
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    return out


# -- in this process (one device), while the worker runs ---------------------------------
def _problem(n=512):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    net = jdense.mlp([8, 16, 2])
    kw = dict(loss="cross_entropy", optimizer=jdense.optimizer(net, learning_rate=1e-2), batch_size=32,
              key=jax.random.key(1), verbose=0)
    return net, net.init(jax.random.key(0)), x, y, kw


def test_mesh_of_one_device_is_bitwise_the_plain_path():
    net, params, x, y, kw = _problem()
    plain = jdense.fit(net, params, x, y, epochs=2, **kw)
    meshed = jdense.fit(net, params, x, y, epochs=2, mesh=parallel.data_mesh(jax.devices()[:1]), **kw)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(meshed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert plain.history == meshed.history


def test_data_mesh_covers_all_devices_by_default():
    mesh = parallel.data_mesh()
    assert mesh.axis_names == (parallel.DATA,)
    assert parallel.data_size(mesh) == jax.device_count()
    parallel.check_batch(mesh, 32 * jax.device_count())
    parallel.check_batch(None, 7)  # no mesh: any batch


def test_bad_mesh_arguments_raise_before_compiling():
    net, params, x, y, kw = _problem(64)
    with pytest.raises(TypeError, match="data_mesh"):
        jdense.fit(net, params, x, y, epochs=1, mesh="auto", **kw)
    other = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("model",))
    with pytest.raises(ValueError, match="axis named 'data'"):
        jdense.fit(net, params, x, y, epochs=1, mesh=other, **kw)
    with pytest.raises(ValueError, match="at least one device"):
        parallel.data_mesh([])


def test_mixed_precision_fit_trains_and_keeps_float32_params():
    net, params, x, y, kw = _problem()
    full = jdense.fit(net, params, x, y, epochs=6, **kw)
    mixed = jdense.fit(net, params, x, y, epochs=6, compute_dtype=jnp.bfloat16, **kw)
    loss = mixed.history["loss"]
    assert loss[-1] < 0.5 * loss[0]
    assert mixed.history["accuracy"][-1] > 0.9
    assert abs(loss[-1] - full.history["loss"][-1]) < 0.05  # bfloat16 compute lands near float32 training
    assert {a.dtype for a in jax.tree.leaves(mixed.params)} == {jnp.dtype(jnp.float32)}
    floats = [a for a in jax.tree.leaves(mixed.opt_state) if jnp.issubdtype(a.dtype, jnp.floating)]
    assert floats and {a.dtype for a in floats} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("dtype, rel_tol", [(jnp.bfloat16, 2e-2), (jnp.float16, 2e-3)])
def test_dense_compute_dtype_for_inference(dtype, rel_tol):
    layer32 = jdense.Dense(64, 32, activation="tanh")
    layer = jdense.Dense(64, 32, activation="tanh", compute_dtype=dtype)
    params = layer32.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 64))
    out32, out = layer32.apply(params, x), layer.apply(params, x)
    assert out.dtype == dtype and out32.dtype == jnp.float32
    assert params["w"].dtype == jnp.float32  # the layer computes in `dtype`; its params stay float32
    # relative to the output's scale: bfloat16 keeps 8 mantissa bits (2^-8 ≈ 0.004), float16 11.
    err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - out32)))
    assert err <= rel_tol * float(jnp.max(jnp.abs(out32)))


# -- from the 4-device worker --------------------------------------------------------------
def test_mesh_of_4_matches_single_device(report):
    r = report["mesh4"]  # dropout, BatchNorm, class weights, validation, padded last batch
    assert r["params"] < TOL and r["opt_state"] < TOL and r["state"] < TOL
    assert r["history"] < TOL
    assert r["replicated"]  # params and optimizer state: a full copy on each of the 4 devices


def test_evaluate_and_predict_on_mesh_match(report):
    assert report["mesh4"]["evaluate"] < TOL
    assert report["mesh4"]["predict"] < TOL


def test_mesh_of_2_matches_single_device(report):
    assert report["mesh2"]["devices"] == 2
    assert report["mesh2"]["params"] < TOL


def test_compiled_epoch_splits_each_batch_and_all_reduces(report):
    # batch 64 over 4 devices: each computes on 16 rows; the gradient is all-reduced.
    assert report["hlo"] == {"all_reduce": True, "local_rows": True, "global_rows": False}


def test_batch_not_divisible_by_devices_raises(report):
    msg = report["indivisible"]
    assert msg is not None, "fit accepted batch_size=30 on 4 devices"
    assert "batch_size=30" in msg and "multiple of 4" in msg


def test_fsdp_sharded_params_match_and_keep_layout(report):
    r = report["fsdp"]
    assert r["specs"] == ["P()", "P(None, 'data')", "P()", "P('data', None)"]  # the two weights split
    assert r["params"] < TOL
    assert r["same_layout"]
    assert r["opt_state_sharded"] == 4  # Adam's mu and nu follow the two sharded weights


def test_bfloat16_on_mesh_trains_with_float32_master_params(report):
    r = report["bf16_mesh"]
    assert r["dtypes"] == ["float32", "int32"]  # params, moments (float32) and Adam's step count
    assert r["loss"][-1] < 0.7 * r["loss"][0]
