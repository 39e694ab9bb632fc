"""``SearchConfig.compile``: the search step's forward passes through ``torch.compile``.

The masked ops are registered ``torch.library`` ops with fake (meta)
implementations, so Dynamo captures the student's and the teacher's forward
with them as opaque nodes, AOTAutograd builds the backward (the ops' own
backward ops), and the rest of the encoder (attention, GELU, LayerNorm,
dropout, the residual adds) is fused by the compiler.  On CUDA
``'reduce-overhead'`` also replays the step as a CUDA graph, which removes
the per-kernel launch cost of the ~40 small kernels a BERT layer runs.

Modes: ``'none'`` (eager, the default), ``'default'``, ``'reduce-overhead'``,
``'max-autotune'`` (``torch.compile`` modes, inductor), and ``'aot_eager'``
(capture + AOTAutograd without code generation: checks that the step
compiles, no C++ compiler needed).  The first step pays the compilation (tens
of seconds); thresholds are buffers read as graph inputs, so their per-step
update does not recompile.
"""
from __future__ import annotations

import torch
from torch import nn

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "aot_eager")


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode


class StepForwards:
    """The modules a search step calls, compiled once per module when ``mode`` asks for it."""

    def __init__(self, mode: str = "none"):
        self.mode = check_compile_mode(mode)
        self._compiled: dict[int, tuple[nn.Module, nn.Module]] = {}

    def __call__(self, module: nn.Module) -> nn.Module:
        if self.mode == "none":
            return module
        hit = self._compiled.get(id(module))
        if hit is None or hit[0] is not module:
            if self.mode == "aot_eager":
                fn = torch.compile(module, backend="aot_eager")
            else:
                fn = torch.compile(module, mode=None if self.mode == "default" else self.mode)
            hit = self._compiled[id(module)] = (module, fn)
        return hit[1]
