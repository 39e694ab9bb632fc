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
from . import imp
from .objectives import mlm_head_parameters
from .threshold_schedule import ThresholdSchedule, reference_keep, thresholds_exact  # noqa: F401 (re-export)


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


def _freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def _patch(strategy) -> None:
    """Patch the searcher's model in fixed mode and give its modules the run's (N:M or unstructured) structure."""
    from tamt.nn.structure import set_structures

    patch_model(strategy.model, 0.0, mode="fixed")
    set_structures(strategy.model, strategy.cfg.structure, strategy.cfg.embedding_structure)


class OneShotStrategy(Strategy):
    """No training: OMP (l1_unstructured per matrix), random, magnitude per row or Wanda (tamt.pruning.one_shot)."""

    def __init__(self, searcher, init: str):
        super().__init__(searcher)
        self.init = init

    def setup(self) -> None:
        from .one_shot import one_shot_masks

        _patch(self)
        _freeze_all(self.model)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        set_masks(self.model, one_shot_masks(self.s, self.init, gen))


class TamtStrategy(Strategy):
    """Task-agnostic mask training: scores train (STE), weights frozen."""

    trains = True

    def __init__(self, searcher, objective: str):
        super().__init__(searcher)
        self.objective = objective

    def _initial_scores(self, weight: torch.Tensor, gen: torch.Generator, nm=None) -> torch.Tensor:
        cfg = self.cfg
        if nm is not None and cfg.score_init != "omp-rank":  # OMP-N:M / random N:M start (tamt.nn.structure)
            from tamt.nn.structure import nm_initial_scores

            return nm_initial_scores(weight, nm, cfg.score_init, t0=cfg.t0, generator=gen)
        if cfg.score_init == "omp-rank":  # distinct scores already: no tie-break needed (see tamt.nn.scores)
            return ranked_scores(weight, self.s.sparsity, t0=cfg.t0)
        if cfg.score_init == "omp":
            # without tie-breaking: the reference's |W| > k-th smallest |W| (ties at the cut are all pruned)
            keep = keep_largest(weight.abs(), self.s.sparsity) if cfg.tie_break else \
                reference_keep(weight.abs(), self.s.sparsity)
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
        _patch(self)
        _freeze_all(self.model)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        for _, m in masked_modules(self.model):
            m.start_search(self.s.sparsity if m.nm is None else None, init=self._initial_scores(m.weight, gen, m.nm),
                           t0=self.cfg.t0)
        self.schedule = ThresholdSchedule(self.cfg, len(self.s.ctx.train) // self.cfg.batch_size)
        self.schedule.start(self.model)
        if self.trains_head:
            for _, p in mlm_head_parameters(self.model):
                p.requires_grad_(True)

    @property
    def trains_head(self) -> bool:
        """Co-train the MLM head with the mask (the paper), unless it is frozen (see SearchConfig.head_train)."""
        if "mlm" not in self.objective or self.cfg.head_train == "frozen":
            return False
        return self.cfg.head_train == "train" or not self.s.ctx.info.get("head_initialised")

    def param_groups(self) -> list[dict]:
        cfg = self.cfg
        scores = [m.scores for _, m in masked_modules(self.model)]
        groups = [{"params": scores, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "scores"}]
        if self.trains_head:
            head = [p for _, p in mlm_head_parameters(self.model)]
            groups.append({"params": head, "lr": cfg.head_lr, "weight_decay": 0.0, "name": "mlm_head"})
        return groups

    def total_steps(self, requested: int) -> int:
        return requested if self.cfg.stop_at is None else min(requested, int(self.cfg.stop_at))

    def schedule_length(self) -> int:
        return max(1, self.s.requested_steps)  # the full run's, also when stop_at ends the run earlier

    def after_step(self, step: int) -> None:
        self.schedule.after_step(self.model, step)

    def before_save(self) -> None:
        self.schedule.reset(self.model)

    def finish(self) -> None:
        self.schedule.reset(self.model)
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
        if self.cfg.imp_schedule == "run":  # the reference: every round restarts at lr with the whole run's slope
            return max(1, self.s.requested_steps or self.s.total_steps)
        return self.interval()

    def _prune(self) -> None:
        level = self.levels[self.round]
        prev = self.levels[self.round - 1] if self.round else 0.0
        new = {f"{name}.weight": imp.prune_round(m.weight, m.mask, prev, level, self.cfg.imp_rounding)
               for name, m in masked_modules(self.model)}
        # rewind (all weights by default; see tamt.pruning.imp for the reference's), then fix the new masks
        imp.rewind(self.model, self.pretrained, self.cfg.imp_rewind)
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
    if m in ("omp", "random", "wanda", "magnitude-row"):
        return OneShotStrategy(searcher, m)
    if m == "imp":
        return IMPStrategy(searcher)
    return TamtStrategy(searcher, {"tamt-mlm": "mlm", "tamt-kd": "kd", "tamt-mlm-kd": "mlm+kd"}[m])
