"""Public ops of tamt (a contract: other parts and external checks call them).

- ``masked_linear(x, weight, bias=None, *, scores=None, threshold=None, mask=None)``
- ``masked_embedding(ids, weight, *, scores=None, threshold=None, mask=None, padding_idx=None)``
- ``topk_threshold(scores, sparsity)`` / ``topk_thresholds(list_of_scores, sparsities)``
- ``pack_mask(bool_tensor)`` / ``unpack_mask(packed, shape)``
- ``nm_mask(scores, n, m)``: the N largest of every group of M along the last dim (N:M masks, ``tamt.ops.nm``)

Backends: see ``tamt.ops._backend`` (``set_backend``, ``use_backend``, env
``TAMT_BACKEND``).  Plain PyTorch references live in ``tamt.ops.reference``.

Mask forms of the masked GEMMs and the once-per-step mask cache: see
``tamt.ops.mask_forms`` (``set_mask_form``, ``use_mask_form``, env
``TAMT_MASK_FORM``, ``step_mask``); the measured table ``auto`` reads:
``tamt.ops.auto_table``.
"""
from ._backend import BACKENDS, get_backend, set_backend, use_backend
from .masked_embedding import masked_embedding
from .mask_forms import MASK_FORMS, get_mask_form, set_mask_form, step_mask, use_mask_form
from .masked_linear import masked_linear
from .nm import nm_mask
from .packing import pack_mask, unpack_mask
from .thresholds import topk_threshold, topk_thresholds, topk_thresholds_and_counts

__all__ = [
    "BACKENDS",
    "get_backend",
    "set_backend",
    "use_backend",
    "masked_linear",
    "MASK_FORMS",
    "get_mask_form",
    "set_mask_form",
    "use_mask_form",
    "step_mask",
    "masked_embedding",
    "topk_threshold",
    "topk_thresholds",
    "topk_thresholds_and_counts",
    "pack_mask",
    "unpack_mask",
    "nm_mask",
]
