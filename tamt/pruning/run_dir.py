"""Run folders of ``tamt search``: which run a folder holds, and whether a new command may use it.

``OUT/run.json`` records the run's identity: the full resolved
:class:`SearchConfig`, the base weights' fingerprint and the corpus'
identity (block counts and a hash of sampled blocks).  A command that names
the folder again:

* with ``resume``: continues only when nothing that changes the result
  differs; otherwise it is refused with the differing keys (old -> new).  What
  may differ is an explicit allowlist, :data:`HARMLESS`; every other
  ``SearchConfig`` field - including fields added later - changes the result
  by default.
* without ``resume``: a folder that already holds a run is refused, unless
  ``overwrite`` (then tamt's own files in it are deleted first).

One run per folder (decided for issue 12): ``config.json`` and
``result.json`` describe one run, and ``--resume`` needs one identity to
compare with.  Runs of several methods each get their own ``--out`` (the
sweep gives each search cell its own files); letting them share a folder
would need per-method summaries that the README, demo and sweep do not read.

The caller holds the folder's lock (:func:`tamt.io.folder_lock`) around
:func:`claim` and the run, so nothing here races with another process.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from .config import SearchConfig

log = logging.getLogger(__name__)

FORMAT = 1

# SearchConfig fields that may differ on --resume: they change how a run is watched, not what it finds.
HARMLESS = frozenset({
    "progress",  # progress bars
    "tensorboard",  # an extra copy of the logged metrics
    "log_every",  # how often metrics are logged (the logged values are read off the model, nothing else)
    "checkpoint_every",  # when the state is saved, not what it is
    "keep_checkpoint",  # whether checkpoint.pt survives the finished run
    "device",  # moving an interrupted run to another device (the last float bits may differ)
    "compile",  # torch.compile or eager: the same step (the last float bits may differ)
})
# Not harmless although they look it: eval_every and save_masks_at (in paper threshold mode an evaluation or a
# step mask resets tau, which changes the mask), eval_batches / eval_batch_size (one metrics.jsonl would mix two
# evaluation protocols), amp (numerics).

# what tamt search writes into OUT (mlm_head.pt is a cache keyed by its own inputs: it stays)
OWNED = ("run.json", "config.json", "result.json", "masks", "runs")


# ---------------------------------------------------------------------------
# identity


def corpus_identity(train, validation, spec=None, samples: int = 64) -> dict:
    """Block counts and a hash of up to ``samples`` evenly spaced blocks of each split (cheap for any size)."""
    h = hashlib.sha256()
    for split in (train, validation):
        n = len(split)
        idx = sorted({round(i * (n - 1) / max(1, samples - 1)) for i in range(min(n, samples))})
        for row in (split[idx]["input_ids"] if idx else []):
            h.update(json.dumps(list(map(int, row))).encode())
    return {"spec": None if spec is None or not isinstance(spec, (str, Path)) else str(spec),
            "train_blocks": len(train), "validation_blocks": len(validation), "sample_sha": h.hexdigest()[:16]}


def run_identity(config: SearchConfig, info: dict, corpus: dict) -> dict:
    """What run.json stores: the resolved config, the base weights and the corpus."""
    return {"format": FORMAT, "config": _plain(config.resolved().to_dict()),
            "model": {"base_model": info.get("base_model"), "fingerprint": info.get("fingerprint")},
            "corpus": corpus}


def _plain(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))  # tuples -> lists, as read back from JSON


_MISSING = object()

# fields added after runs were written whose default changed the behaviour: an old run.json without
# them ran with the value here, not with today's default (so resuming it with the default is a change)
LEGACY_VALUES = {"fast_dropout": False, "head_train": "train"}


def config_differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(field, old, new) for every result-changing field that differs between two config dicts.

    A field missing on one side (a run written before the field existed)
    counts as its default for the method, so adding a field with a default
    that keeps the old behaviour does not invalidate older runs.  Fields whose
    default changed the behaviour (:data:`LEGACY_VALUES`) count as the value
    the older run really used.
    """
    old, new = _plain(old), _plain(new)
    method = new.get("method", old.get("method", "tamt-mlm"))
    try:
        defaults = _plain(SearchConfig(method=method).resolved().to_dict())
    except (TypeError, ValueError):
        defaults = {}
    out = []
    for key in sorted(set(old) | set(new)):
        if key in HARMLESS:
            continue
        a = old.get(key, LEGACY_VALUES.get(key, defaults.get(key, _MISSING)))
        b = new.get(key, defaults.get(key, _MISSING))
        if a != b:
            out.append((key, a, b))
    return out


def differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """Result-changing differences between two run identities (config, model weights, corpus)."""
    diffs = config_differences(old.get("config") or {}, new.get("config") or {})
    if old.get("model") and new.get("model") and old["model"].get("fingerprint") != new["model"].get("fingerprint"):
        diffs.append(("model fingerprint", _named(old["model"]), _named(new["model"])))
    if old.get("corpus") and new.get("corpus"):
        keys = ("train_blocks", "validation_blocks", "sample_sha")
        if any(old["corpus"].get(k) != new["corpus"].get(k) for k in keys):
            diffs.append(("corpus", _corpus(old["corpus"]), _corpus(new["corpus"])))
    return diffs


def _named(m: dict) -> str:
    return f"{m.get('fingerprint')} ({m.get('base_model')})"


def _corpus(c: dict) -> str:
    return f"{c.get('spec') or 'in-memory'}: {c.get('train_blocks')}+{c.get('validation_blocks')} blocks, " \
           f"sample {c.get('sample_sha')}"


def _fmt(v) -> str:
    return "(unset)" if v is _MISSING else json.dumps(v) if not isinstance(v, str) or " " not in v else v


def format_differences(diffs) -> str:
    return "; ".join(f"{k}: {_fmt(a)} -> {_fmt(b)}" for k, a, b in diffs)


# ---------------------------------------------------------------------------
# the folder


def read_identity(out: Path) -> dict | None:
    """The identity of the run in ``out``: run.json, else an older tamt's config.json (config only), else None."""
    out = Path(out)
    for name in ("run.json", "config.json"):
        p = out / name
        if not p.is_file():
            continue
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        if name == "run.json" and isinstance(d, dict) and "config" in d:
            return d
        if name == "config.json" and isinstance(d, dict) and "method" in d:
            try:
                return {"config": _plain(SearchConfig.from_dict(d).resolved().to_dict())}
            except (TypeError, ValueError):
                return None
    return None


def claim(out: Path, identity: dict, *, resume: bool, overwrite: bool) -> str:
    """May this command use ``out``?  Returns ``'fresh'`` or ``'resume'``; raises ValueError otherwise.

    Writes nothing, except that ``overwrite`` deletes the previous run's files.
    """
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    present = [n for n in OWNED if (out / n).exists()]
    if not present:
        if resume:
            log.info("nothing to resume in %s: starting the run", out)
        return "fresh"
    old = read_identity(out)
    if overwrite:
        for n in present:
            p = out / n
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        log.info("--overwrite: removed the previous run's %s from %s", ", ".join(present), out)
        return "fresh"
    if old is None:
        raise ValueError(f"{out} holds {', '.join(present)} but no tamt search run (run.json) that could be "
                         "resumed or replaced safely; choose another --out (or --overwrite to replace those files)")
    method = old["config"].get("method", "?")
    finished = (out / "result.json").is_file()
    if not resume:
        state = "a finished" if finished else "an unfinished"
        raise ValueError(f"{out} already holds {state} {method} run; pass --resume to continue it, --overwrite to "
                         "replace it, or choose another --out")
    diffs = differences(old, identity)
    if diffs:
        raise ValueError(f"--resume: the run in {out} was started with other settings that change the result "
                         f"({format_differences(diffs)}); resume with the original options, or start a fresh run "
                         "with another --out (or --overwrite to replace this one)")
    return "resume"


def write_identity(out: Path, identity: dict) -> None:
    """run.json (the identity) and config.json (the resolved config alone, for people and older readers)."""
    from tamt.io import atomic_write_text

    atomic_write_text(Path(out) / "run.json", json.dumps(identity, indent=1))
    atomic_write_text(Path(out) / "config.json", json.dumps(identity["config"], indent=1))


# ---------------------------------------------------------------------------
# a finished sub-run (one sparsity) read back for --resume


class FinishedRun:
    """The parts of a finished :class:`Searcher` that ``tamt.search`` reports, read from its run folder."""

    def __init__(self, run_dir: Path):
        from tamt.masks import load_mask

        done = json.loads((run_dir / "done.json").read_text())
        self.step_count = done["step"]
        self.elapsed = done["elapsed"]
        self.wall_s = done.get("wall_s")
        self.mask_paths = {float(k): v for k, v in done["masks"].items()}
        self.emitted = {float(k): v for k, v in done.get("emitted", {}).items()}
        self.saved_at = list(done.get("saved_at", []))
        missing = [p for p in self.mask_paths.values() if not Path(p).is_file()]
        if missing:
            raise ValueError(f"the finished run in {run_dir} lists mask {missing[0]}, which is gone; start afresh "
                             "with --overwrite")
        self.masks = {s: load_mask(p).masks for s, p in self.mask_paths.items()}
        metrics = run_dir / "metrics.jsonl"
        self.history = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] \
            if metrics.is_file() else []

    @classmethod
    def load(cls, run_dir: Path | None) -> "FinishedRun | None":
        if run_dir is None or not (Path(run_dir) / "done.json").is_file():
            return None
        return cls(Path(run_dir))
