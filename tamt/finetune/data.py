"""Task data for fine-tuning: a thin adapter over the data layer (``tamt.data.glue``, ``tamt.data.squad``).

Every GLUE example has ``text_a``, ``text_b`` (None for single-sentence tasks)
and ``label``; SQuAD examples ``id, question, context, answers``. ``data`` is
"hub" or a folder in the official layout; malformed files raise ValueError
naming the file and line (the data layer's readers).  The embedded demo tasks
("sentiment", "nli") are fine-tuned like GLUE tasks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TaskInfo:
    name: str
    num_labels: int
    is_regression: bool
    eval_splits: tuple[str, ...]
    metrics: tuple[str, ...]
    main_metric: str


SQUAD = TaskInfo("squad", 0, False, ("validation",), ("exact_match", "f1"), "f1")


def task_info(task: str) -> TaskInfo:
    if task.lower() == "squad":
        return SQUAD
    from tamt.data.glue import task_spec

    try:
        s = task_spec(task)
    except KeyError as exc:
        raise ValueError(str(exc.args[0]) + "; or 'squad'") from None
    return TaskInfo(s.name, s.num_labels, s.is_regression, s.eval_splits, s.metrics, s.main_metric)


def canonical_task(task: str) -> str:
    return task_info(task).name


def load_task(task: str, data="hub", seed: int = 0):
    """DatasetDict with ``train`` and the task's eval splits."""
    task = canonical_task(task)
    if task == "squad":
        from tamt.data.squad import load_squad

        dd = load_squad(_data_arg(data, squad=True))
        if "train" not in dd or "validation" not in dd:
            raise FileNotFoundError(f"SQuAD fine-tuning needs train-v1.1.json and dev-v1.1.json (got {list(dd)})")
        return dd
    from tamt.data.glue import DEMO_TASKS, load_demo_task, load_glue

    if task in DEMO_TASKS:
        return load_demo_task(task, seed=0)
    dd = load_glue(task, _data_arg(data))
    missing = [s for s in ("train",) + task_info(task).eval_splits if s not in dd]
    if missing:
        raise FileNotFoundError(f"GLUE {task}: no {', '.join(missing)} split(s) in {data}")
    return dd


def _data_arg(data, squad: bool = False):
    if data in (None, "hub"):
        return "hub"
    p = Path(os.fspath(data)).expanduser()
    if squad and p.is_dir() and not (p / "dev-v1.1.json").exists() and not (p / "v1.1").exists() \
            and (p / "squad").is_dir():
        return p / "squad"
    return p


def subsample(dataset, n: int | None, seed: int, stratify: bool = True):
    if n is None or n >= len(dataset):
        return dataset
    if n <= 0:
        raise ValueError(f"train size must be positive, got {n}")
    from tamt.data.glue import subsample as _subsample

    return _subsample(dataset, n, seed=seed, stratify=stratify)
