"""Mask structure of the masked modules: unstructured, or N:M (semi-structured).

``structure="unstructured"`` (the paper's setting): any floor(s*n) weights of a
matrix may be pruned.  ``structure="N:M"`` ("2:4" by default, also "1:4",
"4:8", ...): every group of M consecutive weights along the input dimension
of a row keeps exactly N, so the sparsity is 1 - N/M.  2:4 is the pattern
NVIDIA sparse tensor cores run about 2x faster (see :mod:`tamt.export`).

Which matrices get the structure: every masked ``nn.Linear`` (Q, K, V,
attention output, intermediate, output, pooler).  The word embeddings are a
lookup, not a GEMM, so an N:M pattern buys them no speed; they stay
unstructured at the same sparsity 1 - N/M unless ``embedding_structure`` asks
for N:M too (then their groups run along the hidden dimension of each row).

On disk a mask file records ``structure`` = {weight name: "N:M"} for its N:M
matrices (metadata), and loading validates every claimed group.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tamt.ops.nm import check_groups, is_nm, magnitude_nm_mask, nm_name, nm_violations, parse_nm, random_nm_mask

__all__ = [
    "parse_structure", "structure_name", "structure_sparsity", "default_sparsity", "resolve_structures",
    "set_structures", "structure_map", "check_structured_mask", "nm_initial_scores", "run_label",
]

parse_structure = parse_nm
structure_name = nm_name


def structure_sparsity(structure) -> float | None:
    """1 - N/M of an N:M structure; None for unstructured."""
    nm = parse_nm(structure)
    return None if nm is None else 1.0 - nm[0] / nm[1]


def default_sparsity(structure):
    """The sparsity a search takes when the user gives none: 1 - N/M; unstructured needs one."""
    s = structure_sparsity(structure)
    if s is None:
        raise ValueError("give a sparsity in [0, 1), e.g. 0.5 (or an N:M structure such as '2:4', which fixes it "
                         "at 1 - N/M)")
    return s


def resolve_structures(sparsity: float, structure, embedding_structure="unstructured"):
    """(linear N:M or None, embedding N:M or None, linear sparsity, embedding sparsity) for one search.

    An N:M structure fixes the sparsity of its matrices at 1 - N/M; a
    different explicit sparsity is a contradiction and raises.  ``sparsity``
    0 means "not given".  Unstructured word embeddings take the linear
    layers' sparsity.
    """
    nm, enm = parse_nm(structure), parse_nm(embedding_structure)
    s = float(sparsity)
    if nm is not None:
        want = 1.0 - nm[0] / nm[1]
        if s and abs(s - want) > 1e-9:
            raise ValueError(f"structure {nm_name(nm)} keeps {nm[0]} of every {nm[1]} weights, i.e. sparsity "
                             f"{want:g}; sparsity {s:g} contradicts it (give {want:g} or leave it out)")
        s = want
    es = s if enm is None else 1.0 - enm[0] / enm[1]
    return nm, enm, s, es


def set_structures(model: nn.Module, structure="unstructured", embedding_structure="unstructured") -> None:
    """Give every masked Linear ``structure`` and the word embeddings ``embedding_structure`` (bookkeeping
    only: the masks are set afterwards, e.g. by a search strategy)."""
    from .modules import MaskedEmbedding
    from .patching import masked_modules

    nm, enm = parse_nm(structure), parse_nm(embedding_structure)
    for name, m in masked_modules(model):
        m.set_structure(enm if isinstance(m, MaskedEmbedding) else nm, name=name)


def structure_map(model: nn.Module) -> dict[str, str]:
    """{weight name: "N:M"} of the N:M masked modules of a patched model (unstructured ones omitted)."""
    from .patching import masked_modules

    return {f"{n}.weight": nm_name(m.nm) for n, m in masked_modules(model) if getattr(m, "nm", None) is not None}


def check_structured_mask(name: str, mask: Tensor, structure, *, source: str = "mask") -> None:
    """Raise a one-line ValueError unless ``mask`` follows ``structure`` in every group."""
    nm = parse_nm(structure)
    if nm is None:
        return
    n, m = nm
    if mask.dim() != 2 or mask.shape[-1] % m:
        raise ValueError(f"{source}: {name!r} claims structure {n}:{m} but its shape {tuple(mask.shape)} cannot "
                         f"hold groups of {m}")
    bad, total, first = nm_violations(mask, n, m)
    if bad:
        r, c = first
        raise ValueError(
            f"{source}: {name!r} claims structure {n}:{m} but {bad} of its {total} groups do not keep exactly {n} "
            f"(first: row {r}, columns {c}..{c + m - 1}, keeps {int(mask[r, c:c + m].sum())}); the mask was "
            "edited or damaged: recompute it, or save it without the structure claim"
        )


def nm_initial_scores(weight: Tensor, nm, init: str, *, t0: float = 0.01,
                      generator: torch.Generator | None = None) -> Tensor:
    """Search scores whose group top-N is the N:M start mask: OMP-N:M or random N:M at 2*t0, 0 elsewhere.

    (``omp-rank`` and ``magnitude`` need nothing N:M-specific: scores graded by
    |W| already select the N largest |W| of every group.)
    """
    from .scores import init_scores

    n, m = parse_nm(nm)
    check_groups(weight.shape, m)
    if init == "omp":
        keep = magnitude_nm_mask(weight, n, m)
    elif init == "random":
        keep = random_nm_mask(weight.shape, n, m, generator=generator, device=weight.device)
    else:
        return init_scores(weight, 1.0 - n / m, init, t0=t0, generator=generator)
    return keep.float() * (2.0 * t0)


def run_label(method: str, structure="unstructured", embedding_structure="unstructured") -> str:
    """Method name plus structure for file and run names: 'omp', 'omp-2of4', 'tamt-kd-2of4-emb2of4'."""
    nm, enm = parse_nm(structure), parse_nm(embedding_structure)
    label = method
    if nm is not None:
        label += f"-{nm[0]}of{nm[1]}"
    if enm is not None:
        label += f"-emb{enm[0]}of{enm[1]}"
    return label


def valid_groups(mask: Tensor, structure) -> bool | None:
    """Whether every group of an N:M mask keeps N (None for unstructured)."""
    nm = parse_nm(structure)
    return None if nm is None else is_nm(mask, *nm)
