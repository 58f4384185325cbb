"""The benchmark's old address: the harness now lives in :mod:`convolab.apps.bench`.

``python -m convolab.bench`` keeps working (it is the same as ``convolab bench``),
and so do imports such as ``from convolab.bench import run_suite, SUITE``. The
numbers of the protocol (``SETTLE_S``, ``BLAS_MATMUL_SIZE``...) are copies here:
to change one for a run, set it in :mod:`convolab.apps.bench.protocol`.
"""

import sys

# The imports are this module's content (hence noqa: F401).
from .apps.bench.command import add_bench_parser, main, run_bench  # noqa: F401
from .apps.bench.machine import CORETYPE_VARIABLE, default_memory_limit_gib, machine_info  # noqa: F401
from .apps.bench.protocol import (  # noqa: F401
    BLAS_MATMUL_SIZE, BLAS_MIN_BUDGET_S, DEFAULT_BUDGET_S, GIB, MAX_REPEATS, MIB, QUICK_BUDGET_S, SETTLE_S,
    THREAD_VARIABLES)
from .apps.bench.render import kept_sections, render_results_md, render_table, write_section  # noqa: F401
from .apps.bench.results import TARGETS, Report, Row, evaluate_targets, summarize  # noqa: F401
from .apps.bench.run import measure_blas_rate, run_suite  # noqa: F401
from .apps.bench.suite import (  # noqa: F401
    CONV_PHASES, FILTER_KERNEL_SIZES, SUITE, SUITE_VERSION, ConvProblem, FilterProblem, MemoryProblem, Problem,
    select_problems)
from .apps.bench.timing import PeakMeter, Timing, time_call, time_turns  # noqa: F401

# What this module exported before the move.
__all__ = ["ConvProblem", "FilterProblem", "MemoryProblem", "SUITE", "SUITE_VERSION", "FILTER_KERNEL_SIZES",
           "CONV_PHASES", "TARGETS", "Timing", "Row", "Report", "PeakMeter", "time_call", "time_turns",
           "select_problems", "run_suite", "summarize", "evaluate_targets", "machine_info", "render_table",
           "render_results_md", "add_bench_parser", "run_bench", "main"]

if __name__ == "__main__":
    sys.exit(main())
