"""Fine-tuning keeps an N:M (2:4) mask fixed: the pattern and the zeros survive training."""
from __future__ import annotations

import copy

import pytest
import torch

import tamt
from tamt.nn import masked_modules
from tamt.nn.modules import MaskedLinear
from tamt.ops.nm import is_nm


def test_2_4_mask_survives_finetuning(tiny, glue_dir, tmp_path):
    model, tok = tiny
    patched = copy.deepcopy(model)
    tamt.patch_model(patched, structure="2:4")  # OMP-2:4 on every Linear, unstructured embeddings
    path = tamt.save_mask(tmp_path / "omp24.safetensors", patched, {"method": "omp"})
    mf = tamt.load_mask(path)
    res = tamt.finetune(model, path, "sst2", glue_dir, tokenizer=tok, train_size=96, epochs=1, lr=1e-3,
                        seeds=[0], progress=False, num_threads=1, batch_size=16)
    assert res.per_seed[0]["pruned_nonzero"] == 0
    assert res.sparsity == pytest.approx(0.5, abs=1e-3)
    changed = 0
    for name, m in masked_modules(res.model):
        key = f"{name}.weight"
        assert torch.equal(m.mask.cpu(), mf.masks[key]), name
        w = m.weight.detach()
        assert (w[~m.mask] == 0).all(), name
        if isinstance(m, MaskedLinear):
            assert m.nm == (2, 4) and is_nm(m.mask, 2, 4), name
            assert ((w != 0).view(w.shape[0], -1, 4).sum(-1) <= 2).all(), name  # at most 2 nonzeros per group
            changed += int((w[m.mask] != model.base_model.get_parameter(key).detach()[m.mask]).sum())
    assert changed > 0  # the surviving weights trained
    assert tamt.sparsity_report(res.model).groups_valid is True
