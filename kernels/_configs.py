"""Autotune configs of the masked GEMMs that cannot fail and do not repeat.

* Per kernel family one list for 16-bit inputs (tensor cores) and one for
  fp32 (IEEE FMA: smaller K steps, fewer stages); a config belongs to one
  dtype class and the pruner drops the other class's configs.
* ``prune_configs_by``: a config whose shared-memory estimate for the
  launch's dtype and mask form exceeds the device's opt-in limit (sm_90
  232,448 B, sm_80 166,912 B) is dropped before it is compiled, so the
  autotuner never meets ``OutOfResources``; tiles far larger than the problem
  are dropped too (they cannot win and cost compile time).
* The autotuner keys on ``M_BUCKET`` (the token count rounded up to a power
  of two), not on M: dynamic padding in fine-tuning and length-sorted
  evaluation would otherwise re-tune for every new token count.

The estimate mirrors how Triton 3.x lays out the software pipeline
(checked against the compiled kernels by ``benchmarks/static_gpu_check.py``,
which also asserts that no surviving config exceeds the limit):
  * operands read by the dot straight from shared memory (the B operand of
    the forward / grad-input GEMMs, both operands of the grad-weight GEMM)
    get ``num_stages`` buffers,
  * tiles loaded into registers before the dot (W, the mask) get
    ``num_stages - 1``,
  * forms whose masked tile round-trips through shared memory (scores,
    packed; every form of the fp32 FMA dot) add one tile, and the epilogue may reuse the pipeline buffers for
    a layout conversion of the accumulator (max, not sum).
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch
import triton

from ._common import MASK_DENSE, MASK_NM, MASK_PACKED, MASK_SCORES, interpreting

# Opt-in shared memory per block (bytes) by compute capability.
SHARED_LIMIT = {70: 98304, 75: 65536, 80: 166912, 86: 101376, 87: 166912, 89: 101376,
                90: 232448, 100: 232448, 103: 232448, 120: 101376}
_SLACK = 2048  # barriers, the packed-mask reshape scratch, alignment

# kernel families: "mm" = forward and grad-input (swapped: the masked W tile
# is the A operand, BLOCK_N its rows, BLOCK_M the token columns),
# "gw" = grad-weight (BLOCK_M x BLOCK_N weight tile, BLOCK_K tokens).
FAMILIES = ("mm", "gw")


def _cfg(bm, bn, bk, warps, stages, group=8):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group},
                         num_warps=warps, num_stages=stages)


_TENSOR_CORE = {
    "mm": [
        _cfg(128, 128, 64, 8, 4),
        _cfg(256, 128, 64, 8, 3),
        _cfg(128, 256, 64, 8, 3),
        _cfg(64, 128, 64, 4, 4),
        _cfg(128, 64, 64, 4, 4),
        _cfg(64, 64, 64, 4, 4),
        _cfg(32, 128, 64, 4, 4),  # few tokens (evaluation, small micro-batches)
    ],
    # 256-wide weight tiles left out: 254-255 registers, and the split-K
    # epilogue spilled (static check, Triton 3.6, sm_90)
    "gw": [
        _cfg(128, 128, 64, 8, 4),
        _cfg(128, 128, 64, 8, 3),
        _cfg(64, 128, 64, 4, 4),
        _cfg(128, 64, 64, 4, 4),
        _cfg(64, 64, 64, 4, 4),
    ],
}
_FP32 = {
    "mm": [
        _cfg(64, 64, 32, 4, 3),
        _cfg(128, 64, 32, 8, 3),
        _cfg(64, 128, 32, 8, 3),
        _cfg(128, 128, 32, 8, 2),
    ],
    # the two asymmetric 8-warp tiles left out: under Triton 3.9 the grad-weight
    # kernel spilled 8-16 B with them (80 registers, sm_90 static check); 3.6 did not
    "gw": [
        _cfg(64, 64, 32, 4, 3),
        _cfg(128, 128, 32, 8, 2),
    ],
}
_OFF = _cfg(64, 64, 32, 4, 3)  # TAMT_AUTOTUNE=off: one mid-size config for both classes
# when no listed config fits (GPUs with ~100 KB of shared memory per block)
_SMALL = _cfg(64, 64, 32, 4, 2)
_INTERPRET = _cfg(32, 32, 32, 4, 1, 4)


def _key(c) -> tuple:
    return tuple(sorted(c.kwargs.items())) + (c.num_warps, c.num_stages)


_QUICK = 3  # TAMT_AUTOTUNE=quick: the first configs of each list (the likeliest winners)


def autotune_mode(which: Optional[str] = None) -> str:
    """TAMT_AUTOTUNE: 'full' (default), 'quick' (the first three configs of
    each list: a third of the compile time, for short benchmark runs) or
    'off' (one mid-size config: test suites on a GPU)."""
    which = which or os.environ.get("TAMT_AUTOTUNE", "full")
    if which not in ("full", "quick", "off"):
        raise ValueError(f"TAMT_AUTOTUNE must be 'full', 'quick' or 'off', got {which!r}")
    return which


def class_configs(family: str, dtype: torch.dtype, which: Optional[str] = None) -> list:
    """The configs of one dtype class (before shared-memory pruning)."""
    if interpreting():
        return [_INTERPRET]
    mode = autotune_mode(which)
    if mode == "off":
        return [_OFF]
    cfgs = list(_FP32[family] if _is_fp32_class(dtype) else _TENSOR_CORE[family])
    return cfgs[:_QUICK] if mode == "quick" else cfgs


def gemm_configs(family: str = "mm", which: Optional[str] = None) -> list:
    """Everything the autotuner of a family may choose from (both classes)."""
    if interpreting():
        return [_INTERPRET]
    mode = autotune_mode(which)
    if mode == "off":
        return [_OFF]
    n = _QUICK if mode == "quick" else None
    seen, out = set(), []
    for c in _TENSOR_CORE[family][:n] + _FP32[family][:n]:
        if _key(c) not in seen:
            seen.add(_key(c))
            out.append(c)
    return out


def _is_fp32_class(dtype: torch.dtype) -> bool:
    return dtype in (torch.float32, torch.float64)


def token_bucket(m: int) -> int:
    """Autotune key for a token count: the next power of two (at least 16)."""
    return max(16, triton.next_power_of_2(max(int(m), 1)))


def shared_estimate(family: str, cfg, elem_bytes: int, mask_mode: int, score_bytes: int = 4) -> int:
    """Bytes of shared memory a config needs (see the module docstring)."""
    bm, bn, bk = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_K"]
    stages = max(1, cfg.num_stages)
    if family == "gw":
        # both operands from shared memory; the mask is only read in the epilogue
        pipeline = stages * (bm * bk + bk * bn) * elem_bytes
        return max(pipeline, bm * bn * 4) + _SLACK
    w_tile = bn * bk * elem_bytes
    if mask_mode == MASK_SCORES:
        mask_tile = bn * bk * score_bytes
    elif mask_mode == MASK_NM:
        # the tile's scores and the group's (re-read per position: 2:4 -> 4 more
        # loads of the same lines, which the pipeliner may stage separately)
        mask_tile = 5 * bn * bk * score_bytes
    elif mask_mode == MASK_DENSE:
        mask_tile = bn * bk
    else:
        mask_tile = bn * bk // 8
    # the fp32 (FMA) dot reads both operands through shared memory whatever the form
    restore = w_tile if (mask_mode in (MASK_SCORES, MASK_PACKED, MASK_NM) or elem_bytes >= 4) else 0
    reg_stages = max(1, stages - 1)
    pipeline = stages * bm * bk * elem_bytes + reg_stages * (w_tile + mask_tile) + restore
    return max(pipeline, bm * bn * 4) + _SLACK


def shared_limit_for(capability: tuple[int, int]) -> int:
    cc = capability[0] * 10 + capability[1]
    if cc in SHARED_LIMIT:
        return SHARED_LIMIT[cc]
    return SHARED_LIMIT[max(k for k in SHARED_LIMIT if k <= cc)] if cc >= 70 else 49152


@functools.lru_cache(maxsize=None)
def device_limits(index: int) -> tuple[int, int]:
    """(opt-in shared memory per block in bytes, compute capability as 90, 80, ...)."""
    props = torch.cuda.get_device_properties(index)
    limit = getattr(props, "shared_memory_per_block_optin", None)
    return (int(limit) if limit else shared_limit_for((props.major, props.minor))), props.major * 10 + props.minor


def _fits_registers(cfg, capability: int) -> bool:
    # Before Hopper both MMA operands and the accumulator live in the same
    # warps' registers: more than 64 fp32 accumulators per thread (a 256 x
    # 128 tile on 8 warps) spilled on sm_80 (static check, Triton 3.6).
    if capability >= 90:
        return True
    acc = cfg.kwargs["BLOCK_M"] * cfg.kwargs["BLOCK_N"] // (32 * cfg.num_warps)
    return acc <= 64


def surviving_configs(family: str, dtype: torch.dtype, mask_mode: int, limit: int, *, capability: int = 90,
                      score_bytes: int = 4, tokens: Optional[int] = None, rows: Optional[int] = None,
                      cols: Optional[int] = None, which: Optional[str] = None) -> list:
    """The configs the pruner keeps for a launch: the dtype's class, within
    the shared-memory limit and the register budget of the architecture,
    and (when the problem size is given) no tile more than twice the problem
    in any dimension. Never empty: if nothing fits, the smallest config of
    the class (the static check then fails loudly instead of a launch)."""
    elem = torch.empty((), dtype=dtype).element_size()
    cands = class_configs(family, dtype, which)
    if len(cands) == 1:
        return cands
    keep = [c for c in cands if shared_estimate(family, c, elem, mask_mode, score_bytes) <= limit
            and _fits_registers(c, capability)]
    if family == "mm":
        dims = (("BLOCK_M", tokens), ("BLOCK_N", rows), ("BLOCK_K", cols))
    else:
        dims = (("BLOCK_M", rows), ("BLOCK_N", cols), ("BLOCK_K", tokens))
    sized = [c for c in keep if all(n is None or c.kwargs[name] <= max(32, 2 * triton.next_power_of_2(n))
                                    for name, n in dims)]
    keep = sized or keep
    if not keep:
        keep = [min(cands + [_SMALL], key=lambda c: shared_estimate(family, c, elem, mask_mode, score_bytes))]
    return keep


def make_pruner(family: str, operand: str, dims: tuple[str, str, str]):
    """``early_config_prune`` for a kernel whose 16/32-bit operand pointer is
    ``operand`` and whose (tokens, rows, cols) problem sizes are the kernel
    arguments named in ``dims``."""
    def prune(configs, named_args, **kwargs):
        t = named_args[operand]
        sargs = named_args.get("s_ptr")
        mode = kwargs.get("MASK_MODE", MASK_DENSE)
        score_bytes = sargs.element_size() if (mode in (MASK_SCORES, MASK_NM) and sargs is not None) else 4
        limit, cc = device_limits(t.device.index if t.device.index is not None else torch.cuda.current_device())
        sizes = [named_args.get(d, kwargs.get(d)) for d in dims]
        keep = surviving_configs(family, t.dtype, mode, limit, capability=cc, score_bytes=score_bytes,
                                 tokens=sizes[0], rows=sizes[1], cols=sizes[2])
        wanted = {_key(c) for c in keep}
        return [c for c in configs if _key(c) in wanted] or keep

    return prune
