"""Fine-tuning on the tiny model with the tests' own GLUE/SQuAD fixtures."""
from __future__ import annotations

import json

import pytest
import torch

import tamt
from tamt.finetune import FinetuneConfig, PRESETS

FAST = dict(progress=False, num_threads=1, batch_size=16)


def test_presets_and_task_defaults():
    g = FinetuneConfig.for_task("mrpc")
    assert (g.lr, g.batch_size, g.max_seq_length, g.epochs) == (2e-5, 32, 128, 3.0)
    s = FinetuneConfig.for_task("squad")
    assert (s.lr, s.batch_size, s.max_seq_length, s.doc_stride, s.epochs) == (3e-5, 16, 384, 128, 2.0)
    p = FinetuneConfig.for_task("sst2", "paper")
    assert (p.lr, p.batch_size, p.max_seq_length, p.epochs) == (2e-5, 32, 128, 3.0) and len(p.seeds) > 1
    assert FinetuneConfig.for_task("squad", "paper").max_seq_length == 384
    c = FinetuneConfig.for_task("sst2", "cpu-small", lr=1e-4)
    assert c.max_seq_length == 64 and c.lr == 1e-4
    assert set(PRESETS) >= {"paper", "cpu-small"}
    with pytest.raises(TypeError, match="unknown fine-tuning option"):
        FinetuneConfig.for_task("sst2", bogus=1)
    with pytest.raises(ValueError, match="unknown task"):
        FinetuneConfig.for_task("nope")


def test_masked_weights_stay_exactly_zero(tiny, glue_dir, omp_mask, tmp_path):
    from tamt.nn import masked_modules

    model, tok = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = tamt.finetune(model, omp_mask, "sst2", glue_dir, tokenizer=tok, epochs=2, lr=1e-3, weight_decay=0.1,
                        seeds=[3], out=tmp_path / "run", save_model=True, **FAST)
    assert res.sparsity == pytest.approx(0.5, abs=0.01)
    ft = res.model
    mods = masked_modules(ft)
    assert len(mods) == len(omp_mask)
    changed_kept = 0
    for name, m in mods:
        w = m.weight.detach()
        assert torch.equal(m.mask, omp_mask[f"{name}.weight"])
        assert (w[~m.mask] == 0).all(), f"{name}: pruned weights became non-zero"
        changed_kept += int((w[m.mask] != 0).sum())
    assert changed_kept > 0
    # surviving weights, biases and LayerNorm trained
    enc = dict(ft.base_model.named_parameters())
    assert not torch.equal(enc["encoder.layer.0.attention.self.query.weight"][omp_mask["encoder.layer.0.attention.self.query.weight"]],
                           before["encoder.layer.0.attention.self.query.weight"][omp_mask["encoder.layer.0.attention.self.query.weight"]])
    assert not torch.equal(enc["encoder.layer.0.attention.self.query.bias"], before["encoder.layer.0.attention.self.query.bias"])
    assert not torch.equal(enc["embeddings.LayerNorm.weight"], before["embeddings.LayerNorm.weight"])
    assert res.per_seed[0]["pruned_nonzero"] == 0
    # the input model itself is untouched
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
    # saved model: plain HF model with the pruned weights stored as zeros
    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "seed3" / "model")
    sd = dict(saved.base_model.named_parameters())
    for name, m in omp_mask.items():
        assert (sd[name].detach()[~m] == 0).all()
    out = json.loads((tmp_path / "run" / "result.json").read_text())
    assert set(out["metrics"]) == {"best", "final"} and "accuracy" in out["metrics"]["best"]
    assert (tmp_path / "run" / "log.jsonl").read_text().count("\n") == len(res.per_seed[0]["history"])


def test_dense_tiny_learns_fixture_beyond_majority(tiny, glue_dir):
    model, tok = tiny
    res = tamt.finetune(model, None, "sst2", glue_dir, tokenizer=tok, epochs=8, lr=3e-3, seeds=[0], **FAST)
    import datasets  # noqa: F401
    from tamt.data.glue import load_glue

    labels = load_glue("sst2", glue_dir)["validation"]["label"]
    majority = max(labels.count(0), labels.count(1)) / len(labels)
    best = res.metrics["best"]["accuracy"]
    assert best > majority + 0.1, (best, majority)
    assert res.per_seed[0]["best_step"] <= res.per_seed[0]["steps"]
    assert res.metrics["final"]["accuracy"] <= best + 1e-12


def test_two_seeds_mean_std(tiny, glue_dir):
    model, tok = tiny
    res = tamt.finetune(model, None, "cola", glue_dir, tokenizer=tok, max_steps=3, seeds=[0, 1], **FAST)
    vals = [r["best"]["matthews_correlation"] for r in res.per_seed]
    assert res.metrics["best"]["matthews_correlation"] == pytest.approx(sum(vals) / 2)
    assert res.std["best"]["matthews_correlation"] == pytest.approx(abs(vals[0] - vals[1]) / 2)


def test_regression_and_two_dev_sets_and_train_size(tiny, glue_dir):
    model, tok = tiny
    r = tamt.finetune(model, None, "stsb", glue_dir, tokenizer=tok, max_steps=2, **FAST)
    assert set(r.metrics["best"]) == {"pearson", "spearmanr", "score"}
    r = tamt.finetune(model, None, "mnli", glue_dir, tokenizer=tok, max_steps=2, train_size=12, **FAST)
    assert set(r.metrics["best"]) == {"matched_accuracy", "mismatched_accuracy", "score"}
    assert r.per_seed[0]["train_examples"] == 12


def test_squad_finetune(tiny, glue_dir):
    model, tok = tiny
    r = tamt.finetune(model, None, "squad", glue_dir, tokenizer=tok, max_steps=4, max_seq_length=64, doc_stride=32,
                      **FAST)
    assert set(r.metrics["best"]) == {"exact_match", "f1", "score"}
    assert 0.0 <= r.metrics["best"]["exact_match"] <= r.metrics["best"]["f1"] <= 1.0


def test_malformed_file_names_file_and_line(tiny, tmp_path):
    d = tmp_path / "SST-2"
    d.mkdir()
    (d / "train.tsv").write_text("sentence\tlabel\ngood movie\t1\nbroken row without label\n")
    (d / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    with pytest.raises(ValueError, match=r"train\.tsv(:| line | , line )3\b"):
        tamt.finetune(tiny[0], None, "sst2", tmp_path, tokenizer=tiny[1], max_steps=1, **FAST)


def test_cli_finetune_from_checkpoint_folder(tiny_dir, glue_dir, omp_mask, tmp_path):
    from tamt.cli import main
    from tamt.masks import save_mask

    mask = save_mask(tmp_path / "m.safetensors", omp_mask, {"method": "omp"})
    rc = main(["finetune", "--model", str(tiny_dir), "--mask", str(mask), "--task", "sst2", "--data", str(glue_dir),
               "--max-steps", "3", "--seeds", "0,1", "--threads", "1", "--no-progress", "--out", str(tmp_path / "o")])
    assert rc == 0
    out = json.loads((tmp_path / "o" / "result.json").read_text())
    assert [r["seed"] for r in out["per_seed"]] == [0, 1]
    assert out["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_paper_preset_follows_the_reference_protocol():
    """glue_trans.py / squad_trans.py: evaluate every 50 steps (MNLI 500, SQuAD 1,000), wd 0, no warm-up, clip
    1.0, HF AdamW, 3 seeds; MNLI's reported number is the mismatched accuracy."""
    for task in ("cola", "sst2", "mrpc", "stsb", "rte"):
        c = FinetuneConfig.for_task(task, "paper")
        assert (c.eval_every, c.weight_decay, c.warmup_ratio, c.max_grad_norm, c.optimizer, c.seeds) == \
            (50, 0.0, 0.0, 1.0, "adamw-hf", (1, 2, 3))
        assert c.select_metric is None
    m = FinetuneConfig.for_task("mnli", "paper")
    assert (m.eval_every, m.select_metric) == (500, "mismatched_accuracy")
    q = FinetuneConfig.for_task("squad", "paper")
    assert (q.eval_every, q.lr, q.batch_size, q.epochs) == (1000, 3e-5, 16, 2.0)
    d = FinetuneConfig.for_task("mnli")
    assert (d.optimizer, d.select_metric) == ("adamw", None)


def test_mnli_best_checkpoint_follows_select_metric(tiny, glue_dir):
    model, tok = tiny
    r = tamt.finetune(model, None, "mnli", glue_dir, tokenizer=tok, max_steps=5, eval_every=1, lr=3e-3,
                      select_metric="mismatched_accuracy", optimizer="adamw-hf", **FAST)
    seed = r.per_seed[0]
    hist = seed["history"]
    assert len(hist) == 5 and {"matched_accuracy", "mismatched_accuracy"} <= set(hist[0])
    best = max(hist, key=lambda h: h["mismatched_accuracy"])  # the first maximum, as a strict > keeps it
    assert seed["best_step"] == best["step"]
    assert seed["best"]["mismatched_accuracy"] == best["mismatched_accuracy"]
    assert seed["best"]["matched_accuracy"] == best["matched_accuracy"]  # both reported at that checkpoint
    with pytest.raises(ValueError, match="not a mnli metric"):
        tamt.finetune(model, None, "mnli", glue_dir, tokenizer=tok, max_steps=1, select_metric="f1", **FAST)


def test_freeze_word_embeddings_keeps_them_and_trains_the_rest(tiny, glue_dir, tmp_path):
    model, tok = tiny
    res = tamt.finetune(model, None, "sst2", glue_dir, tokenizer=tok, epochs=1, lr=1e-3, seeds=[0],
                        out=tmp_path / "run", save_model=True, freeze_word_embeddings=True, **FAST)
    before, after = dict(model.base_model.named_parameters()), dict(res.model.base_model.named_parameters())
    assert torch.equal(after["embeddings.word_embeddings.weight"], before["embeddings.word_embeddings.weight"])
    assert not torch.equal(after["embeddings.position_embeddings.weight"],
                           before["embeddings.position_embeddings.weight"])
