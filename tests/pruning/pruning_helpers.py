"""Shared helpers of the pruning tests."""
from __future__ import annotations

import random

WORDS = ("the of and to a in is was for on that with as by it at from his he an be are were this which or had "
         "first one their its new after who they have her she two been other when there all during into school "
         "time may years more most only over city some world would where later up such used many can state").split()


def make_blocks(tokenizer, n_train=96, n_val=24, block=32, seed=0):
    """A DatasetDict of token blocks built directly (no disk cache)."""
    from datasets import Dataset, DatasetDict

    rng = random.Random(seed)

    def blocks(n):
        ids = []
        for _ in range(n):
            body = tokenizer(" ".join(rng.choice(WORDS) for _ in range(block)), add_special_tokens=False)["input_ids"]
            ids.append([tokenizer.cls_token_id] + body[: block - 2] + [tokenizer.sep_token_id])
        return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})

    return DatasetDict(train=blocks(n_train), validation=blocks(n_val))



FAST = dict(block_size=32, batch_size=8, progress=False, head_fit_steps=5, tensorboard=False)
