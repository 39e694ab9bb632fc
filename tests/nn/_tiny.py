"""Tiny randomly initialised encoders of each supported family (no hub needed)."""
from __future__ import annotations

import torch

FAMILIES = ("bert", "roberta", "distilbert", "electra")


def tiny(family: str, seed: int = 0, task: str = "mlm"):
    import transformers as tf

    common = dict(vocab_size=97, max_position_embeddings=64)
    if family == "distilbert":
        cfg = tf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=48, **common)
    else:
        cls = {"bert": tf.BertConfig, "roberta": tf.RobertaConfig, "electra": tf.ElectraConfig}[family]
        extra = {"embedding_size": 32} if family == "electra" else {}
        cfg = cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                  pad_token_id=1 if family == "roberta" else 0, **common, **extra)
    torch.manual_seed(seed)
    if task == "mlm":
        model = tf.AutoModelForMaskedLM.from_config(cfg)
    elif task == "cls":
        cfg.num_labels = 3
        model = tf.AutoModelForSequenceClassification.from_config(cfg)
    else:
        model = tf.AutoModel.from_config(cfg)
    return model.eval()


def ids(batch=2, length=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 97, (batch, length), generator=g)
