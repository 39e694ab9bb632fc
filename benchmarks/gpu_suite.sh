#!/usr/bin/env bash
# The single GPU entry point: build, GPU tests, GPU benchmarks and checks, results folder.
#
#   bash benchmarks/gpu_suite.sh [--dry-run] [--budget SECONDS] [--only STEP,...] [--full] [OUTDIR]
#
# Runs with the machine's own python3 (or $PYTHON) and this checkout on PYTHONPATH, offline. Every step
# runs, skips with a one-line reason, or fails with its log; results land in
# benchmarks/results/gpu-<device>-<date>/ (or OUTDIR): env.json, steps.json, auto_table.json, <step>.log,
# the benchmarks' JSON and summary.md.  The whole suite fits a 10-minute GPU loan (--budget, default 540 s).
# --dry-run: the cheap form of every step on a CPU machine (CI checks the suite itself this way).
# See benchmarks/gpu_suite.py for the steps and their order.
set -uo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" benchmarks/gpu_suite.py "$@"
