"""Runs: resume equivalence (also after killing the CLI), outputs, CLI, bad inputs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pruning_helpers import FAST

import tamt
from tamt.pruning import SearchConfig, Searcher, prepare

REPO = Path(__file__).resolve().parents[2]


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["tamt-mlm-kd", "imp"])
def test_resume_gives_the_same_mask(method, tiny, tok, blocks, tmp_path):
    kw = dict(method=method, sparsities=(0.5,), steps=8, lr=2e-2, checkpoint_every=4, **FAST)
    if method == "imp":
        kw.update(imp_interval=2, steps=None)
    ctx = prepare(tiny, blocks, tokenizer=tok)
    full = Searcher(ctx, SearchConfig(**kw), sparsity=0.5, run_dir=tmp_path / "full").run()
    half = Searcher(ctx, SearchConfig(**kw), sparsity=0.5, run_dir=tmp_path / "part")
    half.run(max_steps=5)  # a checkpoint at step 4, then one more step that the "crash" loses
    assert half.step_count == 5 and not half.finished
    resumed = Searcher(ctx, SearchConfig(**kw), sparsity=0.5, run_dir=tmp_path / "part", resume=True)
    assert resumed.step_count == 4
    resumed.run()
    assert resumed.step_count == full.step_count
    assert set(full.masks) == set(resumed.masks)
    for s in full.masks:
        assert _same(full.masks[s], resumed.masks[s]), s
    if method != "imp":  # the fresh run differs from a run without the resume (not a vacuous check)
        other = Searcher(ctx, SearchConfig(**{**kw, "seed": 5}), sparsity=0.5).run()
        assert not _same(other.masks[0.5], full.masks[0.5])
    rows = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps))  # rows logged after the checkpoint were dropped on resume


def test_search_outputs(tiny, tok, blocks, tmp_path):
    res = tamt.search(tiny, "tamt-kd", [0.5, 0.7], blocks, steps=4, tokenizer=tok, out=tmp_path, eval_every=2,
                      save_masks_at=(2,), **{**FAST, "tensorboard": True})
    for s in (0.5, 0.7):
        mf = tamt.load_mask(res.paths[s])
        assert _same(mf.masks, res.masks[s])
        md = mf.metadata
        assert md["method"] == "tamt-kd" and md["sparsity"] == s and md["step"] == 4 and md["seed"] == 0
        assert md["fingerprint"] == res.info["fingerprint"] and md["head_initialised"] is True
        assert (tmp_path / "masks" / "steps" / f"tamt-kd_s{s:.2f}_step2.safetensors").is_file()
    rows = [json.loads(x) for x in (tmp_path / "runs" / "tamt-kd-s0.50" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_kd_loss" in r for r in rows) and any("kd_loss" in r for r in rows)
    assert list((tmp_path / "runs" / "tamt-kd-s0.50" / "tb").iterdir())
    assert res.timings[0.5]["steps"] == 4 and res.timings[0.5]["search_s"] > 0
    # the result applies to a fresh copy of the model (fingerprint matches)
    tamt.apply_mask(tiny.__class__(tiny.config), res.paths[0.5], ignore_fingerprint=True)
    assert json.loads((tmp_path / "result.json").read_text())["method"] == "tamt-kd"


def test_imp_yields_every_intermediate_sparsity(tiny, tok, blocks, tmp_path):
    res = tamt.search(tiny, "imp", [0.2, 0.35], blocks, imp_interval=2, tokenizer=tok, out=tmp_path, **FAST)
    assert sorted(res.intermediate) == pytest.approx([0.1, 0.2, 0.3, 0.35])
    assert sorted(res.masks) == pytest.approx([0.2, 0.35])
    assert res.timings[0.2]["steps"] == 2 and res.timings[0.35]["steps"] == 6
    assert len(list((tmp_path / "masks").glob("imp_s*.safetensors"))) == 4


def test_evaluate_pretraining(tiny, tok, blocks, tmp_path):
    res = tamt.search(tiny, "omp", 0.5, blocks, tokenizer=tok, out=tmp_path, **FAST)
    dense = tamt.evaluate_pretraining(tiny, None, blocks, tokenizer=tok, batches=2, batch_size=8, head_fit_steps=5,
                                      head_cache=tmp_path)
    sparse = tamt.evaluate_pretraining(tiny, res.paths[0.5], blocks, tokenizer=tok, batches=2, batch_size=8,
                                       head_fit_steps=5, head_cache=tmp_path)
    assert dense["kd_loss"] == pytest.approx(0.0, abs=1e-5)  # the dense model is its own teacher
    assert sparse["kd_loss"] > 1e-3 and sparse["sparsity"] == pytest.approx(0.5, abs=1e-3)
    for r in (dense, sparse):
        assert 0 < r["mlm_loss"] < 20 and 0 <= r["mlm_accuracy"] <= 1 and r["head_fit_steps"] == 5
    assert (tmp_path / "mlm_head.pt").is_file()


# ---------------------------------------------------------------------------
# bad inputs


def test_bad_inputs(tiny, tok, blocks, tmp_path):
    with pytest.raises(ValueError, match="unknown search method"):
        tamt.search(tiny, "magic", 0.5, blocks, tokenizer=tok, **FAST)
    for s in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            tamt.search(tiny, "omp", s, blocks, tokenizer=tok, **FAST)
    with pytest.raises(ValueError, match="give steps or epochs"):
        tamt.search(tiny, "tamt-kd", 0.5, blocks, tokenizer=tok, **FAST)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="(?i)empty|no .*text|not enough|no documents"):
        tamt.search(tiny, "tamt-kd", 0.5, str(empty), steps=2, tokenizer=tok, **FAST)
    from datasets import Dataset

    with pytest.raises(ValueError, match="empty"):
        tamt.search(tiny, "omp", 0.5, {"train": Dataset.from_dict({"input_ids": [], "attention_mask": []})},
                    tokenizer=tok, **FAST)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tamt.search(tiny, "omp", 0.5, str(tmp_path / "nope.txt"), tokenizer=tok, **FAST)
    with pytest.raises(FileNotFoundError):
        tamt.search(str(tmp_path / "no_model_here/"), "omp", 0.5, blocks, tokenizer=tok, **FAST)
    with pytest.raises(ValueError, match="fewer than one batch"):
        tamt.search(tiny, "tamt-kd", 0.5, {"train": blocks["train"].select(range(3)),
                                           "validation": blocks["validation"]}, steps=2, tokenizer=tok, **FAST)


def test_model_without_target_matrices_is_rejected(tok, blocks):
    from transformers import GPT2Config, GPT2Model

    gpt = GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=200, n_positions=64))
    with pytest.raises(ValueError, match="no TAMT target matrices|not a supported"):
        tamt.search(gpt, "omp", 0.5, blocks, tokenizer=tok, **FAST)


# ---------------------------------------------------------------------------
# CLI


def _cli(*args):
    from tamt.cli import main

    return main(list(map(str, args)))


def test_cli_search_info_eval(tiny_dir, tiny_text, tmp_path, capsys):
    out = tmp_path / "run"
    rc = _cli("search", "--model", tiny_dir, "--method", "tamt-kd", "--sparsity", 0.5, 0.7, "--corpus", tiny_text,
              "--steps", 3, "--out", out, "--block-size", 32, "--batch-size", 8, "--no-progress")
    assert rc == 0
    mask = out / "masks" / "tamt-kd_s0.70.safetensors"
    assert mask.is_file() and (out / "masks" / "tamt-kd_s0.50.safetensors").is_file()
    capsys.readouterr()
    assert _cli("info", mask) == 0
    txt = capsys.readouterr().out
    assert "tamt-kd" in txt and "overall" in txt and "0.7000" in txt
    assert _cli("eval-pretrain", "--model", tiny_dir, "--mask", mask, "--corpus", tiny_text, "--block-size", 32,
                "--batch-size", 8, "--batches", 2, "--head-fit-steps", 3, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["kd_loss"] > 0 and rows[0]["sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert _cli("search", "--model", tiny_dir, "--method", "omp", "--sparsity", 1.2, "--corpus", tiny_text,
                "--out", out) == 1
    assert "[0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli("search", "--method", "nope", "--sparsity", 0.5)


def test_cli_help_explains_options(capsys):
    with pytest.raises(SystemExit):
        _cli("search", "--help")
    txt = capsys.readouterr().out
    for opt in ("--method", "--sparsity", "--corpus", "--steps", "--epochs", "--out", "--preset", "--resume",
                "--threshold-mode", "--score-init", "--imp-interval", "cpu-small", "paper"):
        assert opt in txt


def test_cli_killed_run_resumes_to_the_same_mask(tiny_dir, tiny_text, tmp_path):
    """Kill a CLI search with SIGKILL after its first checkpoint; --resume ends at the uninterrupted mask."""
    args = ["--model", tiny_dir, "--method", "tamt-mlm", "--sparsity", 0.5, "--corpus", tiny_text, "--steps", 40,
            "--block-size", 32, "--batch-size", 8, "--checkpoint-every", 5, "--head-fit-steps", 3, "--lr", 0.02,
            "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "import sys; from tamt.cli import main; sys.exit(main())", "search"]
    full = tmp_path / "full"
    subprocess.run(cmd + [*map(str, args), "--out", str(full)], env=env, check=True, capture_output=True, timeout=300)
    part = tmp_path / "part"
    proc = subprocess.Popen(cmd + [*map(str, args), "--out", str(part)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = part / "runs" / "tamt-mlm-s0.50" / "checkpoint.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run ended before writing a checkpoint"
    killed_at = torch.load(ckpt, weights_only=False)["step"]
    assert killed_at < 40, "the run was not interrupted"
    assert not (part / "masks" / "tamt-mlm_s0.50.safetensors").exists()
    subprocess.run(cmd + [*map(str, args), "--out", str(part), "--resume"], env=env, check=True, capture_output=True,
                   timeout=300)
    a = tamt.load_mask(full / "masks" / "tamt-mlm_s0.50.safetensors")
    b = tamt.load_mask(part / "masks" / "tamt-mlm_s0.50.safetensors")
    assert _same(a.masks, b.masks)
