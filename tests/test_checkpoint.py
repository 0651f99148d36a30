"""Checkpoints: round trips, rebuilding the network, refusing wrong or broken files, atomic saves."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import safetensors.numpy

import jdense
from jdense import checkpoint
from jdense.checkpoint import Checkpoint, checkpoint_callback, load, read_info, save

REPO = pathlib.Path(__file__).resolve().parents[1]


def assert_trees_equal(a, b):
    """Same structure, and every leaf bitwise equal with the same dtype."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8))


def fake_params(net, seed=0):
    """Params of ``net`` (or ``mlp(net)`` for a list of sizes) as NumPy arrays, without compiling its init."""
    rng = np.random.default_rng(seed)
    net = jdense.mlp(net) if isinstance(net, list) else net
    shapes = jax.eval_shape(net.init, jax.random.key(0))
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


@pytest.fixture(scope="module")
def setup():
    """A BatchNorm mlp, its Adam, and one compiled training step shared by the tests."""
    net = jdense.mlp([4, 8, 3], batch_norm=True)
    tx = jdense.optimizer(net, "adam", 1e-2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    y = rng.standard_normal((16, 3)).astype(np.float32)

    @jax.jit
    def step(params, opt_state, state):
        def loss(p):
            out, s = net.apply_with_state(p, state, x, train=True)
            return jnp.mean((out - y) ** 2), s

        (_, state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, state

    params = jax.tree.map(jnp.asarray, fake_params(net))
    return net, tx, step, (params, tx.init(params), net.init_state())


def run(step, carry, n):
    for _ in range(n):
        carry = step(*carry)
    return carry


@pytest.fixture(scope="module")
def trained(setup):
    """Params, Adam state and running stats that are not their initial values."""
    net, _, step, start = setup
    return (net, *run(step, start, 3))


# -- round trips ---------------------------------------------------------------
def test_round_trip_params_opt_state_and_state_bitwise(tmp_path, trained):
    net, params, opt_state, state = trained
    path = save(tmp_path / "m.safetensors", params, opt_state, net=net, state=state)
    assert path == tmp_path / "m.safetensors" and isinstance(path, pathlib.Path)

    ckpt = load(path, like=dict(params=params, opt_state=opt_state, state=state))
    assert isinstance(ckpt, Checkpoint)
    assert_trees_equal(ckpt.params, params)
    assert_trees_equal(ckpt.opt_state, opt_state)  # the optax NamedTuples come back as they were
    assert_trees_equal(ckpt.state, state)
    adam = lambda n: type(n).__name__ == "ScaleByAdamState"  # noqa: E731
    assert type(ckpt.opt_state) is type(opt_state) and any(map(adam, jax.tree.leaves(ckpt.opt_state, is_leaf=adam)))
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves((ckpt.params, ckpt.opt_state, ckpt.state)))
    assert "params=<6 arrays" in repr(ckpt)


def test_load_without_like_rebuilds_dicts_and_net(tmp_path, trained):
    net, params, opt_state, state = trained
    save(tmp_path / "m.safetensors", params, opt_state, net=net, state=state)
    ckpt = load(tmp_path / "m.safetensors")  # no script objects needed
    assert ckpt.net == net
    assert ckpt.opt_state is None
    assert_trees_equal(ckpt.params, params)
    assert_trees_equal(ckpt.state, state)
    # the opt_state can be had afterwards from the rebuilt network's optimizer
    tx = jdense.optimizer(ckpt.net, "adam", 1e-2)
    again = load(tmp_path / "m.safetensors", like={"opt_state": tx.init(ckpt.params)})
    assert_trees_equal(again.opt_state, opt_state)
    info = read_info(tmp_path / "m.safetensors")
    assert info["format"] == checkpoint.FORMAT == "jdense-checkpoint/2"
    assert any(name.endswith("/mu/dense_0/w") for name in info["opt_state"]["leaves"])
    assert "opt_state/hyperparams/learning_rate" in info["opt_state"]["leaves"]
    assert "ScaleByAdamState" in info["opt_state"]["treedef"]


def test_params_only_and_defaults(tmp_path):
    params = fake_params([3, 2])
    save(tmp_path / "p.safetensors", params)
    ckpt = load(str(tmp_path / "p.safetensors"))
    assert_trees_equal(ckpt.params, params)
    assert (ckpt.opt_state, ckpt.state, ckpt.metadata, ckpt.net) == (None, None, {}, None)
    with pytest.raises(ValueError, match="holds no opt_state"):
        load(tmp_path / "p.safetensors", like={"opt_state": optax.adam(1e-3).init(params)})


def test_metadata_round_trip(tmp_path):
    params = fake_params([3, 2])
    meta = {"epoch": 7, "lr": 1e-3, "name": "run-1", "history": [0.5, 0.25], "nested": {"ok": True, "none": None}}
    save(tmp_path / "m.safetensors", params, metadata=meta)
    assert load(tmp_path / "m.safetensors").metadata == meta
    # NumPy/JAX numbers become Python numbers
    save(tmp_path / "m.safetensors", params, metadata={"loss": jnp.float32(0.5), "acc": np.float64(0.75), "step": jnp.int32(3)})
    assert load(tmp_path / "m.safetensors").metadata == {"loss": 0.5, "acc": 0.75, "step": 3}


def test_metadata_not_json_names_the_key(tmp_path):
    params = fake_params([3, 2])
    with pytest.raises(TypeError, match=r"metadata\['fn'\]"):
        save(tmp_path / "m.safetensors", params, metadata={"ok": 1, "fn": print})
    with pytest.raises(TypeError, match="metadata keys must be strings"):
        save(tmp_path / "m.safetensors", params, metadata={1: "a"})
    assert list(tmp_path.iterdir()) == []


def test_bfloat16_and_numpy_leaves(tmp_path):
    params = {"dense_0": {"w": jnp.linspace(-3, 3, 12, dtype=jnp.bfloat16).reshape(3, 4), "b": np.arange(4, dtype=np.float16)}}
    save(tmp_path / "m.safetensors", params)
    assert_trees_equal(load(tmp_path / "m.safetensors").params, params)
    ckpt = load(tmp_path / "m.safetensors", like={"params": params})
    assert ckpt.params["dense_0"]["w"].dtype == jnp.bfloat16
    assert isinstance(ckpt.params["dense_0"]["b"], np.ndarray)  # like's NumPy leaf stays NumPy
    # shapes and dtypes alone are enough to describe the structure
    ckpt = load(tmp_path / "m.safetensors", like={"params": jax.eval_shape(lambda: params)})
    assert_trees_equal(ckpt.params, params)


def test_net_without_config_is_saved_without_it(tmp_path):
    net = jdense.Sequential([jdense.Dense(3, 4, activation=lambda x: x * 2), jdense.Dense(4, 1)])
    params = fake_params(net)
    save(tmp_path / "m.safetensors", params, net=net)
    ckpt = load(tmp_path / "m.safetensors")
    assert ckpt.net is None
    assert_trees_equal(ckpt.params, params)
    info = read_info(tmp_path / "m.safetensors")
    assert info["net_config"] is None and "dense_0" in info["net_config_error"]


def test_activation_layers_are_rebuilt_from_the_checkpoint(tmp_path):
    net = jdense.Sequential([jdense.Dense(3, 4, activation=None), jdense.BatchNorm(4), jdense.Activation("gelu"),
                             jdense.Dropout(0.1), jdense.Activation(None), jdense.Dense(4, 2)])
    params, state = fake_params(net), net.init_state()
    save(tmp_path / "m.safetensors", params, net=net, state=state)
    ckpt = load(tmp_path / "m.safetensors")
    assert ckpt.net == net and ckpt.net.names[2] == "activation_0"
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(jdense.predict(ckpt.net, ckpt.params, x, state=ckpt.state), jdense.predict(net, params, x, state=state))


def test_checkpoint_callback(tmp_path, trained):
    net, params, opt_state, state = trained
    save_best = checkpoint_callback(tmp_path / "best.safetensors", net=net, metadata={"run": "a"})
    path = save_best(params, opt_state=opt_state, state=state, epoch=5, metrics={"val_loss": jnp.float32(0.25)})
    ckpt = load(path, like=dict(params=params, opt_state=opt_state, state=state))
    assert ckpt.metadata == {"run": "a", "epoch": 5, "metrics": {"val_loss": 0.25}}
    assert ckpt.net == net
    assert_trees_equal(ckpt.opt_state, opt_state)
    with pytest.raises(ValueError, match="does not exist"):
        checkpoint_callback(tmp_path / "missing" / "best.safetensors")


# -- refusing wrong files --------------------------------------------------------
def test_other_architecture_names_the_tensor(tmp_path):
    params = fake_params([64, 32, 10])
    save(tmp_path / "m.safetensors", params)
    other = fake_params([64, 16, 10])
    with pytest.raises(ValueError, match="made for another network") as err:
        load(tmp_path / "m.safetensors", like={"params": other})
    assert "params/dense_0/w has shape (64, 32) float32 in the file, expected (64, 16) float32" in str(err.value)

    deeper = fake_params([64, 32, 10, 5])
    with pytest.raises(ValueError, match=r"made for another network: expected but not in the file: params/dense_2/b"):
        load(tmp_path / "m.safetensors", like={"params": deeper})
    shallower = fake_params([64, 10])
    with pytest.raises(ValueError, match=r"in the file but not expected: params/dense_1/b, params/dense_1/w"):
        load(tmp_path / "m.safetensors", like={"params": shallower})
    as_bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    with pytest.raises(ValueError, match=r"float32 in the file, expected \(64, 32\) bfloat16"):
        load(tmp_path / "m.safetensors", like={"params": as_bf16})


def test_other_optimizer_is_refused(tmp_path, trained):
    net, params, opt_state, _ = trained
    save(tmp_path / "m.safetensors", params, opt_state)
    momentum_state = jdense.optimizer(net, "momentum", 1e-2).init(params)
    with pytest.raises(ValueError, match="another network or optimizer"):
        load(tmp_path / "m.safetensors", like={"params": params, "opt_state": momentum_state})


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("cut", [1, 100, -20])
def test_truncated_file(tmp_path, trained, cut):
    net, params, opt_state, state = trained
    path = save(tmp_path / "m.safetensors", params, opt_state, net=net, state=state)
    data = path.read_bytes()
    path.write_bytes(data[:-cut] if cut > 0 else data[:-cut][:20])
    with pytest.raises(ValueError, match=r"not a valid jdense checkpoint: .*m\.safetensors \("):
        load(path, like=dict(params=params, opt_state=opt_state, state=state))
    with pytest.raises(ValueError, match="not a valid jdense checkpoint"):
        load(path)


def test_random_bytes_empty_and_flipped_files(tmp_path, trained):
    net, params, opt_state, state = trained
    rng = np.random.default_rng(0)
    junk = tmp_path / "junk.safetensors"
    for data in (rng.bytes(5000), b"", b"\x08" + b"\x00" * 7 + b"{}      "):
        junk.write_bytes(data)
        with pytest.raises(ValueError, match="not a valid jdense checkpoint"):
            load(junk)
    # a valid safetensors file that jdense did not write
    safetensors.numpy.save_file({"w": np.ones(3, np.float32)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="without jdense metadata"):
        load(tmp_path / "other.safetensors")
    # one flipped bit in the tensor data: refused, never a wrong model
    path = save(tmp_path / "m.safetensors", params, net=net, state=state)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fails its checksum"):
        load(path)


def _rewrite(path, change, *, fix_crc=True):
    """Rewrite ``path`` with ``change(header)`` (a dict, or a string when it is not JSON) as its jdense header."""
    tensors = safetensors.numpy.load_file(path)
    with safetensors.safe_open(path, framework="np") as f:
        blob = f.metadata()["jdense"]
    try:
        header = json.loads(blob)
    except (ValueError, RecursionError):  # a crafted header from an earlier rewrite
        header = blob
    new = change(header)
    blob = new if isinstance(new, str) else json.dumps(new)
    meta = {"jdense": blob}
    if fix_crc:
        meta["jdense_crc32"] = str(zlib.crc32(blob.encode()))
    safetensors.numpy.save_file(tensors, path, metadata=meta)


def _invalid_file(path, reason=""):
    """Expect load to refuse ``path``, naming it (and saying ``reason``, a regex)."""
    return pytest.raises(ValueError, match=rf"not a valid jdense checkpoint: {re.escape(str(path))} \(.*{reason}")


@pytest.mark.parametrize("old,new", [(b'\\"lambda_\\": 0.0001', b'\\"lambda_\\": 4.0001'),
                                     (b'\\"in_features\\": 4', b'\\"in_features\\": 5')])
def test_changed_header_fails_its_checksum(tmp_path, old, new):
    """The issue's silent loads: one flipped bit turned lambda_ 0.0001 into 4.0001, in_features 4 into 5."""
    net = jdense.mlp([4, 8, 3], lambda_=1e-4)
    path = save(tmp_path / "m.safetensors", fake_params(net), net=net)
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    with _invalid_file(path, "jdense metadata fails its checksum"):
        load(path)
    with pytest.raises(ValueError, match="fails its checksum"):
        read_info(path)


def test_network_config_must_fit_the_params(tmp_path):
    net = jdense.mlp([4, 8, 3], batch_norm=True)
    path = save(tmp_path / "m.safetensors", fake_params(net), net=net, state=net.init_state())

    def widen(header):
        header["net_config"]["layers"][0]["in_features"] = 5
        return header

    _rewrite(path, widen)  # a valid checksum: only the fit check can tell
    with _invalid_file(path) as err:
        load(path)
    assert "does not fit its params" in str(err.value)
    assert "params['dense_0']['w'] has shape (4, 8) float32 but this network expects (5, 8) float32" in str(err.value)

    path = save(tmp_path / "m.safetensors", fake_params(net), net=net, state={"batch_norm_0": {"mean": np.zeros(8, np.float32)}})
    with _invalid_file(path, "the network has state but the file lacks: state/batch_norm_0/var"):
        load(path)


def test_deeply_nested_header_is_a_value_error(tmp_path):
    path = save(tmp_path / "m.safetensors", fake_params([3, 2]))
    for fix_crc in (True, False):
        _rewrite(path, lambda _: "[" * 100_000 + "]" * 100_000, fix_crc=fix_crc)
        with _invalid_file(path, "nested too deeply"):
            load(path)
    nested = {"format": checkpoint.FORMAT, "metadata": {"a": json.loads("[" * 500 + "]" * 500)}}
    _rewrite(path, lambda _: json.dumps(nested)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with _invalid_file(path):
        load(path)


@pytest.mark.parametrize("listing", [["opt_state/0/mu"], {"leaves": [1, "opt_state/a"]}, {"leaves": "opt_state/a"}, 7])
def test_malformed_opt_state_listing_is_a_value_error(tmp_path, trained, listing):
    net, params, opt_state, state = trained
    path = save(tmp_path / "m.safetensors", params, opt_state, net=net, state=state)
    _rewrite(path, lambda header: {**header, "opt_state": listing})
    with _invalid_file(path, "opt_state listing is malformed"):
        load(path)
    with _invalid_file(path):
        read_info(path)


def test_format_1_files_still_load(tmp_path):
    """jdense-checkpoint/1: no header checksum, tensor checksums over the bytes only."""
    net = jdense.mlp([3, 2])
    params = fake_params(net)
    path = save(tmp_path / "m.safetensors", params, net=net)

    def legacy(header):
        tensors = safetensors.numpy.load_file(path)
        return {**header, "format": "jdense-checkpoint/1",
                "crc32": {k: zlib.crc32(v.reshape(-1).view(np.uint8)) for k, v in tensors.items()}}

    _rewrite(path, legacy, fix_crc=False)
    ckpt = load(path)
    assert_trees_equal(ckpt.params, params)
    assert ckpt.net == net
    _rewrite(path, lambda header: {**header, "format": checkpoint.FORMAT}, fix_crc=False)
    with _invalid_file(path, "has no checksum"):
        load(path)


def test_load_never_runs_code_nor_calls_names_from_the_header(tmp_path, trained):
    net, params, opt_state, state = trained
    sentinel = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(sentinel)!r}).touch()"
    path = save(tmp_path / "m.safetensors", params, opt_state, net=net, state=state)
    _rewrite(path, lambda h: {**h, "opt_state": {**h["opt_state"], "treedef": code}, "metadata": {"run": code}})
    ckpt = load(path, like=dict(params=params, opt_state=opt_state, state=state))  # the treedef string is never evaluated
    assert_trees_equal(ckpt.opt_state, opt_state)
    assert ckpt.metadata == {"run": code}
    for field, value in (("type", "__import__"), ("type", "eval"), ("activation", code), ("initializer", "os.system")):
        def craft(header, field=field, value=value):
            header["net_config"]["layers"][0][field] = value
            return header

        save(path, params, opt_state, net=net, state=state)
        _rewrite(path, craft)
        with _invalid_file(path, "network config does not build"):
            load(path)
    assert not sentinel.exists()


def test_every_flipped_byte_is_refused_or_harmless(tmp_path):
    """Flip one bit of every byte (header and data, the bit cycling with the position): each load
    either refuses the file with a ValueError naming it, or returns exactly the saved checkpoint."""
    net = jdense.mlp([2, 3, 2], batch_norm=True, lambda_=1e-4)
    params = fake_params(net)
    opt_state = jax.tree.map(np.asarray, optax.adam(1e-3).init(params))
    state = jax.tree.map(np.asarray, net.init_state())
    like = dict(params=params, opt_state=opt_state, state=state)
    path = save(tmp_path / "m.safetensors", params, opt_state, {"epoch": 3, "note": "caf\u00e9"}, net=net, state=state)
    good = path.read_bytes()
    refused = 0
    with open(path, "r+b") as f:
        for i, byte in enumerate(good):
            f.seek(i)
            f.write(bytes([byte ^ (1 << (i % 8))]))
            f.flush()
            try:
                ckpt = load(path, like=like)
            except ValueError as err:
                assert str(path) in str(err), f"byte {i}: {err}"
                refused += 1
            else:
                assert_trees_equal((ckpt.params, ckpt.opt_state, ckpt.state), (params, opt_state, state))
                assert ckpt.metadata == {"epoch": 3, "note": "caf\u00e9"} and ckpt.net == net, f"byte {i} changed it"
            f.seek(i)
            f.write(bytes([byte]))
    assert path.read_bytes() == good and refused > 0.99 * len(good)


# -- bad inputs are refused before writing --------------------------------------
def test_bad_inputs(tmp_path):
    params = fake_params([3, 2])
    with pytest.raises(ValueError, match="is a directory"):
        save(tmp_path, params)
    with pytest.raises(ValueError, match="does not exist"):
        save(tmp_path / "no" / "m.safetensors", params)
    with pytest.raises(TypeError, match="params must be a dict"):
        save(tmp_path / "m.safetensors", [params["dense_0"]["w"]])
    with pytest.raises(TypeError, match="params/dense_0/w is a str, not an array"):
        save(tmp_path / "m.safetensors", {"dense_0": {"w": "oops"}})
    with pytest.raises(TypeError, match="nested dicts"):
        save(tmp_path / "m.safetensors", {"layers": [params["dense_0"]]})
    with pytest.raises(ValueError, match="hold no '/'"):
        save(tmp_path / "m.safetensors", {"a/b": params["dense_0"]})
    with pytest.raises(TypeError, match="PRNG key"):
        save(tmp_path / "m.safetensors", params, opt_state={"key": jax.random.key(0)})
    with pytest.raises(TypeError, match="cannot store"):
        save(tmp_path / "m.safetensors", {"x": {"s": np.array(["a"])}})
    with pytest.raises(ValueError, match=r"save: params do not fit this network: params\[.dense_0.\]\[.b.\] has shape \(2,\)"):
        save(tmp_path / "m.safetensors", params, net=jdense.mlp([3, 5]))
    with pytest.raises(TypeError, match="like must be a dict"):
        load(tmp_path / "m.safetensors", like=(params, None))
    assert list(tmp_path.iterdir()) == []


# -- atomicity -----------------------------------------------------------------
def _old_checkpoint(tmp_path):
    old = {"dense_0": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}}
    path = save(tmp_path / "m.safetensors", old, metadata={"version": "old"})
    return path, old


@pytest.mark.parametrize("fail_at", ["save_file", "replace"])
def test_failed_save_keeps_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch, fail_at):
    path, old = _old_checkpoint(tmp_path)
    new = {"dense_0": {"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}}
    if fail_at == "save_file":
        real = safetensors.numpy.save_file

        def half_written(tensors, filename, metadata=None):
            real(tensors, filename, metadata=metadata)
            with open(filename, "r+b") as f:
                f.truncate(os.path.getsize(filename) // 2)
            raise OSError("disk full")

        monkeypatch.setattr(safetensors.numpy, "save_file", half_written)
    else:
        def no_replace(src, dst):
            raise OSError("replace failed")

        monkeypatch.setattr(checkpoint.os, "replace", no_replace)
    with pytest.raises(OSError, match="disk full|replace failed"):
        save(path, new, metadata={"version": "new"})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    ckpt = load(path)
    assert ckpt.metadata == {"version": "old"}
    assert_trees_equal(ckpt.params, old)


_BIG_SAVE = """
import sys
import numpy as np
from jdense.checkpoint import save
big = {f"dense_{i}": {"w": np.full((4000, 4000), i + 1.0, np.float32)} for i in range(3)}
save(sys.argv[1], big, metadata={"version": "new"})
"""


def _temps(directory, name="m.safetensors"):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp"))


def _kill_while_saving(path, env):
    """Start a big save of ``path`` in a subprocess and SIGKILL it once its temporary file exists."""
    before = set(_temps(path.parent))
    proc = subprocess.Popen([sys.executable, "-c", _BIG_SAVE, str(path)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        new = []
        while time.monotonic() < deadline and proc.poll() is None and not new:
            new = [n for n in _temps(path.parent) if n not in before]
            time.sleep(0.0005)
        assert proc.poll() is None, f"the saving process ended before it could be killed: {proc.stderr.read().decode()}"
        time.sleep(0.02)  # let it write part of the file
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert new and (path.parent / new[0]).exists(), "the kill should land before the temporary file is renamed"
    assert new[0].startswith(f".m.safetensors.{proc.pid}."), "the temporary file names its writer's pid"
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_saves_killed_midway_keep_old_checkpoint_and_leave_at_most_one_temp_file(tmp_path):
    path, old = _old_checkpoint(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), JAX_PLATFORMS="cpu")
    for _ in range(3):  # each new save removes the temporary file of the killed one before it
        _kill_while_saving(path, env)
        assert len(_temps(tmp_path)) == 1, _temps(tmp_path)
    ckpt = load(path)  # the old checkpoint, whole; loading removes the dead writer's temporary file too
    assert ckpt.metadata == {"version": "old"}
    assert_trees_equal(ckpt.params, old)
    assert _temps(tmp_path) == []


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.skipif(sys.platform == "win32", reason="pid liveness is checked on POSIX only")
def test_stale_temp_files_of_dead_writers_are_removed_and_nothing_else(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = [f".m.safetensors.{dead}.k3j2h1g0.tmp", f".m.safetensors.{dead}.a_b9.tmp"]
    kept = [
        f".m.safetensors.{os.getpid()}.own00000.tmp",  # this process's (another thread may be writing it)
        f".m.safetensors.{alive}.live0000.tmp",  # a writer still running
        f".other.safetensors.{dead}.k3j2h1g0.tmp",  # another checkpoint's
        f".m.safetensors.x.{dead}.k3j2h1g0.tmp",  # the temporary file of a checkpoint named "m.safetensors.x"
        ".m.safetensors.qwerty12.tmp",  # no pid in the name: nothing says its writer is gone
        "m.safetensors.bak",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"partial")
    save(tmp_path / "m.safetensors", fake_params([3, 2]))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "m.safetensors"])
    (tmp_path / stale[0]).write_bytes(b"partial")
    load(tmp_path / "m.safetensors")  # loading cleans up too
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "m.safetensors"])


# -- resuming ------------------------------------------------------------------
def test_resumed_training_equals_uninterrupted(tmp_path, setup):
    net, _, step, start = setup
    n = 5
    straight = run(step, start, 2 * n)

    params, opt_state, state = run(step, start, n)
    save(tmp_path / "mid.safetensors", params, opt_state, net=net, state=state)
    ckpt = load(tmp_path / "mid.safetensors", like=dict(params=params, opt_state=opt_state, state=state))
    resumed = run(step, (ckpt.params, ckpt.opt_state, ckpt.state), n)
    assert_trees_equal(resumed, straight)


# -- PyTorch -------------------------------------------------------------------
def test_torch_linear_recipe(tmp_path):
    torch = pytest.importorskip("torch")
    net = jdense.mlp([4, 8, 3])
    save(tmp_path / "m.safetensors", fake_params([4, 8, 3]), net=net)
    params = load(tmp_path / "m.safetensors").params

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    for linear, name in ((model[0], "dense_0"), (model[2], "dense_1")):
        linear.weight.data = torch.from_numpy(np.asarray(params[name]["w"]).T.copy())
        linear.bias.data = torch.from_numpy(np.array(params[name]["b"]))

    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(jax.jit(net.apply)(params, x)), expected, rtol=1e-5, atol=1e-6)
