"""Run folders: argument-bound --resume, one run per folder, --overwrite, finished runs, checkpoint hygiene."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import pytest
import torch
from pruning_helpers import FAST

import tamt
import tamt.pruning.config as config_module
from tamt.pruning import SearchConfig
from tamt.pruning.run_dir import HARMLESS, claim, config_differences, differences, run_identity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _fs import tree_digest  # noqa: E402

BASE = dict(method="tamt-kd", sparsities=(0.5,), steps=8)


def _string_choices(current=None) -> list[str]:
    """Every string listed in a tuple constant of the config module (METHODS, THRESHOLD_MODES, ...),
    those of the tuple holding ``current`` first (the field's own choices)."""
    out = []
    for v in vars(config_module).values():
        if isinstance(v, tuple) and v and all(isinstance(x, str) for x in v):
            out = list(v) + out if current in v else out + list(v)
    return out + ["bf16", "none", "cpu", "cuda"]


def changed_values(field: dataclasses.Field, current) -> list:
    """Valid-looking values different from ``current``, from the field's type, default and choices.

    Derived from the annotation, so fields added later (by any engineer) are covered without editing this test.
    """
    ann = str(field.type)
    cands: list = []
    if "bool" in ann:
        cands += [not current]
    if "int" in ann:
        cands += [(current or 0) + 1, (current or 0) + 3, 1]
    if "float" in ann:
        cands += [round((current or 0.0) * 2 + 0.125, 6), 0.25, 0.5]
    if "str" in ann:
        cands += _string_choices(current) + [f"{current}-x"]
    if "tuple" in ann or isinstance(current, tuple):
        cands += [(0.25,), (0.25, 0.75), (3,), (2, 4), ("x",)]
    if "None" in ann or field.default is None:
        cands += [None]
    return [c for c in cands if c != current and not (isinstance(c, bool) != isinstance(current, bool)
                                                      and current is not None and c is not None)]


def _a_changed_config(name: str) -> tuple[dict, dict]:
    """(old resolved config, new resolved config) differing in ``name`` only (and what it implies)."""
    base = SearchConfig(**BASE)
    field = next(f for f in dataclasses.fields(SearchConfig) if f.name == name)
    current = getattr(base.resolved(), name)
    for value in changed_values(field, current):
        for others in (BASE, {k: v for k, v in BASE.items() if k != "steps"}):  # (epochs excludes steps)
            try:
                new = SearchConfig(**{**others, name: value})
            except (TypeError, ValueError):
                continue
            if getattr(new.resolved(), name) != current:
                return base.resolved().to_dict(), new.resolved().to_dict()
    raise AssertionError(f"no valid changed value for SearchConfig.{name} (type {field.type}); extend "
                         "changed_values() in this test")


RESULT_CHANGING = [f.name for f in dataclasses.fields(SearchConfig) if f.name not in HARMLESS]


def test_allowlist_names_real_fields():
    assert HARMLESS <= {f.name for f in dataclasses.fields(SearchConfig)}
    assert {"lr", "seed", "steps", "method", "sparsities", "threshold_mode", "eval_every"} <= set(RESULT_CHANGING)


@pytest.mark.parametrize("name", RESULT_CHANGING)
def test_every_result_changing_field_is_refused_on_resume(name, tmp_path):
    """For EVERY SearchConfig field outside the allowlist, a changed value on --resume is refused."""
    old, new = _a_changed_config(name)
    diffs = config_differences(old, new)
    assert name in [k for k, _, _ in diffs]
    ident = {"format": 1, "config": old, "model": {"fingerprint": "f"}, "corpus": None}
    (tmp_path / "run.json").write_text(json.dumps(ident))
    before = tree_digest(tmp_path)
    with pytest.raises(ValueError, match=rf"--resume: .*\b{name}: .* -> "):
        claim(tmp_path, {**ident, "config": new}, resume=True, overwrite=False)
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("name", sorted(HARMLESS))
def test_harmless_fields_may_change_on_resume(name, tmp_path):
    base = SearchConfig(**BASE)
    field = next(f for f in dataclasses.fields(SearchConfig) if f.name == name)
    new = None
    for value in changed_values(field, getattr(base, name)):
        if value is None and name != "checkpoint_every":
            continue
        try:  # the first valid one (a string from another field's choices may be refused)
            new = dataclasses.replace(base, **{name: value})
            break
        except (TypeError, ValueError):
            continue
    assert new is not None, f"no valid changed value for SearchConfig.{name}"
    ident = {"config": base.resolved().to_dict()}
    (tmp_path / "run.json").write_text(json.dumps(ident))
    assert config_differences(base.resolved().to_dict(), new.resolved().to_dict()) == []
    assert claim(tmp_path, {"config": new.resolved().to_dict()}, resume=True, overwrite=False) == "resume"


def test_random_combinations_of_changes(tmp_path):
    """Any mix of changes is refused exactly when it holds a result-changing field, and the message names them all."""
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies
    base = SearchConfig(**BASE).resolved().to_dict()
    changed = {name: _a_changed_config(name)[1] for name in RESULT_CHANGING}
    harmless = {"progress": False, "tensorboard": False, "device": "cpu", "checkpoint_every": 7, "log_every": 3,
                "keep_checkpoint": True, "compile": "aot_eager"}
    assert set(harmless) == HARMLESS

    @hyp.settings(max_examples=60, deadline=None, derandomize=True)
    @hyp.given(st.sets(st.sampled_from(RESULT_CHANGING)), st.sets(st.sampled_from(sorted(HARMLESS))))
    def check(bad, good):
        new = dict(base)
        for name in bad:
            new[name] = changed[name][name]
        for name in good:
            new[name] = harmless[name]
        keys = {k for k, _, _ in config_differences(base, new)}
        assert bad <= keys and not keys & HARMLESS  # (a change may imply others, e.g. method -> lr)
        assert bool(keys) == bool(bad)

    check()


def test_fields_missing_from_an_older_run_count_as_their_defaults():
    old = SearchConfig(**BASE).resolved().to_dict()
    old.pop("keep_checkpoint")
    old.pop("tie_break")  # written before the field existed: its default keeps the old behaviour
    assert config_differences(old, SearchConfig(**BASE).resolved().to_dict()) == []
    assert [k for k, _, _ in config_differences(old, SearchConfig(**BASE, tie_break=False).resolved().to_dict())] \
        == ["tie_break"]


def test_a_field_whose_default_changed_behaviour_counts_as_its_legacy_value():
    # runs written before the Philox CPU dropout existed drew torch's dropout: resuming them with the
    # new default (fast_dropout=True) would mix two random streams, so it is a change
    old = SearchConfig(**BASE).resolved().to_dict()
    old.pop("fast_dropout")
    assert [k for k, _, _ in config_differences(old, SearchConfig(**BASE).resolved().to_dict())] == ["fast_dropout"]
    assert config_differences(old, SearchConfig(**BASE, fast_dropout=False).resolved().to_dict()) == []


def test_model_and_corpus_identity_are_compared():
    cfg = SearchConfig(**BASE)
    corpus = {"spec": "a.txt", "train_blocks": 10, "validation_blocks": 2, "sample_sha": "abc"}
    a = run_identity(cfg, {"base_model": "m", "fingerprint": "f1"}, corpus)
    assert differences(a, a) == []
    assert differences(a, {**a, "corpus": {**corpus, "spec": "moved/a.txt"}}) == []  # where it lies does not matter
    b = run_identity(cfg, {"base_model": "m", "fingerprint": "f2"}, {**corpus, "sample_sha": "abd"})
    assert [k for k, _, _ in differences(a, b)] == ["model fingerprint", "corpus"]


# ---------------------------------------------------------------------------
# through tamt.search


class _Stop(Exception):
    pass


def _stop_at(sparsity, step):
    def cb(searcher, event, payload):
        if event == "step" and searcher.sparsity == sparsity and payload["step"] == step:
            raise _Stop
    return cb


def test_search_resume_is_bound_to_its_arguments(tiny, tok, blocks, tmp_path):
    kw = dict(tokenizer=tok, steps=8, lr=2e-2, checkpoint_every=2, **FAST)
    full = tamt.search(tiny, "tamt-kd", [0.5, 0.7], blocks, out=tmp_path / "full", **kw)
    assert not list((tmp_path / "full").rglob("checkpoint.pt"))  # a finished run keeps no checkpoint ...
    part = tmp_path / "part"
    with pytest.raises(_Stop):  # interrupted in s=0.70, after its checkpoint at step 4
        tamt.search(tiny, "tamt-kd", [0.5, 0.7], blocks, out=part, callbacks=[_stop_at(0.7, 5)], **kw,
                    keep_checkpoint=True)
    assert (part / "runs" / "tamt-kd-s0.50" / "checkpoint.pt").is_file()  # ... unless asked to
    (part / "runs" / "tamt-kd-s0.50" / "checkpoint.pt").unlink()  # as without keep_checkpoint: done.json remains
    ck = torch.load(part / "runs" / "tamt-kd-s0.70" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 4
    before = tree_digest(part)
    for change, key in ((dict(lr=1e-3), "lr"), (dict(seed=5), "seed"), (dict(steps=12), "steps"),
                        (dict(threshold_mode="paper"), "threshold_mode"), (dict(eval_every=2), "eval_every")):
        with pytest.raises(ValueError, match=rf"--resume: .*{key}: "):
            tamt.search(tiny, "tamt-kd", [0.5, 0.7], blocks, out=part, resume=True, **{**kw, **change})
    with pytest.raises(ValueError, match="sparsities: "):
        tamt.search(tiny, "tamt-kd", [0.5], blocks, out=part, resume=True, **kw)
    with pytest.raises(ValueError, match="corpus: "):
        tamt.search(tiny, "tamt-kd", [0.5, 0.7], {"train": blocks["train"].select(range(64)),
                                                   "validation": blocks["validation"]}, out=part, resume=True, **kw)
    with pytest.raises(ValueError, match="already holds an unfinished tamt-kd run; pass --resume"):
        tamt.search(tiny, "omp", 0.5, blocks, out=part, tokenizer=tok, **FAST)
    assert tree_digest(part) == before  # nothing written by the refused commands
    part.joinpath("runs", "tamt-kd-s0.70", ".checkpoint.pt.a1b2c3d4.tmp").write_bytes(b"")  # SIGKILL mid-write
    ran = []
    done = tamt.search(tiny, "tamt-kd", [0.5, 0.7], blocks, out=part, resume=True,
                       callbacks=[lambda sr, event, m: ran.append((sr.sparsity, m["step"])) if event == "step" else 0],
                       **{**kw, "checkpoint_every": 3, "log_every": 1, "device": "cpu"})  # harmless changes
    assert ran == [(0.7, 5), (0.7, 6), (0.7, 7), (0.7, 8)]  # s=0.50 read back, s=0.70 continued at step 5
    for s in (0.5, 0.7):
        assert all(torch.equal(done.masks[s][k], full.masks[s][k]) for k in full.masks[s])
    assert done.timings[0.5]["steps"] == 8  # s=0.50 was read back from its done.json, not redone:
    assert [(r["step"], r["loss"]) for r in done.history[0.5]] == [(r["step"], r["loss"]) for r in full.history[0.5]]
    assert not list(part.rglob("*.tmp")) and not list(part.rglob("checkpoint.pt"))
    assert json.loads((part / "config.json").read_text())["lr"] == 2e-2
    # a finished run resumes to its result without running again; a fresh command needs --overwrite
    again = tamt.search(tiny, "tamt-kd", [0.5, 0.7], blocks, out=part, resume=True, **kw)
    assert again.paths == done.paths
    with pytest.raises(ValueError, match="already holds a finished tamt-kd run"):
        tamt.search(tiny, "tamt-kd", [0.5, 0.7], blocks, out=part, **kw)
    with pytest.raises(ValueError, match="pass one of them"):
        tamt.search(tiny, "omp", 0.5, blocks, out=part, resume=True, overwrite=True, tokenizer=tok, **FAST)
    omp = tamt.search(tiny, "omp", 0.5, blocks, out=part, overwrite=True, tokenizer=tok, **FAST)
    assert sorted(p.name for p in (part / "masks").iterdir()) == ["omp_s0.50.safetensors"] and omp.paths
    assert json.loads((part / "result.json").read_text())["method"] == "omp"


def test_searcher_resume_refuses_a_checkpoint_of_other_settings(tiny, tok, blocks, tmp_path):
    from tamt.pruning import Searcher, prepare

    ctx = prepare(tiny, blocks, tokenizer=tok)
    kw = dict(method="tamt-kd", sparsities=(0.5,), steps=4, checkpoint_every=2, **FAST)
    Searcher(ctx, SearchConfig(**kw), sparsity=0.5, run_dir=tmp_path).run(max_steps=2)
    with pytest.raises(ValueError, match=r"other settings that change the result \(lr: "):
        Searcher(ctx, SearchConfig(**kw, lr=0.5), sparsity=0.5, run_dir=tmp_path, resume=True)
    assert Searcher(ctx, SearchConfig(**{**kw, "progress": True}), sparsity=0.5, run_dir=tmp_path,
                    resume=True).step_count == 2


def test_folder_with_foreign_files(tiny, tok, blocks, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    tamt.search(tiny, "omp", 0.5, blocks, out=tmp_path, tokenizer=tok, **FAST)  # other files: fine
    assert (tmp_path / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"model": "not a tamt run"}')
    with pytest.raises(ValueError, match="no tamt search run"):
        tamt.search(tiny, "omp", 0.5, blocks, out=other, tokenizer=tok, **FAST)
    assert (other / "config.json").read_text() == '{"model": "not a tamt run"}'


def test_steps_zero_is_refused_for_training_methods():
    for m in ("tamt-kd", "tamt-mlm", "imp"):
        with pytest.raises(ValueError, match="steps must be >= 1"):
            SearchConfig(method=m, steps=0)
    assert SearchConfig(method="omp", steps=0).steps == 0
    with pytest.raises(ValueError, match="max_blocks must be >= 1"):
        SearchConfig(method="omp", max_blocks=0)


def test_annotation_based_generator_covers_a_new_field():
    """A field another engineer adds later is covered by the property test without editing it."""
    @dataclasses.dataclass
    class Later(SearchConfig):
        optimizer: str = "adamw"
        nm_structure: tuple = ()
        frozen_head: bool = False
        paper_warmup: int | None = None

    for f in dataclasses.fields(Later)[-4:]:
        assert changed_values(f, f.default), f.name


# ---------------------------------------------------------------------------
# under torchrun only rank 0 takes the folder: the other ranks must learn of a refusal, not wait forever


def _ddp_worker(rank, world, init_file, out, report):
    import torch.distributed as dist

    from pruning_helpers import make_blocks
    from tamt.models import tiny_model, tiny_tokenizer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        tok = tiny_tokenizer()
        tamt.search(tiny_model("bert", seed=0), "random", 0.5, make_blocks(tok), tokenizer=tok, out=out, **FAST)
        msg = "no error"
    except Exception as exc:  # reported to the test
        msg = f"{type(exc).__name__}: {exc}"
    finally:
        dist.destroy_process_group()
    Path(f"{report}.{rank}").write_text(msg)


@pytest.mark.slow
def test_a_refusal_on_rank0_stops_every_rank(tiny, tok, blocks, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "run"
    tamt.search(tiny, "omp", 0.5, blocks, out=out, tokenizer=tok, **FAST)
    ctx = mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(out), str(tmp_path / "report")),
                             nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    try:
        while not ctx.join(timeout=5):  # returns after each process that ends; True once all have
            assert time.monotonic() < deadline, "a rank did not finish: it waits for the other"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    r0, r1 = ((tmp_path / f"report.{r}").read_text() for r in (0, 1))
    assert r0.startswith("ValueError: ") and "already holds a finished omp run" in r0
    assert r1.startswith("RuntimeError: rank 0 stopped the run: ValueError: ") and "already holds" in r1
