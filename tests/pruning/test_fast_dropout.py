"""The searcher runs its CPU student with tamt's Philox dropout (SearchConfig.fast_dropout) only when asked,
on its own copy of the model, and a run with it is reproducible from its seed."""
from __future__ import annotations

import pytest
import torch
from pruning_helpers import FAST

from tamt import _native
from tamt.pruning import SearchConfig, Searcher, prepare

if not _native.available():
    pytest.skip("native extension not built", allow_module_level=True)


@pytest.fixture(scope="module")
def ctx(tiny, tok, blocks):
    return prepare(tiny, blocks, tokenizer=tok)


def _searcher(ctx, **kw):
    cfg = dict(method="tamt-kd", sparsities=(0.5,), steps=3, lr=1e-2, **FAST)
    cfg.update(kw)
    return Searcher(ctx, SearchConfig(**cfg), sparsity=0.5)


@pytest.mark.parametrize("fast,dropout,installed", [(True, True, True), (False, True, False), (True, False, False)])
def test_installed_only_when_asked(ctx, fast, dropout, installed):
    from tamt.nn.dropout import FastDropout

    s = _searcher(ctx, fast_dropout=fast, dropout=dropout)
    assert any(isinstance(m, FastDropout) for m in s.model.modules()) is installed
    assert not any(isinstance(m, FastDropout) for m in ctx.model.modules())


def test_same_seed_same_masks(ctx):
    runs = []
    for _ in range(2):
        s = _searcher(ctx, fast_dropout=True)
        for _ in range(3):
            s.step()
        runs.append({n: m.current_mask().clone() for n, m in __import__("tamt").nn.masked_modules(s.model)})
    assert runs[0].keys() == runs[1].keys() and all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_finetuning_uses_it_and_returns_a_plain_model(tiny, tok, monkeypatch):
    """Fine-tuning on the CPU trains with the Philox dropout and hands back a model without it."""
    from tamt.finetune import FinetuneConfig
    from tamt.finetune.trainer import train_one_seed
    from tamt.nn import dropout as D

    calls = []
    real = _native.philox_dropout
    monkeypatch.setattr(_native, "philox_dropout", lambda x, p, seed: calls.append(1) or real(x, p, seed))
    ds = __import__("datasets").Dataset.from_dict(
        {"input_ids": [[2, 5 + i % 7, 9, 3] for i in range(8)], "attention_mask": [[1, 1, 1, 1]] * 8,
         "label": [i % 2 for i in range(8)]})
    cfg = FinetuneConfig(max_steps=2, batch_size=4, eval_every=2, progress=False, device="cpu")
    res = train_one_seed(base=tiny, mask=None, task="sst2", seed=0, cfg=cfg, tokenizer=tok, train_ds=ds,
                         eval_sets={"validation": ds})
    assert calls and not any(isinstance(m, D.FastDropout) for m in res["model"].modules())
    assert res["model"].config._attn_implementation in ("sdpa", "eager")
