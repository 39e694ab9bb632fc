"""Sweep folders: locked while running, and a resume with other cell settings is refused."""
from __future__ import annotations

import json
import os

import pytest

from tamt.analysis.sweep import run_sweep
from tamt.io import folder_lock


def test_resume_with_other_cell_settings_is_refused(tmp_path):
    cfg = {"methods": ["omp"], "dense": False, "tasks": ["sst2"], "finetune": {"lr": 1e-4}}
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "finetune": {"lr": 5e-5}}))
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match=r'finetune: \{"lr": 5e-05\} -> \{"lr": 0.0001\}.*--no-resume'):
        run_sweep(cfg, tmp_path, progress=False)
    assert (tmp_path / "config.json").read_text() == before and sorted(os.listdir(tmp_path)) == ["config.json"]


def test_a_running_sweep_folder_is_locked(tmp_path):
    with folder_lock(tmp_path / "sweep"):
        # the holder is this process; another one is refused the same way (tests/test_cli_errors.py)
        import threading

        err = []
        t = threading.Thread(target=lambda: err.append(pytest.raises(RuntimeError, run_sweep, {"methods": ["omp"]},
                                                                     tmp_path / "sweep", progress=False)))
        t.start()
        t.join()
    assert "is using" in str(err[0].value)
