"""NaN/Inf: caught at the step where it appears (every threshold mode), never checkpointed, named by module."""
from __future__ import annotations

import pytest
import torch
from pruning_helpers import FAST

import tamt
from tamt.pruning import SearchConfig, Searcher, prepare
from tamt.pruning.numerics import NonFiniteError, StepGuard


@pytest.fixture(scope="module")
def ctx(tiny, tok, blocks):
    return prepare(tiny, blocks, tokenizer=tok)


def _searcher(ctx, tmp_path, **kw):
    cfg = dict(method="tamt-kd", sparsities=(0.5,), steps=8, checkpoint_every=1, lr=1e-2, **FAST)
    cfg.update(kw)
    return Searcher(ctx, SearchConfig(**cfg), sparsity=0.5, run_dir=tmp_path / "run", mask_dir=tmp_path / "masks")


def _checkpoint(tmp_path) -> dict:
    return torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)


def _finite(state: dict) -> bool:
    """Every weight / score in a checkpoint is finite (thresholds of fixed masks are -inf by design)."""
    return all(bool(torch.isfinite(v).all()) for k, v in state.items()
               if torch.is_tensor(v) and v.is_floating_point() and not k.endswith(".threshold"))


@pytest.mark.parametrize("mode", ["exact", "paper"])
def test_nan_loss_stops_the_step_it_appears_in(ctx, tmp_path, mode):
    s = _searcher(ctx, tmp_path, threshold_mode=mode, reset_interval=100)
    module = dict(s.model.named_modules())["bert.encoder.layer.1.output.dense"]
    module.register_forward_hook(lambda m, i, o: o * float("nan") if s.step_count == 4 else None)
    with pytest.raises(NonFiniteError, match=r"search diverged at step 5: the loss is nan; NaN/Inf gradients in "
                                             r"bert\.[a-z0-9_.]+\.scores"):
        s.run()
    assert s.step_count == 4 and not s.finished
    ck = _checkpoint(tmp_path)
    assert ck["step"] == 4 and _finite(ck["strategy"])  # the checkpoint on disk is the clean step-4 state
    assert all(bool(torch.isfinite(m.scores).all()) for _, m in tamt.nn.masked_modules(s.model))  # not applied
    assert not (tmp_path / "masks").exists()


@pytest.mark.parametrize("mode", ["exact", "paper"])
def test_nan_score_is_named_at_the_next_step(ctx, tmp_path, mode):
    """A NaN score does not show in the loss (the forward uses the binary mask): the fused norm finds it."""
    s = _searcher(ctx, tmp_path, threshold_mode=mode, reset_interval=100)

    def poison(searcher, event, metrics):  # after step 3 and its checkpoint
        if event == "step" and metrics["step"] == 3:
            with torch.no_grad():
                dict(searcher.model.named_parameters())["bert.encoder.layer.0.attention.self.query.scores"][2, 7] = \
                    float("nan")

    s.callbacks.append(poison)
    with pytest.raises(NonFiniteError, match=r"search diverged at step 4: the optimizer step left NaN/Inf in "
                                             r"bert\.encoder\.layer\.0\.attention\.self\.query\.scores \(1 value\)"):
        s.run()
    ck = _checkpoint(tmp_path)
    assert ck["step"] == 3 and _finite(ck["strategy"])


def test_imp_nan_gradient_names_the_weight(ctx, tmp_path):
    s = _searcher(ctx, tmp_path, method="imp", steps=None, imp_interval=3, sparsities=(0.2,))
    w = dict(s.model.named_parameters())["bert.encoder.layer.1.attention.self.key.weight"]
    w.register_hook(lambda g: g * float("inf") if s.step_count == 1 else g)
    with pytest.raises(NonFiniteError, match=r"at step 2: the gradient is NaN/Inf; NaN/Inf gradients in "
                                             r"bert\.encoder\.layer\.1\.attention\.self\.key\.weight \(1024 values\)"):
        s.run()
    assert _checkpoint(tmp_path)["step"] == 1 and _finite(_checkpoint(tmp_path)["strategy"]["model"])


def test_guard_ignores_an_overflowing_norm_of_finite_values():
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.full((4,), 1e30)
    StepGuard(torch.nn.Linear(1, 1)).before_update(1, 0.5, [p], torch.tensor(float("inf")))  # no error
    p.grad[1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"a tensor of shape \(4,\) \(1 value\)"):
        StepGuard(torch.nn.Linear(1, 1)).before_update(1, 0.5, [p], torch.tensor(float("inf")))


@pytest.mark.parametrize("method", ["omp", "random", "tamt-kd"])
def test_nan_weights_are_refused_as_such(tok, blocks, method):
    from tamt.models import tiny_model

    bad = tiny_model("bert", seed=0)
    with torch.no_grad():
        bad.encoder.layer[1].attention.self.value.weight[3, 5] = float("nan")
        bad.encoder.layer[0].intermediate.dense.weight[0, :2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"weights of .* contain NaN/Inf: .*encoder\.layer\.0\.intermediate\.dense"
                                             r"\.weight \(2 values\), .*encoder\.layer\.1\.attention\.self\.value"
                                             r"\.weight \(1 value\); the checkpoint is corrupt"):
        tamt.search(bad, method, 0.5, blocks, tokenizer=tok, steps=None if method != "tamt-kd" else 2, **FAST)
