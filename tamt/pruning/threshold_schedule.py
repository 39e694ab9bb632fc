"""When TAMT's threshold tau is (re)computed, and how: exact top-k every step, or the reference's schedule.

``threshold_mode="exact"`` (tamt's default): tau is the k-th smallest score
after every optimizer step, with ties at tau lifted by one ulp, so every
matrix has exactly floor(s*n) zeros at every step.

``threshold_mode="paper"`` (the reference code, llyx97/TAMT ``mask_training``):
tau is a fixed number between resets, so the sparsity drifts as scores cross it.

* before the first reset tau is the constant ``t0`` (``initial_threshold="t0"``;
  the reference's ``Masker(threshold=0.01)``) - with the two-level OMP init
  (scores 0 or 2*t0) the mask is exactly the OMP mask and stays at the target
  sparsity until scores move by t0;
* a reset sets tau = the k-th smallest score of each matrix (``torch.kthvalue``,
  k = int(s*n)) *after* the optimizer step of the reset step;
* reset steps: every step t with ``(t + reset_offset) % reset_interval == 0``,
  the listed ``reset_steps``, the last step of every epoch
  (``reset_at_epoch_end``), every mask save and the end of the run.
  The reference MLM script resets after steps 1000, 2000, ... (its logging and
  save steps); its KD script after step 1, after steps 99, 199, 299, ...
  (``(global_step + 1) % eval_step == 0``) and at every epoch end.
* with ``tie_break=False`` (the reference) a reset is the plain k-th value:
  every score tied at tau is pruned, as ``scores > tau`` does; with
  ``tie_break=True`` the surplus tied entries are lifted by one ulp (exact count).
"""
from __future__ import annotations

import torch
from torch import nn

from tamt.nn import masked_modules, update_thresholds
from tamt.ops._common import sparsity_to_k


def thresholds_exact(model: nn.Module) -> None:
    """Exact top-k thresholds, then break ties at tau so that exactly floor(s*n) scores are pruned.

    The mask is scores > tau; scores tied at tau (float32 has only ~8M values in [2*t0, 4*t0), and
    scores without gradient keep their initial values) would all be pruned.  The surplus tied
    entries are raised by one ulp above tau (ties broken by position).  One segmented select that
    reuses the fused score step's work: ``tamt.pruning.score_step.exact_thresholds``.
    """
    from .score_step import exact_thresholds

    exact_thresholds(model)


def reference_keep(values: torch.Tensor, sparsity: float) -> torch.Tensor:
    """``values > kthvalue(values, k)``, k = floor(s*n): the reference's OMP-init cut (ties at the cut pruned)."""
    flat = values.detach().reshape(-1)
    k = sparsity_to_k(sparsity, flat.numel())
    if k == 0:
        return torch.ones_like(values, dtype=torch.bool)
    return values.detach() > torch.kthvalue(flat, k).values


def thresholds_kth(model: nn.Module) -> None:
    """The reference's reset: tau = the k-th smallest score of each matrix; ties at tau stay pruned."""
    update_thresholds(model)


def thresholds_constant(model: nn.Module, value: float) -> None:
    """tau = ``value`` for every searching matrix (the reference's initial threshold t0)."""
    for _, m in masked_modules(model):
        if m.mode == "search":
            m.threshold = torch.tensor(float(value), dtype=torch.float32, device=m.weight.device)


class ThresholdSchedule:
    """Applies a :class:`~tamt.pruning.SearchConfig`'s threshold policy to a patched model."""

    def __init__(self, config, steps_per_epoch: int):
        self.cfg = config
        self.steps_per_epoch = max(1, int(steps_per_epoch))

    @property
    def paper(self) -> bool:
        return self.cfg.threshold_mode == "paper"

    def reset(self, model: nn.Module) -> None:
        (thresholds_exact if (self.cfg.tie_break or not self.paper) else thresholds_kth)(model)

    def start(self, model: nn.Module) -> None:
        """The threshold before the first step."""
        if self.paper and self.cfg.initial_threshold == "t0":
            thresholds_constant(model, self.cfg.t0)
        else:
            self.reset(model)

    def is_reset_step(self, step: int) -> bool:
        """Whether tau is recomputed after optimizer step ``step`` (1-based) in paper mode."""
        c = self.cfg
        if (step + int(c.reset_offset)) % int(c.reset_interval) == 0 or step in c.reset_steps:
            return True
        return bool(c.reset_at_epoch_end) and step % self.steps_per_epoch == 0

    def after_step(self, model: nn.Module, step: int) -> None:
        if not self.paper or self.is_reset_step(step):
            self.reset(model)
