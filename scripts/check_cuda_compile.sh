#!/usr/bin/env bash
# Compile-check every CUDA source under csrc/cuda with nvcc for sm_80 and
# sm_90 (no torch needed: the .cu files are torch-free). Exits non-zero on the
# first compile error; prints a skip message and exits 0 when nvcc is absent.
# Usage: bash scripts/check_cuda_compile.sh   (NVCC=/path/to/nvcc to choose one)
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || true)}"
if [[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [[ -z "$NVCC" ]]; then
  echo "check_cuda_compile: SKIP (nvcc not found; set NVCC or put it on PATH)"
  exit 0
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
shopt -s nullglob
files=(csrc/cuda/*.cu)
if (( ${#files[@]} == 0 )); then echo "check_cuda_compile: no .cu files"; exit 1; fi
"$NVCC" --version | tail -n 1
status=0
for arch in sm_80 sm_90; do
  for f in "${files[@]}"; do
    if "$NVCC" -std=c++17 -O2 -Icsrc/include -Xcompiler -Wall -Werror all-warnings \
         -arch="$arch" -c "$f" -o "$out/$(basename "$f" .cu).$arch.o"; then
      echo "ok    $arch  $f"
    else
      echo "FAIL  $arch  $f"
      status=1
    fi
  done
done
exit $status
