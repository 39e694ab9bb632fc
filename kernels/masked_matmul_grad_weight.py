"""Fused masked linear parameter gradients with the straight-through
estimator in the GEMM epilogue, split over the token dimension.

G = grad_out^T @ x ([N, K], accumulated in fp32 over the M tokens) is formed
tile by tile in registers and never written to global memory as such; the
epilogue writes
  * dscores = G * W   (STE: dL/dS = dL/dM = dL/dW_eff * W), in scores' dtype
    (weight's dtype when the mask is not given as scores),
  * dweight = G * M   (gradient of the frozen-or-not weight), in weight's dtype.

Split-K: a BERT-base 768x768 weight has only 36 128x128 output tiles for
132 SMs, each looping over all tokens. Both epilogue products are linear in
G, so the token range is split into ``SPLIT`` slices (grid axis 1) and
  * EPI_ATOMIC: each slice adds its G_part*W / G_part*M to fp32 outputs with
    atomics (the default when the outputs are fp32), or
  * EPI_PARTIAL: each slice stores its G_part to a [SPLIT, N, K] fp32
    workspace and a second pass sums the slices in a fixed order and applies
    the epilogue (deterministic: used under
    ``torch.use_deterministic_algorithms(True)``, with ``deterministic=True``,
    or when an output is 16-bit).
``choose_split`` picks SPLIT from the output tiles vs the SM count.
"""
from __future__ import annotations

import functools
import math
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
    interpreting,
    launch,
    load_threshold,
    load_w_keep,
    mask_reference,
    resolve_mask,
    swizzle_tile,
)
from ._configs import gemm_configs, make_pruner, token_bucket
from .masked_matmul import _check_gemm_dtypes

EPI_STORE = 0
EPI_ATOMIC = 1
EPI_PARTIAL = 2
_MAX_SPLIT = 16


@triton.jit
def _ste_epilogue(
    acc, ds_ptr, dw_ptr, w_ptr, s_ptr, thr, bits_ptr, offs_n, offs_k, k0, N, K, KB,
    WANT_S: tl.constexpr, WANT_W: tl.constexpr, ATOMIC: tl.constexpr,
    MASK_MODE: tl.constexpr, CMP_DTYPE: tl.constexpr, PACKED_ROWS: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NM_N: tl.constexpr, NM_M: tl.constexpr,
):
    """dscores = G*W, dweight = G*M for one [BLOCK_M, BLOCK_N] tile of G."""
    n_ok = offs_n < N
    k_ok = offs_k < K
    out_mask = n_ok[:, None] & k_ok[None, :]
    idx = offs_n[:, None] * K + offs_k[None, :]
    if WANT_W:
        w, keep = load_w_keep(w_ptr, s_ptr, thr, bits_ptr, offs_n, offs_k, k0, n_ok, k_ok, K, KB,
                              MASK_MODE, CMP_DTYPE, PACKED_ROWS, False, BLOCK_M, BLOCK_N, NM_N, NM_M)
    else:
        w = tl.load(w_ptr + idx, mask=out_mask, other=0.0)
    if WANT_S:
        ds = acc * w.to(ACC_DTYPE)
        if ATOMIC:
            tl.atomic_add(ds_ptr + idx, ds, mask=out_mask, sem="relaxed")
        else:
            tl.store(ds_ptr + idx, ds.to(ds_ptr.dtype.element_ty), mask=out_mask)
    if WANT_W:
        dw = tl.where(keep, acc, tl.zeros_like(acc))
        if ATOMIC:
            tl.atomic_add(dw_ptr + idx, dw, mask=out_mask, sem="relaxed")
        else:
            tl.store(dw_ptr + idx, dw.to(dw_ptr.dtype.element_ty), mask=out_mask)


# Tile names: the output tile is BLOCK_M (rows n of the weight) x BLOCK_N
# (columns k); BLOCK_K is the step over the reduction dimension (tokens M).
@triton.autotune(
    configs=gemm_configs("gw"),
    key=["M_BUCKET", "N", "K", "MASK_MODE", "PACKED_ROWS", "WANT_S", "WANT_W", "EPI"],
    prune_configs_by={"early_config_prune": make_pruner("gw", "g_ptr", ("M_BUCKET", "N", "K"))},
    # split-K adds into the outputs: every benchmarked config starts from zero
    reset_to_zero=["ds_ptr", "dw_ptr"],
)
@triton.jit(do_not_specialize=["M_BUCKET"])
def _masked_matmul_grad_weight_kernel(
    g_ptr, x_ptr, w_ptr, s_ptr, thr_ptr, bits_ptr, ds_ptr, dw_ptr, ws_ptr,
    M, N, K, KB, M_BUCKET, SPLIT,
    MASK_MODE: tl.constexpr, PACKED_ROWS: tl.constexpr, WANT_S: tl.constexpr, WANT_W: tl.constexpr,
    EPI: tl.constexpr,
    ACC_DTYPE: tl.constexpr, CMP_DTYPE: tl.constexpr, DOT_PREC: tl.constexpr,
    NM_N: tl.constexpr, NM_M: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_n, pid_k = swizzle_tile(pid, tl.cdiv(N, BLOCK_M), tl.cdiv(K, BLOCK_N), GROUP_M)
    offs_n = pid_n * BLOCK_M + tl.arange(0, BLOCK_M)
    k_start = pid_k * BLOCK_N
    offs_k = k_start + tl.arange(0, BLOCK_N)
    # No tl.multiple_of / tl.max_contiguous hints here: a wrapped index is NOT one
    # contiguous run when the size is not a multiple of the vector width, and the
    # hints let Triton vectorize across the wrap (the bias load read b[1..4] as
    # one 16-byte access: 'misaligned address' on an H200 at N = 123). Triton
    # derives the vector width from the sizes' own divisibility by 16.
    rn = offs_n % N
    rk = offs_k % K
    rt = tl.arange(0, BLOCK_K)
    # this split's token slice: whole BLOCK_K steps, the last slice may be short
    per = tl.cdiv(tl.cdiv(M, BLOCK_K), SPLIT) * BLOCK_K
    t_lo = pid_s * per
    t_hi = tl.minimum(M, t_lo + per)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for t0 in range(t_lo, t_hi, BLOCK_K):
        tt = t0 + rt
        tin = tt < t_hi
        # grad_out^T tile [BLOCK_M (n), BLOCK_K (tokens)]
        gt = tl.load(g_ptr + tt[None, :] * N + rn[:, None], mask=tin[None, :], other=0.0)
        # x tile [BLOCK_K (tokens), BLOCK_N (k)]
        xt = tl.load(x_ptr + tt[:, None] * K + rk[None, :], mask=tin[:, None], other=0.0)
        acc = tl.dot(gt, xt.to(gt.dtype), acc, input_precision=DOT_PREC, out_dtype=ACC_DTYPE)

    if EPI == 2:
        out_mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
        idx = offs_n[:, None] * K + offs_k[None, :]
        tl.store(ws_ptr + pid_s * N * K + idx, acc.to(ws_ptr.dtype.element_ty), mask=out_mask)
    else:
        thr = load_threshold(thr_ptr, MASK_MODE, CMP_DTYPE)
        _ste_epilogue(acc, ds_ptr, dw_ptr, w_ptr, s_ptr, thr, bits_ptr, offs_n, offs_k, k_start, N, K, KB,
                      WANT_S, WANT_W, EPI == 1, MASK_MODE, CMP_DTYPE, PACKED_ROWS, ACC_DTYPE, BLOCK_M, BLOCK_N,
                      NM_N, NM_M)


@triton.jit
def _grad_weight_reduce_kernel(
    ws_ptr, w_ptr, s_ptr, thr_ptr, bits_ptr, ds_ptr, dw_ptr,
    N, K, KB, SPLIT,
    MASK_MODE: tl.constexpr, PACKED_ROWS: tl.constexpr, WANT_S: tl.constexpr, WANT_W: tl.constexpr,
    ACC_DTYPE: tl.constexpr, CMP_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    NM_N: tl.constexpr = 0, NM_M: tl.constexpr = 1,
):
    """Sum the split partials of G in split order (deterministic), then the
    same STE epilogue as the one-split kernel."""
    offs_n = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    k_start = tl.program_id(1) * BLOCK_N
    offs_k = k_start + tl.arange(0, BLOCK_N)
    out_mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    idx = offs_n[:, None] * K + offs_k[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for s in range(0, SPLIT):
        acc += tl.load(ws_ptr + s * N * K + idx, mask=out_mask, other=0.0)
    thr = load_threshold(thr_ptr, MASK_MODE, CMP_DTYPE)
    _ste_epilogue(acc, ds_ptr, dw_ptr, w_ptr, s_ptr, thr, bits_ptr, offs_n, offs_k, k_start, N, K, KB,
                  WANT_S, WANT_W, False, MASK_MODE, CMP_DTYPE, PACKED_ROWS, ACC_DTYPE, BLOCK_M, BLOCK_N,
                  NM_N, NM_M)


# 8 outputs per thread: (32, 128) tiles spilled on unaligned shapes on 4 warps
# with Triton 3.6 and on 8 warps with 3.9 (static check); (16, 64) fits both
_REDUCE_BLOCK = (16, 64)
_REDUCE_WARPS = 4


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def choose_split(M: int, N: int, K: int, sms: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Token splits for the grad-weight GEMM: minimise
    waves(split) / split + (split - 1) * c / M over 1..16 splits.

    waves/split is the time of the longest CTA in units of an unsplit tile
    (128 x 128 nominal tiles, ``sms`` CTAs per wave); each extra split adds
    one fp32 read-modify-write of the output (8 bytes per element against
    2*M FLOPs per element), which costs about c/M of the GEMM with c = 4 *
    FLOP/s / (bytes/s): ~800 for 16-bit tensor-core GEMMs on H100/H200-class
    parts, ~60 for fp32 FMA. A slice keeps at least 256 tokens.
    """
    if sms <= 1 or M < 512:
        return 1
    tiles = triton.cdiv(N, 128) * triton.cdiv(K, 128)
    c = 60.0 if dtype in (torch.float32, torch.float64) else 800.0
    best, best_cost = 1, math.inf
    for s in range(1, _MAX_SPLIT + 1):
        if M // s < 256:
            break
        cost = math.ceil(tiles * s / sms) / s + (s - 1) * c / M
        if cost < best_cost - 1e-9:
            best, best_cost = s, cost
    return best


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
    split_k: Optional[int] = None,
    deterministic: Optional[bool] = None,
    _config=None,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """(dscores, dweight) with G = grad_out^T @ x: dscores = G*W, dweight = G*M.

    grad_out [M, N], x [M, K], weight [N, K]. An output not wanted is None.
    ``split_k``: token slices (default: ``choose_split`` for this device);
    ``deterministic``: sum the slices in a fixed order instead of with
    atomics (default: ``torch.are_deterministic_algorithms_enabled()``).
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
    dev = weight.device
    if not (want_scores or want_weight) or N == 0 or K == 0 or M == 0:
        ds = torch.zeros((N, K), dtype=ds_dtype, device=dev) if want_scores else None
        dw = torch.zeros((N, K), dtype=weight.dtype, device=dev) if want_weight else None
        return ds, dw
    grad_out = grad_out.contiguous()
    x = x.contiguous()
    weight = weight.contiguous()
    check_int32_indexing(grad_out, x, weight)

    if split_k is None:
        sms = 1 if interpreting() or not weight.is_cuda else _sm_count(weight.device.index or 0)
        split_k = choose_split(M, N, K, sms, grad_out.dtype)
    split = max(1, min(int(split_k), _MAX_SPLIT, triton.cdiv(M, 16)))
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    fp32_out = (not want_scores or ds_dtype == torch.float32) and (not want_weight or weight.dtype == torch.float32)
    if split == 1:
        epi = EPI_STORE
    elif fp32_out and not deterministic:
        epi = EPI_ATOMIC
    else:
        epi = EPI_PARTIAL
    alloc = torch.zeros if epi == EPI_ATOMIC else torch.empty
    ds = alloc((N, K), dtype=ds_dtype, device=dev) if want_scores else None
    dw = alloc((N, K), dtype=weight.dtype, device=dev) if want_weight else None
    # Unwanted outputs get a scratch element, never another tensor: the
    # autotuner zeroes ds/dw before each benchmarked config.
    scratch = torch.empty(1, dtype=torch.float32, device=dev)
    acc_torch = torch.float64 if grad_out.dtype == torch.float64 else torch.float32
    ws = torch.empty((split, N, K), dtype=acc_torch, device=dev) if epi == EPI_PARTIAL else scratch
    check_int32_indexing(ws)
    consts = dict(**margs.kernel_kwargs(), WANT_S=bool(want_scores), WANT_W=bool(want_weight),
                  ACC_DTYPE=acc_dtype(grad_out.dtype))

    def grid(meta):
        return (triton.cdiv(N, meta["BLOCK_M"]) * triton.cdiv(K, meta["BLOCK_N"]), split)

    launch(
        _masked_matmul_grad_weight_kernel,
        grid,
        (
            grad_out, x, weight, margs.scores, margs.threshold, margs.bits,
            ds if ds is not None else scratch, dw if dw is not None else scratch, ws,
            M, N, K, margs.row_bytes, token_bucket(M), split,
        ),
        dict(
            **consts, EPI=epi, DOT_PREC=dot_precision(grad_out.dtype, input_precision),
        ),
        _config,
    )
    if epi == EPI_PARTIAL:
        bm, bn = _REDUCE_BLOCK
        launch(
            _grad_weight_reduce_kernel,
            (triton.cdiv(N, bm), triton.cdiv(K, bn)),
            (
                ws, weight, margs.scores, margs.threshold, margs.bits,
                ds if ds is not None else scratch, dw if dw is not None else scratch,
                N, K, margs.row_bytes, split,
            ),
            dict(**consts, BLOCK_M=bm, BLOCK_N=bn, num_warps=_REDUCE_WARPS),
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
