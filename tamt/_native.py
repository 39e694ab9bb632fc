"""The native backend: tamt._C (csrc/) wrapped for torch tensors.

``tamt._C`` is a pybind11 module with C++/OpenMP kernels for CPU tensors and
CUDA kernels for GPU tensors (when it was built with CUDA). It is torch-free
at the C++ level: its functions take raw addresses (``Tensor.data_ptr()``),
sizes, dtype codes and a ``cudaStream_t`` as an integer. This module

* validates tensors (dtype, device, contiguity), allocates outputs with torch
  and calls the kernel for the tensors' device on torch's current stream;
* registers the torch ops ``torch.ops.tamt_native.*`` (``torch.library.
  custom_op`` + ``register_fake``), so the kernels compose with torch.compile;
* never fails to import: without the compiled module ``available()`` is False
  and ``unavailable_reason()`` says why (``warn_unavailable()`` warns once).

Semantics (the contract of ``tamt.ops``):

* threshold of a segment = its k-th smallest value, k 1-indexed as in
  ``torch.kthvalue`` (bit-exact), k == 0 -> -inf; the mask is
  ``scores > threshold``;
* packed masks: row-major flattened, element i is bit ``i & 7`` of byte
  ``i >> 3`` (uint8, ``ceil(n / 8)`` bytes, pad bits zero);
* ``adamw_scores_step`` = ``torch.optim.AdamW`` (fp32) on every score tensor,
  returning the histogram of the top ``hist_bits`` bits of the order-preserving
  key of the updated scores, which ``segmented_kth_smallest(...,
  first_hist=...)`` uses instead of its first pass over the scores.

Build: ``bash scripts/build_native.sh`` (CMake + Ninja, about a minute).
"""
from __future__ import annotations

import importlib
import logging
import os
import warnings
from typing import Optional, Sequence

import torch

__all__ = [
    "available",
    "has_cuda",
    "unavailable_reason",
    "warn_unavailable",
    "prefer_native",
    "segmented_kth_smallest",
    "segmented_kth_smallest_from_histogram",
    "segmented_kth_smallest_count_le",
    "pack_mask",
    "unpack_mask",
    "binarize_and_mask",
    "adamw_scores_step",
    "philox_dropout",
    "key_histogram_reference",
    "DEFAULT_HIST_BITS",
    "BUILD_COMMAND",
]

log = logging.getLogger(__name__)

BUILD_COMMAND = "bash scripts/build_native.sh"
DEFAULT_HIST_BITS = 11
_ABI_VERSION = 1

_C = None
_REASON: Optional[str] = None
_WARNED: set[str] = set()


def _load() -> None:
    global _C, _REASON
    if os.environ.get("TAMT_NATIVE", "1").strip().lower() in ("0", "off", "false", "no"):
        _REASON = "the native backend is disabled by the environment (TAMT_NATIVE=0)"
        return
    try:
        mod = importlib.import_module("tamt._C")
    except ImportError as exc:
        _REASON = f"the compiled extension tamt._C is not built or cannot be loaded ({exc}); build it with `{BUILD_COMMAND}`"
        return
    if getattr(mod, "ABI_VERSION", None) != _ABI_VERSION:
        _REASON = (
            f"tamt._C at {getattr(mod, '__file__', '?')} is stale (ABI {getattr(mod, 'ABI_VERSION', None)}, "
            f"expected {_ABI_VERSION}); rebuild it with `{BUILD_COMMAND}`"
        )
        return
    _C = mod


_load()


def _device_type(device) -> str:
    if device is None:
        return "cpu"
    return torch.device(device).type


def _cuda_reason() -> Optional[str]:
    if _C is None:
        return _REASON
    if not _C.WITH_CUDA:
        return (
            "tamt._C was built without its CUDA kernels (CPU-only torch or no nvcc at build time); "
            f"rebuild with a CUDA torch and nvcc: `{BUILD_COMMAND}`"
        )
    if _C.cuda_device_count() == 0:
        return _no_device_reason()
    return None


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def _no_device_reason() -> str:
    """Why the CUDA runtime tamt._C links sees no device (a toolkit newer than the driver looks like none)."""
    query = getattr(_C, "cuda_device_query", None)  # absent in modules built before it existed
    if query is None:
        return "tamt._C has CUDA kernels but no CUDA device is visible"
    _, err, msg, runtime, driver = query()
    if driver == 0:
        return "tamt._C has CUDA kernels but no NVIDIA driver was found"
    if runtime > driver:
        return (
            f"tamt._C was built with CUDA {_cuda_version(runtime)} but the driver supports CUDA "
            f"{_cuda_version(driver)} (nvcc newer than the driver): rebuild with an nvcc <= {_cuda_version(driver)} "
            f"(CUDACXX=/path/to/nvcc {BUILD_COMMAND}) or update the driver"
        )
    return f"tamt._C has CUDA kernels but sees no CUDA device (cudaGetDeviceCount: {msg}, error {err})"


def unavailable_reason(device=None) -> Optional[str]:
    """Why the native kernels cannot run on ``device`` (default CPU); None if they can."""
    if _device_type(device) == "cuda":
        return _cuda_reason()
    if _device_type(device) != "cpu":
        return f"no native kernels for device type {_device_type(device)!r}"
    return _REASON


def available(device=None) -> bool:
    """True when the native kernels can run on ``device`` (default CPU)."""
    return unavailable_reason(device) is None


def has_cuda() -> bool:
    """True when tamt._C has its CUDA kernels and a CUDA device is visible."""
    return available("cuda")


def warn_unavailable(device=None) -> bool:
    """Warn once per reason that the native path is off; returns available(device)."""
    reason = unavailable_reason(device)
    if reason is None:
        return True
    if reason not in _WARNED:
        _WARNED.add(reason)
        msg = f"tamt: native backend off: {reason}. Falling back to the Triton/reference kernels."
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        log.warning(msg)
    return False


def _require(device) -> None:
    reason = unavailable_reason(device)
    if reason is not None:
        warn_unavailable(device)
        raise RuntimeError(f"tamt native backend unavailable on {torch.device(device)}: {reason}")


# ---------------------------------------------------------------------------
# Where `auto` prefers the native kernels: only where benchmarks/bench_native.py
# measured them faster than the alternative on that device type. CUDA entries
# stay False until the GPU benchmark (CUDA vs Triton vs torch) has been run.
# TAMT_NATIVE_PREFER=all|none overrides.
# ---------------------------------------------------------------------------
_PREFERRED = {
    # CPU, 2 cores, benchmarks/results/native-cpu-2026-11-25.json (MiniLM-L6 and
    # BERT-base shapes): thresholds x5-8, fused AdamW step + thresholds x6-13,
    # pack x7-12, unpack x4-9 faster than torch; binarize_and_mask x0.8-0.9
    # (slower than torch's two vectorized passes), so not preferred.
    ("segmented_kth_smallest", "cpu"): True,
    ("adamw_scores_step", "cpu"): True,
    ("pack_mask", "cpu"): True,
    ("unpack_mask", "cpu"): True,
    ("binarize_and_mask", "cpu"): False,
}


def prefer_native(op: str, device=None) -> bool:
    """Whether the `auto` backend should use the native kernel of ``op`` on ``device``."""
    if not available(device):
        return False
    override = os.environ.get("TAMT_NATIVE_PREFER", "").strip().lower()
    if override == "all":
        return True
    if override == "none":
        return False
    return _PREFERRED.get((op, _device_type(device)), False)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _dtype_code(dtype: torch.dtype) -> int:
    return {
        torch.float32: 0,
        torch.float64: 1,
        torch.bfloat16: 2,
        torch.float16: 3,
    }[dtype]


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _to_device_int64(values: list[int], device: torch.device) -> torch.Tensor:
    host = torch.tensor(values, dtype=torch.int64)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host


def _block_starts(sizes: Sequence[int], chunk: int) -> list[int]:
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + (n + chunk - 1) // chunk)
    return starts


def _check_hist_bits(hist_bits: int) -> None:
    if not (4 <= int(hist_bits) <= 12):
        raise ValueError(f"hist_bits must be in [4, 12], got {hist_bits}")


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1) if t.is_contiguous() else t.contiguous().view(-1)


# ---------------------------------------------------------------------------
# torch ops (namespace tamt_native); the Python functions below validate and
# call them.
# ---------------------------------------------------------------------------
def _select_impl(scores: list[torch.Tensor], ks: list[int], first_hist: Optional[torch.Tensor], hist_bits: int) -> torch.Tensor:
    dev = scores[0].device
    dtype = scores[0].dtype
    out = torch.empty(len(scores), dtype=dtype, device=dev)
    sizes = [t.numel() for t in scores]
    ptrs = [t.data_ptr() for t in scores]
    fh = 0 if first_hist is None else first_hist.data_ptr()
    code = _dtype_code(dtype)
    if dev.type == "cpu":
        _C.cpu_segmented_kth_smallest(code, ptrs, sizes, list(ks), out.data_ptr(), fh, int(hist_bits))
    else:
        starts = _block_starts(sizes, _C.cuda_chunk_elems())
        meta = _to_device_int64(ptrs + sizes + list(ks) + starts, dev)
        work = torch.empty(_C.cuda_workspace_bytes(len(scores)), dtype=torch.uint8, device=dev)
        with torch.cuda.device(dev):
            _C.cuda_segmented_kth_smallest(
                code, len(scores), meta.data_ptr(), starts[-1], out.data_ptr(), fh, int(hist_bits), work.data_ptr(), _stream(dev)
            )
    return out


def _pack_impl(mask: torch.Tensor) -> torch.Tensor:
    n = mask.numel()
    packed = torch.empty((n + 7) // 8, dtype=torch.uint8, device=mask.device)
    if mask.device.type == "cpu":
        _C.cpu_pack_mask(mask.data_ptr(), n, packed.data_ptr())
    else:
        with torch.cuda.device(mask.device):
            _C.cuda_pack_mask(mask.data_ptr(), n, packed.data_ptr(), _stream(mask.device))
    return packed


def _unpack_impl(packed: torch.Tensor, numel: int) -> torch.Tensor:
    mask = torch.empty(numel, dtype=torch.bool, device=packed.device)
    if packed.device.type == "cpu":
        _C.cpu_unpack_mask(packed.data_ptr(), numel, mask.data_ptr())
    else:
        with torch.cuda.device(packed.device):
            _C.cuda_unpack_mask(packed.data_ptr(), numel, mask.data_ptr(), _stream(packed.device))
    return mask


def _binarize_impl(weight: torch.Tensor, scores: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(weight, memory_format=torch.contiguous_format)
    n = weight.numel()
    args = (_dtype_code(weight.dtype), _dtype_code(scores.dtype), weight.data_ptr(), scores.data_ptr(), threshold.data_ptr(), n, out.data_ptr())
    if weight.device.type == "cpu":
        _C.cpu_binarize_and_mask(*args)
    else:
        with torch.cuda.device(weight.device):
            _C.cuda_binarize_and_mask(*args, _stream(weight.device))
    return out


def _adamw_impl(scores, grads, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, hist_bits) -> torch.Tensor:
    dev = scores[0].device
    nb = 1 << int(hist_bits)
    hist = torch.zeros(len(scores), nb, dtype=torch.int64, device=dev)
    sizes = [t.numel() for t in scores]
    cols = [[t.data_ptr() for t in lst] for lst in (scores, grads, exp_avg, exp_avg_sq)]
    hp = (float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), int(step))
    if dev.type == "cpu":
        _C.cpu_adamw_scores_step(*cols, sizes, *hp, hist.data_ptr(), int(hist_bits))
    else:
        starts = _block_starts(sizes, _C.cuda_adamw_chunk_elems())
        meta = _to_device_int64(sum(cols, []) + sizes + starts, dev)
        with torch.cuda.device(dev):
            _C.cuda_adamw_scores_step(len(scores), meta.data_ptr(), starts[-1], *hp, hist.data_ptr(), int(hist_bits), _stream(dev))
    return hist


def _dropout_impl(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    _C.cpu_philox_dropout(x.data_ptr(), y.data_ptr(), x.numel(), float(p), int(seed) & 0xFFFFFFFFFFFFFFFF)
    return y


def _register_ops() -> None:
    lib = "tamt_native"

    @torch.library.custom_op(f"{lib}::philox_dropout", mutates_args=())
    def _op_dropout(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        return _dropout_impl(x, p, seed)

    @_op_dropout.register_fake
    def _(x, p, seed):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    def _dropout_setup(ctx, inputs, output):
        ctx.p, ctx.seed = inputs[1], inputs[2]

    def _dropout_backward(ctx, grad):
        # the keep bits are a function of (seed, index): the same call on the gradient is the backward
        return torch.ops.tamt_native.philox_dropout(grad, ctx.p, ctx.seed), None, None

    _op_dropout.register_autograd(_dropout_backward, setup_context=_dropout_setup)

    @torch.library.custom_op(f"{lib}::segmented_kth_smallest", mutates_args=())
    def _op_select(scores: list[torch.Tensor], ks: list[int], first_hist: Optional[torch.Tensor], hist_bits: int) -> torch.Tensor:
        return _select_impl(scores, ks, first_hist, hist_bits)

    @_op_select.register_fake
    def _(scores, ks, first_hist, hist_bits):
        return scores[0].new_empty(len(scores))

    @torch.library.custom_op(f"{lib}::pack_mask", mutates_args=())
    def _op_pack(mask: torch.Tensor) -> torch.Tensor:
        return _pack_impl(mask)

    @_op_pack.register_fake
    def _(mask):
        return mask.new_empty((mask.numel() + 7) // 8, dtype=torch.uint8)

    @torch.library.custom_op(f"{lib}::unpack_mask", mutates_args=())
    def _op_unpack(packed: torch.Tensor, numel: int) -> torch.Tensor:
        return _unpack_impl(packed, numel)

    @_op_unpack.register_fake
    def _(packed, numel):
        return packed.new_empty(numel, dtype=torch.bool)

    @torch.library.custom_op(f"{lib}::binarize_and_mask", mutates_args=())
    def _op_binarize(weight: torch.Tensor, scores: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return _binarize_impl(weight, scores, threshold)

    @_op_binarize.register_fake
    def _(weight, scores, threshold):
        return torch.empty_like(weight, memory_format=torch.contiguous_format)

    @torch.library.custom_op(f"{lib}::adamw_scores_step", mutates_args=("scores", "exp_avg", "exp_avg_sq"))
    def _op_adamw(
        scores: list[torch.Tensor],
        grads: list[torch.Tensor],
        exp_avg: list[torch.Tensor],
        exp_avg_sq: list[torch.Tensor],
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
        step: int,
        hist_bits: int,
    ) -> torch.Tensor:
        return _adamw_impl(scores, grads, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, hist_bits)

    @_op_adamw.register_fake
    def _(scores, grads, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, hist_bits):
        return scores[0].new_empty(len(scores), 1 << hist_bits, dtype=torch.int64)


if _C is not None:
    try:
        _register_ops()
    except Exception as exc:  # an older torch without torch.library.custom_op
        _REASON = f"registering the torch ops failed ({type(exc).__name__}: {exc})"
        _C = None


# ---------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------
def _common_device(tensors: Sequence[torch.Tensor], what: str) -> torch.device:
    dev = tensors[0].device
    for t in tensors:
        if t.device != dev:
            raise ValueError(f"{what}: all tensors must be on one device, got {dev} and {t.device}")
    return dev


def segmented_kth_smallest(
    scores: Sequence[torch.Tensor],
    ks: Sequence[int],
    *,
    first_hist: Optional[torch.Tensor] = None,
    hist_bits: int = DEFAULT_HIST_BITS,
) -> torch.Tensor:
    """k-th smallest value of every tensor of ``scores`` (flattened), in one call.

    ``ks[i]`` is 1-indexed (``torch.kthvalue`` semantics, bit-exact; NaN counts
    as the largest value); ``ks[i] == 0`` gives -inf (nothing pruned). Returns a
    1-D tensor of ``len(scores)`` thresholds: float64 if any input is float64,
    else float32 (16-bit scores are selected exactly in float32). ``first_hist``:
    the ``(len(scores), 2**hist_bits)`` int64 histogram that
    ``adamw_scores_step`` returned for exactly these scores; it replaces the
    first pass over the scores.
    """
    flat, ks, first_hist = _select_args(scores, ks, first_hist, hist_bits)
    if not flat:
        return torch.empty(0, dtype=torch.float32)
    return torch.ops.tamt_native.segmented_kth_smallest(flat, ks, first_hist, int(hist_bits))


def segmented_kth_smallest_count_le(
    scores: Sequence[torch.Tensor],
    ks: Sequence[int],
    *,
    first_hist: Optional[torch.Tensor] = None,
    hist_bits: int = DEFAULT_HIST_BITS,
) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """CPU: ``segmented_kth_smallest`` plus, per tensor, how many entries are <= its threshold (int64; -1
    where k == 0), which the select knows without another pass (a tie check at the threshold otherwise
    reads every score again).  Counts compare order-preserving keys, so -0.0 < +0.0 there.  None when the
    loaded tamt._C predates this function or the scores are not on the CPU."""
    fn = getattr(_C, "cpu_segmented_kth_smallest_count_le", None)
    if fn is None or not scores or any(t.device.type != "cpu" for t in scores):
        return None
    flat, ks, first_hist = _select_args(scores, ks, first_hist, hist_bits)
    out = torch.empty(len(flat), dtype=flat[0].dtype)
    counts = torch.empty(len(flat), dtype=torch.int64)
    fh = 0 if first_hist is None else first_hist.data_ptr()
    fn(_dtype_code(flat[0].dtype), [t.data_ptr() for t in flat], [t.numel() for t in flat], list(ks), out.data_ptr(),
       fh, int(hist_bits), counts.data_ptr())
    return out, counts


def _select_args(scores, ks, first_hist, hist_bits):
    """Validated (flat scores in one kernel dtype, ks, first_hist) for the select."""
    scores = list(scores)
    ks = [int(k) for k in ks]
    if len(scores) != len(ks):
        raise ValueError(f"segmented_kth_smallest: {len(scores)} tensors but {len(ks)} ks")
    _check_hist_bits(hist_bits)
    if not scores:
        return [], ks, first_hist
    dev = _common_device(scores, "segmented_kth_smallest")
    _require(dev)
    for t in scores:
        if t.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            raise TypeError(f"segmented_kth_smallest: unsupported dtype {t.dtype}")
    # One kernel dtype for all segments: float64 if any input is float64, else
    # float32 (both upcasts are exact, so the k-th value is unchanged).
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in scores) else torch.float32
    if first_hist is not None and any(t.dtype != torch.float32 for t in scores):
        raise TypeError("segmented_kth_smallest: first_hist is only defined for float32 scores")
    flat = [_flat(t) if t.dtype == dtype else _flat(t).to(dtype) for t in scores]
    for i, (t, k) in enumerate(zip(flat, ks)):
        if not 0 <= k <= t.numel():
            raise ValueError(f"segmented_kth_smallest: k={k} out of range [0, {t.numel()}] for tensor {i}")
    if first_hist is not None:
        nb = 1 << int(hist_bits)
        if first_hist.shape != (len(flat), nb) or first_hist.dtype != torch.int64 or first_hist.device != dev:
            raise ValueError(
                f"segmented_kth_smallest: first_hist must be int64 ({len(flat)}, {nb}) on {dev}, got "
                f"{first_hist.dtype} {tuple(first_hist.shape)} on {first_hist.device}"
            )
        first_hist = first_hist.contiguous()
    return flat, ks, first_hist


def segmented_kth_smallest_from_histogram(
    scores: Sequence[torch.Tensor], ks: Sequence[int], first_hist: torch.Tensor, hist_bits: int = DEFAULT_HIST_BITS
) -> torch.Tensor:
    """``segmented_kth_smallest`` reusing the histogram of ``adamw_scores_step``."""
    return segmented_kth_smallest(scores, ks, first_hist=first_hist, hist_bits=hist_bits)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor (any shape, row-major) -> uint8 of ceil(numel/8) bytes, bit i&7 of byte i>>3."""
    if mask.dtype != torch.bool:
        raise TypeError(f"pack_mask: expected a bool tensor, got {mask.dtype}")
    _require(mask.device)
    return torch.ops.tamt_native.pack_mask(_flat(mask))


def unpack_mask(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of pack_mask: uint8 bytes -> 1-D bool tensor of ``numel`` elements."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_mask: expected uint8, got {packed.dtype}")
    numel = int(numel)
    if numel < 0 or packed.numel() < (numel + 7) // 8:
        raise ValueError(f"unpack_mask: {packed.numel()} bytes cannot hold {numel} elements")
    _require(packed.device)
    return torch.ops.tamt_native.unpack_mask(_flat(packed), numel)


def binarize_and_mask(weight: torch.Tensor, scores: torch.Tensor, threshold) -> torch.Tensor:
    """``weight * (scores > threshold)`` materialised (same dtype/shape as weight).

    The comparison happens in ``torch.result_type(scores, threshold)``, as in
    torch (a 0-d float32 threshold is rounded to bfloat16 for bfloat16 scores).
    """
    if weight.shape != scores.shape:
        raise ValueError(f"binarize_and_mask: weight {tuple(weight.shape)} and scores {tuple(scores.shape)} differ")
    if weight.device != scores.device:
        raise ValueError("binarize_and_mask: weight and scores on different devices")
    ok = (torch.float32, torch.bfloat16, torch.float16)
    if weight.dtype not in ok or scores.dtype not in ok:
        raise TypeError(f"binarize_and_mask: unsupported dtypes weight={weight.dtype}, scores={scores.dtype}")
    if not isinstance(threshold, torch.Tensor):
        cmp_dtype = torch.result_type(scores, float(threshold))
        t = torch.tensor(float(threshold), dtype=torch.float64).to(cmp_dtype).to(torch.float32)
    else:
        if threshold.numel() != 1:
            raise ValueError("binarize_and_mask: threshold must hold one value")
        cmp_dtype = torch.result_type(scores, threshold)
        if cmp_dtype not in ok:
            raise TypeError(f"binarize_and_mask: comparison in {cmp_dtype} is not supported natively")
        t = threshold.reshape(1).to(cmp_dtype).to(torch.float32)
    t = t.reshape(1).to(weight.device)
    _require(weight.device)
    out = torch.ops.tamt_native.binarize_and_mask(_flat(weight), _flat(scores), t)
    return out.view(weight.shape)


def adamw_scores_step(
    scores: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avg: Sequence[torch.Tensor],
    exp_avg_sq: Sequence[torch.Tensor],
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    step: int,
    hist_bits: int = DEFAULT_HIST_BITS,
) -> torch.Tensor:
    """One fused AdamW step on every score tensor (in place, torch.optim.AdamW
    arithmetic, float32; ``step`` counts from 1) that also returns, per tensor,
    the int64 histogram (``(len(scores), 2**hist_bits)``) of the top
    ``hist_bits`` bits of the order-preserving key of the updated scores --
    the first pass of ``segmented_kth_smallest(..., first_hist=...)``."""
    scores, grads, exp_avg, exp_avg_sq = (list(x) for x in (scores, grads, exp_avg, exp_avg_sq))
    _check_hist_bits(hist_bits)
    if not (len(scores) == len(grads) == len(exp_avg) == len(exp_avg_sq)):
        raise ValueError("adamw_scores_step: the four lists must have equal lengths")
    if int(step) < 1:
        raise ValueError(f"adamw_scores_step: step counts from 1, got {step}")
    if not scores:
        return torch.zeros(0, 1 << int(hist_bits), dtype=torch.int64)
    dev = _common_device(scores + grads + exp_avg + exp_avg_sq, "adamw_scores_step")
    _require(dev)
    for i, group in enumerate(zip(scores, grads, exp_avg, exp_avg_sq)):
        for name, t in zip(("scores", "grads", "exp_avg", "exp_avg_sq"), group):
            if t.dtype != torch.float32:
                raise TypeError(f"adamw_scores_step: {name}[{i}] must be float32, got {t.dtype}")
            if not t.is_contiguous():
                raise ValueError(f"adamw_scores_step: {name}[{i}] must be contiguous")
            if t.numel() != group[0].numel():
                raise ValueError(f"adamw_scores_step: {name}[{i}] has {t.numel()} elements, scores[{i}] {group[0].numel()}")
    return torch.ops.tamt_native.adamw_scores_step(
        scores, grads, exp_avg, exp_avg_sq, float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), int(step), int(hist_bits)
    )


def philox_dropout(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """``x * keep / (1 - p)`` with keep bits from Philox4x32-10 keyed by ``seed``
    (float32 CPU tensors; differentiable: the backward regenerates the same
    bits). A pure function of (seed, element index) -- the layout is in
    csrc/cpu/dropout.cpp; ``tamt.nn.dropout`` draws the seeds from torch's
    generator."""
    if not 0.0 <= float(p) < 1.0:
        raise ValueError(f"philox_dropout: p must be in [0, 1), got {p}")
    if x.dtype != torch.float32:
        raise TypeError(f"philox_dropout: float32 only, got {x.dtype}")
    if x.device.type != "cpu":
        raise ValueError(f"philox_dropout: a CPU kernel, got a tensor on {x.device} (torch's dropout is fused there)")
    _require(x.device)
    return torch.ops.tamt_native.philox_dropout(x, float(p), int(seed))


def key_histogram_reference(t: torch.Tensor, hist_bits: int = DEFAULT_HIST_BITS) -> torch.Tensor:
    """Torch reference of the first-digit histogram (float32): counts of the top
    ``hist_bits`` bits of the order-preserving key (NaN -> largest key)."""
    if t.dtype != torch.float32:
        raise TypeError("key_histogram_reference: float32 only")
    bits = t.reshape(-1).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    neg = bits >= 0x80000000
    key = torch.where(neg, bits ^ 0xFFFFFFFF, bits | 0x80000000)
    key = torch.where(torch.isnan(t.reshape(-1)), torch.full_like(key, 0xFFFFFFFF), key)
    return torch.bincount(key >> (32 - int(hist_bits)), minlength=1 << int(hist_bits))

