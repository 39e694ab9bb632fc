"""Command line: ``tamt <command> --help``.

Thin by design: each command module parses its arguments and calls the
Python API.  Command modules register themselves in ``COMMANDS``; a module
whose optional dependencies are missing is reported, not hidden.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# (module, one-line help) - each module defines ``register(subparsers)``.
COMMANDS = [
    ("tamt.cli.demo", "demo: the whole TAMT story offline on the embedded default"),
    ("tamt.cli.search", "search / eval-pretrain: find subnetworks (TAMT, IMP, OMP, random)"),
    ("tamt.cli.finetune", "finetune / sweep: downstream transfer of subnetworks"),
    ("tamt.cli.masks", "info / compare-masks: inspect mask files"),
    ("tamt.cli.export", "export: a subnetwork as a plain Hugging Face checkpoint"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tamt",
        description=(
            "tamt: find lottery tickets (sparse subnetworks) in pre-trained BERT-family encoders by "
            "task-agnostic mask training (TAMT), and compare them with IMP, OMP and random pruning."
        ),
        epilog="Run 'tamt <command> --help' for each command's options.",
    )
    parser.add_argument("--backend", choices=["auto", "triton", "native", "torch"], default=None,
                        help="kernel backend for the masked ops (default: $TAMT_BACKEND or auto)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging and full tracebacks (also: TAMT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for modname, _ in COMMANDS:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("tamt.cli."):
                continue  # command not part of this build yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.backend:
        from tamt.ops import set_backend

        set_backend(args.backend)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "no_progress", False):
        _no_progress_bars()
    debug = args.verbose or os.environ.get("TAMT_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command with --resume to continue where it stopped", file=sys.stderr)
        return 130
    except ImportError as exc:  # an installation problem, not bad input and not a tamt bug
        if debug:
            raise
        print(f"tamt {args.command}: error: an import failed: {_one_line(exc)} (an installation problem: rerun "
              "`bash scripts/bootstrap.sh`, or TAMT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    except (ValueError, TypeError, RuntimeError, OSError) as exc:  # bad input, missing files, busy folders
        if debug:
            raise
        print(f"tamt {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still no wall of text, but say how to get the traceback
        if debug:
            raise
        print(f"tamt {args.command}: unexpected error: {type(exc).__name__}: {_one_line(exc)} (rerun with "
              "TAMT_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # e.g. PermissionError from the OS
        return f"{exc.strerror}: {exc.filename}"
    return str(exc) or type(exc).__name__


def _no_progress_bars() -> None:
    """--no-progress: silence the libraries' bars too (datasets tokenisation/saving, hub downloads)."""
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover - datasets is a core dependency
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
