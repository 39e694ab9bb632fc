"""The measured table ``auto`` reads to pick a masked-GEMM plan per shape.

``benchmarks/bench_kernels.py`` times, on a GPU, forward + backward of
``tamt.ops.masked_linear`` (search mode, autograd included) once per plan
(see ``tamt.ops.mask_forms``) for each weight shape and token count, and
writes the winner per shape to ``benchmarks/results/auto/<device>.json``
(``<device>`` = the CUDA device name, lower case, non-alphanumerics -> '-',
e.g. ``nvidia-h200.json``). Only real measurements are written there.

Lookup, once per process and device: the file named by the environment
variable ``TAMT_AUTO_TABLE`` if set, else that device's file in the source
checkout. A shape the table does not list (or no table) gets the documented
default, ``DEFAULT_PLAN``.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Optional

FORMAT = "tamt-auto-table/1"
TABLE_ENV = "TAMT_AUTO_TABLE"
RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "auto"

# Without a measurement the conservative choice on CUDA: W*M is built once per
# optimizer step (one elementwise pass) and every GEMM is a plain cuBLAS call.
# It never autotunes or compiles a Triton kernel. It is NOT always faster than
# the unfused PyTorch path: on an H200 at 768x768 (8192 tokens, bf16) its step
# took 0.78 ms vs 0.46 ms unfused (mask build + host path; bench_kernels, 2026-12-04).
DEFAULT_PLAN = "materialize"


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def table_path(device_name: str) -> Path:
    env = os.environ.get(TABLE_ENV)
    return Path(env) if env else RESULTS_DIR / f"{device_slug(device_name)}.json"


def validate(table: dict) -> dict:
    """Check a table's structure (raises ValueError with what is wrong)."""
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} table (format field {table.get('format') if isinstance(table, dict) else None!r})")
    for i, e in enumerate(table.get("entries", [])):
        missing = {"out_features", "in_features", "tokens", "dtype", "best", "ms"} - set(e)
        if missing:
            raise ValueError(f"entry {i} lacks {sorted(missing)}")
    return table


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Optional[dict]:
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return validate(json.loads(p.read_text()))
    except (OSError, ValueError) as exc:
        warnings.warn(f"tamt: ignoring the auto table {p} ({exc}); using the default plan {DEFAULT_PLAN!r}",
                      stacklevel=3)
        return None


def clear_cache() -> None:
    _load.cache_clear()
    _lookup.cache_clear()


@functools.lru_cache(maxsize=4096)
def _lookup(path: str, n: int, k: int, tokens: int, dtype: str, allowed: tuple) -> Optional[str]:
    table = _load(path)
    if table is None:
        return None
    rows = [e for e in table["entries"]
            if e["out_features"] == n and e["in_features"] == k and e["dtype"] == dtype]
    if not rows:
        return None
    # nearest measured token count (log scale)
    row = min(rows, key=lambda e: abs(math.log2(max(e["tokens"], 1)) - math.log2(max(tokens, 1))))
    if row["best"] in allowed:
        return row["best"]
    ms = {p: t for p, t in row["ms"].items() if p in allowed and t is not None}
    return min(ms, key=ms.get) if ms else None


def lookup(device_name: str, n: int, k: int, tokens: int, dtype: str, allowed: tuple) -> Optional[str]:
    """The measured best plan among ``allowed`` for an [n, k] weight at
    ``tokens`` tokens and ``dtype`` (e.g. 'bfloat16'), or None."""
    return _lookup(str(table_path(device_name)), n, k, tokens, dtype, allowed)
