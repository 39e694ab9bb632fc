"""N:M (semi-structured) masks: exactly N kept in every group of M consecutive weights of a row.

A weight matrix [out, in] is cut into groups of M consecutive entries along
the input dimension (``in % M == 0``); a mask is N:M when every group keeps
exactly N.  2:4 is what NVIDIA sparse tensor cores (Ampere and later) run
about 2x faster (``torch.sparse.to_sparse_semi_structured``).

``nm_mask(scores, n, m)`` keeps, per group, the N largest scores.  Ties are
broken by position (the earlier entry wins), so exactly N are kept whatever
the values: entry i of a group is kept when fewer than N entries j of the
group have ``s_j > s_i`` or (``s_j == s_i`` and ``j < i``).  This rank rule is
the contract of every implementation (this reference, the N:M mask mode of
the Triton GEMMs in ``kernels/``); it needs no sort and no threshold.  NaN
scores are not ranked meaningfully (the search stops on NaN scores before
they reach a mask).
"""
from __future__ import annotations

import re

import torch
from torch import Tensor

_NM_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def check_nm(n: int, m: int) -> tuple[int, int]:
    """Validate an N:M pattern: 1 <= N < M (M <= 64)."""
    try:
        n, m = int(n), int(m)
    except (TypeError, ValueError):
        raise TypeError(f"an N:M pattern needs two integers, got {n!r}:{m!r}") from None
    if not (1 <= n < m <= 64):
        raise ValueError(f"N:M pattern {n}:{m} is invalid: need 1 <= N < M <= 64 (e.g. 2:4, 1:4, 4:8)")
    return n, m


def parse_nm(pattern) -> tuple[int, int] | None:
    """'2:4' / (2, 4) -> (2, 4); None / 'unstructured' / 'dense' -> None."""
    if pattern is None:
        return None
    if isinstance(pattern, (tuple, list)) and len(pattern) == 2:
        return check_nm(*pattern)
    if isinstance(pattern, str):
        s = pattern.strip().lower()
        if s in ("", "unstructured", "none", "dense"):
            return None
        hit = _NM_RE.match(s)
        if hit:
            return check_nm(int(hit.group(1)), int(hit.group(2)))
        if s == "n:m":  # the family name alone: its default member
            return (2, 4)
    raise ValueError(f"unknown mask structure {pattern!r}; use 'unstructured' or 'N:M' such as '2:4', '1:4', '4:8'")


def nm_name(nm: tuple[int, int] | None) -> str:
    return "unstructured" if nm is None else f"{nm[0]}:{nm[1]}"


def check_groups(shape, m: int, what: str = "weight") -> None:
    """Groups of M run along the last (input) dimension: it must be a multiple of M."""
    if len(shape) != 2:
        raise ValueError(f"N:M masks need a 2-D {what}, got shape {tuple(shape)}")
    if shape[-1] % m:
        raise ValueError(
            f"{what} of shape {tuple(shape)}: its input dimension {shape[-1]} is not divisible by M={m}, so it "
            f"cannot hold an N:M mask with groups of {m}; use structure 'unstructured' for it (or another M)"
        )


def _groups(t: Tensor, m: int) -> Tensor:
    check_groups(t.shape, m, "tensor")
    return t.reshape(-1, m)


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Bool mask of ``scores``' shape keeping the N largest of every group of M along the last dim.

    Plain PyTorch reference (and the torch backend): every pair (i < j) of a
    group is compared once; the loser's rank goes up (on a tie the earlier
    entry i wins), and the N entries of rank < N are kept.  M(M-1)/2 compares
    on contiguous columns (6 for 2:4), no sort, no threshold.  float16/bf16
    scores are compared as float32 (same order).
    """
    n, m = check_nm(n, m)
    s = _groups(scores.detach(), m)
    if s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()
    cols = s.t().contiguous()  # [M, groups]: entry j of every group is one contiguous row
    rank = torch.zeros(cols.shape, dtype=torch.uint8, device=s.device)
    for i in range(m):
        for j in range(i + 1, m):
            i_wins = cols[i] >= cols[j]
            rank[j] += i_wins
            rank[i] += ~i_wins
    return (rank < n).t().reshape(scores.shape)


def nm_group_counts(mask: Tensor, m: int) -> Tensor:
    """Kept entries per group (int32, shape [rows, in // M])."""
    check_groups(mask.shape, m, "mask")
    return mask.reshape(mask.shape[0], -1, m).sum(-1, dtype=torch.int32)


def nm_violations(mask: Tensor, n: int, m: int) -> tuple[int, int, tuple[int, int] | None]:
    """(invalid groups, groups, (row, first column) of the first invalid group or None)."""
    n, m = check_nm(n, m)
    counts = nm_group_counts(mask, m)
    bad = counts != n
    nbad = int(torch.count_nonzero(bad))
    first = None
    if nbad:
        r, g = (int(v) for v in bad.nonzero()[0])
        first = (r, g * m)
    return nbad, counts.numel(), first


def is_nm(mask: Tensor, n: int, m: int) -> bool:
    """Whether every group of M keeps exactly N (False when the shape cannot hold groups of M)."""
    if mask.dim() != 2 or mask.shape[-1] % m:
        return False
    return nm_violations(mask, n, m)[0] == 0


def random_nm_mask(shape, n: int, m: int, *, generator: torch.Generator | None = None, device=None) -> Tensor:
    """N kept at uniformly random positions of every group (``generator``: a CPU generator)."""
    n, m = check_nm(n, m)
    check_groups(shape, m)
    u = torch.rand(tuple(shape), generator=generator)
    out = nm_mask(u, n, m)
    return out.to(device) if device is not None else out


def magnitude_nm_mask(weight: Tensor, n: int, m: int) -> Tensor:
    """OMP-N:M: the N largest |W| of every group (= magnitude per row, since a group lies in one row)."""
    return nm_mask(weight.detach().abs(), n, m)


def nm_search_args(weight: Tensor, scores, threshold, mask, nm, *, op: str) -> list[int]:
    """Validate the N:M search form of a masked op (``scores=`` and ``nm=(N, M)``, no threshold, no mask)."""
    n, m = check_nm(*nm) if isinstance(nm, (tuple, list)) and len(nm) == 2 else (None, None)
    if n is None:
        raise TypeError(f"{op}: nm must be a pair (N, M), e.g. (2, 4); got {nm!r}")
    if scores is None or mask is not None:
        raise ValueError(f"{op}: nm=(N, M) selects the N largest scores per group: give scores= (and no mask=)")
    if threshold is not None:
        raise ValueError(f"{op}: an N:M mask has no threshold (the group top-N replaces it); drop threshold=")
    if scores.shape != weight.shape:
        raise ValueError(f"{op}: scores have shape {tuple(scores.shape)} but the weight has {tuple(weight.shape)}")
    check_groups(weight.shape, m)
    return [n, m]


class _NMIndicator(torch.autograd.Function):
    """+1 where the group top-N keeps, -1 elsewhere; the gradient passes through unchanged (STE)."""

    @staticmethod
    def forward(ctx, scores, n, m):
        keep = nm_mask(scores, n, m)
        one = torch.ones((), dtype=scores.dtype, device=scores.device)
        return torch.where(keep, one, -one)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def nm_indicator(scores: Tensor, n: int, m: int) -> Tensor:
    """Scores -> a +-1 tensor whose ``> 0`` is ``nm_mask(scores, n, m)``, with identity gradient.

    Lets an op that only knows threshold masks (``masked_embedding``) run an
    N:M search: d scores = d indicator, the straight-through rule.
    """
    return _NMIndicator.apply(scores, n, m)
