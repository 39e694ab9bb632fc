"""N:M structure in the module layer: patching, search forward/backward, reports, masks on disk."""
from __future__ import annotations

import json

import pytest
import torch

import tamt
from tamt.nn import MaskedEmbedding, MaskedLinear, get_masks, masked_modules
from tamt.ops.nm import is_nm, magnitude_nm_mask, nm_mask

from ._tiny import FAMILIES, ids, tiny


@pytest.mark.parametrize("family", FAMILIES)
def test_patch_fixed_2_4_is_omp_2_4_and_embeddings_stay_unstructured(family):
    model = tiny(family)
    tamt.patch_model(model, structure="2:4")
    mods = masked_modules(model)
    for name, m in mods:
        if isinstance(m, MaskedLinear):
            assert m.nm == (2, 4) and m.sparsity == 0.5 and m.structure == "2:4", name
            assert torch.equal(m.mask, magnitude_nm_mask(m.weight, 2, 4)), name
        else:
            assert m.nm is None and m.sparsity == 0.5
            n = m.mask.numel()
            assert n - int(m.mask.sum()) == n // 2  # unstructured at the same sparsity, exactly
    rep = tamt.sparsity_report(model)
    assert rep.pattern == "2:4 + unstructured" and rep.groups_valid is True
    assert rep.sparsity == pytest.approx(0.5, abs=1e-3)
    assert "2:4 (all groups valid)" in str(rep)
    with torch.no_grad():
        model(ids())


def test_patch_options_and_errors():
    m = tiny("bert")
    tamt.patch_model(m, 0.75, structure="1:4", embedding_structure="2:4")
    emb = m.get_input_embeddings()
    assert isinstance(emb, MaskedEmbedding) and emb.nm == (2, 4) and is_nm(emb.mask, 2, 4)
    lin = [mod for _, mod in masked_modules(m) if isinstance(mod, MaskedLinear)]
    assert all(x.nm == (1, 4) and is_nm(x.mask, 1, 4) for x in lin)
    with pytest.raises(ValueError, match="contradicts"):
        tamt.patch_model(tiny("bert"), 0.7, structure="2:4")
    with pytest.raises(ValueError, match="unknown mask structure"):
        tamt.patch_model(tiny("bert"), structure="2of4")
    import transformers as tf

    cfg = tf.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=42, max_position_embeddings=64)
    odd = tf.BertModel(cfg)
    with pytest.raises(ValueError, match=r"encoder\.layer\.0\.output\.dense weight .* input dimension 42 is not "
                                         r"divisible by M=4"):
        tamt.patch_model(odd, structure="2:4")


def test_search_mode_2_4_forward_backward_and_fixed_mask_checks():
    model = tiny("bert", task="encoder")
    tamt.patch_model(model, mode="search", structure="2:4", init="random", seed=3)
    lin = model.encoder.layer[0].intermediate.dense
    assert lin.mode == "search" and lin.threshold == float("-inf")
    assert torch.equal(lin.current_mask(), nm_mask(lin.scores.detach(), 2, 4))
    assert is_nm(lin.current_mask(), 2, 4)
    # forward equals the fixed-mask model; the scores get the STE gradient, the weight none
    x = ids()
    y = model(x).last_hidden_state
    y.pow(2).sum().backward()
    assert lin.scores.grad is not None and lin.scores.grad.abs().sum() > 0 and lin.weight.grad is None
    emb = model.get_input_embeddings()
    assert emb.scores.grad is not None
    fixed = tiny("bert", task="encoder")
    tamt.patch_model(fixed, 0.0)
    tamt.apply_mask(fixed, get_masks(model))
    with torch.no_grad():
        torch.testing.assert_close(fixed(x).last_hidden_state, y.detach())
    tamt.nn.update_thresholds(model)  # N:M modules are skipped, the embeddings not
    assert lin.threshold == float("-inf") and emb.threshold > float("-inf")
    # an N:M module refuses a mask that is not N:M
    lin.freeze_mask()
    with pytest.raises(ValueError, match="does not keep exactly 2 of every 4"):
        lin.set_mask(torch.ones_like(lin.weight, dtype=torch.bool))
    lin.set_structure("unstructured")
    lin.set_mask(torch.ones_like(lin.weight, dtype=torch.bool))


def test_n_m_word_embeddings_search_through_the_lookup():
    model = tiny("bert", task="encoder")
    tamt.patch_model(model, mode="search", structure="2:4", embedding_structure="2:4", seed=0)
    emb = model.get_input_embeddings()
    y = model(ids()).last_hidden_state
    y.sum().backward()
    assert is_nm(emb.current_mask(), 2, 4) and emb.scores.grad.abs().sum() > 0


def test_masked_weight_zeros_are_positive_zero():
    lin = MaskedLinear.from_linear(torch.nn.Linear(8, 3), 0.0)
    with torch.no_grad():
        lin.weight.fill_(-1.0)
    lin.set_structure("2:4")
    lin.set_mask(magnitude_nm_mask(torch.arange(24.0).view(3, 8), 2, 4))
    w = lin.to_linear().weight.detach()
    assert (w[~lin.mask] == 0).all() and not torch.signbit(w[~lin.mask]).any()
    assert (w[lin.mask] == -1).all()


def test_mask_file_records_and_validates_the_structure(tmp_path):
    model = tiny("bert")
    tamt.patch_model(model, structure="2:4")
    path = tamt.save_mask(tmp_path / "m.safetensors", model, {"method": "omp"})
    mf = tamt.load_mask(path)
    lin_names = {f"{n}.weight" for n, m in masked_modules(model) if isinstance(m, MaskedLinear)}
    assert mf.structures == {n: "2:4" for n in lin_names}
    rep = tamt.sparsity_report(mf)
    assert rep.pattern == "2:4 + unstructured" and rep.groups_valid is True
    # applying it gives N:M modules
    other = tiny("bert")
    tamt.apply_mask(other, path)
    assert {f"{n}.weight" for n, m in masked_modules(other) if m.nm == (2, 4)} == lin_names
    # a plain dict claiming 2:4 with a broken group is refused at save time
    masks = dict(mf.masks)
    name = sorted(lin_names)[0]
    broken = masks[name].clone()
    broken[0, :4] = True
    masks[name] = broken
    with pytest.raises(ValueError, match=r"claims structure 2:4 .* row 0, columns 0\.\.3, keeps 4"):
        tamt.save_mask(tmp_path / "x.safetensors", masks, {"structure": {name: "2:4"}})
    rep = tamt.sparsity_report(masks, {name: "2:4"})
    assert rep.groups_valid is False and rep.rows[[r["name"] for r in rep.rows].index(name)]["invalid_groups"] == 1
    # a file whose metadata claims 2:4 for a mask that is not 2:4 (edited on disk) is refused at load time
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata()
    tensors = load_file(str(path))
    tensors[name] = tamt.ops.pack_mask(broken)
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=header)
    with pytest.raises(ValueError, match="claims structure 2:4 but 1 of its"):
        tamt.load_mask(tmp_path / "edited.safetensors")
    header = dict(header, structure=json.dumps({name: "5:4"}))
    save_file(load_file(str(path)), str(tmp_path / "badclaim.safetensors"), metadata=header)
    with pytest.raises(ValueError, match="invalid"):
        tamt.load_mask(tmp_path / "badclaim.safetensors")
    # unstructured masks carry no structure key at all (files as before)
    plain = tiny("bert")
    tamt.patch_model(plain, 0.5)
    p2 = tamt.save_mask(tmp_path / "plain.safetensors", plain)
    assert "structure" not in tamt.load_mask(p2).metadata
