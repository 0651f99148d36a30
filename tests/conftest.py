"""Make the repository's ``jdense`` importable when pytest runs from a checkout without installing it,
and make XLA compile fast: the suite's networks are tiny, so its time is mostly XLA:CPU compiling
programs, and LLVM's optimization of them (backend level 0 and no expensive passes here, inherited
by the subprocesses the tests start) costs more than it saves. Benchmarks and users keep XLA's defaults."""

import os
import pathlib
import sys

_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
