"""The benchmark: convolab against PyTorch (CPU) and SciPy on a published suite.

Every convolution layer of the suite is timed three ways (forward, input
gradient, weight gradient) on both sides; image filtering is timed against
``scipy.signal.correlate(method="auto")``; one large convolution's peak memory
is measured in a fresh subprocess. Measurements are data first (a
:class:`~.results.Report`), rendered second (a table, JSON, ``RESULTS.md``).

This is an application built on convolab, not part of the library:
``import convolab`` never loads it. Run it as ``convolab bench``,
``python -m convolab.bench`` or ``python benchmarks/bench.py``. Its modules:

:mod:`.suite`
    The published suite, as data (:data:`~.suite.SUITE`), and picking problems.
:mod:`.protocol`
    The numbers of the measuring protocol: budgets, repeats, pauses.
:mod:`.timing`
    Timing one call, several in turns or in alternating blocks, and a call's peak memory.
:mod:`.machine`
    Probes and controls of the machine: CPU, BLAS, load, threads, the memory guard.
:mod:`.run`
    Running the suite, the BLAS rate and the peak-memory probe.
:mod:`.results`
    What a run measured (:class:`~.results.Report`), its summary and the targets.
:mod:`.render`
    The plain-text table and the results page.
:mod:`.command`
    The ``bench`` command's flags and its run.

The names below are importable from this package too, each loaded from its
module on first use (so that building the ``convolab`` command line, which
needs only :mod:`.command`, loads nothing else).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Each public name of the harness, and the module that defines it.
_HOMES = {
    **dict.fromkeys(["ConvProblem", "PoolProblem", "FilterProblem", "MemoryProblem", "Problem", "SUITE",
                     "SUITE_VERSION", "CONV_PHASES", "POOL_PHASES", "FILTER_KERNEL_SIZES", "select_problems",
                     "describe_problem", "list_problems"],
                    "suite"),
    **dict.fromkeys(["MAX_REPEATS", "SETTLE_S", "DEFAULT_BUDGET_S", "QUICK_BUDGET_S", "BLAS_MIN_BUDGET_S",
                     "BLAS_MATMUL_SIZE", "GIB", "MIB", "THREAD_VARIABLES"], "protocol"),
    **dict.fromkeys(["Timing", "PeakMeter", "time_call", "time_turns", "time_in_rounds"], "timing"),
    **dict.fromkeys(["machine_info", "default_memory_limit_gib", "CORETYPE_VARIABLE"], "machine"),
    **dict.fromkeys(["run_suite", "measure_blas_rate"], "run"),
    **dict.fromkeys(["Row", "Report", "TARGETS", "summarize", "evaluate_targets"], "results"),
    **dict.fromkeys(["render_table", "render_results_md", "kept_sections", "write_section"], "render"),
    **dict.fromkeys(["add_bench_parser", "run_bench", "main"], "command"),
}
_MODULES = ("suite", "protocol", "timing", "machine", "run", "results", "render", "command")

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES, *_MODULES})
