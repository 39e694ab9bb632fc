#!/usr/bin/env python
"""The GPU suite: build, GPU tests, kernel benchmarks and checks, each step with a timeout and a status.

Entry point: ``bash benchmarks/gpu_suite.sh [--dry-run] [--budget S] [OUTDIR]`` (this file does the work).

Made for a GPU machine that is lent rarely and has no network: its own
python3 (torch, Triton, transformers; maybe no ``datasets``, ``hypothesis``,
``pytest-benchmark`` or ``pybind11``), an nvcc that may be newer than the
driver.  So nothing here may crash the run: every step ends as

* ``ran``     - it ran and exited 0 (benchmarks' PASS/FAIL target lines are collected),
* ``skipped`` - with a one-line reason (no CUDA device and why, a tool or file missing,
                no test selected, the suite's time budget used up),
* ``failed``  - non-zero exit or timeout, with the last lines of its log;

and the results folder is written in any case:
``benchmarks/results/gpu-<device>-<date>/`` (or OUTDIR) with ``env.json``
(device, driver, toolkits, versions, diagnosis), ``steps.json`` (per-step
status/reason/seconds/log), ``auto_table.json`` (what ``auto`` picks),
one ``<step>.log`` per step, the benchmarks' JSON and ``summary.md``.

Steps run most valuable first (GPU correctness tests, then kernel
benchmarks, then the rest) inside a total budget (default 540 s: one 10-minute
call on the lent machine), each with its own timeout; a step that would
not fit is skipped with that reason.  ``--dry-run`` (CPU, CI) runs every step's
cheap form: cmake configure instead of the build, pytest ``--collect-only``
instead of the tests, ``--help`` / ``--dry-run`` of the benchmarks; the
status bookkeeping and the results folder are the real ones.

Exit status: 0 unless a step failed.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_EXIT = 77  # a benchmark that cannot run here exits 77 with "SKIP: <reason>" (automake's convention)
GPU_TEST_DIRS_CORE = ["tests/native", "tests/ops"]
GPU_TEST_DIRS_KERNELS = ["tests/kernels", "tests/nn"]
FIDELITY_TESTS = "tests/pruning/test_paper_fidelity.py"


@dataclass
class Step:
    name: str
    what: str
    timeout: float
    cmd: list | None = None  # None: skipped (reason) or an in-process step
    dry_cmd: list | None = None
    needs_cuda: bool = True
    reason: str | None = None  # set: skip with this reason
    env: dict = field(default_factory=dict)
    interpret: callable = None  # (rc, log text) -> (status, reason) override


def _tail(text: str, n: int = 12) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _last_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def run_cmd(cmd: list, timeout: float, log: Path, env: dict) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, output, seconds); the whole process group dies on timeout."""
    t0 = time.monotonic()
    with open(log, "w") as fh:
        fh.write(f"$ {' '.join(map(str, cmd))}\n")
        fh.flush()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, log.read_text(errors="replace"), time.monotonic() - t0


def pytest_interpret(rc, text):
    if rc == 5:  # pytest: no tests collected / all deselected
        return "skipped", "selected no test: " + (_last_line(text) or "no tests ran")
    return None


def sanitizer_interpret(rc, text):
    if rc == 5:  # compute-sanitizer passes the application's exit code through
        return "skipped", "compute-sanitizer: the selection holds no CUDA test here, nothing to check"
    return None


def benchmark_interpret(rc, text):
    if rc == SKIP_EXIT:
        skip = [l for l in text.splitlines() if l.startswith("SKIP:")]
        return "skipped", (skip[-1][5:].strip() if skip else _last_line(text))
    return None


def build_steps(args, env_info: dict, out: Path, py: str) -> list[Step]:
    cuda = bool(env_info.get("cuda_available"))
    no_cuda = "; ".join(env_info.get("diagnosis") or []) or "torch sees no CUDA device"
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs"]
    # pytest-xdist, where the machine has it: the GPU tests are compile-bound (Triton
    # JIT, one process per worker), and tests/kernels + tests/nn took over 150 s in
    # one process on an H200; files stay whole per worker (module fixtures).
    xdist = (not args.dry_run and subprocess.run([py, "-c", "import xdist"], capture_output=True).returncode == 0)
    par = ["-n", "4", "--dist", "loadfile"] if xdist else []
    arch = env_info.get("capability")
    cmake_args = [f"-DTAMT_CUDA_ARCHS={arch}"] if arch else []  # this GPU's arch only: half the nvcc time
    quick = [] if args.full else ["--quick"]
    steps = [
        Step("build-native", "native extension tamt._C (C++/OpenMP + CUDA kernels for this GPU)", 200,
             cmd=["bash", "scripts/build_native.sh", *cmake_args],
             dry_cmd=["cmake", "-S", ".", "-B", str(out / "build-dry"), f"-DPython_EXECUTABLE={py}",
                      f"-DTAMT_OUTPUT_DIR={out / 'build-dry'}", "-DTAMT_WITH_CUDA=OFF"],  # configure: finds pybind11
             needs_cuda=False, env={"PYTHON": py, "BUILD_DIR": str(out / "build")}),
        Step("auto-table", "what the `auto` backend picks per op and device", 40,
             cmd=[py, "benchmarks/gpu_suite.py", "--auto-table", str(out / "auto_table.json")],
             dry_cmd=[py, "benchmarks/gpu_suite.py", "--auto-table", str(out / "auto_table.json")], needs_cuda=False),
        Step("gpu-tests-core", "GPU tests: native kernels and the public ops", 200,
             cmd=pytest + par + ["--junitxml", str(out / "tests-core.xml"), *GPU_TEST_DIRS_CORE],
             dry_cmd=pytest + ["--collect-only", *GPU_TEST_DIRS_CORE], interpret=pytest_interpret),
        Step("gpu-tests-kernels", "GPU tests: Triton kernels and the module layer", 240,
             cmd=pytest + par + ["--junitxml", str(out / "tests-kernels.xml"), *GPU_TEST_DIRS_KERNELS],
             dry_cmd=pytest + ["--collect-only", *GPU_TEST_DIRS_KERNELS], interpret=pytest_interpret),
        # the paper preset next to the in-test restatement of the reference, step by step, on the device the
        # Searcher picks (CUDA here: native k-th selection, Triton masked GEMMs), masks compared exactly; without
        # the datasets package they run on plain row tables (only the real-text masking check is skipped)
        Step("paper-fidelity", "paper preset vs the restated reference code, step by step, on CUDA", 120,
             cmd=pytest + ["--junitxml", str(out / "tests-fidelity.xml"), FIDELITY_TESTS],
             dry_cmd=pytest + ["--collect-only", FIDELITY_TESTS], interpret=pytest_interpret),
        Step("bench-kernels", "fused Triton vs unfused PyTorch vs dense; thresholds (PASS/FAIL targets)", 150,
             cmd=[py, "benchmarks/bench_kernels.py", *quick, "--out", str(out / "kernels.json")],
             dry_cmd=[py, "benchmarks/bench_kernels.py", "--help"], interpret=benchmark_interpret),
        Step("bench-native", "native CUDA kernels vs Triton vs torch", 60,
             cmd=[py, "benchmarks/bench_native.py", *quick, "--device", "cuda", "--out", str(out / "native.json")],
             dry_cmd=[py, "benchmarks/bench_native.py", "--dry-run", "--device", "cuda"],
             needs_cuda=False, interpret=benchmark_interpret),
        Step("bench-overhead", "host overhead per masked_linear call vs F.linear on CUDA", 60,
             cmd=[py, "benchmarks/bench_overhead.py", "--device", "cuda", "--out", str(out / "overhead.json")],
             dry_cmd=[py, "benchmarks/bench_overhead.py", "--help"], interpret=benchmark_interpret),
        Step("sanitizer", "compute-sanitizer memcheck on the native CUDA kernels", 120,
             cmd=["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "9", *pytest, "-x", "tests/native",
                  "-k", "cuda or CUDA"],
             dry_cmd=["compute-sanitizer", "--version"], interpret=sanitizer_interpret),
        Step("static-check", "Triton kernels compiled for sm_90: shared memory, spills, wgmma (no GPU needed)", 120,
             cmd=[py, "benchmarks/static_gpu_check.py", "--arch", "90", "--json", str(out / "static_sm90.json")],
             dry_cmd=[py, "benchmarks/static_gpu_check.py", "--help"], needs_cuda=False),
    ]
    for s in steps:
        if s.needs_cuda and not cuda and not args.dry_run:
            s.reason = f"no CUDA device: {no_cuda}"
    sanitizer = next(s for s in steps if s.name == "sanitizer")
    if not shutil.which("compute-sanitizer"):
        sanitizer.reason = "compute-sanitizer not found on PATH (part of the CUDA toolkit)"
    static = next(s for s in steps if s.name == "static-check")
    if not (REPO / "benchmarks" / "static_gpu_check.py").is_file():
        static.reason = "benchmarks/static_gpu_check.py not found in this checkout"
    return steps


def run_steps(steps: list[Step], args, out: Path, base_env: dict) -> list[dict]:
    deadline = time.monotonic() + args.budget
    records = []
    for s in steps:
        rec = {"step": s.name, "what": s.what, "status": None, "reason": None, "seconds": 0.0, "log": None,
               "targets": []}
        left = deadline - time.monotonic()
        cmd = s.dry_cmd if args.dry_run else s.cmd
        if s.reason:
            rec.update(status="skipped", reason=s.reason)
        elif cmd is None:
            rec.update(status="skipped", reason="no dry-run form" if args.dry_run else "nothing to run")
        elif left < min(20.0, s.timeout):
            rec.update(status="skipped", reason=f"the suite's time budget ({args.budget:.0f} s) is used up")
        else:
            log = out / f"{s.name}.log"
            timeout = min(s.timeout, left)
            print(f"\n=== {s.name}{' (dry run)' if args.dry_run else ''}: {s.what} [timeout {timeout:.0f} s]", flush=True)
            rc, text, secs = run_cmd(cmd, timeout, log, {**base_env, **s.env})
            rec.update(seconds=round(secs, 1), log=log.name, exit_code=rc)
            rec["targets"] = [l.strip() for l in text.splitlines() if re.match(r"\s*(PASS|FAIL)\b", l)]
            verdict = s.interpret(rc, text) if (s.interpret and rc is not None) else None
            if verdict:
                rec["status"], rec["reason"] = verdict
            elif rc is None:
                rec.update(status="failed", reason=f"timed out after {timeout:.0f} s: {_last_line(text)[:200]}")
            elif rc == 0:
                rec.update(status="ran", reason="dry run: " + " ".join(map(str, cmd[:3]))[:120] if args.dry_run
                           else None)
            else:
                rec.update(status="failed", reason=f"exit {rc}: {_last_line(text)[:200]}")
            print(_tail(text, 15 if rec["status"] == "failed" else 6))
        line = f"--- {s.name}: {rec['status']}" + (f" ({rec['reason']})" if rec["reason"] else "") + \
            (f" in {rec['seconds']} s" if rec["seconds"] else "")
        print(line, flush=True)
        for t in rec["targets"]:
            print("    " + t)
        records.append(rec)
        (out / "steps.json").write_text(json.dumps(records, indent=2) + "\n")  # after every step: survives a kill
    return records


def write_summary(out: Path, env_info: dict, records: list[dict], args) -> None:
    lines = [f"# GPU suite {'(dry run) ' if args.dry_run else ''}{env_info.get('date')} on "
             f"{env_info.get('device') or 'no CUDA device'}", ""]
    lines += [f"- {k}: {env_info.get(k)}" for k in ("device", "capability", "sms", "memory_gib", "torch", "torch_cuda",
                                                    "driver_cuda", "nvcc", "python", "git_commit")]
    lines.append(f"- nvidia-smi: {env_info.get('nvidia_smi')}")
    lines.append(f"- packages: {env_info.get('packages')}")
    lines.append(f"- native: cpu {env_info.get('native_cpu')}; cuda {env_info.get('native_cuda')}")
    for d in env_info.get("diagnosis") or []:
        lines.append(f"- **diagnosis**: {d}")
    lines += ["", "| step | status | seconds | reason |", "|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['step']} | {r['status']} | {r['seconds']} | {(r['reason'] or '').replace('|', '/')} |")
    targets = [t for r in records for t in r["targets"]]
    if targets:
        lines += ["", "## targets", ""] + [f"- {t}" for t in targets]
    auto = out / "auto_table.json"
    if auto.is_file():
        lines += ["", "## auto table", "", "```", auto.read_text().strip(), "```"]
    failed = [r["step"] for r in records if r["status"] == "failed"]
    lines += ["", f"failed steps: {', '.join(failed) if failed else 'none'}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def auto_table(path: str) -> int:
    """Write what `auto` resolves to for every op family on this machine's devices (and the raw table)."""
    sys.path.insert(0, str(REPO))
    import torch

    from tamt.ops import _backend

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    table = getattr(_backend, "auto_table", None)  # a measured table, where the kernels provide one
    raw = table() if callable(table) else {f"{f}/{d}": list(v) for (f, d), v in _backend._AUTO_PREFERENCE.items()}
    resolved = {}
    for family, dev in sorted({(f, d) for (f, d) in _backend._AUTO_PREFERENCE if d in devices}):
        with _backend.use_backend("auto"):
            try:
                resolved[f"{family}/{dev}"] = _backend.resolve(family, dev, ("torch", "triton", "native"))
            except Exception as exc:  # noqa: BLE001 - recorded, not raised
                resolved[f"{family}/{dev}"] = f"error: {exc}"
    doc = {"preference": raw, "resolved_here": resolved,
           "unavailable": {f"{b}/{d}": _backend.unavailable_reason(b, d) for b in ("triton", "native") for d in devices}}
    text = json.dumps(doc, indent=2, default=str)
    Path(path).write_text(text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", nargs="?", default=None, help="results folder (default benchmarks/results/gpu-<device>-<date>)")
    ap.add_argument("--dry-run", action="store_true", help="cheap form of every step (CPU/CI): checks the suite itself")
    ap.add_argument("--budget", type=float, default=540.0, help="total seconds for all steps (default 540)")
    ap.add_argument("--quick", action="store_true", help="(the default) benchmarks in their --quick form")
    ap.add_argument("--full", action="store_true", help="benchmarks in their full form (longer than one budget)")
    ap.add_argument("--only", default=None, help="comma list of step names to run (the others are skipped)")
    ap.add_argument("--auto-table", default=None, metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.auto_table:
        return auto_table(args.auto_table)

    # absolute (not resolved: a venv's python is a symlink whose target has no site-packages);
    # CMake's FindPython ignores a relative interpreter path and silently takes another python
    py = os.environ.get("PYTHON") or sys.executable
    py = os.path.abspath(shutil.which(py) or py)
    base_env = dict(os.environ)
    base_env.update(PYTHONPATH=os.pathsep.join([str(REPO)] + ([base_env["PYTHONPATH"]] if base_env.get("PYTHONPATH") else [])),
                    PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    base_env.pop("TRITON_INTERPRET", None)  # the GPU runs the kernels natively

    probe = subprocess.run([py, str(REPO / "benchmarks" / "gpu_env.py")], cwd=REPO, env=base_env, capture_output=True,
                           text=True, timeout=120)
    try:
        env_info = json.loads(probe.stdout)
    except json.JSONDecodeError:
        env_info = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "cuda_available": False,
                    "device_slug": "unknown", "diagnosis": [f"environment probe failed: {_last_line(probe.stderr)}"]}
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M")
    out = Path(args.outdir) if args.outdir else REPO / "benchmarks" / "results" / f"gpu-{env_info.get('device_slug')}-{date}"
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "env.json").write_text(json.dumps(env_info, indent=2, default=str) + "\n")
    print(f"GPU suite{' (dry run)' if args.dry_run else ''} -> {out}")
    print(f"device: {env_info.get('device') or 'none'}; torch {env_info.get('torch')} (CUDA {env_info.get('torch_cuda')}); "
          f"driver CUDA {env_info.get('driver_cuda')}; nvcc {env_info.get('nvcc')}")
    for d in env_info.get("diagnosis") or []:
        print(f"diagnosis: {d}")

    steps = build_steps(args, env_info, out, py)
    if args.only:
        keep = set(args.only.split(","))
        unknown = keep - {s.name for s in steps}
        if unknown:
            ap.error(f"unknown step(s) {sorted(unknown)}; steps: {', '.join(s.name for s in steps)}")
        for s in steps:
            if s.name not in keep:
                s.reason = s.reason or "not selected (--only)"
    records = run_steps(steps, args, out, base_env)
    write_summary(out, env_info, records, args)
    failed = [r["step"] for r in records if r["status"] == "failed"]
    print(f"\nresults in {out} (summary.md, steps.json); "
          + (f"FAILED steps: {', '.join(failed)}" if failed else "no step failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
