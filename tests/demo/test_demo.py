"""The demo's fixed sweep config and its two summary tables (pre-training losses, TAMT-vs-IMP search time).

The full pipeline under the demo (search, evaluation, fine-tuning, sweep) is
tested in tests/pruning, tests/finetune and tests/analysis; README command 1
runs the demo itself.
"""
import json

import pytest

from tamt import demo


@pytest.mark.parametrize("quick", [True, False])
def test_demo_config_is_a_valid_sweep_with_every_method_and_sparsity(quick):
    from tamt.analysis.sweep import load_config, plan

    cfg = load_config(demo.demo_config(quick))
    searches, finetunes = plan(cfg)
    assert sorted({c.method for c in searches}) == sorted(demo.METHODS)
    masks = {(c.method, s) for c in searches for s in c.sparsities}
    assert masks == {(m, s) for m in demo.METHODS for s in demo.SPARSITIES}
    # every subnetwork and the dense model on both tasks
    assert len(finetunes) == (len(demo.METHODS) * len(demo.SPARSITIES) + 1) * len(demo.TASKS)
    assert ("quick" in cfg["name"]) == quick


def _write(cells, name, rec):
    (cells / f"{name}.json").write_text(json.dumps(rec))


def test_pretrain_table_and_speedups_from_cells(tmp_path):
    cells = tmp_path / "cells"
    cells.mkdir()
    _write(cells, "pretrain-dense", {"pretrain": {"mlm_loss": 6.0, "mlm_accuracy": 0.2, "kd_loss": 0.0}})
    _write(cells, "search-omp-m0-bna", {"method": "omp", "search": {"0.5": {"search_s": 0.1}},
                                        "pretrain": {"0.5": {"mlm_loss": 7.5, "kd_loss": 0.14}}})
    _write(cells, "search-tamt-kd-m0-bna", {"method": "tamt-kd", "search": {"0.5": {"search_s": 4.0}},
                                            "pretrain": {"0.5": {"mlm_loss": 7.4, "kd_loss": 0.07}}})
    _write(cells, "search-tamt-mlm-m0-bna", {"method": "tamt-mlm", "search": {"0.5": {"search_s": 5.0}},
                                             "pretrain": {"0.5": {"mlm_loss": 7.0, "kd_loss": 0.3}}})
    _write(cells, "search-imp-m0-bna", {"method": "imp", "search": {"0.5": {"search_s": 10.0}},
                                        "pretrain": {"0.5": {"mlm_loss": 6.9, "kd_loss": 0.15}}})
    rows = demo.pretrain_rows(tmp_path)
    assert [(r["method"], r["sparsity"]) for r in rows] == [
        ("dense", 0.0), ("omp", 0.5), ("tamt-kd", 0.5), ("tamt-mlm", 0.5), ("imp", 0.5)]
    table = demo.render_pretrain(rows)
    assert "0.0700" in table and "7.500" in table and "-" in table.splitlines()[2]  # omp has no MLM accuracy

    speed = {r["method"]: r for r in demo.search_speedups(tmp_path)}
    assert speed["tamt-kd"]["speedup"] == pytest.approx(2.5) and speed["tamt-kd"]["better"] is True
    assert speed["tamt-mlm"]["speedup"] == pytest.approx(2.0) and speed["tamt-mlm"]["better"] is False
    text = demo.render_speedups(list(speed.values()))
    assert "TAMT better or equal" in text and "IMP better" in text


def test_no_imp_run_means_no_speedup(tmp_path):
    (tmp_path / "cells").mkdir()
    assert demo.search_speedups(tmp_path) == []
    assert "no IMP run" in demo.render_speedups([])
