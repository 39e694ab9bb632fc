"""tamt export / tamt.load_sparse: plain HF checkpoints with exact zeros, the CPU fallback, the GPU path."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import tamt
from tamt.export import SIDECAR, export_subnetwork, load_sparse
from tamt.nn import get_masks
from tamt.ops.nm import is_nm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tamt.models import tiny_model, tiny_tokenizer

    d = tmp_path_factory.mktemp("tiny")
    tiny_model("bert", seed=0).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def mask24(tiny_dir, tmp_path_factory):
    from tamt.models import load_encoder

    m = load_encoder(tiny_dir)
    tamt.patch_model(m, structure="2:4")
    return tamt.save_mask(tmp_path_factory.mktemp("mask") / "omp24.safetensors", m, {"method": "omp"})


def _ids():
    return torch.randint(5, 150, (2, 9), generator=torch.Generator().manual_seed(0))


def test_export_zeroes_exactly_the_pruned_weights(tiny_dir, mask24, tmp_path):
    from safetensors.torch import load_file

    out = export_subnetwork(mask24, tiny_dir, tmp_path / "exp")
    assert {"config.json", "model.safetensors", SIDECAR, "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    exported = load_file(str(out / "model.safetensors"))
    original = load_file(str(Path(tiny_dir) / "model.safetensors"))
    masks = tamt.load_mask(mask24).masks
    for name, w in original.items():
        e = exported[name]
        if name in masks:
            keep = masks[name]
            assert (e[~keep].view(torch.int32) == 0).all(), f"{name}: pruned weights are not +0.0"
            assert torch.equal(e[keep].view(torch.int32), w[keep].view(torch.int32)), name
            if "word_embeddings" not in name:
                assert is_nm(keep, 2, 4) and bool(((e != 0).view(e.shape[0], -1, 4).sum(-1) <= 2).all()), name
        else:
            assert torch.equal(e, w), f"{name} changed although it is not masked"
    side = json.loads((out / SIDECAR).read_text())
    assert side["pattern"] == "2:4 + unstructured" and side["groups_valid"] is True
    assert side["mask"]["method"] == "omp" and len(side["structure"]) == 13  # 6 x 2 layers + pooler
    # atomic replace: an existing folder is kept unless overwrite
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_subnetwork(mask24, tiny_dir, out)
    (out / "stale.txt").write_text("x")
    export_subnetwork(mask24, tiny_dir, out, overwrite=True, dtype="bf16")
    assert not (out / "stale.txt").exists()
    assert load_file(str(out / "model.safetensors"))["pooler.dense.weight"].dtype == torch.bfloat16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_export_loads_with_transformers_alone(tiny_dir, mask24, tmp_path):
    out = export_subnetwork(mask24, tiny_dir, tmp_path / "exp")
    x = _ids()
    code = (
        "import sys; sys.modules['tamt'] = None\n"  # importing tamt would fail: transformers alone
        "import torch; from transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(out)!r}).eval()\n"
        f"x = torch.tensor({x.tolist()})\n"
        "with torch.no_grad(): y = m(x).last_hidden_state\n"
        f"torch.save(y, {str(tmp_path / 'y.pt')!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=300,
                   capture_output=True)
    y = torch.load(tmp_path / "y.pt", weights_only=True)
    from tamt.models import load_encoder

    ref = load_encoder(tiny_dir)
    tamt.apply_mask(ref, mask24)
    with torch.no_grad():
        want = ref(x).last_hidden_state
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


def test_load_sparse_cpu_falls_back_to_dense_and_says_why_once(tiny_dir, mask24, tmp_path, monkeypatch):
    import tamt.export as ex

    monkeypatch.setattr(ex, "_warned", set())
    out = export_subnetwork(mask24, tiny_dir, tmp_path / "exp")
    with pytest.warns(UserWarning, match=r"cannot run the 2:4 layers as sparse GEMMs: device 'cpu' has no sparse "
                                         r"tensor cores.*dense model with the pruned weights as zeros"):
        m = load_sparse(out, device="cpu")
    assert m.tamt_sparse["accelerated"] == [] and "cpu" in m.tamt_sparse["reason"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m2 = load_sparse(out, device="cpu")  # said once already
    x = _ids()
    with torch.no_grad():
        torch.testing.assert_close(m(x).last_hidden_state, m2(x).last_hidden_state)
    from tamt.models import load_encoder

    ref = load_encoder(tiny_dir)
    tamt.apply_mask(ref, mask24)
    with torch.no_grad():
        torch.testing.assert_close(m(x).last_hidden_state, ref(x).last_hidden_state, rtol=1e-5, atol=1e-5)
    assert not m.training
    if not torch.cuda.is_available():  # the default device on a machine without one
        with pytest.warns(UserWarning, match="CUDA is not available"):
            mc = load_sparse(out)
        assert next(mc.parameters()).device.type == "cpu" and mc.tamt_sparse["accelerated"] == []
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_sparse(tmp_path / "nothing", device="cpu")


def test_cli_search_2_4_info_export(tiny_dir, tmp_path, capsys):
    from tamt.cli import main
    from tamt.models import TINY_VOCAB

    rng = random.Random(0)
    words = [w for w in TINY_VOCAB if w.isalpha() and len(w) > 2]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(40)) for _ in range(120)) + "\n")
    run = tmp_path / "run"
    assert main(["search", "--model", str(tiny_dir), "--method", "wanda", "--structure", "2:4", "--corpus",
                 str(corpus), "--out", str(run), "--block-size", "32", "--batch-size", "8",
                 "--calibration-blocks", "8", "--no-progress"]) == 0
    mask = run / "masks" / "wanda-2of4_s0.50.safetensors"
    assert mask.is_file()
    capsys.readouterr()
    assert main(["info", str(mask)]) == 0
    txt = capsys.readouterr().out
    assert "2:4 (all groups valid)" in txt and "2:4 + unstructured" in txt and "wanda" in txt
    assert main(["export", str(mask), "--model", str(tiny_dir), "--out", str(tmp_path / "exp")]) == 0
    assert "pattern 2:4 + unstructured" in capsys.readouterr().out
    assert main(["export", str(mask), "--model", str(tiny_dir), "--out", str(tmp_path / "exp")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["search", "--model", str(tiny_dir), "--method", "omp", "--corpus", str(corpus), "--out",
                 str(run)]) == 1
    assert "give --sparsity" in capsys.readouterr().err
    assert main(["search", "--model", str(tiny_dir), "--method", "imp", "--structure", "2:4", "--corpus",
                 str(corpus), "--out", str(run)]) == 1
    assert "imp prunes 10 %" in capsys.readouterr().err


def test_bench_nm_smoke_runs_on_cpu(tmp_path, capsys):
    """The GPU benchmark's code paths (export, load_sparse, JSON) on tiny CPU shapes: it must not crash on a
    scarce GPU machine.  No timing here means anything."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_nm", REPO / "benchmarks" / "bench_nm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--out", str(tmp_path / "nm.json")]) == 0
    res = json.loads((tmp_path / "nm.json").read_text())
    assert res["gemm"][0]["sparse24_ms"] is None and "no sparse tensor cores" in res["gemm"][0]["sparse24_unmeasured"]
    assert res["model"]["speedup"] is None and res["model"]["max_abs_diff_sparse_vs_dense"] == 0.0
    assert "speedup unmeasured" in capsys.readouterr().out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
                    reason="needs an NVIDIA GPU with sparse tensor cores (sm_80+)")
def test_load_sparse_runs_2_4_layers_semi_structured_gpu(tmp_path):
    import transformers as tf

    cfg = tf.BertConfig(vocab_size=512, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=128)
    torch.manual_seed(0)
    base = tf.BertModel(cfg).eval()
    base.save_pretrained(tmp_path / "base")
    m = tf.BertModel.from_pretrained(tmp_path / "base").eval()
    tamt.patch_model(m, structure="2:4")
    out = export_subnetwork(get_masks(m), base, tmp_path / "exp")
    sparse = load_sparse(out, device="cuda")
    info = sparse.tamt_sparse
    assert info["reason"] is None, info
    assert len(info["accelerated"]) == 13  # 6 per layer x 2 + the pooler
    lin = sparse.encoder.layer[0].intermediate.dense
    assert isinstance(lin.weight, torch.sparse.SparseSemiStructuredTensor)
    dense = tf.AutoModel.from_pretrained(out, dtype=torch.bfloat16).cuda().eval()
    x = torch.randint(0, 512, (8, 64), device="cuda")
    with torch.no_grad():
        a, b = sparse(x).last_hidden_state.float(), dense(x).last_hidden_state.float()
    assert (a - b).abs().max().item() < 0.05 * b.abs().max().item()
