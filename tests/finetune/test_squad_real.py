"""SQuAD v1.1 on real data: fine-tune the embedded default model on some dev articles, evaluate on others.

The official train file is not in ``../shared/data`` (only ``dev-v1.1.json``), so the dev set is split *by
article*: questions about the first articles train, questions about the last ones evaluate, so no passage
(and no question) is shared.  To learn something measurable within the CPU budget the slice keeps the
questions whose gold answers all contain a digit (dates, counts, years: about 1/6 of SQuAD) and passages of
at most 90 words (one 128-token window each).  The official metric (tamt.finetune.metrics, the
evaluate-v1.1.py normalisation) must rise well above the untrained model's on the held-out articles.
"""
from __future__ import annotations

import json
import re

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def _slice(articles, max_words=90):
    out = []
    for a in articles:
        paras = []
        for p in a["paragraphs"]:
            if len(p["context"].split()) > max_words:
                continue
            qas = [q for q in p["qas"] if all(re.search(r"\d", x["text"]) for x in q["answers"])]
            if qas:
                paras.append({"context": p["context"], "qas": qas})
        if paras:
            out.append({"title": a["title"], "paragraphs": paras})
    return out


def test_squad_real_slice_learns_on_held_out_articles(shared_data, default_assets, tmp_path):
    import tamt

    dev = json.loads((shared_data / "squad" / "v1.1" / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]
    train, held_out = _slice(dev[:36]), _slice(dev[36:])
    assert not {a["title"] for a in train} & {a["title"] for a in held_out}
    contexts = {p["context"] for a in held_out for p in a["paragraphs"]}
    assert not contexts & {p["context"] for a in train for p in a["paragraphs"]}
    (tmp_path / "train-v1.1.json").write_text(json.dumps({"version": "1.1", "data": train}))
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": held_out}))

    common = dict(batch_size=8, max_seq_length=128, doc_stride=64, eval_size=80, seeds=[0], progress=False,
                  weight_decay=0.0, eval_batch_size=64, num_threads=2)
    untrained = tamt.finetune("default", None, "squad", tmp_path, max_steps=1, lr=0.0, **common)
    trained = tamt.finetune("default", None, "squad", tmp_path, max_steps=20, lr=8e-4, warmup_ratio=0.1,
                            train_size=20 * 8, eval_every=10**6, **common)
    before, after = untrained.metrics["final"], trained.metrics["final"]
    print(f"held-out SQuAD slice: untrained EM {before['exact_match']:.3f} F1 {before['f1']:.3f}; "
          f"20 steps EM {after['exact_match']:.3f} F1 {after['f1']:.3f}")
    assert after["exact_match"] >= before["exact_match"] + 0.10
    assert after["f1"] >= before["f1"] + 0.15
    assert 0.0 <= after["exact_match"] <= after["f1"] <= 1.0
