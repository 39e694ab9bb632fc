"""Autotune configs: shared-memory pruning per dtype and mask form, the
fp32 / 16-bit separation, and the bucketed token key (plain Python; the
compiled footprints are checked by test_static_gpu_check.py)."""
from __future__ import annotations

import pytest
import torch

from tamt.kernels import _configs as C
from tamt.kernels._common import MASK_DENSE, MASK_PACKED, MASK_SCORES

MODES = [MASK_SCORES, MASK_DENSE, MASK_PACKED]


def test_token_bucket_is_next_power_of_two():
    assert [C.token_bucket(m) for m in (1, 16, 17, 100, 128, 129, 4096, 5000)] == [16, 16, 32, 128, 128, 256, 4096,
                                                                                   8192]


def test_autotuners_key_on_the_token_bucket_not_on_m():
    import importlib

    for mod, name in [("masked_matmul", "_masked_matmul_fwd_kernel"),
                      ("masked_matmul_grad_input", "_masked_matmul_grad_input_kernel"),
                      ("masked_matmul_grad_weight", "_masked_matmul_grad_weight_kernel")]:
        kern = getattr(importlib.import_module(f"tamt.kernels.{mod}"), name)
        if not hasattr(kern, "keys"):  # interpreter builds may not wrap
            pytest.skip("autotuner not inspectable here")
        assert "M_BUCKET" in kern.keys and "M" not in kern.keys


@pytest.mark.parametrize("which", ["full"])
def test_full_lists_are_disjoint_by_dtype_class(which, monkeypatch):
    monkeypatch.setattr(C, "interpreting", lambda: False)
    for fam in C.FAMILIES:
        tc = C.class_configs(fam, torch.bfloat16, which)
        f32 = C.class_configs(fam, torch.float32, which)
        assert tc and f32 and not ({C._key(c) for c in tc} & {C._key(c) for c in f32})
        allc = {C._key(c) for c in C.gemm_configs(fam, which)}
        assert {C._key(c) for c in tc + f32} == allc


@pytest.mark.parametrize("limit,cc", [(232448, 90), (166912, 80), (101376, 89)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", C.FAMILIES)
def test_pruning_never_empty_and_within_limit(family, mode, dtype, limit, cc, monkeypatch):
    monkeypatch.setattr(C, "interpreting", lambda: False)
    elem = torch.empty((), dtype=dtype).element_size()
    keep = C.surviving_configs(family, dtype, mode, limit, capability=cc, which="full")
    assert keep
    for c in keep:
        assert C.shared_estimate(family, c, elem, mode) <= limit
    pruned = [c for c in C.class_configs(family, dtype, "full") if C._key(c) not in {C._key(k) for k in keep}]
    for c in pruned:  # everything dropped was dropped for a reason
        assert C.shared_estimate(family, c, elem, mode) > limit or not C._fits_registers(c, cc)


def test_scores_form_prunes_more_than_uint8(monkeypatch):
    monkeypatch.setattr(C, "interpreting", lambda: False)
    sc = C.surviving_configs("mm", torch.bfloat16, MASK_SCORES, 232448, which="full")
    u8 = C.surviving_configs("mm", torch.bfloat16, MASK_DENSE, 232448, which="full")
    assert len(sc) < len(u8)  # the 128 x 256 x 64 tile needs > 232 KB with fp32 scores


def test_problem_size_pruning_keeps_small_tiles(monkeypatch):
    monkeypatch.setattr(C, "interpreting", lambda: False)
    keep = C.surviving_configs("mm", torch.bfloat16, MASK_DENSE, 232448, tokens=16, rows=768, cols=768, which="full")
    assert keep and all(c.kwargs["BLOCK_M"] <= 32 for c in keep)


def test_pruner_reads_dtype_mode_and_device(monkeypatch):
    monkeypatch.setattr(C, "interpreting", lambda: False)
    monkeypatch.setenv("TAMT_AUTOTUNE", "full")
    monkeypatch.setattr(C, "device_limits", lambda index: (166912, 80))

    class T:
        def __init__(self, dtype, size=4):
            self.dtype, self.device = dtype, torch.device("cuda", 0)
            self._size = size

        def element_size(self):
            return self._size

    prune = C.make_pruner("mm", "x_ptr", ("M_BUCKET", "N", "K"))
    cfgs = C.gemm_configs("mm", "full")
    got = prune(cfgs, {"x_ptr": T(torch.bfloat16, 2), "s_ptr": T(torch.float32), "M_BUCKET": 4096, "N": 768,
                       "K": 768}, MASK_MODE=MASK_SCORES)
    want = C.surviving_configs("mm", torch.bfloat16, MASK_SCORES, 166912, capability=80, tokens=4096, rows=768,
                               cols=768, which="full")
    assert [C._key(c) for c in got] == [C._key(c) for c in want]
    assert all(c.kwargs["BLOCK_K"] == 64 for c in got)  # the 16-bit class only


def test_quick_autotune_is_a_prefix_of_full(monkeypatch):
    monkeypatch.setattr(C, "interpreting", lambda: False)
    for fam in C.FAMILIES:
        for dt in (torch.bfloat16, torch.float32):
            quick, full = C.class_configs(fam, dt, "quick"), C.class_configs(fam, dt, "full")
            assert 1 <= len(quick) <= 3 and [C._key(c) for c in quick] == [C._key(c) for c in full[:len(quick)]]
    with pytest.raises(ValueError, match="TAMT_AUTOTUNE"):
        C.autotune_mode("fast")
