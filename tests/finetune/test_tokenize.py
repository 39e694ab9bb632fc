"""GLUE-style tokenisation: the one-call path for small splits equals the Dataset.map path."""
import pytest


@pytest.mark.parametrize("pair", [False, True])
def test_direct_and_map_tokenisation_agree(tiny, monkeypatch, pair):
    from datasets import Dataset

    from tamt.finetune import trainer

    _, tok = tiny
    rows = {"text_a": ["the city was new", "a school of the world", "it"] * 3,
            "text_b": (["there were two", "", None] * 3) if pair else [None] * 9,
            "label": [0, 1, 2] * 3}
    ds = Dataset.from_dict(rows)
    direct = trainer._tokenize_glue(ds, tok, 6)
    monkeypatch.setattr(trainer, "_DIRECT_TOKENIZE_MAX", 0)
    mapped = trainer._tokenize_glue(ds, tok, 6)
    assert direct.column_names and sorted(direct.column_names) == sorted(mapped.column_names)
    for c in direct.column_names:
        assert list(direct[c]) == list(mapped[c]), c
    assert max(len(x) for x in direct["input_ids"]) == 6  # truncated to max_len


def test_sort_by_length_keeps_rows_together(tiny):
    from datasets import Dataset

    from tamt.finetune import trainer

    _, tok = tiny
    texts = ["the city was new and the school", "a", "the world", "it was"]
    ds = Dataset.from_dict({"text_a": texts, "text_b": [None] * 4, "label": [0, 1, 2, 3]})
    plain = trainer._tokenize_glue(ds, tok, 32)
    srt = trainer._tokenize_glue(ds, tok, 32, sort_by_length=True)
    lengths = [len(x) for x in list(srt["input_ids"])]
    assert lengths == sorted(lengths)
    by_label = {r["label"]: r["input_ids"] for r in plain}
    assert all(by_label[r["label"]] == r["input_ids"] for r in srt)
