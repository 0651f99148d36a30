"""The persistent compilation cache: opt-in for the library, on by default for `jdense train`."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache

import jdense

_KEYS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs", "jax_enable_compilation_cache")


@pytest.fixture(autouse=True)
def _restore_jax_config():
    """Each test may turn the cache on; the rest of the suite must not write into a deleted tmp dir."""
    saved = {k: jax.config.values[k] for k in _KEYS}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("JDENSE_NO_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    return {**env, "XDG_CACHE_HOME": str(tmp_path), **extra}


def test_importing_jdense_changes_no_jax_setting():
    script = (
        "import jax; before = dict(jax.config.values)\n"
        "import jdense, jdense.cli\n"
        "print(sorted(k for k, v in jax.config.values.items() if before.get(k, object()) != v))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_enable_writes_compiled_programs_to_the_directory(tmp_path):
    path = jdense.enable_compilation_cache(tmp_path / "a" / "cache")
    assert path == tmp_path / "a" / "cache" and path.is_dir()
    assert jax.config.jax_compilation_cache_dir == str(path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    jax.jit(lambda x: x * 3.0 - 1.0)(jnp.arange(5.0)).block_until_ready()
    assert any(p.name.endswith("-cache") for p in path.iterdir())
    other = jdense.enable_compilation_cache(str(tmp_path / "b"))  # a second call moves the cache there
    jax.jit(lambda x: x * 5.0 + 2.0)(jnp.arange(5.0)).block_until_ready()
    assert any(other.iterdir())


def test_default_directory_follows_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jdense.enable_compilation_cache() == tmp_path / "xdg" / "jdense"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec: ignore a relative value
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert jdense.enable_compilation_cache() == tmp_path / "home" / ".cache" / "jdense"
    assert jdense.enable_compilation_cache("~/elsewhere") == tmp_path / "home" / "elsewhere"


@pytest.mark.parametrize(
    "path, error, match",
    [(3, TypeError, "path must be a str"), (b"/tmp/x", TypeError, "path must be a str"), ("", ValueError, "empty")],
)
def test_bad_paths_are_refused(path, error, match):
    with pytest.raises(error, match=match):
        jdense.enable_compilation_cache(path)


def test_a_file_is_not_a_cache_directory(tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        jdense.enable_compilation_cache(file)
    assert jax.config.jax_compilation_cache_dir != str(file)


_SECOND_RUN = """
import sys, jax
events = []
jax.monitoring.register_event_listener(lambda event, **_: events.append(event))
from jdense.cli import main
status = main(["train", "--epochs", "2", "--verbose", "0"])
print("requests", events.count("/jax/compilation_cache/compile_requests_use_cache"))
print("hits", events.count("/jax/compilation_cache/cache_hits"))
sys.exit(status)
"""


def test_second_cli_run_finds_every_program_in_the_cache(tmp_path):
    pytest.importorskip("sklearn")
    first = subprocess.run([sys.executable, "-m", "jdense", "train", "--epochs", "2", "--verbose", "0"],
                           env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    cache = pathlib.Path(tmp_path, "jdense")
    assert len(list(cache.glob("*-cache"))) >= 3  # the epoch, the evaluation and init at least
    second = subprocess.run([sys.executable, "-c", _SECOND_RUN], env=_env(tmp_path), capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    counts = dict(line.split() for line in second.stdout.splitlines() if line.startswith(("requests", "hits")))
    assert int(counts["hits"]) > 0 and counts["hits"] == counts["requests"], second.stdout
