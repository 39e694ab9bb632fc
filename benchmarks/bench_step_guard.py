"""Cost of the per-step NaN/Inf guard (tamt.pruning.numerics.StepGuard) on the CPU search step.

The guard adds, per optimizer step, one host read of the gradient norm (which
grad clipping computes anyway) and one fused norm over the trained tensors
(``torch._foreach_norm`` over the scores).  This times both calls inside real
search steps and prints their median share of the median step time, measured
in the same run (the machine's load cancels out of the ratio).

    python benchmarks/bench_step_guard.py                  # embedded MiniLM-L6, cpu-small shapes (batch 8 x 64)
    python benchmarks/bench_step_guard.py --model bert-base-shape --steps 6   # random BERT-base weights
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch


def _model(name: str):
    if name == "bert-base-shape":  # BERT-base's 85M masked weights; random values are enough to time
        from transformers import BertConfig, BertModel

        from tamt.models import load_tokenizer

        torch.manual_seed(0)
        return BertModel(BertConfig()), load_tokenizer("default")
    return name, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="'default' (MiniLM-L6), 'bert-base-shape', or a folder")
    ap.add_argument("--method", default="tamt-kd")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tamt.pruning import SearchConfig, Searcher, prepare

    model, tok = _model(args.model)
    ctx = prepare(model, "default", tokenizer=tok, block_size=64, max_blocks=400)
    cfg = SearchConfig(method=args.method, sparsities=(0.5,), steps=args.steps + 2, batch_size=8, block_size=64,
                       lr=3e-4, score_init="omp-rank", progress=False, tensorboard=False, dropout=False)
    s = Searcher(ctx, cfg, sparsity=0.5)
    guard, spent = s.guard, []
    before, after = guard.before_update, guard.after_update

    def timed(fn):
        def call(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[-1] += time.perf_counter() - t
        return call

    guard.before_update, guard.after_update = timed(before), timed(after)
    step_times = []
    for i in range(args.steps + 2):
        spent.append(0.0)
        t = time.perf_counter()
        s.step()
        if i >= 2:  # warm-up: first steps allocate optimizer state
            step_times.append(time.perf_counter() - t)
    guard_times = spent[2:]
    n_scores = sum(m.scores.numel() for _, m in __import__("tamt").nn.masked_modules(s.model))
    res = {"model": str(args.model), "method": args.method, "trained_values": n_scores, "steps": args.steps,
           "step_ms_median": 1e3 * statistics.median(step_times),
           "guard_ms_median": 1e3 * statistics.median(guard_times),
           "guard_share_pct": 100 * statistics.median(g / t for g, t in zip(guard_times, step_times)),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": platform.processor() or "?"}
    print(f"{res['model']} {args.method}: {n_scores / 1e6:.1f}M trained values; median step {res['step_ms_median']:.0f} ms,"
          f" guard {res['guard_ms_median']:.2f} ms = {res['guard_share_pct']:.2f} % of the step "
          f"({args.steps} steps, {res['threads']} threads)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
