"""``tamt export``: a subnetwork as a plain Hugging Face checkpoint (pruned weights zeroed)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a mask's subnetwork as a plain Hugging Face checkpoint (pruned weights = 0)",
        description="Apply MASK to the model it was found on and write an ordinary Hugging Face checkpoint "
                    "(config.json, model.safetensors, tokenizer) to OUT, pruned weights stored as exact zeros: "
                    "transformers.AutoModel.from_pretrained(OUT) loads it without tamt. For 2:4 masks, "
                    "tamt.load_sparse(OUT, device='cuda') runs the 2:4 layers as semi-structured sparse GEMMs on "
                    "Ampere+ GPUs. OUT is written next to its destination and renamed into place.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("mask", help="mask file (.safetensors written by tamt search)")
    p.add_argument("--model", default="default",
                   help="the base model the mask was found on: hub name, checkpoint folder or 'default'")
    p.add_argument("--out", required=True, help="output folder for the checkpoint")
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None,
                   help="store the weights in this dtype (default: the model's)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--ignore-fingerprint", action="store_true",
                   help="apply a mask recorded against other base weights")
    p.set_defaults(func=_export)


def _export(args) -> int:
    import json
    from pathlib import Path

    from tamt.export import SIDECAR, export_subnetwork

    out = export_subnetwork(args.mask, args.model, args.out, dtype=args.dtype, overwrite=args.overwrite,
                            ignore_fingerprint=args.ignore_fingerprint)
    side = json.loads((Path(out) / SIDECAR).read_text())
    print(f"wrote {out} (sparsity {side['sparsity']:.4f}, pattern {side['pattern']}); load it with "
          f"transformers.AutoModel.from_pretrained({str(out)!r}) or tamt.load_sparse({str(out)!r}, device='cuda')")
    return 0
