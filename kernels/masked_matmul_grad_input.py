"""Fused masked linear input gradient: dx = grad_out @ (W * M).

grad_out [M, N], W [N, K] row-major, dx [M, K] in grad_out's dtype. The mask
is applied while each W tile is loaded, exactly as in the forward kernel,
and for the same reason the product is computed transposed,
dx^T = (W*M)^T @ grad_out^T: the masked tile is the register (A) operand of
the Hopper ``wgmma``. The (W*M)^T tile is loaded transposed from memory
(``TRANS=True``), not transposed in registers.
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
    launch,
    load_masked_w,
    load_threshold,
    mask_reference,
    resolve_mask,
    swizzle_tile,
)
from ._configs import gemm_configs, make_pruner, token_bucket
from .masked_matmul import _check_gemm_dtypes


# Tile names: BLOCK_M tokens x BLOCK_N in-features (columns K of dx) is the
# output tile (computed transposed); BLOCK_K steps over the reduction
# dimension (N, the out-features of the weight).
@triton.autotune(
    configs=gemm_configs("mm"),
    key=["M_BUCKET", "N", "K", "MASK_MODE", "PACKED_ROWS"],
    prune_configs_by={"early_config_prune": make_pruner("mm", "g_ptr", ("M_BUCKET", "K", "N"))},
)
@triton.jit(do_not_specialize=["M_BUCKET"])
def _masked_matmul_grad_input_kernel(
    g_ptr, w_ptr, s_ptr, thr_ptr, bits_ptr, dx_ptr,
    M, N, K, KB, M_BUCKET,
    MASK_MODE: tl.constexpr, PACKED_ROWS: tl.constexpr,
    ACC_DTYPE: tl.constexpr, CMP_DTYPE: tl.constexpr, DOT_PREC: tl.constexpr,
    NM_N: tl.constexpr, NM_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_m, pid_k = swizzle_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    k_start = pid_k * BLOCK_N
    offs_k = k_start + tl.arange(0, BLOCK_N)
    # No tl.multiple_of / tl.max_contiguous hints here: a wrapped index is NOT one
    # contiguous run when the size is not a multiple of the vector width, and the
    # hints let Triton vectorize across the wrap (the bias load read b[1..4] as
    # one 16-byte access: 'misaligned address' on an H200 at N = 123). Triton
    # derives the vector width from the sizes' own divisibility by 16.
    rm = offs_m % M
    rk = offs_k % K
    k_ok = rk < K
    rn = tl.arange(0, BLOCK_K)
    thr = load_threshold(thr_ptr, MASK_MODE, CMP_DTYPE)

    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=ACC_DTYPE)
    for n0 in range(0, N, BLOCK_K):
        nn = n0 + rn
        nin = nn < N
        # (W*M)^T tile [BLOCK_N (k), BLOCK_K (n)]: the register operand
        wmt = load_masked_w(w_ptr, s_ptr, thr, bits_ptr, nn, rk, k_start, nin, k_ok, K, KB,
                            MASK_MODE, CMP_DTYPE, PACKED_ROWS, True, BLOCK_K, BLOCK_N, NM_N, NM_M)
        # grad_out^T tile [BLOCK_K (n), BLOCK_M]: element (n, m) is grad_out[m, n]
        gt = tl.load(g_ptr + rm[None, :] * N + nn[:, None], mask=nin[:, None], other=0.0)
        acc = tl.dot(wmt.to(gt.dtype), gt, acc, input_precision=DOT_PREC, out_dtype=ACC_DTYPE)

    dx = acc.to(dx_ptr.dtype.element_ty)
    out_mask = (offs_k[:, None] < K) & (offs_m[None, :] < M)
    tl.store(dx_ptr + offs_m[None, :] * K + offs_k[:, None], dx, mask=out_mask)


def masked_matmul_grad_input(
    grad_out: Tensor,
    weight: Tensor,
    *,
    scores: Optional[Tensor] = None,
    threshold=None,
    mask: Optional[Tensor] = None,
    packed_mask: Optional[Tensor] = None,
    nm: Optional[tuple] = None,
    input_precision: Optional[str] = None,
    _config=None,
) -> Tensor:
    """dx [M, K] = grad_out [M, N] @ (W*M) [N, K]."""
    if grad_out.dim() != 2 or weight.dim() != 2 or grad_out.shape[1] != weight.shape[0]:
        raise ValueError(
            f"need grad_out [M, N] and weight [N, K], got {tuple(grad_out.shape)} and {tuple(weight.shape)}"
        )
    _check_gemm_dtypes(grad_out, weight)
    M, N = grad_out.shape
    K = weight.shape[1]
    margs = resolve_mask(weight, scores, threshold, mask, packed_mask, nm)
    check_device(grad_out, weight, margs.scores, margs.bits)
    dx = torch.empty((M, K), dtype=grad_out.dtype, device=grad_out.device)
    if M == 0 or K == 0:
        return dx
    grad_out = grad_out.contiguous()
    weight = weight.contiguous()
    check_int32_indexing(grad_out, weight, dx)

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(K, meta["BLOCK_N"]),)

    launch(
        _masked_matmul_grad_input_kernel,
        grid,
        (
            grad_out, weight, margs.scores, margs.threshold, margs.bits, dx,
            M, N, K, margs.row_bytes, token_bucket(M),
        ),
        dict(
            **margs.kernel_kwargs(),
            ACC_DTYPE=acc_dtype(grad_out.dtype), DOT_PREC=dot_precision(grad_out.dtype, input_precision),
        ),
        _config,
    )

    return dx


def masked_matmul_grad_input_reference(
    grad_out: Tensor,
    weight: Tensor,
    *,
    scores: Optional[Tensor] = None,
    threshold=None,
    mask: Optional[Tensor] = None,
    packed_mask: Optional[Tensor] = None,
    nm: Optional[tuple] = None,
) -> Tensor:
    """Plain PyTorch oracle: grad_out @ (W*M)."""
    m = mask_reference(weight, scores, threshold, mask, packed_mask, nm)
    w_eff = torch.where(m, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))
    return grad_out @ w_eff
