#!/usr/bin/env python
"""Held-out pre-training quality of 2:4 subnetworks: TAMT-2:4 vs the one-shot 2:4 baselines.

On one model and corpus (default: the embedded all-MiniLM-L6-v2 and its
Wikipedia-summaries corpus) this finds sparsity-0.5 masks with

  * 2:4 on every masked Linear (word embeddings unstructured at 0.5):
    tamt-kd, tamt-mlm (trained scores), omp (2 largest |W| per group),
    magnitude-row (identical to omp on the Linears; it differs only on the
    embeddings: per token row instead of the whole matrix), wanda (|W| * ||X||
    per group, calibration blocks drawn by seed), random;
  * unstructured 0.5 as the reference line: omp, magnitude-row, wanda,
    tamt-kd, tamt-mlm;

and evaluates every mask the same way (``tamt.pruning.api.evaluate_context``:
every held-out block (or the first ``--eval-batches`` x 16), MLM masking
seeded, the same MLM head for every mask - MiniLM has none, so one is fitted
densely for ``--head-fit-steps`` steps first -, KD = mean 1 - cos to the
dense model's hidden states).  Methods with randomness (TAMT: data order, MLM
masking, dropout; random; Wanda's calibration sample) run ``--seeds`` seeds
and report mean and standard deviation; OMP and magnitude-row are
deterministic (one run).  The dense model is evaluated as the sanity line.

  python benchmarks/nm_quality.py [--preset cpu-small] [--seeds 0 1 2] [--out PATH]
  python benchmarks/nm_quality.py --report PATH.json     # the README table (Markdown) from a result file

Results are saved after every run (resumable: rows already in --out are skipped);
the masks go to --mask-dir (default runs/nm_quality/) for re-evaluation.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STOCHASTIC = {"tamt-kd", "tamt-mlm", "random", "wanda"}
PLAN = [  # (method, structure)
    ("tamt-kd", "2:4"), ("tamt-mlm", "2:4"), ("omp", "2:4"), ("magnitude-row", "2:4"), ("wanda", "2:4"),
    ("random", "2:4"),
    ("tamt-kd", "unstructured"), ("tamt-mlm", "unstructured"), ("omp", "unstructured"),
    ("magnitude-row", "unstructured"), ("wanda", "unstructured"),
]


def _evaluate(ctx, masks, structures, batches):
    batches = batches or None  # 0: the whole held-out split
    from tamt.masks import apply_mask
    from tamt.nn import sparsity_report
    from tamt.pruning.api import evaluate_context

    model = copy.deepcopy(ctx.model)
    if masks is not None:
        apply_mask(model, masks, structures=structures)
    res = evaluate_context(ctx, model, batches=batches, batch_size=16)
    if masks is not None:
        rep = sparsity_report(model)
        res.update(sparsity=rep.sparsity, pattern=rep.pattern, groups_valid=rep.groups_valid)
    return res


def run(args) -> dict:
    from tamt.nn.structure import structure_map
    from tamt.pruning import Searcher, build_config
    from tamt.pruning.api import make_context

    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    done = {(r["method"], r["structure"], r["seed"]) for r in data["rows"]}
    common = dict(preset=args.preset, progress=False, tensorboard=False, eval_every=None)
    head = {} if args.head_fit_steps is None else {"head_fit_steps": args.head_fit_steps}
    t = time.perf_counter()
    ctx = make_context(args.model, args.corpus, build_config("tamt-mlm", 0.5, **common, **head))
    data.update(environment={"python": platform.python_version(), "torch": torch.__version__,
                             "threads": torch.get_num_threads(), "machine": platform.machine(),
                             "note": "shared 2-core CPU; wall times inflated by other jobs"},
                args=vars(args), context_s=time.perf_counter() - t, info=ctx.info,
                train_blocks=len(ctx.train), validation_blocks=len(ctx.validation))
    if ("dense", "-", 0) not in done:
        data["rows"].append({"method": "dense", "structure": "-", "seed": 0, "search_s": 0.0,
                             **_evaluate(ctx, None, None, args.eval_batches)})
    for method, structure in PLAN:
        if args.methods and method not in args.methods:
            continue
        seeds = args.seeds if method in STOCHASTIC else args.seeds[:1]
        for seed in seeds:
            if (method, structure, seed) in done:
                continue
            cfg = build_config(method, None if structure != "unstructured" else 0.5, structure=structure, seed=seed,
                               calibration_blocks=args.calibration_blocks, **common)
            t = time.perf_counter()
            searcher = Searcher(ctx, cfg, sparsity=cfg.sparsities[0]).run()
            search_s = time.perf_counter() - t
            masks = searcher.masks[cfg.sparsities[0]]
            structures = structure_map(searcher.model)
            from tamt.masks import save_mask

            save_mask(Path(args.mask_dir) / f"{searcher.label}_seed{seed}.safetensors", masks,
                      {**searcher.metadata(cfg.sparsities[0], searcher.step_count), "structure": structures})
            row = {"method": method, "structure": structure, "seed": seed, "search_s": search_s,
                   "steps": searcher.step_count, **_evaluate(ctx, masks, structures, args.eval_batches)}
            data["rows"].append(row)
            print(json.dumps(row), flush=True)
            from tamt.io import atomic_write_text

            atomic_write_text(out, json.dumps(data, indent=1, default=str))
    from tamt.io import atomic_write_text

    atomic_write_text(out, json.dumps(data, indent=1, default=str))
    return data


def report(data: dict) -> str:
    """Markdown table: mean ± std over seeds (n = runs)."""
    groups: dict[tuple, list] = {}
    for r in data["rows"]:
        groups.setdefault((r["structure"], r["method"]), []).append(r)

    def cell(rows, key, digits=3):
        vals = [r[key] for r in rows]
        if len(vals) == 1:
            return f"{vals[0]:.{digits}f}"
        return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"

    order: dict[str, int] = {}
    for m, _ in PLAN:
        order.setdefault(m, len(order))
    lines = ["| structure | method | runs | MLM loss | KD loss | MLM acc | search s |", "|---|---|---|---|---|---|---|"]
    keys = sorted(groups, key=lambda k: ({"-": 0, "2:4": 1}.get(k[0], 2), order.get(k[1], -1)))
    for st, method in keys:
        rows = groups[(st, method)]
        lines.append(f"| {st} | {method} | {len(rows)} | {cell(rows, 'mlm_loss')} | {cell(rows, 'kd_loss', 4)} | "
                     f"{cell(rows, 'mlm_accuracy')} | {statistics.mean(r['search_s'] for r in rows):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--corpus", default="default")
    ap.add_argument("--preset", default="cpu-small", help="search preset (budget) for every method")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="*", default=None, help="restrict to these methods")
    ap.add_argument("--eval-batches", type=int, default=0, help="held-out batches of 16 blocks (0: all)")
    ap.add_argument("--head-fit-steps", type=int, default=300,
                    help="dense fitting of the MLM head the model lacks (default 300; the preset's if negative)")
    ap.add_argument("--mask-dir", default=str(REPO / "runs" / "nm_quality"), help="where the masks are saved")
    ap.add_argument("--calibration-blocks", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON (default benchmarks/results/nm_quality_cpu_<date>.json)")
    ap.add_argument("--report", default=None, metavar="JSON", help="print the Markdown table of a result file")
    args = ap.parse_args(argv)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.head_fit_steps is not None and args.head_fit_steps < 0:
        args.head_fit_steps = None
    if args.out is None:
        args.out = str(REPO / "benchmarks" / "results" / f"nm_quality_cpu_{time.strftime('%Y%m%d')}.json")
    data = run(args)
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
