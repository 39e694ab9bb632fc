"""Backend selection for the tamt ops.

Backends:
  ``torch``  - the plain PyTorch reference (test oracle and fallback; the
               "unfused" path: W*M is materialised, then F.linear).
  ``triton`` - the fused Triton kernels in ``kernels/`` (``tamt.kernels``); on
               CPU tensors only under ``TRITON_INTERPRET=1`` (how CI runs them).
  ``native`` - the compiled extension ``tamt._C`` (``csrc/``), see
               ``tamt._native``.
  ``auto``   - per op and device, the fastest available backend as measured by
               the benchmarks (table ``_AUTO_PREFERENCE`` below; for the masked
               GEMMs on CUDA, per weight shape: ``tamt.ops.auto_table``).

The choice comes from, in order: ``set_backend()`` / ``use_backend()`` in
Python, the ``TAMT_BACKEND`` environment variable, else ``auto``.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import threading
import warnings

BACKENDS = ("auto", "triton", "native", "torch")

_state = threading.local()

# Which backend ``auto`` picks, per (op family, device type), first available
# wins.  Decided from measurements (benchmarks/results/):
# - masked GEMMs on CUDA: "triton" here only means "Triton is usable"; the
#   plan (fused Triton GEMMs with one of three mask forms, or W*M once per
#   step + cuBLAS) comes per weight shape from the measured table of
#   tamt.ops.auto_table, default materialise + cuBLAS (tamt.ops.mask_forms);
#   on CPU Triton only runs in the (slow) interpreter and there is no native
#   GEMM, so PyTorch's GEMM wins.
# - threshold selection: the native radix select (one pass over all matrices)
#   beats per-matrix kthvalue on CPU and CUDA; Triton's version next on CUDA.
_AUTO_PREFERENCE = {
    ("gemm", "cuda"): ("triton", "torch"),
    ("gemm", "cpu"): ("torch",),
    ("select", "cuda"): ("native", "triton", "torch"),
    ("select", "cpu"): ("native", "torch"),
    ("pack", "cuda"): ("native", "torch"),
    ("pack", "cpu"): ("native", "torch"),
}


def auto_table() -> dict:
    """What ``auto`` decides from (JSON-able): the backend preference per op
    family and device, and for the masked GEMMs on CUDA the measured plan
    table of this machine's GPU (``tamt.ops.auto_table``) or its default."""
    from . import auto_table as plans

    out = {"preference": {f"{f}/{d}": list(v) for (f, d), v in _AUTO_PREFERENCE.items()},
           "gemm_plan_default": plans.DEFAULT_PLAN}
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name()
            path = plans.table_path(name)
            out["gemm_plan_table"] = {"device": name, "path": str(path),
                                      "table": json.loads(path.read_text()) if path.is_file() else None}
    except Exception as exc:  # noqa: BLE001 - a report, not a decision
        out["gemm_plan_table"] = f"unreadable: {exc}"
    return out


def _validate(name: str) -> str:
    name = (name or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(
            f"unknown tamt backend {name!r}; choose one of {', '.join(BACKENDS)} "
            "(set it with tamt.set_backend(...) or the TAMT_BACKEND environment variable)"
        )
    return name


def set_backend(name: str) -> None:
    """Set the backend for this thread: 'auto', 'triton', 'native' or 'torch'."""
    _state.backend = _validate(name)


def get_backend() -> str:
    """The requested backend (before resolving 'auto')."""
    explicit = getattr(_state, "backend", None)
    if explicit is not None:
        return explicit
    raw = os.environ.get("TAMT_BACKEND", "auto")
    name = _ENV_NAMES.get(raw)
    if name is None:
        name = _ENV_NAMES[raw] = _validate(raw)
    return name


_ENV_NAMES: dict = {}  # raw TAMT_BACKEND value -> validated name (get_backend runs on every op call)


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: ``with tamt.ops.use_backend('torch'): ...``."""
    previous = getattr(_state, "backend", None)
    _state.backend = _validate(name)
    try:
        yield
    finally:
        _state.backend = previous


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> str | None:
    try:
        importlib.import_module("tamt.kernels")
        importlib.import_module("triton")
    except ModuleNotFoundError as exc:
        if exc.name == "triton":
            return "triton is not installed; install it (pip install 'tamt[triton]')"
        return f"cannot import the Triton kernels (ModuleNotFoundError: {exc}): a broken tamt install, reinstall tamt"
    except Exception as exc:  # a broken triton install, a bug in a kernel module: reported as itself
        return f"cannot import the Triton kernels ({type(exc).__name__}: {exc})"
    return None


def triton_unavailable_reason(device_type: str) -> str | None:
    err = _triton_import_error()
    if err:
        return err
    if device_type != "cuda" and not triton_interpreting():
        return (
            f"Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 (set before importing tamt) "
            f"to run them on {device_type} tensors in the interpreter"
        )
    return None


def native_unavailable_reason(device_type: str) -> str | None:
    try:
        from tamt import _native
    except Exception as exc:  # pragma: no cover - module is pure python
        return f"tamt._native failed to import: {exc}"
    if not _native.available():
        return _native.unavailable_reason() or "the native extension tamt._C is not built (bash scripts/build_native.sh)"
    if device_type == "cuda" and not getattr(_native, "has_cuda", lambda: False)():
        return "tamt._C was built without CUDA kernels (rebuild on a machine with a CUDA torch and nvcc)"
    return None


def unavailable_reason(backend: str, device_type: str) -> str | None:
    if backend == "torch":
        return None
    if backend == "triton":
        return triton_unavailable_reason(device_type)
    if backend == "native":
        return native_unavailable_reason(device_type)
    raise ValueError(backend)


_warned: set = set()


# (family, device type, supported, requested) -> concrete backend.  Resolution runs on every op call
# (twice per masked layer and step); what is installed, and TRITON_INTERPRET (read when the kernels are
# imported), do not change within a process.
_resolved: dict = {}


def clear_resolve_cache() -> None:
    """Forget resolved backends (after changing what ``auto`` prefers or what is installed)."""
    _resolved.clear()


def resolve(family: str, device_type: str, supported: tuple[str, ...]) -> str:
    """The concrete backend for one call (cached per family, device type and requested backend).

    ``supported`` lists the backends that implement this op.  An explicitly
    requested backend that is unavailable raises; one that does not implement
    the op falls back to ``torch`` with a one-time warning.
    """
    key = (family, device_type, supported, get_backend())
    hit = _resolved.get(key)
    if hit is None:
        hit = _resolved[key] = _resolve(family, device_type, supported, key[3])
    return hit


def _resolve(family: str, device_type: str, supported: tuple[str, ...], requested: str) -> str:
    if requested == "auto":
        order = _AUTO_PREFERENCE.get((family, device_type), ("torch",))
        for name in order:
            if name in supported and unavailable_reason(name, device_type) is None:
                return name
        return "torch"
    if requested not in supported:
        key = (requested, family)
        if key not in _warned:
            _warned.add(key)
            warnings.warn(
                f"tamt backend {requested!r} has no {family} kernel; using the torch reference for it",
                stacklevel=5,
            )
        return "torch"
    reason = unavailable_reason(requested, device_type)
    if reason is not None:
        raise RuntimeError(f"tamt backend {requested!r} is not available on {device_type}: {reason}")
    return requested
