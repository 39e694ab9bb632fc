"""masked_linear: y = x @ (W * M)^T + b with straight-through gradients.

Registered with ``torch.library`` (``tamt::masked_linear`` and its two
backward ops) so that ``torch.compile`` and ``opcheck`` see opaque ops with
fake implementations; the autograd formula is attached with
``register_autograd``.

Gradients (only those somebody asked for are computed):
  dX      = dY @ (W * M)
  dScores = (dY^T X) * W          (straight-through estimator, search mode)
  dW      = (dY^T X) * M          (only when W requires grad: fine-tuning)
  dBias   = sum of dY over tokens

Plans (``tamt.ops.mask_forms``): the fused Triton GEMMs read the mask as
scores + threshold, as a uint8 mask or as a bit-packed mask, or W * M is
materialised and the GEMMs are cuBLAS calls; the uint8 / packed / W * M
forms are built once per change of the scores or threshold and handed to
the ops as ``prepared``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _backend, mask_forms, reference
from ._common import autocast_dtype, is_packed, normalize_mask_args

_SUPPORTED = ("torch", "triton", "native")
_FUSED = mask_forms.FUSED_FORMS + ("triton",)  # "triton": the scores form


def _kernel_mask_kwargs(scores, threshold, mask, weight, prepared=None):
    if prepared is not None:  # a uint8 or bit-packed mask built for this step
        return dict(packed_mask=prepared) if prepared.dim() == 1 else dict(mask=prepared)
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
    prepared: Optional[Tensor],
    backend: str,
) -> Tensor:
    if backend == "materialize":
        return torch.nn.functional.linear(x, prepared, bias)
    if backend in _FUSED:
        from tamt import kernels

        return kernels.masked_matmul(x, weight, bias, **_kernel_mask_kwargs(scores, threshold, mask, weight, prepared))
    if backend == "native" and scores is not None:
        # The native extension has no GEMM: it materialises W*M in one fused
        # elementwise pass and hands the product to the BLAS GEMM.
        from tamt import _native

        return torch.nn.functional.linear(x, _native.binarize_and_mask(weight, scores, threshold), bias)
    return reference.masked_linear_forward(x, weight, bias, scores, threshold, mask)


@_masked_linear.register_fake
def _(x, weight, bias, scores, threshold, mask, prepared, backend):
    return x.new_empty(x.shape[0], weight.shape[0])


@torch.library.custom_op("tamt::masked_linear_grad_input", mutates_args=())
def _grad_input(
    grad: Tensor,
    weight: Tensor,
    scores: Optional[Tensor],
    threshold: Optional[Tensor],
    mask: Optional[Tensor],
    prepared: Optional[Tensor],
    backend: str,
) -> Tensor:
    if backend == "materialize":
        return grad @ prepared
    if backend in _FUSED:
        from tamt import kernels

        return kernels.masked_matmul_grad_input(
            grad, weight, **_kernel_mask_kwargs(scores, threshold, mask, weight, prepared))
    return reference.masked_linear_grad_input(grad, weight, scores, threshold, mask)


@_grad_input.register_fake
def _(grad, weight, scores, threshold, mask, prepared, backend):
    return grad.new_empty(grad.shape[0], weight.shape[1])


@torch.library.custom_op("tamt::masked_linear_grad_params", mutates_args=())
def _grad_params(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    scores: Optional[Tensor],
    threshold: Optional[Tensor],
    mask: Optional[Tensor],
    prepared: Optional[Tensor],
    want_scores: bool,
    want_weight: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    """Returns (d scores, d weight); an unwanted one comes back as an empty tensor."""
    if backend in _FUSED:
        from tamt import kernels

        ds, dw = kernels.masked_matmul_grad_weight(
            grad, x, weight, want_scores=want_scores, want_weight=want_weight,
            **_kernel_mask_kwargs(scores, threshold, mask, weight, prepared),
        )
    else:
        ds, dw = reference.masked_linear_grad_params(grad, x, weight, scores, threshold, mask, want_scores, want_weight)
    empty = weight.new_empty(0)
    return (ds if ds is not None else empty), (dw if dw is not None else empty)


@_grad_params.register_fake
def _(grad, x, weight, scores, threshold, mask, prepared, want_scores, want_weight, backend):
    ds = torch.empty_like(scores) if want_scores else weight.new_empty(0)
    dw = torch.empty_like(weight) if want_weight else weight.new_empty(0)
    return ds, dw


def _setup_context(ctx, inputs, output):
    x, weight, bias, scores, threshold, mask, prepared, backend = inputs
    ctx.save_for_backward(x, weight, scores, threshold, mask, prepared)
    ctx.backend = backend
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, weight, scores, threshold, mask, prepared = ctx.saved_tensors
    need_x, need_w, need_b, need_s = ctx.needs_input_grad[:4]
    grad = grad.contiguous()
    dx = dw = db = ds = None
    if need_x:
        dx = _grad_input(grad, weight, scores, threshold, mask, prepared, ctx.backend)
    want_s = bool(need_s and scores is not None)
    if want_s or need_w:
        ds_, dw_ = _grad_params(grad, x, weight, scores, threshold, mask, prepared, want_s, bool(need_w),
                                ctx.backend)
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
) -> Tensor:
    """y = x @ (W * M)^T + b for any leading batch dims of ``x``.

    Search mode: ``scores`` and ``threshold`` (M = scores > threshold, the
    gradient reaches ``scores`` by the straight-through estimator).  Fixed
    mode: ``mask`` is a bool tensor of W's shape or a bit-packed uint8 mask
    (see ``tamt.ops.pack_mask``).
    """
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
                scores=scores, threshold=threshold, mask=mask,
            )
    if x.dtype != weight.dtype:
        raise TypeError(f"masked_linear: input dtype {x.dtype} differs from weight dtype {weight.dtype}")
    backend = _backend.resolve("gemm", x.device.type, _SUPPORTED)
    if backend == "native" and scores is None:
        backend = "torch"  # the native binarize kernel is for search mode; fixed masks use the reference
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    backend = mask_forms.plan_for(backend, x2.device, x2.shape[0], weight)
    prepared = mask_forms.prepare(backend, weight, scores, threshold, mask)
    y = _masked_linear(x2, weight, bias, scores, threshold, mask, prepared, backend)
    return y.reshape(*lead, weight.shape[0])
