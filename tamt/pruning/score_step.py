"""The search's score update: AdamW through tamt's native fused kernel, with the next top-k's first pass.

A TAMT step ends with an optimizer update of every score tensor and, in
exact mode, a top-k selection over the updated scores.  ``tamt._C`` has a
fused kernel for the pair (``tamt._native.adamw_scores_step``): the AdamW
update (``torch.optim.AdamW``'s arithmetic in fp32) that, while each tile is
in cache, also counts the top radix digit of the updated scores -- the first
of the select's passes over 22M (MiniLM) to 85M (BERT-base) scores.

:class:`ScoreAdamW` is a ``torch.optim.AdamW`` (same hyper-parameters, param
groups, state layout and ``state_dict``: checkpoints move freely between the
two) whose score group steps through that kernel where ``auto`` prefers it
(``tamt._native.prefer_native('adamw_scores_step', device)``: measured faster
on the CPU, not yet measured on CUDA); every other group, and any setting the
kernel does not implement (amsgrad, maximize, capturable, tensor lr, ...),
takes torch's own step.  The histograms it leaves are picked up by
``tamt.ops.topk_thresholds`` (see ``tamt.ops.thresholds.note_key_histograms``)
only while the scores are unchanged since.

Optimizers are pluggable: :func:`make_score_optimizer` picks the
implementation for a list of param groups; another update rule (e.g. BERT's
Adam without bias correction) goes next to it with its own torch fallback.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from tamt.optim import adamw

SCORE_GROUP = "scores"  # the param group name TAMT strategies give the scores


def _native_ready(device: torch.device) -> bool:
    from tamt import _native

    return _native.prefer_native("adamw_scores_step", device)


class ScoreAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` whose score group (``name == 'scores'``) uses the fused native step.

    Only fp32 tensors of one device go native; params without a gradient are
    skipped as torch does (no update, no weight decay, step count unchanged).
    """

    def __init__(self, params, *, native_groups=(SCORE_GROUP,), hist_bits: int | None = None, **kwargs):
        super().__init__(params, **kwargs)
        from tamt import _native

        self.native_groups = tuple(native_groups)
        self.hist_bits = int(hist_bits or _native.DEFAULT_HIST_BITS)
        if not 9 <= self.hist_bits <= 12:  # >= 9: the non-finite keys fill whole bins at both ends
            raise ValueError(f"hist_bits must be in [9, 12], got {self.hist_bits}")
        self.native_steps = 0  # group updates done by the native kernel (tests and benchmarks read it)
        # ids of the params the last step updated natively and left finite: their histograms have no count in
        # the bins of exponent 255 (+-inf, NaN), so a NaN/Inf check after the step need not read them again
        self.verified_finite: set[int] = set()

    def _goes_native(self, group: dict) -> bool:
        if group.get("name") not in self.native_groups:
            return False
        if any(group.get(k) for k in ("amsgrad", "maximize", "capturable", "differentiable")):
            return False
        if any(isinstance(group[k], torch.Tensor) for k in ("lr", "weight_decay", "eps")) or \
                any(isinstance(b, torch.Tensor) for b in group["betas"]):
            return False
        ps = group["params"]
        if not ps or any(p.dtype != torch.float32 or p.is_sparse for p in ps):
            return False
        dev = ps[0].device
        return all(p.device == dev for p in ps) and _native_ready(dev)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rest = []
        self.verified_finite = set()
        for group in self.param_groups:
            if self._goes_native(group):
                self._native_step(group)
            else:
                rest.append(group)
        if rest:  # torch's AdamW for everything else (it iterates self.param_groups)
            every = self.param_groups
            self.param_groups = rest
            try:
                super().step()
            finally:
                self.param_groups = every
        return loss

    def _native_step(self, group: dict) -> None:
        from tamt import _native
        from tamt.ops.thresholds import note_key_histograms

        beta1, beta2 = group["betas"]
        by_step: dict[int, list] = defaultdict(list)  # params with a different step count (one had no grad)
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("ScoreAdamW does not support sparse gradients")
            st = self.state[p]
            if len(st) == 0:
                st["step"] = torch.tensor(0.0, dtype=torch.float32)
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            n = int(st["step"]) + 1
            st["step"].fill_(n)
            by_step[n].append(p)
        for n, ps in by_step.items():
            states = [self.state[p] for p in ps]
            grads = [p.grad if p.grad.is_contiguous() else p.grad.contiguous() for p in ps]
            hist = _native.adamw_scores_step(
                ps, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                step=n, hist_bits=self.hist_bits,
            )
            note_key_histograms(ps, hist, self.hist_bits)
            edge = 1 << (self.hist_bits - 9)  # bins whose keys have exponent 255: the first and last `edge`
            nonfinite = (hist[:, :edge].sum(1) + hist[:, -edge:].sum(1)).tolist()
            self.verified_finite.update(id(p) for p, bad in zip(ps, nonfinite) if bad == 0)
        self.native_steps += 1


def make_score_optimizer(groups: list, **kwargs) -> torch.optim.Optimizer:
    """AdamW for a search's param groups: :class:`ScoreAdamW` where the native score step is preferred
    on the scores' device, else :func:`tamt.optim.adamw` (torch's fused/foreach AdamW)."""
    scores = [p for g in groups if isinstance(g, dict) and g.get("name") == SCORE_GROUP for p in g["params"]]
    if scores and _native_ready(scores[0].device):
        kwargs.setdefault("fused" if scores[0].device.type in ("cpu", "cuda") else "foreach", True)
        return ScoreAdamW(groups, **kwargs)
    return adamw(groups, **kwargs)


def exact_thresholds(model) -> None:
    """Exact top-k thresholds of every searching module, ties at tau broken so exactly floor(s*n) are pruned.

    One segmented select over all matrices (reusing the fused step's first-digit histogram when it is
    fresh).  The mask is scores > tau, so scores tied at tau (float32 has only ~8M values in [2*t0, 4*t0),
    and scores without gradient keep their initial values) would all be pruned: the surplus tied entries
    are raised by one ulp above tau (ties broken by position).  Whether there are ties comes from the
    select's own count of entries <= tau where the native CPU select provides it, else from one more pass.
    """
    from tamt.nn import masked_modules
    from tamt.ops import topk_thresholds_and_counts
    from tamt.ops._common import sparsity_to_k

    # (N:M modules have no threshold: the group top-N picks their mask)
    mods = [m for _, m in masked_modules(model) if m.mode == "search" and m.nm is None]
    if not mods:
        return
    taus, counts = topk_thresholds_and_counts([m.scores for m in mods], [m.sparsity for m in mods])
    with torch.no_grad():
        for m, tau, le in zip(mods, taus, counts):
            m.threshold = tau.to(m.weight.device)
            flat = m.scores.view(-1)
            k = sparsity_to_k(m.sparsity, flat.numel())
            if le is None or tau == 0:  # (the select counts keys, where -0.0 < +0.0)
                le = int(torch.count_nonzero(flat <= m.threshold))  # (bool .sum() is 4x slower on CPU)
            if le > k:
                tied = (flat == m.threshold).nonzero().view(-1)
                lift = tied[tied.numel() - (le - k):]
                flat[lift] = torch.nextafter(m.threshold, torch.tensor(float("inf"), device=flat.device))


def needs_finite_check(optimizer, params: list) -> list:
    """The params a NaN/Inf check after ``optimizer.step()`` still has to read (all, for a torch optimizer)."""
    done = getattr(optimizer, "verified_finite", None)
    return [p for p in params if id(p) not in done] if done else list(params)
