from __future__ import annotations

import numpy as np
import pytest
import torch
from _hypothesis_compat import given, settings, st

from tamt import ops
from tamt.ops import reference


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (9,), (3, 5), (123, 77), (2, 3, 4)])
def test_round_trip_and_layout_matches_numpy(shape):
    torch.manual_seed(5)
    m = torch.rand(shape) > 0.5
    p = ops.pack_mask(m)
    assert p.dtype == torch.uint8 and p.numel() == (m.numel() + 7) // 8
    want = np.packbits(m.reshape(-1).numpy(), bitorder="little")
    assert (p.numpy() == want).all()
    assert torch.equal(ops.unpack_mask(p, m.shape), m)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 1000))
def test_property_round_trip(n, seed):
    m = torch.rand(n, generator=torch.Generator().manual_seed(seed)) > 0.3
    assert torch.equal(ops.unpack_mask(ops.pack_mask(m), (n,)), m)
    assert torch.equal(reference.unpack_mask(reference.pack_mask(m), n), m)


def test_bad_packed_inputs():
    with pytest.raises(ValueError, match="needs"):
        ops.unpack_mask(torch.zeros(3, dtype=torch.uint8), (5, 5))
    with pytest.raises(TypeError):
        ops.unpack_mask(torch.zeros(3, dtype=torch.int32), (2, 2))
    with pytest.raises(TypeError):
        ops.pack_mask(torch.randn(4))
