"""Which modules of each encoder family are TAMT's masked matrices.

TAMT masks, in every layer, Q, K, V, the attention output, the intermediate
and the output dense weights, plus the pooler and the word embeddings
(TAMT_SPEC.md, "Masked matrices").  Names are relative to the model's base
encoder (``model.base_model``), so a mask found on ``BertForMaskedLM`` applies
to ``BertForSequenceClassification`` and to a bare ``BertModel`` alike.

BERT, RoBERTa, ELECTRA and every "BERT-named" encoder (MiniLM, TinyBERT, ...)
share the BERT module names; DistilBERT has its own.
"""
from __future__ import annotations

import re

ROLES = (
    "query", "key", "value", "attention_output", "intermediate", "output", "pooler", "word_embeddings",
)

_L = r"(?:^|\.)(?:layer|layers)\.\d+\."
ROLE_PATTERNS: dict[str, re.Pattern] = {
    role: re.compile(p)
    for role, p in {
        "query": _L + r"attention\.(?:self\.query|q_lin)$",
        "key": _L + r"attention\.(?:self\.key|k_lin)$",
        "value": _L + r"attention\.(?:self\.value|v_lin)$",
        "attention_output": _L + r"attention\.(?:output\.dense|out_lin)$",
        "intermediate": _L + r"(?:intermediate\.dense|ffn\.lin1)$",
        "output": _L + r"(?:output\.dense|ffn\.lin2)$",
        "pooler": r"(?:^|\.)pooler\.dense$",
        "word_embeddings": r"(?:^|\.)embeddings\.word_embeddings$",
    }.items()
}


def role_of(module_name: str) -> str | None:
    for role, pattern in ROLE_PATTERNS.items():
        if pattern.search(module_name):
            return role
    return None


def resolve_targets(targets) -> tuple[str, ...]:
    """'tamt' -> all roles; 'linear' -> all but the embeddings; or an iterable of roles."""
    if targets in (None, "tamt", "all"):
        return ROLES
    if targets == "linear":
        return tuple(r for r in ROLES if r != "word_embeddings")
    if isinstance(targets, str):
        targets = [targets]
    targets = tuple(targets)
    unknown = [t for t in targets if t not in ROLES]
    if unknown:
        raise ValueError(f"unknown target role(s) {unknown}; choose from {', '.join(ROLES)} or 'tamt' / 'linear'")
    return targets
