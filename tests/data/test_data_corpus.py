"""Corpus loading from local files, held-out split, block layout, caching, and the MLM collator."""
from __future__ import annotations

import json

import pytest
import torch

from tamt.data.corpus import load_corpus, load_raw_corpus, mlm_collator

WORDS = ("the movie was good and the story of the city was great but the war film was bad "
         "people work in the school for many years after the first world war").split()


def _docs(n, seed=0):
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(n)]


@pytest.fixture
def corpus_files(tmp_path):
    docs = _docs(200)
    (tmp_path / "c.txt").write_text("\n".join(docs) + "\n\n")
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"id": i, "body": d}) for i, d in enumerate(docs)))
    # the default corpus's layout: a dict of records keyed by title
    (tmp_path / "c.json").write_text(json.dumps({f"t{i}": {"title": f"t{i}", "extract": d, "topic": "x"}
                                                 for i, d in enumerate(docs)}))
    import datasets

    datasets.Dataset.from_dict({"label": list(range(200)), "content": docs}).to_parquet(str(tmp_path / "c.parquet"))
    return tmp_path, docs


@pytest.mark.parametrize("suffix", ["txt", "jsonl", "json", "parquet"])
def test_local_formats(corpus_files, suffix, tiny_tok):
    root, docs = corpus_files
    raw = load_raw_corpus(root / f"c.{suffix}")
    assert raw["train"]["text"] == docs  # text field found, blank lines dropped
    dd = load_corpus(root / f"c.{suffix}", tokenizer=tiny_tok, block_size=32, cache_dir=False)
    assert set(dd) == {"train", "validation"}
    for split in dd.values():
        assert len(split) > 0
        for row in split:
            ids = row["input_ids"]
            assert len(ids) == 32 and row["attention_mask"] == [1] * 32
            assert ids[0] == tiny_tok.cls_token_id and ids[-1] == tiny_tok.sep_token_id
            assert tiny_tok.cls_token_id not in ids[1:-1] and tiny_tok.pad_token_id not in ids


def test_heldout_split_is_by_document_and_seeded(corpus_files, tiny_tok):
    root, docs = corpus_files
    a = load_corpus(root / "c.txt", tokenizer=tiny_tok, block_size=32, seed=1, cache_dir=False)
    b = load_corpus(root / "c.txt", tokenizer=tiny_tok, block_size=32, seed=1, cache_dir=False)
    c = load_corpus(root / "c.txt", tokenizer=tiny_tok, block_size=32, seed=2, cache_dir=False)
    assert a["validation"]["input_ids"] == b["validation"]["input_ids"]
    assert a["train"]["input_ids"] == b["train"]["input_ids"]
    assert a["validation"]["input_ids"] != c["validation"]["input_ids"]
    n_tokens = sum(len(tiny_tok(d, add_special_tokens=False)["input_ids"]) for d in docs)
    got = sum(len(x) - 2 for split in a.values() for x in split["input_ids"])
    assert n_tokens - 2 * 30 < got <= n_tokens  # only the per-split tails are dropped
    frac = len(a["validation"]) / (len(a["train"]) + len(a["validation"]))
    assert 0.01 < frac < 0.15


def test_max_blocks_and_zero_validation(corpus_files, tiny_tok):
    root, _ = corpus_files
    dd = load_corpus(root / "c.txt", tokenizer=tiny_tok, block_size=16, validation_fraction=0, max_blocks=7,
                     cache_dir=False)
    assert list(dd) == ["train"] and len(dd["train"]) == 7


def test_folder_with_named_splits(tmp_path, tiny_tok):
    (tmp_path / "wiki.train.raw").write_text("\n".join(_docs(100, 1)))
    (tmp_path / "wiki.valid.raw").write_text("\n".join(_docs(30, 2)))
    raw = load_raw_corpus(tmp_path)
    assert set(raw) == {"train", "validation"} and len(raw["validation"]) == 30
    dd = load_corpus(tmp_path, tokenizer=tiny_tok, block_size=24, cache_dir=False)
    assert len(dd["validation"]) > 0


def test_real_wikitext(shared_data, tiny_tok):
    dd = load_corpus(shared_data / "wikitext" / "wikitext-2-raw" / "wiki.test.raw", tokenizer=tiny_tok,
                     block_size=128, cache_dir=False, max_blocks=50)
    assert len(dd["train"]) == 50 and len(dd["validation"]) == 50


def test_cache_roundtrip_and_invalidation(corpus_files, tiny_tok, tmp_path):
    root, _ = corpus_files
    cache = tmp_path / "cache"
    a = load_corpus(root / "c.txt", tokenizer=tiny_tok, block_size=32, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    b = load_corpus(root / "c.txt", tokenizer=tiny_tok, block_size=32, cache_dir=cache)
    assert a["train"]["input_ids"] == b["train"]["input_ids"] and len(list(cache.iterdir())) == 1
    load_corpus(root / "c.txt", tokenizer=tiny_tok, block_size=16, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    (root / "c.txt").write_text("\n".join(_docs(50, 7)))
    c = load_corpus(root / "c.txt", tokenizer=tiny_tok, block_size=32, cache_dir=cache)
    assert len(c["train"]) < len(a["train"]) and len(list(cache.iterdir())) == 3


def test_errors(tmp_path, tiny_tok):
    (tmp_path / "empty.txt").write_text("\n \n\n")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(tmp_path / "empty.txt", tokenizer=tiny_tok, cache_dir=False)
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "missing.txt", tokenizer=tiny_tok, cache_dir=False)
    with pytest.raises(ConnectionError, match="offline"):
        load_corpus("wikitext:wikitext-103-raw-v1", tokenizer=tiny_tok, cache_dir=False)
    (tmp_path / "short.txt").write_text("hello world\nthe cat\n")
    with pytest.raises(ValueError, match="not enough for one block"):
        load_corpus(tmp_path / "short.txt", tokenizer=tiny_tok, block_size=64, cache_dir=False)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_raw_corpus(tmp_path / "bad.json")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match="unsupported"):
        load_raw_corpus(tmp_path / "x.csv")


def _batch(n=64, length=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(40, 200, (n, length - 2), generator=g)
    ids = torch.cat([torch.full((n, 1), 2), body, torch.full((n, 1), 3)], 1)
    return [{"input_ids": r.tolist(), "attention_mask": [1] * length} for r in ids]


def test_mlm_collator_rates(tiny_tok):
    examples = _batch()
    orig = torch.tensor([e["input_ids"] for e in examples])
    out = mlm_collator(tiny_tok, seed=0)(examples)
    chosen = out["labels"] != -100
    assert torch.equal(out["labels"][chosen], orig[chosen])
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # specials never chosen
    n = chosen.sum().item()
    assert abs(n / (64 * 126) - 0.15) < 0.015
    masked = (out["input_ids"] == tiny_tok.mask_token_id) & chosen
    kept = (out["input_ids"] == orig) & chosen
    random_ = chosen & ~masked & ~kept
    assert abs(masked.sum().item() / n - 0.8) < 0.04
    assert abs(kept.sum().item() / n - 0.1) < 0.03  # includes random draws that hit the same token (~0.05 %)
    assert abs(random_.sum().item() / n - 0.1) < 0.03
    assert torch.equal(out["input_ids"][~chosen], orig[~chosen])


def test_mlm_collator_determinism(tiny_tok):
    ex = _batch(8, 32)
    a = mlm_collator(tiny_tok, seed=5)
    b = mlm_collator(tiny_tok, seed=5)
    for _ in range(3):
        x, y = a(ex), b(ex)
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["labels"], y["labels"])
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(mlm_collator(tiny_tok, generator=g1)(ex)["labels"],
                       mlm_collator(tiny_tok, generator=g2)(ex)["labels"])
    assert not torch.equal(mlm_collator(tiny_tok, seed=1)(ex)["labels"], mlm_collator(tiny_tok, seed=2)(ex)["labels"])
    with pytest.raises(ValueError):
        mlm_collator(tiny_tok, seed=1, generator=g1)
