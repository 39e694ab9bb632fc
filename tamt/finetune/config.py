"""Fine-tuning settings: one dataclass, per-task defaults, named presets.

Defaults follow TAMT_SPEC.md ("Downstream transfer"):
  GLUE  lr 2e-5, batch 32, max_seq_length 128, 3 epochs;
  SQuAD lr 3e-5, batch 16, max_seq_length 384, doc stride 128, 2 epochs;
periodic evaluation, best-dev (the paper's protocol) and final scores.

Presets:
  ``paper``     - the paper's full setup (needs the hub or full GLUE/SQuAD files and a GPU).
  ``cpu-small`` - a cheap CPU setting for demos and tests (short sequences, one epoch, small train sets).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
DEMO_TASKS = ("sentiment", "rating", "nli")  # the embedded demo tasks (tamt.data.glue.load_demo_task)
TASKS = GLUE_TASKS + ("squad",) + DEMO_TASKS


@dataclass
class FinetuneConfig:
    lr: float = 2e-5
    batch_size: int = 32
    eval_batch_size: int = 64
    max_seq_length: int = 128
    epochs: float = 3.0
    max_steps: int | None = None          # overrides epochs when set
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0             # linear warm-up over this fraction of steps
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    eval_every: int | None = None         # steps between evaluations; None -> eval_per_epoch
    eval_per_epoch: int = 2               # evaluations per epoch when eval_every is None
    train_size: int | None = None         # data scarcity: subsample the train split
    eval_size: int | None = None          # cap the dev set (cheap runs); None = full dev set
    stratify: bool = True
    seeds: tuple[int, ...] = (42,)
    doc_stride: int = 128                 # SQuAD
    max_answer_length: int = 30           # SQuAD
    n_best_size: int = 20                 # SQuAD
    save_model: bool = False
    select_metric: str | None = None      # dev metric the best checkpoint is chosen by; None = the task's main one
    optimizer: str = "adamw"              # 'adamw' (torch) or 'adamw-hf' (the reference's HF AdamW), tamt.optim
    device: str | None = None             # None: cuda when available else cpu
    freeze_word_embeddings: bool = False  # keep the word embeddings fixed (CPU demo budgets; not the paper)
    fast_dropout: bool = True             # CPU: dropout by tamt's Philox kernel (tamt.nn.dropout; same distribution,
    #                                       another random stream, ~15x faster than torch's CPU dropout)
    progress: bool = True
    num_threads: int | None = None

    def __post_init__(self):
        # one rule for sizes: None = everything, otherwise a positive count (0 used to mean "all", -5 was an error)
        for name in ("train_size", "eval_size", "max_steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
                raise ValueError(f"{name} must be a positive whole number, got {v!r} (leave it unset for "
                                 f"{'the whole split' if name != 'max_steps' else 'epochs'})")
        seeds = (self.seeds,) if isinstance(self.seeds, int) else tuple(self.seeds)
        if not seeds:
            raise ValueError("give at least one fine-tuning seed")
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            raise ValueError(f"seed(s) {', '.join(map(str, dup))} given more than once: the mean and spread over "
                             "seeds would count one run twice; give distinct seeds")
        self.seeds = tuple(int(s) for s in seeds)

    @classmethod
    def for_task(cls, task: str, preset: str | None = None, **overrides) -> "FinetuneConfig":
        """Defaults for ``task`` (GLUE or SQuAD), then the preset, then explicit overrides."""
        task = {"sst-2": "sst2", "sts-b": "stsb"}.get(task.lower(), task.lower())
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        values: dict[str, Any] = {}
        if task == "squad":
            values.update(lr=3e-5, batch_size=16, max_seq_length=384, epochs=2.0, doc_stride=128)
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
            p = PRESETS[preset]
            values.update(p.get("all", {}))
            values.update(p.get("squad" if task == "squad" else "glue", {}))
            values.update(p.get(task, {}))
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown fine-tuning option(s): {', '.join(sorted(unknown))}")
        if "seeds" in values:
            s = values["seeds"]
            values["seeds"] = (int(s),) if isinstance(s, int) else tuple(int(x) for x in s)
        return cls(**values)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["seeds"] = list(self.seeds)
        return d


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The paper's full setup (TAMT_SPEC): GLUE lr 2e-5 / batch 32 / seq 128 / 3 epochs, SQuAD lr 3e-5 /
    # batch 16 / seq 384 / stride 128 / 2 epochs, periodic evaluation keeping the best dev score,
    # several fine-tuning seeds. Needs GPUs and the full data sets (hub or official files).
    # As the reference's glue_trans.py / squad_trans.py runs: evaluate every 50 steps (MNLI 500, SQuAD 1,000),
    # keep the best dev score; HF AdamW, wd 0, no warm-up, clip 1.0.  MNLI: both dev sets are evaluated and
    # reported; the checkpoint is chosen by the mismatched accuracy, the number the reference reports (its
    # evaluate() writes matched then mismatched 'acc' into one dict, so the mismatched one is what it keeps).
    "paper": {
        "all": {"seeds": (1, 2, 3), "warmup_ratio": 0.0, "weight_decay": 0.0, "optimizer": "adamw-hf",
                "max_grad_norm": 1.0},
        "glue": {"lr": 2e-5, "batch_size": 32, "max_seq_length": 128, "epochs": 3.0, "eval_every": 50},
        "squad": {"lr": 3e-5, "batch_size": 16, "max_seq_length": 384, "doc_stride": 128, "epochs": 2.0,
                  "eval_every": 1000},
        "mnli": {"eval_every": 500, "select_metric": "mismatched_accuracy"},
    },
    # Small and fast on a laptop CPU: used by the demo's --quick mode and the tests.
    "cpu-small": {
        "all": {"seeds": (0,), "eval_per_epoch": 1, "max_seq_length": 64, "epochs": 1.0, "lr": 5e-5,
                "batch_size": 16, "train_size": 1000, "eval_size": 500},
        "squad": {"max_seq_length": 192, "doc_stride": 64, "train_size": 500, "eval_size": 200},
    },
}
