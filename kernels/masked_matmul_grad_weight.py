"""Fused masked linear parameter gradients with the straight-through
estimator in the GEMM epilogue.

G = grad_out^T @ x ([N, K], accumulated in fp32 over the M tokens) is formed
tile by tile in registers and never written to global memory; the epilogue
writes
  * dscores = G * W   (STE: dL/dS = dL/dM = dL/dW_eff * W), in scores' dtype
    (weight's dtype when the mask is not given as scores),
  * dweight = G * M   (gradient of the frozen-or-not weight), in weight's dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (
    acc_dtype,
    check_device,
    check_int32_indexing,
    dot_precision,
    gemm_configs,
    launch,
    load_keep,
    load_threshold,
    mask_reference,
    resolve_mask,
    swizzle_tile,
)
from .masked_matmul import _check_gemm_dtypes


# Tile names: the output tile is BLOCK_M (rows n of the weight) x BLOCK_N
# (columns k); BLOCK_K is the step over the reduction dimension (tokens M).
@triton.autotune(configs=gemm_configs(), key=["M", "N", "K", "MASK_MODE", "WANT_S", "WANT_W"])
@triton.jit
def _masked_matmul_grad_weight_kernel(
    g_ptr, x_ptr, w_ptr, s_ptr, thr_ptr, bits_ptr, ds_ptr, dw_ptr,
    M, N, K,
    MASK_MODE: tl.constexpr, WANT_S: tl.constexpr, WANT_W: tl.constexpr,
    ACC_DTYPE: tl.constexpr, CMP_DTYPE: tl.constexpr, DOT_PREC: tl.constexpr,
    NM_N: tl.constexpr, NM_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_n, pid_k = swizzle_tile(pid, tl.cdiv(N, BLOCK_M), tl.cdiv(K, BLOCK_N), GROUP_M)
    offs_n = pid_n * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    rn = tl.max_contiguous(tl.multiple_of(offs_n % N, BLOCK_M), BLOCK_M)
    rk = tl.max_contiguous(tl.multiple_of(offs_k % K, BLOCK_N), BLOCK_N)
    rt = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for t0 in range(0, M, BLOCK_K):
        tt = t0 + rt
        tin = tt < M
        # grad_out^T tile [BLOCK_M (n), BLOCK_K (tokens)]
        gt = tl.load(g_ptr + tt[None, :] * N + rn[:, None], mask=tin[None, :], other=0.0)
        # x tile [BLOCK_K (tokens), BLOCK_N (k)]
        xt = tl.load(x_ptr + tt[:, None] * K + rk[None, :], mask=tin[:, None], other=0.0)
        acc = tl.dot(gt, xt.to(gt.dtype), acc, input_precision=DOT_PREC)

    # Epilogue: STE products straight from the accumulator.
    out_mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    idx = offs_n[:, None] * K + offs_k[None, :]
    if WANT_S:
        w = tl.load(w_ptr + idx, mask=out_mask, other=0.0).to(ACC_DTYPE)
        tl.store(ds_ptr + idx, (acc * w).to(ds_ptr.dtype.element_ty), mask=out_mask)
    if WANT_W:
        thr = load_threshold(thr_ptr, MASK_MODE, CMP_DTYPE)
        keep = load_keep(s_ptr, thr, bits_ptr, idx, out_mask, MASK_MODE, CMP_DTYPE, NM_N, NM_M)
        dw = tl.where(keep, acc, tl.zeros_like(acc))
        tl.store(dw_ptr + idx, dw.to(dw_ptr.dtype.element_ty), mask=out_mask)


def masked_matmul_grad_weight(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    *,
    scores: Optional[Tensor] = None,
    threshold=None,
    mask: Optional[Tensor] = None,
    packed_mask: Optional[Tensor] = None,
    nm: Optional[tuple] = None,
    want_scores: bool,
    want_weight: bool,
    input_precision: Optional[str] = None,
    _config=None,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """(dscores, dweight) with G = grad_out^T @ x: dscores = G*W, dweight = G*M.

    grad_out [M, N], x [M, K], weight [N, K]. An output not wanted is None.
    """
    if grad_out.dim() != 2 or x.dim() != 2 or weight.dim() != 2:
        raise ValueError("need grad_out [M, N], x [M, K], weight [N, K]")
    M, N = grad_out.shape
    if x.shape[0] != M or weight.shape != (N, x.shape[1]):
        raise ValueError(
            f"shape mismatch: grad_out {tuple(grad_out.shape)}, x {tuple(x.shape)}, weight {tuple(weight.shape)}"
        )
    _check_gemm_dtypes(grad_out, weight)
    if x.dtype != grad_out.dtype:
        raise TypeError(f"x dtype {x.dtype} != grad_out dtype {grad_out.dtype}")
    K = x.shape[1]
    margs = resolve_mask(weight, scores, threshold, mask, packed_mask, nm)
    check_device(grad_out, x, weight, margs.scores, margs.bits)
    ds_dtype = scores.dtype if scores is not None else weight.dtype
    ds = torch.empty((N, K), dtype=ds_dtype, device=weight.device) if want_scores else None
    dw = torch.empty((N, K), dtype=weight.dtype, device=weight.device) if want_weight else None
    if not (want_scores or want_weight) or N == 0 or K == 0:
        return ds, dw
    grad_out = grad_out.contiguous()
    x = x.contiguous()
    weight = weight.contiguous()
    check_int32_indexing(grad_out, x, weight)

    def grid(meta):
        return (triton.cdiv(N, meta["BLOCK_M"]) * triton.cdiv(K, meta["BLOCK_N"]),)

    launch(
        _masked_matmul_grad_weight_kernel,
        grid,
        (
            grad_out, x, weight, margs.scores, margs.threshold, margs.bits,
            ds if ds is not None else weight, dw if dw is not None else weight,
            M, N, K,
        ),
        dict(
            MASK_MODE=margs.mode, WANT_S=bool(want_scores), WANT_W=bool(want_weight),
            ACC_DTYPE=acc_dtype(grad_out.dtype), CMP_DTYPE=margs.cmp_dtype,
            DOT_PREC=dot_precision(grad_out.dtype, input_precision), NM_N=margs.nm[0], NM_M=margs.nm[1],
        ),
        _config,
    )

    return ds, dw


def masked_matmul_grad_weight_reference(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    *,
    scores: Optional[Tensor] = None,
    threshold=None,
    mask: Optional[Tensor] = None,
    packed_mask: Optional[Tensor] = None,
    nm: Optional[tuple] = None,
    want_scores: bool,
    want_weight: bool,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Plain PyTorch oracle: G = grad_out^T @ x, then the two products."""
    g = grad_out.t() @ x
    ds = dw = None
    if want_scores:
        ds = (g * weight).to(scores.dtype if scores is not None else weight.dtype)
    if want_weight:
        m = mask_reference(weight, scores, threshold, mask, packed_mask, nm)
        dw = torch.where(m, g, torch.zeros((), dtype=g.dtype, device=g.device)).to(weight.dtype)
    return ds, dw
