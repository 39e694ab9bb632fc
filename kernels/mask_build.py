"""The step's mask in one fused elementwise pass: (scores, threshold) -> the
mask form that every GEMM of the optimizer step then reuses (forward and
grad-input of every micro-batch), instead of each GEMM re-reading the fp32
scores in every tile of every token block.

Forms:
  * ``uint8``  - M as 0/1 bytes of the weight's shape (1 byte per weight; the
                 form Hopper keeps in registers, see ``_common``),
  * ``packed`` - tamt's bit-packed format (1 bit per weight, element i of the
                 row-major flattened weight is bit i & 7 of byte i >> 3),
  * ``masked`` - W * M in the weight's dtype (materialise-then-cuBLAS).
M = scores > threshold with torch's semantics (the 0-dim threshold is
rounded to the scores' dtype first), as in the GEMM kernels.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import check_device, check_int32_indexing, launch

FORMS = ("uint8", "packed", "masked")
_BLOCK = 1024
_BLOCK_BYTES = 256


@triton.jit
def _binarize_kernel(s_ptr, thr_ptr, w_ptr, out_ptr, n, MASKED_WEIGHT: tl.constexpr,
                     CMP_DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < n
    thr = tl.load(thr_ptr).to(CMP_DTYPE)
    keep = tl.load(s_ptr + offs, mask=inb, other=0.0).to(CMP_DTYPE) > thr
    if MASKED_WEIGHT:
        w = tl.load(w_ptr + offs, mask=inb, other=0.0)
        tl.store(out_ptr + offs, tl.where(keep, w, tl.zeros_like(w)), mask=inb)
    else:
        tl.store(out_ptr + offs, keep.to(tl.uint8), mask=inb)


@triton.jit
def _pack_kernel(s_ptr, thr_ptr, out_ptr, n, nbytes, CMP_DTYPE: tl.constexpr, BLOCK_BYTES: tl.constexpr):
    byte = tl.program_id(0) * BLOCK_BYTES + tl.arange(0, BLOCK_BYTES)
    bit = tl.arange(0, 8)
    idx = byte[:, None] * 8 + bit[None, :]
    inb = idx < n
    thr = tl.load(thr_ptr).to(CMP_DTYPE)
    keep = (tl.load(s_ptr + idx, mask=inb, other=0.0).to(CMP_DTYPE) > thr) & inb
    packed = tl.sum(keep.to(tl.int32) << bit[None, :], axis=1)
    tl.store(out_ptr + byte, packed.to(tl.uint8), mask=byte < nbytes)


def _threshold_like(scores: Tensor, threshold) -> Tensor:
    if isinstance(threshold, Tensor):
        if threshold.numel() != 1:
            raise ValueError("threshold must be a 0-dim (1-element) tensor")
        return threshold.reshape(1).to(device=scores.device, dtype=scores.dtype)
    return torch.full((1,), float(threshold), dtype=scores.dtype, device=scores.device)


def binarize(scores: Tensor, threshold, form: str, weight: Optional[Tensor] = None) -> Tensor:
    """M = scores > threshold as ``form`` ('uint8', 'packed' or 'masked';
    'masked' needs ``weight`` and returns W * M)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be floating point, got {scores.dtype}")
    if form == "masked" and (weight is None or weight.shape != scores.shape):
        raise ValueError("form 'masked' needs the weight, of the scores' shape")
    check_device(scores, weight)
    s = scores.contiguous()
    thr = _threshold_like(s, threshold)
    cmp = tl.float64 if s.dtype == torch.float64 else tl.float32
    n = s.numel()
    check_int32_indexing(s)
    if form == "packed":
        nbytes = (n + 7) // 8
        out = torch.empty(nbytes, dtype=torch.uint8, device=s.device)
        if n:
            launch(_pack_kernel, (triton.cdiv(nbytes, _BLOCK_BYTES),), (s, thr, out, n, nbytes),
                   dict(CMP_DTYPE=cmp, BLOCK_BYTES=_BLOCK_BYTES, num_warps=4))
        return out
    if form == "masked":
        w = weight.contiguous()
        out = torch.empty_like(w)
    else:
        w = s  # unused pointer
        out = torch.empty(s.shape, dtype=torch.uint8, device=s.device)
    if n:
        launch(_binarize_kernel, (triton.cdiv(n, _BLOCK),), (s, thr, w, out, n),
               dict(MASKED_WEIGHT=form == "masked", CMP_DTYPE=cmp, BLOCK=_BLOCK, num_warps=4))
    return out


def binarize_reference(scores: Tensor, threshold, form: str, weight: Optional[Tensor] = None) -> Tensor:
    """Plain PyTorch oracle of ``binarize``."""
    m = scores > threshold
    if form == "uint8":
        return m.to(torch.uint8)
    if form == "masked":
        return torch.where(m, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))
    flat = m.reshape(-1).to(torch.int32)
    pad = (-flat.numel()) % 8
    flat = torch.cat([flat, flat.new_zeros(pad)]) if pad else flat
    return (flat.view(-1, 8) << torch.arange(8, device=flat.device, dtype=torch.int32)).sum(1).to(torch.uint8)
