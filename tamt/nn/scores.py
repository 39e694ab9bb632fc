"""Score initialisation for mask search (TAMT_SPEC: 'OMP init', 'random init').

OMP init: S = 2 * t0 where one-shot magnitude pruning keeps the weight and 0
where it prunes, so the first exact top-k threshold (the k-th smallest score
is 0) reproduces the OMP mask exactly.  Random init: the same two levels on a
uniformly random mask.  ``magnitude``: S = |W| (movement-pruning style).
"""
from __future__ import annotations

import torch
from torch import Tensor

from tamt import ops

SCORE_INITS = ("omp", "random", "magnitude")


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """OMP: keep all but the floor(s*n) smallest |W| (l1_unstructured semantics)."""
    mag = weight.detach().abs().float()
    return mag > ops.topk_threshold(mag, sparsity)


def random_mask(shape, sparsity: float, *, generator: torch.Generator | None = None, device=None) -> Tensor:
    """Exactly floor(s*n) zeros at uniformly random positions (ties have probability ~0)."""
    noise = torch.rand(shape, generator=generator, device=device if generator is None else generator.device)
    if device is not None:
        noise = noise.to(device)
    return noise > ops.topk_threshold(noise, sparsity)


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
