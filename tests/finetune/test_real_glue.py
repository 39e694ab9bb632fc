"""On the real GLUE files (../shared/data/glue) and the embedded small model; skipped when absent."""
from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="module")
def glue_root(shared_data):
    root = shared_data / "glue"
    if not (root / "SST-2" / "train.tsv").is_file():
        pytest.skip(f"real GLUE SST-2 files not found under {root}")
    return root


@pytest.fixture(scope="module")
def minilm():
    try:
        from tamt.data.assets import default_model_path

        return default_model_path()
    except Exception as exc:  # no cache and no PyPI access
        pytest.skip(f"embedded model (all-MiniLM-L6-v2) unavailable: {exc}")


def test_real_metrics_files_load_with_expected_sizes(glue_root):
    from tamt.finetune.data import load_task

    dd = load_task("sst2", glue_root)
    assert len(dd["train"]) == 67349 and len(dd["validation"]) == 872
    dd = load_task("stsb", glue_root)
    assert len(dd["validation"]) == 1500


@pytest.mark.slow
def test_dense_minilm_beats_majority_on_real_sst2(glue_root, minilm):
    import tamt

    from tamt.data.glue import load_glue

    labels = load_glue("sst2", glue_root)["validation"]["label"]
    majority = max(labels.count(0), labels.count(1)) / len(labels)
    t = time.perf_counter()
    res = tamt.finetune(minilm, None, "sst2", glue_root, train_size=500, epochs=2, max_seq_length=64, batch_size=32,
                        lr=1e-4, eval_every=32, seeds=[0], progress=False)  # 500/32 -> 16 steps/epoch: one eval
    acc = res.metrics["best"]["accuracy"]
    print(f"\nSST-2 dev (872): dense MiniLM-L6, 500 train, seq 64, 2 epochs: best acc {acc:.4f} "
          f"final {res.metrics['final']['accuracy']:.4f}, majority {majority:.4f}, {time.perf_counter() - t:.0f}s")
    assert acc > majority + 0.1
