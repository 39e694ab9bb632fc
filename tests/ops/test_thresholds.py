"""Thresholds: torch.kthvalue semantics, ties, s = 0, s -> 1, every backend."""
from __future__ import annotations

import math

import pytest
import torch
from _hypothesis_compat import given, settings, st

from tamt import ops
from tamt.ops._common import sparsity_to_k

from .test_masked_linear import available_backends


def kth(t, s):
    k = sparsity_to_k(s, t.numel())
    return float("-inf") if k == 0 else torch.kthvalue(t.reshape(-1).float(), k).values.item()


@pytest.mark.parametrize("backend", available_backends())
def test_segmented_matches_kthvalue(backend, device):
    torch.manual_seed(0)
    shapes = [(1, 1), (7, 3), (123, 77), (17, 769), (2, 1000), (64, 64)]
    scores = [torch.randn(s, device=device) for s in shapes]
    sparsities = [0.0, 0.5, 0.3, 0.9, 0.99, 0.7]
    with ops.use_backend(backend):
        taus = ops.topk_thresholds(scores, sparsities)
    assert taus.shape == (len(shapes),)
    for t, s, tau in zip(scores, sparsities, taus.tolist()):
        assert tau == kth(t, s)
        k = sparsity_to_k(s, t.numel())
        assert int((t <= tau).sum()) == k  # no ties in random data: exactly k pruned


@pytest.mark.parametrize("backend", available_backends())
def test_ties_and_constants(backend, device):
    tied = torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 2.0, 2.0, 2.0]], device=device)
    const = torch.full((5, 5), 3.5, device=device)
    with ops.use_backend(backend):
        taus = ops.topk_thresholds([tied, const, const], [0.25, 0.5, 0.0])
    assert taus.tolist() == [0.0, 3.5, -math.inf]
    # documented tie behaviour: everything equal to tau is pruned, never fewer than k
    assert int((tied <= taus[0]).sum()) == 3 >= sparsity_to_k(0.25, 8)
    assert int((const > taus[1]).sum()) == 0
    assert int((const > taus[2]).sum()) == 25


def test_bf16_and_float64_inputs():
    torch.manual_seed(4)
    a = torch.randn(33, 17).bfloat16()
    b = torch.randn(9, 9, dtype=torch.float64)
    taus = ops.topk_thresholds([a, b], [0.4, 0.6])
    assert taus.dtype == torch.float64
    assert taus[0].item() == kth(a, 0.4)
    assert taus[1].item() == torch.kthvalue(b.reshape(-1), sparsity_to_k(0.6, 81)).values.item()


def test_sparsity_bounds_and_nan():
    t = torch.randn(10)
    for bad in (-0.1, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            ops.topk_threshold(t, bad)
    t[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ops.topk_threshold(t, 0.5)
    with pytest.raises(ValueError, match="sparsities"):
        ops.topk_thresholds([t, t], [0.5])
    assert ops.topk_thresholds([], []).numel() == 0


def test_k_rounding_is_what_user_means():
    assert sparsity_to_k(0.29, 100) == 29
    assert sparsity_to_k(0.7, 10) == 7
    assert sparsity_to_k(0.999999, 10) == 9


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), s=st.floats(0.0, 0.999), seed=st.integers(0, 2**16))
def test_property_exactly_k_pruned_without_ties(n, s, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randperm(n, generator=g).float() / n - 0.5  # distinct values
    tau = ops.topk_threshold(t, s)
    assert int((t > tau).sum()) == n - sparsity_to_k(s, n)
