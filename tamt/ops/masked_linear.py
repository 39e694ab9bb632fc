"""masked_linear: y = x @ (W * M)^T + b with straight-through gradients.

Registered with ``torch.library`` (``tamt::masked_linear`` and its two
backward ops) so that ``torch.compile`` and ``opcheck`` see opaque ops with
fake implementations; the autograd formula is attached with
``register_autograd``.

N:M search (``nm=(N, M)``, no threshold): M = the N largest scores of every
group of M along the input dimension (``tamt.ops.nm``); the Triton kernels
select them while loading each W tile, the other backends once per call.

Gradients (only those somebody asked for are computed):
  dX      = dY @ (W * M)
  dScores = (dY^T X) * W          (straight-through estimator, search mode)
  dW      = (dY^T X) * M          (only when W requires grad: fine-tuning)
  dBias   = sum of dY over tokens
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from . import _backend, reference
from ._common import autocast_dtype, is_packed, normalize_mask_args
from .nm import nm_indicator, nm_search_args

_SUPPORTED = ("torch", "triton", "native")


def _kernel_mask_kwargs(scores, threshold, mask, weight, nm=None):
    if scores is not None and nm is not None:
        return dict(scores=scores, nm=tuple(nm))
    if scores is not None:
        return dict(scores=scores, threshold=threshold)
    if is_packed(mask, weight):
        return dict(packed_mask=mask)
    return dict(mask=mask)


@torch.library.custom_op("tamt::masked_linear", mutates_args=())
def _masked_linear(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    scores: Optional[Tensor],
    threshold: Optional[Tensor],
    mask: Optional[Tensor],
    backend: str,
    nm: Optional[List[int]] = None,
) -> Tensor:
    if backend == "triton":
        from tamt import kernels

        return kernels.masked_matmul(x, weight, bias, **_kernel_mask_kwargs(scores, threshold, mask, weight, nm))
    if backend == "native" and scores is not None and nm is None:
        # The native extension has no GEMM: it materialises W*M in one fused
        # elementwise pass and hands the product to the BLAS GEMM.
        from tamt import _native

        return torch.nn.functional.linear(x, _native.binarize_and_mask(weight, scores, threshold), bias)
    return reference.masked_linear_forward(x, weight, bias, scores, threshold, mask, nm)


@_masked_linear.register_fake
def _(x, weight, bias, scores, threshold, mask, backend, nm=None):
    return x.new_empty(x.shape[0], weight.shape[0])


@torch.library.custom_op("tamt::masked_linear_grad_input", mutates_args=())
def _grad_input(
    grad: Tensor,
    weight: Tensor,
    scores: Optional[Tensor],
    threshold: Optional[Tensor],
    mask: Optional[Tensor],
    backend: str,
    nm: Optional[List[int]] = None,
) -> Tensor:
    if backend == "triton":
        from tamt import kernels

        return kernels.masked_matmul_grad_input(grad, weight,
                                                **_kernel_mask_kwargs(scores, threshold, mask, weight, nm))
    return reference.masked_linear_grad_input(grad, weight, scores, threshold, mask, nm)


@_grad_input.register_fake
def _(grad, weight, scores, threshold, mask, backend, nm=None):
    return grad.new_empty(grad.shape[0], weight.shape[1])


@torch.library.custom_op("tamt::masked_linear_grad_params", mutates_args=())
def _grad_params(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    scores: Optional[Tensor],
    threshold: Optional[Tensor],
    mask: Optional[Tensor],
    want_scores: bool,
    want_weight: bool,
    backend: str,
    nm: Optional[List[int]] = None,
) -> tuple[Tensor, Tensor]:
    """Returns (d scores, d weight); an unwanted one comes back as an empty tensor."""
    if backend == "triton":
        from tamt import kernels

        ds, dw = kernels.masked_matmul_grad_weight(
            grad, x, weight, want_scores=want_scores, want_weight=want_weight,
            **_kernel_mask_kwargs(scores, threshold, mask, weight, nm),
        )
    else:
        ds, dw = reference.masked_linear_grad_params(grad, x, weight, scores, threshold, mask, want_scores, want_weight,
                                                     nm)
    empty = weight.new_empty(0)
    return (ds if ds is not None else empty), (dw if dw is not None else empty)


@_grad_params.register_fake
def _(grad, x, weight, scores, threshold, mask, want_scores, want_weight, backend, nm=None):
    ds = torch.empty_like(scores) if want_scores else weight.new_empty(0)
    dw = torch.empty_like(weight) if want_weight else weight.new_empty(0)
    return ds, dw


def _setup_context(ctx, inputs, output):
    x, weight, bias, scores, threshold, mask, backend, nm = inputs
    ctx.save_for_backward(x, weight, scores, threshold, mask)
    ctx.backend = backend
    ctx.nm = nm
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, weight, scores, threshold, mask = ctx.saved_tensors
    need_x, need_w, need_b, need_s = ctx.needs_input_grad[:4]
    grad = grad.contiguous()
    dx = dw = db = ds = None
    if need_x:
        dx = _grad_input(grad, weight, scores, threshold, mask, ctx.backend, ctx.nm)
    want_s = bool(need_s and scores is not None)
    if want_s or need_w:
        ds_, dw_ = _grad_params(grad, x, weight, scores, threshold, mask, want_s, bool(need_w), ctx.backend, ctx.nm)
        ds = ds_ if want_s else None
        dw = dw_ if need_w else None
    if need_b and ctx.has_bias:
        db = grad.sum(0)
    return dx, dw, db, ds, None, None, None, None


_masked_linear.register_autograd(_backward, setup_context=_setup_context)


def masked_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    scores: Tensor | None = None,
    threshold: Tensor | float | None = None,
    mask: Tensor | None = None,
    nm: tuple[int, int] | None = None,
) -> Tensor:
    """y = x @ (W * M)^T + b for any leading batch dims of ``x``.

    Search mode: ``scores`` and ``threshold`` (M = scores > threshold, the
    gradient reaches ``scores`` by the straight-through estimator).  Fixed
    mode: ``mask`` is a bool tensor of W's shape or a bit-packed uint8 mask
    (see ``tamt.ops.pack_mask``).  N:M search mode: ``scores`` and
    ``nm=(N, M)`` (no threshold): M keeps the N largest scores of every group
    of M consecutive weights of a row (``tamt.ops.nm_mask``).
    """
    if nm is not None:
        nm = nm_search_args(weight, scores, threshold, mask, nm, op="masked_linear")
    else:
        scores, threshold, mask = normalize_mask_args(weight, scores, threshold, mask, op="masked_linear")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"masked_linear: input has {x.shape[-1]} features but the weight expects {weight.shape[1]}"
        )
    cast = autocast_dtype(x.device.type)
    if cast is not None:
        with torch.autocast(x.device.type, enabled=False):
            return masked_linear(
                x.to(cast), weight.to(cast), None if bias is None else bias.to(cast),
                scores=scores, threshold=threshold, mask=mask, nm=nm,
            )
    if x.dtype != weight.dtype:
        raise TypeError(f"masked_linear: input dtype {x.dtype} differs from weight dtype {weight.dtype}")
    backend = _backend.resolve("gemm", x.device.type, _SUPPORTED)
    if nm is not None and backend != "triton":
        # Only the Triton GEMMs pick the group top-N inside the tile load.  Elsewhere it is materialised once per
        # call as a +-1 indicator with a straight-through gradient, and the threshold path at 0 does the rest
        # (the forward and the backward then share one selection instead of recomputing it).
        scores, nm = nm_indicator(scores, *nm), None
        threshold = torch.zeros((), dtype=torch.float32, device=scores.device)
    if backend == "native" and scores is None:
        backend = "torch"  # the native binarize kernel is for search mode; fixed masks use the reference
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    y = _masked_linear(x2, weight, bias, scores, threshold, mask, backend, nm)
    return y.reshape(*lead, weight.shape[0])
