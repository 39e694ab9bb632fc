"""Figures for sweeps and mask analysis (matplotlib, Agg backend; PNG files)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    from tamt.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    _plt().close(fig)
    return path


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation (scipy) with p-values; nan when fewer than 3 points or constant."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return {"pearson": float("nan"), "pearson_p": float("nan"), "spearman": float("nan"),
                "spearman_p": float("nan"), "n": int(len(x))}
    p = stats.pearsonr(x, y)
    s = stats.spearmanr(x, y)
    return {"pearson": float(p[0]), "pearson_p": float(p[1]), "spearman": float(s[0]), "spearman_p": float(s[1]),
            "n": int(len(x))}


def describe_correlation(c: dict, digits: int = 2, p_values: bool = False) -> str:
    """'Pearson r, Spearman rho (n=N)', or why there is none: never 'nan' for too few points."""
    n = int(c.get("n", 0))
    if n < 3:
        return f"too few points for a correlation (n={n}, need 3)"
    if np.isnan(c.get("pearson", float("nan"))):
        return f"no correlation: one of the two quantities is constant (n={n})"
    if p_values:
        return (f"Pearson {c['pearson']:.{digits}f} (p={c['pearson_p']:.3g}), Spearman {c['spearman']:.{digits}f} "
                f"(p={c['spearman_p']:.3g}), n={n}")
    return f"Pearson {c['pearson']:.{digits}f}, Spearman {c['spearman']:.{digits}f} (n={n})"


def score_vs_sparsity(summary: Sequence[dict], path, *, metric: str = "score", title: str | None = None) -> Path:
    """Downstream score (mean ± std over seeds, averaged over tasks) against sparsity, one line per method.

    ``summary``: per-cell rows (keys method, sparsity, task, ``{metric}_mean``, ``{metric}_std``).
    Dense (sparsity 0) is drawn as a horizontal reference line.
    """
    plt = _plt()
    by = defaultdict(lambda: defaultdict(list))
    for r in summary:
        by[r["method"]][float(r["sparsity"])].append((r[f"{metric}_mean"], r.get(f"{metric}_std", 0.0)))
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, pts in sorted(by.items()):
        xs = sorted(pts)
        ys = [100 * np.mean([m for m, _ in pts[x]]) for x in xs]
        es = [100 * np.sqrt(np.mean([s ** 2 for _, s in pts[x]])) for x in xs]
        if method == "dense":
            ax.axhline(ys[0], color="k", ls="--", lw=1, label=f"dense ({ys[0]:.1f})")
            continue
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
    ax.set_xlabel("sparsity")
    ax.set_ylabel(f"downstream {metric} (x100, mean over tasks)")
    ax.set_title(title or "Downstream score vs sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def pretrain_vs_downstream(rows: Sequence[dict], path, *, loss: str = "mlm_loss", metric: str = "score",
                           title: str | None = None) -> tuple[Path, dict]:
    """Scatter of held-out pre-training loss vs downstream score per subnetwork (the paper's Fig. 1/4).

    ``rows``: one per (method, sparsity, ...) with ``loss`` and ``metric`` values (already averaged).
    Returns the figure path and the Pearson/Spearman correlation (over sparse subnetworks).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [r for r in rows if r.get(loss) is not None and not np.isnan(float(r[loss]))]
    sparse = [r for r in pts if r["method"] != "dense"]
    corr = correlation([r[loss] for r in sparse], [r[metric] for r in sparse])
    methods = sorted({r["method"] for r in pts})
    markers = {s: m for s, m in zip(sorted({float(r["sparsity"]) for r in pts}), "os^Dv<>p*h")}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, method in enumerate(methods):
        for r in (r for r in pts if r["method"] == method):
            ax.scatter(float(r[loss]), 100 * float(r[metric]), color=colors[i % len(colors)],
                       marker="*" if method == "dense" else markers[float(r["sparsity"])], s=60)
        ax.scatter([], [], color=colors[i % len(colors)], label=method)
    for s, m in markers.items():
        if s > 0:
            ax.scatter([], [], color="gray", marker=m, label=f"s={s:g}")
    ax.set_xlabel(f"held-out {loss.replace('_', ' ')}")
    ax.set_ylabel(f"downstream {metric} (x100)")
    ax.set_title(title or f"Pre-training vs downstream: {describe_correlation(corr)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path), corr


def score_vs_search_steps(rows: Sequence[dict], path, *, metric: str = "score", title: str | None = None) -> Path:
    """Downstream score against search steps (search cost), one line per (method, sparsity)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    by = defaultdict(list)
    for r in rows:
        if r.get("search_steps") is None:
            continue
        by[(r["method"], float(r["sparsity"]))].append((float(r["search_steps"]), 100 * float(r[metric])))
    for (method, s), pts in sorted(by.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{method} s={s:g}")
    ax.set_xlabel("search steps")
    ax.set_ylabel(f"downstream {metric} (x100)")
    ax.set_title(title or "Search cost: downstream score vs search steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def mask_heatmap(matrix, names: Sequence[str], path, *, title: str = "mask similarity (Jaccard)") -> Path:
    plt = _plt()
    matrix = np.asarray(matrix, float)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n))
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                    color="w" if matrix[i, j] < 0.6 else "k", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def per_matrix_heatmap(pairs: dict, names: Sequence[str], metric: str, path, *, title: str | None = None) -> Path:
    """Rows: matrices; columns: mask pairs (a vs b); colour: the per-matrix ``metric``."""
    plt = _plt()
    keys = [(a, b) for a in names for b in names if a < b and (a, b) in pairs] or list(pairs)[:1]
    mats = list(pairs[keys[0]]["matrices"])
    data = np.array([[pairs[k]["matrices"][m][metric] for k in keys] for m in mats])
    fig, ax = plt.subplots(figsize=(2 + 1.2 * len(keys), 1 + 0.18 * len(mats)))
    im = ax.imshow(data, aspect="auto", cmap="viridis", vmin=0, vmax=1 if metric != "distance" else None)
    ax.set_xticks(range(len(keys)), [f"{a} vs {b}" for a, b in keys], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(mats)), [m.replace(".weight", "") for m in mats], fontsize=5)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title or f"per-matrix {metric}", fontsize=9)
    return _save(fig, path)
