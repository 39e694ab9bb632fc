"""Search cost of TAMT vs IMP (and the OMP / random baselines) on the pre-training objective.

For one model, corpus and sparsity this runs IMP and the TAMT variants on the
same data, records wall time, steps and held-out MLM/KD loss along the way, and
reports the speedup = IMP's total search time / the search time TAMT needs to
reach a held-out loss at least as good as IMP's final subnetwork (MLM loss for
TAMT-MLM, KD loss for TAMT-KD and TAMT-MLM+KD), only where IMP beats OMP (else
"IMP under-trained"), and TAMT's loss at IMP's time; see tamt.analysis.search_cost.  OMP and random masks are
evaluated too, so the table also checks the paper's ordering.

CPU (here):  python benchmarks/search_vs_imp.py --preset cpu-small --sparsity 0.5
GPU, BERT-base shapes:  python benchmarks/search_vs_imp.py --model bert-base-uncased \
    --corpus wikitext:wikitext-103-raw-v1 --preset paper --steps 3000 --imp-interval 500
Writes benchmarks/results/search_vs_imp_<device>_<time>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tamt.pruning import Searcher, build_config  # noqa: E402
from tamt.pruning.api import evaluate_context, make_context  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="hub name / checkpoint folder / 'default' (MiniLM)")
    ap.add_argument("--corpus", default="default", help="corpus spec (see 'tamt search --help')")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--methods", nargs="+", default=["imp", "tamt-mlm", "tamt-kd", "omp", "random"])
    ap.add_argument("--preset", default="cpu-small", help="search preset (cpu-small, quick, paper)")
    ap.add_argument("--steps", type=int, default=None, help="TAMT steps (default: the preset's)")
    ap.add_argument("--imp-interval", type=int, default=None, help="IMP steps per prune round (default: preset's)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None, help="TAMT score lr (default: the preset's)")
    ap.add_argument("--eval-every", type=int, default=None, help="TAMT held-out evaluation interval (steps)")
    ap.add_argument("--eval-batches", type=int, default=None)
    ap.add_argument("--head-fit-steps", type=int, default=None)
    ap.add_argument("--max-blocks", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    common = {k: v for k, v in dict(batch_size=args.batch_size, block_size=args.block_size,
                                    eval_batches=args.eval_batches, head_fit_steps=args.head_fit_steps,
                                    max_blocks=args.max_blocks, seed=args.seed).items() if v is not None}
    base = build_config("tamt-kd", args.sparsity, preset=args.preset, steps=args.steps, **common)
    t = time.perf_counter()
    ctx = make_context(args.model, args.corpus, build_config("imp", args.sparsity, preset=args.preset, **common))
    setup_s = time.perf_counter() - t
    ev_kw = dict(batches=base.eval_batches, batch_size=base.batch_size, seed=args.seed)
    dense = evaluate_context(ctx, ctx.model, **ev_kw)
    rows, curves = {}, {}
    for method in args.methods:
        extra = {}
        if method.startswith("tamt"):
            extra = dict(eval_every=args.eval_every or base.eval_every or max(1, (base.steps or 100) // 5))
            if args.lr is not None:
                extra["lr"] = args.lr
        if method == "imp" and args.imp_interval is not None:
            extra["imp_interval"] = args.imp_interval
        cfg = build_config(method, args.sparsity, preset=args.preset, steps=args.steps, progress=False,
                           tensorboard=False, **{**common, **extra})
        if method == "imp":
            cfg.eval_every = None
        curve = []
        wall = time.perf_counter()
        s = Searcher(ctx, cfg, sparsity=args.sparsity)
        if s.total_steps and method.startswith("tamt"):
            e0 = evaluate_context(ctx, s.model, **ev_kw)
            curve.append({"step": 0, "search_s": 0.0, **e0})  # the OMP start
            s.callbacks.append(lambda srch, ev, p, c=curve: ev == "eval" and c.append(
                {"step": p["step"], "search_s": p["time"], "mlm_loss": p["eval_mlm_loss"],
                 "mlm_accuracy": p["eval_mlm_accuracy"], "kd_loss": p["eval_kd_loss"]}))
        s.run()
        final = evaluate_context(ctx, s.model, **ev_kw)
        rows[method] = {"steps": s.step_count, "search_s": round(s.elapsed, 3),
                        "wall_s": round(time.perf_counter() - wall, 3), **final}
        curves[method] = curve
        print(f"{method:<12} steps={s.step_count:<5} search={s.elapsed:7.1f}s  MLM={final['mlm_loss']:.4f} "
              f"acc={final['mlm_accuracy']:.4f} KD={final['kd_loss']:.4f}", flush=True)

    # time to equal quality, the same code path as `tamt demo` (tamt.analysis.search_cost)
    from tamt.analysis.search_cost import render as render_cost, time_to_quality

    speedups = {}
    if "imp" in rows and "omp" in rows:
        for method in [m for m in rows if m.startswith("tamt")]:
            speedups[method] = time_to_quality(method, args.sparsity, tamt_curve=curves[method], imp=rows["imp"],
                                               omp=rows["omp"])
    print(f"\nsparsity {args.sparsity}, model {ctx.info['base_model']}, dense: MLM {dense['mlm_loss']:.4f} "
          f"KD {dense['kd_loss']:.4f}")
    print(f"{'method':<12} {'steps':>6} {'search s':>9} {'MLM loss':>9} {'MLM acc':>8} {'KD loss':>8}")
    for m, r in rows.items():
        print(f"{m:<12} {r['steps']:>6} {r['search_s']:>9.1f} {r['mlm_loss']:>9.4f} {r['mlm_accuracy']:>8.4f} "
              f"{r['kd_loss']:>8.4f}")
    if speedups:
        print("\nsearch cost, time to equal quality (IMP must beat OMP on the loss to be a baseline):")
        print(render_cost(list(speedups.values())))
    elif "imp" in rows:
        print("\n(no OMP row: IMP cannot be checked against OMP, so no speedup is reported; add omp to --methods)")

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or '?'}, " \
        f"{torch.get_num_threads()} threads)"
    import transformers

    rec = {"args": vars(args), "device": device, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "setup_s": setup_s, "info": ctx.info, "dense": dense,
           "config": base.to_dict(), "results": rows, "curves": curves, "speedups": speedups,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / \
        f"search_vs_imp_{'cuda' if torch.cuda.is_available() else 'cpu'}_s{args.sparsity}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    from tamt.io import atomic_write_text

    atomic_write_text(out, json.dumps(rec, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
