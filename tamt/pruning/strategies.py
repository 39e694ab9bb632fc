"""Search methods as strategies of the one search loop (:class:`tamt.pruning.Searcher`).

A strategy patches the model, names what trains, reacts after each optimizer
step and emits masks.  The loop itself (data, objective, optimizer, schedule,
logging, checkpoints, DDP) is shared.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from tamt.nn import get_masks, masked_modules, patch_model, set_masks
from tamt.nn.scores import keep_largest, random_mask, ranked_scores

from .objectives import mlm_head_parameters
from .score_step import exact_thresholds


class Strategy:
    """Hooks: ``setup`` -> ``start`` (step 0) -> [``after_step``]* -> ``finish``."""

    trains = False  # takes optimizer steps
    objective = None  # 'mlm', 'kd' or 'mlm+kd'

    def __init__(self, searcher):
        self.s = searcher
        self.cfg = searcher.config

    @property
    def model(self) -> nn.Module:
        return self.s.model

    def setup(self) -> None: ...

    def total_steps(self, requested: int) -> int:
        return requested if self.trains else 0

    def param_groups(self) -> list[dict]:
        return []

    def schedule_length(self) -> int:
        return max(1, self.s.total_steps)

    def start(self) -> None:
        """Called once at step 0 (not again on resume)."""

    def after_step(self, step: int) -> None: ...

    def finish(self) -> None:
        self.s.emit(self.s.sparsity, get_masks(self.model), final=True)

    def before_save(self) -> None:
        """Make the current masks the ones to save (paper mode resets tau here)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def thresholds_exact(model: nn.Module) -> None:
    """Exact top-k thresholds, then break ties at tau so that exactly floor(s*n) scores are pruned.

    (See ``tamt.pruning.score_step.exact_thresholds``: one select that reuses the fused score step's work.)
    """
    exact_thresholds(model)


def _freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


class OneShotStrategy(Strategy):
    """OMP (l1_unstructured per matrix) or random pruning: no training."""

    def __init__(self, searcher, init: str):
        super().__init__(searcher)
        self.init = init

    def setup(self) -> None:
        patch_model(self.model, 0.0, mode="fixed")
        _freeze_all(self.model)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        masks = {}
        for name, m in masked_modules(self.model):
            if self.init == "omp":
                masks[f"{name}.weight"] = keep_largest(m.weight.abs(), self.s.sparsity)
            else:
                masks[f"{name}.weight"] = random_mask(tuple(m.weight.shape), self.s.sparsity, generator=gen)
        set_masks(self.model, masks)


class TamtStrategy(Strategy):
    """Task-agnostic mask training: scores train (STE), weights frozen."""

    trains = True

    def __init__(self, searcher, objective: str):
        super().__init__(searcher)
        self.objective = objective

    def _initial_scores(self, weight: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        if cfg.score_init == "omp-rank":  # distinct scores already: no tie-break needed (see tamt.nn.scores)
            return ranked_scores(weight, self.s.sparsity, t0=cfg.t0)
        if cfg.score_init == "omp":
            keep = keep_largest(weight.abs(), self.s.sparsity)
        else:
            keep = random_mask(tuple(weight.shape), self.s.sparsity, generator=gen).to(weight.device)
        s = keep.float() * (2.0 * cfg.t0)
        if cfg.tie_break:
            # Distinct scores so top-k prunes exactly floor(s*n) even where gradients are zero (embedding rows
            # of unseen tokens): a jitter 1e-3*t0 small against the 2*t0 gap keeps the initial mask identical.
            # (magnitude order first, then random order among equal magnitudes, e.g. an all-zero padding row)
            noise = torch.rand(weight.shape, generator=gen).to(weight.device)
            if cfg.score_init == "omp":
                mag = weight.detach().abs().float()
                jitter = mag / mag.max().clamp(min=1e-12) + 1e-3 * noise
            else:
                jitter = noise
            s = s + (1e-3 * cfg.t0) * jitter
        return s

    def setup(self) -> None:
        patch_model(self.model, 0.0, mode="fixed")
        _freeze_all(self.model)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        for _, m in masked_modules(self.model):
            m.start_search(self.s.sparsity, init=self._initial_scores(m.weight, gen), t0=self.cfg.t0)
        thresholds_exact(self.model)
        if "mlm" in self.objective:
            for _, p in mlm_head_parameters(self.model):
                p.requires_grad_(True)

    def param_groups(self) -> list[dict]:
        cfg = self.cfg
        scores = [m.scores for _, m in masked_modules(self.model)]
        groups = [{"params": scores, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "scores"}]
        if "mlm" in self.objective:
            head = [p for _, p in mlm_head_parameters(self.model)]
            groups.append({"params": head, "lr": cfg.head_lr, "weight_decay": 0.0, "name": "mlm_head"})
        return groups

    def after_step(self, step: int) -> None:
        if self.cfg.threshold_mode == "exact" or step % int(self.cfg.reset_interval) == 0:
            thresholds_exact(self.model)

    def before_save(self) -> None:
        thresholds_exact(self.model)

    def finish(self) -> None:
        thresholds_exact(self.model)
        super().finish()

    def state_dict(self) -> dict:
        keep = {f"{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()
                if k in keep or k.endswith(".scores") or k.endswith(".threshold")}

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in state if k not in self.model.state_dict()]
        if missing:
            raise ValueError(f"checkpoint does not fit this search (unknown keys {missing[:3]})")
        self.model.load_state_dict(state, strict=False)


def imp_levels(sparsities, rate: float) -> list[float]:
    """Sparsity after each IMP round: multiples of ``rate`` up to the largest target, plus the targets."""
    top = max(sparsities)
    levels = {round(rate * k, 10) for k in range(1, int(math.floor(top / rate + 1e-9)) + 1)}
    levels |= {float(s) for s in sparsities if s > 0}
    return sorted(levels)


class IMPStrategy(Strategy):
    """Iterative magnitude pruning on MLM with rewinding (Chen et al. 2020)."""

    trains = True
    objective = "mlm"

    def setup(self) -> None:
        self.levels = imp_levels(self.s.sparsities, self.cfg.imp_rate)
        self.round = 0  # rounds done
        patch_model(self.model, 0.0, mode="fixed")
        _freeze_all(self.model)
        for n, p in self.model.named_parameters():
            p.requires_grad_(True)
        # the decoder is tied to the word embeddings: one Parameter, trained once
        self.pretrained = {k: v.detach().clone() for k, v in self.model.state_dict().items()
                           if not (k.endswith(".mask") or k.endswith(".threshold"))}

    def interval(self) -> int:
        rounds = len(self.levels)
        if self.cfg.imp_interval is not None:
            return int(self.cfg.imp_interval)
        if self.s.requested_steps and rounds > 1:
            return max(1, self.s.requested_steps // (rounds - 1))
        return 2792

    def total_steps(self, requested: int) -> int:
        return self.interval() * (len(self.levels) - 1)

    def param_groups(self) -> list[dict]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.cfg.lr, "weight_decay": self.cfg.weight_decay, "name": "weights"}]

    def schedule_length(self) -> int:
        return self.interval()

    def _prune(self) -> None:
        level = self.levels[self.round]
        new = {}
        for name, m in masked_modules(self.model):
            mag = m.weight.detach().abs().float()
            mag = torch.where(m.mask, mag, torch.full_like(mag, -1.0))  # pruned ones stay pruned
            new[f"{name}.weight"] = keep_largest(mag, level)
        # rewind every weight to its pre-trained value, then fix the new masks
        self.model.load_state_dict(self.pretrained, strict=False)
        set_masks(self.model, new)
        self.round += 1
        self.s.emit(level, new, final=self.round == len(self.levels))
        if self.round < len(self.levels):
            self.s.reset_optimizer()

    def start(self) -> None:
        self._prune()

    def after_step(self, step: int) -> None:
        if step % self.interval() == 0 and self.round < len(self.levels):
            self._prune()

    def finish(self) -> None:
        while self.round < len(self.levels):  # steps=0: remaining rounds are one-shot
            self._prune()

    def state_dict(self) -> dict:
        return {"round": self.round, "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.round = int(state["round"])
        self.model.load_state_dict(state["model"], strict=True)


def make_strategy(searcher) -> Strategy:
    m = searcher.config.method
    if m == "omp":
        return OneShotStrategy(searcher, "omp")
    if m == "random":
        return OneShotStrategy(searcher, "random")
    if m == "imp":
        return IMPStrategy(searcher)
    return TamtStrategy(searcher, {"tamt-mlm": "mlm", "tamt-kd": "kd", "tamt-mlm-kd": "mlm+kd"}[m])
