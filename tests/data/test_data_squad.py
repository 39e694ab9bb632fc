"""SQuAD v1.1: official JSON (real dev + fixtures), structure errors, features and post-processing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tamt.data.squad import load_squad, postprocess_predictions, squad_features

CONTEXT = ("the school was founded in 1984 by two people . the city has many water parks and the river is "
           "long . ") * 6 + "the first book about the war was written after the war ."


def _squad_json(context=CONTEXT):
    qas = []
    for i, ans in enumerate(["1984", "two people", "the river is long", "the war", "first book"]):
        start = context.rfind(ans) if i >= 3 else context.find(ans)
        qas.append({"id": f"q{i}", "question": f"  what {i}?", "answers": [{"text": ans, "answer_start": start}]})
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


@pytest.fixture
def squad_dir(tmp_path):
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(_squad_json()))
    (tmp_path / "train-v1.1.json").write_text(json.dumps(_squad_json()))
    return tmp_path


def _roundtrip(ex, tok, max_length, stride, max_answer_length=30):
    tr = squad_features(ex, tok, train=True, max_length=max_length, doc_stride=stride)
    va = squad_features(ex, tok, train=False, max_length=max_length, doc_stride=stride)
    assert len(tr) == len(va) and va["example_id"][0] == ex["id"][0]
    start = np.full((len(tr), max_length), -5.0)
    end = np.full((len(tr), max_length), -5.0)
    rows = np.arange(len(tr))
    start[rows, tr["start_positions"]] = 5.0  # gold positions; CLS for windows without the answer
    end[rows, tr["end_positions"]] = 5.0
    return tr, postprocess_predictions(ex, va, start, end, max_answer_length=max_answer_length)


def test_fixture_load_and_roundtrip(squad_dir, tiny_tok):
    dd = load_squad(squad_dir)
    assert list(dd) == ["train", "validation"] and len(dd["validation"]) == 5
    ex = dd["validation"]
    assert ex[0]["answers"] == {"text": ["1984"], "answer_start": [CONTEXT.find("1984")]}
    # short windows so the context overflows into several strided features
    tr, preds = _roundtrip(ex, tiny_tok, max_length=64, stride=16)
    assert len(tr) > len(ex)
    assert preds == {i: a["text"][0] for i, a in zip(ex["id"], ex["answers"])}
    one = load_squad(squad_dir / "train-v1.1.json")
    assert list(one) == ["train"]


@pytest.mark.realdata
def test_real_dev(shared_data, tiny_tok):
    dd = load_squad(shared_data / "squad")
    dev = dd["validation"]
    assert list(dd) == ["validation"] and len(dev) == 10570
    assert len(set(dev["id"])) == 10570
    ex = dev.select(range(120))
    for row in ex:
        s, t = row["answers"]["answer_start"][0], row["answers"]["text"][0]
        assert row["context"][s:s + len(t)] == t
    # the tiny tokenizer is letter-level, so allow long answers in tokens
    _, preds = _roundtrip(ex, tiny_tok, max_length=384, stride=128, max_answer_length=200)
    gold = {i: a["text"][0] for i, a in zip(ex["id"], ex["answers"])}
    assert sum(preds[i] == gold[i] for i in gold) >= 0.97 * len(gold)


def test_structure_errors(tmp_path):
    bad = tmp_path / "dev-v1.1.json"
    bad.write_text("{\"data\": [")
    with pytest.raises(ValueError, match="dev-v1.1.json: not valid JSON"):
        load_squad(bad)
    doc = _squad_json()
    del doc["data"][0]["paragraphs"][0]["qas"][2]["question"]
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"dev-v1.1.json: data\[0\].paragraphs\[0\].qas\[2\]: missing 'question'"):
        load_squad(tmp_path)
    doc = _squad_json()
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = "3"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"answers\[0\].answer_start: expected int"):
        load_squad(bad)
    with pytest.raises(FileNotFoundError):
        load_squad(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train-v1.1.json"):
        load_squad(tmp_path / "..")
    with pytest.raises(ConnectionError, match="offline"):
        load_squad("hub")


def test_postprocess_respects_limits(squad_dir, tiny_tok):
    ex = load_squad(squad_dir)["validation"].select([0])
    va = squad_features(ex, tiny_tok, train=False, max_length=64, doc_stride=16)
    L = 64
    start, end = np.zeros((len(va), L)), np.zeros((len(va), L))
    start[:, 0] = end[:, 0] = 100.0  # CLS is never an answer
    start[:, 1] = end[:, 1] = 100.0  # question tokens are never an answer
    first_ctx = next(k for k, o in enumerate(va[0]["offset_mapping"]) if o is not None)
    start[0, first_ctx + 1], end[0, first_ctx] = 10.0, 10.0  # end before start: invalid as a pair
    start[0, first_ctx], end[0, first_ctx + 3] = 8.0, 9.0
    o = va[0]["offset_mapping"]
    # best valid pair: (fc+1, fc+3) = 19; (fc+1, fc) = 20 is end-before-start
    pred = postprocess_predictions(ex, va, start, end)
    assert pred["q0"] == CONTEXT[o[first_ctx + 1][0]:o[first_ctx + 3][1]]
    # one-token answers only: (fc, fc) = 18 wins
    short = postprocess_predictions(ex, va, start, end, max_answer_length=1)["q0"]
    assert short == CONTEXT[o[first_ctx][0]:o[first_ctx][1]]
    with pytest.raises(ValueError, match="features"):
        postprocess_predictions(ex, va, start[:1], end)
