"""The numbers of the measuring protocol: budgets, repeats, the rest between libraries, the BLAS probe.

They live apart from the code that reads them, and that code reads them as
``protocol.NAME`` when it runs, so a test (or a one-off experiment) that sets
one here changes every place it matters: the timing loop and the method text of
``RESULTS.md`` alike. Importing this module costs nothing, which lets the
``bench`` command's flags be built without loading the harness.
"""

from __future__ import annotations

__all__ = ["MAX_REPEATS", "MIN_REPEATS", "ROUNDS", "SETTLE_S", "DEFAULT_BUDGET_S", "QUICK_BUDGET_S",
           "BLAS_MIN_BUDGET_S", "BLAS_MATMUL_SIZE",
           "GIB", "MIB", "THREAD_VARIABLES"]

MAX_REPEATS = 100
#: Timed calls per block at least, when the count follows the budget: a warm-up that paid a one-time cost
#: (the first compiled call's loading) must not leave a block with one sample.
MIN_REPEATS = 3
#: Blocks per library and phase, alternating (ours, theirs, ours, ...) after a rest each: a slow spell of the
#: machine then falls on both sides, and the reported time is the median of the blocks' medians.
ROUNDS = 3
#: Seconds of rest before each library's timing: the BLAS's and OpenMP's worker threads spin for a
#: while after a call, and take the cores from whatever runs next (PyTorch right after convolab's
#: calls measured 9.5-12 ms on a layer it runs in 5 ms alone).
SETTLE_S = 0.3
#: Seconds of timed calls per measurement: a full run is about 11 minutes on 2 cores (252 measurements).
DEFAULT_BUDGET_S = 3.0
QUICK_BUDGET_S = 0.5
#: The BLAS rate gets at least this long, even with --quick.
BLAS_MIN_BUDGET_S = 1.0
BLAS_MATMUL_SIZE = 2048
GIB = 1 << 30
MIB = 1 << 20
#: The variables a BLAS (OpenBLAS, MKL, or an OpenMP build) reads for its thread count when it loads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
