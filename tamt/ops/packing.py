"""Bit-packed masks: 1 bit per weight, little bit order, row-major.

Element i of the flattened mask is bit ``i & 7`` of byte ``i >> 3``; pad bits
of the last byte are zero.  This is the on-disk format of ``tamt.save_mask``
and a mask form every masked op accepts directly.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _backend, reference

_SUPPORTED = ("torch", "native")


@torch.library.custom_op("tamt::pack_mask", mutates_args=())
def _pack(mask: Tensor, backend: str) -> Tensor:
    if backend == "native":
        from tamt import _native

        return _native.pack_mask(mask)
    return reference.pack_mask(mask)


@_pack.register_fake
def _(mask, backend):
    return mask.new_empty((mask.numel() + 7) // 8, dtype=torch.uint8)


@torch.library.custom_op("tamt::unpack_mask", mutates_args=())
def _unpack(packed: Tensor, numel: int, backend: str) -> Tensor:
    if backend == "native":
        from tamt import _native

        return _native.unpack_mask(packed, numel)
    return reference.unpack_mask(packed, numel)


@_unpack.register_fake
def _(packed, numel, backend):
    return packed.new_empty(numel, dtype=torch.bool)


def pack_mask(mask: Tensor) -> Tensor:
    """bool (or 0/1 integer) tensor of any shape -> uint8 tensor of ceil(n/8) bytes."""
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all()):
            raise TypeError(f"pack_mask expects a bool (or 0/1 integer) tensor, got {mask.dtype}")
        mask = mask.bool()
    mask = mask.contiguous()
    backend = _backend.resolve("pack", mask.device.type, _SUPPORTED)
    return _pack(mask.reshape(-1), backend)


def unpack_mask(packed: Tensor, shape) -> Tensor:
    """Inverse of ``pack_mask``: uint8 bytes -> bool tensor of ``shape``."""
    shape = torch.Size(shape if not isinstance(shape, int) else (shape,))
    numel = shape.numel()
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise TypeError(f"unpack_mask expects a 1-D uint8 tensor, got {packed.dtype} of shape {tuple(packed.shape)}")
    if packed.numel() != (numel + 7) // 8:
        raise ValueError(
            f"packed mask has {packed.numel()} bytes but shape {tuple(shape)} needs {(numel + 7) // 8}"
            " (is this mask for another model?)"
        )
    backend = _backend.resolve("pack", packed.device.type, _SUPPORTED)
    return _unpack(packed.contiguous(), numel, backend).view(shape)
