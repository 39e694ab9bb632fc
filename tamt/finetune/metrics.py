"""Downstream metrics exactly as GLUE and SQuAD v1.1 define them.

GLUE (Wang et al. 2019, and the ``glue`` metric of ``datasets``/``evaluate``):
  CoLA  Matthews correlation            (sklearn.metrics.matthews_corrcoef)
  STS-B Pearson and Spearman correlation (scipy.stats)
  MRPC  F1 (positive class 1) and accuracy
  QQP   accuracy and F1
  MNLI  matched / mismatched accuracy (one call per validation split)
  SST-2, QNLI, RTE, WNLI accuracy
Scores are fractions in [0, 1] (correlations in [-1, 1]); reports multiply by 100.

SQuAD v1.1 (the official ``evaluate-v1.1.py``): answers are normalised
(lower case, punctuation removed, articles a/an/the removed, whitespace
collapsed); exact match and token F1 take the max over the gold answers.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Iterable, Mapping, Sequence

import numpy as np

# task -> (metric names in report order, the "main" metric used for best-dev selection)
GLUE_METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "cola": (("matthews_correlation",), "matthews_correlation"),
    "sst2": (("accuracy",), "accuracy"),
    "mrpc": (("f1", "accuracy"), "f1"),
    "stsb": (("pearson", "spearmanr"), "pearson"),
    "qqp": (("accuracy", "f1"), "accuracy"),
    "mnli": (("accuracy",), "accuracy"),
    "mnli_matched": (("accuracy",), "accuracy"),
    "mnli_mismatched": (("accuracy",), "accuracy"),
    "qnli": (("accuracy",), "accuracy"),
    "rte": (("accuracy",), "accuracy"),
    "wnli": (("accuracy",), "accuracy"),
    "ax": (("matthews_correlation",), "matthews_correlation"),
    # the embedded demo tasks (binary sentiment, 3-way NLI)
    "sentiment": (("accuracy",), "accuracy"),
    "nli": (("accuracy",), "accuracy"),
    "rating": (("pearson", "spearmanr"), "pearson"),  # regression on the snippets' human ratings
}
SQUAD_METRICS = (("exact_match", "f1"), "f1")


def metric_names(task: str) -> tuple[str, ...]:
    if task == "squad":
        return SQUAD_METRICS[0]
    return _spec(task)[0]


def main_metric(task: str) -> str:
    if task == "squad":
        return SQUAD_METRICS[1]
    return _spec(task)[1]


def _spec(task: str):
    try:
        return GLUE_METRICS[task.lower()]
    except KeyError:
        raise ValueError(f"unknown GLUE task {task!r}; choose from {', '.join(sorted(GLUE_METRICS))}") from None


def glue_metrics(task: str, preds: Sequence, labels: Sequence) -> dict[str, float]:
    """The official GLUE metric(s) of ``task`` for class predictions (or scores for STS-B)."""
    names, _ = _spec(task)
    preds = np.asarray(preds)
    labels = np.asarray(labels)
    if preds.shape != labels.shape:
        raise ValueError(f"{task}: {preds.shape[0] if preds.ndim else 0} predictions for {labels.shape[0] if labels.ndim else 0} labels")
    if preds.size == 0:
        raise ValueError(f"{task}: no predictions to score")
    out: dict[str, float] = {}
    for name in names:
        if name == "accuracy":
            out[name] = float((preds == labels).mean())
        elif name == "f1":
            from sklearn.metrics import f1_score

            out[name] = float(f1_score(labels.astype(int), preds.astype(int), pos_label=1, zero_division=0))
        elif name == "matthews_correlation":
            from sklearn.metrics import matthews_corrcoef

            out[name] = float(matthews_corrcoef(labels.astype(int), preds.astype(int)))
        elif name == "pearson":
            out[name] = _corr("pearson", preds, labels)
        elif name == "spearmanr":
            out[name] = _corr("spearman", preds, labels)
    return out


def _corr(kind: str, x, y) -> float:
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0  # undefined (constant input); scipy warns and returns nan
    r = stats.pearsonr(x, y)[0] if kind == "pearson" else stats.spearmanr(x, y)[0]
    return float(r)


def glue_average(metrics: Mapping[str, float]) -> float:
    """One number per task as on the GLUE leaderboard: the mean of the task's metrics."""
    vals = [float(v) for v in metrics.values()]
    return float(np.mean(vals)) if vals else float("nan")


# ---------------------------------------------------------------------------
# SQuAD v1.1

def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (official SQuAD v1.1)."""
    s = s.lower()
    exclude = set(string.punctuation)
    s = "".join(ch for ch in s if ch not in exclude)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def squad_f1(prediction: str, ground_truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], references: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """EM and F1 in [0, 1] over ``references`` ({id: gold answer texts}); max over the golds.

    A question without a prediction scores 0 (as the official script does).
    """
    if not references:
        raise ValueError("squad_metrics: no reference answers")
    em = f1 = 0.0
    for qid, golds in references.items():
        golds = list(golds)
        if not golds:
            raise ValueError(f"squad_metrics: question {qid!r} has no gold answer")
        pred = predictions.get(qid)
        if pred is None:
            continue
        em += max(squad_exact_match(pred, g) for g in golds)
        f1 += max(squad_f1(pred, g) for g in golds)
    n = len(references)
    return {"exact_match": em / n, "f1": f1 / n}
