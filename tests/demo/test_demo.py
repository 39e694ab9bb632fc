"""The demo's fixed sweep config and its summary (pre-training table, yardstick, search cost, paired
differences, computed claims).

The full pipeline under the demo (search, evaluation, fine-tuning, sweep) is
tested in tests/pruning, tests/finetune and tests/analysis; README command 1
runs the demo itself.
"""
import json

import pytest

from tamt import demo


@pytest.mark.parametrize("quick", [True, False])
def test_demo_config_is_a_valid_sweep(quick):
    from tamt.analysis.sweep import load_config, plan

    cfg = load_config(demo.demo_config(quick))
    searches, finetunes = plan(cfg)
    assert sorted({c.method for c in searches}) == sorted(demo.QUICK_METHODS if quick else demo.METHODS)
    methods = {f.method for f in finetunes}
    if quick:  # the cells the claims need, at s=0.7, sentiment
        assert methods == {"dense", *demo.QUICK_FT_METHODS} and {f.sparsity for f in finetunes} == {0.0, 0.7}
        assert len(finetunes) == len(demo.QUICK_FT_METHODS) + 1  # one seed (five runs are 3 of its 5 minutes)
    else:  # every subnetwork and the dense model on both tasks, 3 seeds; NLI gated by the dense model
        assert methods == {"dense", *demo.FT_METHODS}
        # sentiment: every fine-tuned method at both sparsities; NLI: dense, OMP and TAMT-KD at 0.7
        assert len(finetunes) == (len(demo.FT_METHODS) * len(demo.SPARSITIES) + 1) * 3 + 3 * 3
        assert {(f.method, f.sparsity) for f in finetunes if f.task == "nli"} == \
            {("dense", 0.0), ("omp", 0.7), ("tamt-kd", 0.7)}
        assert cfg["dense_gate"] == {"nli": demo.NLI_GATE}
    # the TAMT curves are evaluated on the batches the masks are judged with
    assert cfg["search"]["eval_batches"] == cfg["pretrain_eval"]["batches"]
    assert cfg["search"]["eval_batch_size"] == cfg["pretrain_eval"]["batch_size"]
    assert ("quick" in cfg["name"]) == quick


def _write(cells, name, rec):
    (cells / f"{name}.json").write_text(json.dumps({"id": name, **rec}))


def _cells(tmp_path, imp_kd=0.12):
    cells = tmp_path / "cells"
    cells.mkdir()
    _write(cells, "pretrain-dense", {"pretrain": {"mlm_loss": 6.0, "mlm_accuracy": 0.2, "kd_loss": 0.0,
                                                  "mlm_tokens": 900}, "eval_s": 1.0})
    _write(cells, "search-omp-m0-bna", {"method": "omp", "search": {"0.7": {"search_s": 0.1}},
                                        "pretrain": {"0.7": {"mlm_loss": 7.5, "kd_loss": 0.14}}})
    _write(cells, "search-random-m0-bna", {"method": "random", "search": {"0.7": {"search_s": 0.1}},
                                           "pretrain": {"0.7": {"mlm_loss": 8.5, "kd_loss": 0.5}}})
    curve_kd = [{"step": 10, "search_s": 2.0, "kd_loss": 0.13, "mlm_loss": 7.4},
                {"step": 20, "search_s": 4.0, "kd_loss": 0.07, "mlm_loss": 7.4}]
    _write(cells, "search-tamt-kd-m0-bna", {"method": "tamt-kd", "search": {"0.7": {"search_s": 4.0, "curve": curve_kd}},
                                            "pretrain": {"0.7": {"mlm_loss": 7.4, "kd_loss": 0.07}},
                                            "search_wall_s": 5.0, "eval_s": 1.0})
    curve_mlm = [{"step": 10, "search_s": 2.5, "kd_loss": 0.3, "mlm_loss": 6.95}]
    _write(cells, "search-tamt-mlm-m0-bna", {"method": "tamt-mlm",
                                             "search": {"0.7": {"search_s": 2.5, "curve": curve_mlm}},
                                             "pretrain": {"0.7": {"mlm_loss": 5.9, "kd_loss": 0.3}}})
    _write(cells, "search-imp-m0-bna", {"method": "imp", "search": {"0.7": {"search_s": 10.0}},
                                        "pretrain": {"0.7": {"mlm_loss": 7.0, "kd_loss": imp_kd}},
                                        "search_wall_s": 10.0, "eval_s": 1.0})
    _write(cells, "ft-dense-s0-m0-bna-sentiment-n1280-f0", {"metrics": {}, "wall_s": 30.0})


def test_pretrain_table_yardstick_and_search_cost_from_cells(tmp_path):
    _cells(tmp_path)
    rows = demo.pretrain_rows(tmp_path)
    assert [r["method"] for r in rows] == ["dense", "omp", "random", "tamt-kd", "tamt-mlm", "imp"]
    assert "0.0700" in demo.render_pretrain(rows)
    notes = demo.yardstick(rows)
    assert "900 masked held-out tokens" in notes[0] and "tamt-mlm" in notes[1]  # it beats dense: said, with why
    cost = {r["method"]: r for r in demo.search_cost_rows(tmp_path)}
    assert cost["tamt-kd"]["speedup"] == pytest.approx(10.0 / 4.0)  # 0.07 <= IMP's 0.12 first at 4 s
    assert cost["tamt-mlm"]["speedup"] == pytest.approx(10.0 / 2.5)
    timing = demo.timing_split(tmp_path, 1.0, 3.0, 2.0)
    assert timing["search_s"] == 15.0 and timing["evaluation_s"] == 3.0 and timing["finetuning_s"] == 30.0


def test_imp_not_better_than_omp_gives_no_ratio_and_the_claim_is_not_measured(tmp_path):
    _cells(tmp_path, imp_kd=0.2)  # IMP's KD loss above OMP's 0.14
    cost = {r["method"]: r for r in demo.search_cost_rows(tmp_path)}
    assert cost["tamt-kd"]["status"] == "imp-under-trained" and cost["tamt-kd"]["speedup"] is None
    cl = {c: v for c, v, _ in demo.claims(demo.pretrain_rows(tmp_path), list(cost.values()), [], True)}
    assert cl["search cost: TAMT reaches IMP's quality faster than IMP"] == "supported"  # the MLM row has a ratio


def test_paired_differences_and_claims():
    rows = [{"method": m, "sparsity": 0.7, "task": "sentiment", "seed": seed, "score": v}
            for m, vals in {"omp": (0.70, 0.72), "imp": (0.71, 0.73), "tamt-kd": (0.74, 0.75)}.items()
            for seed, v in zip((0, 1), vals)]
    diffs = demo.paired_differences(rows)
    vs = {d["vs"]: d for d in diffs}
    assert vs["omp"]["mean"] == pytest.approx(0.035) and vs["omp"]["n"] == 2
    assert vs["omp"]["std"] == pytest.approx(0.0070711, rel=1e-4)
    assert "+3.50 ± 0.71" in demo.render_paired(diffs)
    cl = {c.split(" (")[0]: v for c, v, _ in demo.claims([], [], diffs, True)}
    assert cl["downstream: TAMT >= OMP"] == "supported" and cl["downstream: TAMT >= IMP"] == "supported"
    assert cl["pre-training: each TAMT variant has a lower held-out loss on its objective than OMP, IMP and random"] \
        == "not measured"
    one = demo.paired_differences([r for r in rows if r["seed"] == 0])
    assert all(d["std"] is None for d in one) and "1 seed: no spread" in demo.render_paired(one)
    cl = {c.split(" (")[0]: v for c, v, _ in demo.claims([], [], one, True)}
    assert cl["downstream: TAMT >= OMP"] == "not measured at this budget"  # one seed: no spread, no verdict
    cl = {c.split(" (")[0]: v for c, v, _ in demo.claims([], [], diffs, False)}
    assert cl["downstream: TAMT >= OMP"] == "not measured at this budget"


def test_difference_verdict_is_computed_from_the_seeds():
    """Claims per task: 'exceeds the seed spread' only when the 95 % t interval excludes zero."""
    from tamt.demo import difference_verdict, render_paired

    base = dict(method="tamt-kd", vs="omp", task="rating", sparsity=0.7)
    win = difference_verdict({**base, "n": 3, "mean": 0.05, "std": 0.01})
    assert "exceeds the seed spread (TAMT-KD is better)" in win and "[+2.52, +7.48]" in win
    lose = difference_verdict({**base, "n": 3, "mean": -0.05, "std": 0.01})
    assert "exceeds the seed spread (OMP is better)" in lose
    tie = difference_verdict({**base, "n": 3, "mean": 0.005, "std": 0.009})
    assert "within the seed spread" in tie and "exceeds" not in tie
    one = difference_verdict({**base, "n": 1, "mean": 0.01, "std": None})
    assert "not measured" in one
    text = render_paired([{**base, "n": 3, "mean": 0.05, "std": 0.01},
                          {**base, "task": "sentiment", "n": 3, "mean": 0.005, "std": 0.009}])
    assert "on rating at s=0.7" in text and "on sentiment at s=0.7" in text
