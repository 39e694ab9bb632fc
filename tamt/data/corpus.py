"""Pre-training corpora as fixed-length token blocks, and the MLM collator.

:func:`load_corpus` turns a corpus spec into a ``datasets.DatasetDict`` with
``train`` and ``validation`` (and ``test`` when the source has one) splits of
``input_ids`` / ``attention_mask`` blocks of exactly ``block_size`` tokens.
The recipe is the one the TAMT code uses (HF's TextDataset): tokenise the
documents without special tokens, concatenate them, cut the stream into
``block_size - n_special`` pieces (the tail of each 1,000-document batch is
dropped), and wrap every piece with the tokenizer's special tokens
(``[CLS] ... [SEP]`` for BERT, ``<s> ... </s>`` for RoBERTa).

Specs:

* ``"default"`` - the embedded English Wikipedia summaries (:mod:`tamt.data.assets`).
* a local file or folder: ``.txt``/``.raw``/``.tokens`` (one document per line,
  or per blank-line separated paragraph with ``sample_by="paragraph"``),
  ``.json`` (a list of strings or records, a dict of records such as the
  summaries file, or ``{"<key>": [records]}``), ``.jsonl``, ``.parquet``. In a
  folder, files whose names contain ``train`` / ``valid``/``dev`` / ``test`` give
  the splits; when none is a train file, all files are training text.
* ``"name"`` or ``"name:config"`` on the Hugging Face hub (e.g.
  ``"wikitext:wikitext-103-raw-v1"``) - online only.

When there is no validation split, ``validation_fraction`` of the documents
(not blocks, so no text is shared) is held out with ``seed``.

Tokenised blocks are cached on disk under ``<TAMT_CACHE or ~/.cache/tamt>/corpora``
keyed by the source files (path, size, mtime), the tokenizer and the arguments.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from itertools import chain
from pathlib import Path
from typing import Any

__all__ = ["load_corpus", "load_raw_corpus", "load_kd_sequences", "kd_sequences", "mlm_collator", "special_wrapping",
           "TEXT_FIELD_CANDIDATES"]

_TEXT_SUFFIXES = {".txt", ".raw", ".tokens", ".text"}
_KINDS = {**{s: "text" for s in _TEXT_SUFFIXES}, ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
TEXT_FIELD_CANDIDATES = ("text", "content", "extract", "body", "document", "article", "abstract", "summary",
                         "sentence", "passage")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
                  "val": "validation", "test": "test"}
_CACHE_FORMAT = 1  # bump when the block layout changes


# ---------------------------------------------------------------------------
# raw text


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def _split_of(path: Path) -> str | None:
    name = path.name.lower()
    for key in ("train", "validation", "valid", "dev", "test"):
        if key in name:
            return _SPLIT_ALIASES[key]
    return None


def _collect_files(root: Path) -> list[Path]:
    if root.is_file():
        if root.suffix.lower() not in _KINDS:
            raise ValueError(f"{root}: unsupported corpus file type {root.suffix!r} (use one of {sorted(_KINDS)})")
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _KINDS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"{root}: no corpus files ({', '.join(sorted(_KINDS))}) in this folder")
    return files


def _json_records(path: Path) -> list[Any]:
    """The records of a .json file: a list, a dict of records, or a dict holding one list."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); for one object per line use the .jsonl suffix") from exc
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        values = list(obj.values())
        if values and all(isinstance(v, (dict, str)) for v in values):
            return values  # e.g. {title: {"title", "extract", ...}}
        lists = [v for v in values if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]  # e.g. {"data": [...]}
    raise ValueError(f"{path}: JSON must be a list of records/strings or a dict of records")


def _pick_text_field(columns: dict[str, list], where: str, text_field: str | None) -> str:
    if text_field is not None:
        if text_field not in columns:
            raise ValueError(f"{where}: no field {text_field!r} (fields: {sorted(columns)})")
        return text_field
    strings = {k: v for k, v in columns.items() if v and all(isinstance(x, str) or x is None for x in v[:100])}
    for cand in TEXT_FIELD_CANDIDATES:
        if cand in strings:
            return cand
    if not strings:
        raise ValueError(f"{where}: no string field to use as text (fields: {sorted(columns)}); pass text_field=")
    # Otherwise the string column with the longest texts is the body (titles and labels are short).
    return max(strings, key=lambda k: sum(len(x or "") for x in strings[k][:100]))


def _records_to_dataset(records: list[Any], where: str, text_field: str | None):
    from datasets import Dataset

    if all(isinstance(r, str) for r in records):
        return Dataset.from_dict({"text": records})
    if not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{where}: records must all be strings or all be objects")
    keys = list(dict.fromkeys(chain.from_iterable(records)))
    columns = {k: [r.get(k) for r in records] for k in keys}
    field = _pick_text_field(columns, where, text_field)
    return Dataset.from_dict({"text": [x if isinstance(x, str) else "" for x in columns[field]]})


def _load_files(files: list[Path], where: str, text_field: str | None, sample_by: str):
    """One Dataset with a 'text' column from files of one kind."""
    from datasets import concatenate_datasets, load_dataset

    kinds = {_KINDS[p.suffix.lower()] for p in files}
    if len(kinds) > 1:
        raise ValueError(f"{where}: mixed corpus file types {sorted(kinds)}; point at files of one type")
    kind = kinds.pop()
    data_files = [str(p) for p in files]
    if kind == "json":
        return concatenate_datasets([_records_to_dataset(_json_records(p), str(p), text_field) for p in files])
    if kind == "text":
        ds = load_dataset("text", data_files=data_files, split="train", sample_by=sample_by)
    else:
        ds = load_dataset("json" if kind == "jsonl" else "parquet", data_files=data_files, split="train")
    if text_field is None and "text" in ds.column_names and ds.features["text"].dtype == "string":
        field = "text"
    else:
        sample = ds.select(range(min(100, len(ds))))
        field = _pick_text_field({c: sample[c] for c in ds.column_names}, where, text_field)
    ds = ds.select_columns([field])
    return ds.rename_column(field, "text") if field != "text" else ds


def load_raw_corpus(spec: str | os.PathLike = "default", *, text_field: str | None = None,
                    sample_by: str = "line", drop_blank: bool = True):
    """The untokenised corpus: a DatasetDict of a single ``text`` column, empty documents dropped
    (``drop_blank=False`` keeps them: the blank lines that separate WikiText's sections)."""
    from datasets import DatasetDict, load_dataset

    if isinstance(spec, str) and spec == "default":
        from tamt.data.assets import default_corpus_path

        spec = default_corpus_path()
    path = Path(os.fspath(spec)).expanduser()
    if path.exists():
        files = _collect_files(path)
        by_split: dict[str, list[Path]] = {}
        for p in files:
            by_split.setdefault(_split_of(p) or "train", []).append(p)
        if "train" not in by_split or any(_split_of(p) is None for p in files):
            by_split = {"train": files}  # split names only count when every file has one and a train exists
        raw = DatasetDict({s: _load_files(fs, str(path), text_field, sample_by) for s, fs in by_split.items()})
    else:
        s = os.fspath(spec)
        if isinstance(spec, os.PathLike) or s.startswith(("/", ".", "~")) or os.path.splitext(s)[1].lower() in _KINDS:
            raise FileNotFoundError(f"corpus path {s!r} does not exist")
        name, _, config = s.partition(":")
        if _offline():
            raise ConnectionError(
                f"corpus {s!r} is not a local path and would come from the Hugging Face hub, but the hub is "
                "offline (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE set). Pass a local file or folder, or 'default'."
            )
        from tamt.hub import hub_problem, is_hub_error

        problem = hub_problem("dataset")  # fail in seconds, not after the hub client's retries
        if problem:
            raise ConnectionError(f"corpus {s!r} is not a local path and the Hugging Face hub is {problem}; pass a "
                                  "local file or folder, or 'default'")
        try:
            loaded = load_dataset(name, config or None)
        except Exception as exc:  # datasets raises many types for network/name problems
            if not is_hub_error(exc):
                raise
            raise ConnectionError(f"could not load corpus {s!r} from the Hugging Face hub: {exc}") from exc
        raw = DatasetDict()
        for split, ds in loaded.items():
            key = _SPLIT_ALIASES.get(split, split)
            sample = ds.select(range(min(100, len(ds))))
            field = _pick_text_field({c: sample[c] for c in ds.column_names}, s, text_field)
            ds = ds.select_columns([field])
            raw[key] = ds.rename_column(field, "text") if field != "text" else ds
    if not drop_blank:
        return raw
    raw = raw.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True)
    if "train" not in raw or len(raw["train"]) == 0:
        raise ValueError(f"corpus {os.fspath(spec)!r} is empty (no non-blank documents in its training text)")
    return raw


# ---------------------------------------------------------------------------
# blocks


def _source_key(spec) -> Any:
    if isinstance(spec, str) and spec == "default":
        from tamt.data.assets import ASSETS

        return ["asset", ASSETS["corpus"].sha256]
    path = Path(os.fspath(spec)).expanduser()
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return ["hub", os.fspath(spec)]


def _cache_key(spec, tokenizer, **params) -> str:
    from datasets.fingerprint import Hasher

    payload = json.dumps({"format": _CACHE_FORMAT, "source": _source_key(spec), "params": params,
                          "tokenizer": Hasher.hash(tokenizer)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def special_wrapping(tokenizer) -> tuple[list[int], list[int]]:
    """The special-token ids a tokenizer puts before and after a single sequence.

    transformers 5 dropped ``build_inputs_with_special_tokens`` from fast
    tokenizers, so we read the template off the encoding of one known token.
    """
    probe = tokenizer.unk_token or tokenizer.pad_token
    probe_id = tokenizer.convert_tokens_to_ids(probe)
    ids = tokenizer(probe, add_special_tokens=True)["input_ids"]
    if ids.count(probe_id) != 1:
        raise ValueError(f"cannot read the special-token template of {type(tokenizer).__name__}: {ids}")
    i = ids.index(probe_id)
    prefix, suffix = ids[:i], ids[i + 1:]
    if len(prefix) + len(suffix) != tokenizer.num_special_tokens_to_add(pair=False):
        raise ValueError(f"inconsistent special-token template for {type(tokenizer).__name__}: {ids}")
    return prefix, suffix


def _default_cache_dir() -> Path:
    from tamt.data.assets import cache_root

    return cache_root() / "corpora"


def load_corpus(
    spec: str | os.PathLike = "default",
    *,
    tokenizer,
    block_size: int = 128,
    validation_fraction: float = 0.05,
    seed: int = 0,
    max_blocks: int | None = None,
    text_field: str | None = None,
    sample_by: str = "line",
    cache_dir: str | os.PathLike | None | bool = None,
    num_proc: int | None = None,
):
    """Tokenised fixed-length blocks of a corpus: ``DatasetDict(train=..., validation=...)``.

    Every block has exactly ``block_size`` tokens, starts with the tokenizer's
    first special token and ends with its last one; ``attention_mask`` is all
    ones. ``max_blocks`` caps every split (after the held-out split was made).
    ``cache_dir=False`` disables the on-disk cache.
    """
    from datasets import DatasetDict, load_from_disk

    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if max_blocks is not None and max_blocks < 1:
        raise ValueError(f"max_blocks must be >= 1 (or None for the whole corpus), got {max_blocks}")
    n_special = tokenizer.num_special_tokens_to_add(pair=False)
    body = block_size - n_special
    if body < 1:
        raise ValueError(f"block_size {block_size} leaves no room for text next to {n_special} special tokens")

    cache_path = None
    if cache_dir is not False:
        root = Path(cache_dir) if cache_dir not in (None, True) else _default_cache_dir()
        key = _cache_key(spec, tokenizer, block_size=block_size, validation_fraction=validation_fraction, seed=seed,
                         max_blocks=max_blocks, text_field=text_field, sample_by=sample_by)
        cache_path = root / key
        if (cache_path / "dataset_dict.json").is_file():
            return load_from_disk(str(cache_path))

    raw = load_raw_corpus(spec, text_field=text_field, sample_by=sample_by)
    if "validation" not in raw and validation_fraction > 0:
        if len(raw["train"]) < 2:
            raise ValueError(f"corpus {os.fspath(spec)!r} has a single document; cannot hold out a validation "
                             "split of documents: give more documents, or hold out the last blocks instead "
                             "(validation_fraction=0; tamt search/eval-pretrain --validation-fraction 0)")
        parts = raw["train"].train_test_split(test_size=validation_fraction, seed=seed, shuffle=True)
        raw = DatasetDict({"train": parts["train"], "validation": parts["test"], **{k: v for k, v in raw.items()
                                                                                    if k != "train"}})

    def tokenize(batch):
        enc = tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)
        return {"input_ids": enc["input_ids"]}

    prefix, suffix = special_wrapping(tokenizer)

    def group(batch):
        ids = list(chain.from_iterable(batch["input_ids"]))
        usable = (len(ids) // body) * body
        blocks = [prefix + ids[i:i + body] + suffix for i in range(0, usable, body)]
        return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]}

    out = DatasetDict()
    for split, ds in raw.items():
        toks = ds.map(tokenize, batched=True, remove_columns=ds.column_names, num_proc=num_proc,
                      desc=f"tokenise {split}")
        blocks = toks.map(group, batched=True, batch_size=1000, num_proc=num_proc, desc=f"blocks {split}")
        if len(blocks) == 0:
            total = sum(len(x) for x in toks["input_ids"])
            raise ValueError(f"corpus {os.fspath(spec)!r}: split {split!r} has {total} tokens, not enough for one "
                             f"block of {block_size}; use a smaller block_size or more text")
        if max_blocks is not None:
            blocks = blocks.select(range(min(max_blocks, len(blocks))))
        out[split] = blocks

    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_path.parent))
        try:
            from tamt.io import honour_umask

            honour_umask(tmp, folder=True)  # mkdtemp makes it 0700; the cache is shared like any folder
            out.save_to_disk(str(tmp))
            os.rename(tmp, cache_path)  # atomic publish; a concurrent writer that lost the race keeps its copy
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        if (cache_path / "dataset_dict.json").is_file():
            return load_from_disk(str(cache_path))  # memory-mapped rather than held in RAM
    return out


# ---------------------------------------------------------------------------
# MLM


def mlm_collator(tokenizer, mlm_probability: float = 0.15, seed: int | None = None, *, generator=None,
                 mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                 pad_to_multiple_of: int | None = None):
    """BERT's MLM masking (transformers' DataCollatorForLanguageModeling).

    ``mlm_probability`` of the non-special tokens are chosen; of those 80 % become
    [MASK], 10 % a random token, 10 % stay. Labels are -100 elsewhere.
    Deterministic with ``seed`` (the collator's own RNG; DataLoader workers get
    seed + worker id) or with an explicit ``torch.Generator`` via ``generator``;
    with neither it draws from the global torch RNG.
    """
    from transformers import DataCollatorForLanguageModeling

    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    collator = DataCollatorForLanguageModeling(
        tokenizer=tokenizer, mlm=True, mlm_probability=mlm_probability, mask_replace_prob=mask_replace_prob,
        random_replace_prob=random_replace_prob, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt",
        seed=seed,
    )
    if generator is not None:
        collator.generator = generator  # used as-is: with seed=None the collator never replaces it
    return collator


# ---------------------------------------------------------------------------
# TAMT-KD's training sequences as the reference code generates them


_KD_CACHE_FORMAT = 1


def _pair_template(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """(prefix, middle, suffix) special ids of a sequence pair: [CLS] A [SEP] B [SEP] -> ([CLS], [SEP], [SEP])."""
    probe = tokenizer.unk_token or tokenizer.pad_token
    pid = tokenizer.convert_tokens_to_ids(probe)
    ids = tokenizer(probe, probe, add_special_tokens=True)["input_ids"]
    at = [i for i, x in enumerate(ids) if x == pid]
    if len(at) != 2:
        raise ValueError(f"cannot read the pair template of {type(tokenizer).__name__}: {ids}")
    return ids[:at[0]], ids[at[0] + 1:at[1]], ids[at[1] + 1:]


def kd_sequences(texts, tokenizer, *, max_seq_len: int, seed: int = 0, short_seq_prob: float = 0.1,
                 held_out=frozenset()) -> dict[str, list]:
    """The reference's TAMT-KD sequences (``mask_training/pregenerate_training_data.py --one_seq``) from raw lines.

    * documents: runs of consecutive non-blank lines (WikiText: the paragraphs of one section) between
      blank lines; a document is kept only when its first line has at least 20 tokens and no ``=``
      token (so WikiText's ``= Heading =`` lines never start one).  A source without blank lines (records,
      e.g. the embedded summaries) gives one document per record, split at its line breaks.
    * per document the target length is ``max_seq_len - 3``, with probability ``short_seq_prob`` a random
      length in [2, max_seq_len - 3]; lines are gathered until the target is reached, split at a random
      line into segments A and B (same document), truncated (randomly from the front or back of the
      longer segment) to the target and laid out ``[CLS] A [SEP] B [SEP]`` (``[CLS] A [SEP]`` when B is
      empty) with token types 0 / 1;
    * exactly one token per sequence is corrupted as in BERT's MLM (``masked_lm_prob=0`` still masks
      ``max(1, 0)`` token): 80 % [MASK], 10 % a random token, 10 % unchanged;
    * sequences are not padded here (:func:`load_kd_sequences` pads each row to ``max_seq_len``).

    ``texts``: the corpus rows in order (blank ones included); rows in ``held_out`` are skipped.
    Returns columns ``input_ids``, ``token_type_ids`` (numpy int32 arrays).
    """
    import random

    import numpy as np

    rng = random.Random(seed)
    texts = list(texts)
    line_stream = any(not (t or "").strip() for t in texts[:100_000])
    prefix, middle, suffix = _pair_template(tokenizer)
    single_suffix = special_wrapping(tokenizer)[1]
    max_tokens = max_seq_len - len(prefix) - len(middle) - len(suffix)
    if max_tokens < 2:
        raise ValueError(f"max_seq_len {max_seq_len} is too short for a KD sequence")
    eq_id = tokenizer.get_vocab().get("=")
    mask_id, vocab = tokenizer.mask_token_id, len(tokenizer)
    dot = tokenizer.convert_tokens_to_ids(".")

    # one stream of lines with None marking a document break
    lines: list[str | None] = []
    for t in texts:
        if t in held_out:
            continue
        if line_stream:
            lines.append(t.strip() or None)
        else:
            lines.extend(x.strip() for x in t.split("\n") if x.strip())
            lines.append(None)
    body = [x for x in lines if x is not None]
    ids: list = []
    for i in range(0, len(body), 10_000):
        enc = tokenizer(body[i:i + 10_000], add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)["input_ids"]
        ids.extend(np.asarray(x, dtype=np.int32) for x in enc)
    docs, doc, it = [], [], iter(ids)
    for x in lines:
        if x is not None:
            doc.append(next(it))
            continue
        if doc and (eq_id is None or eq_id not in doc[0]) and len(doc[0]) >= 20:
            docs.append(doc)
        doc = []
    if doc:  # the reference keeps a last document that does not end with a blank line, unfiltered
        docs.append(doc)

    out_ids, out_types = [], []
    for doc in docs:
        target = max_tokens
        if rng.random() < short_seq_prob:
            target = rng.randint(2, max_tokens)
        chunk, length = [], 0
        for i, seg in enumerate(doc):
            chunk.append(seg)
            length += len(seg)
            if i != len(doc) - 1 and length < target:
                continue
            a_end = rng.randrange(1, len(chunk)) if len(chunk) >= 2 else 1
            a = np.concatenate(chunk[:a_end]) if a_end else np.zeros(0, np.int32)
            b = np.concatenate(chunk[a_end:]) if a_end < len(chunk) else np.zeros(0, np.int32)
            if a.size == 0:
                a = np.asarray([dot], dtype=np.int32)
            # truncate_seq_pair: drop one token at a time from the front or back of the longer segment
            a0, a1, b0, b1 = 0, a.size, 0, b.size
            while (a1 - a0) + (b1 - b0) > max_tokens:
                if (a1 - a0) > (b1 - b0):
                    if rng.random() < 0.5:
                        a0 += 1
                    else:
                        a1 -= 1
                elif rng.random() < 0.5:
                    b0 += 1
                else:
                    b1 -= 1
            a, b = a[a0:a1], b[b0:b1]
            if b.size:
                seq = np.concatenate([prefix, a, middle, b, suffix]).astype(np.int32)
                types = np.concatenate([np.zeros(len(prefix) + a.size + len(middle), np.int32),
                                        np.ones(b.size + len(suffix), np.int32)])
                cand_lo, cand = len(prefix), a.size  # candidate positions: A ...
                cand_b = (len(prefix) + a.size + len(middle), b.size)  # ... and B
            else:
                seq = np.concatenate([prefix, a, single_suffix]).astype(np.int32)
                types = np.zeros(seq.size, np.int32)
                cand_lo, cand, cand_b = len(prefix), a.size, (0, 0)
            j = rng.randrange(cand + cand_b[1])
            pos = cand_lo + j if j < cand else cand_b[0] + (j - cand)
            if rng.random() < 0.8:
                seq[pos] = mask_id
            elif rng.random() >= 0.5:
                seq[pos] = rng.randrange(vocab)
            out_ids.append(seq)
            out_types.append(types)
            chunk, length = [], 0
    return {"input_ids": out_ids, "token_type_ids": out_types}


def _pad_rows(pad_id: int, max_seq_len: int, with_types: bool):
    def transform(batch):
        out = {"input_ids": [], "attention_mask": []}
        if with_types:
            out["token_type_ids"] = []
        for i, ids in enumerate(batch["input_ids"]):
            n = len(ids)
            out["input_ids"].append(list(ids) + [pad_id] * (max_seq_len - n))
            out["attention_mask"].append([1] * n + [0] * (max_seq_len - n))
            if with_types:
                out["token_type_ids"].append(list(batch["token_type_ids"][i]) + [0] * (max_seq_len - n))
        return out

    return transform


def load_kd_sequences(spec: str | os.PathLike = "default", *, tokenizer, max_seq_len: int = 512,
                      validation_fraction: float = 0.05, seed: int = 0, short_seq_prob: float = 0.1,
                      cache_dir: str | os.PathLike | None | bool = None):
    """The reference's TAMT-KD training sequences of a corpus (:func:`kd_sequences`), padded to ``max_seq_len``.

    Built from the training text; when the corpus has no validation split, the documents that
    :func:`load_corpus` holds out (same ``validation_fraction`` and ``seed``) are left out, so the
    held-out blocks stay unseen.  Rows read back padded with the tokenizer's pad id: ``input_ids``,
    ``attention_mask`` (1 on real tokens) and, for tokenizers with token types, ``token_type_ids``.
    Cached on disk like :func:`load_corpus`.
    """
    from datasets import Dataset, load_from_disk

    with_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def finish(ds):
        ds.set_transform(_pad_rows(pad, max_seq_len, with_types))
        return ds

    cache_path = None
    if cache_dir is not False:
        root = Path(cache_dir) if cache_dir not in (None, True) else _default_cache_dir()
        key = _cache_key(spec, tokenizer, kind="kd-sequences", format=_KD_CACHE_FORMAT, max_seq_len=max_seq_len,
                         validation_fraction=validation_fraction, seed=seed, short_seq_prob=short_seq_prob)
        cache_path = root / f"kd-{key}"
        if (cache_path / "dataset_info.json").is_file():
            return finish(load_from_disk(str(cache_path)))

    raw = load_raw_corpus(spec, drop_blank=False)
    held_out: frozenset = frozenset()
    if "validation" not in raw and validation_fraction > 0:
        kept = load_raw_corpus(spec)["train"]
        if len(kept) >= 2:
            held_out = frozenset(kept.train_test_split(test_size=validation_fraction, seed=seed,
                                                       shuffle=True)["test"]["text"])
    cols = kd_sequences(raw["train"]["text"], tokenizer, max_seq_len=max_seq_len, seed=seed,
                        short_seq_prob=short_seq_prob, held_out=held_out)
    if not cols["input_ids"]:
        raise ValueError(f"corpus {os.fspath(spec)!r} gave no KD sequences (no document whose first paragraph "
                         "has at least 20 tokens); use kd_data='blocks'")
    if not with_types:
        del cols["token_type_ids"]
    ds = Dataset.from_dict(cols)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_path.parent))
        try:
            ds.save_to_disk(str(tmp))
            os.rename(tmp, cache_path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        if (cache_path / "dataset_info.json").is_file():
            return finish(load_from_disk(str(cache_path)))
    return finish(ds)
