"""benchmarks/transfer_gap.py: the sweep it runs and the paired verdicts it prints (fast: no model).

The whole path (search, pre-training evaluation, fine-tuning, plot) is `--tiny`; it runs the real
embedded MiniLM, so it takes minutes on 2 cores and is a manual smoke run, not part of this file."""
from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("transfer_gap", REPO / "benchmarks" / "transfer_gap.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(mod, *argv):
    return mod.parse_args(list(argv))


def test_default_run_is_the_issue_grid():
    mod = _module()
    cfg = mod.build_config(_args(mod))
    assert cfg["methods"] == ["omp", "random", "tamt-kd"] and cfg["dense"] and cfg["sparsities"] == [0.7]
    assert cfg["tasks"] == ["sentiment", "rating"] and cfg["seeds"] == [0, 1, 2]
    # 60 and 600 TAMT steps as one 600-step run and its step-60 checkpoint
    assert cfg["search_steps"] == {"tamt-kd": [60, 600]} and cfg["checkpoint_budgets"] and cfg["search"]["steps"] == 600
    assert cfg["pretrain_eval"]  # the held-out KD loss of every candidate: the x axis of the plot
    glue = mod.build_config(_args(mod, "--glue", "/data/glue", "--sparsity", "0.5", "0.7", "--more-methods"))
    assert glue["tasks"] == ["sentiment", "rating", "cola", "stsb"] and glue["data"] == "/data/glue"
    assert glue["sparsities"] == [0.5, 0.7] and {"imp", "tamt-mlm"} <= set(glue["methods"])
    assert set(glue["search_steps"]) == {"tamt-kd", "tamt-mlm"}


def test_paired_differences_are_per_task_sparsity_and_budget():
    mod = _module()
    rows = []
    for seed, (omp, short, long) in enumerate([(0.50, 0.55, 0.56), (0.52, 0.58, 0.57), (0.51, 0.57, 0.58)]):
        rows += [dict(method="omp", sparsity=0.7, budget=None, task="rating", seed=seed, score=omp),
                 dict(method="tamt-kd", sparsity=0.7, budget=60, task="rating", seed=seed, score=short),
                 dict(method="tamt-kd", sparsity=0.7, budget=600, task="rating", seed=seed, score=long),
                 dict(method="dense", sparsity=0.0, budget=None, task="rating", seed=seed, score=0.8)]
    diffs = mod.paired(rows)
    assert [(d["budget"], d["n"]) for d in diffs] == [(60, 3), (600, 3)]
    assert abs(diffs[0]["mean"] - (0.05 + 0.06 + 0.06) / 3) < 1e-12
    assert all("exceeds the seed spread (TAMT-KD is better)" in d["verdict"] for d in diffs)
    assert "after 600 steps" in diffs[1]["verdict"]
