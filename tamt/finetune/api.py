"""``tamt.finetune``: fine-tune a subnetwork (base weights + fixed mask) on a GLUE task or SQuAD."""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import FinetuneConfig
from .data import canonical_task, load_task, subsample, task_info
from .trainer import JsonlLog, _tokenize_glue, train_one_seed


@dataclass
class FinetuneResult:
    """``metrics`` = {"best": {metric: mean over seeds}, "final": {...}}; ``std`` the same shape.

    ``per_seed`` holds each seed's best/final metrics, best step, history and timing.  ``model`` is the
    last seed's fine-tuned model (still patched; pruned weights are zero).
    """

    task: str
    metrics: dict[str, dict[str, float]]
    std: dict[str, dict[str, float]]
    per_seed: list[dict[str, Any]]
    config: dict
    sparsity: float
    wall_time_s: float
    model: Any = field(default=None, repr=False)
    inputs: dict = field(default_factory=dict)  # model, mask file, data, ignore_fingerprint, train_size_used
    notes: list = field(default_factory=list)  # what differs from what was asked (e.g. a smaller train split)

    def to_dict(self) -> dict:
        return {"task": self.task, "metrics": self.metrics, "std": self.std, "per_seed": self.per_seed,
                "config": self.config, "sparsity": self.sparsity, "wall_time_s": self.wall_time_s,
                "inputs": self.inputs, "notes": self.notes}

    def __str__(self) -> str:
        lines = [f"{self.task}: sparsity {self.sparsity:.3f}, {len(self.per_seed)} seed(s), {self.wall_time_s:.1f}s"]
        for kind in ("best", "final"):
            if len(self.per_seed) > 1:
                parts = [f"{k} {100 * v:.2f}±{100 * self.std[kind][k]:.2f}" for k, v in self.metrics[kind].items()]
            else:  # no spread from one seed
                parts = [f"{k} {100 * v:.2f}" for k, v in self.metrics[kind].items()]
            lines.append(f"  {kind:5s}: " + ", ".join(parts) + ("" if len(self.per_seed) > 1 else " (one seed)"))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _aggregate(per_seed: list[dict], kind: str):
    keys = list(per_seed[0][kind])
    mean = {k: float(np.mean([r[kind][k] for r in per_seed])) for k in keys}
    std = {k: float(np.std([r[kind][k] for r in per_seed])) for k in keys}
    return mean, std


def _resolve_tokenizer(model, tokenizer):
    if tokenizer is not None:
        return tokenizer
    from tamt.models import load_tokenizer

    if hasattr(model, "config"):
        src = getattr(model.config, "_name_or_path", "")
        if src:
            return load_tokenizer(src)
        raise ValueError("finetune: pass tokenizer=... for an already-loaded model without a checkpoint path")
    return load_tokenizer(model)


def finetune(model="default", mask=None, task: str = "sst2", data="hub", *, train_size: int | None = None,
             epochs: float | None = None, seeds=None, out=None, preset: str | None = None, tokenizer=None,
             ignore_fingerprint: bool = False, config: FinetuneConfig | None = None, overwrite: bool = False,
             **overrides) -> FinetuneResult:
    """Fine-tune ``model`` with ``mask`` fixed on ``task``; one run per seed.

    ``model``: a checkpoint folder, a hub name, ``"default"`` (embedded MiniLM) or a loaded model (an
    encoder, an MLM model or a patched model; then pass ``tokenizer``). A patched model with
    ``mask=None`` uses its own masks.  ``mask``: a mask file path, a ``MaskFile``, a {name: bool mask}
    dict, or None / "none" (dense).  ``data``: "hub" or a folder with the official files.
    Options are :class:`FinetuneConfig` fields (``lr``, ``batch_size``, ``max_seq_length``, ...);
    ``preset`` is "paper" or "cpu-small".  ``out`` gets result.json and log.jsonl (and the models): a
    folder that already holds a fine-tuning run is refused unless ``overwrite=True``; the folder is locked
    while the run writes to it.
    """
    from torch import nn

    t_start = time.perf_counter()
    task = canonical_task(task)
    if config is None:
        config = FinetuneConfig.for_task(task, preset, train_size=train_size, epochs=epochs, seeds=seeds,
                                         **overrides)
    else:
        import dataclasses

        config = dataclasses.replace(config, **{k: v for k, v in dict(
            train_size=train_size, epochs=epochs, seeds=seeds, **overrides).items() if v is not None})
    if config.num_threads:
        import torch

        torch.set_num_threads(config.num_threads)
    out = Path(out) if out else None
    if out is not None:
        from tamt.io import check_output_dir

        check_output_dir(out)  # a file or a read-only folder is refused before any work
    mask_file = str(mask) if isinstance(mask, (str, os.PathLike)) else None
    if isinstance(mask, str) and mask.lower() == "none":
        mask, mask_file = None, None
    if mask is None and isinstance(model, nn.Module):
        from tamt.nn import get_masks, masked_modules

        if masked_modules(model):
            mask = get_masks(model)
    if isinstance(mask, (str, os.PathLike)):
        from tamt.masks import load_mask

        mask = load_mask(mask)
    tokenizer = _resolve_tokenizer(model, tokenizer)
    info = task_info(task)
    squad_examples, kw = None, None
    if task == "squad":
        from tamt.data.squad import prepare_validation_features

        raw = load_task(task, data)
        ev = raw["validation"]
        if config.eval_size and config.eval_size < len(ev):
            ev = subsample(ev, config.eval_size, seed=0, stratify=False)
        squad_examples = ev
        kw = {"tokenizer": tokenizer, "max_length": config.max_seq_length, "doc_stride": config.doc_stride}
        eval_sets = {"validation": ev.map(prepare_validation_features, batched=True, fn_kwargs=kw,
                                          remove_columns=ev.column_names)}
    else:
        raw = load_task(task, data)
        eval_sets = {}
        for split in info.eval_splits:
            ev = raw[split]
            if config.eval_size and config.eval_size < len(ev):
                ev = subsample(ev, config.eval_size, seed=0, stratify=not info.is_regression)
            eval_sets[split] = _tokenize_glue(ev, tokenizer, config.max_seq_length, sort_by_length=True)
    inputs = {"model": model if isinstance(model, (str, os.PathLike)) else type(model).__name__, "mask": mask_file,
              "data": str(data), "ignore_fingerprint": bool(ignore_fingerprint)}
    with contextlib.ExitStack() as stack:  # every input is read: only now the out folder is taken
        if out is not None:
            from tamt.io import clean_stale_temporaries, folder_lock

            stack.enter_context(folder_lock(out, what=str(out)))
            _claim_out(out, overwrite)
            clean_stale_temporaries(out)  # e.g. a half-saved model of a killed run
        return _train_seeds(model, mask, task, raw, eval_sets, squad_examples, kw, config, tokenizer, info, out,
                            t_start, inputs)


_OWNED = ("result.json", "log.jsonl")


def _claim_out(out: Path, overwrite: bool) -> None:
    """Refuse an out folder that holds another fine-tuning run (unless ``overwrite``: then remove it)."""
    import shutil

    present = [out / n for n in _OWNED if (out / n).exists()] + sorted(p.parent for p in out.glob("seed*/model"))
    if not present:
        return
    if not overwrite:
        raise ValueError(f"{out} already holds a fine-tuning run ({', '.join(p.name for p in present)}); pass "
                         "--overwrite to replace it, or choose another --out")
    for p in present:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _train_seeds(model, mask, task, raw, eval_sets, squad_examples, kw, config, tokenizer, info, out, t_start,
                 inputs) -> FinetuneResult:
    ignore_fingerprint = inputs["ignore_fingerprint"]
    log = JsonlLog(out / "log.jsonl" if out else None)
    if task == "squad":
        from tamt.data.squad import prepare_train_features

    per_seed, last_model, notes = [], None, []
    n_train = len(raw["train"])
    if config.train_size and config.train_size > n_train:
        notes.append(f"train_size {config.train_size} is larger than the {n_train} examples of the train split: "
                     f"all {n_train} were used")
    inputs["train_size_used"] = min(config.train_size or n_train, n_train)
    for seed in config.seeds:
        train = raw["train"]
        if config.train_size:
            train = subsample(train, config.train_size, seed=seed,
                              stratify=config.stratify and not info.is_regression and task != "squad")
        if task == "squad":
            train_tok = train.map(prepare_train_features, batched=True, fn_kwargs=kw,
                                  remove_columns=train.column_names)
        else:
            train_tok = _tokenize_glue(train, tokenizer, config.max_seq_length)
        res = train_one_seed(base=model, mask=mask, task=task, seed=seed, cfg=config, tokenizer=tokenizer,
                             train_ds=train_tok, eval_sets=eval_sets, squad_eval_examples=squad_examples, out=out,
                             mask_kwargs={"ignore_fingerprint": ignore_fingerprint}, log=log)
        last_model = res.pop("model")
        per_seed.append(res)
    best, best_std = _aggregate(per_seed, "best")
    final, final_std = _aggregate(per_seed, "final")
    result = FinetuneResult(task=task, metrics={"best": best, "final": final},
                            std={"best": best_std, "final": final_std}, per_seed=per_seed,
                            config=config.to_dict(), sparsity=per_seed[0]["mask"]["sparsity"],
                            wall_time_s=time.perf_counter() - t_start, model=last_model, inputs=inputs,
                            notes=notes)
    if out:
        from tamt.io import atomic_write_text

        atomic_write_text(out / "result.json", json.dumps(result.to_dict(), indent=2))
    return result
