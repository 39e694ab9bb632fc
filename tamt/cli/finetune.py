"""``tamt finetune`` and ``tamt sweep``: downstream transfer of subnetworks."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


class _Seeds(argparse.Action):
    """``--seeds 1 2``, ``--seeds 1,2`` and ``--seeds 1 --seeds 2`` all mean seeds 1 and 2 (repeats append)."""

    def __call__(self, parser, namespace, values, option_string=None):
        seeds = list(getattr(namespace, self.dest) or [])
        for text in values:
            for part in text.replace(",", " ").split():
                try:
                    seeds.append(int(part))
                except ValueError:
                    parser.error(f"{option_string}: {part!r} is not a whole number (e.g. --seeds 1 2 3)")
        setattr(namespace, self.dest, seeds)


def register(subparsers) -> None:
    from tamt.finetune.config import PRESETS, TASKS

    p = subparsers.add_parser(
        "finetune", help="fine-tune a subnetwork (mask fixed) on a GLUE task or SQuAD",
        description="Fine-tune BASE with MASK fixed (pruned weights stay zero; surviving weights, biases, "
                    "LayerNorm and a fresh task head train). Reports the official metrics, best-dev and final.")
    p.add_argument("--model", default="default", help="checkpoint folder, hub name or 'default' (embedded MiniLM)")
    p.add_argument("--mask", default="none", help="mask file (tamt search output) or 'none' for the dense model")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--data", default="hub", help="'hub' or a folder with the official GLUE / SQuAD files")
    p.add_argument("--seeds", nargs="+", action=_Seeds, default=None, metavar="SEED",
                   help="fine-tuning seeds, distinct: '--seeds 1 2 3' or '--seeds 1,2,3' (repeated flags add up)")
    p.add_argument("--train-size", type=int, default=None,
                   help="subsample the train split to this many examples (data scarcity; default: all)")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-seq-length", type=int, default=None)
    p.add_argument("--doc-stride", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None, help="steps between dev evaluations")
    p.add_argument("--eval-size", type=int, default=None, help="cap the dev set (cheap runs)")
    p.add_argument("--warmup-ratio", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--select-metric", default=None,
                   help="dev metric the best checkpoint is chosen by (default: the task's main metric; MNLI: "
                        "matched_accuracy, the paper preset: mismatched_accuracy as the reference reports)")
    p.add_argument("--optimizer", choices=["adamw", "adamw-hf"], default=None,
                   help="adamw: torch AdamW; adamw-hf: the HF AdamW of the reference's fine-tuning scripts")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="'paper': the reference's setup (eval every 50 steps, MNLI 500, SQuAD 1000, wd 0, HF AdamW, "
                        "seeds 1,2,3); 'cpu-small': cheap CPU runs")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--torch-dropout", action="store_true",
                   help="CPU: torch's dropout instead of tamt's Philox kernel (same distribution, slower)")
    p.add_argument("--save-model", action="store_true", help="save the fine-tuned model (mask baked in) under --out")
    p.add_argument("--ignore-fingerprint", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=None, help="folder for result.json, log.jsonl (and the model)")
    p.add_argument("--overwrite", action="store_true", help="replace a fine-tuning run already in --out")
    p.set_defaults(func=_finetune)

    s = subparsers.add_parser(
        "sweep", help="methods x sparsities x tasks x seeds: search, pre-training eval, fine-tuning, report",
        description="Run a sweep config (JSON/YAML; see tamt.analysis.sweep). Resumable: finished cells "
                    "are skipped. Writes results.csv/json, summary.csv, report.md and plots under --out.")
    s.add_argument("config", help="sweep config file (.json, or .yaml with PyYAML)")
    s.add_argument("--out", required=True)
    s.add_argument("--no-resume", action="store_true", help="recompute every cell")
    s.add_argument("--no-plots", action="store_true")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=_sweep)


def _finetune(args) -> int:
    import tamt.finetune as ft

    overrides = {k: getattr(args, k) for k in ("max_steps", "lr", "batch_size", "max_seq_length", "doc_stride",
                                               "eval_every", "eval_size", "warmup_ratio", "weight_decay", "device",
                                               "select_metric", "optimizer")}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.threads:
        overrides["num_threads"] = args.threads
    if args.torch_dropout:
        overrides["fast_dropout"] = False
    res = ft.finetune(args.model, None if args.mask == "none" else args.mask, args.task, args.data,
                      train_size=args.train_size, epochs=args.epochs, seeds=args.seeds, out=args.out,
                      preset=args.preset, save_model=args.save_model or None,
                      ignore_fingerprint=args.ignore_fingerprint, progress=not args.no_progress,
                      overwrite=args.overwrite, **overrides)
    print(res)
    if args.out:
        print(f"wrote {Path(args.out) / 'result.json'}")
    return 0


def _sweep(args) -> int:
    from tamt.analysis.plots import describe_correlation
    from tamt.analysis.sweep import run_sweep

    res = run_sweep(args.config, args.out, resume=not args.no_resume, progress=not args.no_progress,
                    plots=not args.no_plots)
    print(res.render())
    for loss, c in res.correlations.items():
        print(f"{loss} vs score: {describe_correlation(c, 3)}")
    print(f"wrote {Path(args.out) / 'results.csv'}, {Path(args.out) / 'report.md'}")
    return 0
