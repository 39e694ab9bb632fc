"""Plain PyTorch reference implementations of every tamt op.

They are the test oracle for the Triton and native kernels and the ``torch``
backend.  They favour clarity over speed: the masked linear materialises
W*M (the "unfused" path the fused kernels are benchmarked against).

Mask conventions shared by all backends:
  * search mode: ``M = scores > threshold`` (threshold a 0-dim tensor), or,
    for an N:M matrix (``nm=(N, M)``, no threshold), M = the N largest scores
    of every group of M along the input dimension (``tamt.ops.nm.nm_mask``);
  * fixed mode: a bool/uint8 tensor of the weight's shape, or a bit-packed
    uint8 1-D tensor: element i of the row-major flattened weight is bit
    ``i & 7`` of byte ``i >> 3`` (little bit order), pad bits are zero.
"""
from __future__ import annotations

import torch
from torch import Tensor

_BIT_WEIGHTS = None


def pack_mask(mask: Tensor) -> Tensor:
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = (1 << torch.arange(8, device=flat.device, dtype=torch.int32))
    return (flat.view(-1, 8).to(torch.int32) * weights).sum(1).to(torch.uint8)


def unpack_mask(packed: Tensor, numel: int) -> Tensor:
    shifts = torch.arange(8, device=packed.device, dtype=torch.int32)
    bits = (packed.to(torch.int32).unsqueeze(1) >> shifts) & 1
    return bits.reshape(-1)[:numel].bool()


def gather_packed_bits(packed: Tensor, index: Tensor) -> Tensor:
    """Bits of a packed mask at flat element indices ``index`` (any shape)."""
    index = index.to(torch.int64)
    byte = packed[index >> 3].to(torch.int32)
    return ((byte >> (index & 7).to(torch.int32)) & 1).bool()


def dense_mask(weight: Tensor, scores: Tensor | None, threshold: Tensor | None, mask: Tensor | None,
               nm=None) -> Tensor:
    """The boolean mask M of ``weight``'s shape from any of the mask forms."""
    if scores is not None and nm is not None:
        from .nm import nm_mask

        return nm_mask(scores, nm[0], nm[1])
    if scores is not None:
        return scores > threshold
    if mask is None:
        raise ValueError("need either scores+threshold or a mask")
    if mask.dim() == 1 and mask.dtype == torch.uint8 and weight.dim() == 2:
        return unpack_mask(mask, weight.numel()).view(weight.shape)
    return mask.bool().view(weight.shape)


def masked_linear_forward(x, weight, bias, scores, threshold, mask, nm=None):
    m = dense_mask(weight, scores, threshold, mask, nm)
    # where() instead of weight * m.float(): one pass, no float copy of the mask (the CPU fallback's hot path)
    return torch.nn.functional.linear(x, torch.where(m, weight, 0.0), bias)


def masked_linear_grad_input(grad, weight, scores, threshold, mask, nm=None):
    m = dense_mask(weight, scores, threshold, mask, nm)
    return grad @ torch.where(m, weight, 0.0)


def masked_linear_grad_params(grad, x, weight, scores, threshold, mask, want_scores, want_weight, nm=None):
    """(d scores, d weight): dW_eff = grad^T x; d scores = dW_eff*W (STE); dW = dW_eff*M."""
    g = grad.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
    dscores = (g * weight).to(scores.dtype) if want_scores else None
    dweight = None
    if want_weight:
        m = dense_mask(weight, scores, threshold, mask, nm)
        dweight = torch.where(m, g, 0.0).to(weight.dtype)
    return dscores, dweight


def embedding_row_mask(ids: Tensor, weight: Tensor, scores, threshold, mask) -> Tensor:
    """The mask rows for the looked-up ids only (shape ids.shape + (H,))."""
    if scores is not None:
        return scores[ids] > threshold
    if mask.dim() == 1 and mask.dtype == torch.uint8:
        hidden = weight.shape[1]
        index = ids.unsqueeze(-1).to(torch.int64) * hidden + torch.arange(hidden, device=ids.device)
        return gather_packed_bits(mask, index)
    return mask.bool()[ids]


def masked_embedding_forward(ids, weight, scores, threshold, mask, padding_idx: int):
    rows = weight[ids]
    return rows * embedding_row_mask(ids, weight, scores, threshold, mask).to(rows.dtype)


def masked_embedding_grad_params(grad, ids, weight, scores, threshold, mask, padding_idx: int, want_scores, want_weight):
    """Gradients only touch looked-up rows: sum_rows(g) * W[row] == sum_rows(g * W[row])."""
    flat_ids = ids.reshape(-1)
    g = grad.reshape(-1, weight.shape[1])
    if padding_idx >= 0:
        g = g * (flat_ids != padding_idx).unsqueeze(1).to(g.dtype)
    dscores = dweight = None
    if want_scores:
        dscores = torch.zeros_like(scores).index_add_(0, flat_ids, (g * weight[flat_ids]).to(scores.dtype))
    if want_weight:
        m = embedding_row_mask(flat_ids, weight, scores, threshold, mask)
        dweight = torch.zeros_like(weight).index_add_(0, flat_ids, (g * m.to(g.dtype)).to(weight.dtype))
    return dscores, dweight


def kth_smallest(flat: Tensor, k: int) -> Tensor:
    """k-th smallest value (1-indexed, torch.kthvalue semantics); -inf for k == 0."""
    out_dtype = torch.float64 if flat.dtype == torch.float64 else torch.float32
    if k == 0:
        return torch.tensor(float("-inf"), dtype=out_dtype, device=flat.device)
    src = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    return torch.kthvalue(src.reshape(-1), k).values.to(out_dtype)


def segmented_kth_smallest(flats: list[Tensor], ks: list[int]) -> Tensor:
    if not flats:
        return torch.empty(0)
    out_dtype = torch.float64 if any(f.dtype == torch.float64 for f in flats) else torch.float32
    return torch.stack([kth_smallest(f, k).to(out_dtype) for f, k in zip(flats, ks)])
