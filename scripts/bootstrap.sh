#!/usr/bin/env bash
# Set up a ready-to-use environment in .venv (idempotent; a second run is fast):
#   * a virtualenv with the CPU build of torch (2.13.0, from local disk on the
#     project's machines) installed FIRST, so nothing pulls a multi-GB CUDA build;
#     a GPU machine can point TAMT_PYTHON at its own python with CUDA torch instead;
#   * tamt in editable mode with every extra (triton, datasets, metrics, plots, tests);
#   * the native extension tamt._C (csrc/, CMake).  If it cannot be built, tamt
#     still works on the Triton/reference paths; TAMT_REQUIRE_NATIVE=1 makes a
#     failed build fatal (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TAMT_VENV:-.venv}
BASE_PY=${TAMT_PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$BASE_PY" -m venv "$VENV"
fi
PY="$(cd "$VENV" && pwd)/bin/python"
pip_q() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[bootstrap] installing torch==2.13.0 (CPU build)"
  pip_q "torch==2.13.0"
fi
echo "[bootstrap] installing tamt and its extras"
pip_q -e ".[all]"

if [ -f scripts/build_native.sh ]; then
  echo "[bootstrap] building the native extension (csrc/)"
  if ! PYTHON="$PY" bash scripts/build_native.sh >/tmp/tamt-native-build.log 2>&1; then
    tail -n 20 /tmp/tamt-native-build.log
    if [ "${TAMT_REQUIRE_NATIVE:-0}" = "1" ]; then
      echo "[bootstrap] native build failed (TAMT_REQUIRE_NATIVE=1)"; exit 1
    fi
    echo "[bootstrap] native build failed: tamt runs on the Triton/torch backends (log: /tmp/tamt-native-build.log)"
  fi
fi
"$PY" -c "import tamt, torch; print(f'[bootstrap] ready: tamt {tamt.__version__}, torch {torch.__version__}')"
