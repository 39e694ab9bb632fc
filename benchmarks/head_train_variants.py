"""TAMT-MLM on a head-less checkpoint: co-trained head (the paper) vs frozen fitted head (tamt's default there).

Same context as the quick demo (all-MiniLM-L6-v2, Wikipedia summaries, MLM head
fitted densely and cached), one sparsity; for each variant: the mask's held-out
MLM / KD loss (the demo's batches, with the fitted head), its distance to the
OMP mask, and the dense-sanity-checked sentiment fine-tuning of the demo over
``--seeds``.  OMP is measured alongside as the reference point.

    python benchmarks/head_train_variants.py --sparsity 0.7 --seeds 0 1
Writes benchmarks/results/head_train_variants_cpu_<date>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import tamt
    import tamt.finetune as ft
    from tamt.demo import demo_config
    from tamt.nn import base_model
    from tamt.pruning.api import build_config, make_context

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--full", action="store_true", help="the full demo's search budget instead of the quick one")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cfg = demo_config(quick=not args.full)
    search = {k: v for k, v in cfg["search"].items()}
    ctx = make_context("default", "default", build_config("tamt-mlm", [args.sparsity], **search))
    pre = {k: v for k, v in cfg["pretrain_eval"].items() if k in ("batches", "batch_size")}
    encoder = base_model(ctx.model)
    ftkw = {k: v for k, v in cfg["finetune"].items()}
    ftkw["progress"] = False
    rows = {}
    variants = [("omp", "omp", {}), ("tamt-mlm train", "tamt-mlm", {"head_train": "train"}),
                ("tamt-mlm frozen", "tamt-mlm", {"head_train": "frozen"})]
    omp_mask = None
    for name, method, extra in variants:
        t = time.perf_counter()
        res = tamt.search(ctx.model, method, args.sparsity, "default", context=ctx, tensorboard=False,
                          progress=False, **{**search, **extra})
        search_s = time.perf_counter() - t
        mask = res.masks if not isinstance(next(iter(res.masks.values())), dict) else next(iter(res.masks.values()))
        if omp_mask is None:
            omp_mask = mask
        ev = tamt.evaluate_pretraining(ctx.model, mask, context=ctx, **pre)
        diff = sum(int((mask[k] != omp_mask[k]).sum()) for k in mask) / sum(m.numel() for m in mask.values())
        scores = []
        for seed in args.seeds:
            r = ft.finetune(encoder, mask, "sentiment", "hub", tokenizer=ctx.tokenizer, seeds=[seed],
                            train_size=cfg["train_sizes"][0], **ftkw)
            scores.append(r.metrics["best"]["score"])
        rows[name] = {"search_s": search_s, "mlm_loss": ev["mlm_loss"], "kd_loss": ev["kd_loss"],
                      "differs_from_omp": diff, "sentiment": scores, "sentiment_mean": float(np.mean(scores)),
                      "sentiment_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else None}
        r = rows[name]
        spread = f" ± {100 * r['sentiment_std']:.1f}" if r["sentiment_std"] is not None else ""
        print(f"{name:<16} MLM {r['mlm_loss']:.3f}  KD {r['kd_loss']:.4f}  differs from OMP {100 * diff:5.2f} %  "
              f"sentiment {100 * r['sentiment_mean']:.1f}{spread} (seeds {args.seeds})", flush=True)
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / \
        f"head_train_variants_cpu_{time.strftime('%Y-%m-%d')}.json"
    from tamt.io import atomic_write_text

    atomic_write_text(out, json.dumps({"args": vars(args), "search": search, "finetune": ftkw, "rows": rows,
                                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
