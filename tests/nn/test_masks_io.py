from __future__ import annotations

import json

import pytest
import torch

import tamt
from tamt.nn import get_masks, masked_modules

from ._tiny import ids, tiny


def test_save_load_apply_round_trip(tmp_path):
    model = tiny("bert")
    model.save_pretrained(tmp_path / "ckpt")
    tamt.patch_model(model, 0.7, mode="search", init="random", seed=0)
    path = tamt.save_mask(tmp_path / "m.safetensors", model, {"method": "random", "step": 0, "seed": 0})
    mf = tamt.load_mask(path)
    want = get_masks(model)
    assert set(mf.masks) == set(want)
    for k in want:
        assert torch.equal(mf.masks[k], want[k])
    for key in ("method", "sparsity", "step", "seed", "base_model", "fingerprint", "tamt_version"):
        assert key in mf.metadata, key
    # bit-packed: about 1 bit per weight on disk
    n = sum(m.numel() for m in want.values())
    assert path.stat().st_size < n / 8 + 8192

    # a task model of the same checkpoint takes the mask (same fingerprint)
    from transformers import AutoModelForSequenceClassification

    other = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ckpt", num_labels=2).eval()
    tamt.apply_mask(other, path)
    assert {k: torch.equal(v, want[k]) for k, v in get_masks(other).items()} == {k: True for k in want}
    x = ids()
    with torch.no_grad():
        other(x)


def test_apply_to_other_weights_or_shapes_fails(tmp_path):
    model = tiny("bert", seed=0)
    tamt.patch_model(model, 0.5)
    path = tamt.save_mask(tmp_path / "m.safetensors", model)
    with pytest.raises(ValueError, match="fingerprint"):
        tamt.apply_mask(tiny("bert", seed=1), path)
    tamt.apply_mask(tiny("bert", seed=1), path, ignore_fingerprint=True)
    with pytest.raises(ValueError, match="another model"):
        tamt.apply_mask(tiny("distilbert"), path, ignore_fingerprint=True)


def test_load_mask_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        tamt.load_mask(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        tamt.load_mask(bad)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(3)}, str(plain))
    with pytest.raises(ValueError, match="not a tamt mask"):
        tamt.load_mask(plain)


def test_write_is_atomic(tmp_path, monkeypatch):
    model = tiny("bert")
    tamt.patch_model(model, 0.5)
    path = tamt.save_mask(tmp_path / "m.safetensors", model, {"step": 1})
    before = path.read_bytes()
    import safetensors.torch as st

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(OSError):
        tamt.save_mask(path, model, {"step": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert json.loads(json.dumps(tamt.load_mask(path).metadata))["step"] == 1
