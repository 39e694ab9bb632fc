"""``tamt sweep``: methods x sparsities x tasks x seeds, resumable, one results table and a report.

A sweep config (JSON, or YAML when PyYAML is installed)::

    {
      "model": "default",                 # checkpoint folder / hub name / "default"
      "corpus": "default",                # search + pre-training evaluation corpus
      "methods": ["omp", "random", "tamt-kd", "tamt-mlm", "imp"],
      "sparsities": [0.5, 0.7],
      "dense": true,                      # also fine-tune / evaluate the dense model
      "mask_seeds": [0],                  # search seeds (one mask per seed)
      "tasks": ["sst2", "mrpc"],          # GLUE tasks, "squad", or demo tasks "sentiment" / "nli"
      "data": "hub",                      # or a folder with the official files
      "seeds": [0, 1],                    # fine-tuning seeds
      "train_sizes": [null],              # data scarcity: e.g. [1000, 5000], or {"sst2": [1000, ...], ...}
      "search": {"steps": 200},           # tamt.search options for every method ...
      "search_by_method": {"imp": {"imp_interval": 40}},   # ... and per method
      "search_steps": null,               # search cost: e.g. [100, 200, 400] (TAMT steps, IMP steps per round),
                                          # or per method {"tamt-kd": [999, 1999], "imp": [200, 2792]}
      "checkpoint_budgets": false,        # true: TAMT budgets are checkpoints (stop_at) of the full-length run,
                                          # as the paper's search-cost masks; false: the runs' lengths
      "mask_steps": {},                   # the paper's masks: {"tamt-mlm": {"0.5": 11000, ...}} - each sparsity
                                          # searched on its own, its mask taken at that step of the full run
      "pretrain_eval": {"batches": 10},   # tamt.evaluate_pretraining options, or false
      "finetune": {"preset": "cpu-small", "epochs": 1},    # tamt.finetune options
      "finetune_methods": null,           # fine-tune only these methods' masks (null: all; dense follows "dense")
      "finetune_sparsities": null,        # ... and only at these sparsities (null: all)
      "finetune_by_task": {},             # per task: {"nli": {"methods": ["omp"], "sparsities": [0.7]}} overrides
                                          # the two above for that task
      "dense_gate": {}                    # {"nli": 0.45}: a task whose dense mean score is below the gate is left
                                          # out (its other cells are not run; the report says why)
    }

A TAMT search whose ``search`` options set ``eval_every`` records its held-out
curve (step, search time, MLM/KD loss) in its cell: the data of the
time-to-quality comparison (``tamt.analysis.search_cost``).

Layout of ``out``: ``masks/`` (mask files), ``cells/`` (one JSON per finished
search / fine-tuning run, written atomically), ``results.csv`` and
``results.json`` (one row per fine-tuning run), ``summary.csv`` (mean ± std per
cell), ``report.md`` and ``plots/``.  Finished cells are skipped, so an
interrupted sweep continues where it stopped and ends with the same table.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from .report import aggregate, markdown_table, pivot, pm, text_table, write_csv, write_json
from .plots import describe_correlation

ROW_KEYS = ("model", "method", "sparsity", "budget", "mask_seed", "task", "train_size", "seed")
CELL_KEYS = ("model", "method", "sparsity", "budget", "task", "train_size")  # aggregation over seeds
PRETRAIN_COLS = ("mlm_loss", "mlm_accuracy", "kd_loss")

DEFAULTS: dict[str, Any] = {
    "model": "default", "corpus": "default", "methods": ["omp", "random", "tamt-kd", "tamt-mlm", "imp"],
    "sparsities": [0.5, 0.7], "dense": True, "mask_seeds": [0], "tasks": ["sst2"], "data": "hub",
    "seeds": [0], "train_sizes": [None], "search": {}, "search_by_method": {}, "search_steps": None,
    "pretrain_eval": {}, "finetune": {}, "name": "sweep", "mask_steps": {}, "checkpoint_budgets": False,
    "finetune_methods": None, "finetune_sparsities": None, "finetune_by_task": {}, "dense_gate": {},
}


BUILTIN = {p.stem: p for p in (Path(__file__).parent / "configs").glob("*.json")}


def load_config(config) -> dict:
    """A config dict from a dict, a .json / .yaml file or a built-in name (``paper``, ``paper-scarcity``,
    ``paper-search-cost``), with defaults filled in."""
    if isinstance(config, str) and config in BUILTIN and not Path(config).exists():
        config = BUILTIN[config]
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        if not p.is_file():
            raise FileNotFoundError(f"sweep config {p} not found")
        text = p.read_text()
        if p.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ValueError(f"{p}: YAML configs need PyYAML (pip install pyyaml), or write the config as JSON") from None
            cfg = yaml.safe_load(text)
        else:
            try:
                cfg = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}, line {exc.lineno}: invalid JSON ({exc.msg})") from None
    else:
        cfg = dict(config)
    unknown = set(cfg) - set(DEFAULTS) - {"description"}
    if unknown:
        raise ValueError(f"unknown sweep config key(s): {', '.join(sorted(unknown))} (known: {', '.join(DEFAULTS)})")
    out = {**DEFAULTS, **cfg}
    for k in ("methods", "sparsities", "mask_seeds", "tasks", "seeds", "train_sizes"):
        if k == "train_sizes" and isinstance(out[k], dict):  # per task: {"sst2": [1000, 5000], ...}
            continue
        if not isinstance(out[k], (list, tuple)):
            out[k] = [out[k]]
    out["sparsities"] = [float(s) for s in out["sparsities"]]
    for k in ("seeds", "mask_seeds"):  # a repeated seed would count one run twice in mean ± std
        dup = sorted({v for v in out[k] if out[k].count(v) > 1})
        if dup:
            raise ValueError(f"sweep config: {k} lists {', '.join(map(str, dup))} more than once; give distinct seeds")
    from tamt.pruning.config import check_method

    out["methods"] = [check_method(m) for m in out["methods"]]
    return out


def _tag(v) -> str:
    if v is None:
        return "na"
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v).replace("/", "_").replace(os.sep, "_")


@dataclass(frozen=True)
class SearchCell:
    method: str
    sparsities: tuple[float, ...]
    mask_seed: int
    budget: int | None

    @property
    def id(self) -> str:
        return f"search-{self.method}-m{self.mask_seed}-b{_tag(self.budget)}"

    def mask_path(self, out: Path, s: float) -> Path:
        return out / "masks" / f"{self.method}-s{_tag(s)}-m{self.mask_seed}-b{_tag(self.budget)}.safetensors"


@dataclass(frozen=True)
class FinetuneCell:
    method: str
    sparsity: float
    mask_seed: int
    budget: int | None
    task: str
    train_size: int | None
    seed: int

    @property
    def id(self) -> str:
        return (f"ft-{self.method}-s{_tag(self.sparsity)}-m{self.mask_seed}-b{_tag(self.budget)}-{self.task}"
                f"-n{_tag(self.train_size)}-f{self.seed}")


def plan(cfg: dict) -> tuple[list[SearchCell], list[FinetuneCell]]:
    searches, fts = [], []
    variants = []  # (method, sparsity, mask_seed, budget)
    if cfg["dense"]:
        variants.append(("dense", 0.0, 0, None))
    for method in cfg["methods"]:
        mb = _budgets(cfg, method) if method not in ("omp", "random") else [None]
        for ms in cfg["mask_seeds"]:
            for b in mb:
                searches.append(SearchCell(method, tuple(cfg["sparsities"]), int(ms), b))
                variants += [(method, s, int(ms), b) for s in cfg["sparsities"]]
    def wanted(method, s, task) -> bool:
        if method == "dense":
            return True
        per = (cfg.get("finetune_by_task") or {}).get(task, {})
        methods, sps = per.get("methods", cfg.get("finetune_methods")), per.get("sparsities", cfg.get("finetune_sparsities"))
        return (methods is None or method in methods) and (sps is None or any(abs(s - float(x)) < 1e-9 for x in sps))

    for method, s, ms, b in variants:
        for task in cfg["tasks"]:
            if not wanted(method, s, task):
                continue
            sizes = cfg["train_sizes"]
            if isinstance(sizes, dict):
                sizes = sizes.get(task, [None])
            for n in sizes:
                for seed in cfg["seeds"]:
                    fts.append(FinetuneCell(method, s, ms, b, str(task), None if n is None else int(n), int(seed)))
    return searches, fts


def _budgets(cfg: dict, method: str) -> list[int | None]:
    steps = cfg.get("search_steps")
    if isinstance(steps, dict):
        steps = steps.get(method)
    return [int(b) for b in steps] if steps else [None]


def _mask_step(cfg: dict, method: str, s: float) -> int | None:
    """The step of the full run whose mask the sweep fine-tunes (config ``mask_steps``), or None (the final one)."""
    for k, v in (cfg.get("mask_steps") or {}).get(method, {}).items():
        if abs(float(k) - s) < 1e-9:
            return int(v)
    return None


class _Runner:
    """Holds the lazily created model / search context shared by the cells of one sweep."""

    def __init__(self, cfg, out, *, model=None, tokenizer=None, search_fn=None, pretrain_fn=None, finetune_fn=None,
                 context=None):
        self.cfg, self.out = cfg, out
        self.model = model if model is not None else cfg["model"]
        self.tokenizer = tokenizer
        self.search_fn, self.pretrain_fn, self.finetune_fn = search_fn, pretrain_fn, finetune_fn
        self._context = context
        if context is not None and model is None:  # one loaded model for every cell (fine-tuning copies it)
            from tamt.nn import base_model

            self.model, self.tokenizer = base_model(context.model), tokenizer or context.tokenizer

    def context(self, method: str):
        if self._context is None:
            from tamt.pruning.api import build_config, make_context

            scfg = build_config(method, self.cfg["sparsities"], **self._search_kwargs(method, None))
            self._context = make_context(self.model, self.cfg["corpus"], scfg, tokenizer=self.tokenizer)
        return self._context

    def _search_kwargs(self, method, budget):
        kw = {**self.cfg["search"], **self.cfg["search_by_method"].get(method, {})}
        if budget is not None:
            if method == "imp":
                kw["imp_interval"] = budget
            elif self.cfg.get("checkpoint_budgets"):
                kw["stop_at"] = budget  # a checkpoint of the full run (its schedule unchanged)
            else:
                kw["steps"] = budget
        return kw

    def _search_once(self, method: str, sparsities: list[float], kw: dict):
        if self.search_fn is not None:
            return self.search_fn(self.model, method, sparsities, self.cfg["corpus"], **kw)
        import tamt

        kw.setdefault("tensorboard", False)
        return tamt.search(self.model, method, sparsities, self.cfg["corpus"], tokenizer=self.tokenizer,
                           context=self.context(method), **kw)

    def search(self, cell: SearchCell) -> dict:
        kw = self._search_kwargs(cell.method, cell.budget)
        kw.setdefault("seed", cell.mask_seed)
        kw.setdefault("progress", False)
        curves: dict[float, list] = {}
        if kw.get("eval_every") and cell.method.startswith("tamt"):
            def record(srch, event, p):
                if event == "eval":
                    curves.setdefault(srch.sparsity, []).append({
                        "step": p["step"], "search_s": p["time"], "mlm_loss": p.get("eval_mlm_loss"),
                        "mlm_accuracy": p.get("eval_mlm_accuracy"), "kd_loss": p.get("eval_kd_loss")})
            kw["callbacks"] = [record]
        steps = {s: _mask_step(self.cfg, cell.method, s) for s in cell.sparsities} if cell.budget is None else {}
        if any(v is not None for v in steps.values()):
            # the paper's masks: one run per sparsity, ended at (and masked from) its checkpoint step
            masks, timings = {}, {}
            for s in cell.sparsities:
                r = self._search_once(cell.method, [s], {**kw, "stop_at": steps[s]} if steps[s] is not None else kw)
                m = r.masks
                masks[s] = _lookup(m, s) if m and isinstance(next(iter(m.values())), dict) else m
                timings[s] = _lookup(getattr(r, "timings", {}) or {}, s) or {}
            res = SimpleNamespace(masks=masks, timings=timings)
        else:
            res = self._search_once(cell.method, list(cell.sparsities), kw)
        masks = res.masks
        if masks and not isinstance(next(iter(masks.values())), dict):  # one sparsity: {name: mask}
            masks = {cell.sparsities[0]: masks}
        info = {}
        from tamt.masks import save_mask

        for s in cell.sparsities:
            m = _lookup(masks, s)
            timing = _lookup(getattr(res, "timings", {}) or {}, s) or {}
            save_mask(cell.mask_path(self.out, s), m, {"method": cell.method, "sparsity": s, "seed": cell.mask_seed,
                                                       "step": timing.get("steps")})
            info[_tag(s)] = {"search_steps": timing.get("steps"), "search_s": timing.get("search_s")}
            curve = _lookup(curves, s)
            if curve:
                seen, uniq = set(), []
                for p in curve:  # the last step is evaluated twice (its interval and the run's end)
                    if p["step"] not in seen:
                        seen.add(p["step"])
                        uniq.append(p)
                info[_tag(s)]["curve"] = uniq
        return info

    def pretrain(self, mask) -> dict:
        opts = self.cfg["pretrain_eval"]
        if opts is False:
            return {}
        if self.pretrain_fn is not None:
            return self.pretrain_fn(self.model, mask, self.cfg["corpus"], **(opts or {}))
        import tamt

        return tamt.evaluate_pretraining(self.model, mask, self.cfg["corpus"], context=self.context("omp"),
                                         **(opts or {}))

    def finetune(self, cell: FinetuneCell, mask) -> dict:
        kw = dict(self.cfg["finetune"])
        kw.pop("seeds", None)  # the sweep's own fine-tuning seeds loop
        kw.setdefault("progress", False)
        fn = self.finetune_fn
        if fn is None:
            import tamt.finetune as ft

            fn = ft.finetune
        res = fn(self.model, mask, cell.task, self.cfg["data"], train_size=cell.train_size, seeds=[cell.seed],
                 tokenizer=self.tokenizer, **kw)
        return res.metrics if hasattr(res, "metrics") else res


def _lookup(d: dict, s: float):
    for k, v in d.items():
        try:
            if abs(float(k) - s) < 1e-6:
                return v
        except (TypeError, ValueError):
            continue
    return None


def _write_cell(path: Path, rec: dict) -> None:
    write_json(rec, path)


def _read_cell(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # missing or torn: redo the cell


def run_sweep(config, out, *, resume: bool = True, model=None, tokenizer=None, search_fn: Callable | None = None,
              pretrain_fn: Callable | None = None, finetune_fn: Callable | None = None,
              on_cell_done: Callable[[str, dict], None] | None = None, progress: bool = True,
              plots: bool = True, context=None) -> "SweepResult":
    """Run (or continue) a sweep; returns the table. See the module docstring for the config.

    ``model``/``tokenizer`` override the config's model with loaded objects. ``search_fn``,
    ``pretrain_fn`` and ``finetune_fn`` replace ``tamt.search`` / ``tamt.evaluate_pretraining`` /
    ``tamt.finetune`` (same call signatures). ``on_cell_done(cell_id, record)`` is called after each cell
    is written (e.g. to stop a sweep on purpose in a test).  ``resume=False`` ignores finished cells.
    ``out`` is locked while the sweep runs: a second sweep into it is refused with the first one's pid.
    ``context``: a ready :class:`tamt.pruning.context.SearchContext` (model, tokenizer, corpus, fitted head)
    shared by every cell.
    """
    from tamt.io import check_output_dir, folder_lock

    cfg = load_config(config)
    out = check_output_dir(out)
    with folder_lock(out):
        if resume:
            _check_cell_settings(out, cfg)
        return _run_sweep(cfg, out, resume=resume, model=model, tokenizer=tokenizer, search_fn=search_fn,
                          pretrain_fn=pretrain_fn, finetune_fn=finetune_fn, on_cell_done=on_cell_done,
                          progress=progress, plots=plots, context=context)


# what every finished cell depends on; the lists (methods, sparsities, tasks, seeds, ...) name the cells and may grow
CELL_SETTINGS = ("model", "corpus", "data", "search", "search_by_method", "pretrain_eval", "finetune")


def _check_cell_settings(out: Path, cfg: dict) -> None:
    """Refuse to resume a sweep whose finished cells were computed with other settings (they would be mixed in)."""
    try:
        old = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return  # a new sweep, or no readable record of the old one (its cells are re-validated one by one)

    def norm(v):
        return json.dumps(v, sort_keys=True, default=str)

    diffs = [f"{k}: {norm(old.get(k, DEFAULTS[k]))} -> {norm(cfg[k])}" for k in CELL_SETTINGS
             if norm(old.get(k, DEFAULTS[k])) != norm(cfg[k])]
    if diffs:
        raise ValueError(f"the sweep in {out} was run with other settings that change its finished cells "
                         f"({'; '.join(diffs)}); resume with the original config, recompute every cell "
                         "(tamt sweep --no-resume, tamt demo --restart), or choose another --out")


def _run_sweep(cfg: dict, out: Path, *, resume, model, tokenizer, search_fn, pretrain_fn, finetune_fn, on_cell_done,
               progress, plots, context=None) -> "SweepResult":
    (out / "cells").mkdir(parents=True, exist_ok=True)
    write_json(cfg, out / "config.json")
    searches, fts = plan(cfg)
    runner = _Runner(cfg, out, model=model, tokenizer=tokenizer, search_fn=search_fn, pretrain_fn=pretrain_fn,
                     finetune_fn=finetune_fn, context=context)
    total = len(searches) + len(fts) + (1 if cfg["dense"] else 0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=cfg.get("name", "sweep"), unit="cell", dynamic_ncols=True)

    def done(cid, rec):
        if bar is not None:
            bar.update(1)
        if on_cell_done is not None:
            on_cell_done(cid, rec)

    def cached(cid):
        p = out / "cells" / f"{cid}.json"
        rec = _read_cell(p) if (resume and p.exists()) else None
        if rec is not None and bar is not None:
            bar.update(1)
        return rec

    # 1) searches (+ pre-training evaluation of each mask)
    pretrain: dict[tuple, dict] = {}
    search_info: dict[tuple, dict] = {}
    if cfg["dense"]:
        cid = "pretrain-dense"
        rec = cached(cid)
        if rec is None:
            if bar is not None:
                bar.set_description("pre-training eval: dense")
            t0 = time.perf_counter()
            rec = {"id": cid, "pretrain": runner.pretrain(None)}
            rec["eval_s"] = time.perf_counter() - t0
            _write_cell(out / "cells" / f"{cid}.json", rec)
            done(cid, rec)
        pretrain[("dense", 0.0, 0, None)] = rec["pretrain"]
    for sc in searches:
        rec = cached(sc.id)
        missing_mask = rec is not None and not all(sc.mask_path(out, s).exists() for s in sc.sparsities)
        if rec is None or missing_mask:
            if bar is not None:
                bar.set_description(f"search {sc.method} m{sc.mask_seed} b{_tag(sc.budget)}")
            t0 = time.perf_counter()
            info = runner.search(sc)
            t1 = time.perf_counter()
            pre = {}
            for s in sc.sparsities:
                pre[_tag(s)] = runner.pretrain(str(sc.mask_path(out, s)))
            rec = {"id": sc.id, "method": sc.method, "mask_seed": sc.mask_seed, "budget": sc.budget,
                   "search": info, "pretrain": pre, "wall_s": time.perf_counter() - t0,
                   "search_wall_s": t1 - t0, "eval_s": time.perf_counter() - t1}
            _write_cell(out / "cells" / f"{sc.id}.json", rec)
            done(sc.id, rec)
        for s in sc.sparsities:
            key = (sc.method, s, sc.mask_seed, sc.budget)
            pretrain[key] = rec["pretrain"].get(_tag(s), {})
            search_info[key] = rec["search"].get(_tag(s), {})

    # 2) fine-tuning; the dense cells come first, so a task the dense model does not learn is gated out
    rows, gated = [], {}
    dense_scores: dict[str, list] = {}
    for fc in fts:
        gate = (cfg.get("dense_gate") or {}).get(fc.task)
        if fc.method != "dense" and gate is not None and fc.task not in gated:
            mean = float(np.mean(dense_scores[fc.task])) if dense_scores.get(fc.task) else None
            if mean is not None and mean < float(gate):
                gated[fc.task] = {"dense_score": mean, "gate": float(gate)}
        if fc.method != "dense" and fc.task in gated:
            if bar is not None:
                bar.update(1)
            continue
        rec = cached(fc.id)
        if rec is None:
            if bar is not None:
                bar.set_description(f"finetune {fc.method} s{_tag(fc.sparsity)} {fc.task} seed {fc.seed}")
            mask = None
            if fc.method != "dense":
                sc = SearchCell(fc.method, tuple(cfg["sparsities"]), fc.mask_seed, fc.budget)
                mask = str(sc.mask_path(out, fc.sparsity))
            t0 = time.perf_counter()
            metrics = runner.finetune(fc, mask)
            rec = {"id": fc.id, "metrics": metrics, "wall_s": time.perf_counter() - t0}
            _write_cell(out / "cells" / f"{fc.id}.json", rec)
            done(fc.id, rec)
        key = (fc.method, fc.sparsity, fc.mask_seed, fc.budget)
        row = {"model": str(cfg["model"]), "method": fc.method, "sparsity": fc.sparsity, "budget": fc.budget,
               "mask_seed": fc.mask_seed, "task": fc.task, "train_size": fc.train_size, "seed": fc.seed}
        best, final = rec["metrics"]["best"], rec["metrics"]["final"]
        row["score"] = best.get("score", float(np.mean(list(best.values()))))
        if fc.method == "dense":
            dense_scores.setdefault(fc.task, []).append(row["score"])
        row["final_score"] = final.get("score", float(np.mean(list(final.values()))))
        row.update({f"best_{k}": v for k, v in best.items() if k != "score"})
        row.update({f"final_{k}": v for k, v in final.items() if k != "score"})
        pre = pretrain.get(key, {})
        row.update({c: pre.get(c) for c in PRETRAIN_COLS})
        row["search_steps"] = search_info.get(key, {}).get("search_steps")
        rows.append(row)
    if bar is not None:
        bar.set_description("report")
        bar.close()
    result = SweepResult(cfg, rows, out)
    result.gated = gated
    result.write(plots=plots)
    return result


class SweepResult:
    def __init__(self, cfg: dict, rows: list[dict], out: Path):
        self.cfg, self.rows, self.out = cfg, rows, out
        metrics = ["score", "final_score"] + sorted({k for r in rows for k in r if k.startswith(("best_", "final_"))
                                                    and k != "final_score"})
        metrics += [c for c in PRETRAIN_COLS if any(r.get(c) is not None for r in rows)]
        if any(r.get("search_steps") is not None for r in rows):
            metrics.append("search_steps")
        self.metrics = metrics
        self.summary = aggregate(rows, metrics, CELL_KEYS)
        self.correlations: dict = {}
        self.gated: dict = {}  # task -> {"dense_score", "gate"}: left out because the dense model did not learn it

    def table(self, metric: str = "score") -> tuple[list[str], list[list[str]]]:
        keys = ("method", "sparsity") if len({r["train_size"] for r in self.rows}) <= 1 else \
            ("method", "sparsity", "train_size")
        if len({r["budget"] for r in self.rows}) > 1:
            keys = keys + ("budget",)
        return pivot(self.summary, metric, row_keys=keys, col_key="task")

    def render(self, metric: str = "score") -> str:
        """The final table for the terminal: downstream score (x100, mean ± std over seeds) per task."""
        header, body = self.table(metric)
        return text_table(header, body)

    def _cell_points(self, metric="score"):
        """One point per (method, sparsity, budget): mean over tasks and seeds; pre-training losses."""
        groups: dict[tuple, list[dict]] = {}
        for r in self.rows:
            groups.setdefault((r["method"], r["sparsity"], r["budget"]), []).append(r)
        pts = []
        for (method, s, b), rs in groups.items():
            p = {"method": method, "sparsity": s, "budget": b, metric: float(np.mean([r[metric] for r in rs]))}
            for c in PRETRAIN_COLS + ("search_steps",):
                vals = [r[c] for r in rs if r.get(c) is not None]
                p[c] = float(np.mean(vals)) if vals else None
            pts.append(p)
        return pts

    def write(self, plots: bool = True) -> None:
        out = self.out
        write_csv(self.rows, out / "results.csv")
        write_csv(self.summary, out / "summary.csv")
        pts = self._cell_points()
        figs = {}
        if plots and self.rows:
            from . import plots as P

            figs["score_vs_sparsity"] = P.score_vs_sparsity(self.summary, out / "plots" / "score_vs_sparsity.png")
            for loss in PRETRAIN_COLS:
                if loss == "mlm_accuracy" or not any(p.get(loss) is not None for p in pts):
                    continue
                path, corr = P.pretrain_vs_downstream(pts, out / "plots" / f"{loss}_vs_score.png", loss=loss)
                figs[f"{loss}_vs_score"] = path
                self.correlations[loss] = corr
            if any(p.get("search_steps") is not None and p["budget"] is not None for p in pts):
                figs["score_vs_search_steps"] = P.score_vs_search_steps(
                    [p for p in pts if p["budget"] is not None], out / "plots" / "score_vs_search_steps.png")
        else:
            from .plots import correlation

            for loss in ("mlm_loss", "kd_loss"):
                sp = [p for p in pts if p["method"] != "dense" and p.get(loss) is not None]
                if sp:
                    self.correlations[loss] = correlation([p[loss] for p in sp], [p["score"] for p in sp])
        write_json({"config": self.cfg, "rows": self.rows, "summary": self.summary,
                    "correlations": self.correlations}, out / "results.json")
        from tamt.io import atomic_write_text

        atomic_write_text(out / "report.md", self.markdown(figs))

    def markdown(self, figs: dict | None = None) -> str:
        lines = [f"# {self.cfg.get('name', 'sweep')}: downstream transfer of subnetworks", ""]
        lines.append(f"Model `{self.cfg['model']}`, corpus `{self.cfg['corpus']}`, data `{self.cfg['data']}`; "
                     f"{len(self.rows)} fine-tuning runs. Scores x100, mean ± std over fine-tuning (and mask) seeds; "
                     "`score` is the best dev score (mean of the task's metrics), the paper's protocol.")
        for task, g in self.gated.items():
            lines += ["", f"**{task} left out**: the dense model reached {100 * g['dense_score']:.1f} (< the gate "
                      f"{100 * g['gate']:.1f}), so this budget does not teach the task and its subnetworks were not "
                      "fine-tuned."]
        lines += ["", "## Best-dev score", "", markdown_table(*self.table("score")), ""]
        lines += ["## Final score (end of training)", "", markdown_table(*self.table("final_score")), ""]
        if "mnli" in self.cfg.get("tasks", []):
            lines += ["MNLI: both dev sets are reported (`matched_accuracy`, `mismatched_accuracy`; the MNLI "
                      "score is their mean).  The reference code (glue_trans.py) reports the *mismatched* "
                      "accuracy as MNLI's `acc` (its evaluation writes the matched and then the mismatched "
                      "result under one key); compare the paper's MNLI numbers with `mismatched_accuracy`.", ""]
        pts = self._cell_points()
        if any(p.get(c) is not None for p in pts for c in PRETRAIN_COLS):
            lines += ["## Pre-training performance (held-out)", ""]
            hdr = ["method", "sparsity", "mlm_loss", "mlm_accuracy", "kd_loss", "score"]
            body = [[p["method"], f"{p['sparsity']:g}"] +
                    [("-" if p.get(c) is None else f"{p[c]:.4f}") for c in PRETRAIN_COLS] + [f"{100 * p['score']:.2f}"]
                    for p in sorted(pts, key=lambda p: (p["sparsity"], p["method"]))]
            lines += [markdown_table(hdr, body), ""]
        if self.correlations:
            lines += ["Correlation between pre-training loss and downstream score over the sparse subnetworks "
                      "(the paper: lower loss goes with better transfer, i.e. negative correlation):", ""]
            for loss, c in self.correlations.items():
                lines.append(f"- {loss}: {describe_correlation(c, 3, p_values=True)}")
            lines.append("")
        sub = self.summary
        lines += ["## Per-task metrics", ""]
        hdr = ["method", "sparsity", "task", "train_size", "n", "metric", "best", "final"]
        body = []
        for a in sub:
            for k in sorted(k[:-5] for k in a if k.startswith("best_") and k.endswith("_mean")):
                body.append([a["method"], f"{a['sparsity']:g}", a["task"], str(a["train_size"] or "all"), str(a["n"]),
                             k[5:], pm(a[f"{k}_mean"], a[f"{k}_std"]),
                             pm(a.get(f"final_{k[5:]}_mean", float("nan")), a.get(f"final_{k[5:]}_std", float("nan")))])
        lines += [markdown_table(hdr, body), ""]
        if figs:
            lines += ["## Plots", ""]
            for name, path in figs.items():
                lines.append(f"![{name}]({Path(path).relative_to(self.out)})")
            lines.append("")
        return "\n".join(lines)
