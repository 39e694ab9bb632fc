"""Pre-training objectives of the search: MLM and hidden-state KD, plus BERT's MLM masking.

Losses are returned as (sum, count) pairs so that data-parallel ranks can
divide by the *global* count and reproduce a single process exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100


def special_tokens_mask(input_ids: Tensor, special_ids: Tensor) -> Tensor:
    return torch.isin(input_ids, special_ids)


def mask_tokens(input_ids: Tensor, attention_mask: Tensor, *, special_ids: Tensor, mask_id: int, vocab_size: int,
                generator: torch.Generator, probability: float = 0.15) -> tuple[Tensor, Tensor]:
    """BERT masking: ``probability`` of the non-special tokens; 80 % [MASK], 10 % random, 10 % kept.

    Draws only from ``generator`` (CPU), so the masking of a batch is a pure
    function of the generator state (checkpointed for resume).
    Returns (masked input ids, labels with -100 where not selected).
    """
    ids = input_ids.cpu()
    shape = ids.shape
    u_sel = torch.rand(shape, generator=generator)
    u_kind = torch.rand(shape, generator=generator)
    rnd = torch.randint(vocab_size, shape, generator=generator)
    eligible = ~special_tokens_mask(ids, special_ids.cpu()) & attention_mask.cpu().bool()
    selected = (u_sel < probability) & eligible
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE))
    out = ids.clone()
    out[selected & (u_kind < 0.8)] = mask_id
    use_rnd = selected & (u_kind >= 0.8) & (u_kind < 0.9)
    out[use_rnd] = rnd[use_rnd]
    return out.to(input_ids.device), labels.to(input_ids.device)


def mlm_head_forward(mlm_model: nn.Module, hidden: Tensor) -> Tensor:
    """Logits of the model's MLM head for hidden states ``hidden`` (any leading shape)."""
    if hasattr(mlm_model, "cls") and hasattr(mlm_model.cls, "predictions"):  # BERT, MiniLM
        return mlm_model.cls(hidden)
    if hasattr(mlm_model, "lm_head"):  # RoBERTa
        return mlm_model.lm_head(hidden)
    if hasattr(mlm_model, "vocab_projector"):  # DistilBERT
        h = mlm_model.vocab_layer_norm(mlm_model.activation(mlm_model.vocab_transform(hidden)))
        return mlm_model.vocab_projector(h)
    if hasattr(mlm_model, "generator_lm_head"):  # ELECTRA generator
        return mlm_model.generator_lm_head(mlm_model.generator_predictions(hidden))
    raise ValueError(f"don't know the MLM head of {type(mlm_model).__name__}")


def mlm_head_parameters(mlm_model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The head's own parameters: everything outside the base encoder except the tied decoder weight."""
    prefix = mlm_model.base_model_prefix + "."
    emb = mlm_model.get_input_embeddings().weight
    out = []
    for n, p in mlm_model.named_parameters():
        if n.startswith(prefix) or p is emb:
            continue
        out.append((n, p))
    return out


def mlm_loss_sum(mlm_model: nn.Module, hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(sum of CE over the selected tokens, number of selected tokens, number predicted correctly).

    The head runs only on the selected positions (the vocab projection is the
    expensive part).
    """
    sel = labels != IGNORE
    h = hidden[sel]
    y = labels[sel]
    if y.numel() == 0:
        zero = hidden.sum() * 0.0
        return zero, torch.zeros((), device=hidden.device), torch.zeros((), device=hidden.device)
    logits = mlm_head_forward(mlm_model, h).float()
    loss = F.cross_entropy(logits, y, reduction="sum")
    correct = (logits.argmax(-1) == y).sum().float()
    return loss, torch.tensor(float(y.numel()), device=hidden.device), correct


def kd_loss_sum(student_hidden, teacher_hidden, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """(sum over layers 1..L of the sum over real tokens of 1 - cos(h_s, h_t), number of real tokens).

    Dividing by (count * L) gives the paper's loss: the mean over layers of the
    mean over tokens. Index 0 (the embedding output) is skipped.
    """
    m = attention_mask.bool()
    total = None
    for hs, ht in zip(student_hidden[1:], teacher_hidden[1:]):
        cos = F.cosine_similarity(hs.float(), ht.float(), dim=-1)
        term = (1.0 - cos)[m].sum()
        total = term if total is None else total + term
    return total, torch.tensor(float(m.sum()), device=attention_mask.device)


def teacher_forward(teacher: nn.Module, ids: Tensor, attention_mask: Tensor, *, dropout: bool = False, call=None,
                    **kwargs):
    """The frozen KD teacher's outputs (with hidden states) for a training batch, without gradients.

    ``dropout=True`` runs the teacher in train mode, as the reference TAMT-KD
    script does (it never calls ``teacher.eval()``, so the teacher's dropout is
    active); the teacher goes back to eval mode afterwards, so held-out
    evaluation stays deterministic.  ``call``: what runs the forward (default the
    teacher itself; the search passes its ``torch.compile`` wrapper of it).
    """
    was_training = teacher.training
    teacher.train(dropout)
    try:
        with torch.no_grad():
            fn = teacher if call is None else call  # (a compiled module has no truth value)
            return fn(input_ids=ids, attention_mask=attention_mask, output_hidden_states=True, **kwargs)
    finally:
        teacher.train(was_training)
