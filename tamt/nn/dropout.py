"""Fast dropout on the CPU: the native Philox kernel in place of torch's.

torch's CPU dropout draws one Bernoulli per element from a sequential
generator, about 18 ns per element; in a TAMT search step on a BERT-family
student that is ~30M elements (attention probabilities and hidden states), a
third of the step's CPU time on a 2-core machine. ``tamt._native.
philox_dropout`` (csrc/cpu/dropout.cpp) computes the same function -- keep
with probability 1 - p, scale by 1 / (1 - p) -- from a counter-based
generator (Philox4x32-10, the generator of torch's CUDA dropout), ~1 ns per
element, and regenerates the mask in the backward pass instead of storing it.

What changes is only the random stream: the seeds are drawn from torch's
default generator (one int64 per call), so ``torch.manual_seed`` still makes
a run reproducible and a resumed run (which restores the generator state)
continues the same stream; the dropout masks are not the ones torch's CPU
dropout would draw. ``install(model)`` swaps

* every ``torch.nn.Dropout`` for ``FastDropout``, and
* the attention function of transformers models whose attention goes through
  ``ALL_ATTENTION_FUNCTIONS`` ("sdpa" or "eager"): a registered
  ``tamt-dropout+<orig>`` that computes the eager attention with the fast
  dropout while training with dropout > 0 and calls the original function
  otherwise (evaluation, dropout 0);

``uninstall(model)`` restores both. Off the CPU, for non-fp32 tensors, under
``torch.compile`` (inductor generates its own fused dropout) or without the
native extension, ``dropout`` is ``torch.nn.functional.dropout``.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

_PREFIX = "tamt-dropout+"

log = logging.getLogger(__name__)


def _fast_ok(x: Tensor) -> bool:
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.compiler.is_compiling():
        return False
    from tamt import _native

    return _native.available("cpu")


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``torch.nn.functional.dropout(x, p, training)``, with the Philox kernel where it applies."""
    if not training or p == 0.0:
        return x
    if not _fast_ok(x):
        return nn.functional.dropout(x, p, True)
    from tamt import _native

    seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64))
    return _native.philox_dropout(x, p, seed)


_dropout = dropout  # the attention functions' argument named ``dropout`` shadows it there


class FastDropout(nn.Dropout):
    """``nn.Dropout`` computed by ``tamt.nn.dropout.dropout`` (same p, same train/eval behaviour)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def _eager_attention(query, key, value, attention_mask, scaling, p: float):
    """transformers' eager attention (``eager_attention_forward`` of the BERT family), dropout via ``dropout``."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if key.shape[1] != query.shape[1]:  # grouped KV heads
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    w = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        m = attention_mask[:, :, :, : key.shape[-2]]
        w = w.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else w + m
    w = nn.functional.softmax(w, dim=-1)
    w = _dropout(w, p, p > 0.0)
    return torch.matmul(w, value).transpose(1, 2).contiguous(), w


def _attention_function(orig: str):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        fast = dropout > 0.0 and module.training and _fast_ok(query) and kwargs.get("head_mask") is None
        if orig == "sdpa" and not fast:
            return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, scaling=scaling,
                                                  dropout=dropout, **kwargs)
        return _eager_attention(query, key, value, attention_mask, scaling, dropout if module.training else 0.0)

    return attention


def _register(orig: str) -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    name = _PREFIX + orig
    AttentionInterface.register(name, _attention_function(orig))
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[orig])
    return name


def _configs(model: nn.Module) -> list:
    seen, out = set(), []
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation") and id(cfg) not in seen:
            seen.add(id(cfg))
            out.append(cfg)
    return out


def install(model: nn.Module) -> dict:
    """Use the fast dropout in ``model`` (in place); returns what was swapped."""
    swapped = 0
    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if type(child) is nn.Dropout:
                fast = FastDropout(child.p, inplace=False)
                fast.train(child.training)
                setattr(m, child_name, fast)
                swapped += 1
    attention = []
    for cfg in _configs(model):
        orig = cfg._attn_implementation
        if orig in ("sdpa", "eager"):
            try:
                cfg._attn_implementation = _register(orig)
                attention.append(orig)
            except (ImportError, AttributeError, KeyError) as exc:  # a transformers without the interfaces
                log.debug("fast attention dropout not installed (%s): keeping transformers' attention", exc)
    return {"dropout_modules": swapped, "attention": attention}


def uninstall(model: nn.Module) -> None:
    """Undo ``install``: torch's dropout modules and the original attention functions."""
    for _, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if type(child) is FastDropout:
                plain = nn.Dropout(child.p)
                plain.train(child.training)
                setattr(m, child_name, plain)
    for cfg in _configs(model):
        impl = cfg._attn_implementation
        if isinstance(impl, str) and impl.startswith(_PREFIX):
            cfg._attn_implementation = impl[len(_PREFIX):]
