"""SQuAD v1.1: loading the official JSON, QA features, and span post-processing.

:func:`load_squad` gives a ``datasets.DatasetDict`` with the hub ``squad``
schema: ``id, title, context, question, answers{text[], answer_start[]}``.
``data`` is ``"hub"`` (``rajpurkar/squad``, online only), an official JSON
file (``train-v1.1.json`` -> ``train``, ``dev-v1.1.json`` -> ``validation``;
other names: ``dev``/``val`` in the name -> ``validation``, else ``train``),
or a folder holding those files (directly or in ``v1.1/``).

The feature functions follow the standard Hugging Face QA recipe (question
first, ``truncation="only_second"``, overflowing windows of ``max_length``
with ``doc_stride`` overlap, offsets from a fast tokenizer); use them with
``Dataset.map(..., batched=True, remove_columns=...)`` or through
:func:`squad_features`.
"""
from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "load_squad",
    "postprocess_predictions",
    "prepare_train_features",
    "prepare_validation_features",
    "read_squad_json",
    "squad_features",
]

_FILES = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}


def _features():
    from datasets import Features, List, Value

    return Features({
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
    })


def read_squad_json(path: str | os.PathLike) -> dict[str, list]:
    """Columns of one official SQuAD JSON file; ValueError naming the file and the JSON path on bad structure."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    out: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}

    def need(container: Any, key: str, kind: type, where: str):
        if not isinstance(container, dict) or key not in container:
            raise ValueError(f"{path}: {where}: missing {key!r}")
        value = container[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{path}: {where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
        return value

    articles = need(obj, "data", list, "top level")
    for i, art in enumerate(articles):
        w_art = f"data[{i}]"
        title = art.get("title", "") if isinstance(art, dict) else ""
        for j, para in enumerate(need(art, "paragraphs", list, w_art)):
            w_para = f"{w_art}.paragraphs[{j}]"
            context = need(para, "context", str, w_para)
            for k, qa in enumerate(need(para, "qas", list, w_para)):
                w_qa = f"{w_para}.qas[{k}]"
                texts, starts = [], []
                for m, ans in enumerate(need(qa, "answers", list, w_qa)):
                    w_ans = f"{w_qa}.answers[{m}]"
                    texts.append(need(ans, "text", str, w_ans))
                    start = need(ans, "answer_start", int, w_ans)
                    if not 0 <= start <= len(context):
                        raise ValueError(f"{path}: {w_ans}.answer_start {start} outside the context")
                    starts.append(start)
                out["id"].append(str(need(qa, "id", str, w_qa)))
                out["title"].append(str(title))
                out["context"].append(context)
                out["question"].append(need(qa, "question", str, w_qa))
                out["answers"].append({"text": texts, "answer_start": starts})
    return out


def _split_for(path: Path) -> str:
    name = path.name.lower()
    return "validation" if ("dev" in name or "val" in name) else "train"


def load_squad(data: str | os.PathLike = "hub"):
    """SQuAD v1.1 as a DatasetDict (``train`` and/or ``validation``)."""
    from datasets import Dataset, DatasetDict, load_dataset

    if isinstance(data, str) and data == "hub":
        if any(os.environ.get(v, "") not in ("", "0") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")):
            raise ConnectionError("SQuAD from the hub needs network, but the hub is offline (HF_DATASETS_OFFLINE/"
                                  "HF_HUB_OFFLINE set). Pass data=PATH to train-v1.1.json/dev-v1.1.json or their "
                                  "folder.")
        from tamt.hub import hub_problem, is_hub_error

        problem = hub_problem("dataset")  # fail in seconds, not after the hub client's retries
        if problem:
            raise ConnectionError(f"SQuAD is not local and the Hugging Face hub is {problem}; pass data=PATH to "
                                  "train-v1.1.json/dev-v1.1.json or their folder")
        try:
            return load_dataset("rajpurkar/squad")
        except Exception as exc:  # network / name problems come as many types
            if not is_hub_error(exc):
                raise
            raise ConnectionError(f"could not load SQuAD from the hub: {exc}. Pass data=PATH instead.") from exc
    root = Path(os.fspath(data)).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"SQuAD path {root} does not exist")
    if root.is_file():
        files = {_split_for(root): root}
    else:
        files = {}
        for base in (root, root / "v1.1"):
            for split, fname in _FILES.items():
                if split not in files and (base / fname).is_file():
                    files[split] = base / fname
        if not files:
            raise FileNotFoundError(f"{root}: neither {_FILES['train']} nor {_FILES['validation']} found "
                                    f"(looked in {root} and {root / 'v1.1'})")
    return DatasetDict({split: Dataset.from_dict(read_squad_json(p), features=_features())
                        for split, p in sorted(files.items())})


# ---------------------------------------------------------------------------
# features


def _check_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("SQuAD features need a fast tokenizer (offset mappings)")


def _encode(examples, tokenizer, max_length: int, doc_stride: int, padding):
    _check_fast(tokenizer)
    pad_right = tokenizer.padding_side == "right"
    # Leading spaces in questions waste the context window once truncated (HF recipe).
    questions = [q.lstrip() for q in examples["question"]]
    first, second = (questions, examples["context"]) if pad_right else (examples["context"], questions)
    return tokenizer(
        first, second,
        truncation="only_second" if pad_right else "only_first",
        max_length=max_length, stride=doc_stride,
        return_overflowing_tokens=True, return_offsets_mapping=True, padding=padding,
    ), (0 if pad_right else 1), pad_right


def prepare_train_features(examples, tokenizer, *, max_length: int = 384, doc_stride: int = 128,
                           padding: bool | str = "max_length") -> dict[str, list]:
    """Windows with ``start_positions`` / ``end_positions`` (the [CLS] index when the answer is not inside)."""
    enc, _, pad_right = _encode(examples, tokenizer, max_length, doc_stride, padding)
    context_id = 1 if pad_right else 0
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets_all = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offsets in enumerate(offsets_all):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        seq_ids = enc.sequence_ids(i)
        answers = examples["answers"][sample_map[i]]
        if not answers["answer_start"]:
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        tok_start = 0
        while seq_ids[tok_start] != context_id:
            tok_start += 1
        tok_end = len(input_ids) - 1
        while seq_ids[tok_end] != context_id:
            tok_end -= 1
        if not (offsets[tok_start][0] <= start_char and offsets[tok_end][1] >= end_char):
            starts.append(cls_index)  # answer (partly) outside this window
            ends.append(cls_index)
            continue
        while tok_start < len(offsets) and seq_ids[tok_start] == context_id and offsets[tok_start][0] <= start_char:
            tok_start += 1
        starts.append(tok_start - 1)
        while seq_ids[tok_end] == context_id and offsets[tok_end][1] >= end_char:
            tok_end -= 1
        ends.append(tok_end + 1)
    enc["start_positions"] = starts
    enc["end_positions"] = ends
    return dict(enc)


def prepare_validation_features(examples, tokenizer, *, max_length: int = 384, doc_stride: int = 128,
                                padding: bool | str = "max_length") -> dict[str, list]:
    """Windows with ``example_id`` and ``offset_mapping`` (None outside the context) for post-processing."""
    enc, _, pad_right = _encode(examples, tokenizer, max_length, doc_stride, padding)
    context_id = 1 if pad_right else 0
    sample_map = enc.pop("overflow_to_sample_mapping")
    example_ids, offsets_out = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq_ids = enc.sequence_ids(i)
        example_ids.append(examples["id"][sample_map[i]])
        offsets_out.append([tuple(o) if seq_ids[k] == context_id else None for k, o in enumerate(offsets)])
    enc["example_id"] = example_ids
    enc["offset_mapping"] = offsets_out
    return dict(enc)


def squad_features(dataset, tokenizer, *, train: bool, max_length: int = 384, doc_stride: int = 128,
                   num_proc: int | None = None):
    """``dataset.map`` with the train or validation recipe, original columns removed."""
    fn = prepare_train_features if train else prepare_validation_features
    return dataset.map(fn, batched=True, remove_columns=dataset.column_names, num_proc=num_proc,
                       fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "doc_stride": doc_stride},
                       desc="squad features")


def postprocess_predictions(examples, features, start_logits, end_logits, n_best: int = 20,
                            max_answer_length: int = 30) -> dict[str, str]:
    """Best answer text per example id from per-window start/end logits.

    Candidates are the ``n_best`` top start and end positions of every window
    of an example, restricted to context tokens, ``end >= start`` and at most
    ``max_answer_length`` tokens; the score is start + end logit. An example
    with no valid candidate gets "".
    """
    start_logits = np.asarray(start_logits)
    end_logits = np.asarray(end_logits)
    if len(start_logits) != len(features) or len(end_logits) != len(features):
        raise ValueError(f"{len(features)} features but {len(start_logits)} start / {len(end_logits)} end logit rows")
    by_example: dict[str, list[int]] = collections.defaultdict(list)
    for i, ex_id in enumerate(features["example_id"]):
        by_example[ex_id].append(i)
    offsets_all = features["offset_mapping"]
    predictions: dict[str, str] = {}
    for ex_id, context in zip(examples["id"], examples["context"]):
        best_score, best_text = -np.inf, ""
        for fi in by_example.get(ex_id, ()):
            s_log, e_log, offsets = start_logits[fi], end_logits[fi], offsets_all[fi]
            top_s = np.argsort(s_log)[-1: -n_best - 1: -1]
            top_e = np.argsort(e_log)[-1: -n_best - 1: -1]
            for s in top_s:
                if s >= len(offsets) or offsets[s] is None:
                    continue
                for e in top_e:
                    if e >= len(offsets) or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = s_log[s] + e_log[e]
                    if score > best_score:
                        best_score, best_text = score, context[offsets[s][0]: offsets[e][1]]
        predictions[ex_id] = best_text
    return predictions
