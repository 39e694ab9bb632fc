"""GLUE loaders on the real files and on fixtures (QQP, MNLI, malformed), subsampling, tokenisation."""
from __future__ import annotations

import collections

import pytest

from tamt.data.glue import GLUE_TASKS, load_glue, subsample, task_spec, tokenize_pairs

REAL_COUNTS = {  # /work/shared/data/README.md
    "rte": {"train": 2490, "validation": 277},
    "mrpc": {"train": 3668, "validation": 408},
    "sst2": {"train": 67349, "validation": 872},
    "wnli": {"train": 635, "validation": 71},
    "cola": {"train": 8551, "validation": 1043},
    "stsb": {"train": 5749, "validation": 1500},
    "qnli": {"validation": 5463},
}


@pytest.mark.realdata
@pytest.mark.parametrize("task", sorted(REAL_COUNTS))
def test_real_glue_counts(shared_data, task):
    dd = load_glue(task, shared_data / "glue")
    assert {k: len(v) for k, v in dd.items()} == REAL_COUNTS[task]
    spec = task_spec(task)
    for ds in dd.values():
        assert ds.column_names == ["idx", "text_a", "text_b", "label"]
        assert all(ds["text_a"]) and (all(ds["text_b"]) if spec.columns[1] is not None else
                                      set(ds["text_b"]) == {None})
        if spec.is_regression:
            assert 0.0 <= min(ds["label"]) and max(ds["label"]) <= 5.0
        else:
            assert set(ds["label"]) == set(range(spec.num_labels))


@pytest.mark.realdata
def test_real_glue_details(shared_data):
    mrpc = load_glue("mrpc", shared_data / "glue" / "MRPC")  # task folder directly; BOM-prefixed header
    assert mrpc["train"][0]["text_a"].startswith("Amrozi accused his brother")
    assert mrpc["validation"][0]["text_b"].startswith('" The foodservice pie')  # QUOTE_NONE keeps the quote
    cola = load_glue("CoLA", shared_data / "glue")
    assert cola["validation"][0] == {"idx": 0, "text_a": "The sailors rode the breeze clear of the rocks.",
                                     "text_b": None, "label": 1}
    rte = load_glue("rte", shared_data / "glue")
    assert rte["validation"].features["label"].names == ["entailment", "not_entailment"]
    assert rte["validation"][0]["label"] == 1  # not_entailment


QQP = ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
       "0\t1\t2\tHow do I learn \"python?\tHow can I learn python?\t1\n"
       "1\t3\t4\tWhat is love?\tWhere is Paris?\t0\n")
MNLI_HEAD = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
             "sentence2_parse\tsentence1\tsentence2\tlabel1\t{labels}gold_label\n")


def _mnli_row(i, a, b, gold, n_labels):
    return "\t".join([str(i), "1", f"{i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", a, b]
                     + [gold] * n_labels + [gold]) + "\n"


@pytest.fixture
def fixture_glue(tmp_path):
    (tmp_path / "QQP").mkdir()
    (tmp_path / "QQP" / "train.tsv").write_text(QQP)
    (tmp_path / "QQP" / "dev.tsv").write_text(QQP)
    m = tmp_path / "MNLI"
    m.mkdir()
    (m / "train.tsv").write_text(MNLI_HEAD.format(labels="") + _mnli_row(0, "A man.", "A person.", "entailment", 1)
                                 + _mnli_row(1, "A cat.", "A dog.", "contradiction", 1)
                                 + _mnli_row(2, "He ran.", "He was late.", "neutral", 1))
    dev_head = MNLI_HEAD.format(labels="label2\tlabel3\tlabel4\tlabel5\t")
    (m / "dev_matched.tsv").write_text(dev_head + _mnli_row(0, "x y", "y", "neutral", 5))
    (m / "dev_mismatched.tsv").write_text(dev_head + _mnli_row(0, "p", "q", "contradiction", 5)
                                          + _mnli_row(1, "r", "s", "entailment", 5))
    return tmp_path


def test_qqp_fixture(fixture_glue):
    dd = load_glue("qqp", fixture_glue)
    assert list(dd) == ["train", "validation"]
    assert dd["train"]["text_a"][0] == 'How do I learn "python?' and dd["train"]["label"] == [1, 0]
    assert dd["train"].features["label"].names == ["not_duplicate", "duplicate"]


def test_mnli_fixture(fixture_glue):
    dd = load_glue("mnli", fixture_glue)
    assert list(dd) == ["train", "validation_matched", "validation_mismatched"]
    assert dd["train"]["label"] == [0, 2, 1]  # entailment, contradiction, neutral
    assert dd["validation_mismatched"]["label"] == [2, 0] and dd["validation_matched"]["text_b"] == ["y"]
    assert task_spec("mnli").eval_splits == ("validation_matched", "validation_mismatched")


def test_malformed_rows_name_file_and_line(tmp_path):
    d = tmp_path / "RTE"
    d.mkdir()
    (d / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n")
    with pytest.raises(ValueError, match=r"RTE/train\.tsv:3: expected 4"):
        load_glue("rte", tmp_path)
    (d / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(ValueError, match=r"train\.tsv:2: unknown label 'maybe'"):
        load_glue("rte", tmp_path)
    (d / "train.tsv").write_text("idx\tfoo\n")
    with pytest.raises(ValueError, match=r"train\.tsv:1: header"):
        load_glue("rte", tmp_path)
    (d / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n")
    assert len(load_glue("rte", tmp_path, strict=False)["train"]) == 1
    c = tmp_path / "CoLA"
    c.mkdir()
    (c / "dev.tsv").write_text("src\t1\t\tGood.\nsrc\t7\t*\tBad.\n")
    with pytest.raises(ValueError, match=r"CoLA/dev\.tsv:2: label 7 out of range"):
        load_glue("cola", tmp_path)
    s = tmp_path / "STS-B"
    s.mkdir()
    (s / "dev.tsv").write_text("\t".join(["c"] * 7 + ["sentence1", "sentence2", "score"]) + "\n"
                               + "\t".join(["x"] * 9 + ["high"]) + "\n")
    with pytest.raises(ValueError, match=r"STS-B/dev\.tsv:2: label 'high' is not a number"):
        load_glue("stsb", tmp_path)


def test_missing_data_and_hub_offline(tmp_path):
    with pytest.raises(FileNotFoundError, match="SST-2"):
        load_glue("sst2", tmp_path)
    with pytest.raises(ConnectionError, match="offline"):
        load_glue("sst2")  # the suite runs with HF_DATASETS_OFFLINE=1
    with pytest.raises(KeyError):
        load_glue("squad", tmp_path)


def test_spec_table():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert task_spec("STS-B").is_regression and task_spec("sts-b").num_labels == 1
    assert task_spec("MRPC").metrics == ("f1", "accuracy") and task_spec("cola").metrics == ("matthews_correlation",)


def test_subsample_stratified():
    from datasets import ClassLabel, Dataset, Features, Value

    labels = [0] * 700 + [1] * 200 + [2] * 100
    ds = Dataset.from_dict({"x": list(range(1000)), "label": labels},
                           features=Features({"x": Value("int32"), "label": ClassLabel(num_classes=3)}))
    s = subsample(ds, 100, seed=0)
    assert collections.Counter(s["label"]) == {0: 70, 1: 20, 2: 10}
    assert s["x"] == sorted(s["x"]) and len(set(s["x"])) == 100
    assert subsample(ds, 100, seed=0)["x"] == s["x"] and subsample(ds, 100, seed=1)["x"] != s["x"]
    assert sum(subsample(ds, 7, seed=3)["label"].count(c) for c in range(3)) == 7
    assert len(subsample(ds, 5000, seed=0)) == 1000
    reg = Dataset.from_dict({"label": [float(i) for i in range(50)]})
    assert len(subsample(reg, 10, seed=0)) == 10


def test_tokenize_pairs(fixture_glue, tiny_tok):
    dd = load_glue("qqp", fixture_glue, tokenizer=tiny_tok, max_length=8)
    row = dd["train"][1]
    assert set(dd["train"].column_names) == {"idx", "input_ids", "token_type_ids", "attention_mask", "labels"}
    assert len(row["input_ids"]) <= 8 and row["labels"] == 0 and 1 in row["token_type_ids"]
    single = tokenize_pairs(load_glue("mnli", fixture_glue)["train"], tiny_tok, max_length=16, padding="max_length")
    assert all(len(x) == 16 for x in single["input_ids"])
