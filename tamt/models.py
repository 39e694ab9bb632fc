"""Loading BERT-family encoders and tokenizers, plus tiny random models for tests.

* :func:`load_encoder` - a hub name, a local checkpoint folder, or ``"default"``
  (the embedded all-MiniLM-L6-v2 from :mod:`tamt.data.assets`); optionally with
  an MLM head, freshly initialised and tied to the word embeddings when the
  checkpoint has none.
* :func:`load_tokenizer` - the matching tokenizer.
* :func:`tiny_model` / :func:`tiny_tokenizer` - deterministic, offline, small
  models (hidden 32, 2 layers) and a ~190-token WordPiece tokenizer whose
  vocabulary size matches the tiny models, for fast tests.

``transformers`` is imported inside the functions so ``import tamt`` stays light.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EncoderInfo",
    "SUPPORTED_MODEL_TYPES",
    "TINY_FAMILIES",
    "TINY_VOCAB",
    "TINY_VOCAB_SIZE",
    "load_encoder",
    "load_tokenizer",
    "resolve_model_path",
    "tiny_config",
    "tiny_model",
    "tiny_tokenizer",
]

# model_type (config.json) -> family name; these are the module layouts tamt.nn maps to roles.
SUPPORTED_MODEL_TYPES = {
    "bert": "bert",  # BERT, MiniLM and other BERT-named checkpoints
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "distilbert": "distilbert",
    "electra": "electra",
}

TINY_FAMILIES = ("bert", "roberta", "distilbert", "electra")


@dataclass
class EncoderInfo:
    """What :func:`load_encoder` did.

    ``head_initialised`` is True when the model has an MLM head whose weights
    were not in the checkpoint (freshly initialised; decoder tied to the word
    embeddings). ``missing_keys`` / ``unexpected_keys`` are the loader's
    report; ``encoder_missing_keys`` are missing keys outside the head (e.g. a
    pooler the checkpoint never had).
    """

    source: str
    model_type: str
    family: str
    with_mlm_head: bool
    head_initialised: bool = False
    decoder_tied: bool | None = None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    encoder_missing_keys: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:  # dict-style access, e.g. info["head_initialised"]
        return getattr(self, key)


def _is_default(name_or_path) -> bool:
    return name_or_path is None or (isinstance(name_or_path, str) and name_or_path == "default")


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~", ".\\")) or os.path.isabs(s) or s.endswith(("/", os.sep))


def resolve_model_path(name_or_path: str | os.PathLike | None) -> str:
    """``None``/"default" -> embedded MiniLM folder; existing path -> that folder; else a hub id.

    Raises FileNotFoundError for something that is clearly a path but does not exist, and for a hub
    name that is not in the local Hugging Face cache while the hub is offline or unreachable (decided in
    seconds: no retries).  A cached hub model then resolves to its local snapshot folder.
    """
    if _is_default(name_or_path):
        from tamt.data.assets import default_model_path

        return str(default_model_path())
    s = os.fspath(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"{p} is a file; pass the checkpoint folder (with config.json), not a file")
        if not (p / "config.json").is_file():
            raise ValueError(f"{p} has no config.json: not a Hugging Face checkpoint folder")
        return str(p)
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(s):
        raise FileNotFoundError(f"model folder {s!r} does not exist")
    from tamt.hub import cached_model_folder, hub_problem

    problem = hub_problem()
    if problem is not None:
        cached = cached_model_folder(s)
        if cached is None:
            raise FileNotFoundError(
                f"model {s!r} is not a local folder, not in the Hugging Face cache, and the hub is {problem}; "
                "pass a local checkpoint folder (with config.json), or 'default' for the embedded MiniLM")
        return cached
    return s


def _hub_error(source: str, exc: Exception) -> OSError:
    offline = any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    hint = " (HF_HUB_OFFLINE is set)" if offline else ""
    return OSError(
        f"could not load {source!r}: not a local folder and not loadable from the Hugging Face hub{hint}: {exc}. "
        "Pass an existing checkpoint folder, or 'default' for the embedded MiniLM."
    )


@contextlib.contextmanager
def _quiet_transformers():
    """The loader prints a load report for every missing key; we return it in EncoderInfo instead."""
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)
        if bar:
            hf_logging.enable_progress_bar()


def _is_deserialisation_error(exc: BaseException) -> bool:
    """A weight/config file that cannot be decoded: torn downloads and foreign files.

    Only these may be reported as "truncated or corrupt"; an ImportError (a
    package shadowed or missing), a TypeError or any other bug is a different
    problem and must not send the user to delete a good download."""
    import pickle

    names = {t.__name__ for t in type(exc).__mro__}
    if names & {"SafetensorError", "HeaderTooLarge", "HeaderTooSmall", "InvalidHeaderDeserialization"}:
        return True
    if isinstance(exc, (EOFError, pickle.UnpicklingError, UnicodeDecodeError)) or "JSONDecodeError" in names:
        return True
    msg = str(exc).lower()
    if isinstance(exc, (OSError, RuntimeError, ValueError)) and any(
            k in msg for k in ("truncat", "corrupt", "unexpected eof", "pytorchstreamreader", "invalid header",
                               "incomplete", "unable to load weights", "error while deserializing",
                               "failed finding central directory", "not a zip")):
        return True
    return False


def from_pretrained(cls, source: str, **kwargs):
    """``cls.from_pretrained`` quietly, with one-line errors: a torn weight file is named as such,
    an import failure as an installation problem; anything else propagates as itself."""
    try:
        with _quiet_transformers():
            return cls.from_pretrained(source, **kwargs)
    except ImportError as exc:  # e.g. a folder in the working directory shadowing a package transformers imports
        raise ImportError(
            f"{source}: loading the model failed while importing {exc.name or 'a module'!s} ({exc}); this is an "
            "installation problem, not a bad checkpoint: check that `python -c 'import transformers'` works from "
            "this folder and rerun `bash scripts/bootstrap.sh`", name=exc.name) from exc
    except Exception as exc:  # safetensors, torch and transformers raise many types for a torn file
        if not Path(source).exists():
            if isinstance(exc, OSError):
                raise _hub_error(source, exc) from exc
            raise
        if not _is_deserialisation_error(exc):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{source}: could not load the weights ({first}); the weight file is probably truncated "
                         "or corrupt: download or save the checkpoint again") from exc


def load_encoder(
    name_or_path: str | os.PathLike | None = "default",
    *,
    with_mlm_head: bool = False,
    dtype=None,
    output_info: bool = False,
):
    """Load a BERT-family encoder (``AutoModel``) or, with ``with_mlm_head``, an ``AutoModelForMaskedLM``.

    ``name_or_path``: ``"default"``/``None`` (embedded all-MiniLM-L6-v2), a local
    checkpoint folder, or a hub name (only works online). ``trust_remote_code``
    is always False; model types outside :data:`SUPPORTED_MODEL_TYPES` are
    refused with ValueError.

    When the checkpoint has no MLM head weights the head is freshly initialised
    (transformers' own init) with the decoder tied to the input word embeddings,
    and ``info.head_initialised`` is True.

    Returns the model (in eval mode, as from_pretrained leaves it), or
    ``(model, EncoderInfo)`` with ``output_info=True``. The info is also
    attached as ``model.tamt_load_info``.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    source = resolve_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        if Path(source).exists():
            raise ValueError(f"{source}: unreadable or unsupported config.json: {exc}") from exc
        raise _hub_error(source, exc) from exc
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{source}: model_type {model_type!r} is not a supported BERT-family encoder "
            f"(supported: {sorted(SUPPORTED_MODEL_TYPES)})"
        )
    cls = AutoModelForMaskedLM if with_mlm_head else AutoModel
    kwargs: dict[str, Any] = {"trust_remote_code": False, "output_loading_info": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model, loading = from_pretrained(cls, source, config=config, **kwargs)

    missing = sorted(loading.get("missing_keys", ()))
    unexpected = sorted(loading.get("unexpected_keys", ()))
    prefix = model.base_model_prefix + "."
    if with_mlm_head:
        head_missing = [k for k in missing if not k.startswith(prefix)]
        encoder_missing = [k for k in missing if k.startswith(prefix)]
    else:
        head_missing, encoder_missing = [], missing
    info = EncoderInfo(
        source=source,
        model_type=model_type,
        family=SUPPORTED_MODEL_TYPES[model_type],
        with_mlm_head=with_mlm_head,
        head_initialised=bool(head_missing),
        missing_keys=missing,
        unexpected_keys=unexpected,
        encoder_missing_keys=encoder_missing,
    )
    if with_mlm_head:
        out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
        if info.head_initialised and out_emb.weight is not in_emb.weight:
            # A fresh decoder is meaningless untied: TAMT keeps it tied to the (frozen) embeddings.
            out_emb.weight = in_emb.weight
        info.decoder_tied = out_emb.weight is in_emb.weight
    model.tamt_load_info = info
    return (model, info) if output_info else model


def load_tokenizer(name_or_path: str | os.PathLike | None = "default", **kwargs):
    """The (fast) tokenizer for a checkpoint; ``"default"`` is the embedded MiniLM's."""
    from transformers import AutoTokenizer

    source = resolve_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        if Path(source).exists():
            raise ValueError(f"{source}: could not load a tokenizer: {exc}") from exc
        raise _hub_error(source, exc) from exc


# ---------------------------------------------------------------------------
# tiny models for tests

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_PUNCT = list(".,!?;:'\"()-/&%$")
_WORDS = (
    "the of and to a in is was for on that with as by it at from his he an be are were this which or "
    "had first one their its new after who they have her she two been other when there all during into "
    "school time may years more most only over city some world would where later up such used many can "
    "state about national out known university united then made film than war game also but not no "
    "what how why you we i my me our your us them him will has do does did so if very just good bad "
    "great movie story people man woman day year life work part water music book"
).split()
TINY_VOCAB: list[str] = list(dict.fromkeys(  # ordered de-duplication ("a", "i" are letters and words)
    _SPECIALS
    + _PUNCT
    + [str(d) for d in range(10)]
    + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    + ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    + ["##" + str(d) for d in range(10)]
    + _WORDS
))
TINY_VOCAB_SIZE = len(TINY_VOCAB)


def tiny_tokenizer():
    """A deterministic offline ``BertTokenizer`` (fast) over :data:`TINY_VOCAB` (lower-cased WordPiece).

    Any lower-case ASCII word tokenises (whole word or letter pieces); other
    characters become [UNK]. Ids: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.
    """
    from transformers import BertTokenizer

    vocab = {tok: i for i, tok in enumerate(TINY_VOCAB)}
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)


def tiny_config(family: str, *, vocab_size: int | None = None, **overrides):
    """Config of a tiny random model: hidden 32, 2 layers, 2 heads, FFN 64, 128 positions.

    ELECTRA uses embedding_size 16 (< hidden) so its embedding projection is exercised,
    as in real ELECTRA-small. RoBERTa reserves 2 extra positions (its position ids
    start after the padding index). Pad id is 0 for every family ([PAD] of
    :func:`tiny_tokenizer`).
    """
    from transformers import BertConfig, DistilBertConfig, ElectraConfig, RobertaConfig

    v = TINY_VOCAB_SIZE if vocab_size is None else vocab_size
    common = dict(vocab_size=v, pad_token_id=0)
    if family == "bert":
        cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=128, type_vocab_size=2, **common)
    elif family == "roberta":
        cfg = RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=130, type_vocab_size=1, bos_token_id=2, eos_token_id=3,
                            **common)
    elif family == "distilbert":
        cfg = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128, **common)
    elif family == "electra":
        cfg = ElectraConfig(embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=128, type_vocab_size=2, **common)
    else:
        raise ValueError(f"unknown tiny model family {family!r}; choose from {TINY_FAMILIES}")
    for k, val in overrides.items():
        setattr(cfg, k, val)
    return cfg


def tiny_model(family: str = "bert", seed: int = 0, with_mlm_head: bool = False, **config_overrides):
    """A tiny randomly initialised model of ``family`` (bert | roberta | distilbert | electra).

    Deterministic for a given seed and does not disturb the global torch RNG.
    ``with_mlm_head`` gives the ``*ForMaskedLM`` class with the decoder tied to
    the word embeddings. Returned in eval mode (like from_pretrained).
    """
    import torch
    from transformers import AutoModel, AutoModelForMaskedLM

    cfg = tiny_config(family, **config_overrides)
    cls = AutoModelForMaskedLM if with_mlm_head else AutoModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls.from_config(cfg)
    return model.eval()
