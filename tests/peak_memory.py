"""Peak traced memory of a block or a call, for the tests that bound a path's scratch."""

from __future__ import annotations

import contextlib
import tracemalloc
from typing import Callable, Iterator, TypeVar

#: Peak NumPy allocation allowed for a huge case whose arrays are a few hundred bytes.
PEAK_BYTES = 2 * 2**20
T = TypeVar("T")


@contextlib.contextmanager
def stays_within_peak(limit: int = PEAK_BYTES) -> Iterator[None]:
    """Assert that NumPy's allocations inside the block (tracemalloc traces them) peak under ``limit`` bytes."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak {peak / 2**20:.1f} MiB, over {limit / 2**20:.1f} MiB"


def within_peak(run: Callable[[], T], limit: int = PEAK_BYTES) -> T:
    """``run()``'s result, having asserted that its second call peaks under ``limit`` bytes.

    The first call, untraced, pays what a process pays once: imports, Numba's
    compiled kernels and the per-problem caches. Traced, those are megabytes
    that have nothing to do with the memory the test bounds.
    """
    run()
    with stays_within_peak(limit):
        return run()
