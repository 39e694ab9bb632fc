#!/usr/bin/env bash
# The single GPU entry point: build, GPU tests, GPU benchmarks, results file.
#
# Runs on a CUDA machine that has torch, triton, transformers, pytest and
# cmake installed but NO network (no pip from the internet): it uses the
# machine's own python3 and runs tamt from this checkout (PYTHONPATH=.).
#
#   bash benchmarks/gpu_suite.sh [--quick] [OUTDIR]
#
# Writes benchmarks/results/gpu-<device>-<date>/ (or OUTDIR): env.txt with
# device, driver and versions, build.log, tests.log (+ junit xml),
# kernels.json / native.json benchmark results and summary.md.  Every step
# runs even when an earlier one fails; the exit status is non-zero if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=""
if [ "${1:-}" = "--quick" ]; then QUICK="--quick"; shift; fi
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unset TRITON_INTERPRET

dev=$($PY -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-') if torch.cuda.is_available() else 'no-cuda')")
OUTDIR=${1:-benchmarks/results/gpu-$dev-$(date -u +%Y%m%d-%H%M)}
mkdir -p "$OUTDIR"
status=0
step() { echo; echo "=== $1 ==="; }

step "environment"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  nvcc --version 2>&1 | tail -n 1
  $PY - <<'PY'
import importlib, platform, torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "sm", f"{p.major}{p.minor}", "SMs", p.multi_processor_count, "mem_GiB", round(p.total_memory / 2**30, 1))
for name in ("triton", "transformers", "safetensors", "datasets", "pytest", "hypothesis"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "MISSING", type(exc).__name__)
PY
} 2>&1 | tee "$OUTDIR/env.txt"

step "build native extension (CPU + CUDA kernels)"
if PYTHON=$PY bash scripts/build_native.sh >"$OUTDIR/build.log" 2>&1; then
  tail -n 3 "$OUTDIR/build.log"
else
  echo "native build FAILED (see build.log):"; tail -n 30 "$OUTDIR/build.log"; status=1
fi
$PY -c "from tamt import _native as n; print('native available:', n.available(), n.unavailable_reason() or '')" 2>&1 | tee -a "$OUTDIR/env.txt"

step "GPU tests (kernels, ops, native, module layer)"
# Only the suites that exercise device code; data/pipeline tests need 'datasets', absent here.
$PY -m pytest -q -p no:cacheprovider tests/kernels tests/ops tests/native tests/nn \
    --junitxml="$OUTDIR/tests.xml" 2>&1 | tee "$OUTDIR/tests.log" | tail -n 40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "compute-sanitizer on the native CUDA kernels"
if command -v compute-sanitizer >/dev/null && [ -f tests/native/test_native.py ]; then
  compute-sanitizer --tool memcheck --error-exitcode 9 $PY -m pytest -q -p no:cacheprovider -x tests/native -k "cuda or CUDA" \
      >"$OUTDIR/sanitizer.log" 2>&1 || { echo "compute-sanitizer reported errors (sanitizer.log)"; status=1; }
  tail -n 5 "$OUTDIR/sanitizer.log"
fi

step "kernel benchmarks (fused Triton vs unfused PyTorch vs dense; thresholds)"
$PY benchmarks/bench_kernels.py $QUICK --out "$OUTDIR/kernels.json" 2>&1 | tee "$OUTDIR/kernels.txt" | tail -n 60
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

step "native benchmarks (CUDA vs Triton vs torch)"
$PY benchmarks/bench_native.py $QUICK --out "$OUTDIR/native.json" 2>&1 | tee "$OUTDIR/native.txt" | tail -n 40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

{
  echo "# GPU suite $(date -u +%F) on $dev"
  echo; echo '```'; cat "$OUTDIR/env.txt"; echo '```'
  echo; echo "## tests"; echo '```'; tail -n 5 "$OUTDIR/tests.log"; echo '```'
  for f in kernels native; do
    [ -f "$OUTDIR/$f.txt" ] && { echo; echo "## $f"; echo '```'; cat "$OUTDIR/$f.txt"; echo '```'; }
  done
  echo; echo "exit status: $status"
} >"$OUTDIR/summary.md"
echo; echo "results in $OUTDIR (summary.md); status $status"
exit $status
