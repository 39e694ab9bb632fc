"""The GPU suite cannot crash on an offline GPU machine: a dry run here, without its optional packages.

The lent GPU machine has its own python3, maybe without hypothesis,
pytest-benchmark, datasets or the pybind11 package.  The dry run executes
every step's cheap form (cmake configure, pytest --collect-only, the
benchmarks' --help / --dry-run) in a Python where those four packages are
hidden from imports AND from package metadata (so pytest's plugin autoload and
``python -m pybind11`` see them absent, as on that machine), and checks that
each step ran or was skipped with a one-line reason and that the results
folder was written.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HIDDEN = ("hypothesis", "pytest_benchmark", "datasets", "pybind11")

# Replaces the path-based finder: hidden top-level modules are not found (find_spec -> None, as when
# absent) and their distributions are not listed (no pytest plugin entry points, no metadata).
SITECUSTOMIZE = textwrap.dedent(f"""
    import importlib.machinery as _m, re as _re, sys as _sys
    _MODULES = {set(HIDDEN)!r}
    _DISTS = {{_re.sub(r"[-_.]+", "-", n) for n in _MODULES}}

    class _HidingPathFinder(_m.PathFinder):
        @classmethod
        def find_spec(cls, fullname, path=None, target=None):
            if fullname.partition(".")[0] in _MODULES:
                return None
            return super().find_spec(fullname, path, target)

        @classmethod
        def find_distributions(cls, *args, **kwargs):
            return (d for d in super().find_distributions(*args, **kwargs)
                    if _re.sub(r"[-_.]+", "-", (d.metadata["Name"] or "").lower()) not in _DISTS)

    _sys.meta_path[:] = [_HidingPathFinder if f is _m.PathFinder else f for f in _sys.meta_path]
""")

STEPS = ["build-native", "auto-table", "gpu-tests-core", "gpu-tests-kernels", "paper-fidelity", "bench-kernels",
         "bench-native", "bench-overhead", "sanitizer", "static-check"]


def _hidden_env(tmp_path: Path) -> dict:
    site = tmp_path / "hide"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "pybind11_DIR", "CMAKE_PREFIX_PATH")}
    env.update(PYTHONPATH=str(site), PYTHON=sys.executable)
    return env


def test_the_simulated_machine_lacks_the_packages(tmp_path):
    code = ("import importlib.util as u, importlib.metadata as md; "
            f"print([u.find_spec(n) is None for n in {HIDDEN!r}], "
            "sorted(d.metadata['Name'].lower() for d in md.distributions() "
            "if d.metadata['Name'].lower() in ('hypothesis', 'datasets', 'pybind11', 'pytest-benchmark', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], env=_hidden_env(tmp_path), capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[True, True, True, True] ['torch']"


@pytest.mark.slow
def test_gpu_suite_dry_run_without_optional_packages(tmp_path):
    out = tmp_path / "results"
    r = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--dry-run", str(out)], cwd=REPO, env=_hidden_env(tmp_path),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    steps = json.loads((out / "steps.json").read_text())
    assert [s["step"] for s in steps] == STEPS
    for s in steps:
        assert s["status"] in ("ran", "skipped"), s
        if s["status"] == "skipped":
            assert s["reason"] and "\n" not in s["reason"], s
        assert f"--- {s['step']}: {s['status']}" in r.stdout  # one status line per step in the console
    env = json.loads((out / "env.json").read_text())
    assert all(env["packages"][n].startswith("MISSING") for n in HIDDEN)
    assert env["diagnosis"], "a machine without CUDA must say why GPU steps are skipped"
    # the native build configures with torch's pybind11 headers when the package is absent
    assert "using torch's bundled headers" in (out / "build-native.log").read_text()
    # the GPU test files import without hypothesis (the property tests fall back to fixed samples)
    # ... and so do the paper-fidelity step tests (plain row tables instead of datasets)
    for name in ("gpu-tests-core", "gpu-tests-kernels", "paper-fidelity"):
        log = (out / f"{name}.log").read_text()
        assert re.search(r"^\d+ tests collected in", log, re.M) and "ERROR" not in log, log[-2000:]
    by_name = {s["step"]: s for s in steps}
    assert "native backend unavailable on cuda" in by_name["bench-native"]["reason"]  # skip, not exit 2
    auto = json.loads((out / "auto_table.json").read_text())
    assert auto["resolved_here"]["gemm/cpu"] == "torch"
    summary = (out / "summary.md").read_text()
    assert "| build-native | ran |" in summary and "failed steps: none" in summary


def test_budget_and_step_selection_are_reported(tmp_path):
    # budget 0: nothing fits, every step is skipped with the reason; the folder is still written
    out = tmp_path / "r"
    r = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "--dry-run", "--budget", "0", str(out)], cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    steps = json.loads((out / "steps.json").read_text())
    assert [s["step"] for s in steps] == STEPS and all(s["status"] == "skipped" for s in steps)
    assert any("time budget" in s["reason"] for s in steps)
    assert (out / "summary.md").is_file() and (out / "env.json").is_file()


def test_environment_diagnosis_names_the_toolkit_driver_mismatch():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gpu_env import diagnose
    finally:
        sys.path.pop(0)
    base = {"nvidia_smi": ["NVIDIA H200, 550.54, 143771 MiB, 1980 MHz"], "driver_cuda": "12.4", "nvcc": "12.4",
            "torch": "2.11.0", "cuda_available": True, "native_cuda": "available"}
    assert diagnose(base) == []
    torch_newer = diagnose({**base, "cuda_available": False, "torch_cuda": "13.0"})
    assert len(torch_newer) == 1 and "newer than the driver" in torch_newer[0] and "H200" in torch_newer[0]
    nvcc_newer = diagnose({**base, "nvcc": "13.0"})
    assert len(nvcc_newer) == 1 and "nvcc 13.0 is newer than the driver's CUDA 12.4" in nvcc_newer[0]
    assert "no NVIDIA driver" in diagnose({"cuda_available": False})[0]


def test_native_reports_a_runtime_newer_than_the_driver(monkeypatch):
    from tamt import _native

    class FakeC:  # what tamt._C's device query returns on such a machine
        WITH_CUDA = True

        @staticmethod
        def cuda_device_count():
            return 0

        @staticmethod
        def cuda_device_query():
            return 0, 35, "CUDA driver version is insufficient for CUDA runtime version", 13000, 12040

    monkeypatch.setattr(_native, "_C", FakeC)
    reason = _native.unavailable_reason("cuda")
    assert "built with CUDA 13.0 but the driver supports CUDA 12.4" in reason
    monkeypatch.setattr(FakeC, "cuda_device_query", staticmethod(lambda: (0, 35, "insufficient", 13000, 0)))
    assert "no NVIDIA driver" in _native.unavailable_reason("cuda")


def test_dry_run_collects_the_paper_fidelity_tests(tmp_path):
    # with datasets installed (this machine), the fidelity step's dry form collects the step tests
    out = tmp_path / "r"
    r = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "--dry-run", "--only", "paper-fidelity", str(out)],
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    by_name = {s["step"]: s for s in json.loads((out / "steps.json").read_text())}
    assert by_name["paper-fidelity"]["status"] == "ran", by_name["paper-fidelity"]
    log = (out / "paper-fidelity.log").read_text()
    assert "test_tamt_mlm_kd_paper_preset_equals_the_reference_step_by_step" in log and "ERROR" not in log, log[-2000:]
