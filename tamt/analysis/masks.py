"""Mask similarity and distance (TAMT_SPEC "Mask analysis").

For two binary masks A, B over the same matrices (True = weight kept):
  overlap   = |A and B| / |A|   (the paper's "similarity": share of A's kept weights that B keeps too;
                                 symmetric when both have the same sparsity)
  jaccard   = |A and B| / |A or B|
  distance  = fraction of positions where A and B differ (normalised Hamming distance)
per matrix and overall (pooled over all matrices, i.e. weighted by size).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


def _as_masks(m) -> tuple[dict[str, torch.Tensor], str]:
    from tamt.masks import MaskFile, load_mask

    if isinstance(m, (str, os.PathLike)):
        name = Path(m).stem
        m = load_mask(m)
        return m.masks, name
    if isinstance(m, MaskFile):
        return m.masks, str(m.metadata.get("method", "mask"))
    if isinstance(m, dict):
        return m, "mask"
    if isinstance(m, torch.nn.Module):
        from tamt.nn import get_masks

        return get_masks(m), type(m).__name__
    raise TypeError(f"not a mask: {type(m).__name__} (pass a path, MaskFile, dict or patched model)")


def _counts(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, int, int, int]:
    a, b = a.bool().reshape(-1), b.bool().reshape(-1)
    both = int((a & b).sum())
    either = int((a | b).sum())
    return both, either, int(a.sum()), int(b.sum()), a.numel()


def _stats(both, either, ka, kb, n) -> dict[str, float]:
    return {"overlap": both / ka if ka else float("nan"), "jaccard": both / either if either else 1.0,
            "distance": (either - both) / n if n else 0.0, "kept_a": ka / n if n else 0.0, "kept_b": kb / n if n else 0.0}


def compare_pair(a, b) -> dict:
    """{"overall": stats, "matrices": {name: stats}} for two masks over the same matrices."""
    ma, _ = _as_masks(a)
    mb, _ = _as_masks(b)
    if set(ma) != set(mb):
        diff = sorted(set(ma) ^ set(mb))
        raise ValueError(f"the masks cover different matrices (e.g. {diff[:3]}): not masks of the same model")
    per, tot = {}, np.zeros(5, dtype=np.int64)
    for name in ma:
        if ma[name].shape != mb[name].shape:
            raise ValueError(f"mask {name!r}: shapes {tuple(ma[name].shape)} and {tuple(mb[name].shape)} differ")
        c = _counts(ma[name], mb[name])
        per[name] = _stats(*c)
        tot += np.asarray(c)
    return {"overall": _stats(*tot.tolist()), "matrices": per}


@dataclass
class MaskComparison:
    """Pairwise comparison of n masks: n x n matrices of overall overlap / jaccard / distance."""

    names: list[str]
    overlap: np.ndarray
    jaccard: np.ndarray
    distance: np.ndarray
    pairs: dict[tuple[str, str], dict] = field(default_factory=dict)

    def table(self, metric: str = "jaccard") -> str:
        mat = getattr(self, metric)
        w = max(8, *(len(n) for n in self.names))
        lines = [f"{metric}".ljust(w) + "".join(n.rjust(w + 2) for n in self.names)]
        for i, n in enumerate(self.names):
            lines.append(n.ljust(w) + "".join(f"{mat[i, j]:.4f}".rjust(w + 2) for j in range(len(self.names))))
        return "\n".join(lines)

    def matrix_table(self, a: str, b: str) -> str:
        """Per-matrix overlap / jaccard / distance for one pair."""
        d = self.pairs[(a, b)]
        w = max(len(k) for k in d["matrices"]) if d["matrices"] else 10
        lines = [f"{'matrix':<{w}}  {'overlap':>8} {'jaccard':>8} {'distance':>8}"]
        for name, s in list(d["matrices"].items()) + [("overall", d["overall"])]:
            lines.append(f"{name:<{w}}  {s['overlap']:>8.4f} {s['jaccard']:>8.4f} {s['distance']:>8.4f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"names": self.names, "overlap": self.overlap.tolist(), "jaccard": self.jaccard.tolist(),
                "distance": self.distance.tolist(),
                "pairs": [{"a": a, "b": b, **d} for (a, b), d in self.pairs.items()]}


def compare_masks(masks, names: list[str] | None = None) -> MaskComparison:
    """Compare every pair of ``masks`` (paths, MaskFiles, dicts or patched models)."""
    loaded = [_as_masks(m) for m in masks]
    if len(loaded) < 2:
        raise ValueError("compare_masks needs at least two masks")
    if names is None:
        names = [n for _, n in loaded]
        if len(set(names)) < len(names):
            names = [f"{n}#{i}" for i, n in enumerate(names)]
    k = len(loaded)
    ov, jc, ds = np.eye(k), np.eye(k), np.zeros((k, k))
    pairs = {}
    for i in range(k):
        for j in range(k):
            if i == j:
                continue
            d = compare_pair(loaded[i][0], loaded[j][0])
            pairs[(names[i], names[j])] = d
            ov[i, j], jc[i, j], ds[i, j] = d["overall"]["overlap"], d["overall"]["jaccard"], d["overall"]["distance"]
    return MaskComparison(list(names), ov, jc, ds, pairs)


def omp_masks_like(model, mask) -> dict[str, torch.Tensor]:
    """The OMP mask of ``model``'s base weights at each matrix's own sparsity in ``mask``.

    N:M matrices of a mask file (its ``structure`` metadata) are compared with OMP-N:M (the N largest |W| of
    every group), the one-shot mask of the same structure.
    """
    from tamt.masks import load_mask
    from tamt.nn import base_model
    from tamt.nn.scores import keep_largest
    from tamt.ops.nm import magnitude_nm_mask, parse_nm

    if isinstance(mask, (str, os.PathLike)):
        mask = load_mask(mask)
    structures = dict(getattr(mask, "structures", {}) or {})
    masks, _ = _as_masks(mask)
    base = base_model(model)
    out = {}
    for name, m in masks.items():
        nm = parse_nm(structures.get(name))
        if nm is not None:
            out[name] = magnitude_nm_mask(base.get_parameter(name), *nm)
            continue
        mag = base.get_parameter(name).detach().abs().float()
        k = int((~m.bool()).sum())  # prune exactly as many as the mask does: the k smallest |W|
        out[name] = keep_largest(mag, k / mag.numel())
    return out


def distance_from_omp(model, mask) -> dict:
    """Distance (and overlap) of ``mask`` from the OMP mask at the same per-matrix sparsity (paper, Fig. 5)."""
    if isinstance(mask, (str, os.PathLike)):
        from tamt.masks import load_mask

        mask = load_mask(mask)
    masks, _ = _as_masks(mask)
    return compare_pair(masks, omp_masks_like(model, mask))
