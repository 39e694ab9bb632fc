"""SearchConfig(compile=...): the search step under torch.compile computes what the eager step computes."""
from __future__ import annotations

import pytest
import torch
from pruning_helpers import FAST

from tamt.nn import get_masks
from tamt.pruning import SearchConfig, Searcher
from tamt.pruning.context import prepare


def _run(ctx, compile_mode, steps=4):
    cfg = SearchConfig(method="tamt-kd", sparsities=(0.5,), steps=steps, lr=2e-2, dropout=False, compile=compile_mode,
                       **FAST)
    s = Searcher(ctx, cfg, sparsity=0.5)
    losses = [s.step()["loss"] for _ in range(steps)]
    return s, losses


def test_compile_option_is_checked():
    with pytest.raises(ValueError, match="compile must be one of"):
        SearchConfig(method="tamt-kd", compile="fast")


@pytest.mark.slow
def test_compiled_search_step_matches_eager(tiny, tok, blocks):
    import torch._dynamo

    ctx = prepare(tiny, blocks, tokenizer=tok)
    eager, want = _run(ctx, "none")
    torch._dynamo.reset()
    traced, got = _run(ctx, "aot_eager")  # the captured graphs, run op by op: the same arithmetic
    assert got == want
    for k, m in get_masks(eager.model).items():
        assert torch.equal(get_masks(traced.model)[k], m), k
    torch._dynamo.reset()
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    inductor, got = _run(ctx, "default")  # inductor: generated C++ for everything around the masked ops
    graphs_after_first = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs_after_first > frames, "torch.compile captured nothing"
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=1e-6)
    # thresholds change every step (buffers, read as graph inputs): no recompilation after the first step
    inductor.step_count = 0
    inductor.total_steps = 6
    inductor.step()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs_after_first
