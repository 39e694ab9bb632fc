"""Per-segment k-th smallest value of many 1-D float tensors at once
(the per-matrix TAMT thresholds), by a segmented radix/histogram select.

Algorithm
  * Every value maps to an order-preserving unsigned key (32-bit for
    fp32/bf16/fp16 inputs, 64-bit when any input is fp64): flip all bits of a
    negative float, set the sign bit of a non-negative one. As in CUDA
    torch.kthvalue's radix select, -0.0 orders just below +0.0 (they compare
    equal, so `scores > tau` is the same either way; CPU torch.kthvalue may
    return either zero).
  * The key is consumed from the top in 8-bit digits (4 passes for 32-bit
    keys, 8 for 64-bit). Why not 11 bits: Triton lowers tl.histogram on
    NVIDIA to warp ballots where each lane owns NBINS/32 bins and does
    ~(NBINS/32) * log2(NBINS) integer ops per element, so 2048 bins would
    make each pass compute-bound (~10x the work of 256 bins). Each pass is ONE launch of a multi-block
    histogram kernel over all segments: the grid is a list of chunks, each
    chunk inside one segment; a program histograms the digit of the keys in
    its chunk whose higher bits equal the segment's prefix chosen so far
    (tl.histogram over blocks in registers/shared memory), then adds its
    non-zero bins to the segment's global histogram with atomics.
  * A tiny per-segment scan kernel (one program per segment on its 256-bin
    histogram, on the device, no host sync) picks the digit that contains the k-th key and
    narrows the rank; the next pass filters on the longer prefix.
  * After the last pass the prefix is the k-th key; it is mapped back to a
    float. The first pass also counts NaNs (ValueError if any).

Nothing is sorted and kthvalue/topk are never called on the data.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import check_device, interpreting

_NBITS = 8  # radix digit width (see module docstring)
_NBINS = 1 << _NBITS


@triton.jit
def _seg_hist_kernel(
    data_ptr, chunk_seg_ptr, chunk_start_ptr, seg_end_ptr, prefix_ptr, hist_ptr, nan_ptr,
    KEY_DTYPE: tl.constexpr, FLOAT_DTYPE: tl.constexpr, SIGN_SHIFT: tl.constexpr,
    SHIFT: tl.constexpr, DIGIT_BITS: tl.constexpr, FIRST: tl.constexpr,
    NBINS: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    seg = tl.load(chunk_seg_ptr + pid)
    start = tl.load(chunk_start_ptr + pid)
    end = tl.minimum(start + CHUNK, tl.load(seg_end_ptr + seg))
    if not FIRST:
        prefix = tl.load(prefix_ptr + seg).to(KEY_DTYPE)
    hist = tl.zeros((NBINS,), dtype=tl.int32)
    nan_count = tl.zeros((BLOCK,), dtype=tl.int32)
    offs = tl.arange(0, BLOCK)
    for off in range(start, end, BLOCK):
        idx = off + offs
        valid = idx < end
        v = tl.load(data_ptr + idx, mask=valid, other=0.0).to(FLOAT_DTYPE)
        if FIRST:
            nan_count += (v != v).to(tl.int32)
        bits = v.to(KEY_DTYPE, bitcast=True)
        neg = (bits >> SIGN_SHIFT) != 0
        key = tl.where(neg, ~bits, bits | (1 << SIGN_SHIFT))
        digit = ((key >> SHIFT) & ((1 << DIGIT_BITS) - 1)).to(tl.int32)
        if not FIRST:
            valid = valid & ((key >> (SHIFT + DIGIT_BITS)) == prefix)
        hist += tl.histogram(digit, NBINS, mask=valid)
    bins = tl.arange(0, NBINS)
    tl.atomic_add(hist_ptr + seg * NBINS + bins, hist, mask=hist > 0)
    if FIRST:
        tl.atomic_add(nan_ptr, tl.sum(nan_count, axis=0))


@triton.jit
def _pick_digit_kernel(hist_ptr, k_rem_ptr, prefix_ptr, DIGIT_BITS: tl.constexpr, NBINS: tl.constexpr):
    """One program per segment: find the bin holding the k_rem-th key
    (inclusive prefix sum), narrow the rank to inside that bin, append the
    digit to the prefix, and clear the histogram row for the next pass."""
    seg = tl.program_id(0)
    bins = tl.arange(0, NBINS)
    h = tl.load(hist_ptr + seg * NBINS + bins).to(tl.int64)
    k = tl.load(k_rem_ptr + seg)
    cum = tl.cumsum(h, axis=0)
    digit = tl.minimum(tl.sum((cum < k).to(tl.int64), axis=0), (1 << DIGIT_BITS) - 1)
    below = tl.sum(tl.where(bins < digit, h, 0), axis=0)
    tl.store(k_rem_ptr + seg, k - below)
    prefix = tl.load(prefix_ptr + seg)
    tl.store(prefix_ptr + seg, (prefix << DIGIT_BITS) | digit)
    tl.store(hist_ptr + seg * NBINS + bins, tl.zeros((NBINS,), dtype=tl.int32))


def _pick_digit(hist: Tensor, k_rem: Tensor, prefix: Tensor, bits: int, use_kernel: bool) -> None:
    """Per-segment digit pick, in place on (hist, k_rem, prefix). One tiny
    launch on a GPU; under the interpreter (where every launch costs ~0.1 s)
    the same arithmetic in torch ops."""
    if use_kernel:
        _pick_digit_kernel[(hist.shape[0],)](hist, k_rem, prefix, DIGIT_BITS=bits, NBINS=_NBINS, num_warps=4)
        return
    h = hist.to(torch.int64)
    cum = h.cumsum(1)
    digit = (cum < k_rem[:, None]).sum(1).clamp(max=(1 << bits) - 1)
    below = (cum - h).gather(1, digit[:, None]).squeeze(1)
    k_rem.sub_(below)
    prefix.copy_(torch.bitwise_left_shift(prefix, bits) | digit)
    hist.zero_()


def _digit_plan(key_bits: int) -> list[tuple[int, int]]:
    """(shift, bits) of each pass from the top of the key."""
    plan, hi = [], key_bits
    while hi > 0:
        b = min(_NBITS, hi)
        plan.append((hi - b, b))
        hi -= b
    return plan


def _keys_to_float(key: Tensor, key_bits: int) -> Tensor:
    """Inverse of the order-preserving key map (key held in int64, a 64-bit
    key in two's-complement wrapped form)."""
    if key_bits == 32:
        sign = 1 << 31
        bits = torch.where(key >= sign, key - sign, (~key) & 0xFFFFFFFF)
        bits = torch.where(bits >= sign, bits - (1 << 32), bits)
        return bits.to(torch.int32).view(torch.float32)
    int64_min = -(1 << 63)
    bits = torch.where(key < 0, key ^ int64_min, ~key)
    return bits.view(torch.float64)


def _flat_buffer(flat_list: Sequence[Tensor], is64: bool) -> Tensor:
    """One 1-D buffer holding all segments back to back. Zero-copy when the
    segments already are adjacent pieces of one contiguous buffer (e.g. a flat
    score store); 16-bit inputs stay 16-bit (the kernel widens on load)."""
    first = flat_list[0]
    same = all(t.dtype == first.dtype for t in flat_list)
    if not same or (is64 and first.dtype != torch.float64):
        target = torch.float64 if is64 else torch.float32
        return torch.cat([t.reshape(-1).to(target) for t in flat_list])
    if len(flat_list) == 1:
        return first.contiguous()
    adjacent = all(t.is_contiguous() for t in flat_list)
    if adjacent:
        storage = first.untyped_storage().data_ptr()
        ptr, es = first.data_ptr(), first.element_size()
        for t in flat_list:
            if t.untyped_storage().data_ptr() != storage or (t.numel() and t.data_ptr() != ptr):
                adjacent = False
                break
            ptr += t.numel() * es
    if adjacent:
        total = sum(t.numel() for t in flat_list)
        return first.as_strided((total,), (1,))
    return torch.cat(flat_list)


def segmented_kth_smallest(flat_list: Sequence[Tensor], ks: Sequence[int]) -> Tensor:
    """k-th smallest (torch.kthvalue semantics, 1-indexed) of each 1-D tensor
    in ``flat_list``; -inf where k == 0. Returns fp32 (fp64 if any input is
    fp64) on the inputs' device."""
    flat_list = list(flat_list)
    ks = [int(k) for k in ks]
    if len(flat_list) != len(ks):
        raise ValueError(f"{len(flat_list)} tensors but {len(ks)} ks")
    if not flat_list:
        return torch.empty(0, dtype=torch.float32)
    device = flat_list[0].device
    for t in flat_list:
        if t.dim() != 1:
            raise ValueError("segmented_kth_smallest takes 1-D tensors (flatten them first)")
        if t.device != device:
            raise ValueError("all tensors must be on the same device")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise TypeError(f"unsupported dtype {t.dtype}")
    lengths = [t.numel() for t in flat_list]
    for n, k in zip(lengths, ks):
        if not 0 <= k <= n:
            raise ValueError(f"k={k} out of range for a segment of {n} elements")
    check_device(*flat_list)
    is64 = any(t.dtype == torch.float64 for t in flat_list)
    out_dtype = torch.float64 if is64 else torch.float32
    key_bits = 64 if is64 else 32
    S = len(flat_list)

    data = _flat_buffer(flat_list, is64)

    # chunk table: every chunk lies inside one segment
    if interpreting():
        block, chunk, warps = 4096, 4096 * 16, 4
    else:
        block, chunk, warps = 4096, 4096 * 16, 8
    seg_ids, starts, ends = [], [], []
    pos = 0
    for s, n in enumerate(lengths):
        if ks[s] > 0:
            for c in range(pos, pos + n, chunk):
                seg_ids.append(s)
                starts.append(c)
        pos += n
        ends.append(pos)
    if seg_ids:
        chunk_seg = torch.tensor(seg_ids, dtype=torch.int32).to(device)
        chunk_start = torch.tensor(starts, dtype=torch.int64).to(device)
        seg_end = torch.tensor(ends, dtype=torch.int64).to(device)
    k_t = torch.tensor(ks, dtype=torch.int64).to(device)
    k_rem = k_t.clamp(min=1)
    prefix = torch.zeros(S, dtype=torch.int64, device=device)
    nan_count = torch.zeros(1, dtype=torch.int32, device=device)
    hist = torch.zeros((S, _NBINS), dtype=torch.int32, device=device)

    if seg_ids:
        for i, (shift, bits) in enumerate(_digit_plan(key_bits)):
            _seg_hist_kernel[(len(seg_ids),)](
                data, chunk_seg, chunk_start, seg_end, prefix, hist, nan_count,
                KEY_DTYPE=tl.uint64 if is64 else tl.uint32,
                FLOAT_DTYPE=tl.float64 if is64 else tl.float32,
                SIGN_SHIFT=key_bits - 1, SHIFT=shift, DIGIT_BITS=bits, FIRST=(i == 0),
                NBINS=_NBINS, CHUNK=chunk, BLOCK=block, num_warps=warps,
            )
            _pick_digit(hist, k_rem, prefix, bits, use_kernel=not interpreting())
        if int(nan_count.item()) > 0:
            raise ValueError("scores contain NaN")

    out = _keys_to_float(prefix, key_bits)
    return torch.where(k_t > 0, out, torch.full_like(out, float("-inf")))


def segmented_kth_smallest_reference(flat_list: Sequence[Tensor], ks: Sequence[int]) -> Tensor:
    """Plain PyTorch oracle: torch.kthvalue per segment (-inf for k == 0)."""
    flat_list = list(flat_list)
    is64 = any(t.dtype == torch.float64 for t in flat_list)
    dtype = torch.float64 if is64 else torch.float32
    device = flat_list[0].device if flat_list else "cpu"
    out = []
    for t, k in zip(flat_list, ks):
        if torch.isnan(t).any():
            raise ValueError("scores contain NaN")
        if k == 0:
            out.append(torch.tensor(float("-inf"), dtype=dtype, device=device))
        else:
            out.append(torch.kthvalue(t.reshape(-1), int(k)).values.to(dtype))
    return torch.stack(out) if out else torch.empty(0, dtype=dtype)
