"""One-shot masks (no training): random, OMP, magnitude per row, Wanda; unstructured or N:M.

==============  =============================================  ===============================================
method          unstructured (floor(s*n) pruned per matrix)     N:M (N kept per group of M along a row)
==============  =============================================  ===============================================
random          uniformly random positions                      N uniformly random per group
omp             smallest |W| of the whole matrix                N largest |W| per group
magnitude-row   smallest |W| of each output row                 N largest |W| per group (= omp: a group lies in
                                                                one row)
wanda           smallest |W_ij| * ||X_j||_2 of each output row  N largest |W_ij| * ||X_j||_2 per group
==============  =============================================  ===============================================

"Row" is a row of the weight [out, in], i.e. one output; for the word
embeddings [vocab, hidden] it is one token's vector.  Wanda has no input
activations for the embeddings (a lookup): it prunes them by magnitude like
OMP, so Wanda and OMP differ only in the Linear layers (see
:mod:`tamt.pruning.wanda`).

Per-row methods still prune exactly floor(s*n) entries of a matrix (every
other method does): each row prunes floor(s*in); when s*in is not whole, the
remaining few entries go to the rows whose next candidate is smallest.
"""
from __future__ import annotations

import torch
from torch import Tensor

from tamt.nn import masked_modules
from tamt.nn.modules import MaskedEmbedding
from tamt.nn.scores import keep_largest, random_mask
from tamt.ops._common import sparsity_to_k
from tamt.ops.nm import magnitude_nm_mask, nm_mask, random_nm_mask

ONE_SHOT = ("random", "omp", "magnitude-row", "wanda")


def rowwise_keep(metric: Tensor, sparsity: float) -> Tensor:
    """Keep-mask pruning the smallest ``metric`` entries of each row; exactly floor(s*n) in total.

    Every row prunes floor(s * cols) entries (ties: the earlier column goes
    first, a stable sort as in Wanda's code); the k - rows*floor(s*cols)
    entries left over are pruned in the rows whose next candidate is the
    smallest.
    """
    rows, cols = metric.shape
    k = sparsity_to_k(sparsity, rows * cols)
    base, extra = divmod(k, rows)
    metric = metric.detach().float()
    order = torch.sort(metric, dim=1, stable=True).indices  # ascending: first ones are pruned
    count = torch.full((rows,), base, dtype=torch.long, device=metric.device)
    if extra:
        nxt = metric.gather(1, order[:, base:base + 1]).squeeze(1)
        count[torch.sort(nxt, stable=True).indices[:extra]] += 1
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(cols, device=metric.device).expand(rows, cols).contiguous())
    return rank >= count[:, None]


def module_sparsity(module, default: float) -> float:
    return 1.0 - module.nm[0] / module.nm[1] if module.nm is not None else default


def magnitude_keep(module, sparsity: float, *, per_row: bool) -> Tensor:
    """OMP (per matrix) or magnitude per row, N:M-aware."""
    w = module.weight.detach()
    if module.nm is not None:
        return magnitude_nm_mask(w, *module.nm)
    return rowwise_keep(w.abs(), sparsity) if per_row else keep_largest(w.abs(), sparsity)


def metric_keep(module, metric: Tensor, sparsity: float) -> Tensor:
    """Keep the largest ``metric`` per row (unstructured) or per group (N:M)."""
    if module.nm is not None:
        return nm_mask(metric, *module.nm)
    return rowwise_keep(metric, sparsity)


def one_shot_masks(searcher, method: str, generator: torch.Generator) -> dict[str, Tensor]:
    """{weight name: bool mask} of ``method`` for every masked module of ``searcher.model``."""
    if method not in ONE_SHOT:
        raise ValueError(f"unknown one-shot method {method!r}; choose one of {', '.join(ONE_SHOT)}")
    if method == "wanda":
        from .wanda import wanda_masks

        return wanda_masks(searcher.model, searcher.ctx, searcher.sparsity,
                           blocks=searcher.config.calibration_blocks, batch_size=searcher.config.batch_size,
                           seed=searcher.config.seed, device=searcher.device)
    masks = {}
    for name, m in masked_modules(searcher.model):
        s = module_sparsity(m, searcher.sparsity)
        if method == "random":
            shape = tuple(m.weight.shape)
            keep = random_nm_mask(shape, *m.nm, generator=generator) if m.nm is not None else \
                random_mask(shape, s, generator=generator)
        else:
            keep = magnitude_keep(m, s, per_row=method == "magnitude-row")
        masks[f"{name}.weight"] = keep
    return masks


def is_lookup(module) -> bool:
    return isinstance(module, MaskedEmbedding)
