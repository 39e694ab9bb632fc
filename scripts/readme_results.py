"""Regenerate the README's demo results from a demo run (never typed by hand).

    python scripts/readme_results.py --kind quick --run tamt-out/demo-quick --machine "2 CPU cores, fresh clone"

copies the run's summary.txt / summary.json / report.md / results.csv to
benchmarks/results/demo-<kind>-cpu-<date>/ and replaces the README block
between ``<!-- demo-<kind>:start -->`` and ``<!-- demo-<kind>:end -->`` with
that summary, headed by the machine and the file it came from.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("summary.txt", "summary.json", "report.md", "results.csv")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("quick", "full"), required=True)
    ap.add_argument("--run", required=True, help="the demo's output folder")
    ap.add_argument("--machine", required=True, help="where it ran, e.g. '2 CPU cores, fresh clone, empty cache'")
    ap.add_argument("--wall", default=None, help="end-to-end wall time measured outside the demo, e.g. '4m50s'")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    args = ap.parse_args(argv)
    run = Path(args.run)
    missing = [f for f in FILES[:2] if not (run / f).is_file()]
    if missing:
        sys.exit(f"{run} has no {', '.join(missing)}: is it a finished `tamt demo` folder?")
    dest = ROOT / "benchmarks" / "results" / f"demo-{args.kind}-cpu-{args.date}"
    dest.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        if (run / f).is_file():
            shutil.copy2(run / f, dest / f)
    summary = json.loads((run / "summary.json").read_text())
    text = (run / "summary.txt").read_text().rstrip()
    rel = dest.relative_to(ROOT)
    wall = f"; end to end {args.wall}" if args.wall else ""
    block = (f"`tamt demo{' --quick' if args.kind == 'quick' else ''}` on {args.machine}, {args.date} "
             f"(demo's own clock {summary['timing']['total_s'] / 60:.1f} min{wall}); files: [`{rel}/`]({rel}/).\n\n"
             f"```\n{text}\n```\n")
    readme = ROOT / "README.md"
    src = readme.read_text()
    start, end = f"<!-- demo-{args.kind}:start -->", f"<!-- demo-{args.kind}:end -->"
    if start not in src or end not in src:
        sys.exit(f"README.md has no {start} ... {end} block")
    head, rest = src.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{block}{end}{tail}")
    print(f"README block demo-{args.kind} regenerated from {run}; copies in {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
