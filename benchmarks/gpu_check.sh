#!/usr/bin/env bash
# The accelerator check: on a machine with a GPU, run the tests that matter for devices and the
# three throughput benchmarks, writing everything under one folder, in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # default OUT_DIR: gpu_check_<UTC time>
#   bash benchmarks/gpu_check.sh --quick [OUT_DIR]    # tiny sizes, and allowed on CPU: a smoke test of the script
#
# Run it from the repository root with the project's Python (PYTHON=... to pick another). Each step
# has its own time limit (`timeout`: 150 + 80 + 45 + 160 s), so the whole stays under 8 minutes; a
# failed or timed-out step is recorded and the next one runs. OUT_DIR receives:
#   devices.txt                 jax.devices(), the GPU's name and memory (nvidia-smi)
#   tests.xml, tests.log        pytest on the device-relevant test files (JUnit XML and the log)
#   bench_fit.json/.log         bench_fit.py: 64-32-10, 784-128-64-10 and 1024-4096-4096-1024, 1 round (jdense, jax_scan, jax_loop, torch)
#   bench_calls.json/.log       bench_calls.py --no-sweep (the cost of a call, compile included)
#   bench_population.json/.log  bench_population.py with a 1,024-member ensemble (key ensemble64)
#   summary.txt                 each step's exit status and seconds
# Tests run with JAX_DEFAULT_MATMUL_PRECISION=highest: their references (NumPy, float32 tolerances)
# assume full float32 matmuls, and GPUs otherwise use TF32 for them. The benchmarks keep JAX's default.
set -u
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; shift; fi
OUT=${1:-gpu_check_$(date -u +%Y%m%dT%H%M%SZ)}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT/summary.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, record its exit status and duration
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout --kill-after=5 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$? note=""
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then note=" (timed out after ${limit} s)"; fi
  echo "$name exit=$rc seconds=$((SECONDS - start))$note" >> "$OUT/summary.txt"
  tail -n 3 "$OUT/$name.log"
}

if ! "$PYTHON" -c "import jax, jdense; print(jax.__version__, jax.default_backend(), jax.devices())" > "$OUT/devices.txt" 2>&1; then
  cat "$OUT/devices.txt" >&2
  echo "gpu_check: $PYTHON cannot import jax and jdense; set PYTHON=/path/to/the/venv/bin/python." >&2
  exit 2
fi
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi") >> "$OUT/devices.txt"
cat "$OUT/devices.txt"
if [ $QUICK -eq 0 ] && ! grep -qiE "gpu|cuda|rocm" <(head -n 1 "$OUT/devices.txt"); then
  echo "gpu_check: JAX sees no GPU (see $OUT/devices.txt); install jax[cuda12] or pass --quick for a CPU smoke test." >&2
  exit 2
fi

if [ $QUICK -eq 1 ]; then
  FIT_ARGS=(--quick --no-rss); CALLS_ARGS=(--quick --no-cli --no-sweep); POP_ARGS=(--quick --skip-rss)
  TEST_FILES=(tests/test_population_devices.py); SCALE=3  # a CPU smoke test: slower, so longer limits
else
  FIT_ARGS=(--shapes 64-32-10 784-128-64-10 1024-4096-4096-1024 --rounds 1 --no-rss --peers jax_scan jax_loop torch)
  CALLS_ARGS=(--no-sweep); POP_ARGS=(--members 1024); SCALE=1  # sweeps: bench_population's sweep32 has them
  TEST_FILES=(tests/test_population_devices.py tests/test_population.py tests/test_parallel.py tests/test_programs.py)
fi

# Every test runs (no -x: one failure must not hide the others); CPU-only checks (LLVM levels) are left out.
JAX_DEFAULT_MATMUL_PRECISION=highest step tests $((150 * SCALE)) "$PYTHON" -m pytest "${TEST_FILES[@]}" -q -p no:cacheprovider \
  -k "not llvm_level_1_on_cpu" --junitxml="$OUT/tests.xml"
step bench_fit $((80 * SCALE)) "$PYTHON" benchmarks/bench_fit.py "${FIT_ARGS[@]}" --json "$OUT/bench_fit.json"
step bench_calls $((45 * SCALE)) "$PYTHON" benchmarks/bench_calls.py "${CALLS_ARGS[@]}" --json "$OUT/bench_calls.json"
step bench_population $((160 * SCALE)) "$PYTHON" benchmarks/bench_population.py "${POP_ARGS[@]}" --json "$OUT/bench_population.json"

echo "--- $OUT/summary.txt"
cat "$OUT/summary.txt"
! grep -qv "exit=0 " "$OUT/summary.txt"
