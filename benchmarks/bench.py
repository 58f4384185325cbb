"""Run convolab's benchmark: the same code as ``convolab bench`` (:mod:`convolab.apps.bench`).

    python benchmarks/bench.py --quick                     # a small subset, under 2 minutes
    python benchmarks/bench.py --filter vgg16 --no-torch   # some problems, convolab alone
    python benchmarks/bench.py --json benchmarks/results.json --results benchmarks/RESULTS.md   # the full suite

The BLAS reads its thread count when NumPy loads, so this script sets
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` (to
``--threads``, default 2) before importing anything that loads NumPy; with
threadpoolctl installed the count is also held at run time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _threads_from_argv(argv: list[str]) -> str:
    for index, arg in enumerate(argv):
        if arg == "--threads" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "2"


if __name__ == "__main__":
    threads = _threads_from_argv(sys.argv[1:])
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = threads
    try:
        from convolab.apps.bench.command import main
    except ImportError:  # run from a checkout without installing
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
        from convolab.apps.bench.command import main
    sys.exit(main())
