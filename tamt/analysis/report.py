"""Result tables: rows (one per finished run) -> mean ± std per cell -> CSV / JSON / Markdown / terminal."""
from __future__ import annotations

import csv
import io
import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

CELL_KEYS = ("model", "method", "sparsity", "task", "train_size")


def _fmt_key(v):
    if isinstance(v, float):
        return f"{v:g}"
    return "" if v is None else str(v)


def aggregate(rows: Sequence[dict], metrics: Sequence[str], keys: Sequence[str] = CELL_KEYS) -> list[dict]:
    """Group ``rows`` by ``keys``; for each metric the mean, the sample std (ddof=1) and n over the group.

    One value has no spread: its std is NaN (printed as "1 run", never "± 0.00")."""
    groups: "OrderedDict[tuple, list[dict]]" = OrderedDict()
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for key, rs in groups.items():
        rec = dict(zip(keys, key))
        rec["n"] = len(rs)
        for m in metrics:
            vals = [float(r[m]) for r in rs if r.get(m) is not None and not _isnan(r.get(m))]
            rec[f"{m}_mean"] = float(np.mean(vals)) if vals else float("nan")
            rec[f"{m}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
        out.append(rec)
    return out


def _isnan(v) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def write_csv(rows: Sequence[dict], path) -> None:
    from tamt.io import atomic_write_text

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_val(r.get(k)) for k in cols})
    atomic_write_text(path, buf.getvalue())


def _csv_val(v):
    if isinstance(v, float):
        return repr(round(v, 10))
    return "" if v is None else v


def write_json(obj, path) -> None:
    from tamt.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def pm(mean, std, scale=100.0, digits=2) -> str:
    if _isnan(mean):
        return "-"
    if std is None or _isnan(std):
        return f"{scale * mean:.{digits}f} (1 run)"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def pivot(agg: Sequence[dict], metric: str, *, row_keys=("method", "sparsity"), col_key="task",
          scale=100.0) -> tuple[list[str], list[list[str]]]:
    """A (header, rows) table: one row per (method, sparsity), one column per task, cells mean ± std."""
    cols = list(OrderedDict.fromkeys(_fmt_key(a[col_key]) for a in agg))
    table: "OrderedDict[tuple, dict]" = OrderedDict()
    for a in agg:
        table.setdefault(tuple(a[k] for k in row_keys), {})[_fmt_key(a[col_key])] = a
    header = [*row_keys, *cols]
    if len(cols) > 1:
        header.append("average")
    body = []
    for rk, cells in table.items():
        row = [_fmt_key(v) for v in rk]
        means = []
        for c in cols:
            a = cells.get(c)
            row.append(pm(a[f"{metric}_mean"], a[f"{metric}_std"], scale) if a else "-")
            if a and not _isnan(a[f"{metric}_mean"]):
                means.append(a[f"{metric}_mean"])
        if len(cols) > 1:
            row.append(f"{scale * np.mean(means):.2f}" if len(means) == len(cols) else "-")
        body.append(row)
    return header, body


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def text_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A plain aligned table for the terminal."""
    rows = [list(map(str, header))] + [list(map(str, r)) for r in body]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(rows[0]), sep] + [fmt(r) for r in rows[1:]])
