"""What every search and evaluation shares: the dense model with an MLM head, the tokenizer,
the tokenised corpus, the frozen KD teacher and, for checkpoints without an MLM head, the
densely fitted head.

Built once by :func:`prepare` and reused across the sparsities and methods of a run.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tamt.optim import adamw

from .objectives import mask_tokens, mlm_head_parameters, mlm_loss_sum

log = logging.getLogger(__name__)


@dataclass
class SearchContext:
    model: nn.Module  # dense *ForMaskedLM (never patched; searches deep-copy it)
    tokenizer: Any
    train: Any  # datasets.Dataset of blocks (input_ids, attention_mask)
    validation: Any
    info: dict = field(default_factory=dict)  # base_model, fingerprint, head_initialised, head_fit_steps, ...
    _teacher: nn.Module | None = None
    special_ids: torch.Tensor | None = None
    # held-out teacher hidden states by (first block, last block, device): every mask of a sweep is
    # evaluated on the same blocks against the same frozen teacher, so its forward is done once
    _teacher_cache: dict = field(default_factory=dict)
    teacher_cache_bytes: int = 512 * 2**20
    # TAMT-KD's training sequences in the reference's layout (kd_data="paragraphs"; see ensure_kd_data)
    kd_train: Any = None

    def teacher_hidden(self, key, ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple:
        """The teacher's hidden states for a held-out batch, cached while the cache stays under its budget."""
        hit = self._teacher_cache.get(key)
        if hit is not None:
            return hit
        with torch.no_grad():
            hs = tuple(self.teacher(input_ids=ids, attention_mask=attention_mask,
                                    output_hidden_states=True).hidden_states)
        used = sum(t.numel() * t.element_size() for v in self._teacher_cache.values() for t in v)
        if used + sum(t.numel() * t.element_size() for t in hs) <= self.teacher_cache_bytes:
            self._teacher_cache[key] = hs
        return hs

    @property
    def teacher(self) -> nn.Module:
        """The dense pre-trained encoder, frozen, in eval mode (KD teacher)."""
        if self._teacher is None:
            from tamt.nn import base_model

            t = copy.deepcopy(base_model(self.model))
            t.eval()
            for p in t.parameters():
                p.requires_grad_(False)
            self._teacher = t
        return self._teacher

    def for_search(self, config) -> "SearchContext":
        """The context a search with ``config`` trains on: this one, or (TAMT-KD with
        ``kd_data="paragraphs"``) a view whose ``train`` split is the KD sequences (model, teacher,
        validation blocks and caches shared)."""
        if not (config.kd_data == "paragraphs" and config.method == "tamt-kd"):
            return self
        if self.kd_train is None:
            raise ValueError("kd_data='paragraphs' needs the KD sequences: build them with "
                             "tamt.pruning.context.ensure_kd_data(context, config, corpus) (tamt.search does)")
        _ = self.teacher  # create the teacher once, on the shared context
        return dataclasses.replace(self, train=self.kd_train)

    @property
    def mask_id(self) -> int:
        return int(self.tokenizer.mask_token_id)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[0])

    def batch(self, split: str, indices) -> dict[str, torch.Tensor]:
        ds = self.train if split == "train" else self.validation
        rows = ds[list(map(int, indices))]
        out = {"input_ids": torch.tensor(rows["input_ids"], dtype=torch.long),
               "attention_mask": torch.tensor(rows["attention_mask"], dtype=torch.long)}
        if "token_type_ids" in rows:  # the KD sequences' A/B segments
            out["token_type_ids"] = torch.tensor(rows["token_type_ids"], dtype=torch.long)
        return out


# ---------------------------------------------------------------------------
# model


def _attach_pooler(mlm: nn.Module, source: str) -> None:
    """*ForMaskedLM models drop the pooler; TAMT masks it, so take it from the checkpoint when it has one."""
    from tamt.models import load_encoder
    from tamt.nn import base_model

    base = base_model(mlm)
    if not hasattr(base, "pooler") or base.pooler is not None:
        return
    enc, einfo = load_encoder(source, output_info=True)
    if getattr(enc, "pooler", None) is None or any("pooler" in k for k in einfo.encoder_missing_keys):
        return  # the checkpoint has no pooler weights: nothing meaningful to mask
    base.pooler = enc.pooler


def _wrap_encoder(encoder: nn.Module, seed: int) -> nn.Module:
    """A bare encoder (AutoModel) -> *ForMaskedLM with a fresh head tied to its word embeddings."""
    from transformers import AutoModelForMaskedLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mlm = AutoModelForMaskedLM.from_config(encoder.config)
    setattr(mlm, mlm.base_model_prefix, encoder)
    mlm.get_output_embeddings().weight = encoder.get_input_embeddings().weight
    return mlm


def load_model(model, *, seed: int = 0) -> tuple[nn.Module, dict]:
    """(dense *ForMaskedLM, info) from a hub name / folder / 'default' or an nn.Module (copied)."""
    from tamt.masks import fingerprint
    from tamt.nn import masked_modules

    if isinstance(model, nn.Module):
        if masked_modules(model):
            raise ValueError("the model is already patched by tamt; pass the dense pre-trained model")
        from tamt.nn.families import role_of

        if not any(role_of(n) for n, _ in model.named_modules()):
            raise ValueError(f"{type(model).__name__} has no TAMT target matrices (query/key/value/attention output/"
                             "intermediate/output/pooler/word embeddings of a BERT-family encoder); pass a BERT, "
                             "RoBERTa, DistilBERT, ELECTRA or MiniLM model")
        m = copy.deepcopy(model)
        has_head = getattr(m, "get_output_embeddings", None) is not None and m.get_output_embeddings() is not None \
            and m.base_model is not m
        if has_head:
            mlm, initialised = m, bool(getattr(getattr(m, "tamt_load_info", None), "head_initialised", False))
        else:
            if not hasattr(m, "config"):
                raise ValueError(f"{type(model).__name__} is not a Hugging Face model; pass a BERT-family "
                                 "transformers model, a checkpoint folder or a hub name")
            mlm, initialised = _wrap_encoder(m, seed), True
        name = str(getattr(m.config, "_name_or_path", "") or type(m).__name__)
    else:
        from tamt.models import load_encoder

        with torch.random.fork_rng(devices=[]):  # a missing head is initialised randomly: make it a function of seed
            torch.manual_seed(seed)
            mlm, linfo = load_encoder(model, with_mlm_head=True, output_info=True)
            _attach_pooler(mlm, linfo.source)
        initialised = linfo.head_initialised
        name = "default" if model in (None, "default") else os.fspath(model)
    mlm.eval()
    from .numerics import check_finite_weights

    check_finite_weights(mlm, repr(name))  # NaN weights: say so, rather than "the search diverged" later
    info = {"base_model": name, "fingerprint": fingerprint(mlm), "head_initialised": bool(initialised),
            "model_type": getattr(mlm.config, "model_type", "?")}
    return mlm, info


def load_tok(model, tokenizer=None):
    if tokenizer is not None:
        return tokenizer
    from tamt.models import load_tokenizer

    if isinstance(model, nn.Module):
        src = getattr(getattr(model, "config", None), "_name_or_path", "")
        if not src:
            raise ValueError("pass tokenizer=... when the model is an in-memory module without a checkpoint path")
        return load_tokenizer(src)
    return load_tokenizer(model)


# ---------------------------------------------------------------------------
# corpus


def load_blocks(corpus, tokenizer, *, block_size: int, validation_fraction: float, seed: int, max_blocks):
    """(train, validation) datasets of token blocks from a spec or a ready DatasetDict / dict."""
    if isinstance(corpus, (str, os.PathLike)):
        from tamt.data.corpus import load_corpus

        s = os.fspath(corpus)
        looks_path = s.startswith(("/", ".", "~")) or os.sep in s
        if looks_path and not Path(s).expanduser().exists():
            raise FileNotFoundError(f"corpus {s!r} does not exist; pass a text/JSON/parquet file or folder, "
                                    "'default' for the embedded Wikipedia summaries, or a hub dataset name")
        path = Path(s).expanduser()
        if path.is_file() and not path.read_bytes().strip():
            raise ValueError(f"the corpus {s!r} is empty; give a file with text (one document per line)")
        try:
            dd = load_corpus(s, tokenizer=tokenizer, block_size=block_size, validation_fraction=validation_fraction,
                             seed=seed, max_blocks=max_blocks)
        except Exception as exc:  # datasets wraps reader errors (e.g. no rows) in DatasetGenerationError
            if type(exc).__name__ == "DatasetGenerationError":
                raise ValueError(f"could not read the corpus {s!r} ({exc.__cause__ or exc}); is it empty or not "
                                 "text/JSON/parquet?") from exc
            raise
    elif hasattr(corpus, "keys") and "train" in corpus:
        dd = corpus
    else:
        raise TypeError(f"corpus must be a path, a dataset name or a dict with 'train' (and 'validation') "
                        f"token blocks, got {type(corpus).__name__}")
    train = dd["train"]
    val = dd["validation"] if "validation" in dd else None
    if train is None or len(train) == 0:
        raise ValueError("the corpus is empty (no training blocks); give more text or a smaller block_size")
    if val is None or len(val) == 0:
        n_val = max(1, int(len(train) * max(validation_fraction, 0.05)))
        if len(train) < 2:
            raise ValueError("the corpus has a single block: not enough for a training and a validation split")
        val = train.select(range(len(train) - n_val, len(train)))
        train = train.select(range(len(train) - n_val))
    return train, val


def prepare(model, corpus, *, tokenizer=None, block_size: int = 128, validation_fraction: float = 0.05,
            seed: int = 0, max_blocks=None) -> SearchContext:
    mlm, info = load_model(model, seed=seed)
    tok = load_tok(model, tokenizer)
    train, val = load_blocks(corpus, tok, block_size=block_size, validation_fraction=validation_fraction,
                             seed=seed, max_blocks=max_blocks)
    max_pos = getattr(mlm.config, "max_position_embeddings", None)
    width = len(train[0]["input_ids"])
    if max_pos is not None and width > max_pos:
        raise ValueError(f"block_size {width} exceeds the model's max_position_embeddings {max_pos}")
    ctx = SearchContext(model=mlm, tokenizer=tok, train=train, validation=val, info=info)
    ctx.special_ids = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long)
    ctx.info["head_fit_steps"] = 0
    return ctx


# ---------------------------------------------------------------------------
# fitting a fresh MLM head (dense, head only)


def _head_key(ctx: SearchContext, steps: int, lr: float, batch_size: int, seed: int) -> str:
    from .run_dir import corpus_identity

    corpus = corpus_identity(ctx.train, ctx.validation)  # the blocks it is fitted on, not just their count
    payload = json.dumps([ctx.info["fingerprint"], steps, lr, batch_size, seed, len(ctx.train),
                          corpus["sample_sha"], len(ctx.train[0]["input_ids"])])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def head_cache_dir() -> Path:
    """``<tamt cache>/mlm-heads``: fitted heads of head-less checkpoints, one file per model/corpus/options key."""
    from tamt.data.assets import cache_root

    return cache_root() / "mlm-heads"


def fit_head(ctx: SearchContext, *, steps: int, lr: float, batch_size: int, seed: int,
             cache_dir: str | os.PathLike | None = None, progress: bool = False) -> None:
    """Fit the freshly initialised MLM head densely (encoder frozen) on the training blocks.

    The result is cached as ``<cache_dir>/mlm_head.pt`` (a run folder) and in
    the tamt cache (:func:`head_cache_dir`), keyed by the model fingerprint,
    the corpus blocks and the fitting options, so every mask of a run is
    evaluated with the same head and a later run with the same key loads it
    instead of fitting again.  No-op for checkpoints that have a trained head.
    """
    from tamt.nn import base_model

    if not ctx.info.get("head_initialised") or steps <= 0 or ctx.info.get("head_fit_steps"):
        return
    key = _head_key(ctx, steps, lr, batch_size, seed)
    params = mlm_head_parameters(ctx.model)
    shared = head_cache_dir() / f"{key}.pt"
    caches = ([Path(cache_dir) / "mlm_head.pt"] if cache_dir is not None else []) + [shared]
    for cache in caches:
        try:
            blob = torch.load(cache, map_location="cpu", weights_only=True) if cache.is_file() else None
        except Exception as e:  # a torn or foreign file is only a cache miss
            log.warning("ignoring the unreadable MLM head cache %s (%s)", cache, e)
            blob = None
        if blob is not None and blob.get("key") == key and set(blob.get("state", {})) == {n for n, _ in params}:
            with torch.no_grad():
                for n, p in params:
                    p.copy_(blob["state"][n])
            ctx.info["head_fit_steps"] = steps
            ctx.info["head_cached"] = str(cache)
            log.info("loaded the fitted MLM head from %s", cache)
            if cache is shared and cache_dir is not None:
                _save_head(caches[0], key, params)
            return
    device = ctx.model.get_input_embeddings().weight.device
    enc = base_model(ctx.model)
    for _, p in params:
        p.requires_grad_(True)
    opt = adamw([p for _, p in params], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(0.0, 1.0 - i / steps))
    gen = torch.Generator().manual_seed(seed + 7919)
    n = len(ctx.train)
    ctx.model.eval()
    from tqdm.auto import tqdm

    t_fit = time.perf_counter()
    bar = tqdm(range(steps), desc="fit MLM head", disable=not progress, leave=False)
    for _ in bar:
        idx = torch.randint(n, (min(batch_size, n),), generator=gen)
        b = ctx.batch("train", idx)
        ids, labels = mask_tokens(b["input_ids"], b["attention_mask"], special_ids=ctx.special_ids,
                                  mask_id=ctx.mask_id, vocab_size=ctx.vocab_size, generator=gen)
        with torch.no_grad():
            hidden = enc(input_ids=ids.to(device), attention_mask=b["attention_mask"].to(device))[0]
        s, c, _ = mlm_loss_sum(ctx.model, hidden, labels.to(device))
        loss = s / c.clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    for _, p in params:
        p.grad = None
    ctx.info["head_fit_steps"] = steps
    ctx.info["head_fit_s"] = time.perf_counter() - t_fit
    for cache in caches:
        try:
            _save_head(cache, key, params)
        except OSError as e:  # a read-only cache costs a refit next time, nothing else
            log.warning("could not cache the fitted MLM head in %s (%s)", cache, e)


def _save_head(path: Path, key: str, params) -> None:
    from tamt.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"key": key, "state": {n: p.detach().cpu() for n, p in params}}, tmp)


# ---------------------------------------------------------------------------
# the reference's TAMT-KD training data


def ensure_kd_data(ctx: SearchContext, config, corpus) -> None:
    """Build ``ctx.kd_train`` (the reference's paragraph sequences, tamt.data.corpus.load_kd_sequences)
    when a TAMT-KD search with ``kd_data="paragraphs"`` needs it.  ``corpus`` must be the corpus spec
    (a path, a hub name or 'default'), not ready-made blocks."""
    if ctx.kd_train is not None or config.kd_data != "paragraphs" or config.method != "tamt-kd":
        return
    if not isinstance(corpus, (str, os.PathLike)):
        raise ValueError("kd_data='paragraphs' builds the KD sequences from the raw corpus text: pass the corpus as "
                         "a path, hub name or 'default', or use kd_data='blocks' with ready-made blocks")
    from tamt.data.corpus import load_kd_sequences

    ctx.kd_train = load_kd_sequences(corpus, tokenizer=ctx.tokenizer, max_seq_len=config.block_size,
                                     validation_fraction=config.validation_fraction, seed=config.seed)
