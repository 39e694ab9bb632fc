"""AdamW with the fastest implementation torch has for the parameters' device.

``torch.optim.AdamW()`` with no implementation flag picks the per-tensor
Python loop on CPU, which costs more than the forward and backward passes of
a MiniLM step (measured 2.8 s vs 0.08 s fused for MiniLM-sized parameters on
2 cores).  The fused kernels (CPU, CUDA, ...) compute the same update
(torch's own tests hold them to the loop's result), so every optimizer in
tamt goes through :func:`adamw`.

The reference TAMT code trains with two other Adam variants, kept here for
``--preset paper`` (:func:`make_optimizer`): :class:`AdamWHF` (the Hugging Face
AdamW of its MLM and IMP scripts) and :class:`BertAdam` (its KD script).
"""
from __future__ import annotations

import math

import torch


def _params(groups) -> list[torch.Tensor]:
    out = []
    for g in groups:
        if isinstance(g, dict):
            out.extend(g["params"])
        else:
            out.append(g)
    return out


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **kwargs)``, fused where every parameter allows it, else foreach."""
    groups = list(params)
    if "fused" not in kwargs and "foreach" not in kwargs:
        ps = _params(groups)
        try:
            from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

            devices = set(_get_fused_kernels_supported_devices())
        except ImportError:  # private helper moved: fall back to the documented default
            devices = {"cuda"}
        fusable = bool(ps) and all(p.is_floating_point() and p.device.type in devices for p in ps) \
            and len({p.device for p in ps}) == 1
        kwargs["fused" if fusable else "foreach"] = True
    return torch.optim.AdamW(groups, **kwargs)


# ---------------------------------------------------------------------------
# The reference code's optimizers (TAMT_SPEC "Reference-code details"), for ``--preset paper``.

OPTIMIZERS = ("adamw", "adamw-hf", "bert-adam")
DEFAULT_EPS = {"adamw": 1e-8, "adamw-hf": 1e-8, "bert-adam": 1e-6}


class _PerTensorAdam(torch.optim.Optimizer):
    """The loop the reference code's Adam variants share: per parameter with a gradient, lazily created
    moment buffers, then the subclass' ``_update(p, grad, m, v, t, group)`` (t = 1-based step)."""

    def __init__(self, params, defaults: dict):
        lr, eps, (b1, b2) = defaults["lr"], defaults["eps"], defaults["betas"]
        if lr < 0 or eps < 0 or not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"{type(self).__name__}: invalid lr={lr}, betas={(b1, b2)} or eps={eps}")
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                self._update(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group)
        return loss

    def _update(self, p, grad, m, v, t: int, group: dict) -> None:
        raise NotImplementedError


class BertAdam(_PerTensorAdam):
    """The BERT/TinyBERT ``BertAdam`` that the reference TAMT-KD script trains the scores with.

    Per parameter tensor, in this order: clip the tensor's gradient to norm
    ``max_grad_norm`` on its own (``clip_grad_norm_(p, max_grad_norm)``: the
    clipping is per tensor, not global), update the moments, and step

        update = m / (sqrt(v) + eps) + weight_decay * p
        p     -= lr * update

    with **no bias correction** of m and v (so the first steps are about
    ``(1 - b1) / sqrt(1 - b2) = 3.16`` times larger than Adam's) and the weight
    decay added to the update before the learning rate.  The learning rate is
    the group's ``lr`` (a scheduler such as ``LambdaLR`` scales it; the
    reference's ``warmup_linear`` schedule with warm-up 0 is the plain linear
    decay ``lr * (1 - step / t_total)``).
    """

    def __init__(self, params, lr: float = 2e-5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.01, max_grad_norm: float | None = 1.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      max_grad_norm=max_grad_norm))

    def _update(self, p, grad, m, v, t, group):
        b1, b2 = group["betas"]
        clip = group["max_grad_norm"]
        if clip is not None and clip > 0:
            # torch.nn.utils.clip_grad_norm_(p, clip) on this one tensor (in place, as the reference)
            coef = clip / (torch.linalg.vector_norm(grad, 2.0, dtype=torch.float32) + 1e-6)
            if coef < 1:
                grad.mul_(coef.to(grad.dtype))
        m.mul_(b1).add_(grad, alpha=1 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        update = m / (v.sqrt() + group["eps"])  # no bias correction
        if group["weight_decay"] > 0.0:
            update += group["weight_decay"] * p
        p.add_(update, alpha=-group["lr"])


class AdamWHF(_PerTensorAdam):
    """The Hugging Face (``transformers.AdamW``, BERT-style) AdamW of the reference MLM and IMP scripts.

    It differs from ``torch.optim.AdamW`` in two places: eps is added to
    ``sqrt(v)`` *before* the bias correction is folded into the step size

        p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

    (torch adds ``eps`` to ``sqrt(v / (1 - b2^t))``, i.e. the effective eps is
    ``1/sqrt(1 - b2^t)`` = 31.6x larger here at the first step), and the
    decoupled weight decay ``p -= lr * wd * p`` is applied *after* the Adam
    step (torch applies it before).
    """

    def __init__(self, params, lr: float = 5e-5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, correct_bias: bool = True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      correct_bias=correct_bias))

    def _update(self, p, grad, m, v, t, group):
        b1, b2 = group["betas"]
        m.mul_(b1).add_(grad, alpha=1.0 - b1)
        v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        denom = v.sqrt().add_(group["eps"])
        step_size = group["lr"]
        if group["correct_bias"]:
            step_size = step_size * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        p.addcdiv_(m, denom, value=-step_size)
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])


def make_optimizer(name: str, groups, *, lr: float, eps: float | None = None,
                   max_grad_norm: float | None = None) -> torch.optim.Optimizer:
    """``adamw`` (torch, fused), ``adamw-hf`` (:class:`AdamWHF`) or ``bert-adam`` (:class:`BertAdam`).

    ``max_grad_norm`` is only used by ``bert-adam``, which clips every tensor on
    its own; the other two leave clipping (global) to the caller.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    eps = DEFAULT_EPS[name] if eps is None else float(eps)
    if name == "adamw":
        return adamw(groups, lr=lr, betas=(0.9, 0.999), eps=eps, weight_decay=0.0)
    if name == "adamw-hf":
        return AdamWHF(groups, lr=lr, eps=eps)
    return BertAdam(groups, lr=lr, eps=eps, weight_decay=0.0, max_grad_norm=max_grad_norm)


def clips_per_tensor(name: str) -> bool:
    """True when the optimizer clips gradients itself (per tensor), so the caller must not clip globally."""
    return name == "bert-adam"
