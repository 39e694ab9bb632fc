"""Subnetworks for inference: a plain Hugging Face checkpoint, and a loader that runs 2:4 layers sparse.

:func:`export_subnetwork` applies a mask to its base model and writes an ordinary
Hugging Face checkpoint (``config.json`` + ``model.safetensors`` + the
tokenizer) whose pruned weights are exactly +0.0 and whose other weights are
untouched, so ``transformers.AutoModel.from_pretrained(DIR)`` loads it with no
tamt installed.  A sidecar ``tamt_export.json`` (ignored by transformers)
records which matrices are N:M and where the mask came from.  The folder is
written next to its destination and renamed into place (atomic).

:func:`load_sparse` loads such a folder and, on an NVIDIA GPU with sparse
tensor cores (compute capability >= 8.0) in float16/bfloat16, turns every
2:4 ``nn.Linear`` weight into a ``torch.sparse`` semi-structured tensor
(cuSPARSELt, or CUTLASS when cuSPARSELt is missing), so ``F.linear`` runs the
2:4 sparse GEMM.  Anywhere else (CPU, an older GPU, float32, a torch without
the op) it returns the dense model with the zeros - the same outputs, no
speedup - and says why once (a ``UserWarning``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

SIDECAR = "tamt_export.json"
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


class OutputExistsError(FileExistsError, ValueError):
    """The export folder exists and overwrite was not asked for (a ValueError too, for the CLI's one-line errors)."""


def parse_dtype(dtype):
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose fp32, fp16 or bf16") from None


def _replace_dir(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` folder to ``out``; an existing ``out`` is replaced only with ``overwrite``."""
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_subnetwork(mask, model="default", out=None, *, tokenizer=None, dtype=None, overwrite: bool = False,
           ignore_fingerprint: bool = False) -> Path:
    """Write the subnetwork ``model`` x ``mask`` as a plain Hugging Face checkpoint in ``out``.

    ``mask``: a mask file, a ``MaskFile`` or a {name: bool mask} dict.
    ``model``: the base it was found on - ``"default"``, a checkpoint folder, a
    hub name (loaded as ``AutoModel``: the encoder) or a loaded transformers
    model (exported with whatever heads it has; pass ``tokenizer`` to include
    one).  ``dtype``: fp32 / fp16 / bf16 (default: the model's).  Returns
    ``out``.
    """
    from tamt.masks import MaskFile, apply_mask, load_mask
    from tamt.nn import masked_modules, sparsity_report, unpatch_model
    from tamt.nn.structure import structure_map

    if out is None:
        raise ValueError("export needs an output folder (out=...)")
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if isinstance(mask, (str, os.PathLike)):
        mask = load_mask(mask)
    if isinstance(model, nn.Module):
        if masked_modules(model):
            raise ValueError("export: pass the dense base model (this one is already patched by tamt)")
        import copy

        net = copy.deepcopy(model)
    else:
        from tamt.models import load_encoder, load_tokenizer

        net = load_encoder(model)
        if tokenizer is None:
            tokenizer = load_tokenizer(model)
    apply_mask(net, mask, ignore_fingerprint=ignore_fingerprint)
    structures = structure_map(net)
    report = sparsity_report(net)
    unpatch_model(net)  # bakes where(M, W, +0.0) into plain nn.Linear / nn.Embedding
    dtype = parse_dtype(dtype)
    if dtype is not None:
        net = net.to(dtype)
    meta = mask.metadata if isinstance(mask, MaskFile) else {}
    sidecar = {
        "format": 1,
        "structure": structures,  # {weight name relative to the encoder: "N:M"}
        "pattern": report.pattern,
        "sparsity": report.sparsity,
        "groups_valid": report.groups_valid,
        "mask": {k: meta[k] for k in ("method", "sparsity", "step", "seed", "base_model", "fingerprint",
                                      "tamt_version") if k in meta},
    }
    from tamt import __version__

    sidecar["tamt_version"] = __version__
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        net.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=1))
        _replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------
# loading for inference

_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)


def _semi_structured_class():
    """cuSPARSELt when this torch has it, else CUTLASS (both ship with CUDA builds of torch >= 2.1)."""
    sparse = torch.sparse
    cusparselt = getattr(getattr(torch.backends, "cusparselt", None), "is_available", lambda: False)()
    if cusparselt and hasattr(sparse, "SparseSemiStructuredTensorCUSPARSELT"):
        return sparse.SparseSemiStructuredTensorCUSPARSELT
    return sparse.SparseSemiStructuredTensorCUTLASS


def acceleration_unavailable_reason(device, dtype) -> str | None:
    """Why 2:4 layers cannot run as semi-structured sparse GEMMs here, or None when they can."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"device {device.type!r} has no sparse tensor cores"
    if not torch.cuda.is_available():
        return "CUDA is not available in this torch build/machine"
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured (needs torch >= 2.1)"
    cap = torch.cuda.get_device_capability(device)
    if cap < (8, 0):
        return f"{torch.cuda.get_device_name(device)} (sm_{cap[0]}{cap[1]}) has no sparse tensor cores (needs sm_80+)"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"dtype {dtype} is not supported by the semi-structured GEMMs (use float16 or bfloat16)"
    return None


def _is_two_four(weight: torch.Tensor) -> bool:
    """At most 2 nonzeros in every group of 4 along the input dimension (a 1:4 layer qualifies too)."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def _fits(cls, weight: torch.Tensor) -> bool:
    c = cls._DTYPE_SHAPE_CONSTRAINTS.get(weight.dtype)
    if c is None:
        return False
    r, k = weight.shape
    return r >= c.sparse_min_rows and r % c.sparse_min_rows == 0 and k >= c.sparse_min_cols \
        and k % c.sparse_min_cols == 0


def load_sparse(path, device="cuda", *, dtype=None, model_class=None) -> nn.Module:
    """Load an exported subnetwork for inference; 2:4 Linears run sparse where the hardware allows.

    ``dtype`` defaults to bfloat16 on CUDA and to the checkpoint's dtype
    elsewhere.  ``model_class``: a transformers auto class (default
    ``AutoModel``).  The returned model (eval mode) carries
    ``model.tamt_sparse = {"accelerated": [layer names], "dense": [...],
    "reason": why not (or None)}``.
    """
    from transformers import AutoModel

    from tamt.nn import base_model

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder (no config.json); write one with tamt export")
    dev = torch.device(device)
    dtype = parse_dtype(dtype)
    if dtype is None and dev.type == "cuda" and torch.cuda.is_available():
        dtype = torch.bfloat16
    kwargs = {"trust_remote_code": False}
    if dtype is not None:
        kwargs["dtype"] = dtype
    cls = model_class or AutoModel
    model = cls.from_pretrained(str(path), **kwargs)
    if dev.type != "cuda" or torch.cuda.is_available():
        model = model.to(dev)
    model.eval()
    enc = base_model(model)
    # The 2:4 layers are found from the zeros themselves (any N:M mask with N/M <= 1/2 and M = 4, or a
    # checkpoint pruned elsewhere, qualifies): converting them cannot change an output.
    linears = {n: m for n, m in enc.named_modules() if isinstance(m, nn.Linear)}
    candidates = [n for n, m in linears.items() if _is_two_four(m.weight)]
    info = {"accelerated": [], "dense": sorted(set(linears) - set(candidates)), "reason": None}
    model.tamt_sparse = info
    if not candidates:
        info["reason"] = "no 2:4 Linear layers in this checkpoint"
        _warn_once(f"load_sparse: {path}: {info['reason']}; loaded it dense")
        return model
    reason = acceleration_unavailable_reason(dev, next(model.parameters()).dtype)
    if reason is None:
        sparse_cls = _semi_structured_class()
        for name in candidates:
            lin = linears[name]
            w = lin.weight.detach().contiguous()
            if not _fits(sparse_cls, w):
                info["dense"].append(name)
                continue
            try:
                lin.weight = nn.Parameter(sparse_cls.from_dense(w), requires_grad=False)
            except (RuntimeError, NotImplementedError) as exc:  # e.g. a torch built without cuSPARSELt kernels
                reason = f"converting {name} failed ({type(exc).__name__}: {exc})"
                break
            info["accelerated"].append(name)
    if reason is not None:
        for name in info["accelerated"]:  # all or nothing: restore the dense weights
            lin = linears[name]
            lin.weight = nn.Parameter(lin.weight.to_dense(), requires_grad=False)
        info["accelerated"] = []
        info["dense"] = sorted(linears)
        info["reason"] = reason
        _warn_once(f"load_sparse: cannot run the 2:4 layers as sparse GEMMs: {reason}. Loaded the dense model "
                   "with the pruned weights as zeros (same outputs, no speedup); use device='cuda' on an Ampere or "
                   "newer NVIDIA GPU with dtype bfloat16/float16 to accelerate them.")
    return model
