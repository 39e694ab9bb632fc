"""Search methods as strategies of the one search loop (:class:`tamt.pruning.Searcher`).

A strategy patches the model, names what trains, reacts after each optimizer
step and emits masks.  The loop itself (data, objective, optimizer, schedule,
logging, checkpoints, DDP) is shared.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from tamt.nn import get_masks, masked_modules, patch_model, set_masks, update_thresholds
from tamt.nn.scores import keep_largest, random_mask, ranked_scores
from tamt.ops._common import sparsity_to_k

from .objectives import mlm_head_parameters


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

    The mask is scores > tau; scores tied at tau (float32 has only ~8M values in [2*t0, 4*t0), and
    scores without gradient keep their initial values) would all be pruned.  The surplus tied
    entries are raised by one ulp above tau (ties broken by position).
    """
    update_thresholds(model)
    with torch.no_grad():
        for _, m in masked_modules(model):
            if m.mode != "search" or m.nm is not None:  # N:M modules: the group top-N has no threshold
                continue
            flat = m.scores.view(-1)
            n = flat.numel()
            k = sparsity_to_k(m.sparsity, n)
            pruned = int(torch.count_nonzero(flat <= m.threshold))  # (bool .sum() is 4x slower on CPU)
            if pruned > k:
                tied = (flat == m.threshold).nonzero().view(-1)
                lift = tied[tied.numel() - (pruned - k):]
                flat[lift] = torch.nextafter(m.threshold, torch.tensor(float("inf"), device=flat.device))


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
        _patch(self)
        _freeze_all(self.model)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        for _, m in masked_modules(self.model):
            m.start_search(self.s.sparsity if m.nm is None else None, init=self._initial_scores(m.weight, gen, m.nm),
                           t0=self.cfg.t0)
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
    if m in ("omp", "random", "wanda", "magnitude-row"):
        return OneShotStrategy(searcher, m)
    if m == "imp":
        return IMPStrategy(searcher)
    return TamtStrategy(searcher, {"tamt-mlm": "mlm", "tamt-kd": "kd", "tamt-mlm-kd": "mlm+kd"}[m])
