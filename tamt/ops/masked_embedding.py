"""masked_embedding: rows of (W * M) for the given ids, straight-through scores.

Only looked-up rows are touched, forward and backward: a BERT word-embedding
matrix has 23M entries but a batch reads a few thousand rows.  Same STE rule
as ``masked_linear``: d scores[row] = sum over lookups of dY * W[row].
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import reference
from ._common import normalize_mask_args, use_registered_op


def _forward_impl(
    ids: Tensor,
    weight: Tensor,
    scores: Optional[Tensor],
    threshold: Optional[Tensor],
    mask: Optional[Tensor],
    padding_idx: int,
) -> Tensor:
    return reference.masked_embedding_forward(ids, weight, scores, threshold, mask, padding_idx)


_masked_embedding = torch.library.custom_op("tamt::masked_embedding", _forward_impl, mutates_args=())


@_masked_embedding.register_fake
def _(ids, weight, scores, threshold, mask, padding_idx):
    return weight.new_empty(*ids.shape, weight.shape[1])


def _grad_params_impl(
    grad: Tensor,
    ids: Tensor,
    weight: Tensor,
    scores: Optional[Tensor],
    threshold: Optional[Tensor],
    mask: Optional[Tensor],
    padding_idx: int,
    want_scores: bool,
    want_weight: bool,
) -> tuple[Tensor, Tensor]:
    ds, dw = reference.masked_embedding_grad_params(
        grad, ids, weight, scores, threshold, mask, padding_idx, want_scores, want_weight
    )
    empty = weight.new_empty(0)
    return (ds if ds is not None else empty), (dw if dw is not None else empty)


_grad_params = torch.library.custom_op("tamt::masked_embedding_grad_params", _grad_params_impl, mutates_args=())


@_grad_params.register_fake
def _(grad, ids, weight, scores, threshold, mask, padding_idx, want_scores, want_weight):
    ds = torch.empty_like(scores) if want_scores else weight.new_empty(0)
    dw = torch.empty_like(weight) if want_weight else weight.new_empty(0)
    return ds, dw


def _setup_context(ctx, inputs, output):
    ids, weight, scores, threshold, mask, padding_idx = inputs
    ctx.save_for_backward(ids, weight, scores, threshold, mask)
    ctx.padding_idx = padding_idx


def _backward(ctx, grad):
    ids, weight, scores, threshold, mask = ctx.saved_tensors
    need_w, need_s = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    want_s = bool(need_s and scores is not None)
    ds = dw = None
    if want_s or need_w:
        ds_, dw_ = _grad_params(
            grad.contiguous(), ids, weight, scores, threshold, mask, ctx.padding_idx, want_s, bool(need_w)
        )
        ds = ds_ if want_s else None
        dw = dw_ if need_w else None
    return None, dw, ds, None, None, None


_masked_embedding.register_autograd(_backward, setup_context=_setup_context)


class _EagerMaskedEmbedding(torch.autograd.Function):
    """The registered op for eager mode without the dispatcher round trips (see ``_EagerMaskedLinear``)."""

    @staticmethod
    def forward(ctx, ids, weight, scores, threshold, mask, padding_idx):
        _setup_context(ctx, (ids, weight, scores, threshold, mask, padding_idx), None)
        return _forward_impl(ids, weight, scores, threshold, mask, padding_idx)

    @staticmethod
    def backward(ctx, grad):
        ids, weight, scores, threshold, mask = ctx.saved_tensors
        need_w, need_s = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        want_s = bool(need_s and scores is not None)
        if not (want_s or need_w):
            return None, None, None, None, None, None
        ds, dw = reference.masked_embedding_grad_params(
            grad, ids, weight, scores, threshold, mask, ctx.padding_idx, want_s, bool(need_w)
        )
        return None, dw, ds, None, None, None


def masked_embedding(
    ids: Tensor,
    weight: Tensor,
    *,
    scores: Tensor | None = None,
    threshold: Tensor | float | None = None,
    mask: Tensor | None = None,
    padding_idx: int | None = None,
) -> Tensor:
    """Embedding lookup in (W * M); mask forms as in ``masked_linear``.

    ``padding_idx`` rows get no gradient (as in ``torch.nn.Embedding``).
    """
    scores, threshold, mask = normalize_mask_args(weight, scores, threshold, mask, op="masked_embedding")
    if ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"masked_embedding: ids must be int32/int64, got {ids.dtype}")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += weight.shape[0]
    return masked_embedding_checked(ids, weight, scores, threshold, mask, -1 if padding_idx is None else int(padding_idx))


def masked_embedding_checked(ids: Tensor, weight: Tensor, scores, threshold, mask, padding_idx: int) -> Tensor:
    """``masked_embedding`` for validated arguments (``padding_idx`` -1 for none, else in range)."""
    if use_registered_op():
        return _masked_embedding(ids, weight, scores, threshold, mask, padding_idx)
    if torch.is_grad_enabled() and (weight.requires_grad or (scores is not None and scores.requires_grad)):
        return _EagerMaskedEmbedding.apply(ids, weight, scores, threshold, mask, padding_idx)
    return _forward_impl(ids, weight, scores, threshold, mask, padding_idx)
