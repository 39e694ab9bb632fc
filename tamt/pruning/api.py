"""Python API: ``tamt.search`` and ``tamt.evaluate_pretraining``."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tamt.nn.structure import run_label

from .config import SearchConfig, check_method, check_sparsities, preset as get_preset
from .context import SearchContext, ensure_kd_data, fit_head, prepare
from .objectives import kd_loss_sum, mask_tokens, mlm_loss_sum
from .searcher import Searcher, _dist, requested_steps

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """What a search produced.

    ``masks``: {matrix name: bool mask} for a single requested sparsity, else
    {sparsity: {matrix name: bool mask}}.  ``history``: {sparsity (or 'imp'):
    list of metric rows}.  ``timings``: {sparsity: {"search_s", "wall_s",
    "steps"}} (for IMP: the search time until that sparsity was reached).
    ``paths``: {sparsity: mask file}.  ``intermediate``: IMP's masks at every
    round's sparsity.
    """

    method: str
    sparsities: tuple
    masks: dict
    history: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    out: Path | None = None
    info: dict = field(default_factory=dict)
    intermediate: dict = field(default_factory=dict)
    saved_at: dict = field(default_factory=dict)

    def mask(self, sparsity: float | None = None) -> dict:
        if len(self.sparsities) == 1 and sparsity in (None, self.sparsities[0]):
            return self.masks
        return self.masks[float(sparsity)]


def build_config(method: str, sparsity, *, steps=None, epochs=None, preset: str | None = None,
                 **config) -> SearchConfig:
    return build_config_with_sources(method, sparsity, steps=steps, epochs=epochs, preset=preset, **config)[0]


def build_config_with_sources(method: str, sparsity, *, steps=None, epochs=None, preset: str | None = None,
                              **config) -> tuple[SearchConfig, dict[str, str]]:
    """The config of a search and, per option set explicitly, where its value came from
    ("preset <name>", "preset <name> for <method>", "option")."""
    method = check_method(method)
    common = get_preset(preset) if preset else {}
    base = get_preset(preset, method) if preset else {}
    sources = {k: f"preset {preset}" if k in common and common[k] == v else f"preset {preset} for {method}"
               for k, v in base.items()}
    if steps is not None or epochs is not None:
        base.pop("steps", None)
        base.pop("epochs", None)
    base.update({k: v for k, v in config.items()})
    sources.update({k: "option" for k in config})
    if steps is not None:
        base["steps"] = steps
        sources["steps"] = "option"
    if epochs is not None:
        base["epochs"] = epochs
        sources["epochs"] = "option"
    if sparsity is None:  # an N:M structure fixes it at 1 - N/M
        from tamt.nn.structure import default_sparsity

        sparsity = default_sparsity(base.get("structure"))
    cfg = SearchConfig.from_dict({"method": check_method(method), "sparsities": check_sparsities(sparsity), **base})
    sources.update(method="option", sparsities="option")
    return cfg, sources


def init_distributed() -> bool:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        return True
    return False


def make_context(model, corpus, config: SearchConfig, *, tokenizer=None, out=None) -> SearchContext:
    ctx = prepare(model, corpus, tokenizer=tokenizer, block_size=config.block_size,
                  validation_fraction=config.validation_fraction, seed=config.seed, max_blocks=config.max_blocks)
    ensure_head(ctx, config, out=out)
    ensure_kd_data(ctx, config, corpus)
    return ctx


def ensure_head(ctx: SearchContext, config: SearchConfig, *, out=None) -> None:
    if ctx.info.get("head_initialised") and (config.uses_mlm or config.eval_every):
        rank, _ = _dist()
        cache = Path(out) if out is not None else None
        fit_head(ctx, steps=config.head_fit_steps, lr=config.head_fit_lr, batch_size=config.batch_size,
                 seed=config.seed, cache_dir=cache if rank == 0 else None, progress=config.progress and rank == 0)


def search(model, method: str, sparsity, corpus, *, steps: int | None = None, epochs: float | None = None,
           out: str | os.PathLike | None = None, tokenizer=None, preset: str | None = None, resume: bool = False,
           overwrite: bool = False, callbacks=(), context: SearchContext | None = None, **config) -> SearchResult:
    """Find subnetworks of ``model`` at ``sparsity`` (a number or a list) with ``method``.

    ``model``: a hub name, a checkpoint folder, ``"default"`` (embedded
    MiniLM) or a transformers module.  ``corpus``: a file/folder/hub name or a
    ``DatasetDict`` of token blocks.  ``config``: any :class:`SearchConfig`
    field (``lr``, ``batch_size``, ``threshold_mode``, ...); ``preset``: one
    of :data:`PRESETS` applied first.  With ``out`` the run writes masks,
    metrics, TensorBoard logs and checkpoints there, holding the folder's
    lock; ``resume=True`` continues an interrupted run in the same ``out`` to
    the same final masks (refused when a result-changing option differs, see
    :mod:`tamt.pruning.run_dir`); a folder that holds another run is refused
    unless ``overwrite=True``.  Every input is checked before anything is
    written.
    """
    from .run_dir import claim, corpus_identity, run_identity, write_identity

    cfg = build_config(method, sparsity, steps=steps, epochs=epochs, preset=preset, **config)
    rank, _ = _dist()
    out_p = Path(out) if out is not None else None
    if out_p is not None and rank == 0:
        from tamt.io import check_output_dir

        check_output_dir(out_p)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if context is None:
        with _datasets_progress(cfg.progress):
            ctx = prepare(model, corpus, tokenizer=tokenizer, block_size=cfg.block_size,
                          validation_fraction=cfg.validation_fraction, seed=cfg.seed, max_blocks=cfg.max_blocks)
    else:
        ctx = context
    requested_steps(cfg, len(ctx.train))  # a search that cannot run fails before it writes
    with contextlib.ExitStack() as stack:
        if out_p is not None:
            identity = run_identity(cfg, ctx.info, corpus_identity(ctx.train, ctx.validation,
                                                                   corpus if context is None else None))

            def take_folder():
                from tamt.io import clean_stale_temporaries, folder_lock

                stack.enter_context(folder_lock(out_p, what=str(out_p)))
                claim(out_p, identity, resume=resume, overwrite=overwrite)
                for p in clean_stale_temporaries(out_p):
                    log.info("removed %s, left by a process killed while writing", p)
                write_identity(out_p, identity)

            _on_rank0(take_folder)
        ensure_head(ctx, cfg, out=out_p)
        ensure_kd_data(ctx, cfg, corpus)
        return _search_all(ctx, cfg, out_p, resume=resume, callbacks=callbacks)


def _on_rank0(fn) -> None:
    """Run ``fn`` on rank 0 only; under torchrun the other ranks learn of its failure instead of waiting forever."""
    import torch.distributed as dist

    rank, world = _dist()
    err = None
    if rank == 0:
        try:
            fn()
        except Exception as exc:  # re-raised below, after the other ranks were told
            err = exc
    if world > 1:
        box = [None if err is None else f"{type(err).__name__}: {err}"]
        dist.broadcast_object_list(box, src=0)
        if rank != 0 and box[0]:
            raise RuntimeError(f"rank 0 stopped the run: {box[0]}")
    if err is not None:
        raise err


@contextlib.contextmanager
def _datasets_progress(enabled: bool):
    """``progress=False`` also silences the ``datasets`` bars of corpus tokenisation."""
    try:
        import datasets
    except ImportError:  # in-memory corpora need no datasets package
        datasets = None
    if enabled or datasets is None:
        yield
        return
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def _search_all(ctx: SearchContext, cfg: SearchConfig, out_p: Path | None, *, resume: bool,
                callbacks) -> SearchResult:
    from .run_dir import FinishedRun

    rank, _ = _dist()
    runs = [None] if cfg.method == "imp" else list(cfg.sparsities)
    result = SearchResult(method=cfg.method, sparsities=cfg.sparsities, masks={}, out=out_p, info=dict(ctx.info))
    for s in runs:
        name = "imp" if s is None else f"{run_label(cfg.method, cfg.structure, cfg.embedding_structure)}-s{s:.2f}"
        run_dir = out_p / "runs" / name if out_p is not None else None
        mask_dir = out_p / "masks" if out_p is not None else None
        wall = time.perf_counter()
        searcher = FinishedRun.load(run_dir) if resume else None  # a sparsity finished before the interruption
        if searcher is None:
            searcher = Searcher(ctx, cfg, sparsity=s, run_dir=run_dir, mask_dir=mask_dir, resume=resume,
                                callbacks=callbacks)
            searcher.run()
            wall = time.perf_counter() - wall
        else:
            wall = searcher.wall_s
        key = "imp" if s is None else s
        result.history[key] = searcher.history
        result.saved_at[key] = searcher.saved_at
        for lvl, masks in searcher.masks.items():
            em = searcher.emitted.get(lvl, {})
            timing = {"search_s": em.get("time", searcher.elapsed), "steps": em.get("step", searcher.step_count),
                      "wall_s": wall}
            if cfg.method == "imp":
                result.intermediate[lvl] = masks
            if cfg.method != "imp" or any(abs(lvl - r) < 1e-9 for r in cfg.sparsities):
                result.masks[lvl] = masks
                result.timings[lvl] = timing
                if lvl in searcher.mask_paths:
                    result.paths[lvl] = searcher.mask_paths[lvl]
    if len(cfg.sparsities) == 1:
        result.masks = result.masks[cfg.sparsities[0]]
    if out_p is not None and rank == 0:
        from tamt.io import atomic_write_text

        summary = {"method": cfg.method, "sparsities": list(cfg.sparsities), "info": ctx.info,
                   "timings": {f"{k:.4f}": v for k, v in result.timings.items()},
                   "paths": {f"{k:.4f}": v for k, v in result.paths.items()}}
        atomic_write_text(out_p / "result.json", json.dumps(summary, indent=1, default=str))
    return result


# ---------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate_context(ctx: SearchContext, model: nn.Module, *, batches: int | None = 20, batch_size: int = 16,
                     seed: int = 0, device=None, objectives=("mlm", "kd")) -> dict:
    """Held-out MLM loss/accuracy and KD loss of ``model`` (patched or dense) on ``ctx.validation``.

    Deterministic: the first ``batches`` * ``batch_size`` validation blocks in
    order, MLM masking from a generator seeded by ``seed``.
    """
    from tamt.nn import base_model

    device = device or model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    if "kd" in objectives:
        ctx.teacher.to(device)
    enc = base_model(model)
    n = len(ctx.validation)
    stop = n if batches is None else min(n, batches * batch_size)
    gen = torch.Generator().manual_seed(10_007 + seed)
    mlm_s = mlm_c = mlm_ok = kd_s = kd_c = 0.0
    L = 1
    for start in range(0, stop, batch_size):
        b = ctx.batch("validation", range(start, min(stop, start + batch_size)))
        ids, am = b["input_ids"].to(device), b["attention_mask"].to(device)
        if "mlm" in objectives:
            mids, labels = mask_tokens(b["input_ids"], b["attention_mask"], special_ids=ctx.special_ids,
                                       mask_id=ctx.mask_id, vocab_size=ctx.vocab_size, generator=gen)
            h = enc(input_ids=mids.to(device), attention_mask=am)[0]
            s, c, ok = mlm_loss_sum(model, h, labels.to(device))
            mlm_s, mlm_c, mlm_ok = mlm_s + float(s), mlm_c + float(c), mlm_ok + float(ok)
        if "kd" in objectives:
            hs = enc(input_ids=ids, attention_mask=am, output_hidden_states=True).hidden_states
            ht = ctx.teacher_hidden((start, min(stop, start + batch_size), str(device)), ids, am)
            s, c = kd_loss_sum(hs, ht, am)
            L = len(hs) - 1
            kd_s, kd_c = kd_s + float(s), kd_c + float(c)
    model.train(was_training)
    res = {}
    if "mlm" in objectives:
        res.update(mlm_loss=mlm_s / max(mlm_c, 1), mlm_accuracy=mlm_ok / max(mlm_c, 1), mlm_tokens=int(mlm_c))
    if "kd" in objectives:
        res.update(kd_loss=kd_s / max(kd_c * L, 1))
    return res


def evaluate_pretraining(model, mask, corpus=None, *, tokenizer=None, batches: int | None = 20, batch_size: int = 16,
                         block_size: int = 128, seed: int = 0, head_fit_steps: int = 200, head_fit_lr: float = 1e-3,
                         head_cache: str | os.PathLike | None = None, context: SearchContext | None = None,
                         max_blocks: int | None = None, device=None, ignore_fingerprint: bool = False) -> dict:
    """Pre-training performance of a subnetwork: held-out MLM loss, MLM accuracy and KD loss.

    ``mask``: a mask file, a ``MaskFile``, a {name: mask} dict, or ``None`` for
    the dense model.  A checkpoint without an MLM head gets one fitted densely
    (``head_fit_steps``; cached in ``head_cache``) so that every mask is
    judged with the same head.  Pass ``context`` to reuse a loaded model and corpus.
    """
    import copy

    from tamt.masks import apply_mask

    if context is None:
        if corpus is None:
            raise ValueError("evaluate_pretraining needs a corpus (or a context)")
        context = prepare(model, corpus, tokenizer=tokenizer, block_size=block_size, seed=seed, max_blocks=max_blocks)
    if context.info.get("head_initialised") and not context.info.get("head_fit_steps"):
        fit_head(context, steps=head_fit_steps, lr=head_fit_lr, batch_size=batch_size, seed=seed,
                 cache_dir=head_cache)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    m = copy.deepcopy(context.model).to(device)
    if mask is not None:
        apply_mask(m, mask, ignore_fingerprint=ignore_fingerprint)
    res = evaluate_context(context, m, batches=batches, batch_size=batch_size, seed=seed, device=torch.device(device))
    if mask is not None:
        from tamt.nn import sparsity_report

        res["sparsity"] = sparsity_report(m).sparsity
    else:
        res["sparsity"] = 0.0
    res["head_initialised"] = bool(context.info.get("head_initialised"))
    res["head_fit_steps"] = int(context.info.get("head_fit_steps", 0))
    return res
