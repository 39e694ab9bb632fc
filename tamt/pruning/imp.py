"""IMP's prune rounds and rewinding, tamt's way and the reference code's way.

Pruning (per matrix, L1, among the survivors of the previous round):

* ``imp_rounding="total"`` (tamt): after the round that reaches level L exactly
  floor(L * n) weights of a matrix are pruned (the same count OMP at L prunes).
* ``imp_rounding="per-round"`` (the reference, ``LT_pretrain.py``): every round
  calls ``torch.nn.utils.prune.l1_unstructured(module, amount=1 / (10 - r))``,
  which prunes ``round(amount * survivors)`` (Python rounding) of the
  survivors; the totals can differ from floor(L * n) by a few weights.

Rewinding after a prune (``imp_rewind``):

* ``"all"`` (tamt): every weight, the MLM head included, back to the pre-trained value;
* ``"encoder"``: only the encoder's (``<base_model_prefix>.*``) parameters - what
  ``LT_pretrain.py``'s ``rewind()`` selects (keys containing ``bert``), the MLM
  head keeps training;
* ``"none"``: no rewinding - what ``LT_pretrain.py`` actually does.  Its
  ``orig = rewind(model.state_dict())`` holds the state dict's tensors, which
  are views of the live parameters (``state_dict()`` does not copy), so the
  optimizer's in-place updates change ``orig`` too and the later
  ``model.load_state_dict(model_dict.update(orig))`` copies every weight onto
  itself.  The weights keep training across rounds; only the optimizer and the
  lr schedule restart.  (tests/pruning/test_paper_fidelity.py demonstrates the
  aliasing with the reference's own sequence of calls.)
"""
from __future__ import annotations

import torch
from torch import nn

from tamt.nn.scores import keep_largest


def round_amount(prev_level: float, level: float) -> float:
    """The fraction of the survivors a round from ``prev_level`` to ``level`` prunes.

    For the reference's levels (multiples of 0.1) this is exactly its
    ``1 / (10 - r)`` (the float it passes to ``l1_unstructured``).
    """
    q = (1.0 - prev_level) / (level - prev_level)
    if abs(q - round(q)) < 1e-6:
        return 1.0 / round(q)
    return (level - prev_level) / (1.0 - prev_level)


def prune_round(weight: torch.Tensor, mask: torch.Tensor, prev_level: float, level: float,
                rounding: str) -> torch.Tensor:
    """The mask after one IMP round: prune the smallest |W| among the survivors ``mask`` of one matrix."""
    mag = weight.detach().abs()
    if rounding == "total":
        mag = torch.where(mask, mag.float(), torch.full_like(mag, -1.0, dtype=torch.float32))  # pruned stay pruned
        return keep_largest(mag, level)
    if rounding != "per-round":
        raise ValueError(f"imp_rounding must be 'total' or 'per-round', got {rounding!r}")
    survivors = mask.reshape(-1).nonzero().view(-1)
    k = round(round_amount(prev_level, level) * survivors.numel())  # torch.nn.utils.prune._compute_nparams_toprune
    new = mask.clone()
    if k > 0:
        # torch prune's L1Unstructured on the survivors' slice: topk(|w|, k, largest=False) of t[mask == 1]
        drop = torch.topk(mag.reshape(-1)[survivors], k=k, largest=False).indices
        new.view(-1)[survivors[drop]] = False
    return new


def rewind(model: nn.Module, pretrained: dict[str, torch.Tensor], scope: str) -> None:
    """Copy the pre-trained values back into ``model`` for the parameters ``scope`` names."""
    if scope == "none":
        return
    if scope == "all":
        state = pretrained
    elif scope == "encoder":
        prefix = model.base_model_prefix + "."
        state = {k: v for k, v in pretrained.items() if k.startswith(prefix)}
    else:
        raise ValueError(f"imp_rewind must be 'all', 'encoder' or 'none', got {scope!r}")
    model.load_state_dict(state, strict=False)
