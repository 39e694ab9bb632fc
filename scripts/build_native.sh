#!/usr/bin/env bash
# Build the native extension tamt._C (csrc/) with CMake + Ninja into build/
# and place the module into tamt/ (tamt/_C.<python-ext-suffix>).
#   PYTHON=/path/to/python bash scripts/build_native.sh [extra cmake -D options]
#   e.g. ... -DTAMT_WITH_CUDA=OFF   (AUTO: CUDA kernels iff torch has CUDA and nvcc is found)
# Environment: PYTHON (default: python3), BUILD_DIR (default: build), JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
BUILD_DIR="${BUILD_DIR:-build}"
GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
# A build dir configured with another generator cannot be reused.
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]] && ! grep -q "CMAKE_GENERATOR:INTERNAL=${GEN[1]:-Unix Makefiles}" "$BUILD_DIR/CMakeCache.txt"; then
  rm -rf "$BUILD_DIR"
fi
start=$(date +%s)
# sys.executable: an absolute path (FindPython ignores a relative one and falls back to another python)
cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DPython_EXECUTABLE="$("$PY" -c "import sys; print(sys.executable)")" "$@"
cmake --build "$BUILD_DIR" ${JOBS:+-j "$JOBS"}
"$PY" - <<'PYEOF'
import importlib, sys
sys.path.insert(0, ".")
C = importlib.import_module("tamt._C")
print(f"tamt._C built: {C.__file__} (CUDA kernels: {C.WITH_CUDA} {C.CUDA_ARCHS}, CPU threads: {C.cpu_num_threads()})")
PYEOF
echo "build_native: done in $(( $(date +%s) - start )) s"
