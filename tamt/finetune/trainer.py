"""The fine-tuning loop: a plain PyTorch loop over one task, one seed at a time.

The subnetwork's mask is fixed (``tamt.apply_mask`` in fixed mode, weights
trainable): pruned weights are zeroed in the stored tensor before training,
the masked forward multiplies by M and the weight gradient is G*M, so AdamW
(whose decoupled weight decay only shrinks values) never makes them non-zero.
This is checked after training (``pruned_nonzero`` must be 0).
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from tamt.optim import make_optimizer

from . import metrics as M
from .config import FinetuneConfig
from .data import task_info


# ---------------------------------------------------------------------------
# models

def build_task_model(base, task: str, seed: int, *, device="cpu") -> nn.Module:
    """A fresh task model (head initialised under ``seed``) from a checkpoint path or a loaded model."""
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    info = task_info(task)
    cls = AutoModelForQuestionAnswering if task == "squad" else AutoModelForSequenceClassification
    kwargs = {} if task == "squad" else {
        "num_labels": info.num_labels,
        "problem_type": "regression" if info.is_regression else "single_label_classification",
    }
    torch.manual_seed(seed)
    if isinstance(base, nn.Module):
        config = copy.deepcopy(base.config)
        for k, v in kwargs.items():
            setattr(config, k, v)
        if task != "squad":
            config.id2label = {i: str(i) for i in range(info.num_labels)}
            config.label2id = {str(i): i for i in range(info.num_labels)}
        model = cls.from_config(config)
        from tamt.nn import base_model

        state = {k: v for k, v in base_model(base).state_dict().items()
                 if not k.endswith((".mask", ".threshold", ".scores"))}
        missing, unexpected = model.base_model.load_state_dict(state, strict=False)
        bad = [k for k in missing if "pooler" not in k]
        if bad:
            raise ValueError(f"the given model does not fit a {type(model).__name__}: missing {bad[:3]}")
    else:
        from tamt.models import from_pretrained, resolve_model_path

        model = from_pretrained(cls, resolve_model_path(base), **kwargs)
    return model.to(device)


def apply_fixed_mask(model: nn.Module, mask, *, ignore_fingerprint: bool = False) -> dict:
    """Apply ``mask`` (path, MaskFile, dict) in fixed mode with trainable weights; zero pruned weights."""
    from tamt.masks import apply_mask
    from tamt.nn import masked_modules

    apply_mask(model, mask, ignore_fingerprint=ignore_fingerprint)
    total = kept = 0
    with torch.no_grad():
        for _, m in masked_modules(model):
            m.weight.requires_grad_(True)
            m.weight.mul_(m.mask.to(m.weight.dtype))
            total += m.mask.numel()
            kept += int(m.mask.sum())
    return {"sparsity": 1 - kept / max(total, 1), "masked_params": total}


def count_pruned_nonzero(model: nn.Module) -> int:
    from tamt.nn import masked_modules

    n = 0
    with torch.no_grad():
        for _, m in masked_modules(model):
            n += int((m.weight[~m.mask] != 0).sum())
    return n


# ---------------------------------------------------------------------------
# data

_DIRECT_TOKENIZE_MAX = 20_000  # rows; larger splits go through Dataset.map (batched, cached on disk)


def _tokenize_glue(ds, tokenizer, max_len, *, sort_by_length: bool = False):
    """Tokenise a GLUE-style split (``text_a``, optional ``text_b``, ``label``) to model inputs + label.

    Small splits (the demo, subsampled training sets, capped dev sets) are
    tokenised in one call: ``Dataset.map`` would spend about a second per call
    hashing the tokenizer for its cache fingerprint, which is more than the
    tokenisation.  ``sort_by_length`` orders an *evaluation* split by length so
    that padded batches waste little compute (metrics do not depend on order).
    """
    from datasets import Dataset

    def enc(batch):
        b = batch.get("text_b")
        if b is None or all(x is None for x in b):
            return tokenizer(batch["text_a"], truncation=True, max_length=max_len)
        return tokenizer(batch["text_a"], [x or "" for x in b], truncation="longest_first", max_length=max_len)

    if len(ds) <= _DIRECT_TOKENIZE_MAX:
        cols = {c: list(ds[c]) for c in ("text_a", "text_b") if c in ds.column_names}  # Column -> list
        toks = enc(cols)
        out = {k: list(toks[k]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in toks}
        if "label" in ds.column_names:
            out["label"] = list(ds["label"])
        res = Dataset.from_dict(out)
    else:
        keep = [c for c in ds.column_names if c != "label"]
        res = ds.map(enc, batched=True, remove_columns=keep, desc=None)
    if sort_by_length and len(res) > 1:
        import numpy as np

        lengths = np.array([len(x) for x in list(res["input_ids"])])
        res = res.select(np.argsort(lengths, kind="stable"))
    return res


def _model_inputs(ds) -> list[str]:
    return [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in ds.column_names]


class _Collate:
    def __init__(self, pad_id: int, columns: list[str], label_cols: list[str], float_labels: bool = False):
        self.pad_id, self.columns, self.label_cols, self.float_labels = pad_id, columns, label_cols, float_labels

    def __call__(self, rows: list[dict]) -> dict:
        L = max(len(r["input_ids"]) for r in rows)
        out = {}
        for c in self.columns:
            pad = self.pad_id if c == "input_ids" else 0
            out[c] = torch.tensor([list(r[c]) + [pad] * (L - len(r[c])) for r in rows], dtype=torch.long)
        for c in self.label_cols:
            dtype = torch.float32 if self.float_labels else torch.long
            out["labels" if c == "label" else c] = torch.tensor([r[c] for r in rows], dtype=dtype)
        return out


def _loader(ds, collate, batch_size, shuffle, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=g)


# ---------------------------------------------------------------------------
# evaluation

@torch.no_grad()
def evaluate_glue(model, task: str, eval_sets: dict, collate, batch_size: int, device) -> dict[str, float]:
    info = task_info(task)
    model.eval()
    out: dict[str, float] = {}
    for split, ds in eval_sets.items():
        preds, labels = [], []
        for batch in _loader(ds, collate, batch_size, False, 0):
            y = batch.pop("labels")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
            preds.append(logits.squeeze(-1) if info.is_regression else logits.argmax(-1))
            labels.append(y)
        res = M.glue_metrics(task, torch.cat(preds).numpy(), torch.cat(labels).numpy())
        prefix = "" if len(eval_sets) == 1 else split.replace("validation_", "") + "_"
        out.update({prefix + k: v for k, v in res.items()})
    model.train()
    return out


@torch.no_grad()
def evaluate_squad(model, examples, features, collate, batch_size, device, cfg: FinetuneConfig) -> dict[str, float]:
    from tamt.data.squad import postprocess_predictions

    model.eval()
    starts, ends = [], []
    for batch in _loader(features.remove_columns(["example_id", "offset_mapping"]), collate, batch_size, False, 0):
        o = model(**{k: v.to(device) for k, v in batch.items()})
        starts.append(o.start_logits.float().cpu())
        ends.append(o.end_logits.float().cpu())
    preds = postprocess_predictions(examples, features, torch.cat(starts).numpy(), torch.cat(ends).numpy(),
                                    n_best=cfg.n_best_size, max_answer_length=cfg.max_answer_length)
    refs = {ex["id"]: ex["answers"]["text"] for ex in examples}
    model.train()
    return M.squad_metrics(preds, refs)


def with_score(task: str, metrics: dict[str, float]) -> dict[str, float]:
    """Add ``score``: the mean of the task's metrics (the GLUE-leaderboard number), for sweeps."""
    vals = [v for k, v in metrics.items() if k != "score"]
    return {**metrics, "score": float(np.mean(vals)) if vals else float("nan")}


def main_key(task: str, metrics: dict) -> str:
    m = task_info(task).main_metric
    return m if m in metrics else f"matched_{m}"


# ---------------------------------------------------------------------------
# the loop

def train_one_seed(
    *, base, mask, task: str, seed: int, cfg: FinetuneConfig, tokenizer, train_ds, eval_sets: dict,
    squad_eval_examples=None, out: Path | None = None, mask_kwargs: dict | None = None,
    log: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = task_info(task)
    model = build_task_model(base, task, seed, device=device)
    mask_info = {"sparsity": 0.0, "masked_params": 0}
    if mask is not None:
        mask_info = apply_fixed_mask(model, mask, **(mask_kwargs or {}))
    if cfg.freeze_word_embeddings:
        # the vocabulary matrix is half of a small encoder's weights: its gradient and AdamW update are a
        # quarter of a CPU step of MiniLM; frozen, the (masked) embeddings stay as the subnetwork has them
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.fast_dropout and device.type == "cpu":
        from tamt.nn import dropout as fast_dropout

        fast_dropout.install(model)  # torch's CPU dropout is a large part of a CPU step (tamt/nn/dropout.py)
    model.train()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)

    inputs = _model_inputs(train_ds)
    pad_id = tokenizer.pad_token_id or 0
    if task == "squad":
        train_collate = _Collate(pad_id, inputs, ["start_positions", "end_positions"])
        eval_collate = _Collate(pad_id, inputs, [])
    else:
        train_collate = _Collate(pad_id, inputs, ["label"], float_labels=info.is_regression)
        eval_collate = train_collate
    loader = _loader(train_ds, train_collate, cfg.batch_size, True, seed)
    steps_per_epoch = len(loader)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    eval_every = cfg.eval_every or max(1, steps_per_epoch // max(1, cfg.eval_per_epoch))

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not n.endswith(no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in params if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    opt = make_optimizer(cfg.optimizer, groups, lr=cfg.lr, eps=cfg.adam_eps)
    warmup = int(cfg.warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))

    def evaluate():
        if task == "squad":
            res = evaluate_squad(model, squad_eval_examples, eval_sets["validation"], eval_collate,
                                 cfg.eval_batch_size, device, cfg)
        else:
            res = evaluate_glue(model, task, eval_sets, eval_collate, cfg.eval_batch_size, device)
        return with_score(task, res)

    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"{task} seed {seed}", leave=False, dynamic_ncols=True)
    history, best, best_step = [], None, 0
    step, t0, running = 0, time.perf_counter(), []
    while step < total:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            running.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
            if step % eval_every == 0 or step == total:
                res = evaluate()
                rec = {"seed": seed, "step": step, "epoch": step / steps_per_epoch,
                       "train_loss": float(np.mean(running)), "lr": sched.get_last_lr()[0], **res}
                running = []
                history.append(rec)
                if log:
                    log(rec)
                key = cfg.select_metric or main_key(task, res)
                if key not in res:
                    raise ValueError(f"select_metric {key!r} is not a {task} metric; choose one of "
                                     f"{', '.join(k for k in res if k != 'score')}")
                if best is None or res[key] > best[key]:
                    best, best_step = res, step
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['train_loss']:.4f}", **{key: f"{res[key]:.4f}"})
            if step >= total:
                break
    if bar is not None:
        bar.close()
    final = history[-1]
    final = {k: final[k] for k in best}
    nonzero = count_pruned_nonzero(model) if mask is not None else 0
    if nonzero:
        raise RuntimeError(f"{nonzero} pruned weights became non-zero during fine-tuning (mask not fixed)")
    if cfg.freeze_word_embeddings:
        # the vocabulary matrix is half of a small encoder's weights: its gradient and AdamW update are a
        # quarter of a CPU step of MiniLM; frozen, the (masked) embeddings stay as the subnetwork has them
        model.get_input_embeddings().weight.requires_grad_(False)
    if cfg.fast_dropout and device.type == "cpu":
        from tamt.nn import dropout as fast_dropout

        fast_dropout.uninstall(model)  # the returned / saved model is a plain transformers model
    if cfg.save_model and out is not None:
        save_task_model(model, tokenizer, Path(out) / f"seed{seed}" / "model")
    return {"seed": seed, "best": best, "best_step": best_step, "final": final, "steps": total,
            "train_examples": len(train_ds), "train_time_s": time.perf_counter() - t0,
            "pruned_nonzero": nonzero, "mask": mask_info, "history": history, "model": model}


def save_task_model(model, tokenizer, path: Path) -> Path:
    """Bake the mask into plain weights (zeros) and save_pretrained atomically (temp folder + rename)."""
    import shutil
    import tempfile

    from tamt.nn import masked_modules, unpatch_model

    m = copy.deepcopy(model)
    if masked_modules(m):
        unpatch_model(m)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))  # see tamt.io
    try:
        from tamt.io import honour_umask

        honour_umask(tmp, folder=True)
        m.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


class JsonlLog:
    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, rec: dict) -> None:
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
