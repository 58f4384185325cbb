"""The ``bench`` command: its flags, and running it (``convolab bench``, ``python -m convolab.bench``).

Building the flags loads nothing but this module and :mod:`.protocol`; the
harness (the suite, the timing, the machine probes, the rendering) is imported
when the command runs, so the other ``convolab`` commands start without it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from . import protocol

__all__ = ["add_bench_parser", "run_bench", "main"]

#: Set in the environment of the subprocess :func:`run_bench` starts, so that one does not start another.
_REEXEC_MARK = "CONVOLAB_BENCH_REEXEC"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


_DESCRIPTION = ("Time convolab against PyTorch (CPU) and SciPy on the published suite: forward, input gradient "
                "and weight gradient of CNN, audio and volume layers, image filtering, and peak memory.")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a small subset of the suite (under 2 minutes)")
    parser.add_argument("--filter", action="append", metavar="SUBSTRING",
                        help="only problems whose name contains SUBSTRING (repeatable: any of them)")
    parser.add_argument("--json", metavar="PATH", help="write every measurement as JSON to PATH")
    parser.add_argument("--results", metavar="PATH", help="write the results page (benchmarks/RESULTS.md) to PATH")
    parser.add_argument("--repeats", type=_positive_int, metavar="N",
                        help="timed calls per measurement after the warm-up (default: as many as fit the budget)")
    parser.add_argument("--rounds", type=_positive_int, metavar="N",
                        help=f"alternating blocks per library and phase, each after a rest; the budget is split "
                             f"among them (default {protocol.ROUNDS})")
    parser.add_argument("--budget", type=_positive_float, metavar="SECONDS",
                        help=f"time budget per measurement (default {protocol.DEFAULT_BUDGET_S}, {protocol.QUICK_BUDGET_S} with --quick)")
    parser.add_argument("--no-torch", action="store_true", help="time convolab alone, even if PyTorch is installed")
    parser.add_argument("--threads", type=_positive_int, default=2,
                        help="threads for PyTorch and for NumPy's BLAS (default 2)")
    parser.add_argument("--memory-limit", type=float, metavar="GIB", default=None,
                        help="address space the benchmark may add, in GiB (default: half the available memory; "
                             "0 for no cap)")
    parser.add_argument("--probes", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure import time and the first compiled call (cold and warm cache), each "
                             "in fresh processes (default: on for the whole suite, off with --quick or --filter)")
    parser.add_argument("--list", action="store_true", help="print the selected problems and exit")


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand (its flags, and ``run=run_bench``) on ``subparsers``."""
    parser = subparsers.add_parser(
        "bench", help="time convolab against PyTorch and SciPy on the published suite", description=_DESCRIPTION)
    _add_arguments(parser)
    parser.set_defaults(run=run_bench)
    return parser


def _argv_from_args(args: argparse.Namespace) -> list[str]:
    """The command-line flags that rebuild ``args`` (to run again in a subprocess)."""
    argv = []
    for flag in ("quick", "no_torch", "list"):
        if getattr(args, flag, False):
            argv.append("--" + flag.replace("_", "-"))
    for substring in args.filter or []:
        argv += ["--filter", substring]
    if getattr(args, "probes", None) is not None:
        argv.append("--probes" if args.probes else "--no-probes")
    for flag in ("json", "results", "repeats", "rounds", "budget", "threads", "memory_limit"):
        value = getattr(args, flag, None)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    return argv


def run_bench(args: argparse.Namespace) -> int:
    """Run the ``bench`` subcommand: measure, print the table, write JSON and RESULTS.md if asked."""
    # The harness loads here, not when the parser is built: ``convolab explain`` never pays for it.
    from . import suite
    from .machine import blas_threads, child_environment, default_memory_limit_gib
    from .render import kept_sections, render_results_md, render_table
    from .run import run_suite

    problems = suite.select_problems(suite.SUITE, quick=args.quick, filters=args.filter)
    if not problems:
        print(f"convolab bench: --filter {' '.join(args.filter or [])} matches no problem of the suite "
              f"(try --list)", file=sys.stderr)
        return 2
    if args.list:
        print(suite.list_problems(problems), end="")
        return 0
    with blas_threads(args.threads) as thread_method:
        if thread_method is None and not os.environ.get(_REEXEC_MARK):
            # The BLAS read its thread count when NumPy loaded; run again with the variables set.
            env = child_environment(args.threads)
            env[_REEXEC_MARK] = "1"
            print(f"convolab bench: no threadpoolctl; running in a subprocess with "
                  f"{', '.join(protocol.THREAD_VARIABLES)}={args.threads}", file=sys.stderr, flush=True)
            # The entry point the README documents; it reaches main() below.
            return subprocess.run([sys.executable, "-m", "convolab.bench", *_argv_from_args(args)],
                                  env=env).returncode
        torch = _load_torch(not args.no_torch, args.threads)
        if not args.no_torch and torch is None:
            print("convolab bench: PyTorch is not installed; timing convolab alone", file=sys.stderr)
        budget = args.budget or (protocol.QUICK_BUDGET_S if args.quick else protocol.DEFAULT_BUDGET_S)
        memory_limit = default_memory_limit_gib() if args.memory_limit is None else args.memory_limit
        command = " ".join(["convolab bench", *_argv_from_args(args)])
        probes = args.probes if args.probes is not None else not (args.quick or args.filter)
        report = run_suite(problems, torch=torch, budget_s=budget, repeats=args.repeats, threads=args.threads,
                           thread_method=thread_method, memory_limit_gib=memory_limit, probes=probes,
                           rounds=args.rounds or protocol.ROUNDS, settings={"quick": args.quick, "filter": args.filter, "command": command})
    print(render_table(report), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.results:
        path = Path(args.results)
        kept = kept_sections(path.read_text()) if path.exists() else ""
        path.write_text(render_results_md(report) + kept)
        print(f"wrote {args.results}")
    return 0


def _load_torch(use_torch: bool, threads: int) -> Any:
    """PyTorch with ``threads`` intra-op threads, or None (not wanted, or not installed)."""
    if not use_torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convolab.bench [flags]`` (and ``benchmarks/bench.py``): the ``bench`` subcommand alone."""
    parser = argparse.ArgumentParser(prog="convolab bench", description=_DESCRIPTION)
    _add_arguments(parser)
    return run_bench(parser.parse_args(argv))

