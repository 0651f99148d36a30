"""Make the repository's ``jdense`` importable when pytest runs from a checkout without installing it,
and make XLA compile fast: the suite's networks are tiny, so its time is mostly XLA:CPU compiling
programs, and LLVM's optimization of them (backend level 0 here, inherited by the subprocesses the
tests start) costs more than it saves. Benchmarks and users keep XLA's defaults."""

import os
import pathlib
import sys

os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
