"""Fused masked linear forward: y = x @ (W * M)^T + b.

The mask is applied while each W tile is loaded (W*M never exists in global
memory); the bias is added in the epilogue; accumulation is fp32 (fp64 for
fp64 inputs). x [M, K], W [N, K] row-major, y [M, N] in x's dtype.

Operand order: the kernel computes y^T = (W*M) @ x^T tile by tile, so the
masked W tile is the LEFT operand of the dot. On Hopper ``wgmma`` reads its
A operand from registers and only B from shared memory; with W*M on the left
the masking happens in registers and the K-loop stays pipelined (several
``wgmma`` groups in flight). With W*M on the right it would have to be
stored back to shared memory every K-step, followed by ``wait_group 0``.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (
    _TL_DTYPE,
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


# Tile names: BLOCK_M tokens x BLOCK_N output features is the output tile
# (computed transposed, [BLOCK_N, BLOCK_M]); BLOCK_K steps over in-features.
@triton.autotune(
    configs=gemm_configs("mm"),
    key=["M_BUCKET", "N", "K", "MASK_MODE", "PACKED_ROWS", "HAS_BIAS"],
    prune_configs_by={"early_config_prune": make_pruner("mm", "x_ptr", ("M_BUCKET", "N", "K"))},
)
@triton.jit(do_not_specialize=["M_BUCKET"])
def _masked_matmul_fwd_kernel(
    x_ptr, w_ptr, s_ptr, thr_ptr, bits_ptr, b_ptr, y_ptr,
    M, N, K, KB, M_BUCKET,
    MASK_MODE: tl.constexpr, PACKED_ROWS: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACC_DTYPE: tl.constexpr, CMP_DTYPE: tl.constexpr, DOT_PREC: tl.constexpr,
    NM_N: tl.constexpr, NM_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_m, pid_n = swizzle_tile(pid, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Rows/cols past the edge wrap around (valid addresses, results discarded
    # by the masked store), so only the K edge needs a load mask.
    # No tl.multiple_of / tl.max_contiguous hints here: a wrapped index is NOT one
    # contiguous run when the size is not a multiple of the vector width, and the
    # hints let Triton vectorize across the wrap (the bias load read b[1..4] as
    # one 16-byte access: 'misaligned address' on an H200 at N = 123). Triton
    # derives the vector width from the sizes' own divisibility by 16.
    rm = offs_m % M
    rn = offs_n % N
    n_ok = rn < N
    rk = tl.arange(0, BLOCK_K)
    thr = load_threshold(thr_ptr, MASK_MODE, CMP_DTYPE)

    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=ACC_DTYPE)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        kin = kk < K
        # (W*M) tile [BLOCK_N, BLOCK_K]: the register operand
        wm = load_masked_w(w_ptr, s_ptr, thr, bits_ptr, rn, kk, k0, n_ok, kin, K, KB,
                           MASK_MODE, CMP_DTYPE, PACKED_ROWS, False, BLOCK_N, BLOCK_K, NM_N, NM_M)
        # x^T tile [BLOCK_K, BLOCK_M]: element (k, m) is x[m, k]
        xt = tl.load(x_ptr + rm[None, :] * K + kk[:, None], mask=kin[:, None], other=0.0)
        acc = tl.dot(wm.to(xt.dtype), xt, acc, input_precision=DOT_PREC, out_dtype=ACC_DTYPE)

    if HAS_BIAS:
        bias = tl.load(b_ptr + rn).to(ACC_DTYPE)
        acc = acc + bias[:, None]
    y = acc.to(y_ptr.dtype.element_ty)
    out_mask = (offs_n[:, None] < N) & (offs_m[None, :] < M)
    tl.store(y_ptr + offs_m[None, :] * N + offs_n[:, None], y, mask=out_mask)


def _check_gemm_dtypes(a: Tensor, weight: Tensor) -> None:
    if a.dtype not in _TL_DTYPE:
        raise TypeError(f"unsupported dtype {a.dtype}")
    if weight.dtype != a.dtype:
        raise TypeError(f"weight dtype {weight.dtype} != activation dtype {a.dtype}")


def masked_matmul(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    scores: Optional[Tensor] = None,
    threshold=None,
    mask: Optional[Tensor] = None,
    packed_mask: Optional[Tensor] = None,
    nm: Optional[tuple] = None,
    input_precision: Optional[str] = None,
    _config=None,
) -> Tensor:
    """y = x @ (W*M)^T + bias, x [M, K], weight [N, K], bias [N] or None."""
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"need x [M, K] and weight [N, K], got {tuple(x.shape)} and {tuple(weight.shape)}")
    _check_gemm_dtypes(x, weight)
    M, K = x.shape
    N = weight.shape[0]
    margs = resolve_mask(weight, scores, threshold, mask, packed_mask, nm)
    if bias is not None and bias.shape != (N,):
        raise ValueError(f"bias must have shape ({N},), got {tuple(bias.shape)}")
    check_device(x, weight, bias, margs.scores, margs.bits)
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    x = x.contiguous()
    weight = weight.contiguous()
    check_int32_indexing(x, weight, y)
    bias_arg = bias.contiguous() if bias is not None else y

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    launch(
        _masked_matmul_fwd_kernel,
        grid,
        (
            x, weight, margs.scores, margs.threshold, margs.bits, bias_arg, y,
            M, N, K, margs.row_bytes, token_bucket(M),
        ),
        dict(
            **margs.kernel_kwargs(), HAS_BIAS=bias is not None,
            ACC_DTYPE=acc_dtype(x.dtype), DOT_PREC=dot_precision(x.dtype, input_precision),
        ),
        _config,
    )

    return y


def masked_matmul_reference(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    scores: Optional[Tensor] = None,
    threshold=None,
    mask: Optional[Tensor] = None,
    packed_mask: Optional[Tensor] = None,
    nm: Optional[tuple] = None,
) -> Tensor:
    """Plain PyTorch oracle: materialise W*M, then F.linear-equivalent."""
    m = mask_reference(weight, scores, threshold, mask, packed_mask, nm)
    w_eff = torch.where(m, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))
    y = x @ w_eff.t()
    if bias is not None:
        y = y + bias
    return y
