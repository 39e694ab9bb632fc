"""Top-k thresholds: tau = k-th smallest score, k = floor(s * n).

``scores > tau`` then prunes exactly k entries when the scores have no ties.

Tie behaviour (documented contract): entries equal to tau are pruned too, so
with ties at the k-th value *more* than k entries are pruned (never fewer);
a constant tensor at s > 0 prunes everything.  TAMT's scores are real-valued
and trained, so exact ties are rare after the first step; OMP initialisation
(two score levels) is built so that its threshold falls between the levels.
s = 0 gives tau = -inf: everything is kept.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from . import _backend, reference
from ._common import check_sparsity, sparsity_to_k

_SUPPORTED = ("torch", "triton", "native")


@torch.library.custom_op("tamt::segmented_kth_smallest", mutates_args=())
def _segmented_kth_smallest(scores: list[Tensor], ks: list[int], backend: str) -> Tensor:
    if backend == "native":
        from tamt import _native

        return _native.segmented_kth_smallest(scores, ks)
    if backend == "triton":
        from tamt import kernels

        return kernels.segmented_kth_smallest(scores, ks)
    return reference.segmented_kth_smallest(scores, ks)


@_segmented_kth_smallest.register_fake
def _(scores, ks, backend):
    dtype = torch.float64 if any(s.dtype == torch.float64 for s in scores) else torch.float32
    return scores[0].new_empty(len(scores), dtype=dtype)


def _check_no_nan(flats: list[Tensor]) -> None:
    # One fused reduction over every matrix: a norm is NaN iff some entry is NaN.
    norms = torch._foreach_norm([f.float() if f.dtype in (torch.bfloat16, torch.float16) else f for f in flats])
    bad = torch.isnan(torch.stack([n.float() for n in norms]))
    if bool(bad.any()):
        which = [i for i, b in enumerate(bad.tolist()) if b]
        raise ValueError(
            f"scores of matrix {which[:5]} contain NaN; the mask cannot be selected. "
            "This usually means the search diverged: lower the learning rate or resume from an earlier checkpoint."
        )


def topk_thresholds(
    scores: Sequence[Tensor], sparsities: Sequence[float] | float, *, check_nan: bool = True
) -> Tensor:
    """Per-matrix thresholds for many score tensors in one call.

    Returns a 1-D float32 tensor (float64 if any input is float64) on the
    scores' device; entry i is the floor(s_i * n_i)-th smallest value of
    ``scores[i]`` (-inf where that k is 0).
    """
    scores = list(scores)
    if isinstance(sparsities, (int, float)):
        sparsities = [float(sparsities)] * len(scores)
    sparsities = list(sparsities)
    if len(sparsities) != len(scores):
        raise ValueError(f"topk_thresholds: {len(scores)} score tensors but {len(sparsities)} sparsities")
    if not scores:
        return torch.empty(0)
    device = scores[0].device
    for i, s in enumerate(scores):
        if s.device != device:
            raise ValueError(f"topk_thresholds: all scores must be on one device ({device}); #{i} is on {s.device}")
        if not s.is_floating_point():
            raise TypeError(f"topk_thresholds: scores must be floating point, #{i} is {s.dtype}")
        if s.numel() == 0:
            raise ValueError(f"topk_thresholds: score tensor #{i} is empty")
    flats = [s.detach().reshape(-1) for s in scores]
    if check_nan:
        _check_no_nan(flats)
    ks = [sparsity_to_k(sp, f.numel()) for sp, f in zip(sparsities, flats)]
    backend = _backend.resolve("select", device.type, _SUPPORTED)
    return _segmented_kth_smallest(flats, ks, backend)


def topk_threshold(scores: Tensor, sparsity: float, *, check_nan: bool = True) -> Tensor:
    """The threshold of one score tensor as a 0-dim tensor (see module docs for ties)."""
    check_sparsity(sparsity)
    return topk_thresholds([scores], [sparsity], check_nan=check_nan)[0]
