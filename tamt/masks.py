"""Masks on disk: bit-packed safetensors + metadata + a fingerprint of the base weights.

File layout (safetensors, loads without executing code):
  tensors:  one uint8 tensor per masked matrix, named like the weight relative
            to the base encoder (``encoder.layer.0.attention.self.query.weight``),
            1 bit per weight (``tamt.ops.pack_mask`` format);
  metadata: ``tamt_format`` ("1"), ``shapes`` (JSON name -> shape), and
            ``method``, ``sparsity``, ``step``, ``seed``, ``base_model``,
            ``fingerprint``, ``tamt_version`` plus any user keys (JSON values);
            ``structure`` = {weight name: "N:M"} for the N:M matrices (absent
            when every matrix is unstructured).  Loading checks that every
            group of a claimed N:M matrix keeps exactly N and refuses the file
            otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from tamt import __version__, ops

FORMAT_VERSION = "1"
_RESERVED = ("tamt_format", "shapes")


@dataclass
class MaskFile:
    """A loaded mask: {weight name: bool tensor} and its metadata."""

    masks: dict[str, Tensor]
    metadata: dict = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(int(m.sum()) for m in self.masks.values())
        return 1.0 - kept / total if total else 0.0

    @property
    def structures(self) -> dict[str, str]:
        """{weight name: "N:M"} of the N:M matrices (empty: all unstructured)."""
        return dict(self.metadata.get("structure") or {})


def _check_structures(structures, masks: dict, source: str) -> dict[str, str]:
    """Validate a {name: "N:M"} claim against the masks; returns it normalised ("2:4" strings)."""
    from tamt.nn.structure import check_structured_mask, parse_structure, structure_name

    if not structures:
        return {}
    if not isinstance(structures, dict):
        raise ValueError(f"{source}: the 'structure' metadata must map matrix names to 'N:M', got "
                         f"{type(structures).__name__}")
    out = {}
    for name, st in structures.items():
        if name not in masks:
            raise ValueError(f"{source}: structure given for {name!r}, which has no mask")
        try:
            nm = parse_structure(st)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: matrix {name!r}: {exc}") from None
        if nm is None:
            continue
        check_structured_mask(name, masks[name], nm, source=source)
        out[name] = structure_name(nm)
    return out


def fingerprint(model: nn.Module, names=None) -> str:
    """A short hash of the base weights of the masked matrices (names, shapes, sampled values).

    ``names`` (weight names relative to the base encoder) restricts it to the
    matrices a mask covers, so a mask found on ``BertForMaskedLM`` (no pooler)
    matches ``BertForSequenceClassification`` (with pooler) of the same
    checkpoint.  Sampling (first 1,024 values plus a stride through the rest)
    keeps it fast for BERT-large while any other checkpoint changes it.
    """
    from tamt.nn import base_model
    from tamt.nn.families import role_of

    base = base_model(model)
    if names is None:
        names = [f"{n}.weight" for n, m in base.named_modules() if role_of(n) is not None and hasattr(m, "weight")]
    h = hashlib.sha256()
    for name in sorted(names):
        try:
            weight = base.get_parameter(name)
        except AttributeError:
            h.update(f"{name}:missing".encode())
            continue
        w = weight.detach().reshape(-1)
        stride = max(1, w.numel() // 4096)
        sample = torch.cat([w[:1024], w[::stride]]).float().cpu().contiguous()
        h.update(f"{name}:{tuple(weight.shape)}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "config", None)
    return str(getattr(cfg, "_name_or_path", "") or type(model).__name__)


def save_mask(path: str | os.PathLike, model_or_masks, metadata: dict | None = None) -> Path:
    """Write a mask file atomically; ``model_or_masks`` is a patched model or {name: bool mask}."""
    from safetensors.torch import save_file

    from tamt.io import atomic_path
    from tamt.nn import get_masks
    from tamt.nn.structure import structure_map

    meta = dict(metadata or {})
    if isinstance(model_or_masks, nn.Module):
        masks = get_masks(model_or_masks)
        if not masks:
            raise ValueError("save_mask: the model has no masked modules (patch it with tamt.patch_model first)")
        meta.setdefault("base_model", _model_name(model_or_masks))
        meta.setdefault("fingerprint", fingerprint(model_or_masks, masks.keys()))
        meta.setdefault("structure", structure_map(model_or_masks))
    else:
        masks = dict(model_or_masks)
    structures = _check_structures(meta.pop("structure", None), masks, "save_mask")
    if structures:  # never write a file that claims N:M groups it does not have
        meta["structure"] = structures
    for key in _RESERVED:
        meta.pop(key, None)
    tensors, shapes = {}, {}
    for name, m in masks.items():
        if m.dtype != torch.bool:
            raise TypeError(f"save_mask: mask {name!r} must be bool, got {m.dtype}")
        tensors[name] = ops.pack_mask(m.detach()).cpu().contiguous()
        shapes[name] = list(m.shape)
    total = sum(m.numel() for m in masks.values())
    meta.setdefault("sparsity", 1.0 - sum(int(m.sum()) for m in masks.values()) / max(total, 1))
    meta.setdefault("tamt_version", __version__)
    header = {k: json.dumps(v) for k, v in meta.items()}
    header.update(tamt_format=FORMAT_VERSION, shapes=json.dumps(shapes))
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def load_mask(path: str | os.PathLike) -> MaskFile:
    """Read a mask file written by ``save_mask`` (no code is executed)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable safetensors mask file ({exc})") from None
    if header.get("tamt_format") != FORMAT_VERSION or "shapes" not in header:
        raise ValueError(f"{path} is not a tamt mask file (no tamt_format/shapes metadata); write masks with tamt.save_mask")
    shapes = json.loads(header["shapes"])
    masks = {}
    for name, shape in shapes.items():
        if name not in tensors:
            raise ValueError(f"{path}: mask {name!r} listed in the metadata is missing")
        masks[name] = ops.unpack_mask(tensors[name], shape)
    meta = {}
    for k, v in header.items():
        if k in _RESERVED:
            continue
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    if "structure" in meta:
        meta["structure"] = _check_structures(meta["structure"], masks, str(path))
    return MaskFile(masks=masks, metadata=meta)


def apply_mask(model: nn.Module, mask, *, ignore_fingerprint: bool = False,
               structures: dict | None = None) -> nn.Module:
    """Fix ``model``'s masks from a mask file path, a ``MaskFile`` or a {name: mask} dict.

    The model is patched first if needed.  Every masked module takes the
    mask's structure: N:M where the file's ``structure`` metadata (or
    ``structures`` = {name: "N:M"} for a dict) says so, unstructured otherwise.  A mask whose matrix names or shapes
    don't fit raises; a mask recorded against other base weights (fingerprint)
    raises unless ``ignore_fingerprint=True`` (e.g. on purpose after
    fine-tuning changed the weights).
    """
    from tamt.nn import masked_modules, patch_model, set_masks

    if isinstance(mask, (str, os.PathLike)):
        mask = load_mask(mask)
    if isinstance(mask, MaskFile):
        recorded = mask.metadata.get("fingerprint")
        masks = mask.masks
        structures = mask.structures if structures is None else structures
    else:
        recorded, masks = None, dict(mask)
    structures = _check_structures(structures, masks, "apply_mask")
    from tamt.nn import base_model

    base = base_model(model)
    for name, m in masks.items():
        try:
            weight = base.get_parameter(name)
        except AttributeError:
            raise ValueError(
                f"mask matrix {name!r} does not exist in {type(model).__name__} (is this mask for another model?)"
            ) from None
        if m.dim() != 1 and tuple(m.shape) != tuple(weight.shape):
            raise ValueError(
                f"mask {name!r} has shape {tuple(m.shape)} but the model's weight has {tuple(weight.shape)} "
                "(is this mask for another model?)"
            )
    if recorded and not ignore_fingerprint:
        actual = fingerprint(model, masks.keys())
        if actual != recorded:
            raise ValueError(
                f"this mask was found on other base weights (fingerprint {recorded}, model has {actual}; "
                f"mask base model: {mask.metadata.get('base_model', '?')}). Load the same checkpoint, or pass "
                "ignore_fingerprint=True (CLI: --ignore-fingerprint) if that is intended."
            )
    if not masked_modules(model):
        roles = set()
        from tamt.nn.families import role_of

        for name in masks:
            roles.add(role_of(name.rsplit(".", 1)[0]) or "?")
        if "?" in roles:
            bad = [n for n in masks if role_of(n.rsplit(".", 1)[0]) is None]
            raise ValueError(f"mask names {bad[:3]} are not TAMT target matrices of a BERT-family model")
        patch_model(model, 0.0, targets=sorted(roles), mode="fixed")
    for name, m in masked_modules(model):
        m.set_structure(structures.get(f"{name}.weight"), name=name)
    set_masks(model, masks)
    return model
