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

import weakref
from typing import Sequence

import torch
from torch import Tensor

from . import _backend, reference
from ._common import check_sparsity, sparsity_to_k, use_registered_op

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
    _raise_if_nan(torch.isnan(torch.stack([n.float() for n in norms])))


def _raise_if_nan(bad: Tensor) -> None:
    if bool(bad.any()):
        which = [i for i, b in enumerate(bad.tolist()) if b]
        raise ValueError(
            f"scores of matrix {which[:5]} contain NaN; the mask cannot be selected. "
            "This usually means the search diverged: lower the learning rate or resume from an earlier checkpoint."
        )


# First-digit histograms left by the fused score step (tamt.pruning.score_step), by (address, numel):
# (weak reference to the tensor, its version counter then, hist_bits, row).  An entry counts only while that
# tensor is alive at the same address and unmodified since (``_version``, which every in-place op bumps;
# writes through ``.data`` bypass it as they bypass autograd's own checks -- the select then usually
# detects the mismatch and the full select runs).
_KEY_HISTS: dict = {}
_NAN_FREE_TOP_BIN_BITS = 10  # from 10 bits on, the top bin holds only NaN keys (+inf is 0xFF800000)


def note_key_histograms(tensors: Sequence[Tensor], hist: Tensor, hist_bits: int) -> None:
    """Remember ``hist[i]``, the first radix digit histogram of ``tensors[i]`` (float32) as it is now."""
    for key in [k for k, e in _KEY_HISTS.items() if e[0]() is None]:
        del _KEY_HISTS[key]
    for t, row in zip(tensors, hist):
        _KEY_HISTS[(t.data_ptr(), t.numel())] = (weakref.ref(t), t._version, int(hist_bits), row)


def _noted(t: Tensor):
    e = _KEY_HISTS.get((t.data_ptr(), t.numel()))
    if e is None or t.dtype != torch.float32:
        return None
    owner = e[0]()
    if owner is None or owner.data_ptr() != t.data_ptr() or owner._version != e[1]:
        return None
    return e


def _first_histograms(scores: list[Tensor]):
    """(histograms, hist_bits) when the fused score step left one for (nearly) every tensor, else None.

    Tensors it did not update (no gradient, e.g. the pooler under KD) get theirs computed once here and
    noted; when most are unknown the select's own first pass is cheaper than that.
    """
    from tamt import _native

    entries = [_noted(t) for t in scores]
    known = [e for e in entries if e is not None]
    if not known or len({e[2] for e in known}) != 1:
        return None
    hist_bits = known[0][2]
    missing = [i for i, e in enumerate(entries) if e is None]
    if any(scores[i].dtype != torch.float32 for i in missing) or \
            8 * sum(scores[i].numel() for i in missing) > sum(t.numel() for t in scores):
        return None
    rows = [None if e is None else e[3] for e in entries]
    for i in missing:
        rows[i] = _native.key_histogram_reference(scores[i].detach(), hist_bits)
        note_key_histograms([scores[i]], rows[i][None], hist_bits)
    return torch.stack(rows), hist_bits


def topk_thresholds(
    scores: Sequence[Tensor], sparsities: Sequence[float] | float, *, check_nan: bool = True
) -> Tensor:
    """Per-matrix thresholds for many score tensors in one call.

    Returns a 1-D float32 tensor (float64 if any input is float64) on the
    scores' device; entry i is the floor(s_i * n_i)-th smallest value of
    ``scores[i]`` (-inf where that k is 0).
    """
    return _thresholds(scores, sparsities, check_nan, want_counts=False)[0]


def topk_thresholds_and_counts(
    scores: Sequence[Tensor], sparsities: Sequence[float] | float, *, check_nan: bool = True
) -> tuple[Tensor, list[int | None]]:
    """``topk_thresholds`` and, per tensor, the number of entries <= its threshold where the select
    counted it for free (native CPU backend), else None: ``count > k`` means ties at the threshold."""
    return _thresholds(scores, sparsities, check_nan, want_counts=True)


def _thresholds(scores, sparsities, check_nan: bool, want_counts: bool):
    scores = list(scores)
    if isinstance(sparsities, (int, float)):
        sparsities = [float(sparsities)] * len(scores)
    sparsities = list(sparsities)
    if len(sparsities) != len(scores):
        raise ValueError(f"topk_thresholds: {len(scores)} score tensors but {len(sparsities)} sparsities")
    if not scores:
        return torch.empty(0), []
    device = scores[0].device
    for i, s in enumerate(scores):
        if s.device != device:
            raise ValueError(f"topk_thresholds: all scores must be on one device ({device}); #{i} is on {s.device}")
        if not s.is_floating_point():
            raise TypeError(f"topk_thresholds: scores must be floating point, #{i} is {s.dtype}")
        if s.numel() == 0:
            raise ValueError(f"topk_thresholds: score tensor #{i} is empty")
    flats = [s.detach().reshape(-1) for s in scores]
    ks = [sparsity_to_k(sp, f.numel()) for sp, f in zip(sparsities, flats)]
    backend = _backend.resolve("select", device.type, _SUPPORTED)
    no_counts = [None] * len(flats)
    if backend == "native" and not use_registered_op():
        from tamt import _native

        first = _first_histograms(scores)
        if first is not None:  # the fused score step did the select's first pass
            hist, hist_bits = first
            if check_nan:
                if hist_bits >= _NAN_FREE_TOP_BIN_BITS:
                    _raise_if_nan(hist[:, -1] > 0)  # NaN keys are the largest: the top bin counts them
                else:
                    _check_no_nan(flats)
            try:
                return _native_select(flats, ks, hist.to(device), hist_bits, want_counts)
            except RuntimeError:  # the select saw a histogram that does not match (scores changed via .data?)
                _KEY_HISTS.clear()
        elif want_counts:
            if check_nan:
                _check_no_nan(flats)
            return _native_select(flats, ks, None, _native.DEFAULT_HIST_BITS, want_counts)
    if check_nan:
        _check_no_nan(flats)
    return _segmented_kth_smallest(flats, ks, backend), no_counts


def _native_select(flats, ks, hist, hist_bits: int, want_counts: bool):
    from tamt import _native

    if want_counts:
        got = _native.segmented_kth_smallest_count_le(flats, ks, first_hist=hist, hist_bits=hist_bits)
        if got is not None:
            taus, counts = got
            return taus, [c if c >= 0 else None for c in counts.tolist()]
    return _native.segmented_kth_smallest(flats, ks, first_hist=hist, hist_bits=hist_bits), [None] * len(flats)


def topk_threshold(scores: Tensor, sparsity: float, *, check_nan: bool = True) -> Tensor:
    """The threshold of one score tensor as a 0-dim tensor (see module docs for ties)."""
    check_sparsity(sparsity)
    return topk_thresholds([scores], [sparsity], check_nan=check_nan)[0]
