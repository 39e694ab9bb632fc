#!/usr/bin/env bash
# Set up a ready-to-use environment in .venv (idempotent; a second run is fast):
#   * a virtualenv with the CPU build of torch (2.13.0, from local disk on the
#     project's machines) installed FIRST, so nothing pulls a multi-GB CUDA build;
#     a GPU machine can point TAMT_PYTHON at its own python with CUDA torch instead;
#   * tamt in editable mode with every extra (triton, datasets, metrics, plots, tests),
#     at the exact versions of scripts/constraints.txt: the lock the test suite last
#     passed with (reproducible installs; refresh it with scripts/lock.sh);
#   * the native extension tamt._C (csrc/, CMake).  If it cannot be built, tamt
#     still works on the Triton/reference paths; TAMT_REQUIRE_NATIVE=1 makes a
#     failed build fatal (CI sets it).
#
#   bash scripts/bootstrap.sh            # from the lock
#   bash scripts/bootstrap.sh --latest   # the newest releases pyproject.toml allows (or TAMT_LATEST=1):
#                                        # to check upstream releases on purpose, then scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TAMT_VENV:-.venv}
BASE_PY=${TAMT_PYTHON:-python3}
LATEST=${TAMT_LATEST:-0}
for arg in "$@"; do
  case "$arg" in
    --latest) LATEST=1 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bootstrap: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
LOCK=scripts/constraints.txt

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$BASE_PY" -m venv "$VENV"
fi
PY="$(cd "$VENV" && pwd)/bin/python"
pip_q() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

had_torch=1
if ! "$PY" -c "import torch" 2>/dev/null; then
  had_torch=0
  echo "[bootstrap] installing torch==2.13.0 (CPU build)"
  pip_q "torch==2.13.0"
fi
if [ "$LATEST" = "1" ]; then
  echo "[bootstrap] installing tamt and its extras: the NEWEST releases pyproject.toml allows (--latest)"
  pip_q --upgrade --upgrade-strategy eager -e ".[all]"
else
  [ -f "$LOCK" ] || { echo "[bootstrap] $LOCK is missing: restore it from git, or run with --latest" >&2; exit 1; }
  cons="$LOCK"
  if [ "$had_torch" = "1" ]; then  # a python with its own torch (a GPU build, say) keeps it
    cons="$(mktemp)"; grep -viE '^torch==' "$LOCK" > "$cons"
  fi
  echo "[bootstrap] installing tamt and its extras at the locked versions ($LOCK)"
  pip_q -c "$cons" -e ".[all]"
fi

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
"$PY" -c "import tamt, torch, transformers, triton; print(f'[bootstrap] ready: tamt {tamt.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, triton {triton.__version__}')"
