"""``tamt search``, ``tamt eval-pretrain`` and ``tamt info``: thin wrappers of the Python API."""
from __future__ import annotations

import argparse
import json
import sys

from tamt.pruning.compiled import COMPILE_MODES
from tamt.pruning.config import (HEAD_TRAIN, IMP_REWIND, IMP_ROUNDING, IMP_SCHEDULES, INITIAL_THRESHOLDS, KD_DATA, KD_POSITIONS,
                                  METHODS, OPTIMIZERS, PRESETS, SCORE_INITS, THRESHOLD_MODES)

_PRESET_HELP = "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items() if a != "save_masks_at")
                         for k, v in PRESETS.items())


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="find subnetworks (TAMT-MLM/KD, IMP, OMP, random) of a pre-trained encoder",
        description="Find a subnetwork (a binary mask per weight matrix) of a pre-trained BERT-family encoder on a "
                    "pre-training corpus. Writes OUT/masks/<method>_s<sparsity>.safetensors, metrics.jsonl, "
                    "TensorBoard logs and checkpoints under OUT/runs/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="default",
                   help="hub name, local checkpoint folder, or 'default' (embedded all-MiniLM-L6-v2, no MLM head: "
                        "one is fitted densely first)")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="tamt-mlm / tamt-kd / tamt-mlm-kd: train score masks (weights frozen); imp: iterative "
                        "magnitude pruning with rewinding on MLM; omp: one-shot magnitude; random: random masks; "
                        "magnitude-row: one-shot magnitude per output row; wanda: one-shot |W|*||X|| per output "
                        "row (calibrated on --calibration-blocks corpus blocks)")
    p.add_argument("--sparsity", type=float, nargs="+", default=None,
                   help="fraction of weights pruned per matrix, in [0, 1); several values give several masks "
                        "(IMP: one run yields every intermediate 10 %% step); optional with an N:M --structure")
    p.add_argument("--corpus", default="default",
                   help="text/JSON/parquet file or folder, a hub dataset 'name:config' (online), or 'default' "
                        "(embedded Wikipedia summaries)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, default=None, help="optimizer steps per search (TAMT; IMP: all rounds)")
    g.add_argument("--epochs", type=float, default=None, help="passes over the corpus instead of --steps")
    p.add_argument("--out", default=None, help="output folder (masks, metrics, checkpoints); default runs/<method>")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help=f"option bundle applied before the other options ({_PRESET_HELP})")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (same final mask); refused when an option that changes the result "
                        "differs from the run's (progress, logging, checkpoint cadence and device may differ)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (without it, a folder holding a run is refused)")
    p.add_argument("--dry-run", action="store_true",
                   help="print every resolved option (preset, method defaults, your options) with where it came "
                        "from, then exit without loading the model or the corpus")
    p.add_argument("--seed", type=int, default=None, help="seed for data order, MLM masking, random masks, dropout")
    o = p.add_argument_group("optimisation")
    o.add_argument("--lr", type=float, default=None,
                   help="learning rate of the scores (TAMT) or weights (IMP); default: paper's (MLM 5e-5, KD 2e-5)")
    o.add_argument("--head-lr", type=float, default=None, help="lr of the MLM head during TAMT-MLM (default 5e-5)")
    o.add_argument("--weight-decay", type=float, default=None, help="default: 0 (MLM, IMP), 0.01 (KD)")
    o.add_argument("--batch-size", type=int, default=None, help="global batch (split over torchrun processes)")
    o.add_argument("--block-size", type=int, default=None, help="tokens per block (paper: 512)")
    o.add_argument("--grad-clip", type=float, default=None, help="max gradient norm (0 disables)")
    o.add_argument("--threshold-mode", choices=THRESHOLD_MODES, default=None,
                   help="exact: top-k every step (exact sparsity); paper: tau fixed, reset every --reset-interval")
    o.add_argument("--reset-interval", type=int, default=None, help="paper mode: steps between tau resets "
                   "(default 1000 MLM, 100 KD)")
    o.add_argument("--score-init", choices=SCORE_INITS, default=None,
                   help="score initialisation: omp = the paper's (2*t0 on the OMP mask, 0 elsewhere); omp-rank = "
                        "the same mask with scores graded by |W|, for short searches (see tamt.nn.scores); "
                        "random = 2*t0 on a random mask")
    o.add_argument("--imp-interval", type=int, default=None, help="IMP: steps between prune rounds (paper 2792)")
    o.add_argument("--head-fit-steps", type=int, default=None,
                   help="steps of dense head-only fitting for checkpoints without an MLM head")
    o.add_argument("--no-dropout", action="store_true", help="train the student without dropout")
    o.add_argument("--torch-dropout", action="store_true",
                   help="CPU: torch's dropout instead of tamt's Philox kernel (same distribution, ~15x slower; "
                        "the reference's random stream)")
    f = p.add_argument_group(
        "reference-code fidelity",
        "what --preset paper sets to reproduce the authors' code (README 'Paper fidelity'); the defaults keep "
        "tamt's choices")
    f.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="adamw: torch AdamW (default); adamw-hf: the HF AdamW of the reference MLM/IMP scripts (eps "
                        "added before bias correction, decay after the step); bert-adam: the reference KD script's "
                        "BertAdam (no bias correction, eps 1e-6, --grad-clip applied per tensor, decay in the update)")
    f.add_argument("--adam-eps", type=float, default=None, help="Adam eps (default: 1e-8, bert-adam 1e-6)")
    f.add_argument("--initial-threshold", choices=INITIAL_THRESHOLDS, default=None,
                   help="paper threshold mode: tau before the first reset is t0 (the reference; the initial mask is "
                        "exactly OMP) or the k-th smallest initial score")
    f.add_argument("--t0", type=float, default=None, help="score level of the OMP init (scores 0 / 2*t0) and the "
                   "reference's initial threshold (0.01)")
    f.add_argument("--reset-offset", type=int, default=None,
                   help="paper mode: reset tau after step t when (t + offset) %% reset-interval == 0 (reference KD: 1, "
                        "i.e. steps 99, 199, ...)")
    f.add_argument("--reset-steps", type=int, nargs="*", default=None,
                   help="paper mode: also reset tau after these steps (reference KD: 1)")
    f.add_argument("--reset-at-epoch-end", action=argparse.BooleanOptionalAction, default=None,
                   help="paper mode: also reset tau after the last step of every epoch (reference KD)")
    f.add_argument("--tie-break", action=argparse.BooleanOptionalAction, default=None,
                   help="jitter the two-level initial scores and lift scores tied at tau so exactly floor(s*n) are "
                        "pruned (tamt); --no-tie-break: the reference's plain k-th value (ties pruned)")
    f.add_argument("--kd-data", choices=KD_DATA, default=None,
                   help="TAMT-KD training data: the corpus' full blocks, or the reference's paragraph sequences "
                        "(one section's paragraphs, >= 20 tokens, split A/B, one token corrupted, padded to the block)")
    f.add_argument("--kd-positions", choices=KD_POSITIONS, default=None,
                   help="KD loss averaged over real tokens, or over all positions incl. padding (the reference)")
    f.add_argument("--teacher-dropout", action=argparse.BooleanOptionalAction, default=None,
                   help="run the KD teacher with dropout during search steps (the reference KD script never puts it "
                        "in eval mode)")
    f.add_argument("--imp-rewind", choices=IMP_REWIND, default=None,
                   help="after each IMP prune rewind all weights (tamt), the encoder only, or none (what the reference "
                        "code does: its saved weights alias the live ones)")
    f.add_argument("--imp-schedule", choices=IMP_SCHEDULES, default=None,
                   help="IMP lr: round = restart and decay to 0 every round; run = restart every round with the slope "
                        "of the whole run (the reference)")
    f.add_argument("--imp-rounding", choices=IMP_ROUNDING, default=None,
                   help="IMP prune count: total = floor(level*n) after each round; per-round = torch prune's "
                        "round(survivors/(10-r)) (the reference)")
    f.add_argument("--head-train", choices=HEAD_TRAIN, default=None,
                   help="MLM head during TAMT-MLM: train (the paper's co-training), frozen, or auto (default: train "
                        "when the checkpoint has an MLM head, frozen when tamt fitted one for a head-less checkpoint)")
    f.add_argument("--stop-at", type=int, default=None,
                   help="end after this step but keep the lr schedule of the full --steps/--epochs run (the paper's "
                        "masks are checkpoints of 2-epoch runs, e.g. step 17000 for s=0.7)")
    st = p.add_argument_group("structure (N:M masks)")
    st.add_argument("--structure", default=None, metavar="unstructured|N:M",
                    help="N:M (e.g. 2:4, 1:4, 4:8): every masked Linear keeps N of each M consecutive weights of "
                         "a row (sparsity 1-N/M; 2:4 runs ~2x faster on sparse tensor cores, see tamt export); "
                         "default unstructured")
    st.add_argument("--embedding-structure", default=None, metavar="unstructured|N:M",
                    help="structure of the word embeddings (default unstructured, at the Linears' sparsity: a "
                         "lookup gains nothing from N:M)")
    st.add_argument("--calibration-blocks", type=int, default=None,
                    help="wanda: corpus blocks whose input-activation norms weigh |W| (default 64)")
    r = p.add_argument_group("run")
    r.add_argument("--eval-every", type=int, default=None, help="held-out MLM/KD evaluation every N steps")
    r.add_argument("--eval-batches", type=int, default=None, help="held-out batches per evaluation")
    r.add_argument("--save-masks-at", type=int, nargs="*", default=None, help="also save masks at these steps")
    r.add_argument("--checkpoint-every", type=int, default=None, help="checkpoint every N steps (for --resume)")
    r.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the last checkpoint.pt of a finished run (deleted by default: BERT-base's is 268 MB)")
    r.add_argument("--max-blocks", type=int, default=None, help="cap the corpus at this many blocks per split")
    r.add_argument("--validation-fraction", type=float, default=None,
                   help="documents held out for evaluation (default 0.05); 0 holds out the last blocks instead "
                        "(for a corpus of one long document)")
    r.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 ...")
    r.add_argument("--amp", choices=["auto", "bf16", "none"], default=None,
                   help="bf16 autocast (auto: on CUDA; the paper preset: none, fp32 as the reference)")
    r.add_argument("--compile", choices=COMPILE_MODES, default=None,
                   help="torch.compile the step's forwards (reduce-overhead: + CUDA graphs on GPU; default none)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_search)

    e = subparsers.add_parser(
        "eval-pretrain", help="held-out MLM loss/accuracy and KD loss of a mask",
        description="Pre-training performance of a subnetwork on the corpus' held-out split: MLM loss and accuracy "
                    "and the KD loss against the dense model.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--model", default="default", help="the model the mask was found on")
    e.add_argument("--mask", nargs="*", default=[], help="mask file(s); none = the dense model")
    e.add_argument("--corpus", default="default", help="as for 'tamt search'")
    e.add_argument("--block-size", type=int, default=128)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--batches", type=int, default=20, help="held-out batches (0 = the whole split)")
    e.add_argument("--max-blocks", type=int, default=None)
    e.add_argument("--validation-fraction", type=float, default=0.05, help="as for 'tamt search'")
    e.add_argument("--head-fit-steps", type=int, default=200, help="dense head fitting for models without an MLM head")
    e.add_argument("--head-cache", default=None, help="folder to cache the fitted head in (e.g. the search --out)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--ignore-fingerprint", action="store_true", help="apply masks found on other weights")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=_eval)

    if "info" not in getattr(subparsers, "choices", {}):
        i = subparsers.add_parser("info", help="metadata and per-matrix sparsity of a mask file",
                                  description="Print a mask file's metadata and per-matrix sparsity.")
        i.add_argument("mask", help="mask file (.safetensors written by tamt)")
        i.add_argument("--json", action="store_true", help="print JSON")
        i.set_defaults(func=_info)


_OPTS = ["lr", "head_lr", "weight_decay", "batch_size", "block_size", "grad_clip", "threshold_mode",
         "reset_interval", "score_init", "imp_interval", "head_fit_steps", "eval_every", "eval_batches",
         "checkpoint_every", "max_blocks", "device", "amp", "seed", "validation_fraction",
         "optimizer", "adam_eps", "initial_threshold", "t0", "reset_offset", "reset_at_epoch_end", "tie_break",
         "kd_data", "kd_positions", "teacher_dropout", "imp_rewind", "imp_schedule", "imp_rounding", "stop_at", "head_train",
         "structure", "embedding_structure", "calibration_blocks", "compile"]


def _search(args) -> int:
    from pathlib import Path

    from tamt.pruning import init_distributed, search

    init_distributed()
    config = {k: getattr(args, k) for k in _OPTS if getattr(args, k) is not None}
    if args.save_masks_at is not None:
        config["save_masks_at"] = tuple(args.save_masks_at)
    if args.reset_steps is not None:
        config["reset_steps"] = tuple(args.reset_steps)
    if args.no_dropout:
        config["dropout"] = False
    if args.torch_dropout:
        config["fast_dropout"] = False
    if args.no_progress:
        config["progress"] = False
    if args.keep_checkpoint:
        config["keep_checkpoint"] = True
    if config.get("grad_clip") == 0:
        config["grad_clip"] = None
    if args.sparsity is None and args.structure is None:
        raise ValueError("give --sparsity (e.g. 0.5), or an N:M --structure (e.g. 2:4) which fixes it")
    from tamt.nn.structure import run_label

    out = args.out or str(Path("runs") / run_label(args.method, args.structure, args.embedding_structure))
    if args.dry_run:
        return _dry_run(args, config, out)
    res = search(args.model, args.method, args.sparsity, args.corpus, steps=args.steps, epochs=args.epochs,
                 out=out, preset=args.preset, resume=args.resume, overwrite=args.overwrite, **config)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return 0
    print(f"{res.method}: masks in {Path(out) / 'masks'}")
    for s, t in sorted(res.timings.items()):
        print(f"  s={s:.2f}  steps={t['steps']:>6}  search {t['search_s']:.1f}s  -> {res.paths.get(s, '(not saved)')}")
    if res.intermediate:
        print("  IMP rounds: " + ", ".join(f"{s:.2f}" for s in sorted(res.intermediate)))
    return 0


def _dry_run(args, config: dict, out: str) -> int:
    from tamt.pruning.api import build_config_with_sources
    from tamt.pruning.config import describe

    cfg, sources = build_config_with_sources(args.method, args.sparsity, steps=args.steps, epochs=args.epochs,
                                             preset=args.preset, **config)
    print(f"tamt search (dry run): model {args.model!r}, corpus {args.corpus!r}, out {out!r}"
          + (f", preset {args.preset!r}" if args.preset else ""))
    print(describe(cfg, sources))
    return 0


def _eval(args) -> int:
    from tamt.pruning import evaluate_pretraining
    from tamt.pruning.context import prepare

    ctx = prepare(args.model, args.corpus, block_size=args.block_size, seed=args.seed, max_blocks=args.max_blocks,
                  validation_fraction=args.validation_fraction)
    rows = []
    for m in (args.mask or [None]):
        r = evaluate_pretraining(args.model, m, context=ctx, batches=args.batches or None, batch_size=args.batch_size,
                                 seed=args.seed, head_fit_steps=args.head_fit_steps, head_cache=args.head_cache,
                                 ignore_fingerprint=args.ignore_fingerprint)
        rows.append({"mask": m or "(dense)", **r})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"{'mask':<50} {'sparsity':>8} {'MLM loss':>9} {'MLM acc':>8} {'KD loss':>8}")
        for r in rows:
            print(f"{str(r['mask'])[-50:]:<50} {r['sparsity']:>8.4f} {r['mlm_loss']:>9.4f} {r['mlm_accuracy']:>8.4f} "
                  f"{r['kd_loss']:>8.4f}")
        if rows and rows[0]["head_initialised"]:
            print(f"(the model has no MLM head: one was fitted densely for {rows[0]['head_fit_steps']} steps)",
                  file=sys.stderr)
    return 0


def _info(args) -> int:
    from tamt.masks import load_mask
    from tamt.nn import sparsity_report

    mf = load_mask(args.mask)
    rep = sparsity_report(mf)
    if args.json:
        print(json.dumps({"metadata": mf.metadata, "report": rep.as_dict()}, indent=1, default=str))
        return 0
    for k, v in mf.metadata.items():
        if k not in ("config", "structure"):  # the per-matrix structure is in the report below
            print(f"{k:>16}: {v}")
    print()
    print(rep)
    return 0
