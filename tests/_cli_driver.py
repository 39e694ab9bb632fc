"""Run many ``tamt`` command lines in ONE process (imports cost seconds per process on a 2-core CI machine).

Usage: ``python tests/_cli_driver.py CASES.json REPORT.json``.  Each case is
``{"name", "argv", "env": {...}, "unset": [...], "umask": int, "watch": [paths]}``;
the report holds per case the exit code (``"raised"`` when an exception escaped
``tamt.cli.main``, with the traceback in stderr), stdout, stderr, the seconds it
took and, for every watched path, whether any file under it changed.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path


def digest(root: str) -> dict:
    p = Path(root)
    if not p.exists():
        return {}
    if p.is_file():
        return {".": hashlib.sha256(p.read_bytes()).hexdigest()}
    return {str(q.relative_to(p)): hashlib.sha256(q.read_bytes()).hexdigest() for q in sorted(p.rglob("*"))
            if q.is_file()}


def run_case(case: dict) -> dict:
    from tamt.cli import main

    saved_env = dict(os.environ)
    os.environ.update(case.get("env", {}))
    for k in case.get("unset", []):
        os.environ.pop(k, None)
    old_umask = os.umask(case["umask"]) if "umask" in case else None
    before = {w: digest(w) for w in case.get("watch", [])}
    logging.getLogger().handlers.clear()  # main() configures logging anew onto this case's stderr
    out, err = io.StringIO(), io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(case["argv"])
        except SystemExit as exc:  # argparse errors
            rc = exc.code
        except BaseException:  # noqa: BLE001 - exactly what the tests must see
            rc = "raised"
            err.write(traceback.format_exc())
    seconds = time.perf_counter() - t
    if old_umask is not None:
        os.umask(old_umask)
    os.environ.clear()
    os.environ.update(saved_env)
    changed = {w: digest(w) != before[w] for w in before}
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "seconds": seconds, "changed": changed}


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    report = {c["name"]: run_case(c) for c in cases}
    Path(sys.argv[2]).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
