"""Score initialisations (tamt.nn.scores): the OMP-ranked init keeps the OMP mask exactly."""
import math

import pytest
import torch

from tamt.nn.scores import init_scores, magnitude_mask, ranked_scores


@pytest.mark.parametrize("shape,s", [((7, 5), 0.5), ((1, 1), 0.0), ((64, 48), 0.7), ((3, 17), 0.29), ((100,), 0.9)])
def test_ranked_scores_topk_is_the_omp_mask(shape, s):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    sc = ranked_scores(w, s, t0=0.01)
    n = w.numel()
    k = math.floor(s * n + 1e-6)
    keep = torch.zeros(n, dtype=torch.bool)
    if n - k:
        keep[torch.topk(sc.reshape(-1), n - k).indices] = True
    assert torch.equal(keep.view(shape), magnitude_mask(w, s))
    assert sc.unique().numel() == n  # distinct: top-k is exact without tie-breaking
    assert float(sc.min()) > 0 and float(sc.max()) < 0.02
    # graded by |W|: scores order like magnitudes within the kept and within the pruned set
    m = magnitude_mask(w, s).reshape(-1)
    for part in (m, ~m):
        if int(part.sum()) > 1:
            a, b = w.abs().reshape(-1)[part], sc.reshape(-1)[part]
            assert torch.equal(torch.argsort(a, stable=True), torch.argsort(b, stable=True))


def test_ranked_scores_with_tied_magnitudes_give_an_exact_omp_mask():
    w = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    w[2:6] = 0.0  # all-zero rows (e.g. padding embeddings): 24 tied values around the cut
    for s in (0.3, 0.5, 0.6):
        sc = ranked_scores(w, s).reshape(-1)
        k = math.floor(s * w.numel() + 1e-6)
        keep = torch.zeros(w.numel(), dtype=torch.bool)
        keep[torch.topk(sc, w.numel() - k).indices] = True
        mag = w.abs().reshape(-1)
        assert int((~keep).sum()) == k
        assert float(mag[keep].min()) >= float(mag[~keep].max())  # a valid OMP mask despite the ties
        assert sc.unique().numel() == sc.numel()


def test_init_scores_dispatches_omp_rank():
    w = torch.randn(9, 4)
    assert torch.equal(init_scores(w, 0.5, "omp-rank", t0=0.02), ranked_scores(w, 0.5, t0=0.02))
    with pytest.raises(ValueError, match="unknown score init"):
        init_scores(w, 0.5, "nope")
