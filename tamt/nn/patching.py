"""Swap a Hugging Face encoder's target matrices for masked modules, and back."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tamt import ops

from .families import resolve_targets, role_of
from .modules import MaskedEmbedding, MaskedLinear

MaskedModule = (MaskedLinear, MaskedEmbedding)


def base_model(model: nn.Module) -> nn.Module:
    """The encoder inside a task model (``model.base_model`` for HF models)."""
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) else model


def masked_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name relative to the base encoder, module) of every masked module, in model order."""
    return [(n, m) for n, m in base_model(model).named_modules() if isinstance(m, MaskedModule)]


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def patch_model(model: nn.Module, sparsity: float = 0.0, targets="tamt", *, mode: str = "fixed",
                init: str = "omp", t0: float = 0.01, seed: int | None = None, structure="unstructured",
                embedding_structure="unstructured") -> nn.Module:
    """Replace the TAMT target matrices of a HF BERT-family model in place.

    ``mode='fixed'`` starts with an all-ones mask (outputs identical to the
    dense model); ``mode='search'`` creates scores initialised by ``init``
    ('omp', 'random', 'magnitude') and sets exact thresholds for ``sparsity``.
    ``structure='N:M'`` (e.g. '2:4') makes every masked Linear N:M (sparsity
    1 - N/M; fixed mode starts from the OMP-N:M mask, search mode selects the
    N largest scores per group); the word embeddings stay unstructured at the
    same sparsity unless ``embedding_structure`` is N:M too (see
    :mod:`tamt.nn.structure`).  Returns the model.  Patching an already
    patched model raises.
    """
    from .structure import resolve_structures

    nm, enm, sparsity, emb_sparsity = resolve_structures(sparsity, structure, embedding_structure)
    roles = resolve_targets(targets)
    base = base_model(model)
    if masked_modules(model):
        raise RuntimeError("model is already patched by tamt (call tamt.unpatch_model first)")
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    found = []
    for name, module in list(base.named_modules()):
        role = role_of(name)
        if role is None or role not in roles:
            continue
        if role == "word_embeddings":
            if not isinstance(module, nn.Embedding):
                continue
            new = MaskedEmbedding.from_embedding(module, emb_sparsity, mode="fixed", role=role)
            new.set_structure(enm, name=name)
        else:
            if not isinstance(module, nn.Linear):
                continue
            new = MaskedLinear.from_linear(module, sparsity, mode="fixed", role=role)
            new.set_structure(nm, name=name)
        _set_submodule(base, name, new)
        found.append((name, new))
    if not found:
        raise ValueError(
            f"no TAMT target matrices ({', '.join(roles)}) found in {type(model).__name__}; supported are "
            "BERT-family encoders from transformers (BERT, RoBERTa, DistilBERT, ELECTRA, MiniLM and other "
            "BERT-named encoders)"
        )
    if mode == "search":
        for _, m in found:
            m.start_search(init=init, t0=t0, generator=generator)
    elif mode != "fixed":
        raise ValueError(f"mode must be 'fixed' or 'search', got {mode!r}")
    elif sparsity > 0 or emb_sparsity > 0:
        # Fixed mode at s > 0 without a given mask: the OMP mask (OMP-N:M for N:M modules) is the natural default.
        from tamt.ops.nm import magnitude_nm_mask

        from .scores import magnitude_mask

        for _, m in found:
            m.set_mask(magnitude_mask(m.weight, m.sparsity) if m.nm is None else magnitude_nm_mask(m.weight, *m.nm))
    return model


def update_thresholds(model: nn.Module) -> Tensor | None:
    """Exact top-k thresholds of every searching module in ONE segmented call (N:M modules need none)."""
    mods = [m for _, m in masked_modules(model) if m.mode == "search" and m.nm is None]
    if not mods:
        return None
    # the Parameters themselves: a histogram the fused score step left for them is found by identity
    taus = ops.topk_thresholds([m.scores for m in mods], [m.sparsity for m in mods])
    for m, tau in zip(mods, taus):
        m.threshold = tau.to(m.weight.device)
    return taus


def prepare_step_masks(model: nn.Module, tokens: int) -> int:
    """Build, once per optimizer step, the mask form every masked linear of
    ``model`` will read in its next forward / backward at ``tokens`` tokens
    per call (see ``tamt.ops.mask_forms``); call it after
    ``update_thresholds``. Optional: the ops build a stale form on first use
    anyway; this moves the work to a known place. Returns how many forms are
    ready."""
    from tamt.ops import _backend, mask_forms
    from tamt.ops.masked_linear import _SUPPORTED

    ready = 0
    for _, m in masked_modules(model):
        if not isinstance(m, MaskedLinear):
            continue
        backend = _backend.resolve("gemm", m.weight.device.type, _SUPPORTED)
        plan = mask_forms.plan_for(backend, m.weight.device, tokens, m.weight)
        kw = m._mask_kwargs()
        if "nm" in kw:  # N:M search: the fused GEMMs pick the group top-N from the scores, nothing to build
            continue
        ready += mask_forms.prepare(plan, m.weight, kw.get("scores"), kw.get("threshold"), kw.get("mask")) is not None
    return ready


def get_masks(model: nn.Module) -> dict[str, Tensor]:
    """{weight name relative to the base encoder: bool mask} of every masked module."""
    return {f"{n}.weight": m.current_mask() for n, m in masked_modules(model)}


def set_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Fix every masked module's mask from a {weight name: mask} dict (exact key set)."""
    mods = {f"{n}.weight": m for n, m in masked_modules(model)}
    missing = sorted(set(mods) - set(masks))
    extra = sorted(set(masks) - set(mods))
    if missing or extra:
        raise ValueError(
            "mask does not fit this model: "
            + (f"missing masks for {missing[:3]}{'...' if len(missing) > 3 else ''} " if missing else "")
            + (f"masks for matrices the model lacks {extra[:3]}{'...' if len(extra) > 3 else ''}" if extra else "")
            + " (is this mask for another model?)"
        )
    for name, m in mods.items():
        mask = masks[name]
        shape_ok = (mask.dim() == 1 and mask.dtype == torch.uint8) or tuple(mask.shape) == tuple(m.weight.shape)
        if not shape_ok:
            raise ValueError(
                f"mask {name!r} has shape {tuple(mask.shape)} but the model's weight has {tuple(m.weight.shape)} "
                "(is this mask for another model?)"
            )
        m.set_mask(mask)


def unpatch_model(model: nn.Module) -> nn.Module:
    """Bake every mask into plain ``nn.Linear`` / ``nn.Embedding`` modules, in place.

    The result is an ordinary HF model (``save_pretrained`` / ``from_pretrained``
    work); pruned weights are stored as zeros.  An MLM decoder that was tied
    to the word embeddings is re-tied to the baked (masked) table by HF's
    ``tie_weights`` when present.
    """
    base = base_model(model)
    for name, m in masked_modules(model):
        plain = m.to_linear() if isinstance(m, MaskedLinear) else m.to_embedding()
        plain.weight.requires_grad_(m.weight.requires_grad)
        _set_submodule(base, name, plain)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


@dataclass
class SparsityReport:
    rows: list[dict] = field(default_factory=list)
    total: int = 0
    pruned: int = 0

    @property
    def sparsity(self) -> float:
        return self.pruned / self.total if self.total else 0.0

    @property
    def pattern(self) -> str:
        """'unstructured', '2:4' (every matrix), or e.g. '2:4 + unstructured' (N:M Linears, plain embeddings)."""
        kinds = list(dict.fromkeys(r.get("structure", "unstructured") for r in self.rows))
        return " + ".join(sorted(kinds, key=lambda k: k == "unstructured")) if kinds else "unstructured"

    @property
    def groups_valid(self) -> bool | None:
        """True when every group of every N:M matrix keeps exactly N; None when nothing is N:M."""
        flags = [r["groups_valid"] for r in self.rows if r.get("groups_valid") is not None]
        return all(flags) if flags else None

    def as_dict(self) -> dict:
        return {"matrices": self.rows, "total": self.total, "pruned": self.pruned, "sparsity": self.sparsity,
                "pattern": self.pattern, "groups_valid": self.groups_valid}

    def __str__(self) -> str:
        width = max([len(r["name"]) for r in self.rows] + [6])
        lines = [f"{'matrix':<{width}}  {'role':<16} {'shape':>12} {'sparsity':>9}  structure"]
        for r in self.rows:
            shape = "x".join(map(str, r["shape"]))
            st = r.get("structure", "unstructured")
            if r.get("groups_valid") is not None:
                st += " (all groups valid)" if r["groups_valid"] else f" ({r['invalid_groups']} INVALID groups)"
            lines.append(f"{r['name']:<{width}}  {r['role']:<16} {shape:>12} {r['sparsity']:>9.4f}  {st}")
        lines.append(f"{'overall':<{width}}  {'':<16} {self.total:>12,d} {self.sparsity:>9.4f}  {self.pattern}")
        return "\n".join(lines)


def sparsity_report(model_or_masks, structures: dict | None = None) -> SparsityReport:
    """Per-matrix and overall sparsity and structure of a patched model, a ``MaskFile`` or a {name: mask} dict.

    N:M matrices (the model's N:M modules, a mask file's ``structure``
    metadata, or ``structures`` = {name: "N:M"}) also report whether every
    group keeps exactly N (``groups_valid``, ``invalid_groups``).
    """
    from tamt.ops.nm import nm_violations, parse_nm

    report = SparsityReport()
    if isinstance(model_or_masks, nn.Module):
        items = [(f"{n}.weight", m.role, m.current_mask(), m.nm) for n, m in masked_modules(model_or_masks)]
    else:
        masks = model_or_masks
        if hasattr(masks, "masks") and hasattr(masks, "metadata"):  # a tamt.masks.MaskFile
            structures = structures if structures is not None else masks.metadata.get("structure")
            masks = masks.masks
        structures = dict(structures or {})
        items = [(n, role_of(n.rsplit(".", 1)[0]) or "?", m, parse_nm(structures.get(n))) for n, m in masks.items()]
    for name, role, mask, nm in items:
        n = mask.numel()
        pruned = n - int(torch.count_nonzero(mask))  # (a bool .sum() is 4x slower on CPU)
        row = {"name": name, "role": role, "shape": list(mask.shape), "numel": n, "pruned": pruned,
               "sparsity": pruned / n, "structure": "unstructured" if nm is None else f"{nm[0]}:{nm[1]}",
               "groups_valid": None}
        if nm is not None:
            if mask.dim() == 2 and mask.shape[-1] % nm[1] == 0:
                bad, _, _ = nm_violations(mask, *nm)
            else:
                bad = -1  # cannot hold groups of M at all
            row.update(groups_valid=bad == 0, invalid_groups=bad)
        report.rows.append(row)
        report.total += n
        report.pruned += pruned
    return report
