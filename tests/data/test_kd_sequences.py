"""TAMT-KD's training sequences in the reference's layout (pregenerate_training_data.py --one_seq)."""
from __future__ import annotations

import random

import pytest

from tamt.data.corpus import kd_sequences, load_kd_sequences

WORDS = "alpha beta gamma delta river city school book war people first water long park".split()


def _para(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _corpus(seed=0):
    """WikiText layout: ' = Title = ', blank, paragraph lines, blank, ' = = Section = = ', ..."""
    rng = random.Random(seed)
    docs, lines = [], [""]
    for d in range(30):
        lines += [f" = {rng.choice(WORDS)} = ", ""]
        paras = [_para(rng, rng.randint(22, 30)) for _ in range(rng.randint(1, 3))]
        lines += [" " + p + " " for p in paras] + [""]
        docs.append(paras)
    lines += [" " + _para(rng, 5) + " ", ""]  # a document whose first paragraph is under 20 tokens: dropped
    return lines, docs


def test_sequences_follow_the_reference_layout(tiny_tok):
    tok = tiny_tok
    lines, docs = _corpus()
    L = 512  # long enough that no document is truncated or split
    cols = kd_sequences(lines, tok, max_seq_len=L, seed=1, short_seq_prob=0.0)
    seqs, types = cols["input_ids"], cols["token_type_ids"]
    assert len(seqs) == len(docs)  # one sequence per kept document, headings and short/'=' docs dropped
    cls, sep, mask = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
    masked = 0
    for seq, ty, paras in zip(seqs, types, docs):
        seq, ty = seq.tolist(), ty.tolist()
        assert seq[0] == cls and seq[-1] == sep and len(seq) <= L
        body = tok(" ".join(paras), add_special_tokens=False)["input_ids"]
        if len(paras) == 1:  # [CLS] A [SEP]
            assert ty == [0] * len(seq)
            got = seq[1:-1]
        else:  # [CLS] A [SEP] B [SEP]: A and B split at a paragraph boundary, types 0 then 1
            cut = seq.index(sep)
            assert ty == [0] * (cut + 1) + [1] * (len(seq) - cut - 1)
            got = seq[1:cut] + seq[cut + 1:-1]
        assert len(got) == len(body)
        diff = [i for i, (a, b) in enumerate(zip(got, body)) if a != b]
        assert len(diff) <= 1  # exactly one token was chosen for corruption (10 % of the time it stays)
        masked += got.count(mask)
    assert 0.6 * len(seqs) <= masked <= len(seqs)  # 80 % of the corrupted tokens become [MASK]


def test_long_documents_are_cut_at_the_target_and_truncated(tiny_tok):
    rng = random.Random(2)
    lines = ["", " " + _para(rng, 40) + " ", " " + _para(rng, 40) + " ", " " + _para(rng, 40) + " ", ""] * 6
    cols = kd_sequences(lines, tiny_tok, max_seq_len=48, seed=0, short_seq_prob=0.0)
    lens = [len(x) for x in cols["input_ids"]]
    assert lens and max(lens) == 47  # truncated to max_seq_len - 3 = 45 tokens (as the reference) + [CLS], [SEP]
    # short targets (the reference's short_seq_prob) gather fewer paragraphs per sequence
    lines = ["", " " + _para(rng, 14) + " ", " " + _para(rng, 14) + " ", " " + _para(rng, 14) + " ", ""] * 20
    full = kd_sequences(lines, tiny_tok, max_seq_len=64, seed=0, short_seq_prob=0.0)["input_ids"]
    short = kd_sequences(lines, tiny_tok, max_seq_len=64, seed=0, short_seq_prob=1.0)["input_ids"]
    assert len(short) > len(full)
    assert sum(len(x) for x in short) / len(short) < sum(len(x) for x in full) / len(full)


def test_load_pads_to_the_block_and_holds_out_documents(tiny_tok, tmp_path):
    lines, _ = _corpus()
    p = tmp_path / "wiki.train.raw"
    p.write_text("\n".join(lines) + "\n")
    ds = load_kd_sequences(p, tokenizer=tiny_tok, max_seq_len=64, cache_dir=tmp_path / "cache")
    rows = ds[list(range(len(ds)))]
    assert all(len(x) == 64 for x in rows["input_ids"]) and all(len(x) == 64 for x in rows["token_type_ids"])
    for ids, am in zip(rows["input_ids"], rows["attention_mask"]):
        n = sum(am)
        assert am == [1] * n + [0] * (64 - n) and ids[n:] == [tiny_tok.pad_token_id] * (64 - n)
    again = load_kd_sequences(p, tokenizer=tiny_tok, max_seq_len=64, cache_dir=tmp_path / "cache")  # from cache
    assert again[0] == ds[0] and len(again) == len(ds)
    # a single-file corpus: load_corpus holds out documents for validation; they are not KD training text
    full = load_kd_sequences(p, tokenizer=tiny_tok, max_seq_len=64, cache_dir=False, validation_fraction=0.0)
    assert len(full) > len(ds)


def test_wikitext_raw_gives_padded_section_sequences(shared_data, default_assets):
    """The real WikiText layout with the default (BERT uncased WordPiece) tokenizer: headings never start a
    document (their first token line holds '='), sequences are a section's paragraphs, much padding at 512."""
    from tamt.models import load_tokenizer

    tok = load_tokenizer("default")
    text = (shared_data / "wikitext" / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    lines = text.split("\n")
    cols = kd_sequences(lines, tok, max_seq_len=512, seed=0)
    lens = [len(x) for x in cols["input_ids"]]
    assert len(lens) > 100 and max(lens) <= 512
    assert sum(lens) / len(lens) < 0.8 * 512
    eq = tok.convert_tokens_to_ids("=")
    assert not any(eq in x.tolist()[:8] for x in cols["input_ids"])  # no '= Heading =' at a sequence start
    # a '=' in the first line drops the whole document
    para = " ".join(["word"] * 30)
    assert len(kd_sequences(["", " " + para + " ", ""], tok, max_seq_len=64)["input_ids"]) == 1
    assert len(kd_sequences(["", " " + para + " = x = ", ""], tok, max_seq_len=64)["input_ids"]) == 0
    with pytest.raises(ValueError, match="too short"):
        kd_sequences(lines[:50], tok, max_seq_len=3)
