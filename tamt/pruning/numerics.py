"""NaN/Inf guards of the search.

* :func:`check_finite_weights`: a model whose weights already hold NaN/Inf is
  refused when it is loaded (OMP would otherwise keep NaN as the "largest"
  magnitude, and TAMT would report a diverged search).
* :class:`StepGuard`: divergence is caught at the step where it appears, in
  every threshold mode, before the optimizer applies it and before anything of
  that step is saved, so the last checkpoint and the masks on disk stay clean.
  Per step it costs one host sync of the gradient norm (which grad clipping
  computes anyway) and one fused norm over the trained tensors
  (``torch._foreach_norm``) after the update: a non-finite tensor has a
  non-finite norm.  Names are looked up only when something is wrong.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class NonFiniteError(ValueError):
    """NaN/Inf in weights, scores, gradients or the loss (the message names the matrix)."""


def _count_nonfinite(t: torch.Tensor) -> int:
    return int(t.numel() - torch.isfinite(t).sum())


def nonfinite_parameters(model: nn.Module) -> list[tuple[str, int]]:
    """(name, number of NaN/Inf values) of every parameter that holds any."""
    out = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                out.append((name, _count_nonfinite(p)))
    return out


def _listing(bad: list[tuple[str, int]]) -> str:
    head = ", ".join(f"{n} ({k} value{'s' if k != 1 else ''})" for n, k in bad[:3])
    return head + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")


def check_finite_weights(model: nn.Module, source: str) -> None:
    """Refuse a model whose weights hold NaN/Inf, naming the matrices."""
    bad = nonfinite_parameters(model)
    if bad:
        raise NonFiniteError(f"the weights of {source} contain NaN/Inf: {_listing(bad)}; the checkpoint is corrupt or "
                             "was saved from a diverged training: load another checkpoint")


class StepGuard:
    """Checks one search step: ``before_update`` (loss, gradients) and ``after_update`` (trained tensors)."""

    ADVICE = ("nothing of this step was saved (the last checkpoint and the masks on disk are clean); the run is "
              "deterministic, so --resume would diverge again: start afresh (--overwrite or another --out) with a "
              "lower --lr (and --grad-clip if it was off)")

    def __init__(self, model: nn.Module):
        self.model = model
        self._names: dict[int, str] | None = None

    def name(self, p: torch.Tensor) -> str:
        if self._names is None:
            self._names = {id(q): n for n, q in self.model.named_parameters()}
        return self._names.get(id(p), f"a tensor of shape {tuple(p.shape)}")

    def _bad(self, tensors) -> list[tuple[str, int]]:
        return [(self.name(t), _count_nonfinite(t)) for t in tensors if not bool(torch.isfinite(t).all())]

    def before_update(self, step: int, loss: float, params: list[torch.Tensor], grad_norm=None) -> None:
        """Raise when the loss or a gradient is NaN/Inf (``grad_norm``: the clip norm when clipping ran)."""
        grads = [p.grad for p in params if p.grad is not None]
        if grad_norm is None and grads:
            grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        finite_grads = grad_norm is None or math.isfinite(float(grad_norm))
        if math.isfinite(loss) and finite_grads:
            return
        bad = [] if finite_grads else [(self.name(p), _count_nonfinite(p.grad)) for p in params
                                       if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        if not finite_grads and not bad:  # the norm overflowed although every value is finite
            return
        what = "the loss" if not math.isfinite(loss) else "the gradient"
        where = f"; NaN/Inf gradients in {_listing(bad)}" if bad else ""
        raise NonFiniteError(f"search diverged at step {step}: {what} is {loss if what == 'the loss' else 'NaN/Inf'}"
                             f"{where}; {self.ADVICE}")

    def after_update(self, step: int, params: list[torch.Tensor]) -> None:
        """Raise when the optimizer step left NaN/Inf in a trained tensor (scores, or weights for IMP)."""
        if not params:
            return
        with torch.no_grad():
            norms = torch.stack(torch._foreach_norm(params))
            if bool(torch.isfinite(norms).all()):
                return
            bad = self._bad(params)
        if bad:
            raise NonFiniteError(f"search diverged at step {step}: the optimizer step left NaN/Inf in {_listing(bad)}; "
                                 f"{self.ADVICE}")
