"""Shared pieces of the masked-GEMM kernels: mask-argument handling, the
masked W-tile load (ONE ``triton.jit`` helper inlined into every GEMM, the
mask mode a constexpr so that further modes slot in), the GROUP_M tile
swizzle and the launch helper. Autotune configs live in ``_configs.py``.

Mask forms (exactly one is given):
  * search mode: ``scores`` (weight's shape, float) and ``threshold`` (0-dim
    tensor); M = scores > threshold, compared the way torch compares them
    (the 0-dim threshold is rounded to scores' dtype first),
  * ``mask``: bool/uint8 tensor of weight's shape (nonzero = keep),
  * ``packed_mask``: uint8 1-D, ceil(N*K/8) bytes, element i of the row-major
    flattened [N, K] weight is bit (i & 7) of byte (i >> 3). When K % 8 == 0
    every row starts on a byte, so a tile reads one byte per 8 K-elements and
    expands it with shifts (``PACKED_ROWS``); otherwise one byte per element.
  * N:M search mode: ``scores`` and ``nm=(n, m)`` (no threshold): M keeps the
    n largest scores of every group of m consecutive weights along K of a row
    (ties to the earlier position; ``tamt.ops.nm.nm_mask`` is the reference).
    The selection happens inside the tile load (``nm_keep``), so an N:M search
    needs no threshold pass.

Which form is fastest is a property of the compiler as much as of the bytes
moved: on Hopper the masked W tile is the register (A) operand of ``wgmma``,
and Triton (3.6 checked) keeps it in registers only when everything between
the shared-memory loads and the dot is elementwise on full tiles with
constant operands. The uint8 mask (``!= 0``) qualifies; the runtime
threshold (a broadcast scalar) and the bit expansion (a reshape) do not, so
those forms round-trip the masked tile through shared memory once per
K-step (pipelined, no ``wgmma.wait_group 0``). ``benchmarks/
static_gpu_check.py`` records this per kernel and form.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

MASK_SCORES = 0
MASK_DENSE = 1
MASK_PACKED = 2
MASK_NM = 3  # scores + group top-N (N:M search)

_INT32_MAX = 2**31 - 1


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_device(*tensors: Tensor) -> None:
    for t in tensors:
        if t is not None and not t.is_cuda and not interpreting():
            raise RuntimeError(
                "tamt.kernels: Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set before "
                "importing triton to run them on CPU tensors"
            )


_TL_DTYPE = {
    torch.float32: tl.float32,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
    torch.float64: tl.float64,
}


def acc_dtype(dtype: torch.dtype):
    """Accumulator type of the GEMMs: fp32, fp64 for fp64 inputs."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(dtype: torch.dtype, input_precision: Optional[str]) -> Optional[str]:
    """tl.dot input_precision: fp32 GEMMs default to IEEE fp32 (no TF32,
    like torch's default matmul); 16-bit inputs keep Triton's default (the
    setting only concerns fp32 operands)."""
    if input_precision is not None:
        if input_precision not in ("ieee", "tf32", "tf32x3"):
            raise ValueError(f"input_precision must be 'ieee', 'tf32' or 'tf32x3', got {input_precision!r}")
        return input_precision if dtype == torch.float32 else None
    return "ieee" if dtype in (torch.float32, torch.float64) else None


@dataclass
class MaskArgs:
    mode: int
    scores: Tensor  # scores (search mode) or a dummy pointer
    threshold: Tensor  # 1-element tensor in scores' dtype, or a dummy
    bits: Tensor  # uint8 dense or packed mask, or a dummy
    cmp_dtype: object  # tl dtype used for scores > threshold
    packed_rows: bool = False  # packed mask with byte-aligned rows (K % 8 == 0)
    row_bytes: int = 0  # K // 8 when packed_rows
    nm: tuple = (0, 1)  # (n, m) of MASK_NM; (0, 1) otherwise (unused)

    def kernel_kwargs(self) -> dict:
        return dict(MASK_MODE=self.mode, CMP_DTYPE=self.cmp_dtype, PACKED_ROWS=self.packed_rows,
                    NM_N=self.nm[0], NM_M=self.nm[1])


def resolve_mask(
    weight: Tensor,
    scores: Optional[Tensor],
    threshold,
    mask: Optional[Tensor],
    packed_mask: Optional[Tensor],
    nm: Optional[tuple] = None,
) -> MaskArgs:
    """Validate the mask form and return the kernel arguments for it."""
    given = [scores is not None, mask is not None, packed_mask is not None]
    if sum(given) != 1:
        raise ValueError("give exactly one of scores (+threshold or nm), mask, packed_mask")
    if nm is not None:
        return _resolve_nm(weight, scores, threshold, nm)
    if threshold is not None and scores is None:
        raise ValueError("threshold is only meaningful with scores")
    N, K = weight.shape
    if scores is not None:
        if threshold is None:
            raise ValueError("scores need a threshold")
        if scores.shape != weight.shape:
            raise ValueError(f"scores shape {tuple(scores.shape)} != weight shape {tuple(weight.shape)}")
        if not scores.is_floating_point():
            raise TypeError(f"scores must be floating point, got {scores.dtype}")
        scores = scores.contiguous()
        # torch semantics of `scores > threshold` for a 0-dim threshold: the
        # threshold is converted to scores' dtype, then compared.
        if isinstance(threshold, Tensor):
            if threshold.numel() != 1:
                raise ValueError("threshold must be a 0-dim (1-element) tensor")
            thr = threshold.reshape(1).to(device=scores.device, dtype=scores.dtype)
        else:
            thr = torch.full((1,), float(threshold), dtype=scores.dtype, device=scores.device)
        cmp = tl.float64 if scores.dtype == torch.float64 else tl.float32
        return MaskArgs(MASK_SCORES, scores, thr, weight, cmp)
    if mask is not None:
        if mask.shape != weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(weight.shape)}")
        if mask.dtype == torch.bool:
            mask = mask.contiguous().view(torch.uint8)
        elif mask.dtype == torch.uint8:
            mask = mask.contiguous()
        else:
            raise TypeError(f"mask must be bool or uint8, got {mask.dtype}")
        return MaskArgs(MASK_DENSE, weight, weight, mask, tl.float32)
    if packed_mask.dtype != torch.uint8 or packed_mask.dim() != 1:
        raise TypeError("packed_mask must be a 1-D uint8 tensor")
    need = (N * K + 7) // 8
    if packed_mask.numel() != need:
        raise ValueError(f"packed_mask has {packed_mask.numel()} bytes, expected ceil({N}*{K}/8) = {need}")
    rows = K % 8 == 0
    return MaskArgs(MASK_PACKED, weight, weight, packed_mask.contiguous(), tl.float32, rows, K // 8 if rows else 0)


def _resolve_nm(weight: Tensor, scores: Optional[Tensor], threshold, nm) -> MaskArgs:
    if scores is None or threshold is not None:
        raise ValueError("nm=(n, m) selects from scores: give scores and no threshold")
    n, m = (int(v) for v in nm)
    if not 1 <= n < m:
        raise ValueError(f"invalid N:M pattern {n}:{m}")
    if scores.shape != weight.shape:
        raise ValueError(f"scores shape {tuple(scores.shape)} != weight shape {tuple(weight.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be floating point, got {scores.dtype}")
    if weight.shape[1] % m:
        raise ValueError(f"N:M groups of {m} need K % {m} == 0, got K = {weight.shape[1]}")
    cmp = tl.float64 if scores.dtype == torch.float64 else tl.float32
    return MaskArgs(MASK_NM, scores.contiguous(), weight, weight, cmp, nm=(n, m))


def nm_mask_reference(scores: Tensor, n: int, m: int) -> Tensor:
    """The n largest of every group of m along the last dim, ties to the earlier position.

    A stable descending sort per group (equal scores keep their order), an
    algorithm independent of the kernel's rank count and of ``tamt.ops.nm``.
    """
    groups = scores.detach().reshape(-1, m)
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    return keep.view(scores.shape)


def mask_reference(weight: Tensor, scores, threshold, mask, packed_mask, nm=None) -> Tensor:
    """The boolean keep-mask M as a plain torch tensor (oracle helper)."""
    if scores is not None and nm is not None:
        return nm_mask_reference(scores, *nm)
    if scores is not None:
        return scores > threshold
    if mask is not None:
        return mask.bool()
    N, K = weight.shape
    shifts = torch.arange(8, device=packed_mask.device, dtype=torch.uint8)
    bits = (packed_mask.unsqueeze(1) >> shifts) & 1
    return bits.reshape(-1)[: N * K].reshape(N, K).bool()


def check_int32_indexing(*tensors: Tensor) -> None:
    for t in tensors:
        if t is not None and t.numel() > _INT32_MAX:
            raise ValueError("tensors with more than 2**31-1 elements are not supported by the GEMM kernels")


# --------------------------------------------------------------------------
# Triton helpers
# --------------------------------------------------------------------------
@triton.jit
def nm_keep(s_ptr, idx, inb, NM_N: tl.constexpr, NM_M: tl.constexpr, CMP_DTYPE: tl.constexpr):
    """N:M keep-mask M[idx]: is S[idx] among the NM_N largest of its group of NM_M along K?

    Entry i of a group is kept when fewer than NM_N entries j of the group
    have S_j > S_i or (S_j == S_i and j < i) (ties to the earlier position, the
    rule of ``tamt.ops.nm.nm_mask``).  The group of a flat row-major index is
    ``idx - idx % NM_M`` .. ``+ NM_M - 1`` because K % NM_M == 0, so the rank is
    NM_M loads of the group's scores and compares, whatever the tile layout
    (W or W^T tile, split-K): every BLOCK size along K is a multiple of NM_M,
    so those loads hit the lines the tile load itself brings in.
    """
    pos = idx % NM_M
    first = idx - pos
    s = tl.load(s_ptr + idx, mask=inb, other=0.0).to(CMP_DTYPE)
    rank = tl.zeros_like(pos)
    for j in tl.static_range(NM_M):
        sj = tl.load(s_ptr + first + j, mask=inb, other=0.0).to(CMP_DTYPE)
        beats = (sj > s) | ((sj == s) & (pos > j))
        rank += beats.to(pos.dtype)
    return rank < NM_N


@triton.jit
def load_w_keep(
    w_ptr, s_ptr, thr, bits_ptr, n_idx, k_idx, k0, n_ok, k_ok, K, KB,
    MASK_MODE: tl.constexpr, CMP_DTYPE: tl.constexpr, PACKED_ROWS: tl.constexpr, TRANS: tl.constexpr,
    BLOCK_NN: tl.constexpr, BLOCK_KK: tl.constexpr, NM_N: tl.constexpr = 0, NM_M: tl.constexpr = 1,
):
    """The W tile and its keep-mask M, the single place a GEMM reads the mask.

    ``n_idx`` [BLOCK_NN] are weight rows, ``k_idx`` [BLOCK_KK] weight columns
    (k0 + arange when the tile is not wrapped; ``k0`` is a multiple of 8),
    ``n_ok`` / ``k_ok`` their bounds. TRANS=False gives [BLOCK_NN, BLOCK_KK]
    tiles (tile[i, j] = W[n_idx[i], k_idx[j]]), TRANS=True the transposed
    [BLOCK_KK, BLOCK_NN] tiles, loaded transposed from memory rather than
    transposed in registers (a register transpose would cost a shared-memory
    round trip before the dot). Out-of-bounds entries come back W = 0,
    keep = False. The N:M mode (MASK_MODE 3, ``NM_N`` of every ``NM_M``
    along K) ranks each entry within its group from the scores (``nm_keep``).
    """
    if TRANS:
        idx = k_idx[:, None] + n_idx[None, :] * K
        inb = k_ok[:, None] & n_ok[None, :]
    else:
        idx = n_idx[:, None] * K + k_idx[None, :]
        inb = n_ok[:, None] & k_ok[None, :]
    w = tl.load(w_ptr + idx, mask=inb, other=0.0)
    if MASK_MODE == 0:
        s = tl.load(s_ptr + idx, mask=inb, other=0.0)
        keep = s.to(CMP_DTYPE) > thr
    elif MASK_MODE == 1:
        keep = tl.load(bits_ptr + idx, mask=inb, other=0) != 0
    elif MASK_MODE == 3:
        keep = nm_keep(s_ptr, idx, inb, NM_N, NM_M, CMP_DTYPE)
    elif PACKED_ROWS:
        # one byte per 8 consecutive k of a row, expanded with shifts
        kb = k0 // 8 + tl.arange(0, BLOCK_KK // 8)
        shifts = tl.arange(0, 8)
        if TRANS:
            byte = tl.load(bits_ptr + kb[:, None] + n_idx[None, :] * KB,
                           mask=(kb < KB)[:, None] & n_ok[None, :], other=0).to(tl.int32)
            bits = (byte[:, None, :] >> shifts[None, :, None]) & 1
            keep = tl.reshape(bits, (BLOCK_KK, BLOCK_NN)) != 0
        else:
            byte = tl.load(bits_ptr + n_idx[:, None] * KB + kb[None, :],
                           mask=n_ok[:, None] & (kb < KB)[None, :], other=0).to(tl.int32)
            bits = (byte[:, :, None] >> shifts[None, None, :]) & 1
            keep = tl.reshape(bits, (BLOCK_NN, BLOCK_KK)) != 0
        keep = keep & inb
    else:
        # rows not byte-aligned (K % 8 != 0): one byte gather per element
        byte = tl.load(bits_ptr + (idx >> 3), mask=inb, other=0).to(tl.int32)
        keep = ((byte >> (idx & 7)) & 1) != 0
    return w, keep


@triton.jit
def load_masked_w(
    w_ptr, s_ptr, thr, bits_ptr, n_idx, k_idx, k0, n_ok, k_ok, K, KB,
    MASK_MODE: tl.constexpr, CMP_DTYPE: tl.constexpr, PACKED_ROWS: tl.constexpr, TRANS: tl.constexpr,
    BLOCK_NN: tl.constexpr, BLOCK_KK: tl.constexpr, NM_N: tl.constexpr = 0, NM_M: tl.constexpr = 1,
):
    """W * M as a tile (see load_w_keep for the arguments)."""
    w, keep = load_w_keep(w_ptr, s_ptr, thr, bits_ptr, n_idx, k_idx, k0, n_ok, k_ok, K, KB,
                          MASK_MODE, CMP_DTYPE, PACKED_ROWS, TRANS, BLOCK_NN, BLOCK_KK, NM_N, NM_M)
    return tl.where(keep, w, tl.zeros_like(w))


@triton.jit
def load_threshold(thr_ptr, MASK_MODE: tl.constexpr, CMP_DTYPE: tl.constexpr):
    if MASK_MODE == 0:
        thr = tl.load(thr_ptr).to(CMP_DTYPE)
    else:
        thr = 0.0
    return thr


@triton.jit
def swizzle_tile(pid, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Grouped ordering of output tiles (Triton tutorial 03) for L2 reuse."""
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


def launch(kernel, grid, args: tuple, kwargs: dict, config=None) -> None:
    """Launch an autotuned kernel, or (``config`` = a triton.Config) its
    underlying JIT function with exactly that config (used by the GPU tests
    to check every autotune config for correctness)."""
    if config is None:
        kernel[grid](*args, **kwargs)
        return
    kernel.fn[grid](*args, **kwargs, **config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)
