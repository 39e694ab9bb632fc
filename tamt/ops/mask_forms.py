"""Mask forms of the masked GEMMs and the once-per-step mask cache.

A ``masked_linear`` call runs one of these plans:

  ``scores``      fused Triton GEMMs that read the fp32 scores and compare
                  them with the threshold in every W tile (no per-step pass;
                  the scores are re-read by every token block of every GEMM),
  ``uint8``       fused Triton GEMMs that read a 0/1 byte mask,
  ``packed``      fused Triton GEMMs that read a bit-packed mask (one byte per
                  8 weights along K),
  ``materialize`` W * M as a tensor; forward and grad-input are plain cuBLAS
                  GEMMs (``F.linear``), the scores gradient is (dY^T X) * W,
  ``torch``       the unfused reference (W * M rebuilt by every call),
  ``native``      the native extension's fused binarize-and-mask + BLAS.

The ``uint8`` / ``packed`` / ``materialize`` forms are built by ONE fused
elementwise pass (``tamt.kernels.binarize`` on CUDA) and then reused by every
GEMM until the scores, the threshold (or a fixed mask) or the weight change:
the forward and grad-input of every micro-batch of an optimizer step share
it. The cache is keyed on the tensors' identity, storage address and
autograd version counters (an optimizer's in-place update bumps the version;
a new threshold tensor is a new key), so nothing has to be invalidated by
hand -- except after writing into the scores through ``.data`` or raw
pointers, which bypass the version counter: call ``invalidate()`` then.

Explicit use (the module layer does this once per step, see
``tamt.nn.prepare_step_masks``)::

    ops.step_mask(weight, scores=s, threshold=tau, form="uint8")

``step_mask`` returns the cached tensor and builds it only when stale; the
ops look up the same cache, so calling it beforehand only moves the build
out of the first forward. Which plan a call uses: ``set_mask_form`` /
``use_mask_form`` / env ``TAMT_MASK_FORM`` ('auto' by default: the measured
table of ``tamt.ops.auto_table``, see ``plan_for``).
"""
from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Optional

import torch
from torch import Tensor

from . import _backend, auto_table

FUSED_FORMS = ("scores", "uint8", "packed")
PLANS = FUSED_FORMS + ("materialize",)
MASK_FORMS = ("auto",) + PLANS
_BUILT = {"uint8": "uint8", "packed": "packed", "materialize": "masked"}

_state = threading.local()


def _validate(form: str) -> str:
    form = (form or "auto").strip().lower()
    if form not in MASK_FORMS:
        raise ValueError(f"unknown mask form {form!r}; choose one of {', '.join(MASK_FORMS)} "
                         "(tamt.ops.set_mask_form(...) or the TAMT_MASK_FORM environment variable)")
    return form


def set_mask_form(form: str) -> None:
    """Plan of the masked GEMMs for this thread: 'auto', 'scores', 'uint8',
    'packed' or 'materialize'."""
    _state.form = _validate(form)


def get_mask_form() -> str:
    form = getattr(_state, "form", None)
    return form if form is not None else _validate(os.environ.get("TAMT_MASK_FORM", "auto"))


@contextlib.contextmanager
def use_mask_form(form: str):
    previous = getattr(_state, "form", None)
    _state.form = _validate(form)
    try:
        yield
    finally:
        _state.form = previous


# ----------------------------------------------------------------- plan
_device_names: dict = {}


def _device_name(device: torch.device) -> str:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    name = _device_names.get(idx)
    if name is None:
        name = _device_names[idx] = torch.cuda.get_device_name(idx)
    return name


def plan_for(backend: str, device: torch.device, tokens: int, weight: Tensor) -> str:
    """The plan of one ``masked_linear`` call, given the resolved backend.

    - backend 'torch' / 'native': that backend, or 'materialize' when asked
      for by ``set_mask_form``;
    - backend 'triton': the requested form; with 'auto' the measured table's
      best plan for this device, weight shape, token count and dtype --
      among all plans when the backend itself was 'auto' (default without a
      table: ``auto_table.DEFAULT_PLAN``), among the fused forms when Triton
      was requested explicitly (default 'uint8').
    """
    form = get_mask_form()
    if backend != "triton":
        return "materialize" if form == "materialize" else backend
    if form != "auto":
        return form
    explicit = _backend.get_backend() == "triton"
    allowed = FUSED_FORMS if explicit else PLANS
    default = "uint8" if explicit else auto_table.DEFAULT_PLAN
    if device.type != "cuda":  # the interpreter: no measurement exists
        return default
    from tamt.kernels._configs import token_bucket

    best = auto_table.lookup(_device_name(device), weight.shape[0], weight.shape[1], token_bucket(tokens),
                             str(weight.dtype).replace("torch.", ""), allowed)
    return best or default


# ----------------------------------------------------------------- cache
# id(source tensor) -> (weakref to it, {form: (key, keep-alive refs, built tensor)})
_cache: dict = {}
_lock = threading.Lock()


def _slot(src: Tensor) -> dict:
    k = id(src)
    entry = _cache.get(k)
    if entry is not None and entry[0]() is src:
        return entry[1]
    forms: dict = {}
    with _lock:
        _cache[k] = (weakref.ref(src, lambda _ref, k=k: _cache.pop(k, None)), forms)
    return forms


def _version_key(t: Optional[Tensor]):
    return None if t is None else (t.data_ptr(), t._version, t.dtype, tuple(t.shape))


def invalidate(src: Optional[Tensor] = None) -> None:
    """Drop cached forms (of one scores/mask tensor, or all)."""
    with _lock:
        if src is None:
            _cache.clear()
        else:
            _cache.pop(id(src), None)


def cached_count() -> int:
    return sum(len(forms) for _, forms in list(_cache.values()))


def _build(form: str, weight: Tensor, scores, threshold, mask) -> Tensor:
    """One pass from the mask source to ``form`` (no autograd): the fused
    Triton kernel where Triton runs, else torch ops."""
    with torch.no_grad():
        if scores is not None:
            if _backend.unavailable_reason("triton", scores.device.type) is None:
                from tamt import kernels

                return kernels.binarize(scores, threshold, _BUILT[form], weight=weight)
            m = scores > threshold
        else:
            m = _dense_mask(weight, mask)
        if form == "uint8":
            return m.view(torch.uint8) if m.dtype == torch.bool else (m != 0).to(torch.uint8)
        if form == "packed":
            from . import reference

            return reference.pack_mask(m != 0)
        return torch.where(m != 0, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))


def _dense_mask(weight: Tensor, mask: Tensor) -> Tensor:
    from . import reference

    if mask.dim() == 1 and mask.dtype == torch.uint8 and weight.dim() == 2:
        return reference.unpack_mask(mask, weight.numel()).view(weight.shape)
    return mask.contiguous()


def step_mask(weight: Tensor, *, scores: Optional[Tensor] = None, threshold=None, mask: Optional[Tensor] = None,
              form: str) -> Tensor:
    """The ``form`` ('uint8', 'packed' or 'materialize') of M for the current
    scores and threshold (or fixed mask), built at most once per change."""
    if form not in _BUILT:
        raise ValueError(f"step_mask: form must be one of {tuple(_BUILT)}, got {form!r}")
    if (scores is None) == (mask is None):
        raise ValueError("step_mask: give scores= and threshold=, or mask=")
    if scores is not None and threshold is None:
        raise ValueError("step_mask: scores need a threshold")
    if scores is not None and not isinstance(threshold, Tensor):
        threshold = torch.tensor(float(threshold), dtype=torch.float32, device=scores.device)
    src = scores if scores is not None else mask
    if torch.compiler.is_compiling() or (src.is_cuda and torch.cuda.is_current_stream_capturing()):
        # traced or captured: the build must be part of the graph, every step
        return _build(form, weight, scores, threshold, mask)
    key = (_version_key(src), _version_key(threshold),
           _version_key(weight) if form == "materialize" else (weight.dtype, tuple(weight.shape)))
    forms = _slot(src)
    hit = forms.get(form)
    if hit is not None and hit[0] == key:
        return hit[2]
    built = _build(form, weight, scores, threshold, mask)
    # keep the keyed tensors alive: a freed threshold's address could be
    # reused by the next step's threshold with the same version number
    forms[form] = (key, (threshold, weight), built)
    return built


def prepare(plan: str, weight: Tensor, scores, threshold, mask) -> Optional[Tensor]:
    """The prebuilt tensor a plan's GEMMs read, or None (scores/torch/native)."""
    if plan not in _BUILT:
        return None
    if plan == "packed" and scores is None and mask.dim() == 1:
        return mask  # already bit-packed
    return step_mask(weight, scores=scores, threshold=threshold, mask=mask, form=plan)
