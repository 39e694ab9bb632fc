"""Two CPU processes on gloo equal one process with the same global batch."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent


def _config(method):
    from pruning_helpers import FAST

    from tamt.pruning import SearchConfig

    return SearchConfig(method=method, sparsities=(0.5,), steps=4, lr=2e-2, dropout=False, imp_interval=2,
                        **{**FAST, "batch_size": 8, "head_fit_steps": 0})


def _run(method):
    from pruning_helpers import make_blocks

    from tamt.models import tiny_model, tiny_tokenizer
    from tamt.nn import masked_modules
    from tamt.pruning import Searcher, prepare

    tok = tiny_tokenizer()
    ctx = prepare(tiny_model("bert", seed=0), make_blocks(tok), tokenizer=tok)
    s = Searcher(ctx, _config(method), sparsity=0.5).run()
    scores = {n: m.scores.detach().clone() for n, m in masked_modules(s.model) if m.scores is not None}
    weights = {n: m.weight.detach().clone() for n, m in masked_modules(s.model)}
    return {"masks": s.masks, "scores": scores, "weights": weights, "loss": [r.get("loss") for r in s.history]}


def _worker(rank, world, init_file, out, method):
    sys.path.insert(0, str(HERE))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        res = _run(method)
        if rank == 0:
            torch.save(res, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("method", ["tamt-mlm-kd", "imp"])
def test_two_processes_equal_one(method, tmp_path):
    sys.path.insert(0, str(HERE))
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out), method), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=False)
    single = _run(method)
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-4, abs=1e-5)
    for n in single["scores"]:
        torch.testing.assert_close(ddp["scores"][n], single["scores"][n], rtol=1e-4, atol=1e-6)
    for n in single["weights"]:
        torch.testing.assert_close(ddp["weights"][n], single["weights"][n], rtol=1e-4, atol=1e-6)
    for s, masks in single["masks"].items():
        for k in masks:
            agree = (ddp["masks"][s][k] == masks[k]).float().mean().item()
            assert agree >= 0.999, (s, k, agree)
