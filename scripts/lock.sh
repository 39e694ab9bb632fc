#!/usr/bin/env bash
# Refresh scripts/constraints.txt, the lock that scripts/bootstrap.sh installs from, from an
# environment in which the whole test suite has just passed:
#
#   bash scripts/bootstrap.sh --latest      # the newest releases pyproject.toml allows
#   .venv/bin/python -m pytest              # must pass (README command 2)
#   bash scripts/lock.sh                    # pin exactly what was installed
#
# The lock pins every installed distribution except tamt itself and pip; torch is
# pinned too (the CPU build; bootstrap installs it first and skips that pin on a
# machine whose python already has its own torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${TAMT_VENV:-.venv}/bin/python"
[ -x "$PY" ] || { echo "lock: no environment at ${TAMT_VENV:-.venv}: run bash scripts/bootstrap.sh first" >&2; exit 1; }
out=scripts/constraints.txt
tmp="$(mktemp "$out.XXXX")"
{
  echo "# pip constraints: the exact versions the test suite last passed with (written by scripts/lock.sh)."
  echo "# $(date -u +%Y-%m-%d), $("$PY" -c 'import platform,sys; print(f"Python {sys.version.split()[0]}, {platform.machine()}")')"
  echo "# Refresh: bash scripts/bootstrap.sh --latest && .venv/bin/python -m pytest && bash scripts/lock.sh"
  "$PY" -m pip freeze --exclude-editable --disable-pip-version-check \
    | grep -viE '^(tamt|pip)==|^-e |@ file:' | LC_ALL=C sort -f
} > "$tmp"
mv "$tmp" "$out"   # atomic: a killed run leaves the old lock
echo "lock: wrote $out ($(grep -vc '^#' "$out") pins)"
