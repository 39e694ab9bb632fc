#!/usr/bin/env python
"""What the GPU suite runs on: device, driver, toolkits, package versions, and why CUDA may be unusable.

Prints a JSON object (``--json PATH`` also writes it).  ``diagnosis`` lists
one-line problems the suite reports instead of a bare "no CUDA device", e.g.
a torch or an nvcc built for a newer CUDA than the driver supports.  Never
fails: anything it cannot query is recorded as missing.

    python benchmarks/gpu_env.py [--json PATH]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("triton", "transformers", "safetensors", "datasets", "pytest", "hypothesis", "pytest_benchmark",
            "pybind11", "numpy", "tqdm")


def _run(cmd: list[str], timeout: float = 20) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _version_tuple(v: str | None) -> tuple[int, ...] | None:
    m = re.match(r"(\d+)\.(\d+)", v or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def _fmt_cuda_int(v: int) -> str:
    """CUDA's integer versions (12040) as '12.4'."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def probe() -> dict:
    env: dict = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
                 "cpus": os.cpu_count()}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"])
    env["nvidia_smi"] = [l.strip() for l in smi.splitlines() if l.strip()] if smi else None
    header = _run(["nvidia-smi"]) or ""
    m = re.search(r"CUDA Version:\s*([\d.]+)", header)
    env["driver_cuda"] = m.group(1) if m else None
    nvcc = _run(["nvcc", "--version"]) or ""
    m = re.search(r"release ([\d.]+)", nvcc)
    env["nvcc"] = m.group(1) if m else None
    env["compute_sanitizer"] = shutil.which("compute-sanitizer")
    env["cmake"] = (_run(["cmake", "--version"]) or "").split("\n")[0] or None
    env["packages"] = {}
    for name in PACKAGES:
        try:
            env["packages"][name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
            env["packages"][name] = f"MISSING ({type(exc).__name__})"
    try:
        import torch

        env["torch"], env["torch_cuda"] = torch.__version__, torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if env["cuda_available"]:
            p = torch.cuda.get_device_properties(0)
            env.update(device=p.name, capability=f"{p.major}{p.minor}", sms=p.multi_processor_count,
                       memory_gib=round(p.total_memory / 2**30, 1), device_count=torch.cuda.device_count())
    except Exception as exc:  # noqa: BLE001
        env["torch"], env["cuda_available"] = f"MISSING ({type(exc).__name__}: {exc})", False
    try:
        sys.path.insert(0, str(REPO))
        from tamt import _native

        env["native_cpu"] = _native.unavailable_reason("cpu") or "available"
        env["native_cuda"] = _native.unavailable_reason("cuda") or "available"
    except Exception as exc:  # noqa: BLE001
        env["native_cpu"] = env["native_cuda"] = f"tamt._native failed to import: {exc}"
    env["diagnosis"] = diagnose(env)
    env["device_slug"] = re.sub(r"[^A-Za-z0-9_.-]+", "-", env.get("device") or "no-cuda").strip("-")
    return env


def diagnose(env: dict) -> list[str]:
    """One line per problem that would otherwise show as 'no CUDA device'."""
    out = []
    drv = _version_tuple(env.get("driver_cuda"))
    if not env.get("cuda_available"):
        if env.get("nvidia_smi"):
            line = (f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}) sees no CUDA device although nvidia-smi "
                    f"lists {env['nvidia_smi'][0]} (driver supports CUDA {env.get('driver_cuda')})")
            tc = _version_tuple(env.get("torch_cuda"))
            if tc and drv and tc > drv:
                line += ": torch's CUDA is newer than the driver; install a torch built for CUDA <= " \
                        f"{env.get('driver_cuda')} or update the driver"
            elif env.get("torch_cuda") is None:
                line += ": this torch is a CPU-only build"
            out.append(line)
        else:
            out.append("no NVIDIA driver/GPU found (nvidia-smi missing or lists nothing): GPU steps are skipped")
    nv = _version_tuple(env.get("nvcc"))
    if nv and drv and nv > drv:
        out.append(f"nvcc {env['nvcc']} is newer than the driver's CUDA {env['driver_cuda']}: native CUDA kernels it "
                   "builds cannot load (tamt reports them unavailable); put an nvcc <= the driver's CUDA first on "
                   "PATH (or set CUDACXX) or update the driver")
    nc = env.get("native_cuda") or ""
    if env.get("cuda_available") and "available" != nc and "not built" not in nc and "without its CUDA" not in nc:
        out.append(f"native CUDA kernels unusable: {nc}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    env = probe()
    text = json.dumps(env, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
