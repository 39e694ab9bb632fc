"""Wanda: pruning by weights and activations (Sun, Liu, Bair, Kolter 2023), for BERT-family encoders.

The importance of W_ij is |W_ij| * ||X_j||_2, where ||X_j|| is the L2 norm of
input feature j over the tokens of a small calibration set; the comparison
is per output row (unstructured: prune the s fraction with the smallest
score in every row) or per group of M (N:M: keep the N largest).  No weight
update, no training.

As in the authors' code the layers are pruned in order: the norms for the
Linears of encoder layer l are collected with layers < l already pruned
(and layer l itself dense), so each layer sees the inputs the pruned network
will give it.  That costs one forward over the calibration set per layer
(plus one for the pooler), cheap at calibration size.

Calibration: ``blocks`` corpus training blocks drawn with ``seed`` (so
Wanda's masks vary with the seed through the sample), padding tokens
excluded from the norms.

The word embeddings are a lookup with no input activations to weigh: Wanda
prunes them by magnitude, exactly as OMP does (or OMP-N:M when they are
N:M), before the calibration passes, so every Linear is calibrated on the
pruned embeddings.  A Linear that saw no input at all (e.g. a pooler the
forward never calls) falls back to magnitude with a warning.
"""
from __future__ import annotations

import logging
import re
import warnings

import torch
from torch import Tensor

from tamt.nn import base_model, masked_modules

log = logging.getLogger(__name__)

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers)\.(\d+)\.")


def _stage(name: str) -> int:
    """Pruning order: embeddings (-1), encoder layer index, then everything else (the pooler)."""
    hit = _LAYER.search(name)
    return int(hit.group(1)) if hit else (-1 if "embeddings" in name else 10**6)


def calibration_indices(n_train: int, blocks: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(7_919 * seed + 17)
    return torch.randperm(n_train, generator=g)[: min(blocks, n_train)]


class _NormCollector:
    """Forward pre-hooks summing x_j^2 over the (non-padding) tokens reaching each module."""

    def __init__(self, modules: dict):
        self.sq = {name: None for name in modules}
        self.attention_mask = None
        self.handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, args):
            x = args[0].detach().float()
            am = self.attention_mask
            if am is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(am.shape):
                x = x * am.unsqueeze(-1).to(x.dtype)
            s = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
            self.sq[name] = s if self.sq[name] is None else self.sq[name] + s
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def _forward_all(model, ctx, idx: Tensor, batch_size: int, device, collector: _NormCollector) -> None:
    enc = base_model(model)
    for start in range(0, len(idx), batch_size):
        b = ctx.batch("train", idx[start:start + batch_size])
        am = b["attention_mask"].to(device)
        collector.attention_mask = am
        enc(input_ids=b["input_ids"].to(device), attention_mask=am)


def wanda_scores(weight: Tensor, sq_norm: Tensor) -> Tensor:
    """|W_ij| * ||X_j||_2 (``sq_norm``: the sum of squares of input feature j)."""
    return weight.detach().abs().float() * sq_norm.to(weight.device).float().sqrt().unsqueeze(0)


@torch.no_grad()
def wanda_masks(model, ctx, sparsity: float, *, blocks: int = 64, batch_size: int = 16, seed: int = 0,
                device=None) -> dict[str, Tensor]:
    """Wanda masks for every masked module of a patched (fixed-mode) ``model``; sets them on the model too.

    N:M modules (``module.nm``) keep the N largest scores per group; the
    others prune ``sparsity`` per row.  Returns {weight name: bool mask}.
    """
    from .one_shot import magnitude_keep, metric_keep, module_sparsity

    device = device or model.get_input_embeddings().weight.device
    mods = masked_modules(model)
    if not mods:
        raise ValueError("wanda: the model has no masked modules (patch it first)")
    structure = {name: m.nm for name, m in mods}
    for _, m in mods:  # dense while calibrating; each stage gets its structure back when it is pruned
        m.set_structure(None)
        m.set_mask(torch.ones_like(m.weight, dtype=torch.bool))
    idx = calibration_indices(len(ctx.train), blocks, seed)
    was_training = model.training
    model.eval()
    masks: dict[str, Tensor] = {}
    stages = sorted({_stage(n) for n, _ in mods})
    try:
        for stage in stages:
            group = {n: m for n, m in mods if _stage(n) == stage}
            linear = {n: m for n, m in group.items() if not hasattr(m, "embedding_dim")}
            sq = {}
            if linear:
                col = _NormCollector(linear)
                try:
                    _forward_all(model, ctx, idx, batch_size, device, col)
                finally:
                    col.close()
                sq = col.sq
            for name, m in group.items():
                m.set_structure(structure[name], name=name)
                s = module_sparsity(m, sparsity)
                if name not in linear:  # the word embeddings: magnitude, as OMP
                    keep = magnitude_keep(m, s, per_row=False)
                elif sq.get(name) is None or not bool(torch.any(sq[name] > 0)):
                    warnings.warn(f"wanda: {name} saw no input activations in calibration; pruning it by "
                                  "magnitude per row", stacklevel=2)
                    keep = metric_keep(m, m.weight.detach().abs().float(), s)
                else:
                    keep = metric_keep(m, wanda_scores(m.weight, sq[name]), s)
                m.set_mask(keep)
                masks[f"{name}.weight"] = keep.cpu()
    finally:
        model.train(was_training)
    log.info("wanda: %d matrices pruned with %d calibration blocks", len(masks), len(idx))
    return masks
