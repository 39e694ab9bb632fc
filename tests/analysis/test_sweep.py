"""Sweeps: resumable, same table after an interruption; one real tiny end-to-end sweep."""
from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
import torch

from tamt.analysis.sweep import load_config, plan, run_sweep


@pytest.fixture(scope="module")
def tiny():
    from tamt.models import tiny_model, tiny_tokenizer

    return tiny_model("bert", 0), tiny_tokenizer()


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    import fixtures as fx

    d = tmp_path_factory.mktemp("glue")
    fx.write_sst2(d, n_train=64, n_dev=32)
    return d


def fake_search(model, method, sparsities, corpus, *, steps=None, seed=0, **kw):
    """Stand-in for tamt.search: OMP or seeded random masks at once."""
    from tamt.nn import base_model
    from tamt.nn.families import role_of
    from tamt.nn.scores import magnitude_mask, random_mask

    weights = {f"{n}.weight": m.weight for n, m in base_model(model).named_modules()
               if role_of(n) is not None and hasattr(m, "weight")}
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for s in sparsities:
        if method == "random":
            masks[s] = {k: random_mask(w.shape, s, generator=g) for k, w in weights.items()}
        else:
            masks[s] = {k: magnitude_mask(w, s) for k, w in weights.items()}
    return SimpleNamespace(masks=masks, timings={s: {"steps": steps or 0, "search_s": 0.0} for s in sparsities})


def fake_pretrain(model, mask, corpus, **kw):
    """Stand-in for tamt.evaluate_pretraining: a deterministic 'loss' growing with the distance from OMP."""
    from tamt.analysis import distance_from_omp

    if mask is None:
        return {"mlm_loss": 2.0, "mlm_accuracy": 0.5, "kd_loss": 0.0}
    d = distance_from_omp(model, mask)["overall"]
    return {"mlm_loss": 2.0 + 10 * d["distance"] + d["kept_a"], "mlm_accuracy": 0.3, "kd_loss": d["distance"]}


def _config(glue_dir):
    return {"name": "t", "methods": ["omp", "random"], "sparsities": [0.5, 0.7], "dense": True, "tasks": ["sst2"],
            "data": str(glue_dir), "seeds": [0, 1], "pretrain_eval": {},
            "finetune": {"max_steps": 2, "batch_size": 16, "num_threads": 1, "lr": 1e-3}}


def test_config_and_plan(tmp_path, glue_dir):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(_config(glue_dir)))
    cfg = load_config(p)
    searches, fts = plan(cfg)
    assert [s.method for s in searches] == ["omp", "random"]
    assert len(fts) == (1 + 2 * 2) * 1 * 2
    assert len({f.id for f in fts}) == len(fts)
    with pytest.raises(ValueError, match="unknown sweep config key"):
        load_config({"metods": ["omp"]})
    # the paper's ready configs, incl. per-task train sizes for the data-scarcity study
    paper = load_config("paper")
    assert paper["sparsities"] == [0.5, 0.6, 0.7, 0.8, 0.9] and "squad" in paper["tasks"]
    _, fts = plan(load_config("paper-scarcity"))
    assert {f.train_size for f in fts if f.task == "cola"} == {1000, 2000, 3000, 4000, 5000}
    assert {f.train_size for f in fts if f.task == "mnli"} == {1000, 5000, 10000, 50000, 100000}
    searches, _ = plan(load_config("paper-search-cost"))
    assert {s.budget for s in searches if s.method == "imp"} >= {200, 2792}
    assert {s.budget for s in searches if s.method == "tamt-kd"} >= {999, 24999}


def test_paper_configs_follow_the_reference():
    """The reference's downstream protocol (TAMT_SPEC "Reference-code details"): tasks, seeds, mask checkpoints."""
    from tamt.pruning.config import PAPER_MASK_STEPS

    paper = load_config("paper")
    assert sorted(paper["tasks"]) == sorted(["cola", "mnli", "mrpc", "rte", "sst2", "stsb", "squad"])
    assert paper["mask_seeds"] == [1, 2, 3] and paper["seeds"] == [1, 2, 3]
    for method in ("tamt-mlm", "tamt-kd"):
        assert {float(k): v for k, v in paper["mask_steps"][method].items()} == PAPER_MASK_STEPS[method]
    assert paper["search"] == {"preset": "paper"} and paper["finetune"] == {"preset": "paper"}
    _, fts = plan(paper)
    assert len({(f.method, f.sparsity, f.mask_seed, f.task, f.seed) for f in fts}) == \
        (1 + 5 * 5 * 3) * 7 * 3  # dense + 5 methods x 5 sparsities x 3 mask seeds, 7 tasks, 3 seeds
    cost = load_config("paper-search-cost")
    assert cost["checkpoint_budgets"] is True and "qqp" not in cost["tasks"]


def test_mask_steps_and_checkpoint_budgets_reach_the_search(tmp_path, tiny, glue_dir):
    model, tok = tiny
    calls = []

    def recording_search(model, method, sparsities, corpus, **kw):
        calls.append((method, tuple(sparsities), kw.get("stop_at"), kw.get("steps")))
        return fake_search(model, method, sparsities, corpus, **{k: v for k, v in kw.items() if k == "seed"})

    cfg = {**_config(glue_dir), "methods": ["tamt-mlm"], "sparsities": [0.5, 0.7], "seeds": [0], "dense": False,
           "mask_steps": {"tamt-mlm": {"0.5": 11, "0.7": 17}}, "finetune": {"max_steps": 1, "num_threads": 1}}
    run_sweep(cfg, tmp_path / "m", model=model, tokenizer=tok, search_fn=recording_search,
              pretrain_fn=fake_pretrain, progress=False, plots=False)
    assert calls == [("tamt-mlm", (0.5,), 11, None), ("tamt-mlm", (0.7,), 17, None)]
    calls.clear()
    cfg = {**cfg, "mask_steps": {}, "sparsities": [0.7], "search_steps": {"tamt-mlm": [5, 9]},
           "checkpoint_budgets": True}
    run_sweep(cfg, tmp_path / "c", model=model, tokenizer=tok, search_fn=recording_search,
              pretrain_fn=fake_pretrain, progress=False, plots=False)
    assert calls == [("tamt-mlm", (0.7,), 5, None), ("tamt-mlm", (0.7,), 9, None)]
    bad = tmp_path / "bad.json"
    bad.write_text('{"methods": ["omp"],\n "x": }')
    with pytest.raises(ValueError, match="line 2"):
        load_config(bad)


def test_sweep_interrupted_and_resumed_gives_same_table(tmp_path, tiny, glue_dir):
    model, tok = tiny
    cfg = _config(glue_dir)
    kw = dict(model=model, tokenizer=tok, search_fn=fake_search, pretrain_fn=fake_pretrain, progress=False)

    full = run_sweep(cfg, tmp_path / "full", **kw)
    assert len(full.rows) == 10
    assert (tmp_path / "full" / "report.md").exists() and (tmp_path / "full" / "plots" / "score_vs_sparsity.png").exists()
    assert (tmp_path / "full" / "plots" / "mlm_loss_vs_score.png").exists()
    assert "mlm_loss" in full.correlations

    class Stop(Exception):
        pass

    seen = []

    def stop_after_4_finetunes(cid, rec):
        seen.append(cid)
        if sum(c.startswith("ft-") for c in seen) == 4:
            raise Stop

    with pytest.raises(Stop):
        run_sweep(cfg, tmp_path / "part", on_cell_done=stop_after_4_finetunes, **kw)
    assert not (tmp_path / "part" / "results.csv").exists()

    calls = []
    import tamt.finetune as ft

    def counting_finetune(*a, **k):
        calls.append(a[2])
        return ft.finetune(*a, **k)

    searched = []

    def counting_search(*a, **k):
        searched.append(a[1])
        return fake_search(*a, **k)

    resumed = run_sweep(cfg, tmp_path / "part", finetune_fn=counting_finetune,
                        **{**kw, "search_fn": counting_search})
    assert len(calls) == 10 - 4 and searched == []  # finished cells skipped
    assert (tmp_path / "part" / "results.csv").read_text() == (tmp_path / "full" / "results.csv").read_text()
    assert (tmp_path / "part" / "summary.csv").read_text() == (tmp_path / "full" / "summary.csv").read_text()
    assert resumed.render() == full.render()
    text = full.render()
    assert "dense" in text and "omp" in text and "random" in text


def test_torn_cell_is_recomputed(tmp_path, tiny, glue_dir):
    model, tok = tiny
    cfg = {**_config(glue_dir), "methods": ["omp"], "sparsities": [0.5], "seeds": [0], "dense": False}
    kw = dict(model=model, tokenizer=tok, search_fn=fake_search, pretrain_fn=fake_pretrain, progress=False,
              plots=False)
    first = run_sweep(cfg, tmp_path / "s", **kw)
    cell = next((tmp_path / "s" / "cells").glob("ft-*.json"))
    cell.write_text('{"id": "trunc')  # a torn write (never produced by the atomic writer, but be safe)
    again = run_sweep(cfg, tmp_path / "s", **kw)
    assert again.rows == first.rows
    assert json.loads(cell.read_text())["metrics"]


def test_real_tiny_end_to_end_sweep(tmp_path, tiny, glue_dir):
    """tamt.search + tamt.evaluate_pretraining + tamt.finetune for real, on the tiny model."""
    model, tok = tiny
    rng = random.Random(0)
    from tamt.models import TINY_VOCAB

    words = [w for w in TINY_VOCAB[60:]]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choices(words, k=40)) for _ in range(120)) + "\n")
    cfg = {"methods": ["omp", "tamt-kd"], "sparsities": [0.5], "dense": True, "tasks": ["sst2"],
           "data": str(glue_dir), "seeds": [0], "corpus": str(corpus),
           "search": {"steps": 3, "batch_size": 4, "block_size": 32, "device": "cpu", "max_blocks": 40},
           "pretrain_eval": {"batches": 2, "batch_size": 4},
           "finetune": {"max_steps": 2, "batch_size": 16, "num_threads": 1}}
    res = run_sweep(cfg, tmp_path / "real", model=model, tokenizer=tok, progress=False)
    assert {r["method"] for r in res.rows} == {"dense", "omp", "tamt-kd"}
    for r in res.rows:
        assert r["kd_loss"] is not None and r["mlm_loss"] is not None
        assert 0.0 <= r["score"] <= 1.0
    dense = next(r for r in res.rows if r["method"] == "dense")
    assert dense["kd_loss"] == pytest.approx(0.0, abs=1e-6)  # the dense model is its own teacher
    omp = next(r for r in res.rows if r["method"] == "omp")
    assert omp["kd_loss"] > 0
    assert len(list((tmp_path / "real" / "masks").glob("*.safetensors"))) == 2
