"""``--preset paper`` against an independent statement of the reference code (llyx97/TAMT), step by step.

The reference algorithms below are written here from TAMT_SPEC.md's "Reference-code details" and the
authors' scripts (mask_training/train_mlm.py, train_kd.py, imp_and_fine_tune/LT_pretrain.py), in plain
torch: the reference's own way of masking (its ``MaskedLinear1``: ``F.linear(x, W * 1[S > tau])`` with a
straight-through gradient, patched into the Hugging Face model), its optimizers written out by hand, its
threshold schedule, ``torch.nn.utils.prune`` for IMP.  None of tamt's pruning / nn / ops / optim code is
used by the reference side.  Both sides see the same batches (the ones tamt's searcher consumed) and a
tiny BERT with the reference's dropout (0.1, hidden and attention) active in the student (and in the KD
teacher, which the reference's KD script never puts in eval mode): both sides draw it from torch's global
generator, reseeded to the same state before each side's forward of a step (``_dropout_stream``; tamt's
CPU Philox dropout is switched off with ``fast_dropout=False`` so the two streams are the same one); the
masks must be *identical* after every step, across tau resets, an epoch end and IMP rounds.  The reference
side runs on the device the Searcher picked (``s.device``: CUDA where there is one), and the masks are
compared there.  Since both sides consume tamt's batches, tamt's MLM masking is checked separately
against a restatement of the reference's collator on real text (``test_mlm_masking_matches_...``).  The test-size values (lr, reset
interval, IMP interval, sequence length) are overridden to make things happen within a few steps; the
preset's real values are asserted in ``test_paper_preset_values``.
"""
from __future__ import annotations

import copy
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tamt.nn import get_masks
from tamt.pruning import Searcher, prepare
from tamt.pruning.api import build_config
from tamt.pruning.config import PAPER_MASK_STEPS, preset

from pruning_helpers import WORDS, make_blocks

try:
    import datasets  # noqa: F401
    HAVE_DATASETS = True
except ImportError:  # the lent GPU machine may lack it: the step tests then run on plain row tables
    HAVE_DATASETS = False

SMALL = dict(block_size=32, batch_size=8, eval_every=None, checkpoint_every=None, save_masks_at=(), progress=False,
             tensorboard=False, head_fit_steps=0, fast_dropout=False)
DROPOUT = 0.1  # the reference BERT's hidden and attention dropout


def _dropout_stream(t: int) -> None:
    """Put torch's global generator (CPU and CUDA) in the state of step t: called before tamt's step and again
    before the reference's forward of that step, so the two draw the same dropout masks in the same order."""
    torch.manual_seed(10_000 + t)


# ---------------------------------------------------------------------------
# data without the datasets package (the GPU suite's machine may not have it)


class _Rows:
    """The reads the Searcher makes of a ``datasets.Dataset`` (len, one row, rows by a list of indices,
    select), over plain column lists."""

    def __init__(self, cols: dict):
        self.cols = cols

    def __len__(self):
        return len(next(iter(self.cols.values())))

    def __getitem__(self, i):
        if isinstance(i, int):
            return {k: v[i] for k, v in self.cols.items()}
        return {k: [v[j] for j in i] for k, v in self.cols.items()}

    @property
    def column_names(self):
        return list(self.cols)

    def select(self, indices):
        return _Rows(self[list(indices)])


@pytest.fixture(scope="module")
def blocks(tok):
    """pruning_helpers.make_blocks' blocks; as plain row tables where datasets is missing (the same rows)."""
    if HAVE_DATASETS:
        return make_blocks(tok)
    from unittest import mock

    class _Dataset:
        from_dict = staticmethod(_Rows)

    fake = type("datasets", (), {"Dataset": _Dataset, "DatasetDict": dict})
    with mock.patch.dict("sys.modules", {"datasets": fake}):
        return make_blocks(tok)


def _kd_rows(path, tok, max_seq_len=32, *, via_datasets: bool | None = None):
    """The padded KD sequences of the text file ``path`` (no held-out documents): tamt's load_kd_sequences,
    or, without datasets, the same rows from kd_sequences and the same padding."""
    from tamt.data.corpus import _pad_rows, kd_sequences, load_kd_sequences

    if HAVE_DATASETS if via_datasets is None else via_datasets:
        return load_kd_sequences(path, tokenizer=tok, max_seq_len=max_seq_len, validation_fraction=0.0,
                                 cache_dir=False)
    cols = kd_sequences(path.read_text().splitlines(), tok, max_seq_len=max_seq_len, seed=0)
    return _Rows(_pad_rows(tok.pad_token_id, max_seq_len, True)(cols))


# ---------------------------------------------------------------------------
# the reference, restated


def _targets(model) -> list[str]:
    """The masked matrices of BERT (TAMT_SPEC "Objects"): Q, K, V, attention output, intermediate, output of
    every layer, the pooler, the word embeddings (names relative to the encoder)."""
    names = ["embeddings.word_embeddings"]
    for i in range(model.config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        names += [p + "attention.self.query", p + "attention.self.key", p + "attention.self.value",
                  p + "attention.output.dense", p + "intermediate.dense", p + "output.dense"]
    if getattr(model.base_model, "pooler", None) is not None:
        names.append("pooler.dense")
    return names


class _Binarizer(torch.autograd.Function):
    """The reference's ``_Binarizer1``: 1[S > tau] forward, the gradient passed straight to S."""

    @staticmethod
    def forward(ctx, scores, tau):
        return (scores > tau).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class RefMasked(nn.Module):
    """The reference's ``MaskedLinear1``: frozen W, scores S initialised 2*t0 where |W| > kthvalue(|W|, k), else 0."""

    def __init__(self, inner: nn.Module, sparsity: float, t0: float = 0.01):
        super().__init__()
        self.weight, self.bias = inner.weight, getattr(inner, "bias", None)
        self.padding_idx = getattr(inner, "padding_idx", None)
        self.embedding = isinstance(inner, nn.Embedding)
        self.sparsity = sparsity
        w = self.weight.detach().abs()
        kth = torch.kthvalue(w.flatten(), int(w.numel() * sparsity)).values
        self.scores = nn.Parameter(torch.where(w > kth, 2 * t0, 0.0))
        self.tau = torch.tensor(t0, device=self.scores.device)

    def reset(self):  # the reference's reset_threshold
        self.tau = torch.kthvalue(self.scores.detach().flatten(), int(self.scores.numel() * self.sparsity)).values

    def mask(self):
        return self.scores.detach() > self.tau

    def forward(self, x):
        w = self.weight * _Binarizer.apply(self.scores, self.tau)
        if self.embedding:
            return F.embedding(x, w, self.padding_idx)
        return F.linear(x, w, self.bias)


def _patch_reference(encoder: nn.Module, sparsity: float) -> dict[str, RefMasked]:
    for p in encoder.parameters():
        p.requires_grad_(False)
    mods = {}
    for name in _targets(encoder):
        parent, _, leaf = name.rpartition(".")
        m = RefMasked(encoder.get_submodule(name), sparsity)
        setattr(encoder.get_submodule(parent), leaf, m)
        mods[name] = m
    return mods


class HandAdamW:
    """The HF AdamW of the reference MLM/IMP scripts, written out."""

    def __init__(self, params, eps=1e-8):
        self.params, self.eps, self.t = list(params), eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lr):
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(0.9).add_(p.grad, alpha=0.1)
            v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
            step = lr * math.sqrt(1 - 0.999 ** self.t) / (1 - 0.9 ** self.t)
            p.addcdiv_(m, v.sqrt().add_(self.eps), value=-step)
            p.grad = None


class HandBertAdam:
    """The reference KD script's BertAdam, written out: per-tensor clip, no bias correction, wd in the update."""

    def __init__(self, params, wd=0.01, eps=1e-6, clip=1.0):
        self.params, self.wd, self.eps, self.clip = list(params), wd, eps, clip
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lr):
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            coef = self.clip / (g.norm() + 1e-6)
            if coef < 1:
                g = g * coef
            m.mul_(0.9).add_(g, alpha=0.1)
            v.mul_(0.999).addcmul_(g, g, value=0.001)
            p.sub_(lr * (m / (v.sqrt() + self.eps) + self.wd * p))
            p.grad = None


def _tiny_dense(dropout: float = DROPOUT):
    from tamt.models import tiny_model

    return tiny_model("bert", seed=0, with_mlm_head=True, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout)


def _sparsity(masks) -> float:
    return 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def _assert_same_masks(step, tamt_masks, ref_masks):
    assert set(tamt_masks) == {f"{k}.weight" for k in ref_masks}
    for k, m in ref_masks.items():
        assert torch.equal(tamt_masks[f"{k}.weight"], m), f"step {step}: mask of {k} differs from the reference"


def _reset_and_compare(step, searcher, mods, reset: bool, tamt_traj: list, ref_traj: list) -> None:
    """After a reference step: reset tau if it is a reset step, then require tamt's masks to be identical."""
    if reset:
        for m in mods.values():
            m.reset()
    ref_masks = {k: m.mask() for k, m in mods.items()}
    tm = get_masks(searcher.model)
    _assert_same_masks(step, tm, ref_masks)
    tamt_traj.append(_sparsity(tm))
    ref_traj.append(_sparsity(ref_masks))


# ---------------------------------------------------------------------------
# TAMT-MLM


def _student_modes(searcher) -> list:
    """Records, for every forward of the searcher's encoder, whether it ran in train mode (dropout on)."""
    seen = []
    searcher.model.base_model.register_forward_pre_hook(lambda mod, args: seen.append(mod.training))
    return seen


def _mlm_against_reference(tok, blocks, method: str):
    """TAMT-MLM (or MLM+KD) with the paper preset next to train_mlm.py restated, for 8 steps with resets
    after steps 3 and 6 (its logging/save steps).  MLM+KD (train_mlm.py --use_kd, mask_trainer_mlm.py's
    _training_step): loss = MLM + sum over layers 1..L of CosineLoss / L, the teacher (from_pretrained:
    eval mode) fed the same, MLM-masked, inputs; unweighted sum, global clip, HF AdamW."""
    dense = _tiny_dense()
    ctx = prepare(dense, blocks, tokenizer=tok)
    steps, lr, reset = 8, 4e-3, 3
    cfg = build_config(method, 0.7, steps=steps, preset="paper", lr=lr, head_lr=lr, reset_interval=reset, **SMALL)
    s = Searcher(ctx, cfg, sparsity=0.7)
    dev = s.device
    modes = _student_modes(s)

    ref = copy.deepcopy(ctx.model).to(dev).train()  # _training_step: model.train()
    teacher = copy.deepcopy(ctx.model).to(dev).eval() if method == "tamt-mlm-kd" else None
    mods = _patch_reference(ref.bert, 0.7)
    head = [p for n, p in ref.named_parameters() if n.startswith("cls.") and p is not ref.bert.embeddings
            .word_embeddings.weight]
    for p in head:
        p.requires_grad_(True)
    params = [m.scores for m in mods.values()] + head
    opt = HandAdamW(params)
    _assert_same_masks(0, get_masks(s.model), {k: m.mask() for k, m in mods.items()})
    tamt_traj, ref_traj, kd_losses = [], [], []
    for t in range(1, steps + 1):
        _dropout_stream(t)
        s.step()
        b = s.last_batch
        _dropout_stream(t)
        out = ref(input_ids=b["masked_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        logits = out.logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["labels"].reshape(-1), ignore_index=-100)
        if teacher is not None:
            with torch.no_grad():
                ht = teacher(input_ids=b["masked_ids"], attention_mask=b["attention_mask"],
                             output_hidden_states=True).hidden_states[1:]
            hs = out.hidden_states[1:]
            rep = sum((1 - F.cosine_similarity(a, c, dim=-1)).mean() for a, c in zip(hs, ht)) / len(hs)
            kd_losses.append(float(rep.detach()))
            loss = loss + rep
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)  # train_mlm: global clip, max_grad_norm 1.0
        opt.step(lr * (1 - (t - 1) / steps))  # linear decay, no warm-up
        # the logging/save steps of mask_trainer_mlm.py
        _reset_and_compare(t, s, mods, t % reset == 0, tamt_traj, ref_traj)
    assert tamt_traj == ref_traj
    # the test means something: tau moved at the resets, the sparsity drifted off the target between them
    assert len(set(round(x, 6) for x in tamt_traj)) > 2
    assert any(abs(x - 0.7) > 1e-3 for x in tamt_traj)
    assert modes and all(modes)  # the student ran every step in train mode: its dropout was on
    if teacher is not None:
        assert min(kd_losses) > 1e-4  # the KD term was there to weigh
    return s


def test_tamt_mlm_paper_preset_equals_the_reference_step_by_step(tok, blocks):
    _mlm_against_reference(tok, blocks, "tamt-mlm")


def test_tamt_mlm_kd_paper_preset_equals_the_reference_step_by_step(tok, blocks):
    _mlm_against_reference(tok, blocks, "tamt-mlm-kd")


def test_the_step_tests_dropout_changes_the_masks(tok, blocks):
    """The reference's dropout matters to the step tests: without it (tamt's student in eval mode, the
    option ``dropout=False``) the masks leave the reference's within the MLM test's 8 steps."""
    ctx = prepare(_tiny_dense(), blocks, tokenizer=tok)
    masks = []
    for dropout in (True, False):
        cfg = build_config("tamt-mlm", 0.7, steps=8, preset="paper", lr=4e-3, head_lr=4e-3, reset_interval=3,
                           dropout=dropout, **SMALL)
        s = Searcher(ctx, cfg, sparsity=0.7)
        for t in range(1, 9):
            _dropout_stream(t)
            s.step()
        masks.append(get_masks(s.model))
    assert any(not torch.equal(masks[0][k], masks[1][k]) for k in masks[0])


def test_paper_preset_mlm_is_at_the_target_sparsity_after_step_1(tok, blocks):
    """tau = t0 = 0.01 with scores 0 / 0.02: one step at the paper's lr (5e-5) crosses nothing."""
    ctx = prepare(_tiny_dense(), blocks, tokenizer=tok)
    cfg = build_config("tamt-mlm", 0.7, steps=4, preset="paper", **SMALL)
    s = Searcher(ctx, cfg, sparsity=0.7)
    s.step()
    for name, m in get_masks(s.model).items():
        assert m.numel() - int(m.sum()) == math.floor(0.7 * m.numel()), name
    assert abs(_sparsity(get_masks(s.model)) - 0.7) < 1e-3


def _reference_mask_tokens(inputs: torch.Tensor, *, cls_id: int, sep_id: int, pad_id: int, mask_id: int,
                           vocab: int, mlm_probability: float = 0.15, generator=None):
    """The reference's ``DataCollatorForLanguageModeling.mask_tokens`` (mask_training/hg_transformers/data/
    data_collator.py), restated: p = mlm_probability except at its BERT tokenizer's special tokens
    (``get_special_tokens_mask(already_has_special_tokens=True)``: [CLS] and [SEP] only) and padding;
    of the chosen, bernoulli(0.8) -> [MASK], of the rest bernoulli(0.5) -> a random id in [0, len(tokenizer)),
    the others kept."""
    inputs, labels = inputs.clone(), inputs.clone()
    prob = torch.full(labels.shape, mlm_probability)
    prob.masked_fill_((labels == cls_id) | (labels == sep_id), 0.0)
    prob.masked_fill_(labels == pad_id, 0.0)
    masked = torch.bernoulli(prob, generator=generator).bool()
    labels[~masked] = -100
    replaced = torch.bernoulli(torch.full(labels.shape, 0.8), generator=generator).bool() & masked
    inputs[replaced] = mask_id
    rnd = torch.bernoulli(torch.full(labels.shape, 0.5), generator=generator).bool() & masked & ~replaced
    words = torch.randint(vocab, labels.shape, dtype=torch.long, generator=generator)
    inputs[rnd] = words[rnd]
    return inputs, labels


def _masking_stats(ids, masked_ids, labels, counted) -> dict:
    sel = labels != -100
    n = int(counted.sum())
    chosen = sel & counted
    k = int(chosen.sum())
    to_mask = int((chosen & (masked_ids == 4)).sum())
    changed = int((chosen & (masked_ids != 4) & (masked_ids != ids)).sum())
    return dict(n=n, p=k / n, mask=to_mask / k, random=changed / k, kept=(k - to_mask - changed) / k)


def test_mlm_masking_matches_the_reference_collator_on_real_text(tok, tmp_path):
    """The step tests feed tamt's MLM batches to both sides, so they cannot see tamt's masking itself.  Here
    the batches the paper preset's Searcher draws from real text (the embedded Wikipedia summaries, through
    tamt's block pipeline) are compared in distribution with the reference collator restated above, applied
    to the same unmasked blocks: 15 % of the tokens chosen, 80 % of those [MASK], 10 % random, 10 % kept,
    labels the original ids, [CLS] / [SEP] never chosen.  (tamt also never chooses [UNK] or [MASK] ids
    occurring in the text, which the reference's BERT tokenizer does not count as special: those are left out
    of the rates; README "Paper fidelity".)"""
    pytest.importorskip("datasets")
    from tamt.data.corpus import load_corpus, load_raw_corpus

    raw = load_raw_corpus("default")["train"]
    text = tmp_path / "wiki.txt"
    text.write_text("\n".join(raw[i]["text"] for i in range(300)) + "\n")
    blocks = load_corpus(text, tokenizer=tok, block_size=64, validation_fraction=0.0, cache_dir=False)
    blocks["validation"] = blocks["train"]
    ctx = prepare(_tiny_dense(), blocks, tokenizer=tok)
    cfg = build_config("tamt-mlm", 0.5, steps=10, preset="paper", **{**SMALL, "block_size": 64, "batch_size": 16})
    s = Searcher(ctx, cfg, sparsity=0.5)
    assert cfg.resolved().mlm_probability == 0.15
    got = [s.next_batch() for _ in range(40)]
    ids = torch.cat([b["input_ids"] for b in got]).cpu()
    t_ids = torch.cat([b["masked_ids"] for b in got]).cpu()
    t_lab = torch.cat([b["labels"] for b in got]).cpu()
    gen = torch.Generator().manual_seed(0)
    r_ids, r_lab = _reference_mask_tokens(ids, cls_id=tok.cls_token_id, sep_id=tok.sep_token_id,
                                          pad_id=tok.pad_token_id, mask_id=tok.mask_token_id, vocab=len(tok),
                                          generator=gen)
    assert ctx.vocab_size == len(tok) and tok.mask_token_id == 4
    special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id) | (ids == tok.pad_token_id)
    assert int(special.sum()) == 2 * len(ids)  # full blocks: [CLS] ... [SEP]
    for m_ids, lab in ((t_ids, t_lab), (r_ids, r_lab)):
        assert not (lab != -100)[special].any() and torch.equal(m_ids[special], ids[special])
        sel = lab != -100
        assert torch.equal(lab[sel], ids[sel])  # labels: the original ids
        assert torch.equal(m_ids[~sel], ids[~sel])  # nothing outside the chosen tokens changes
    counted = ~special & (ids != tok.unk_token_id) & (ids != tok.mask_token_id)
    assert int(counted.sum()) > 0.9 * ids.numel()  # real text: [UNK] stays rare
    t, r = _masking_stats(ids, t_ids, t_lab, counted), _masking_stats(ids, r_ids, r_lab, counted)
    n = t["n"]  # ~40k tokens: sd of the rate 0.0018, of the 80/10/10 split <= 0.006
    sd_p = math.sqrt(0.15 * 0.85 / n)
    sd_k = math.sqrt(0.8 * 0.2 / (0.15 * n))
    for side in (t, r):
        assert abs(side["p"] - 0.15) < 5 * sd_p, (side, "reference" if side is r else "tamt")
        assert abs(side["mask"] - 0.8) < 5 * sd_k and abs(side["random"] - 0.1) < 5 * sd_k
        assert abs(side["kept"] - 0.1) < 5 * sd_k + 1 / len(tok)  # a random id may equal the original
    assert abs(t["p"] - r["p"]) < 5 * math.sqrt(2) * sd_p


# ---------------------------------------------------------------------------
# TAMT-KD


def _kd_corpus(tmp_path, n_docs=40, seed=3):
    """WikiText-like text: '= heading =' lines, sections of 1-3 paragraphs, blank lines between."""
    rng = random.Random(seed)
    lines = [""]
    for d in range(n_docs):
        lines += [f" = {rng.choice(WORDS)} {rng.choice(WORDS)} = ", ""]
        for _ in range(rng.randint(1, 3)):
            lines.append(" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + " . ")
        lines.append("")
    p = tmp_path / "wiki.train.raw"
    p.write_text("\n".join(lines) + "\n")
    return p


class _NormLog:
    """The per-tensor gradient norms the reference's BertAdam saw (before its clip), step by step."""

    def __init__(self, opt: HandBertAdam):
        self.steps, inner = [], opt.step

        def step(lr):
            self.steps.append([float(p.grad.norm()) for p in opt.params if p.grad is not None])
            inner(lr)

        opt.step = step


def test_the_data_without_datasets_is_the_same(tok, tmp_path):
    """The plain-table fallback of the step tests (the GPU machine may lack datasets) gives tamt's rows."""
    pytest.importorskip("datasets")
    path = _kd_corpus(tmp_path)
    a, b = _kd_rows(path, tok), _kd_rows(path, tok, via_datasets=False)
    assert len(a) == len(b) and a[list(range(len(a)))] == b[list(range(len(b)))]


@pytest.mark.parametrize("loss_scale", [1.0, 1000.0], ids=["paper-loss", "clip-binds"])
def test_tamt_kd_paper_preset_equals_the_reference_step_by_step(tok, blocks, tmp_path, loss_scale):
    """TAMT-KD next to train_kd.py restated.  ``clip-binds``: the KD loss scaled by 1000 on both sides
    (tamt's ``kd_weight``), so that BertAdam's per-tensor clip to norm 1 binds for some score tensors and
    not for others (the tiny model's cosine-loss gradients are all far below 1: the paper-loss case never
    clips, and a global clip would pass it); a global clip would then shrink the small tensors' gradients
    too and the masks would part."""
    dense = _tiny_dense()
    ctx = prepare(dense, blocks, tokenizer=tok)
    ctx.kd_train = _kd_rows(_kd_corpus(tmp_path), tok)
    per_epoch = len(ctx.kd_train) // 8
    steps, lr, reset = per_epoch + 4, 1.5e-3, 4
    assert 3 <= per_epoch <= 6, per_epoch  # so the run crosses an epoch end
    cfg = build_config("tamt-kd", 0.7, steps=steps, preset="paper", lr=lr, reset_interval=reset,
                       kd_weight=loss_scale, **SMALL)
    s = Searcher(ctx, cfg, sparsity=0.7)
    dev = s.device
    modes = _student_modes(s)

    student = copy.deepcopy(ctx.model.bert).to(dev).train()
    teacher = copy.deepcopy(ctx.model.bert).to(dev).train()  # train_kd.py never calls teacher.eval()
    mods = _patch_reference(student, 0.7)
    opt = HandBertAdam([m.scores for m in mods.values()])
    norms = _NormLog(opt)
    _assert_same_masks(0, get_masks(s.model), {k: m.mask() for k, m in mods.items()})
    traj_t, traj_r, padded, segment_b = [], [], 0, 0
    for t in range(1, steps + 1):
        _dropout_stream(t)
        s.step()
        b = s.last_batch
        padded += int((b["attention_mask"] == 0).sum())
        segment_b += int(b["token_type_ids"].sum())
        kw = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"],
                  output_hidden_states=True)
        _dropout_stream(t)
        hs = student(**kw).hidden_states[1:]
        with torch.no_grad():
            ht = teacher(**kw).hidden_states[1:]
        # CosineLoss over all B*T positions (padding included), mean over layers 1..L
        loss = sum((1 - F.cosine_similarity(a, c, dim=-1)).mean() for a, c in zip(hs, ht)) / len(hs)
        (loss * loss_scale).backward()
        opt.step(lr * (1 - (t - 1) / steps))  # BertAdam's warmup_linear with warm-up 0
        # train_kd.py: reset after step 1, when (step + 1) % eval_step == 0, and at every epoch end
        _reset_and_compare(t, s, mods, t == 1 or (t + 1) % reset == 0 or t % per_epoch == 0, traj_t, traj_r)
    assert traj_t == traj_r
    assert padded > 0  # the KD sequences are padded: kd_positions='all' was exercised
    assert segment_b > 0  # some sequences have a B segment (token type 1)
    assert len(set(round(x, 6) for x in traj_t)) > 2
    assert modes and all(modes)
    if loss_scale == 1.0:
        assert max(max(n) for n in norms.steps) < 1.0
    else:  # the per-tensor clip bound: some tensors above norm 1, others below, in one step (so global clip differs)
        assert any(max(n) > 1.0 and min(x for x in n if x > 0) < 1.0 for n in norms.steps)


# ---------------------------------------------------------------------------
# IMP


def test_imp_paper_preset_equals_the_reference_step_by_step(tok, blocks):
    from torch.nn.utils import prune

    dense = _tiny_dense()
    ctx = prepare(dense, blocks, tokenizer=tok)
    interval, run_len, lr = 3, 20, 1e-2
    cfg = build_config("imp", [0.3], steps=run_len, preset="paper", imp_interval=interval, lr=lr, **SMALL)
    s = Searcher(ctx, cfg)
    assert s.total_steps == 2 * interval  # rounds at steps 0, 3, 6 (levels 0.1, 0.2, 0.3)

    dev = s.device
    ref = copy.deepcopy(ctx.model).to(dev).train()
    for p in ref.parameters():
        p.requires_grad_(True)
    names = _targets(ref.bert)
    rnd = 0

    def prune_round():  # LT_pretrain.pruning_model(model, 1 / (10 - pruning_step))
        for n in names:
            prune.l1_unstructured(ref.bert.get_submodule(n), "weight", amount=1 / (10 - rnd))

    def ref_masks():
        return {n: ref.bert.get_submodule(n).weight_mask.bool() for n in names}

    prune_round()
    rnd += 1
    params = [p for p in ref.parameters()]
    opt, j = HandAdamW(params), 0
    s._begin()  # tamt prunes round 0 when the search starts (step 0)
    _assert_same_masks(0, get_masks(s.model), ref_masks())
    traj = []
    for t in range(1, s.total_steps + 1):
        _dropout_stream(t)
        s.step()
        b = s.last_batch
        _dropout_stream(t)
        logits = ref(input_ids=b["masked_ids"], attention_mask=b["attention_mask"]).logits
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["labels"].reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        opt.step(lr * (1 - j / run_len))  # a new linear schedule per round, over the whole run's length
        j += 1
        if t % interval == 0:  # logging/save steps: evaluate, prune, (no-op) rewind, new optimizer and schedule
            with torch.no_grad():  # evaluate_during_training: its forward refreshes the pruned modules' weight
                ref.eval()(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            ref.train()
            prune_round()
            rnd += 1
            opt, j = HandAdamW(params), 0
        _assert_same_masks(t, get_masks(s.model), ref_masks())
        traj.append(_sparsity(get_masks(s.model)))
    assert traj == sorted(traj) and traj[-1] == pytest.approx(0.3, abs=2e-3)
    # the later rounds followed the trained magnitudes (the test would not notice a wrong rewind otherwise)
    omp = prune.l1_unstructured(copy.deepcopy(dense.bert.encoder.layer[0].attention.self.query).to(dev), "weight",
                                amount=0.3).weight_mask.bool()
    assert not torch.equal(omp, get_masks(s.model)["encoder.layer.0.attention.self.query.weight"])


def test_reference_imp_rewind_is_a_no_op():
    """LT_pretrain.py keeps ``orig = rewind(model.state_dict())``: views of the live weights, so its later
    ``model_dict.update(orig); model.load_state_dict(model_dict)`` restores nothing (why imp_rewind='none')."""
    from torch.nn.utils import prune

    model = _tiny_dense()
    pre = {k: v.clone() for k, v in model.state_dict().items()}
    target = "bert.encoder.layer.0.attention.self.query.weight"
    orig = {(k + "_orig" if k == target else k): v for k, v in model.state_dict().items() if "bert" in k}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    prune.l1_unstructured(model.bert.encoder.layer[0].attention.self.query, "weight", amount=0.1)
    ids = torch.randint(5, 90, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    model_dict = model.state_dict()
    model_dict.update(orig)
    model.load_state_dict(model_dict)
    now = model.bert.encoder.layer[0].attention.self.query.weight_orig
    assert not torch.equal(now, pre[target])  # not rewound
    assert not torch.equal(model.bert.encoder.layer[1].output.dense.bias, pre["bert.encoder.layer.1.output.dense.bias"])


# ---------------------------------------------------------------------------
# the preset's own values and the details around the loop


def test_paper_preset_values():
    common = preset("paper")
    assert common["amp"] == "none" and common["threshold_mode"] == "paper" and common["initial_threshold"] == "t0"
    assert common["tie_break"] is False and common["block_size"] == 512 and common["batch_size"] == 16
    assert common["epochs"] == 2.0 and common["score_init"] == "omp"
    assert common["dropout"] is True  # the reference trains the student in train mode: its dropout is on

    def resolved(method):
        return build_config(method, [0.7], preset="paper").resolved()

    mlm, kd, mlmkd, imp = (resolved(m) for m in ("tamt-mlm", "tamt-kd", "tamt-mlm-kd", "imp"))
    assert all(c.dropout is True and c.mlm_probability == 0.15 for c in (mlm, kd, mlmkd, imp))
    assert mlmkd.mlm_weight == 1.0 and mlmkd.kd_weight == 1.0  # train_mlm.py: loss = MLM + KD, unweighted
    assert (mlm.optimizer, mlm.lr, mlm.weight_decay, mlm.adam_eps, mlm.grad_clip, mlm.reset_interval,
            mlm.reset_offset, mlm.reset_steps, mlm.reset_at_epoch_end) == ("adamw-hf", 5e-5, 0.0, 1e-8, 1.0, 1000,
                                                                           0, (), False)
    assert mlm.save_masks_at == (11000, 14000, 17000, 20000, 22000) and mlm.head_lr == mlm.lr
    assert (kd.optimizer, kd.lr, kd.weight_decay, kd.adam_eps, kd.reset_interval, kd.reset_offset, kd.reset_steps,
            kd.reset_at_epoch_end) == ("bert-adam", 2e-5, 0.01, 1e-6, 100, 1, (1,), True)
    assert (kd.kd_data, kd.kd_positions, kd.teacher_dropout) == ("paragraphs", "all", True)
    assert kd.save_masks_at == (10999, 13999, 16999, 19999, 21999)
    assert (mlmkd.optimizer, mlmkd.weight_decay, mlmkd.reset_interval, mlmkd.teacher_dropout) == \
        ("adamw-hf", 0.0, 1000, False)
    assert (imp.optimizer, imp.lr, imp.imp_interval, imp.imp_rate, imp.imp_rewind, imp.imp_schedule,
            imp.imp_rounding) == ("adamw-hf", 5e-5, 2792, 0.1, "none", "run", "per-round")
    assert PAPER_MASK_STEPS["tamt-mlm"][0.5] == 11000 and PAPER_MASK_STEPS["tamt-kd"][0.9] == 21999
    # the defaults stay tamt's
    d = build_config("tamt-kd", [0.7]).resolved()
    assert (d.optimizer, d.threshold_mode, d.kd_data, d.kd_positions, d.teacher_dropout, d.tie_break) == \
        ("adamw", "exact", "blocks", "tokens", False, True)
    i = build_config("imp", [0.7]).resolved()
    assert (i.imp_rewind, i.imp_schedule, i.imp_rounding) == ("all", "round", "total")


def _hooked_teacher(ctx, seen):
    return ctx.teacher.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append((mod.training, kwargs.get("input_ids"))), with_kwargs=True)


def test_teacher_dropout_follows_the_option_and_evaluation_stays_in_eval_mode(tok, blocks, tmp_path):
    ctx = prepare(_tiny_dense(), blocks, tokenizer=tok)
    ctx.kd_train = _kd_rows(_kd_corpus(tmp_path), tok)
    seen = []
    h = _hooked_teacher(ctx, seen)
    try:
        for dropout in (True, False):
            seen.clear()
            cfg = build_config("tamt-kd", 0.5, steps=2, preset="paper", teacher_dropout=dropout, eval_batches=1,
                               **SMALL)
            s = Searcher(ctx, cfg, sparsity=0.5)
            s.step()
            assert [tr for tr, _ in seen] == [dropout]
            seen.clear()
            ctx._teacher_cache.clear()
            s.evaluate_now()
            assert seen and not any(tr for tr, _ in seen)
    finally:
        h.remove()
    # with dropout on in the teacher, two forwards of one batch differ (it is really active)
    t = copy.deepcopy(ctx.teacher)
    t.config.hidden_dropout_prob = 0.1
    for m in t.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.1
    from tamt.pruning.objectives import teacher_forward

    ids = torch.randint(5, 90, (2, 16))
    am = torch.ones_like(ids)
    a = teacher_forward(t, ids, am, dropout=True).last_hidden_state
    b = teacher_forward(t, ids, am, dropout=True).last_hidden_state
    c = teacher_forward(t, ids, am, dropout=False).last_hidden_state
    assert not torch.equal(a, b) and torch.equal(c, teacher_forward(t, ids, am).last_hidden_state)
    assert not t.training


def test_mlm_kd_teacher_sees_the_mlm_masked_input(tok, blocks):
    ctx = prepare(_tiny_dense(), blocks, tokenizer=tok)
    seen = []
    h = _hooked_teacher(ctx, seen)
    try:
        s = Searcher(ctx, build_config("tamt-mlm-kd", 0.5, steps=2, preset="paper", **SMALL), sparsity=0.5)
        s.step()
    finally:
        h.remove()
    (training, ids), = seen
    assert not training  # train_mlm.py's teacher comes from from_pretrained: eval mode
    assert torch.equal(ids, s.last_batch["masked_ids"]) and not torch.equal(ids, s.last_batch["input_ids"])


def test_stop_at_keeps_the_full_runs_schedule(tok, blocks):
    ctx = prepare(_tiny_dense(0.0), blocks, tokenizer=tok)  # (two runs, two dropout streams: the schedule is tested)
    full = Searcher(ctx, build_config("tamt-mlm", 0.5, steps=10, lr=1e-2, **SMALL), sparsity=0.5)
    part = Searcher(ctx, build_config("tamt-mlm", 0.5, steps=10, lr=1e-2, stop_at=4, **SMALL), sparsity=0.5)
    assert (full.total_steps, part.total_steps) == (10, 4)
    lrs = []
    for srch in (full, part):
        srch.callbacks.append(lambda se, ev, p: ev == "step" and lrs.append((se is part, p["lr"])))
    full.run(max_steps=4)
    part.run()
    assert [x for f, x in lrs if not f] == [x for f, x in lrs if f]  # same schedule: 1, 0.9, 0.8, 0.7 x lr
    assert part.finished and all(torch.equal(part.masks[0.5][k], get_masks(full.model)[k])
                                 for k in part.masks[0.5])


def test_search_dry_run_prints_every_resolved_value_without_loading(capsys, tmp_path):
    from dataclasses import fields

    from tamt.cli import main
    from tamt.pruning import SearchConfig

    missing = tmp_path / "no-such-model"  # never loaded: a dry run reads nothing
    rc = main(["search", "--method", "tamt-kd", "--sparsity", "0.7", "--preset", "paper", "--dry-run",
               "--model", str(missing), "--corpus", str(tmp_path / "no-such-corpus"), "--seed", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:] if ln.strip() and not ln.startswith("threshold:")}
    assert {f.name for f in fields(SearchConfig)} <= set(lines)
    assert "2e-05" in lines["lr"] and "method default" in lines["lr"]
    assert "'bert-adam'" in lines["optimizer"] and "preset paper for tamt-kd" in lines["optimizer"]
    assert "1e-06" in lines["adam_eps"] and "'none'" in lines["amp"] and "(option)" in lines["seed"]
    assert "(t + 1) % 100 == 0" in out and "after step 1" in out and "epoch" in out
    assert not missing.exists()
    rc = main(["search", "--method", "imp", "--sparsity", "0.7", "--preset", "paper", "--dry-run",
               "--imp-rewind", "encoder"])
    out = capsys.readouterr().out
    assert rc == 0 and "rewind 'encoder'" in out and "'per-round'" in out
