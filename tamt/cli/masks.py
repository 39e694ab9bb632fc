"""``tamt compare-masks``: similarity and distance between mask files (``info`` lives in tamt.cli.search)."""
from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare-masks", help="similarity (overlap, Jaccard) and distance between masks, and from OMP",
        description="Compare mask files pairwise: overlap of kept weights, Jaccard, and distance (fraction of "
                    "positions that differ), per matrix and overall; optionally each mask's distance from the "
                    "OMP mask of --model at the same per-matrix sparsity.")
    p.add_argument("masks", nargs="+", help="mask files (two or more; one is enough with --omp)")
    p.add_argument("--names", default=None, help="comma-separated labels for the masks")
    p.add_argument("--metric", choices=["jaccard", "overlap", "distance"], default="jaccard",
                   help="metric of the printed table and heat map")
    p.add_argument("--omp", action="store_true", help="also compare every mask with the OMP mask of --model")
    p.add_argument("--model", default="default", help="base model for --omp")
    p.add_argument("--per-matrix", action="store_true", help="print the per-matrix table of each pair")
    p.add_argument("--out", default=None, help="folder for compare.json and heat maps (PNG)")
    p.set_defaults(func=_compare)


def _compare(args) -> int:
    from tamt.analysis.masks import compare_masks, omp_masks_like
    from tamt.masks import load_mask

    if args.out:  # before the table is printed, not after
        from tamt.io import check_output_dir

        check_output_dir(args.out)
    loaded = [load_mask(p) for p in args.masks]
    names = args.names.split(",") if args.names else [Path(p).name.removesuffix(".safetensors") for p in args.masks]
    if len(names) != len(loaded):
        raise ValueError(f"{len(names)} names for {len(loaded)} masks")
    if len(set(names)) < len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    if args.omp:
        from tamt.models import load_encoder

        model = load_encoder(args.model)
        omp = omp_masks_like(model, loaded[0])
        loaded.append(omp)
        names.append("omp")
    if len(loaded) < 2:
        raise ValueError("compare-masks needs two masks (or one with --omp)")
    cmp = compare_masks(loaded, names)
    print(cmp.table(args.metric))
    if args.omp:
        print("\ndistance from the OMP mask (same per-matrix sparsity):")
        for i, n in enumerate(names[:-1]):
            print(f"  {n}: {cmp.distance[i, -1]:.4f} (overlap {cmp.overlap[i, -1]:.4f})")
    if args.per_matrix:
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                print(f"\n{a} vs {b}\n{cmp.matrix_table(a, b)}")
    if args.out:
        from tamt.analysis import plots
        from tamt.io import atomic_write_text

        out = Path(args.out)
        atomic_write_text(out / "compare.json", json.dumps(cmp.to_dict(), indent=1))
        plots.mask_heatmap(getattr(cmp, args.metric), names, out / f"{args.metric}.png",
                           title=f"mask {args.metric}")
        plots.per_matrix_heatmap(cmp.pairs, names, args.metric, out / f"{args.metric}_per_matrix.png")
        print(f"wrote {out / 'compare.json'}, {out / (args.metric + '.png')}")
    return 0
