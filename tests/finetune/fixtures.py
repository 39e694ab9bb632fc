"""Small GLUE-format and SQuAD-format fixtures written by the tests themselves (official layouts)."""
from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = "the of and to in is was for on that with as by it at from his he be are this which or city school".split()


def _sentence(rng, cue=None):
    ws = rng.choices(WORDS, k=rng.randint(4, 9))
    if cue:
        ws.insert(rng.randrange(len(ws) + 1), cue)
    return " ".join(ws)


def write_sst2(root: Path, n_train=200, n_dev=60, seed=0) -> Path:
    """Label 1 iff the sentence holds 'good' (else 'bad'): learnable in a few steps."""
    rng = random.Random(seed)
    d = root / "SST-2"
    d.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        lines = ["sentence\tlabel"]
        for _ in range(n):
            y = rng.random() < 0.4
            lines.append(f"{_sentence(rng, 'good' if y else 'bad')} \t{int(y)}")
        (d / name).write_text("\n".join(lines) + "\n")
    return d


def write_stsb(root: Path, n=40, seed=0) -> Path:
    rng = random.Random(seed)
    d = root / "STS-B"
    d.mkdir(parents=True, exist_ok=True)
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for name in ("train.tsv", "dev.tsv"):
        lines = [head]
        for i in range(n):
            lines.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{_sentence(rng)}\t"
                         f"{_sentence(rng)}\t{rng.uniform(0, 5):.3f}")
        (d / name).write_text("\n".join(lines) + "\n")
    return d


def write_mnli(root: Path, n=45, seed=0) -> Path:
    rng = random.Random(seed)
    d = root / "MNLI"
    d.mkdir(parents=True, exist_ok=True)
    head = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
            "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
    labels = ["entailment", "neutral", "contradiction"]
    for name, k in (("train.tsv", 11), ("dev_matched.tsv", 10), ("dev_mismatched.tsv", 10)):
        lines = [head]
        for i in range(n):
            y = labels[i % 3]
            a, b = _sentence(rng), _sentence(rng)
            row = [str(i), "1", f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", a, b, y]
            if k == 11:
                row.append(y)
            else:  # dev files carry label1..label5 then gold_label
                row += [y, y, y, y, y]
            lines.append("\t".join(row))
        if k == 10:
            lines[0] = head.replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
        (d / name).write_text("\n".join(lines) + "\n")
    return d


def write_cola(root: Path, n=40, seed=0) -> Path:
    rng = random.Random(seed)
    d = root / "CoLA"
    d.mkdir(parents=True, exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        lines = []
        for _ in range(n):
            y = int(rng.random() < 0.7)
            lines.append(f"gj04\t{y}\t{'' if y else '*'}\t{_sentence(rng)}")
        (d / name).write_text("\n".join(lines) + "\n")
    return d


def write_squad(root: Path, n_articles=6, seed=0) -> Path:
    """SQuAD v1.1 JSON: the answer is always the word after 'at'."""
    rng = random.Random(seed)
    d = root / "squad"
    d.mkdir(parents=True, exist_ok=True)
    places = ["city", "school", "university", "world", "state"]
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        data = []
        for a in range(n_articles):
            paras = []
            for p in range(3):
                place = rng.choice(places)
                ctx = f"{_sentence(rng)} he was at {place} in the {_sentence(rng)} ."
                start = ctx.index(f"at {place}") + 3
                qas = [{"id": f"{name[:3]}{a}_{p}", "question": "where was he ?",
                        "answers": [{"text": place, "answer_start": start},
                                    {"text": f"the {place}", "answer_start": start}]}]
                paras.append({"context": ctx, "qas": qas})
            data.append({"title": f"t{a}", "paragraphs": paras})
        (d / name).write_text(json.dumps({"data": data, "version": "1.1"}))
    return d
