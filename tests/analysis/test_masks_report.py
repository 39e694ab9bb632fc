"""Mask comparison, report tables and plots against hand-computed values."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tamt.analysis import compare_masks, distance_from_omp
from tamt.analysis.masks import compare_pair
from tamt.analysis.report import aggregate, pivot


def _m(bits, shape=None):
    t = torch.tensor(bits, dtype=torch.bool)
    return t.reshape(shape) if shape else t


def test_compare_pair_by_hand():
    a = {"x.weight": _m([1, 1, 0, 0]), "y.weight": _m([1, 1, 1, 1, 0, 0], (2, 3))}
    b = {"x.weight": _m([1, 0, 1, 0]), "y.weight": _m([1, 1, 1, 0, 0, 1], (2, 3))}
    d = compare_pair(a, b)
    x = d["matrices"]["x.weight"]
    assert x["overlap"] == pytest.approx(1 / 2) and x["jaccard"] == pytest.approx(1 / 3)
    assert x["distance"] == pytest.approx(2 / 4)
    y = d["matrices"]["y.weight"]  # both 3, either 5, kept_a 4, differ 2 of 6
    assert y["overlap"] == pytest.approx(3 / 4) and y["jaccard"] == pytest.approx(3 / 5)
    assert y["distance"] == pytest.approx(2 / 6)
    o = d["overall"]  # pooled: both 4, either 8, kept_a 6, differ 4 of 10
    assert o["overlap"] == pytest.approx(4 / 6) and o["jaccard"] == pytest.approx(4 / 8)
    assert o["distance"] == pytest.approx(4 / 10)


def test_compare_masks_matrix_and_errors(tmp_path):
    from tamt.masks import save_mask

    g = torch.Generator().manual_seed(0)
    ms = [{"a.weight": torch.rand(8, 8, generator=g) > 0.5} for _ in range(3)]
    paths = [save_mask(tmp_path / f"m{i}.safetensors", m, {"method": f"r{i}"}) for i, m in enumerate(ms)]
    c = compare_masks(paths)
    assert c.names == ["m0", "m1", "m2"]
    assert np.allclose(np.diag(c.jaccard), 1) and np.allclose(np.diag(c.distance), 0)
    assert np.allclose(c.distance, c.distance.T) and np.allclose(c.jaccard, c.jaccard.T)
    exp = float((ms[0]["a.weight"] != ms[1]["a.weight"]).float().mean())
    assert c.distance[0, 1] == pytest.approx(exp)
    assert "m0" in c.table() and "overall" in c.matrix_table("m0", "m1")
    with pytest.raises(ValueError, match="different matrices"):
        compare_masks([ms[0], {"b.weight": ms[1]["a.weight"]}])


def test_distance_from_omp():
    from tamt.models import tiny_model
    from tamt.nn import get_masks, patch_model
    from tamt.nn.scores import random_mask

    model = tiny_model("bert", 0)
    import copy

    p = copy.deepcopy(model)
    patch_model(p, 0.6)
    omp = get_masks(p)
    d = distance_from_omp(model, omp)
    assert d["overall"]["distance"] == 0.0 and d["overall"]["jaccard"] == 1.0
    g = torch.Generator().manual_seed(0)
    rnd = {k: random_mask(v.shape, 0.6, generator=g) for k, v in omp.items()}
    d = distance_from_omp(model, rnd)
    # two independent masks keeping 40 % each differ at about 2 * 0.4 * 0.6 = 48 % of positions
    assert d["overall"]["distance"] == pytest.approx(0.48, abs=0.03)


def test_aggregate_and_pivot():
    rows = [{"model": "m", "method": "omp", "sparsity": 0.5, "task": "sst2", "train_size": None, "score": v}
            for v in (0.8, 0.9)] + \
           [{"model": "m", "method": "omp", "sparsity": 0.5, "task": "rte", "train_size": None, "score": 0.6}]
    agg = aggregate(rows, ["score"])
    assert agg[0]["n"] == 2 and agg[0]["score_mean"] == pytest.approx(0.85) and agg[0]["score_std"] == pytest.approx(0.0707107)
    header, body = pivot(agg, "score")
    assert header == ["method", "sparsity", "sst2", "rte", "average"]
    # sample std (ddof=1); one run has no spread to print
    assert body[0][2] == "85.00 ± 7.07" and body[0][3] == "60.00 (1 run)" and body[0][4] == "72.50"


def test_plots_written(tmp_path):
    from tamt.analysis import plots

    summary = [{"method": m, "sparsity": s, "task": "t", "score_mean": 0.9 - s / 2 - (m == "random") * 0.2,
                "score_std": 0.01} for m in ("omp", "random") for s in (0.5, 0.7)] + \
              [{"method": "dense", "sparsity": 0.0, "task": "t", "score_mean": 0.9, "score_std": 0.0}]
    assert plots.score_vs_sparsity(summary, tmp_path / "a.png").stat().st_size > 1000
    pts = [{"method": m, "sparsity": s, "score": 0.9 - l / 10, "mlm_loss": l}
           for m, s, l in (("omp", 0.5, 3.0), ("random", 0.5, 7.0), ("omp", 0.7, 5.0), ("random", 0.7, 8.0))]
    path, corr = plots.pretrain_vs_downstream(pts, tmp_path / "b.png")
    assert corr["pearson"] == pytest.approx(-1.0) and corr["spearman"] == pytest.approx(-1.0) and corr["n"] == 4
    assert path.stat().st_size > 1000
    assert plots.mask_heatmap(np.eye(2), ["a", "b"], tmp_path / "c.png").exists()


def test_cli_compare_masks(tmp_path, capsys):
    from tamt.cli import main
    from tamt.masks import save_mask

    a = {"x.weight": _m([1, 1, 0, 0]), "y.weight": _m([1, 1, 1, 1, 0, 0], (2, 3))}
    b = {"x.weight": _m([1, 0, 1, 0]), "y.weight": _m([1, 1, 1, 0, 0, 1], (2, 3))}
    pa, pb = save_mask(tmp_path / "a.safetensors", a), save_mask(tmp_path / "b.safetensors", b)
    rc = main(["compare-masks", str(pa), str(pb), "--metric", "distance", "--per-matrix", "--out", str(tmp_path / "o")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "0.4000" in out  # overall distance 4/10
    d = json.loads((tmp_path / "o" / "compare.json").read_text())
    assert d["distance"][0][1] == pytest.approx(0.4)
    assert (tmp_path / "o" / "distance.png").exists() and (tmp_path / "o" / "distance_per_matrix.png").exists()
