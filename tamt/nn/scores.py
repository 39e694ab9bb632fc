"""Score initialisation for mask search (TAMT_SPEC: 'OMP init', 'random init').

OMP init: S = 2 * t0 where one-shot magnitude pruning keeps the weight and 0
where it prunes, so the first exact top-k threshold (the k-th smallest score
is 0) reproduces the OMP mask exactly.  Random init: the same two levels on a
uniformly random mask.  ``magnitude``: S = |W| (movement-pruning style).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from tamt.ops._common import sparsity_to_k

SCORE_INITS = ("omp", "random", "magnitude")


def keep_largest(values: Tensor, sparsity: float) -> Tensor:
    """Keep exactly the n - floor(s*n) largest values (ties broken by topk, as ``l1_unstructured`` does).

    A threshold (``values > tau``) would prune *every* entry tied at tau, e.g.
    all-zero padding rows of an embedding; selection by index is exact.
    """
    flat = values.detach().reshape(-1)
    n = flat.numel()
    k = sparsity_to_k(sparsity, n)
    keep = torch.zeros(n, dtype=torch.bool, device=flat.device)
    if n - k > 0:
        keep[torch.topk(flat, n - k, largest=True, sorted=False).indices] = True
    return keep.view_as(values)


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """OMP: keep all but the floor(s*n) smallest |W|, exactly."""
    return keep_largest(weight.detach().abs(), sparsity)


def random_mask(shape, sparsity: float, *, generator: torch.Generator | None = None, device=None) -> Tensor:
    """Exactly floor(s*n) zeros at uniformly random positions (``generator`` is a CPU generator)."""
    shape = tuple(shape)
    n = math.prod(shape)
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=generator)[: sparsity_to_k(sparsity, n)]] = False
    return keep.view(shape).to(device) if device is not None else keep.view(shape)


def init_scores(
    weight: Tensor,
    sparsity: float,
    method: str = "omp",
    *,
    t0: float = 0.01,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    if method == "omp":
        keep = magnitude_mask(weight, sparsity)
    elif method == "random":
        keep = random_mask(weight.shape, sparsity, generator=generator, device=weight.device)
    elif method == "magnitude":
        return weight.detach().abs().to(dtype).clone()
    else:
        raise ValueError(f"unknown score init {method!r}; choose one of {', '.join(SCORE_INITS)}")
    return keep.to(dtype) * (2.0 * t0)
