"""Bad input and faults through the command line (issue 12): one-line errors, exit codes, nothing overwritten.

All cases run through ``tamt.cli.main`` in ONE subprocess (tests/_cli_driver.py: each new process pays
seconds of imports); the driver reports per case the exit code, stdout, stderr and whether a watched folder
changed.  One case also runs as its own ``python -m tamt.cli`` process to check the real exit status.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _fs import read_only_folder, tree_digest

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the of and to a in is was for on that with as by it at from his he an be are were this which or had "
         "first one their its new after who they have her she two been other when there all during into school "
         "time may years more most only over city some world would where later up such used many can state").split()
SMALL = ["--block-size", "32", "--batch-size", "8", "--no-progress"]


class _Stop(Exception):
    pass


def _stop_at(step):
    def cb(searcher, event, payload):
        if event == "step" and payload["step"] == step:
            raise _Stop
    return cb


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs, finished / interrupted / locked run folders, then every case through the driver."""
    import torch

    import tamt
    from tamt.io import folder_lock
    from tamt.models import tiny_model, tiny_tokenizer

    w = tmp_path_factory.mktemp("cli")
    tiny = w / "tiny"
    tiny_model("bert", seed=0).save_pretrained(tiny)
    tiny_tokenizer().save_pretrained(tiny)
    rng = random.Random(1)
    corpus = w / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(60)) for _ in range(300)) + "\n")
    oneline = w / "oneline.txt"
    oneline.write_text(" ".join(rng.choice(WORDS) for _ in range(3000)) + "\n")
    trunc = w / "trunc"
    shutil.copytree(tiny, trunc)
    (trunc / "model.safetensors").write_bytes((tiny / "model.safetensors").read_bytes()[:20000])
    nan = w / "nan"
    m = tiny_model("bert", seed=0)
    with torch.no_grad():
        m.encoder.layer[1].attention.self.value.weight[3, 5] = float("nan")
    m.save_pretrained(nan)
    tiny_tokenizer().save_pretrained(nan)
    (w / "afile").write_text("not a folder")
    sys.path.insert(0, str(REPO / "tests" / "finetune"))
    import fixtures as fx

    fx.write_sst2(w / "glue", n_train=39, n_dev=20)
    (w / "glue_h" / "SST-2").mkdir(parents=True)
    (w / "glue_h" / "SST-2" / "train.tsv").write_text("sentence\tlabel\n")
    shutil.copy(w / "glue" / "SST-2" / "dev.tsv", w / "glue_h" / "SST-2" / "dev.tsv")
    (w / "sweep.json").write_text(json.dumps({"model": str(tiny), "methods": ["omp"], "tasks": ["sst2"]}))

    # runs made in-process with the options the CLI cases pass (search: 8 steps, checkpoint every 2)
    kw = dict(steps=8, checkpoint_every=2, lr=0.02, block_size=32, batch_size=8, progress=False)
    cli_kw = ["--steps", "8", "--checkpoint-every", "2", "--lr", "0.02"]
    full = w / "full"
    tamt.search(str(tiny), "tamt-kd", 0.5, str(corpus), out=full, **kw)
    part = w / "part"
    with pytest.raises(_Stop):
        tamt.search(str(tiny), "tamt-kd", 0.5, str(corpus), out=part, callbacks=[_stop_at(5)], **kw)
    for name in ("part_lr", "part_ok", "part_bad"):
        shutil.copytree(part, w / name)
    (w / "part_ok" / "runs" / "tamt-kd-s0.50" / ".checkpoint.pt.q1w2e3r4.tmp").write_bytes(b"")  # SIGKILL mid-write
    ck = w / "part_bad" / "runs" / "tamt-kd-s0.50" / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    omp = tamt.search(str(tiny), "omp", 0.5, str(corpus), out=w / "omp", block_size=32, batch_size=8, progress=False)
    masks = [str(full / "masks" / "tamt-kd_s0.50.safetensors"), omp.paths[0.5]]
    locked = w / "locked"
    locked.mkdir()
    (locked / "keep.txt").write_text("mine")

    ro_ok = True
    ro = w / "ro"
    try:
        ro_ctx = read_only_folder(ro)
        ro_ctx.__enter__()
    except pytest.skip.Exception:
        ro_ok, ro_ctx = False, None

    t, c = ["--model", str(tiny)], ["--corpus", str(corpus)]
    ft = ["finetune", "--model", str(tiny), "--task", "sst2", "--data", str(w / "glue"), "--max-steps", "2",
          "--batch-size", "8", "--no-progress"]
    offline = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"]
    cases = [
        # ``--no-progress`` turns the datasets bars off for the whole process: its control case comes first
        dict(name="bars_shown", argv=["search", *t, *c, "--method", "omp", "--sparsity", "0.5", "--block-size", "24",
                                      "--out", str(w / "bars1")], env={"TAMT_CACHE": str(w / "cache1")}),
        dict(name="bars_silenced", argv=["search", *t, *c, "--method", "omp", "--sparsity", "0.5", "--block-size",
                                         "24", "--no-progress", "--out", str(w / "bars2")],
             env={"TAMT_CACHE": str(w / "cache2")}),
        dict(name="max_blocks0", argv=["search", *t, *c, "--method", "omp", "--sparsity", "0.5", "--max-blocks", "0",
                                       "--out", str(w / "x1")]),
        dict(name="truncated", argv=["search", "--model", str(trunc), *c, "--method", "omp", "--sparsity", "0.5",
                                     *SMALL, "--out", str(w / "x2")]),
        dict(name="hub_unreachable", argv=["search", "--model", "tamt-tests/no-such-model", *c, "--method", "omp",
                                           "--sparsity", "0.5", "--out", str(w / "x3")],
             unset=offline, env={"HF_ENDPOINT": "http://127.0.0.1:9"}),
        dict(name="steps0", argv=["search", *t, *c, "--method", "tamt-kd", "--sparsity", "0.5", "--steps", "0",
                                  "--out", str(w / "x4")]),
        dict(name="corrupt_checkpoint", argv=["search", *t, *c, "--method", "tamt-kd", "--sparsity", "0.5", *SMALL,
                                              *cli_kw, "--resume", "--out", str(w / "part_bad")],
             watch=[str(w / "part_bad")]),
        dict(name="resume_other_args", argv=["search", *t, *c, "--method", "tamt-kd", "--sparsity", "0.5", *SMALL,
                                             *cli_kw, "--resume", "--lr", "0.001", "--seed", "5",
                                             "--out", str(w / "part_lr")], watch=[str(w / "part_lr")]),
        dict(name="resume_harmless", argv=["search", *t, *c, "--method", "tamt-kd", "--sparsity", "0.5", *SMALL,
                                           *cli_kw, "--resume", "--checkpoint-every", "3", "--device", "cpu",
                                           "--keep-checkpoint", "--out", str(w / "part_ok")], umask=0o027),
        dict(name="other_method", argv=["search", *t, *c, "--method", "omp", "--sparsity", "0.5", *SMALL,
                                        "--out", str(full)], watch=[str(full)]),
        dict(name="other_model", argv=["search", "--model", "nosuchmodel", *c, "--method", "tamt-mlm", "--sparsity",
                                       "0.9", "--out", str(full)], watch=[str(full)]),
        dict(name="one_line_corpus", argv=["search", *t, "--corpus", str(oneline), "--method", "omp", "--sparsity",
                                           "0.5", *SMALL, "--out", str(w / "x5")]),
        dict(name="one_line_corpus_vf0", argv=["search", *t, "--corpus", str(oneline), "--method", "omp",
                                               "--sparsity", "0.5", *SMALL, "--validation-fraction", "0",
                                               "--out", str(w / "x6")]),
        dict(name="nan_weights", argv=["search", "--model", str(nan), *c, "--method", "omp", "--sparsity", "0.5",
                                       *SMALL, "--out", str(w / "x7")]),
        dict(name="nan_at_step", argv=["search", *t, *c, "--method", "tamt-kd", "--sparsity", "0.5", *SMALL,
                                       "--steps", "4", "--checkpoint-every", "1", "--threshold-mode", "paper",
                                       "--lr", "inf", "--out", str(w / "x8")]),
        dict(name="locked_search", argv=["search", *t, *c, "--method", "omp", "--sparsity", "0.5", *SMALL,
                                         "--out", str(locked)], watch=[str(locked)]),
        dict(name="locked_finetune", argv=[*ft, "--out", str(locked)], watch=[str(locked)]),
        dict(name="locked_sweep", argv=["sweep", str(w / "sweep.json"), "--out", str(locked), "--no-progress"],
             watch=[str(locked)]),
        dict(name="compare_out_file", argv=["compare-masks", *masks, "--out", str(w / "afile")],
             watch=[str(w / "afile")]),
        dict(name="search_out_readonly", argv=["search", *t, *c, "--method", "omp", "--sparsity", "0.5",
                                               "--out", str(ro / "run")]),
        dict(name="ft_out_file", argv=[*ft, "--out", str(w / "afile")], watch=[str(w / "afile")]),
        dict(name="ft_out_readonly", argv=[*ft, "--out", str(ro / "x")]),
        dict(name="ft_header_only", argv=[*ft[:5], "--data", str(w / "glue_h"), *ft[7:]]),
        dict(name="ft_duplicate_seeds", argv=[*ft, "--seeds", "1,1"]),
        dict(name="ft_train_size0", argv=[*ft, "--train-size", "0"]),
        dict(name="ft_train_size_big", argv=[*ft, "--train-size", "1000", "--seeds", "1", "--seeds", "2",
                                             "--ignore-fingerprint", "--out", str(w / "ft")]),
        dict(name="ft_again", argv=[*ft, "--out", str(w / "ft")], watch=[str(w / "ft")]),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    (w / "cases.json").write_text(json.dumps(cases))
    try:
        with folder_lock(locked):  # held by this (pytest) process while the driver runs
            proc = subprocess.run([sys.executable, str(REPO / "tests" / "_cli_driver.py"), str(w / "cases.json"),
                                   str(w / "report.json")], env=env, capture_output=True, text=True, timeout=600)
    finally:
        if ro_ctx is not None:
            ro_ctx.__exit__(None, None, None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((w / "report.json").read_text())
    return {"dir": w, "report": report, "ro_ok": ro_ok, "masks": masks, "full": full}


def _error(world, name: str, command: str = "search") -> str:
    """The case failed with exit code 1 and one error line (no traceback); returns that line."""
    r = world["report"][name]
    assert r["rc"] == 1, (name, r["rc"], r["stderr"][-2000:])
    assert "Traceback" not in r["stderr"], r["stderr"]
    lines = [x for x in r["stderr"].splitlines() if x.strip()]
    assert lines[-1].startswith(f"tamt {command}: error: "), r["stderr"]
    assert not any(v for v in r["changed"].values()), (name, r["changed"])  # no pre-existing file changed
    return lines[-1]


def test_max_blocks_zero(world):
    assert "max_blocks must be >= 1" in _error(world, "max_blocks0")
    assert not (world["dir"] / "x1").exists()


def test_truncated_weights(world):
    msg = _error(world, "truncated")
    assert "trunc: could not load the weights" in msg and "truncated or corrupt" in msg
    assert not (world["dir"] / "x2").exists()


def test_hub_name_without_hub_fails_fast_with_advice(world):
    r = world["report"]["hub_unreachable"]
    msg = _error(world, "hub_unreachable")
    assert "not in the Hugging Face cache, and the hub is unreachable" in msg and "pass a local checkpoint" in msg
    assert len([x for x in r["stderr"].splitlines() if x.strip()]) == 1  # no retry warnings, no doubled lines
    assert r["seconds"] < 10  # (before: 26 s of retries)


def test_steps_zero_for_a_training_method(world):
    assert "tamt-kd trains: steps must be >= 1" in _error(world, "steps0")


def test_corrupt_checkpoint_names_the_file_and_the_fix(world):
    msg = _error(world, "corrupt_checkpoint")
    assert "part_bad/runs/tamt-kd-s0.50/checkpoint.pt is unreadable" in msg
    assert "delete it" in msg and "--overwrite" in msg


def test_resume_with_other_arguments_is_refused(world):
    msg = _error(world, "resume_other_args")
    assert "--resume: the run in" in msg and "lr: 0.02 -> 0.001" in msg and "seed: 0 -> 5" in msg
    assert "another --out" in msg and "--overwrite" in msg


def test_resume_with_harmless_changes_continues_to_the_same_mask(world):
    import tamt

    r = world["report"]["resume_harmless"]
    assert r["rc"] == 0, r["stderr"][-2000:]
    run = world["dir"] / "part_ok"
    a = tamt.load_mask(world["full"] / "masks" / "tamt-kd_s0.50.safetensors").masks
    b = tamt.load_mask(run / "masks" / "tamt-kd_s0.50.safetensors").masks
    assert all((a[k] == b[k]).all() for k in a)
    assert not list(run.rglob("*.tmp"))  # the stale temporary of the killed write is gone
    assert (run / "runs" / "tamt-kd-s0.50" / "checkpoint.pt").is_file()  # --keep-checkpoint
    assert not list(world["full"].rglob("checkpoint.pt"))  # ... without it a finished run drops it
    for p in (run / "result.json", run / "masks" / "tamt-kd_s0.50.safetensors"):
        assert p.stat().st_mode & 0o777 == 0o640  # umask 027 (mkstemp alone gives 0600)


def test_a_finished_run_is_not_overwritten(world):
    msg = _error(world, "other_method")
    assert "already holds a finished tamt-kd run; pass --resume to continue it, --overwrite to replace it" in msg
    msg = _error(world, "other_model")  # fails on its model: config.json of the finished run is untouched
    assert "'nosuchmodel' is not a local folder, not in the Hugging Face cache, and the hub is offline" in msg


def test_one_line_corpus_advice_names_an_option_that_exists(world):
    msg = _error(world, "one_line_corpus")
    assert "--validation-fraction 0" in msg
    assert world["report"]["one_line_corpus_vf0"]["rc"] == 0, world["report"]["one_line_corpus_vf0"]["stderr"]


def test_nan_weights_are_reported_as_such(world):
    msg = _error(world, "nan_weights")
    assert "contain NaN/Inf: bert.encoder.layer.1.attention.self.value.weight (1 value)" in msg
    assert "search diverged" not in msg and not (world["dir"] / "x7" / "masks").exists()


def test_divergence_is_caught_at_its_step(world):
    msg = _error(world, "nan_at_step")
    assert "search diverged at step 1: the optimizer step left NaN/Inf in bert.embeddings.word_embeddings.scores" \
        in msg
    assert not list((world["dir"] / "x8").rglob("checkpoint.pt")) and not (world["dir"] / "x8" / "masks").exists()


@pytest.mark.parametrize("case,command", [("locked_search", "search"), ("locked_finetune", "finetune"),
                                          ("locked_sweep", "sweep")])
def test_a_locked_folder_is_refused_with_the_holders_pid(world, case, command):
    msg = _error(world, case, command)
    assert f"another tamt process (pid {os.getpid()}) is using {world['dir'] / 'locked'}" in msg


def test_compare_masks_checks_out_before_printing(world):
    msg = _error(world, "compare_out_file", "compare-masks")
    assert "is a file, not a folder" in msg and world["report"]["compare_out_file"]["stdout"] == ""


@pytest.mark.parametrize("case,command", [("search_out_readonly", "search"), ("ft_out_readonly", "finetune")])
def test_read_only_out(world, case, command):
    if not world["ro_ok"]:
        pytest.skip("no read-only folder on this machine (root without chattr)")
    assert "is not writable" in _error(world, case, command)


def test_finetune_inputs(world):
    assert "is a file, not a folder" in _error(world, "ft_out_file", "finetune")
    assert "train.tsv: it has no data rows (only a header)" in _error(world, "ft_header_only", "finetune")
    assert "seed(s) 1 given more than once" in _error(world, "ft_duplicate_seeds", "finetune")
    assert "train_size must be a positive whole number, got 0" in _error(world, "ft_train_size0", "finetune")


def test_finetune_reports_a_train_size_beyond_the_split(world):
    r = world["report"]["ft_train_size_big"]
    assert r["rc"] == 0, r["stderr"][-2000:]
    assert "note: train_size 1000 is larger than the 39 examples of the train split: all 39 were used" in r["stdout"]
    res = json.loads((world["dir"] / "ft" / "result.json").read_text())
    assert res["notes"] and res["inputs"]["train_size_used"] == 39 and res["inputs"]["ignore_fingerprint"] is True
    assert res["config"]["seeds"] == [1, 2] and [s["seed"] for s in res["per_seed"]] == [1, 2]  # repeated --seeds
    assert "already holds a fine-tuning run" in _error(world, "ft_again", "finetune")


def test_no_progress_silences_the_datasets_bars(world):
    shown, silenced = world["report"]["bars_shown"], world["report"]["bars_silenced"]
    assert shown["rc"] == 0 and silenced["rc"] == 0, silenced["stderr"]
    assert "examples/s" in shown["stderr"]  # the control: a fresh corpus cache shows datasets' bars
    assert "examples/s" not in silenced["stderr"] and "it/s" not in silenced["stderr"]


def test_exit_status_and_debug_traceback(world, tmp_path):
    """A real process: exit status 1 and one line; TAMT_DEBUG=1 shows the traceback."""
    args = [sys.executable, "-m", "tamt.cli", "search", "--method", "omp", "--sparsity", "0.5",
            "--out", str(world["dir"] / "afile")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = tree_digest(world["dir"] / "afile")
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"tamt search: error: --out {world['dir'] / 'afile'} is a file, not a folder; pass a folder (it is created "
        "when missing)"]
    assert tree_digest(world["dir"] / "afile") == before
    from tamt.cli import main

    os.environ["TAMT_DEBUG"] = "1"
    try:
        with pytest.raises(ValueError, match="is a file"):
            main(args[3:])
    finally:
        del os.environ["TAMT_DEBUG"]


def test_seeds_argument_forms():
    from tamt.cli import build_parser

    p = build_parser()
    base = ["finetune", "--task", "sst2"]
    for form in (["--seeds", "1", "2"], ["--seeds", "1,2"], ["--seeds", "1,", "2"], ["--seeds", "1", "--seeds", "2"]):
        assert p.parse_args(base + form).seeds == [1, 2], form
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--seeds", "one"])
