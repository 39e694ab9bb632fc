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

Plans (``tamt.ops.mask_forms``): the fused Triton GEMMs read the mask as
scores + threshold, as a uint8 mask or as a bit-packed mask, or W * M is
materialised and the GEMMs are BLAS calls; the uint8 / packed / W * M forms
are built once per change of the scores or threshold and handed to the ops
as ``prepared``. N:M search on Triton always reads the scores (the group
top-N is selected in the tile load; there is no threshold to build from).
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from . import _backend, mask_forms, reference
from ._common import autocast_dtype, is_packed, normalize_mask_args, use_registered_op
from .nm import nm_indicator, nm_search_args

_SUPPORTED = ("torch", "triton", "native")
_FUSED = mask_forms.FUSED_FORMS + ("triton",)  # "triton": the scores form


def _kernel_mask_kwargs(scores, threshold, mask, weight, nm=None, prepared=None):
    if prepared is not None:  # a uint8 or bit-packed mask built for this step
        return dict(packed_mask=prepared) if prepared.dim() == 1 else dict(mask=prepared)
    if scores is not None and nm is not None:
        return dict(scores=scores, nm=tuple(nm))
    if scores is not None:
        return dict(scores=scores, threshold=threshold)
    if is_packed(mask, weight):
        return dict(packed_mask=mask)
    return dict(mask=mask)


def _forward_impl(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    scores: Optional[Tensor],
    threshold: Optional[Tensor],
    mask: Optional[Tensor],
    prepared: Optional[Tensor],
    backend: str,
    nm: Optional[List[int]] = None,
) -> Tensor:
    if backend == "materialize":
        return torch.nn.functional.linear(x, prepared, bias)
    if backend in _FUSED:
        from tamt import kernels

        return kernels.masked_matmul(x, weight, bias,
                                     **_kernel_mask_kwargs(scores, threshold, mask, weight, nm, prepared))
    if backend == "native" and scores is not None and nm is None:
        # The native extension has no GEMM: it materialises W*M in one fused
        # elementwise pass and hands the product to the BLAS GEMM.
        from tamt import _native

        return torch.nn.functional.linear(x, _native.binarize_and_mask(weight, scores, threshold), bias)
    return reference.masked_linear_forward(x, weight, bias, scores, threshold, mask, nm)


_masked_linear = torch.library.custom_op("tamt::masked_linear", _forward_impl, mutates_args=())


@_masked_linear.register_fake
def _(x, weight, bias, scores, threshold, mask, prepared, backend, nm=None):
    return x.new_empty(x.shape[0], weight.shape[0])


def _grad_input_impl(
    grad: Tensor,
    weight: Tensor,
    scores: Optional[Tensor],
    threshold: Optional[Tensor],
    mask: Optional[Tensor],
    prepared: Optional[Tensor],
    backend: str,
    nm: Optional[List[int]] = None,
) -> Tensor:
    if backend == "materialize":
        return grad @ prepared
    if backend in _FUSED:
        from tamt import kernels

        return kernels.masked_matmul_grad_input(
            grad, weight, **_kernel_mask_kwargs(scores, threshold, mask, weight, nm, prepared))
    return reference.masked_linear_grad_input(grad, weight, scores, threshold, mask, nm)


_grad_input = torch.library.custom_op("tamt::masked_linear_grad_input", _grad_input_impl, mutates_args=())


@_grad_input.register_fake
def _(grad, weight, scores, threshold, mask, prepared, backend, nm=None):
    return grad.new_empty(grad.shape[0], weight.shape[1])


def _grad_params_impl(
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
    nm: Optional[List[int]] = None,
) -> tuple[Tensor, Tensor]:
    """Returns (d scores, d weight); an unwanted one comes back as an empty tensor."""
    if backend in _FUSED:
        from tamt import kernels

        ds, dw = kernels.masked_matmul_grad_weight(
            grad, x, weight, want_scores=want_scores, want_weight=want_weight,
            **_kernel_mask_kwargs(scores, threshold, mask, weight, nm, prepared),
        )
    else:
        ds, dw = reference.masked_linear_grad_params(grad, x, weight, scores, threshold, mask, want_scores, want_weight,
                                                     nm)
    empty = weight.new_empty(0)
    return (ds if ds is not None else empty), (dw if dw is not None else empty)


_grad_params = torch.library.custom_op("tamt::masked_linear_grad_params", _grad_params_impl, mutates_args=())


@_grad_params.register_fake
def _(grad, x, weight, scores, threshold, mask, prepared, want_scores, want_weight, backend, nm=None):
    ds = torch.empty_like(scores) if want_scores else weight.new_empty(0)
    dw = torch.empty_like(weight) if want_weight else weight.new_empty(0)
    return ds, dw


def _setup_context(ctx, inputs, output):
    x, weight, bias, scores, threshold, mask, prepared, backend, nm = inputs
    ctx.save_for_backward(x, weight, scores, threshold, mask, prepared)
    ctx.backend = backend
    ctx.nm = nm
    ctx.has_bias = bias is not None


def _grads(ctx, grad, x, weight, scores, threshold, mask, prepared, grad_input, grad_params, w_eff=None):
    """(dX, dW, dBias, dScores) for the grads autograd asked for; ``grad_input``/``grad_params``
    are the registered ops (traced graphs) or their implementations (eager)."""
    need_x, need_w, need_b, need_s = ctx.needs_input_grad[:4]
    dx = dw = db = ds = None
    if need_x:
        dx = grad @ w_eff if w_eff is not None else \
            grad_input(grad, weight, scores, threshold, mask, prepared, ctx.backend, ctx.nm)
    want_s = bool(need_s and scores is not None)
    if want_s and not need_w and w_eff is not None:  # eager torch search step: the STE product in place
        ds = grad.t().mm(x).mul_(weight)
        if ds.dtype != scores.dtype:
            ds = ds.to(scores.dtype)
    elif (want_s or need_w) and w_eff is not None:
        ds, dw = reference.masked_linear_grad_params(grad, x, weight, scores, threshold, mask, want_s, need_w)
    elif want_s or need_w:
        ds_, dw_ = grad_params(grad, x, weight, scores, threshold, mask, prepared, want_s, bool(need_w),
                               ctx.backend, ctx.nm)
        ds = ds_ if want_s else None
        dw = dw_ if need_w else None
    if need_b and ctx.has_bias:
        db = grad.sum(0)
    return dx, dw, db, ds


def _backward(ctx, grad):
    x, weight, scores, threshold, mask, prepared = ctx.saved_tensors
    grads = _grads(ctx, grad.contiguous(), x, weight, scores, threshold, mask, prepared, _grad_input, _grad_params)
    return *grads, None, None, None, None, None


_masked_linear.register_autograd(_backward, setup_context=_setup_context)


_ZEROS: dict = {}


def _zero(like: Tensor) -> Tensor:
    """A cached 0-dim zero of ``like``'s dtype and device (``where`` with a Python 0.0 wraps a new one per call)."""
    key = (like.dtype, like.device)
    z = _ZEROS.get(key)
    if z is None:
        z = _ZEROS[key] = torch.zeros((), dtype=like.dtype, device=like.device)
    return z


class _EagerMaskedLinear(torch.autograd.Function):
    """The registered op's forward and backward for eager mode, without the dispatcher.

    ``custom_op``'s Python autograd wrapper plus three dispatcher round trips
    cost several times an ``F.linear`` fwd+bwd on small shapes (host overhead
    is what a GPU step of BERT-base waits on).  Same implementations, same
    gradients; ``torch.compile`` and dispatch modes (FakeTensor) still get the
    opaque registered op (see ``use_registered_op``).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, scores, threshold, mask, prepared, backend, nm):
        w_eff = None
        if backend == "materialize":  # W*M built once per step: the grad-input GEMM reads it too
            w_eff = prepared
            y = torch.nn.functional.linear(x, w_eff, bias)
        elif backend == "torch" and nm is None:
            # The unfused path materialises W*M anyway: keep it for grad-input instead of rebuilding it.
            m = scores > threshold if scores is not None else reference.dense_mask(weight, None, None, mask)
            w_eff = torch.where(m, weight, _zero(weight))
            y = torch.nn.functional.linear(x, w_eff, bias)
        else:
            y = _forward_impl(x, weight, bias, scores, threshold, mask, prepared, backend, nm)
        ctx.save_for_backward(x, weight, scores, threshold, mask, prepared, w_eff)
        ctx.backend = backend
        ctx.nm = nm
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, scores, threshold, mask, prepared, w_eff = ctx.saved_tensors
        if ctx.backend not in ("torch", "materialize"):  # the kernels want dense rows; torch's GEMMs take any strides
            grad = grad.contiguous()
        grads = _grads(ctx, grad, x, weight, scores, threshold, mask, prepared, _grad_input_impl, _grad_params_impl,
                       w_eff)
        return *grads, None, None, None, None, None


def _apply(x2: Tensor, weight, bias, scores, threshold, mask, backend: str, nm=None) -> Tensor:
    if nm is None:  # N:M on Triton: the scores form (the kernels select the group top-N)
        backend = mask_forms.plan_for(backend, x2.device, x2.shape[0], weight)
    prepared = mask_forms.prepare(backend, weight, scores, threshold, mask)
    if use_registered_op():
        return _masked_linear(x2, weight, bias, scores, threshold, mask, prepared, backend, nm)
    if torch.is_grad_enabled() and (
        x2.requires_grad or weight.requires_grad or (scores is not None and scores.requires_grad)
        or (bias is not None and bias.requires_grad)
    ):
        return _EagerMaskedLinear.apply(x2, weight, bias, scores, threshold, mask, prepared, backend, nm)
    return _forward_impl(x2, weight, bias, scores, threshold, mask, prepared, backend, nm)


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
    return masked_linear_checked(x, weight, bias, scores, threshold, mask, nm)


def masked_linear_checked(x: Tensor, weight: Tensor, bias, scores, threshold, mask, nm=None) -> Tensor:
    """``masked_linear`` for arguments already validated (the masked modules check theirs once,
    when they enter a mode): ``threshold`` a 0-dim tensor on the scores' device, shapes fitting."""
    cast = autocast_dtype(x.device.type)
    if cast is not None:
        with torch.autocast(x.device.type, enabled=False):
            return masked_linear_checked(
                x.to(cast), weight.to(cast), None if bias is None else bias.to(cast), scores, threshold, mask, nm
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
    if x.dim() == 2:
        x2 = x if x.is_contiguous() else x.contiguous()
        return _apply(x2, weight, bias, scores, threshold, mask, backend, nm)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    y = _apply(x2, weight, bias, scores, threshold, mask, backend, nm)
    return y.view(*lead, weight.shape[0])
