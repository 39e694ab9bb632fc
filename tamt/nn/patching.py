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
                init: str = "omp", t0: float = 0.01, seed: int | None = None) -> nn.Module:
    """Replace the TAMT target matrices of a HF BERT-family model in place.

    ``mode='fixed'`` starts with an all-ones mask (outputs identical to the
    dense model); ``mode='search'`` creates scores initialised by ``init``
    ('omp', 'random', 'magnitude') and sets exact thresholds for ``sparsity``.
    Returns the model.  Patching an already patched model raises.
    """
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
            new = MaskedEmbedding.from_embedding(module, sparsity, mode="fixed", role=role)
        else:
            if not isinstance(module, nn.Linear):
                continue
            new = MaskedLinear.from_linear(module, sparsity, mode="fixed", role=role)
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
    elif sparsity > 0:
        # Fixed mode at s > 0 without a given mask: the OMP mask is the natural default.
        from .scores import magnitude_mask

        for _, m in found:
            m.set_mask(magnitude_mask(m.weight, sparsity))
    return model


def update_thresholds(model: nn.Module) -> Tensor | None:
    """Exact top-k thresholds of every searching module in ONE segmented call."""
    mods = [m for _, m in masked_modules(model) if m.mode == "search"]
    if not mods:
        return None
    # the Parameters themselves: a histogram the fused score step left for them is found by identity
    taus = ops.topk_thresholds([m.scores for m in mods], [m.sparsity for m in mods])
    for m, tau in zip(mods, taus):
        m.threshold = tau.to(m.weight.device)
    return taus


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

    def as_dict(self) -> dict:
        return {"matrices": self.rows, "total": self.total, "pruned": self.pruned, "sparsity": self.sparsity}

    def __str__(self) -> str:
        width = max([len(r["name"]) for r in self.rows] + [6])
        lines = [f"{'matrix':<{width}}  {'role':<16} {'shape':>12} {'sparsity':>9}"]
        for r in self.rows:
            shape = "x".join(map(str, r["shape"]))
            lines.append(f"{r['name']:<{width}}  {r['role']:<16} {shape:>12} {r['sparsity']:>9.4f}")
        lines.append(f"{'overall':<{width}}  {'':<16} {self.total:>12,d} {self.sparsity:>9.4f}")
        return "\n".join(lines)


def sparsity_report(model_or_masks) -> SparsityReport:
    """Per-matrix and overall sparsity of a patched model or a {name: mask} dict."""
    report = SparsityReport()
    if isinstance(model_or_masks, nn.Module):
        items = [(f"{n}.weight", m.role, m.current_mask()) for n, m in masked_modules(model_or_masks)]
    else:
        items = [(n, role_of(n.rsplit(".", 1)[0]) or "?", m) for n, m in model_or_masks.items()]
    for name, role, mask in items:
        n = mask.numel()
        pruned = n - int(torch.count_nonzero(mask))  # (a bool .sum() is 4x slower on CPU)
        report.rows.append({"name": name, "role": role, "shape": list(mask.shape), "numel": n,
                            "pruned": pruned, "sparsity": pruned / n})
        report.total += n
        report.pruned += pruned
    return report
