"""Timing one call, or several in turns, and the peak memory of a call.

One warm-up call (its peak memory measured), then repeats until a time budget
is spent (at least :data:`~.protocol.MIN_REPEATS`, at most
:data:`~.protocol.MAX_REPEATS`; or a fixed count); the median is reported. The
garbage collector is off while timing. :func:`time_in_rounds` times two
libraries in alternating blocks after a rest each, and reports the median of
each one's block medians.

Peak memory of a call is the resident-set high-water mark (Linux ``VmHWM``,
reset before the warm-up by writing 5 to ``/proc/self/clear_refs``, after
glibc's ``malloc_trim`` has handed freed heap pages back) minus the resident set
just before the call: every byte the call touched, output included. Where that
reset is not available, ``tracemalloc``'s peak (NumPy reports its allocations to
it; PyTorch's allocator does not).
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import protocol
from .machine import proc_status_bytes

__all__ = ["Timing", "PeakMeter", "time_call", "time_turns", "time_in_rounds"]


@dataclass
class Timing:
    """One library's timing of one call: the median of ``times_s``, and the warm-up call's peak memory."""

    median_s: float | None
    times_s: list[float]
    peak_bytes: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.median_s is not None


def _trim_heap() -> None:
    """Hand freed heap pages back to the kernel (glibc ``malloc_trim``), where the C library has it.

    glibc keeps freed blocks below its mmap threshold (which grows to 32 MiB)
    resident for reuse; without the trim, a call whose scratch fits in them
    would show no peak at all.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (``VmHWM``) to the current resident set."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


class PeakMeter:
    """Peak memory of one call, above what was resident just before it.

    ``method`` is ``"rss"`` (the resident-set high-water mark, every allocator
    counted) where Linux lets it be reset, else ``"tracemalloc"`` (NumPy's and
    Python's allocations only; ``sees_foreign`` is then False: PyTorch's
    allocator does not report to it).
    """

    def __init__(self) -> None:
        usable = _reset_peak_rss() and proc_status_bytes("VmHWM") is not None
        self.method = "rss" if usable else "tracemalloc"
        self.sees_foreign = usable

    def call(self, fn: Callable[[], Any]) -> tuple[float, int | None]:
        """Run ``fn`` once; its wall time and peak bytes (the result is dropped before returning)."""
        if self.method == "rss":
            _trim_heap()
            _reset_peak_rss()
            before = proc_status_bytes("VmRSS") or 0
            start = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - start
            peak = (proc_status_bytes("VmHWM") or 0) - before
        else:
            tracemalloc.start()
            start = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        del result
        return elapsed, max(peak, 0)


def time_call(fn: Callable[[], Any], *, budget_s: float, repeats: int | None = None, meter: PeakMeter | None = None,
              measure_memory: bool = True) -> Timing:
    """Warm up once (measuring peak memory), then time ``fn`` and take the median.

    Without ``repeats``, the count adapts: as many calls as fit in ``budget_s``
    judging by the warm-up, at least :data:`~.protocol.MIN_REPEATS` and at most
    :data:`~.protocol.MAX_REPEATS`. A call
    that raises (``MemoryError`` under the memory guard, say) gives a Timing
    with ``error`` set and no median. (:func:`time_turns` of one call.)
    """
    (timing,) = time_turns([fn], budget_s=budget_s, repeats=repeats, meter=meter, measure_memory=[measure_memory])
    return timing


def _failure(error: Exception) -> str:
    """How a failed call reads in the table."""
    if isinstance(error, MemoryError):
        return f"out of memory: {error}"
    return f"{type(error).__name__}: {error}"


def time_turns(fns: Sequence[Callable[[], Any]], *, budget_s: float, repeats: int | None = None,
               meter: PeakMeter | None = None, measure_memory: Sequence[bool] | None = None) -> list[Timing]:
    """Time calls taking turns (first, second, ..., first, ...) after one warm-up each; each one's median.

    Each call gets as many turns as fit ``budget_s`` by its warm-up (or
    ``repeats``); while several have turns left they alternate, so the ratio of
    two medians compares calls made under the same conditions. A call that
    raises gets a Timing with ``error`` set, and the others go on without it.
    """
    meter = meter or PeakMeter()
    measure_memory = [True] * len(fns) if measure_memory is None else list(measure_memory)
    warmups: list[tuple[float, int | None] | Timing] = []
    for fn, measured in zip(fns, measure_memory):
        gc.collect()
        try:
            if measured:
                elapsed, peak = meter.call(fn)
                if not meter.sees_foreign and getattr(fn, "foreign_allocator", False):
                    peak = None
            else:
                start = time.perf_counter()
                fn()
                elapsed, peak = time.perf_counter() - start, None
            warmups.append((elapsed, peak))
        except Exception as error:  # reported in the table; one failing problem must not end the run
            gc.collect()
            warmups.append(Timing(None, [], None, _failure(error)))
    counts = [0 if isinstance(w, Timing) else repeats if repeats is not None else
              max(protocol.MIN_REPEATS, min(protocol.MAX_REPEATS, int(budget_s / max(w[0], 1e-9)))) for w in warmups]
    times: list[list[float]] = [[] for _ in fns]
    errors: list[str | None] = [None for _ in fns]
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for turn in range(max(counts, default=0)):
            for side, fn in enumerate(fns):
                if turn >= counts[side] or errors[side] is not None:
                    continue
                try:
                    start = time.perf_counter()
                    result = fn()
                    times[side].append(time.perf_counter() - start)
                    del result
                except Exception as error:
                    errors[side] = _failure(error)
    finally:
        if gc_was_enabled:
            gc.enable()
    timings = []
    for warmup, error, taken in zip(warmups, errors, times):
        if isinstance(warmup, Timing):
            timings.append(warmup)
        elif error is not None:
            timings.append(Timing(None, [], None, error))
        else:
            timings.append(Timing(statistics.median(taken), taken, warmup[1]))
    return timings


def time_in_rounds(fns: Sequence[Callable[[], Any]], *, rounds: int, budget_s: float, repeats: int | None = None,
                   meter: PeakMeter | None = None, settle_s: float = 0.0) -> list[Timing]:
    """Time each call in its own block after ``settle_s`` of rest, ``rounds`` times over, the calls alternating.

    Round after round: rest, a block of the first call (:func:`time_call`, a
    warm-up and ``budget_s / rounds`` of repeats), rest, a block of the second,
    and so on. Each call's median is the median of its blocks' medians, its
    peak memory the first block's warm-up's, and ``times_s`` every timed call
    in order. A block that fails ends that call's timing with its error. So a
    slow spell of the machine falls on every call's blocks alike, and no call
    runs while another's worker threads still spin.
    """
    meter = meter or PeakMeter()
    blocks: list[list[Timing]] = [[] for _ in fns]
    for _ in range(rounds):
        for side, fn in enumerate(fns):
            if blocks[side] and not blocks[side][-1].ok:
                continue
            time.sleep(settle_s)
            blocks[side].append(time_call(fn, budget_s=budget_s / rounds, repeats=repeats, meter=meter))
    timings = []
    for taken in blocks:
        if not taken[-1].ok:
            timings.append(Timing(None, [t for block in taken for t in block.times_s], taken[0].peak_bytes,
                                  taken[-1].error))
        else:
            timings.append(Timing(statistics.median(block.median_s for block in taken),
                                  [t for block in taken for t in block.times_s], taken[0].peak_bytes))
    return timings
