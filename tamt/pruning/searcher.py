"""The one search loop shared by every method.

``Searcher(context, config, sparsity)`` patches a copy of the dense model
through the method's strategy and then ``step()`` / ``run()`` trains it:
deterministic data order and MLM masking (both resumable), AdamW with a
linear schedule, grad clipping, optional bf16 autocast on CUDA, manual
all-reduce of the gradients under ``torch.distributed`` (DDP equivalent to one
process with the same global batch), JSONL + TensorBoard metrics, tqdm
progress, atomic checkpoints and mask files.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from tamt.nn import base_model, masked_modules, sparsity_report
from tamt.nn.structure import run_label, structure_map
from tamt.optim import DEFAULT_EPS, clips_per_tensor, make_optimizer

from .config import ONE_SHOT_METHODS, SearchConfig
from .context import SearchContext
from .numerics import StepGuard
from .compiled import StepForwards
from .objectives import kd_loss_sum, mask_tokens, mlm_loss_sum, teacher_forward
from .score_step import make_score_optimizer, needs_finite_check
from .strategies import make_strategy

log = logging.getLogger(__name__)

CKPT_VERSION = 1


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def requested_steps(cfg: SearchConfig, n_train: int, trains: bool | None = None) -> int:
    """The steps a search asks for (raises when it cannot train); checked before a run writes anything."""
    trains = cfg.method not in ONE_SHOT_METHODS if trains is None else trains
    per_epoch = n_train // cfg.batch_size
    if per_epoch == 0 and trains:
        raise ValueError(f"the corpus has {n_train} training blocks, fewer than one batch of "
                         f"{cfg.batch_size}; use a smaller batch_size/block_size or more text")
    if cfg.steps is not None:
        return int(cfg.steps)
    if cfg.epochs is not None:
        return max(1, int(math.floor(cfg.epochs * per_epoch)))
    if trains and cfg.method != "imp":
        raise ValueError(f"method {cfg.method!r} trains: give steps or epochs (e.g. steps=200)")
    return 0


def mask_filename(method: str, sparsity: float, step: int | None = None) -> str:
    tail = "" if step is None else f"_step{step}"
    return f"{method}_s{sparsity:.2f}{tail}.safetensors"


class Searcher:
    """Steppable search.

    ``callbacks``: callables ``cb(searcher, event, payload)`` with events
    ``'step'`` (payload: the step's metrics), ``'eval'``, ``'mask'`` (payload:
    dict sparsity/step/path/final) and ``'end'``.
    """

    def __init__(self, context: SearchContext, config: SearchConfig, *, sparsity: float | None = None,
                 run_dir: str | Path | None = None, mask_dir: str | Path | None = None, resume: bool = False,
                 callbacks: tuple[Callable, ...] | list = ()):
        self.config = config.resolved()
        self.ctx = context.for_search(self.config)  # (TAMT-KD with kd_data='paragraphs' trains on those sequences)
        self.sparsities = self.config.sparsities
        self.sparsity = float(sparsity if sparsity is not None else self.sparsities[-1])
        self.rank, self.world = _dist()
        if self.config.batch_size % self.world:
            raise ValueError(f"batch_size {self.config.batch_size} is not divisible by the {self.world} processes")
        self.callbacks = list(callbacks)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.mask_dir = Path(mask_dir) if mask_dir is not None else self.run_dir
        self.device = self._pick_device()
        self.model = copy.deepcopy(context.model).to(self.device)
        if self.config.fast_dropout and self.config.dropout and self.device.type == "cpu":
            from tamt.nn import dropout as fast_dropout

            fast_dropout.install(self.model)  # torch's CPU dropout was a third of a step (tamt/nn/dropout.py)
        self.strategy = make_strategy(self)
        self.strategy.setup()
        if not masked_modules(self.model):
            raise ValueError("the model has no TAMT target matrices")
        self.requested_steps = self._requested_steps()
        self.total_steps = self.strategy.total_steps(self.requested_steps)
        self.step_count = 0
        self.started = False
        self.epoch, self.pos = 0, 0
        self.mask_gen = torch.Generator().manual_seed(self.config.seed * 7 + 1)
        self.history: list[dict] = []
        self.masks: dict[float, dict[str, torch.Tensor]] = {}
        self.mask_paths: dict[float, str] = {}
        self.saved_at: list[dict] = []
        self.emitted: dict[float, dict] = {}  # sparsity -> {step, time}: when each mask was reached
        self._finished = False
        self.elapsed = 0.0
        self.last_batch = None
        self.optimizer = None
        self.scheduler = None
        self.reset_optimizer()
        self.forwards = StepForwards(self.config.compile)  # eager, or torch.compile (compiled.py)
        self._tb = None
        self._bar = None
        self._needs_teacher = self.config.uses_kd
        self.guard = StepGuard(self.model)
        self._created = time.perf_counter()
        torch.manual_seed(self.config.seed)
        if resume:
            self.try_resume()

    # -- set-up -----------------------------------------------------------
    def _pick_device(self) -> torch.device:
        d = self.config.device
        if d == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", torch.cuda.current_device())
            return torch.device("cpu")
        return torch.device(d)

    def _requested_steps(self) -> int:
        return requested_steps(self.config, len(self.ctx.train), self.strategy.trains)

    def reset_optimizer(self) -> None:
        groups = self.strategy.param_groups()
        if not groups:
            self.optimizer = self.scheduler = None
            return
        if self.config.optimizer == "adamw":
            # torch AdamW; the score group through the native fused step where measured faster (score_step.py)
            eps = DEFAULT_EPS["adamw"] if self.config.adam_eps is None else float(self.config.adam_eps)
            self.optimizer = make_score_optimizer(groups, lr=self.config.lr, betas=(0.9, 0.999), eps=eps,
                                                  weight_decay=0.0)
        else:  # the reference code's Adam variants (tamt.optim)
            self.optimizer = make_optimizer(self.config.optimizer, groups, lr=self.config.lr,
                                            eps=self.config.adam_eps, max_grad_norm=self.config.grad_clip)
        n, warm = self.strategy.schedule_length(), self.config.warmup_steps

        def lam(i: int) -> float:
            if warm and i < warm:
                return (i + 1) / warm
            return max(0.0, (n - i) / max(1, n - warm))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lam)

    # -- data ---------------------------------------------------------------
    def _order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.ctx.train), generator=g)

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The global batch at the current position (same on every rank), then this rank's slice."""
        B = self.config.batch_size
        n = len(self.ctx.train)
        if self.pos + B > n:
            self.epoch, self.pos = self.epoch + 1, 0
        idx = self._order(self.epoch)[self.pos:self.pos + B]
        self.pos += B
        b = self.ctx.batch("train", idx)
        if self.config.uses_mlm:
            ids, labels = mask_tokens(b["input_ids"], b["attention_mask"], special_ids=self.ctx.special_ids,
                                      mask_id=self.ctx.mask_id, vocab_size=self.ctx.vocab_size,
                                      generator=self.mask_gen, probability=self.config.mlm_probability)
            b["masked_ids"], b["labels"] = ids, labels
        per = B // self.world
        sl = slice(self.rank * per, (self.rank + 1) * per)
        return {k: v[sl].to(self.device) for k, v in b.items()}

    # -- loss -----------------------------------------------------------------
    def _allsum(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            x = x.detach().clone()
            dist.all_reduce(x)
        return x

    def _autocast(self):
        amp = self.config.amp
        if self.device.type == "cuda" and amp in ("auto", "bf16"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def compute_loss(self, b: dict) -> tuple[torch.Tensor, dict]:
        objective = self.strategy.objective
        enc = self.forwards(base_model(self.model))
        metrics = {}
        use_kd = objective in ("kd", "mlm+kd")
        use_mlm = objective in ("mlm", "mlm+kd")
        ids = b["masked_ids"] if use_mlm else b["input_ids"]
        extra = {"token_type_ids": b["token_type_ids"]} if "token_type_ids" in b else {}
        with self._autocast():
            out = enc(input_ids=ids, attention_mask=b["attention_mask"], output_hidden_states=use_kd, **extra)
            loss = torch.zeros((), device=self.device)
            if use_mlm:
                s, c, correct = mlm_loss_sum(self.model, out[0], b["labels"])
                gc = self._allsum(c).clamp(min=1)
                loss = loss + self.config.mlm_weight * s / gc
                metrics["mlm_loss"] = float(self._allsum(s.detach()) / gc)
                metrics["mlm_acc"] = float(self._allsum(correct) / gc)
            if use_kd:
                t = teacher_forward(self.ctx.teacher, ids, b["attention_mask"], dropout=self.config.teacher_dropout,
                                    call=self.forwards(self.ctx.teacher), **extra)
                positions = b["attention_mask"] if self.config.kd_positions == "tokens" else \
                    torch.ones_like(b["attention_mask"])  # 'all': padding included, as the reference KD script
                s, c = kd_loss_sum(out.hidden_states, t.hidden_states, positions)
                L = len(out.hidden_states) - 1
                gc = self._allsum(c).clamp(min=1) * L
                loss = loss + self.config.kd_weight * s / gc
                metrics["kd_loss"] = float(self._allsum(s.detach()) / gc)
        metrics["loss"] = sum(metrics.get(k, 0.0) * w for k, w in
                              (("mlm_loss", self.config.mlm_weight), ("kd_loss", self.config.kd_weight)))
        return loss, metrics

    # -- the loop -------------------------------------------------------------
    def _begin(self) -> None:
        if not self.started:
            self.started = True
            self.strategy.start()
            self._maybe_save_at(0)

    def step(self) -> dict:
        """One optimizer step; returns its metrics."""
        self._begin()
        if self.step_count >= self.total_steps:
            raise StopIteration("the search has finished all its steps")
        if self._needs_teacher:
            self.ctx.teacher.to(self.device)
            self._needs_teacher = False
        t0 = time.perf_counter()
        self.model.train(self.config.dropout)
        b = self.next_batch()
        self.last_batch = b
        loss, metrics = self.compute_loss(b)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.world > 1:
            for p in params:  # params off the loss' graph (e.g. the pooler) have no grad on every rank
                if p.grad is not None:
                    dist.all_reduce(p.grad)
        # the clip's norm doubles as the NaN/Inf check, taken before clipping would spread a NaN to every gradient;
        # divergence stops the run here, before the update and before anything of this step is saved
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        self.guard.before_update(self.step_count + 1, metrics["loss"], params, grad_norm)
        if self.config.grad_clip and not clips_per_tensor(self.config.optimizer):  # bert-adam clips per tensor
            torch.nn.utils.clip_grads_with_norm_(params, self.config.grad_clip, grad_norm)
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.guard.after_update(self.step_count + 1, needs_finite_check(self.optimizer, params))
        self.scheduler.step()
        self.step_count += 1
        self.strategy.after_step(self.step_count)
        self.elapsed += time.perf_counter() - t0
        metrics.update(step=self.step_count, time=round(self.elapsed, 4))
        if self.step_count % max(1, self.config.log_every) == 0 or self.step_count == self.total_steps:
            metrics["sparsity"] = sparsity_report(self.model).sparsity
            self._log(metrics)
        if self.config.eval_every and self.step_count % self.config.eval_every == 0:
            self.evaluate_now()
        self._maybe_save_at(self.step_count)
        if self.config.checkpoint_every and self.step_count % self.config.checkpoint_every == 0:
            self.save_checkpoint()
        for cb in self.callbacks:
            cb(self, "step", metrics)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{metrics['loss']:.4f}", s=f"{sparsity_report(self.model).sparsity:.3f}"
                                  if "sparsity" in metrics else None, refresh=False)
        return metrics

    def run(self, max_steps: int | None = None) -> "Searcher":
        """Run to the end (or ``max_steps`` more steps, leaving the search resumable)."""
        from tqdm.auto import tqdm

        self._begin()
        stop = self.total_steps if max_steps is None else min(self.total_steps, self.step_count + max_steps)
        show = self.config.progress and self.rank == 0 and self.total_steps > 0
        self._bar = tqdm(total=self.total_steps, initial=self.step_count, disable=not show,
                         desc=f"{self.config.method} s={self.sparsity:.2f}", dynamic_ncols=True)
        try:
            while self.step_count < stop:
                self.step()
        finally:
            self._bar.close()
            self._bar = None
        if self.step_count >= self.total_steps:
            self.finish()
        return self

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.strategy.finish()
        if self.config.eval_every:
            self.evaluate_now(final=True)
        for cb in self.callbacks:
            cb(self, "end", {"step": self.step_count})
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self.run_dir is not None and self.rank == 0:
            from tamt.io import atomic_write_text

            atomic_write_text(self.run_dir / "done.json", json.dumps(
                {"step": self.step_count, "elapsed": self.elapsed, "wall_s": time.perf_counter() - self._created,
                 "masks": {f"{k:.4f}": v for k, v in self.mask_paths.items()},
                 "emitted": {f"{k:.4f}": v for k, v in self.emitted.items()},
                 "saved_at": [{k: v for k, v in r.items() if k != "masks"} for r in self.saved_at]}))
            if not self.config.keep_checkpoint and self.checkpoint_path.is_file():
                self.checkpoint_path.unlink()  # done.json now says it all; a BERT-base checkpoint is 268 MB

    @property
    def finished(self) -> bool:
        return self._finished

    # -- evaluation ---------------------------------------------------------------
    def _eval_objectives(self) -> tuple[str, ...]:
        if self.config.eval_objectives == "both":
            return ("mlm", "kd")
        m = self.config.method
        return ("mlm", "kd") if m == "tamt-mlm-kd" else ("kd",) if m == "tamt-kd" else ("mlm",)

    def evaluate_now(self, final: bool = False) -> dict:
        from .api import evaluate_context

        # (no threshold reset here: in paper mode an evaluation must not change the search's trajectory)
        t = time.perf_counter()
        res = evaluate_context(self.ctx, self.model, batches=self.config.eval_batches,
                               batch_size=self.config.eval_batch_size or self.config.batch_size,
                               seed=self.config.seed, device=self.device, objectives=self._eval_objectives())
        row = {"step": self.step_count, "time": round(self.elapsed, 4), "eval_time": time.perf_counter() - t,
               **{f"eval_{k}": v for k, v in res.items()}}
        self._log(row)
        for cb in self.callbacks:
            cb(self, "eval", row)
        return row

    # -- outputs --------------------------------------------------------------------
    def _log(self, row: dict) -> None:
        self.history.append(dict(row))
        if self.rank != 0 or self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.config.tensorboard:
            if self._tb is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(self.run_dir / "tb"))
                except Exception:  # tensorboard not installed
                    self.config.tensorboard = False
                    return
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row["step"])

    def metadata(self, sparsity: float, step: int) -> dict:
        return {"method": self.config.method, "sparsity": sparsity, "step": step, "seed": self.config.seed,
                "base_model": self.ctx.info["base_model"], "fingerprint": self.ctx.info["fingerprint"],
                "head_initialised": self.ctx.info["head_initialised"],
                "head_fit_steps": self.ctx.info.get("head_fit_steps", 0),
                "threshold_mode": self.config.threshold_mode, "score_init": self.config.score_init,
                "config": self.config.to_dict(), "structure": structure_map(self.model)}

    def emit(self, sparsity: float, masks: dict, *, final: bool) -> None:
        """Record a finished mask (TAMT/OMP/random: the final one; IMP: each round's)."""
        sparsity = float(sparsity)
        masks = {k: v.detach().cpu().clone() for k, v in masks.items()}
        self.masks[sparsity] = masks
        self.emitted[sparsity] = {"step": self.step_count, "time": round(self.elapsed, 4)}
        path = None
        if self.mask_dir is not None and self.rank == 0:
            from tamt.masks import save_mask

            path = self.mask_dir / mask_filename(self.label, sparsity)
            save_mask(path, masks, self.metadata(sparsity, self.step_count))
            self.mask_paths[sparsity] = str(path)
        for cb in self.callbacks:
            cb(self, "mask", {"sparsity": sparsity, "step": self.step_count, "path": path, "final": final})

    def _maybe_save_at(self, step: int) -> None:
        if step not in self.config.save_masks_at or self.config.method == "imp":
            return
        from tamt.masks import save_mask
        from tamt.nn import get_masks

        self.strategy.before_save()
        rec = {"step": step, "sparsity": self.sparsity, "time": round(self.elapsed, 4)}
        if self.mask_dir is not None and self.rank == 0:
            path = self.mask_dir / "steps" / mask_filename(self.label, self.sparsity, step)
            save_mask(path, self.model, self.metadata(self.sparsity, step))
            rec["path"] = str(path)
        else:
            rec["masks"] = {k: v.cpu() for k, v in get_masks(self.model).items()}
        self.saved_at.append(rec)

    @property
    def label(self) -> str:
        """Method plus N:M structure ('omp', 'tamt-kd-2of4'): file names of masks."""
        return run_label(self.config.method, self.config.structure, self.config.embedding_structure)

    # -- checkpoints -------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir is not None else None

    def state_dict(self) -> dict:
        return {
            "version": CKPT_VERSION, "method": self.config.method, "sparsity": self.sparsity,
            "sparsities": list(self.sparsities), "config": self.config.to_dict(),
            "step": self.step_count, "started": self.started, "epoch": self.epoch, "pos": self.pos,
            "strategy": self.strategy.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "rng": {"torch": torch.get_rng_state(), "mask": self.mask_gen.get_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "history": self.history, "emitted": {str(k): v for k, v in self.emitted.items()}, "mask_paths": {str(k): v for k, v in self.mask_paths.items()},
            "saved_at": [{k: v for k, v in r.items() if k != "masks"} for r in self.saved_at],
            "elapsed": self.elapsed, "fingerprint": self.ctx.info["fingerprint"],
        }

    def save_checkpoint(self) -> Path | None:
        if self.checkpoint_path is None or self.rank != 0:
            return None
        from tamt.io import atomic_path

        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(self.state_dict(), tmp)
        return self.checkpoint_path

    def load_state_dict(self, st: dict) -> None:
        if st.get("version") != CKPT_VERSION:
            raise ValueError("checkpoint written by another tamt version; start the search afresh")
        if st["method"] != self.config.method or abs(st["sparsity"] - self.sparsity) > 1e-9:
            raise ValueError(f"checkpoint is for {st['method']} at s={st['sparsity']}, not this search")
        for key in ("structure", "embedding_structure"):
            was = st.get("config", {}).get(key, "unstructured")
            if was != getattr(self.config, key):
                raise ValueError(f"checkpoint is for {key} {was}, not {getattr(self.config, key)}; use another "
                                 "--out or start the search afresh")
        if st["fingerprint"] != self.ctx.info["fingerprint"]:
            raise ValueError("checkpoint was written for other base weights; start the search afresh")
        from .run_dir import config_differences, format_differences

        diffs = config_differences(st["config"], self.config.to_dict())
        if diffs:
            raise ValueError(f"the checkpoint was written with other settings that change the result "
                             f"({format_differences(diffs)}); resume with the original settings or start afresh")
        self.strategy.load_state_dict(st["strategy"])
        if self.config.method == "imp":
            self.reset_optimizer()
        if self.optimizer is not None and st["optimizer"] is not None:
            self.optimizer.load_state_dict(st["optimizer"])
            self.scheduler.load_state_dict(st["scheduler"])
        self.step_count, self.started = st["step"], st["started"]
        self.epoch, self.pos = st["epoch"], st["pos"]
        torch.set_rng_state(st["rng"]["torch"])
        self.mask_gen.set_state(st["rng"]["mask"])
        if st["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["rng"]["cuda"])
        self.history = list(st["history"])
        self.saved_at = list(st["saved_at"])
        self.elapsed = st["elapsed"]
        self.emitted = {float(k): v for k, v in st.get("emitted", {}).items()}
        from tamt.masks import load_mask

        for k, p in st["mask_paths"].items():
            self.mask_paths[float(k)] = p
            self.masks[float(k)] = load_mask(p).masks

    def try_resume(self) -> bool:
        p = self.checkpoint_path
        if p is None or not p.is_file():
            if self.rank == 0 and self.run_dir is not None and (self.run_dir / "metrics.jsonl").is_file():
                (self.run_dir / "metrics.jsonl").unlink()  # rows of an attempt killed before its first checkpoint
            return False
        try:
            st = torch.load(p, map_location="cpu", weights_only=True)  # plain tensors and containers: no code runs
        except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError ... for a torn file
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise ValueError(f"the checkpoint {p} is unreadable ({why}); delete it to "
                             "restart this sparsity from step 0 with --resume, or start afresh with --overwrite") \
                from None
        self.load_state_dict(st)
        if self.rank == 0 and self.run_dir is not None:  # drop rows logged after the checkpoint
            from tamt.io import atomic_write_text

            atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
        log.info("resumed %s s=%.2f at step %d", self.config.method, self.sparsity, self.step_count)
        return True
