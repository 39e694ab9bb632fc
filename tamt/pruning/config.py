"""Search configuration: one dataclass for every method, method defaults and presets.

Defaults that depend on the method (``lr``, ``weight_decay``, the paper-mode
threshold ``reset_interval``) are ``None`` here and resolved by
:meth:`SearchConfig.resolved` from TAMT_SPEC.md:

=============  ======  ============  ===============
method         lr      weight decay  reset interval
=============  ======  ============  ===============
tamt-mlm       5e-5    0             1,000
tamt-kd        2e-5    0.01          100
tamt-mlm-kd    5e-5    0             1,000
imp            5e-5    0             (prune every ``imp_interval`` = 2,792)
=============  ======  ============  ===============

One-shot methods (no training): ``random``, ``omp`` (magnitude per matrix),
``magnitude-row`` (magnitude per output row) and ``wanda`` (|W_ij| * ||X_j||
per output row, Sun et al. 2023; :mod:`tamt.pruning.wanda`).  Every method but
IMP also runs with an N:M ``structure`` (:mod:`tamt.nn.structure`).

(TAMT-MLM+KD runs the reference's MLM script with a teacher added, so it has
that script's defaults: no weight decay and a reset every 1,000 steps.)

The ``paper`` preset reproduces the reference code (llyx97/TAMT) detail by
detail; the values that differ per method are in :data:`PRESETS_BY_METHOD`.
Every departure of the defaults from the reference is a field of
:class:`SearchConfig` (README "Paper fidelity").
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields

from .compiled import COMPILE_MODES, check_compile_mode  # noqa: F401 (COMPILE_MODES: the field's choices)
from tamt.optim import OPTIMIZERS  # noqa: F401 (the ``optimizer`` choices, listed with the other choices here)

METHODS = ("random", "omp", "imp", "tamt-mlm", "tamt-kd", "tamt-mlm-kd", "wanda", "magnitude-row")
TAMT_METHODS = ("tamt-mlm", "tamt-kd", "tamt-mlm-kd")
ONE_SHOT_METHODS = ("random", "omp", "wanda", "magnitude-row")
MLM_METHODS = ("imp", "tamt-mlm", "tamt-mlm-kd")  # methods that need an MLM head
THRESHOLD_MODES = ("exact", "paper")
SCORE_INITS = ("omp", "omp-rank", "random")
STRUCTURES = ("unstructured", "2:4", "1:4", "4:8")  # common mask structures; any N:M with 1 <= N < M works
INITIAL_THRESHOLDS = ("t0", "kth")
KD_DATA = ("blocks", "paragraphs")
KD_POSITIONS = ("tokens", "all")
IMP_REWIND = ("all", "encoder", "none")
IMP_SCHEDULES = ("round", "run")
IMP_ROUNDING = ("total", "per-round")
HEAD_TRAIN = ("auto", "train", "frozen")
EVAL_OBJECTIVES = ("both", "own")

_METHOD_DEFAULTS = {
    "tamt-mlm": dict(lr=5e-5, weight_decay=0.0, reset_interval=1000),
    "tamt-kd": dict(lr=2e-5, weight_decay=0.01, reset_interval=100),
    "tamt-mlm-kd": dict(lr=5e-5, weight_decay=0.0, reset_interval=1000),
    "imp": dict(lr=5e-5, weight_decay=0.0, reset_interval=None),
    "omp": dict(lr=0.0, weight_decay=0.0, reset_interval=None),
    "random": dict(lr=0.0, weight_decay=0.0, reset_interval=None),
    "wanda": dict(lr=0.0, weight_decay=0.0, reset_interval=None),
    "magnitude-row": dict(lr=0.0, weight_decay=0.0, reset_interval=None),
}


def check_method(method: str) -> str:
    m = str(method).strip().lower().replace("_", "-").replace("+", "-")
    if m not in METHODS:
        raise ValueError(f"unknown search method {method!r}; choose one of {', '.join(METHODS)}")
    return m


def check_sparsities(sparsity) -> tuple[float, ...]:
    vals = [sparsity] if isinstance(sparsity, (int, float)) else list(sparsity)
    if not vals:
        raise ValueError("give at least one sparsity in [0, 1), e.g. 0.5")
    out = []
    for s in vals:
        try:
            f = float(s)
        except (TypeError, ValueError):
            raise TypeError(f"sparsity must be a number in [0, 1), got {s!r}") from None
        if not (0.0 <= f < 1.0) or math.isnan(f):
            raise ValueError(f"sparsity must be in [0, 1) (the fraction of weights pruned per matrix), got {s!r}; "
                             "e.g. 0.7 prunes 70 % of every masked matrix")
        out.append(f)
    return tuple(sorted(set(out)))


@dataclass
class SearchConfig:
    """Everything a search run needs besides the model and the corpus.

    ``steps`` or ``epochs`` bound the training of trainable methods (TAMT,
    IMP); OMP and random pruning take no steps.  For IMP, ``imp_interval``
    steps are trained between prune rounds (first round at step 0); when only
    ``steps`` is given the interval is ``steps // (rounds - 1)``.
    """

    method: str = "tamt-mlm"
    sparsities: tuple = (0.5,)
    steps: int | None = None
    epochs: float | None = None
    lr: float | None = None  # scores (TAMT) or weights (IMP); None = the paper's value for the method
    head_lr: float | None = None  # MLM head during TAMT-MLM; None = 5e-5 (the paper's lr)
    head_train: str = "auto"  # MLM head during TAMT-MLM(-KD): 'train' = the paper's co-training; 'frozen'; 'auto' =
    #                           'train' for checkpoints with a pre-trained MLM head, 'frozen' for head-less ones
    #                           (their head is a dense fit: co-training it lets the mask learn to serve a weak head
    #                           instead of preserving the pre-trained model; issue 11, README "head-less checkpoints")
    weight_decay: float | None = None
    batch_size: int = 16
    block_size: int = 128  # the paper uses 512
    grad_clip: float | None = 1.0
    warmup_steps: int = 0
    threshold_mode: str = "exact"  # 'exact': top-k every step; 'paper': fixed tau reset every reset_interval
    reset_interval: int | None = None
    score_init: str = "omp"
    t0: float = 0.01
    tie_break: bool = True  # jitter the initial scores and lift scores tied at tau so top-k is exact; False: the
    #                         reference (|W| > k-th |W| init, plain kthvalue resets: ties at tau are pruned)
    kd_weight: float = 1.0
    mlm_weight: float = 1.0
    mlm_probability: float = 0.15
    dropout: bool = True  # student in train mode (as the paper); False gives dropout-free, exactly reproducible DDP
    fast_dropout: bool = True  # CPU: the student's dropout drawn by the native Philox kernel (tamt.nn.dropout),
    #                            ~15x faster than torch's CPU dropout, same distribution, another random stream;
    #                            False: torch's dropout (the reference's stream). No effect on GPUs.
    imp_interval: int | None = None  # paper: 2,792
    imp_rate: float = 0.1  # fraction of the ORIGINAL weights pruned per IMP round
    head_fit_steps: int = 200  # dense head-only fitting for checkpoints without an MLM head
    head_fit_lr: float = 1e-3
    seed: int = 0
    eval_every: int | None = None
    eval_batches: int | None = 20  # held-out batches per evaluation (None = the whole validation split)
    eval_objectives: str = "both"  # held-out losses of the evaluations during search: 'both' (MLM and KD) or 'own'
    #                                 (the method's objective only: half the forwards; tamt-kd -> KD, imp/tamt-mlm -> MLM)
    eval_batch_size: int | None = None
    save_masks_at: tuple = ()
    checkpoint_every: int | None = None
    log_every: int = 10
    validation_fraction: float = 0.05
    max_blocks: int | None = None
    amp: str = "auto"  # 'auto' (bf16 on CUDA), 'bf16', 'none'
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = True
    # run-folder hygiene (issue 12): a finished run deletes its checkpoint.pt (BERT-base: 268 MB) unless asked
    keep_checkpoint: bool = False
    # -- reference-code fidelity (issue 10; README "Paper fidelity"): the defaults keep tamt's behaviour,
    #    the ``paper`` preset sets the reference's.
    optimizer: str = "adamw"  # 'adamw' (torch), 'adamw-hf' (reference MLM/IMP), 'bert-adam' (reference KD)
    adam_eps: float | None = None  # None = the optimizer's: 1e-8 (adamw, adamw-hf), 1e-6 (bert-adam)
    initial_threshold: str = "t0"  # paper mode, before the first reset: tau = 't0' (reference) or the 'kth' score
    reset_offset: int = 0  # paper mode: reset after step t when (t + reset_offset) % reset_interval == 0
    reset_steps: tuple = ()  # paper mode: extra reset steps (the reference KD script resets after step 1)
    reset_at_epoch_end: bool = False  # paper mode: also reset after the last step of every epoch (reference KD)
    kd_data: str = "blocks"  # TAMT-KD training data: corpus 'blocks' or the reference's 'paragraphs' sequences
    kd_positions: str = "tokens"  # KD loss mean over real 'tokens' or over 'all' positions incl. padding
    teacher_dropout: bool = False  # KD teacher in train mode (dropout on) during search steps (reference KD)
    imp_rewind: str = "all"  # after each IMP prune rewind 'all' weights, the 'encoder' only, or 'none'
    imp_schedule: str = "round"  # IMP lr: 'round' (restart, decay to 0 every round) or 'run' (restart, whole-run slope)
    imp_rounding: str = "total"  # IMP count: 'total' (floor(level*n) pruned) or 'per-round' (torch prune's rounding)
    stop_at: int | None = None  # end after this step, keeping the full run's lr schedule (a checkpoint of a longer run)
    # N:M masks (tamt.nn.structure): 'unstructured' or 'N:M' ('2:4', '1:4', '4:8') for every masked Linear (the
    # sparsity is then 1 - N/M); the word embeddings (a lookup: no sparse GEMM to gain) stay unstructured at the
    # same sparsity unless embedding_structure is N:M.  calibration_blocks: Wanda's corpus blocks.
    structure: str = "unstructured"
    embedding_structure: str = "unstructured"
    calibration_blocks: int = 64
    # -- step speed (issue 13) --
    compile: str = "none"  # torch.compile the step's forwards (COMPILE_MODES; tamt.pruning.compiled)

    def __post_init__(self):
        self.method = check_method(self.method)
        self.sparsities = check_sparsities(self.sparsities)
        self.save_masks_at = tuple(sorted({int(s) for s in self.save_masks_at}))
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}")
        if self.score_init not in SCORE_INITS:
            raise ValueError(f"score_init must be one of {SCORE_INITS}, got {self.score_init!r}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        if self.steps is not None and int(self.steps) < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.steps is not None and int(self.steps) == 0 and self.method not in ONE_SHOT_METHODS:
            # 0 steps would save the untrained starting mask (OMP for TAMT) under the method's name
            raise ValueError(f"{self.method} trains: steps must be >= 1 (0 would save the untrained starting mask "
                             "under its name); for that mask use method 'omp' (or 'random')")
        if self.max_blocks is not None and int(self.max_blocks) < 1:
            raise ValueError(f"max_blocks must be >= 1 (or None for the whole corpus), got {self.max_blocks}")
        if self.epochs is not None and float(self.epochs) <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.imp_interval is not None and int(self.imp_interval) < 1:
            raise ValueError(f"imp_interval must be >= 1, got {self.imp_interval}")
        if not 0 < self.imp_rate < 1:
            raise ValueError(f"imp_rate must be in (0, 1), got {self.imp_rate}")
        if self.amp not in ("auto", "bf16", "none"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'none', got {self.amp!r}")
        check_compile_mode(self.compile)
        self._check_structure()
        self._check_fidelity_options()

    def _check_structure(self) -> None:
        from tamt.nn.structure import resolve_structures, structure_name

        nm = enm = None
        for s in self.sparsities:
            nm, enm, _, _ = resolve_structures(s, self.structure, self.embedding_structure)
        self.structure, self.embedding_structure = structure_name(nm), structure_name(enm)
        if (nm or enm) and self.method == "imp":
            raise ValueError("imp prunes 10 % of the weights per round, which cannot keep N:M groups; use omp, "
                             "wanda, magnitude-row, random or a tamt-* method with an N:M structure")
        if nm is not None:  # resolve_structures refused any other explicit sparsity
            self.sparsities = (1.0 - nm[0] / nm[1],)
        if int(self.calibration_blocks) < 1:
            raise ValueError(f"calibration_blocks must be >= 1, got {self.calibration_blocks}")

    def _check_fidelity_options(self) -> None:
        for name, allowed in (("optimizer", OPTIMIZERS), ("initial_threshold", INITIAL_THRESHOLDS),
                              ("kd_data", KD_DATA), ("kd_positions", KD_POSITIONS), ("imp_rewind", IMP_REWIND),
                              ("imp_schedule", IMP_SCHEDULES), ("imp_rounding", IMP_ROUNDING),
                              ("head_train", HEAD_TRAIN), ("eval_objectives", EVAL_OBJECTIVES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        self.reset_steps = tuple(sorted({int(s) for s in self.reset_steps}))
        if self.reset_interval is not None and int(self.reset_interval) < 1:
            raise ValueError(f"reset_interval must be >= 1, got {self.reset_interval}")
        if self.stop_at is not None and int(self.stop_at) < 0:
            raise ValueError(f"stop_at must be >= 0, got {self.stop_at}")
        if self.adam_eps is not None and not float(self.adam_eps) >= 0:
            raise ValueError(f"adam_eps must be >= 0, got {self.adam_eps}")
        if self.threshold_mode == "paper" and self.initial_threshold == "t0" and self.score_init == "omp-rank":
            raise ValueError("initial_threshold='t0' needs the two-level scores of score_init='omp' or 'random' "
                             "(omp-rank grades the scores over (0, 2*t0), so tau = t0 would prune half of every "
                             "matrix); use initial_threshold='kth' with omp-rank")

    # -- derived values ----------------------------------------------------
    @property
    def uses_mlm(self) -> bool:
        return self.method in MLM_METHODS

    @property
    def uses_kd(self) -> bool:
        return self.method in ("tamt-kd", "tamt-mlm-kd")

    def resolved(self) -> "SearchConfig":
        """A copy with the method defaults filled in."""
        d = _METHOD_DEFAULTS[self.method]
        c = dataclasses.replace(self)
        if c.lr is None:
            c.lr = d["lr"]
        if c.weight_decay is None:
            c.weight_decay = d["weight_decay"]
        if c.reset_interval is None:
            c.reset_interval = d["reset_interval"]
        if c.head_lr is None:
            c.head_lr = 5e-5
        if c.adam_eps is None:
            from tamt.optim import DEFAULT_EPS

            c.adam_eps = DEFAULT_EPS[c.optimizer]
        return c

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TypeError(f"unknown search option(s) {unknown}; known: {sorted(names)}")
        return cls(**d)


# Presets: option values only (method and sparsities come from the user).
PRESETS: dict[str, dict] = {
    # The paper's BERT-base setup (TAMT_SPEC.md): WikiText-103, 512-token blocks, batch 16,
    # 2 epochs, lr 5e-5 (MLM) / 2e-5 (KD), tau reset every 1,000 / 100 steps, IMP every 2,792 steps.
    # fp32, the reference's two-level OMP init without tie-breaking jitter, tau = t0 until the first reset.
    # Per-method values (optimizer, reset schedule, KD data, IMP details) are in PRESETS_BY_METHOD.
    "paper": dict(block_size=512, batch_size=16, epochs=2.0, threshold_mode="paper", score_init="omp",
                  tie_break=False, initial_threshold="t0", lr=None, grad_clip=1.0, imp_interval=2792,
                  eval_every=1000, checkpoint_every=1000, head_fit_steps=2000, eval_batches=None, amp="none",
                  dropout=True),
    # Finishes in minutes on 2 CPU cores with all-MiniLM-L6-v2 and the embedded corpus.
    # The paper's lr (5e-5 / 2e-5) moves scores that start 2*t0 = 0.02 apart by only ~0.01 in a few hundred
    # Adam steps, so the mask would barely leave its OMP start.  With the paper's two-level init a larger lr
    # makes millions of scores cross the threshold in the same step (KD loss 0.14 -> 0.54 at step 15, lr 1e-3),
    # so the short presets grade the initial scores by |W| ('omp-rank', tamt.nn.scores) and use lr 3e-4:
    # MiniLM s=0.5, 60 steps: held-out KD 0.137 (OMP) -> 0.049 (1e-4 gave 0.050, 1e-3 0.078).
    # On this 2-core CPU a MiniLM KD step at batch 8 x 64 tokens takes ~1 s.
    "cpu-small": dict(block_size=64, batch_size=8, steps=60, lr=3e-4, head_lr=1e-3, threshold_mode="exact",
                      score_init="omp-rank", imp_interval=10, eval_every=20, eval_batches=4, head_fit_steps=60,
                      head_fit_lr=3e-3, max_blocks=3000),
    # The demo's budget: every method in seconds.
    "quick": dict(block_size=32, batch_size=8, steps=16, lr=3e-4, head_lr=1e-3, threshold_mode="exact",
                  score_init="omp-rank", imp_interval=2, eval_every=None, eval_batches=2, head_fit_steps=30,
                  head_fit_lr=5e-3, max_blocks=1000),
}


# What a preset sets for one method only (applied over PRESETS[name]).  The paper's values, read from the
# reference code (TAMT_SPEC "Reference-code details"; README "Paper fidelity"):
#   train_mlm.py (TAMT-MLM, and TAMT-MLM+KD with --use_kd): HF AdamW, global clip, tau reset after every
#     1,000th step (logging/save steps), masks used downstream at 11k/14k/17k/20k/22k steps;
#   train_kd.py: BertAdam, tau reset after step 1 and after every step t with (t + 1) % 100 == 0 and at every
#     epoch end, masks saved at (t + 1) % 1000 == 0, i.e. 10,999 ... 21,999; pre-generated paragraph sequences
#     padded to 512, KD loss over all positions, teacher never put in eval mode;
#   LT_pretrain.py (IMP): HF AdamW, a new optimizer and a new linear schedule over the whole run at every prune,
#     torch.nn.utils.prune's per-round rounding, and no effective rewinding (see tamt.pruning.imp).
PRESETS_BY_METHOD: dict[str, dict[str, dict]] = {
    "paper": {
        "tamt-mlm": dict(optimizer="adamw-hf", save_masks_at=(11000, 14000, 17000, 20000, 22000)),
        "tamt-mlm-kd": dict(optimizer="adamw-hf", save_masks_at=(11000, 14000, 17000, 20000, 22000)),
        "tamt-kd": dict(optimizer="bert-adam", reset_offset=1, reset_steps=(1,), reset_at_epoch_end=True,
                        kd_data="paragraphs", kd_positions="all", teacher_dropout=True,
                        save_masks_at=(10999, 13999, 16999, 19999, 21999)),
        "imp": dict(optimizer="adamw-hf", imp_rewind="none", imp_schedule="run", imp_rounding="per-round"),
    },
}

# The paper's mask checkpoints (downstream masks) per method and sparsity.
PAPER_MASK_STEPS: dict[str, dict[float, int]] = {
    "tamt-mlm": {0.5: 11000, 0.6: 14000, 0.7: 17000, 0.8: 20000, 0.9: 22000},
    "tamt-kd": {0.5: 10999, 0.6: 13999, 0.7: 16999, 0.8: 19999, 0.9: 21999},
}


def preset(name: str, method: str | None = None) -> dict:
    """The option values of preset ``name``; with ``method``, including that method's own values."""
    try:
        values = dict(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    if method is not None:
        values.update(PRESETS_BY_METHOD.get(name, {}).get(check_method(method), {}))
    return values


def describe(config: SearchConfig, sources: dict[str, str] | None = None) -> str:
    """Every resolved option of ``config``, one per line, with where it came from (for ``--dry-run``)."""
    c = config.resolved()
    sources = sources or {}
    width = max(len(f.name) for f in fields(c))
    lines = []
    for f in fields(c):
        v = getattr(c, f.name)
        if getattr(config, f.name) is None and v is not None:  # filled in by resolved()
            src = "optimizer default" if f.name == "adam_eps" else "method default"
        else:
            src = sources.get(f.name, "default")
        lines.append(f"{f.name:<{width}}  {v!r:<28}  ({src})")
    if c.uses_mlm or c.method in TAMT_METHODS:
        lines.append("")
        lines.append(_schedule_note(c))
    return "\n".join(lines)


def _schedule_note(c: SearchConfig) -> str:
    if c.method == "imp":
        return (f"IMP: prune {c.imp_rate:g} of the original weights per matrix every {c.imp_interval or 'auto'} "
                f"steps (first at step 0), rounding {c.imp_rounding!r}, rewind {c.imp_rewind!r}, "
                f"lr schedule {c.imp_schedule!r}, optimizer {c.optimizer!r}")
    if c.threshold_mode == "exact":
        return "threshold: exact top-k after every step"
    extra = [f"after step {s}" for s in c.reset_steps]
    if c.reset_at_epoch_end:
        extra.append("after the last step of every epoch")
    every = (f"after every step t with (t + {c.reset_offset}) % {c.reset_interval} == 0" if c.reset_offset
             else f"after every {c.reset_interval}th step")
    start = f"t0 = {c.t0:g}" if c.initial_threshold == "t0" else "the k-th smallest initial score"
    return (f"threshold: tau starts at {start}; reset to the k-th smallest score {every}"
            + (", " + ", ".join(extra) if extra else "") + ", at every mask save and at the end")
