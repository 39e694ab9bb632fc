"""MaskedLinear and MaskedEmbedding: a frozen weight, a mask, and how to learn it.

Modes:
  ``search`` - the mask is M = scores > threshold; ``scores`` is a trainable
               parameter (straight-through gradients), the weight is frozen
               unless the caller unfreezes it (IMP trains weights).
  ``fixed``  - a boolean ``mask`` buffer; the surviving weights may train
               (fine-tuning) and pruned ones get zero gradient and stay zero
               in the forward pass.
The threshold is a buffer updated for all layers at once by
``tamt.nn.update_thresholds`` (one segmented top-k call per step).

Structure (``set_structure``, :mod:`tamt.nn.structure`): ``nm = None``
(unstructured) or ``(N, M)``: every group of M consecutive weights of a row
keeps exactly N.  An N:M module in search mode has no threshold: its mask is
the N largest scores of every group (``tamt.ops.nm_mask``); a fixed mask
given to it must be N:M.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from tamt import ops
from tamt.ops._common import check_sparsity
from tamt.ops.masked_embedding import masked_embedding_checked
from tamt.ops.masked_linear import masked_linear_checked
from tamt.ops.nm import check_groups, is_nm, nm_name, parse_nm

from .scores import init_scores

MODES = ("search", "fixed")


class _MaskedMixin:
    """State and mask bookkeeping shared by the two masked module types."""

    weight: nn.Parameter
    scores: nn.Parameter | None
    mask: Tensor | None
    threshold: Tensor
    sparsity: float
    mode: str
    role: str
    nm: tuple[int, int] | None

    def _init_mask_state(self, sparsity: float, role: str) -> None:
        check_sparsity(sparsity)
        self.sparsity = float(sparsity)
        self.role = role
        self.mode = "fixed"
        self.nm = None
        self.scores = None
        self.register_buffer("mask", torch.ones_like(self.weight, dtype=torch.bool))
        self.register_buffer("threshold", torch.tensor(float("-inf"), device=self.weight.device))

    # -- structure -----------------------------------------------------------
    def set_structure(self, structure, *, name: str | None = None) -> None:
        """'unstructured' or 'N:M' (groups along the input dimension); N:M sets sparsity = 1 - N/M.

        Only the bookkeeping changes: the current mask is checked when it is
        next fixed (``set_mask``) or re-derived from scores (search mode).
        """
        nm = parse_nm(structure)
        if nm is not None:
            check_groups(self.weight.shape, nm[1], f"{name or self.role} weight")
            self.sparsity = 1.0 - nm[0] / nm[1]
        self.nm = nm

    @property
    def structure(self) -> str:
        return nm_name(self.nm)

    # -- switching modes ---------------------------------------------------
    def start_search(
        self, sparsity: float | None = None, *, init: str | Tensor = "omp", t0: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> None:
        """Enter search mode with fresh scores (frozen weight)."""
        if sparsity is not None:
            check_sparsity(sparsity)
            if self.nm is not None and abs(float(sparsity) - (1.0 - self.nm[0] / self.nm[1])) > 1e-9:
                raise ValueError(f"a {self.structure} module has sparsity {1.0 - self.nm[0] / self.nm[1]:g}, "
                                 f"not {sparsity}")
            self.sparsity = float(sparsity)
        if isinstance(init, Tensor):
            if init.shape != self.weight.shape:
                raise ValueError(f"scores of shape {tuple(init.shape)} for a weight of shape {tuple(self.weight.shape)}")
            s = init.detach().to(device=self.weight.device, dtype=torch.float32).clone()
        elif self.nm is not None:
            from .structure import nm_initial_scores

            s = nm_initial_scores(self.weight, self.nm, init, t0=t0, generator=generator)
        else:
            s = init_scores(self.weight, self.sparsity, init, t0=t0, generator=generator)
        self.scores = nn.Parameter(s)
        self.mask = None
        self.mode = "search"
        self.weight.requires_grad_(False)
        self.refresh_threshold()

    def refresh_threshold(self) -> None:
        """Exact top-k threshold of this module alone (see update_thresholds for all)."""
        if self.mode != "search":
            raise RuntimeError("refresh_threshold: module is not in search mode")
        if self.nm is not None:  # the group top-N needs no threshold (it stays -inf, unused)
            return
        self.threshold = ops.topk_threshold(self.scores.detach(), self.sparsity).to(self.weight.device)

    def set_mask(self, mask: Tensor) -> None:
        """Fix the mask (bool tensor of the weight's shape, or a bit-packed one)."""
        if mask.dim() == 1 and mask.dtype == torch.uint8:
            mask = ops.unpack_mask(mask, self.weight.shape)
        if mask.shape != self.weight.shape:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not fit weight {tuple(self.weight.shape)} "
                "(is this mask for another model?)"
            )
        if self.nm is not None and not is_nm(mask.bool(), *self.nm):
            raise ValueError(f"{self.role} module is {self.structure} but the mask given does not keep exactly "
                             f"{self.nm[0]} of every {self.nm[1]} weights of a row (set_structure('unstructured') "
                             "first to use an unstructured mask)")
        self.mask = mask.to(device=self.weight.device, dtype=torch.bool).clone()
        self.scores = None
        self.mode = "fixed"

    def freeze_mask(self) -> Tensor:
        """Leave search mode keeping the current binary mask; returns it."""
        m = self.current_mask()
        self.set_mask(m)
        return m

    def current_mask(self) -> Tensor:
        if self.mode == "search":
            if self.nm is not None:
                return ops.nm_mask(self.scores.detach(), *self.nm)
            return self.scores.detach() > self.threshold  # a new tensor already
        return self.mask

    def masked_weight(self) -> Tensor:
        # where() rather than W * M: a pruned negative weight becomes +0.0, not -0.0 (exports are bit-exact zeros)
        w = self.weight.detach()
        return torch.where(self.current_mask(), w, torch.zeros((), dtype=w.dtype, device=w.device))

    def _mask_kwargs(self) -> dict:
        if self.mode == "search":
            if self.nm is not None:
                return {"scores": self.scores, "nm": self.nm}
            return {"scores": self.scores, "threshold": self.threshold}
        return {"mask": self.mask}

    def extra_repr(self) -> str:
        extra = "" if self.nm is None else f", structure={self.structure}"
        return f"{super().extra_repr()}, role={self.role}, mode={self.mode}, sparsity={self.sparsity}{extra}"


class MaskedLinear(_MaskedMixin, nn.Linear):
    """A ``nn.Linear`` whose weight is multiplied by a binary mask."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, sparsity: float = 0.0,
                 role: str = "linear", device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_mask_state(sparsity, role)

    @classmethod
    def from_linear(cls, linear: nn.Linear, sparsity: float = 0.0, *, mode: str = "fixed", role: str = "linear",
                    init: str | Tensor = "omp", t0: float = 0.01, generator=None) -> "MaskedLinear":
        """Wrap an existing ``nn.Linear`` sharing its Parameters (no copy)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = linear.weight
        new.bias = linear.bias
        new._init_mask_state(sparsity, role)
        if mode == "search":
            new.start_search(init=init, t0=t0, generator=generator)
        return new

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with W*M baked in (new tensors; this module is untouched)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.masked_weight())
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out

    def forward(self, x: Tensor) -> Tensor:
        # Scores and masks were checked when the module entered its mode: skip the public op's checks.
        if self.mode == "search":
            return masked_linear_checked(x, self.weight, self.bias, self.scores, self.threshold, None, self.nm)
        return masked_linear_checked(x, self.weight, self.bias, None, None, self.mask)


class MaskedEmbedding(_MaskedMixin, nn.Embedding):
    """A ``nn.Embedding`` (word embeddings) whose table is multiplied by a binary mask."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, *,
                 sparsity: float = 0.0, role: str = "word_embeddings", device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self._init_mask_state(sparsity, role)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, sparsity: float = 0.0, *, mode: str = "fixed",
                       role: str = "word_embeddings", init: str | Tensor = "omp", t0: float = 0.01,
                       generator=None) -> "MaskedEmbedding":
        """Wrap an existing ``nn.Embedding`` sharing its weight (a tied decoder stays tied)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if emb.max_norm is not None or emb.sparse:
            raise ValueError("MaskedEmbedding does not support max_norm or sparse embeddings")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.num_embeddings, new.embedding_dim = emb.num_embeddings, emb.embedding_dim
        new.padding_idx = emb.padding_idx
        new.max_norm, new.norm_type, new.scale_grad_by_freq, new.sparse = None, 2.0, emb.scale_grad_by_freq, False
        new.weight = emb.weight
        new._init_mask_state(sparsity, role)
        if mode == "search":
            new.start_search(init=init, t0=t0, generator=generator)
        return new

    def to_embedding(self) -> nn.Embedding:
        out = nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.masked_weight())
        return out

    def _mask_kwargs(self) -> dict:
        if self.mode == "search" and self.nm is not None:
            # N:M embeddings (opt-in): the lookup op knows thresholds only, so the group top-N is handed to it
            # as a +-1 indicator whose gradient passes straight to the scores (one extra pass over the table)
            from tamt.ops.nm import nm_indicator

            ind = nm_indicator(self.scores, *self.nm)
            return {"scores": ind, "threshold": torch.zeros((), dtype=ind.dtype, device=ind.device)}
        return super()._mask_kwargs()

    def forward(self, ids: Tensor) -> Tensor:
        pad = -1 if self.padding_idx is None else self.padding_idx  # nn.Embedding stores it non-negative
        if self.mode == "search":
            kw = self._mask_kwargs()  # (an N:M table hands its group top-N over as an indicator)
            return masked_embedding_checked(ids, self.weight, kw["scores"], kw["threshold"], None, pad)
        return masked_embedding_checked(ids, self.weight, None, None, self.mask, pad)
