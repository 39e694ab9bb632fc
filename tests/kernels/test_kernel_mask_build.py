"""The per-step mask pass (kernels.binarize) vs its torch reference and the
plain definition M = scores > threshold, every form, odd sizes, ties."""
from __future__ import annotations

import pytest
import torch

from _kernel_helpers import pack_bits

from tamt import kernels as K


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 77), (64, 40), (5, 1000)])
@pytest.mark.parametrize("form", ["uint8", "packed", "masked"])
def test_binarize_matches_definition(shape, form, device):
    g = torch.Generator().manual_seed(shape[0] * 1000 + shape[1])
    s = torch.randn(shape, generator=g).to(device)
    w = torch.randn(shape, generator=g).to(device)
    thr = s.reshape(-1).kthvalue(max(1, s.numel() // 3)).values  # ties: the k-th value itself is pruned
    m = s > thr
    got = K.binarize(s, thr, form, weight=w)
    want = {"uint8": m.to(torch.uint8), "packed": pack_bits(m), "masked": w * m}[form]
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want)
    assert torch.equal(K.binarize_reference(s, thr, form, weight=w), want)


def test_binarize_threshold_rounded_to_scores_dtype(device):
    """bf16 scores, fp32 threshold between two bf16 values: torch rounds the
    threshold to bf16 before comparing, so must the pass."""
    s = torch.full((4, 16), 1.0, dtype=torch.bfloat16, device=device)
    s[::2] = 1.0078125
    thr = torch.tensor(1.001, device=device)
    for form in ("uint8", "packed"):
        assert torch.equal(K.binarize(s, thr, form), K.binarize_reference(s, thr, form))
    assert torch.equal(K.binarize(s, thr, "uint8").bool(), s > thr)


def test_binarize_fp64_and_float_threshold(device):
    s = torch.randn(9, 13, dtype=torch.float64, device=device)
    assert torch.equal(K.binarize(s, 0.25, "uint8").bool(), s > 0.25)
    assert K.binarize(torch.empty(0, 4, device=device), 0.0, "packed").numel() == 0


def test_binarize_bad_arguments(device):
    s = torch.randn(3, 4, device=device)
    with pytest.raises(ValueError, match="form"):
        K.binarize(s, 0.0, "bits")
    with pytest.raises(ValueError, match="weight"):
        K.binarize(s, 0.0, "masked")
    with pytest.raises(TypeError):
        K.binarize(s > 0, 0.0, "uint8")
