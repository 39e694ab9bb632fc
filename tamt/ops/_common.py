"""Argument normalisation shared by the ops (mask forms, thresholds, autocast)."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def packed_numel(n: int) -> int:
    return (n + 7) // 8


def is_packed(mask: Tensor | None, weight: Tensor) -> bool:
    return mask is not None and mask.dim() == 1 and mask.dtype == torch.uint8 and weight.dim() == 2


def normalize_mask_args(weight: Tensor, scores, threshold, mask, *, op: str):
    """Validate the mask form; return (scores, threshold_tensor, mask)."""
    if (scores is None) == (mask is None):
        raise ValueError(
            f"{op}: give either scores= and threshold= (search mode) or mask= (fixed mode), not both/neither"
        )
    if scores is not None:
        if threshold is None:
            raise ValueError(f"{op}: search mode needs threshold= (a float or 0-dim tensor) together with scores=")
        if scores.shape != weight.shape:
            raise ValueError(f"{op}: scores have shape {tuple(scores.shape)} but the weight has {tuple(weight.shape)}")
        if not torch.is_tensor(threshold):
            threshold = torch.tensor(float(threshold), dtype=torch.float32, device=scores.device)
        elif threshold.dim() != 0:
            raise ValueError(f"{op}: threshold must be a float or a 0-dim tensor, got shape {tuple(threshold.shape)}")
        if threshold.device != scores.device:
            threshold = threshold.to(scores.device)
        return scores, threshold.detach(), None
    if is_packed(mask, weight):
        need = packed_numel(weight.numel())
        if mask.numel() != need:
            raise ValueError(
                f"{op}: packed mask has {mask.numel()} bytes but a weight of shape {tuple(weight.shape)} needs {need}"
            )
        return None, None, mask
    if mask.shape != weight.shape:
        raise ValueError(
            f"{op}: mask has shape {tuple(mask.shape)} but the weight has {tuple(weight.shape)} "
            "(is this mask for another model?)"
        )
    if mask.dtype not in (torch.bool, torch.uint8):
        raise TypeError(f"{op}: a fixed mask must be bool (or uint8 0/1, or bit-packed uint8 1-D), got {mask.dtype}")
    return None, None, mask


def autocast_dtype(device_type: str):
    """The autocast dtype in force for ``device_type``, or None."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError, RuntimeError):  # older torch signatures
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
    return None


def sparsity_to_k(sparsity: float, n: int) -> int:
    """k = floor(s * n): the number of entries ``scores > tau`` prunes.

    A tiny epsilon absorbs binary rounding (0.29 * 100 = 28.999999999999996
    must give 29, as the user meant); it cannot change k for n < 1e9.
    """
    check_sparsity(sparsity)
    return min(n, int(math.floor(sparsity * n + 1e-6)))


def check_sparsity(sparsity: float) -> None:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise TypeError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= s < 1.0) or math.isnan(s):
        raise ValueError(
            f"sparsity must be in [0, 1) (the fraction of weights pruned), got {sparsity!r}; "
            "e.g. 0.7 prunes 70 % of every masked matrix"
        )


def use_registered_op() -> bool:
    """Whether an op call must go through its registered ``torch.library`` op.

    ``torch.compile`` traces the opaque op (with its fake implementation), and
    so do dispatch modes (FakeTensorMode, FlopCounterMode).  Plain eager calls
    take a ``torch.autograd.Function`` with the same implementations: the
    custom-op autograd wrapper and dispatcher round trips cost several times
    an ``F.linear`` per call.
    """
    return torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0
