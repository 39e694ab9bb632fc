"""Metrics against hand-computed values."""
import math

import pytest

from tamt.finetune.metrics import glue_metrics, normalize_answer, squad_exact_match, squad_f1, squad_metrics


def test_accuracy_f1_mcc_by_hand():
    labels = [1, 1, 0, 0, 1]
    preds = [1, 0, 0, 1, 1]  # TP=2 TN=1 FP=1 FN=1
    m = glue_metrics("mrpc", preds, labels)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 / 3)  # P = R = 2/3
    assert glue_metrics("qqp", preds, labels) == {"accuracy": pytest.approx(0.6), "f1": pytest.approx(2 / 3)}
    mcc = (2 * 1 - 1 * 1) / math.sqrt((2 + 1) * (2 + 1) * (1 + 1) * (1 + 1))
    assert glue_metrics("cola", preds, labels)["matthews_correlation"] == pytest.approx(mcc)
    for task in ("sst2", "qnli", "rte", "wnli", "mnli"):
        assert glue_metrics(task, preds, labels) == {"accuracy": pytest.approx(0.6)}


def test_stsb_pearson_spearman_by_hand():
    m = glue_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert m["pearson"] == pytest.approx(9 / math.sqrt(84))  # cov 3 / (sqrt 2 * sqrt(42/9))
    assert m["spearmanr"] == pytest.approx(1.0)
    m = glue_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert m["spearmanr"] == pytest.approx(1 - 6 * 2 / (4 * 15))


def test_glue_metric_errors():
    with pytest.raises(ValueError, match="unknown GLUE task"):
        glue_metrics("foo", [1], [1])
    with pytest.raises(ValueError):
        glue_metrics("sst2", [1, 0], [1])


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Cat, sat!  ") == "cat sat"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # only whole-word articles go
    assert squad_exact_match("the Cat.", "cat") == 1.0
    assert squad_f1("the big cat", "a cat") == pytest.approx(2 * (1 / 2) * 1 / (1 / 2 + 1))
    assert squad_f1("dog", "cat") == 0.0
    preds = {"q1": "Denver Broncos", "q2": "in the park", "q3": "nothing"}
    refs = {"q1": ["Denver Broncos", "Broncos"], "q2": ["park", "the city park"], "q3": ["x"], "q4": ["y"]}
    m = squad_metrics(preds, refs)
    # q1: EM 1, F1 1; q2: EM max(0, 0) = 0, F1 max(2*(1/2*1)/(1.5)=2/3, 2*(1/2*1/2)/1=0.5)=2/3; q3, q4 (missing): 0
    assert m["exact_match"] == pytest.approx(1 / 4)
    assert m["f1"] == pytest.approx((1 + 2 / 3) / 4)


@pytest.mark.parametrize("text, normalised", [
    ("The Eiffel Tower", "eiffel tower"),            # case, article
    ("  New\tYork \n", "new york"),                  # whitespace collapsed
    ("U.S.A.", "usa"),                               # ASCII punctuation removed (before the articles go)
    ("the-end", "theend"),                           # ... so a hyphenated article is no longer a word
    ("a.m.", "am"),
    ("Anne and the man", "anne and man"),            # only whole-word articles
    ("An  apple, a day!", "apple day"),
    ("\u201cYes\u201d \u2014 he said", "\u201cyes\u201d \u2014 he said"),  # non-ASCII punctuation is kept
    ("the", ""),
])
def test_squad_normalisation_matches_the_official_script(text, normalised):
    """evaluate-v1.1.py: lower -> remove string.punctuation -> remove (a|an|the) -> collapse whitespace."""
    assert normalize_answer(text) == normalised


def test_squad_scores_official_edge_cases():
    assert squad_exact_match("U.S.", "US") == 1.0
    assert squad_exact_match("\u201cYes\u201d", "yes") == 0.0
    assert squad_exact_match("a", "the") == 1.0 and squad_f1("a", "the") == 0.0  # both normalise to ''
    assert squad_f1("the cat the cat", "cat") == pytest.approx(2 / 3)  # tokens counted with multiplicity
    assert squad_f1("Denver Broncos won", "the Denver Broncos") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    # several gold answers: EM and F1 take their maxima independently
    golds = ["Broncos", "the Denver Broncos team"]
    m = squad_metrics({"q": "Denver Broncos"}, {"q": golds})
    assert m["exact_match"] == 0.0
    assert m["f1"] == pytest.approx(max(2 * (1 / 2) * 1 / (1 / 2 + 1), 2 * 1 * (2 / 3) / (1 + 2 / 3)))
    m = squad_metrics({"q": "broncos."}, {"q": golds})
    assert m == {"exact_match": 1.0, "f1": 1.0}
