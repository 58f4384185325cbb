"""The benchmark: convolab against PyTorch (CPU) and SciPy on a published suite.

The suite is data (:data:`SUITE`): the distinct convolution layers of ResNet-18,
ResNet-50 and VGG-16 at batch 8, MobileNetV2 depthwise layers, the 7×7 stride-2
stem, 1-d audio layers, a 3-d volume layer, image filtering of a 2048×2048 image
with kernels from 3 to 63, and one peak-memory problem. Every convolution layer
is timed three ways (forward, input gradient, weight gradient) on both sides;
image filtering is timed against ``scipy.signal.correlate(method="auto")``.

Measurements are data first (:class:`Report`, a JSON-ready tree of timings,
a summary and the targets), rendered second: a plain-text table
(:func:`render_table`), JSON (:meth:`Report.to_json`) and the committed
``benchmarks/RESULTS.md`` (:func:`render_results_md`).

How things are measured
-----------------------
Timing
    One warm-up call, then repeats until a per-problem time budget is spent
    (at least one, at most ``MAX_REPEATS``; ``--repeats`` fixes the count); the
    median is reported. The garbage collector is off while timing. Each
    library is timed on its own after a pause of ``SETTLE_S`` (the other
    library's worker threads keep spinning for a while after its last call:
    PyTorch alternated call for call with convolab ran 2x slower). A 3x3
    layer's convolab forward takes turns (:func:`time_turns`) with the BLAS
    matmul whose rate its fraction target divides by: the same BLAS, the
    same moments.
Threads
    PyTorch gets ``torch.set_num_threads(threads)``. NumPy's BLAS gets the same
    count through threadpoolctl when it is installed; otherwise through
    ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS``, which a
    BLAS reads only when it loads, so if they are not already set to the count,
    :func:`run_bench` runs the benchmark again in a subprocess
    (``python -m convolab.bench``) with them set. SciPy's FFTs run on one
    thread (``workers=1``, their default) on both sides.
Peak memory, per call
    The resident-set high-water mark (Linux ``VmHWM``, reset before each
    warm-up call by writing 5 to ``/proc/self/clear_refs``, after glibc's
    ``malloc_trim`` has handed freed heap pages back) minus the resident set
    just before the call: every byte the call touched, output included, on
    both sides. Where that reset is not available, ``tracemalloc``'s peak
    (NumPy reports its allocations to it; PyTorch's allocator does not, so the
    PyTorch column is then empty).
Peak memory, the memory target
    A fresh subprocess allocates the ``(1, 64, 1024, 1024)`` float32 input and
    the weight, runs one small convolution (BLAS buffers, lazy imports), reads
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, runs the convolution and reads
    it again: the growth minus the output's bytes is the memory above input and
    output. The same subprocess then repeats the call under ``tracemalloc``
    (NumPy's allocations only, no BLAS buffers) and reports that figure beside it.
BLAS rate
    A float32 ``np.matmul`` of two 2048×2048 matrices, timed before and after
    the problems; the higher of the two rates is the ceiling the 3×3 layers
    are held to (the lower one usually means the machine was busy).
Memory guard
    The benchmark caps its address space (``RLIMIT_AS``) at what it has mapped
    plus ``--memory-limit`` GiB, so an algorithm that would need more fails
    with ``MemoryError``, reported in the table, instead of exhausting the
    machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from math import prod
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .spec import conv_spec

__all__ = [
    "ConvProblem",
    "FilterProblem",
    "MemoryProblem",
    "SUITE",
    "SUITE_VERSION",
    "FILTER_KERNEL_SIZES",
    "CONV_PHASES",
    "TARGETS",
    "Timing",
    "Row",
    "Report",
    "PeakMeter",
    "time_call",
    "time_turns",
    "select_problems",
    "run_suite",
    "summarize",
    "evaluate_targets",
    "machine_info",
    "render_table",
    "render_results_md",
    "add_bench_parser",
    "run_bench",
    "main",
]

SUITE_VERSION = "1"
CONV_PHASES = ("forward", "input_grad", "weight_grad")
FILTER_KERNEL_SIZES = (3, 5, 7, 11, 15, 21, 31, 47, 63)
MAX_REPEATS = 100
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
_REEXEC_MARK = "CONVOLAB_BENCH_REEXEC"


# --------------------------------------------------------------------------- the suite, as data


@dataclass(frozen=True)
class ConvProblem:
    """One convolution layer: ``conv(input, weight, stride, padding, dilation, groups)``.

    Padding is symmetric, one int per spatial dimension, so both libraries take it as is.
    """

    name: str
    family: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1
    dtype: str = "float32"
    quick: bool = False
    kind: str = field(default="conv", init=False)

    @property
    def rank(self) -> int:
        return len(self.weight_shape) - 2

    def spec(self):
        """The frozen :class:`~convolab.spec.ConvSpec`; raises if the shapes do not fit."""
        return conv_spec(self.input_shape, self.weight_shape, stride=self.stride, padding=self.padding,
                         dilation=self.dilation, groups=self.groups, op=self.name)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.spec().output_shape

    @property
    def flops(self) -> int:
        """Multiply-adds times two; the input and weight gradients cost the same."""
        return self.spec().flops

    @property
    def is_3x3(self) -> bool:
        """A dense (ungrouped) 2-d 3×3 layer, the kind held to the BLAS-rate target."""
        return self.weight_shape[2:] == (3, 3) and self.groups == 1

    def describe(self) -> str:
        parts = [f"x{self.input_shape} w{self.weight_shape}"]
        for label, value, default in (("stride", self.stride, 1), ("padding", self.padding, 0),
                                      ("dilation", self.dilation, 1)):
            if any(v != default for v in value):
                parts.append(f"{label} {value[0] if len(set(value)) == 1 else value}")
        if self.groups != 1:
            parts.append(f"groups {self.groups}")
        return ", ".join(parts)


@dataclass(frozen=True)
class FilterProblem:
    """Image filtering: ``correlate(image, kernel, mode)`` on one 2-d channel, against SciPy."""

    name: str
    family: str
    image_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    mode: str = "same"
    dtype: str = "float32"
    quick: bool = False
    kind: str = field(default="filter", init=False)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.mode == "same":
            return self.image_shape
        if self.mode == "full":
            return tuple(i + k - 1 for i, k in zip(self.image_shape, self.kernel_shape))
        return tuple(i - k + 1 for i, k in zip(self.image_shape, self.kernel_shape))

    @property
    def flops(self) -> int:
        """What the direct method would spend: two per kernel tap per output sample."""
        return 2 * prod(self.output_shape) * prod(self.kernel_shape)

    def describe(self) -> str:
        return f"image {self.image_shape} kernel {self.kernel_shape} mode {self.mode!r}"


@dataclass(frozen=True)
class MemoryProblem:
    """The peak-memory target: one forward convolution, measured in a fresh subprocess."""

    name: str
    family: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    padding: int
    dtype: str = "float32"
    quick: bool = True
    kind: str = field(default="memory", init=False)

    def describe(self) -> str:
        return f"x{self.input_shape} w{self.weight_shape}, padding {self.padding}"


Problem = ConvProblem | FilterProblem | MemoryProblem


def _layer(name: str, family: str, batch: int, c_in: int, c_out: int, size: int | tuple[int, ...], kernel: int,
           *, rank: int = 2, stride: int = 1, padding: int | None = None, dilation: int = 1, groups: int = 1,
           quick: bool = False) -> ConvProblem:
    """A layer with a square (cubic) kernel; padding defaults to "same" at stride 1, ``d*(k-1)/2``."""
    spatial = (size,) * rank if isinstance(size, int) else tuple(size)
    pad = dilation * (kernel - 1) // 2 if padding is None else padding
    return ConvProblem(
        name=name, family=family, input_shape=(batch, c_in, *spatial),
        weight_shape=(c_out, c_in // groups, *(kernel,) * rank),
        stride=(stride,) * rank, padding=(pad,) * rank, dilation=(dilation,) * rank, groups=groups, quick=quick,
    )


def _build_suite() -> tuple[Problem, ...]:
    b = 8  # the batch of every ResNet/VGG/MobileNet layer
    layers = [
        # The stem shared by ResNet-18 and ResNet-50: 7×7, stride 2, padding 3, 224 -> 112.
        _layer("stem.resnet_conv1_7x7s2", "stem", b, 3, 64, 224, 7, stride=2, padding=3, quick=True),
        # ResNet-18 (torchvision): its distinct layer shapes (basic blocks).
        _layer("resnet18.layer1.conv3x3", "resnet18", b, 64, 64, 56, 3),
        _layer("resnet18.layer2.0.conv1_3x3s2", "resnet18", b, 64, 128, 56, 3, stride=2),
        _layer("resnet18.layer2.conv3x3", "resnet18", b, 128, 128, 28, 3),
        _layer("resnet18.layer2.0.downsample_1x1s2", "resnet18", b, 64, 128, 56, 1, stride=2),
        _layer("resnet18.layer3.0.conv1_3x3s2", "resnet18", b, 128, 256, 28, 3, stride=2),
        _layer("resnet18.layer3.conv3x3", "resnet18", b, 256, 256, 14, 3),
        _layer("resnet18.layer3.0.downsample_1x1s2", "resnet18", b, 128, 256, 28, 1, stride=2),
        _layer("resnet18.layer4.0.conv1_3x3s2", "resnet18", b, 256, 512, 14, 3, stride=2),
        _layer("resnet18.layer4.conv3x3", "resnet18", b, 512, 512, 7, 3, quick=True),
        _layer("resnet18.layer4.0.downsample_1x1s2", "resnet18", b, 256, 512, 14, 1, stride=2),
        # ResNet-50 (torchvision v1.5, stride on the 3×3): bottleneck shapes not already above
        # (its stride-1 3×3 layers are ResNet-18's).
        _layer("resnet50.layer1.conv1_1x1", "resnet50", b, 64, 64, 56, 1),
        _layer("resnet50.layer1.conv3_1x1", "resnet50", b, 64, 256, 56, 1),
        _layer("resnet50.layer1.conv1_1x1_from256", "resnet50", b, 256, 64, 56, 1),
        _layer("resnet50.layer2.0.conv1_1x1", "resnet50", b, 256, 128, 56, 1),
        _layer("resnet50.layer2.0.conv2_3x3s2", "resnet50", b, 128, 128, 56, 3, stride=2),
        _layer("resnet50.layer2.0.downsample_1x1s2", "resnet50", b, 256, 512, 56, 1, stride=2),
        _layer("resnet50.layer2.conv3_1x1", "resnet50", b, 128, 512, 28, 1),
        _layer("resnet50.layer2.conv1_1x1", "resnet50", b, 512, 128, 28, 1),
        _layer("resnet50.layer3.0.conv2_3x3s2", "resnet50", b, 256, 256, 28, 3, stride=2),
        _layer("resnet50.layer3.conv3_1x1", "resnet50", b, 256, 1024, 14, 1),
        _layer("resnet50.layer3.conv1_1x1", "resnet50", b, 1024, 256, 14, 1, quick=True),
        _layer("resnet50.layer4.0.conv2_3x3s2", "resnet50", b, 512, 512, 14, 3, stride=2),
        _layer("resnet50.layer4.conv3_1x1", "resnet50", b, 512, 2048, 7, 1),
        _layer("resnet50.layer4.conv1_1x1", "resnet50", b, 2048, 512, 7, 1),
        # VGG-16 at 224×224: its distinct 3×3 layer shapes (conv3_3, conv4_3, conv5_2/3 repeat ones here).
        _layer("vgg16.conv1_1", "vgg16", b, 3, 64, 224, 3),
        _layer("vgg16.conv1_2", "vgg16", b, 64, 64, 224, 3),
        _layer("vgg16.conv2_1", "vgg16", b, 64, 128, 112, 3),
        _layer("vgg16.conv2_2", "vgg16", b, 128, 128, 112, 3),
        _layer("vgg16.conv3_1", "vgg16", b, 128, 256, 56, 3),
        _layer("vgg16.conv3_2", "vgg16", b, 256, 256, 56, 3),
        _layer("vgg16.conv4_1", "vgg16", b, 256, 512, 28, 3),
        _layer("vgg16.conv4_2", "vgg16", b, 512, 512, 28, 3),
        _layer("vgg16.conv5_1", "vgg16", b, 512, 512, 14, 3),
        # MobileNetV2 depthwise 3×3 layers: block 2 (96 channels, stride 2, 112 -> 56) and block 4 (144, 56).
        _layer("mobilenet_v2.dw3x3s2_96ch", "mobilenet_dw", b, 96, 96, 112, 3, stride=2, groups=96),
        _layer("mobilenet_v2.dw3x3_144ch", "mobilenet_dw", b, 144, 144, 56, 3, groups=144, quick=True),
        # 1-d audio: wav2vec 2.0's first feature-encoder layer on 1 s of 16 kHz audio, and a
        # WaveNet-style dilated layer.
        _layer("audio1d.wav2vec2_conv0_k10s5", "audio1d", b, 1, 512, 16000, 10, rank=1, stride=5, padding=0,
               quick=True),
        _layer("audio1d.dilated_k3d8_64ch", "audio1d", b, 64, 64, 16000, 3, rank=1, dilation=8),
        # 3-d volume: a 3-D U-Net layer, 32 channels on a 16×64×64 patch.
        _layer("volume3d.unet_3x3x3_32ch", "volume3d", 2, 32, 32, (16, 64, 64), 3, rank=3, quick=True),
    ]
    filters = [
        FilterProblem(name=f"filter2d.k{k:02d}", family="filtering", image_shape=(2048, 2048), kernel_shape=(k, k),
                      quick=k in (3, 7))
        for k in FILTER_KERNEL_SIZES
    ]
    memory = [MemoryProblem(name="memory.conv3x3_64ch_1024x1024", family="memory", input_shape=(1, 64, 1024, 1024),
                            weight_shape=(64, 64, 3, 3), padding=1)]
    return (*layers, *filters, *memory)


#: The published suite, version :data:`SUITE_VERSION`.
SUITE: tuple[Problem, ...] = _build_suite()


def select_problems(problems: Sequence[Problem], *, quick: bool = False,
                    filters: Sequence[str] | None = None) -> list[Problem]:
    """The problems to run: the quick subset if ``quick``, then those whose name holds any of ``filters``.

    >>> [p.name for p in select_problems(SUITE, filters=["filter2d.k6", "k03"])]
    ['filter2d.k03', 'filter2d.k63']
    """
    chosen = [p for p in problems if p.quick or not quick]
    if filters:
        chosen = [p for p in chosen if any(f in p.name for f in filters)]
    return chosen


# --------------------------------------------------------------------------- measuring


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


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


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
        usable = _reset_peak_rss() and _proc_status_bytes("VmHWM") is not None
        self.method = "rss" if usable else "tracemalloc"
        self.sees_foreign = usable

    def call(self, fn: Callable[[], Any]) -> tuple[float, int | None]:
        """Run ``fn`` once; its wall time and peak bytes (the result is dropped before returning)."""
        if self.method == "rss":
            _trim_heap()
            _reset_peak_rss()
            before = _proc_status_bytes("VmRSS") or 0
            start = time.perf_counter()
            result = fn()
            elapsed = time.perf_counter() - start
            peak = (_proc_status_bytes("VmHWM") or 0) - before
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
    judging by the warm-up, at least 1 and at most :data:`MAX_REPEATS`. A call
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
              max(1, min(MAX_REPEATS, int(budget_s / max(w[0], 1e-9)))) for w in warmups]
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


@dataclass
class Row:
    """One problem in one phase: convolab's timing and the reference library's."""

    problem: str
    family: str
    phase: str
    flops: int
    convolab: Timing
    reference: str | None = None
    reference_timing: Timing | None = None
    is_3x3: bool = False
    #: A 3x3 forward's BLAS matmul timed in turns with it (its rate is the fraction's denominator).
    blas_timing: Timing | None = None
    blas_flops: int = 0

    @property
    def blas_gflops(self) -> float | None:
        if self.blas_timing is None or not self.blas_timing.ok or self.blas_timing.median_s <= 0:
            return None
        return self.blas_flops / self.blas_timing.median_s / 1e9

    @property
    def ratio(self) -> float | None:
        """convolab's median over the reference's: below 1 is faster."""
        if self.reference_timing is None or not (self.convolab.ok and self.reference_timing.ok):
            return None
        return self.convolab.median_s / self.reference_timing.median_s

    def gflops(self, timing: Timing | None) -> float | None:
        if timing is None or not timing.ok or timing.median_s <= 0:
            return None
        return self.flops / timing.median_s / 1e9

    def to_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem, "family": self.family, "phase": self.phase, "flops": self.flops,
            "is_3x3": self.is_3x3, "convolab": asdict(self.convolab), "convolab_gflops": self.gflops(self.convolab),
            "reference": self.reference,
            "reference_timing": None if self.reference_timing is None else asdict(self.reference_timing),
            "reference_gflops": self.gflops(self.reference_timing), "ratio": self.ratio,
            "blas_gflops_in_turns": self.blas_gflops,
        }


@dataclass
class Report:
    """Everything one run measured, and what it concludes; :meth:`to_json` is the JSON file."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    problems: list[dict[str, Any]]
    blas: dict[str, Any] | None
    rows: list[Row]
    memory: dict[str, Any] | None
    summary: dict[str, Any]
    targets: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": f"convolab-bench/{SUITE_VERSION}", "machine": self.machine, "settings": self.settings,
            "problems": self.problems, "blas": self.blas, "results": [row.to_json() for row in self.rows],
            "memory": self.memory, "summary": self.summary, "targets": self.targets,
        }


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.dtype(dtype))


def _convolab_calls(problem: ConvProblem, x: np.ndarray, w: np.ndarray, g: np.ndarray) -> dict[str, Callable]:
    import convolab as cl  # the package's public surface, as a user calls it

    args = (problem.stride, problem.padding, problem.dilation, problem.groups)
    return {
        "forward": lambda: cl.conv(x, w, None, *args),
        "input_grad": lambda: cl.grad.conv_input(x.shape, w, g, *args),
        "weight_grad": lambda: cl.grad.conv_weight(x, w.shape, g, *args),
    }


def _torch_calls(torch: Any, problem: ConvProblem, x: np.ndarray, w: np.ndarray,
                 g: np.ndarray) -> dict[str, Callable]:
    functional = torch.nn.functional
    conv = {1: functional.conv1d, 2: functional.conv2d, 3: functional.conv3d}[problem.rank]
    conv_input = getattr(torch.nn.grad, f"conv{problem.rank}d_input")
    conv_weight = getattr(torch.nn.grad, f"conv{problem.rank}d_weight")
    tx, tw, tg = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(g)
    args = (problem.stride, problem.padding, problem.dilation, problem.groups)

    def forward():
        with torch.no_grad():
            return conv(tx, tw, None, *args)

    calls = {
        "forward": forward,
        "input_grad": lambda: conv_input(list(x.shape), tw, tg, *args),
        "weight_grad": lambda: conv_weight(tx, list(w.shape), tg, *args),
    }
    for fn in calls.values():
        fn.foreign_allocator = True  # tracemalloc cannot see PyTorch's allocations
    return calls


def _run_conv(problem: ConvProblem, torch: Any, budget_s: float, repeats: int | None, meter: PeakMeter,
              rng: np.random.Generator, blas_size: int = BLAS_MATMUL_SIZE) -> list[Row]:
    """Each phase timed in turns with PyTorch's; a 3x3 forward also with the BLAS matmul of the fraction target."""
    x = _random(rng, problem.input_shape, problem.dtype)
    w = _random(rng, problem.weight_shape, problem.dtype)
    g = _random(rng, problem.output_shape, problem.dtype)
    ours = _convolab_calls(problem, x, w, g)
    theirs = _torch_calls(torch, problem, x, w, g) if torch is not None else None
    rows = []
    for phase in CONV_PHASES:
        with_blas = problem.is_3x3 and phase == "forward"
        time.sleep(SETTLE_S)
        if with_blas:
            convolab_timing, blas_timing = time_turns([ours[phase], _blas_matmul(blas_size)], budget_s=budget_s,
                                                      repeats=repeats, meter=meter, measure_memory=[True, False])
        else:
            convolab_timing = time_call(ours[phase], budget_s=budget_s, repeats=repeats, meter=meter)
            blas_timing = None
        reference_timing = None
        if theirs is not None:
            time.sleep(SETTLE_S)
            reference_timing = time_call(theirs[phase], budget_s=budget_s, repeats=repeats, meter=meter)
        rows.append(Row(problem.name, problem.family, phase, problem.flops, convolab_timing,
                        "torch" if theirs is not None else None, reference_timing, problem.is_3x3,
                        blas_timing=blas_timing, blas_flops=2 * blas_size ** 3 if with_blas else 0))
    return rows


def _blas_matmul(size: int) -> Callable[[], Any]:
    """The BLAS-rate call: a float32 ``size × size`` matmul (inputs made once)."""
    rng = np.random.default_rng(1)
    a = _random(rng, (size, size), "float32")
    b = _random(rng, (size, size), "float32")
    return lambda: np.matmul(a, b)


def _run_filter(problem: FilterProblem, budget_s: float, repeats: int | None, meter: PeakMeter,
                rng: np.random.Generator) -> list[Row]:
    import scipy.signal

    import convolab as cl

    image = _random(rng, problem.image_shape, problem.dtype)
    kernel = _random(rng, problem.kernel_shape, problem.dtype)
    time.sleep(SETTLE_S)
    ours = time_call(lambda: cl.correlate(image, kernel, mode=problem.mode, method="auto"),
                     budget_s=budget_s, repeats=repeats, meter=meter)
    time.sleep(SETTLE_S)
    theirs = time_call(lambda: scipy.signal.correlate(image, kernel, mode=problem.mode, method="auto"),
                       budget_s=budget_s, repeats=repeats, meter=meter)
    return [Row(problem.name, problem.family, "forward", problem.flops, ours, "scipy", theirs)]


def measure_blas_rate(*, size: int = BLAS_MATMUL_SIZE, budget_s: float = BLAS_MIN_BUDGET_S,
                      repeats: int | None = None) -> dict[str, Any]:
    """GFLOP/s of a float32 ``np.matmul`` of two ``size × size`` matrices, the ceiling for a 3×3 layer."""
    rng = np.random.default_rng(1)
    a = _random(rng, (size, size), "float32")
    b = _random(rng, (size, size), "float32")
    timing = time_call(lambda: np.matmul(a, b), budget_s=budget_s, repeats=repeats, measure_memory=False)
    flops = 2 * size ** 3
    return {"matmul_shape": [size, size, size], "dtype": "float32", "median_s": timing.median_s,
            "repeats": len(timing.times_s), "gflops": None if not timing.ok else flops / timing.median_s / 1e9,
            "error": timing.error}


# --------------------------------------------------------------------------- the peak-memory probe


def _memory_probe(problem: dict[str, Any], library: str, memory_limit_gib: float) -> dict[str, Any]:
    """Run in a fresh interpreter (see :func:`_run_memory_probe`): peak memory of one forward conv."""
    import resource

    with _address_space_limit(memory_limit_gib):
        rng = np.random.default_rng(2)
        input_shape, weight_shape, padding = tuple(problem["input_shape"]), tuple(problem["weight_shape"]), \
            problem["padding"]
        if library == "torch":
            import torch

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

            def conv(x, w):
                with torch.no_grad():
                    return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=padding)
        else:
            import convolab as cl

            def conv(x, w):
                return cl.conv(x, w, padding=padding)
        # Warm up on a small problem: lazy imports and the BLAS's own buffers land in the baseline.
        conv(_random(rng, (1, weight_shape[1], 32, 32), "float32"), _random(rng, weight_shape, "float32"))
        x = _random(rng, input_shape, "float32")
        w = _random(rng, weight_shape, "float32")
        gc.collect()
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is in KiB on Linux
        start = time.perf_counter()
        try:
            out = conv(x, w)
        except MemoryError as error:
            return {"library": library, "error": f"out of memory: {error}"}
        elapsed = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        output_bytes = out.nbytes if library != "torch" else out.numel() * out.element_size()
        result: dict[str, Any] = {
            "library": library, "seconds": elapsed, "input_bytes": x.nbytes, "output_bytes": output_bytes,
            "baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
            "above_input_output_bytes": peak - baseline - output_bytes,
            "tracemalloc_above_input_output_bytes": None,
        }
        if library != "torch":  # tracemalloc sees NumPy's allocations, not PyTorch's
            del out
            gc.collect()
            tracemalloc.start()
            out = conv(x, w)
            result["tracemalloc_above_input_output_bytes"] = tracemalloc.get_traced_memory()[1] - out.nbytes
            tracemalloc.stop()
        return result


def _run_memory_probe(problem: MemoryProblem, library: str, env: dict[str, str],
                      memory_limit_gib: float) -> dict[str, Any]:
    """Measure ``problem`` for ``library`` in a fresh interpreter, so earlier work cannot raise the baseline."""
    payload = json.dumps({"input_shape": problem.input_shape, "weight_shape": problem.weight_shape,
                          "padding": problem.padding})
    code = ("import json, sys; from convolab.bench import _memory_probe; "
            "print(json.dumps(_memory_probe(json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]))))")
    completed = subprocess.run([sys.executable, "-c", code, payload, library, str(memory_limit_gib)],
                               capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        tail = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"library": library, "error": f"probe exited with status {completed.returncode}: {tail}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- thread counts and the memory guard


def _child_environment(threads: int) -> dict[str, str]:
    """This environment with the BLAS thread variables set, and convolab importable (even uninstalled)."""
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    source = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(part for part in (source, env.get("PYTHONPATH")) if part)
    return env


def _environment_sets_threads(threads: int) -> bool:
    return all(os.environ.get(name) == str(threads) for name in THREAD_VARIABLES)


@contextlib.contextmanager
def _blas_threads(threads: int) -> Iterator[str | None]:
    """Hold NumPy's BLAS to ``threads``; yields how, or None if it cannot be done in this process."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=threads):
            yield "threadpoolctl.threadpool_limits"
    elif _environment_sets_threads(threads):
        yield f"environment: {', '.join(THREAD_VARIABLES)}={threads}, set before NumPy loaded"
    else:
        yield None


def _address_space_bytes() -> int:
    return _proc_status_bytes("VmSize") or 0


def default_memory_limit_gib() -> float:
    """Half the memory available now, in GiB (at least 1)."""
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        return 8.0
    return max(1.0, round(available / 2 / GIB, 1))


@contextlib.contextmanager
def _address_space_limit(limit_gib: float) -> Iterator[int | None]:
    """Cap this process's address space at what it maps now plus ``limit_gib``; restore it on exit."""
    try:
        import resource
    except ImportError:  # not on this platform
        yield None
        return
    if not limit_gib or limit_gib <= 0:
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space_bytes() + int(limit_gib * GIB)
    for existing in (soft, hard):
        if existing != resource.RLIM_INFINITY:
            limit = min(limit, existing)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


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


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _blas_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info = {"name": blas.get("name"), "version": blas.get("version"),
                "configuration": blas.get("openblas configuration")}
    except Exception:  # show_config's layout varies between NumPy versions
        pass
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{key: pool.get(key) for key in ("internal_api", "version", "num_threads", "filepath",
                                                               "architecture")}
                               for pool in threadpool_info()]
        # The kernels OpenBLAS runs (its build configuration names only the oldest it supports).
        info["architecture"] = next((pool.get("architecture") for pool in info["threadpools"]
                                     if pool.get("architecture")), None)
    except ImportError:
        pass
    info["coretype_variable"] = os.environ.get(CORETYPE_VARIABLE)
    return info


#: OpenBLAS reads this when it loads and then runs that core type's kernels instead of the CPU's own.
CORETYPE_VARIABLE = "OPENBLAS_CORETYPE"
#: OpenBLAS core types whose single-precision kernels are at most 256 bits wide.
NARROW_CORETYPES = frozenset({"haswell", "zen", "sandybridge", "nehalem", "core2", "prescott", "atom", "bulldozer",
                              "piledriver", "steamroller", "excavator", "barcelona", "opteron"})


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _pinned_blas_warnings(blas: dict[str, Any], cpu_flags: frozenset[str]) -> list[str]:
    """A core type forced by OPENBLAS_CORETYPE below what the CPU runs halves NumPy's matrix products, not PyTorch's."""
    variable, architecture = blas.get("coretype_variable"), blas.get("architecture")
    if not variable or "avx512f" not in cpu_flags or str(architecture or variable).lower() not in NARROW_CORETYPES:
        return []
    return [f"{CORETYPE_VARIABLE}={variable} in the environment holds NumPy's BLAS to {architecture or variable} "
            "(256-bit) kernels on a CPU with AVX-512, which PyTorch uses: every ratio against PyTorch is inflated "
            f"(run with `env -u {CORETYPE_VARIABLE}` to let OpenBLAS choose)"]


def _git_revision() -> str | None:
    try:
        completed = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                   cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip() or None


def machine_info(torch: Any = None) -> dict[str, Any]:
    """The machine and software a run used: CPU, cores, memory, versions, BLAS, date."""
    import scipy

    from . import __version__

    memory = None
    try:
        with open("/proc/meminfo") as meminfo:
            memory = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = os.cpu_count()
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores, "memory_bytes": memory,
        "os": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
        "scipy": scipy.__version__, "torch": None if torch is None else torch.__version__,
        "convolab": __version__, "convolab_revision": _git_revision(), "blas": _blas_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- summary and targets

#: (key, what is measured, comparison, goal). Ratios are convolab's time over the reference's.
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("forward_geomean", "forward, geometric mean of convolab/PyTorch", "<=", 1.0),
    ("forward_worst", "forward, worst problem convolab/PyTorch", "<=", 1.5),
    ("training_geomean", "forward + input grad + weight grad, geometric mean of convolab/PyTorch", "<=", 1.2),
    ("blas_fraction_3x3", "3x3 layers forward, geometric mean of the fraction of the BLAS matmul rate", ">=", 0.8),
    ("filtering_geomean", "image filtering 2048x2048, k 3..63, geometric mean of convolab/SciPy", "<=", 1.0),
    ("memory_above_io_gib", "conv (1,64,1024,1024) * (64,64,3,3) padding 1: peak memory above input+output, GiB",
     "<", 1.0),
)


def _geomean(values: Sequence[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarize(rows: Sequence[Row], blas: dict[str, Any] | None, memory: dict[str, Any] | None) -> dict[str, Any]:
    """The ratios the targets read, with the problems behind each and those that could not be compared."""
    conv_rows = [row for row in rows if row.reference == "torch"]
    by_problem: dict[str, dict[str, Row]] = {}
    for row in conv_rows:
        by_problem.setdefault(row.problem, {})[row.phase] = row
    failed = sorted({row.problem for row in rows if not row.convolab.ok})

    forward = {name: phases["forward"].ratio for name, phases in by_problem.items() if "forward" in phases}
    forward_ok = {name: r for name, r in forward.items() if r is not None}
    worst = max(forward_ok.items(), key=lambda item: item[1]) if forward_ok else None
    per_phase = {}
    for phase in CONV_PHASES:
        ratios = [phases[phase].ratio for phases in by_problem.values() if phase in phases]
        per_phase[phase] = _geomean([r for r in ratios if r is not None])

    training = {}
    for name, phases in by_problem.items():
        if all(p in phases and phases[p].ratio is not None for p in CONV_PHASES):
            ours = sum(phases[p].convolab.median_s for p in CONV_PHASES)
            theirs = sum(phases[p].reference_timing.median_s for p in CONV_PHASES)
            training[name] = ours / theirs

    blas_gflops = None if blas is None else blas.get("gflops")
    layers_3x3 = []
    for row in rows:
        if row.is_3x3 and row.phase == "forward":
            ours, theirs = row.gflops(row.convolab), row.gflops(row.reference_timing)
            rate = row.blas_gflops or blas_gflops  # measured in turns with the layer, else the run's
            layers_3x3.append({
                "problem": row.problem, "convolab_gflops": ours, "torch_gflops": theirs, "blas_gflops": rate,
                "convolab_fraction": None if ours is None or not rate else ours / rate,
                "torch_fraction": None if theirs is None or not rate else theirs / rate,
            })
    fractions = [layer["convolab_fraction"] for layer in layers_3x3 if layer["convolab_fraction"] is not None]
    worst_3x3 = min(layers_3x3, key=lambda layer: layer["convolab_fraction"]) if fractions else None

    filtering = {row.problem: row.ratio for row in rows if row.reference == "scipy"}
    filtering_ok = {name: r for name, r in filtering.items() if r is not None}

    memory_above = None
    if memory and memory.get("convolab") and "above_input_output_bytes" in memory["convolab"]:
        memory_above = memory["convolab"]["above_input_output_bytes"] / GIB
    return {
        "forward_geomean": _geomean(list(forward_ok.values())),
        "forward_worst": None if worst is None else worst[1],
        "forward_worst_problem": None if worst is None else worst[0],
        "phase_geomeans": per_phase,
        "training_geomean": _geomean(list(training.values())),
        "training_ratios": training,
        "blas_gflops": blas_gflops,
        "layers_3x3": layers_3x3,
        "blas_fraction_3x3": _geomean(fractions),
        "blas_fraction_3x3_worst": None if worst_3x3 is None else worst_3x3["convolab_fraction"],
        "blas_fraction_3x3_worst_problem": None if worst_3x3 is None else worst_3x3["problem"],
        "filtering_geomean": _geomean(list(filtering_ok.values())),
        "filtering_ratios": filtering,
        "memory_above_io_gib": memory_above,
        "convolab_failed": failed,
        "compared_problems": {"torch": len(by_problem), "scipy": len(filtering)},
    }


def evaluate_targets(summary: dict[str, Any], measured_problems: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Each target with its measured value and status: ``pass``, ``FAIL`` or ``not measured``.

    A target fails outright if convolab could not run one of its problems
    (out of memory, say): a missing ratio must not flatter a geometric mean.
    """
    targets = []
    for key, description, comparison, goal in TARGETS:
        value = summary.get(key)
        problems = measured_problems.get(key, [])
        missing = sorted(set(problems) & set(summary["convolab_failed"]))
        if value is None and not missing:
            status = "not measured"
        elif missing:
            status = "FAIL"
        else:
            holds = value <= goal if comparison == "<=" else value >= goal if comparison == ">=" else value < goal
            status = "pass" if holds else "FAIL"
        shown_goal = f"{goal:.0%}" if key == "blas_fraction_3x3" else f"{goal:g}"
        targets.append({"key": key, "description": description, "goal": f"{comparison} {shown_goal}",
                        "value": value, "status": status, "convolab_failed": missing})
    return targets


def _target_problems(rows: Sequence[Row], memory_problem: str | None) -> dict[str, list[str]]:
    conv = sorted({row.problem for row in rows if row.reference == "torch"})
    return {
        "forward_geomean": conv, "forward_worst": conv, "training_geomean": conv,
        "blas_fraction_3x3": sorted({row.problem for row in rows if row.is_3x3}),
        "filtering_geomean": sorted({row.problem for row in rows if row.reference == "scipy"}),
        "memory_above_io_gib": [memory_problem] if memory_problem else [],
    }


# --------------------------------------------------------------------------- running the suite


def _progress(message: str, started: float, stream: Any) -> None:
    if stream is not None:
        elapsed = int(time.perf_counter() - started)
        print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {message}", file=stream, flush=True)


def run_suite(problems: Sequence[Problem], *, torch: Any = None, budget_s: float = DEFAULT_BUDGET_S,
              repeats: int | None = None, threads: int = 2, thread_method: str | None = None,
              memory_limit_gib: float = 0.0, blas_size: int | None = None, progress: Any = sys.stderr,
              settings: dict[str, Any] | None = None) -> Report:
    """Measure ``problems`` and summarize them against the targets.

    ``torch`` is the imported module or None (then convolab is timed alone);
    the memory problem also runs PyTorch's side in its subprocess when given.
    """
    started = time.perf_counter()
    load_at_start = _load_average()
    blas_size = blas_size or BLAS_MATMUL_SIZE
    meter = PeakMeter()
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    memory: dict[str, Any] | None = None
    memory_problem = None
    _progress(f"BLAS rate: float32 matmul {blas_size}^3", started, progress)
    blas_budget = max(budget_s, BLAS_MIN_BUDGET_S)
    blas_before = measure_blas_rate(size=blas_size, budget_s=blas_budget, repeats=repeats)
    with _address_space_limit(memory_limit_gib):
        for index, problem in enumerate(problems, 1):
            label = f"{index}/{len(problems)} {problem.name}"
            if isinstance(problem, ConvProblem):
                new_rows = _run_conv(problem, torch, budget_s, repeats, meter, rng, blas_size)
            elif isinstance(problem, FilterProblem):
                new_rows = _run_filter(problem, budget_s, repeats, meter, rng)
            else:
                memory_problem = problem.name
                env = _child_environment(threads)
                memory = {"problem": problem.name, "method": "ru_maxrss growth minus output bytes, fresh subprocess",
                          "convolab": _run_memory_probe(problem, "convolab", env, memory_limit_gib),
                          "torch": None if torch is None else _run_memory_probe(problem, "torch", env,
                                                                                memory_limit_gib)}
                _progress(f"{label}: {_describe_memory(memory)}", started, progress)
                if "error" in memory["convolab"]:
                    rows.append(Row(problem.name, problem.family, "forward", 0,
                                    Timing(None, [], None, memory["convolab"]["error"])))
                continue
            rows.extend(new_rows)
            for row in new_rows:
                _progress(f"{label} {row.phase}: {_describe_row(row)}", started, progress)
    blas_after = measure_blas_rate(size=blas_size, budget_s=blas_budget, repeats=repeats)
    rates = [rate for rate in (blas_before["gflops"], blas_after["gflops"]) if rate is not None]
    blas = {"matmul_shape": blas_before["matmul_shape"], "dtype": "float32",
            "gflops": max(rates) if rates else None, "before": blas_before, "after": blas_after}
    _progress(f"BLAS rate: {_num(blas_before['gflops'], 1)} GFLOP/s before, {_num(blas_after['gflops'], 1)} after",
              started, progress)
    summary = summarize(rows, blas, memory)
    targets = evaluate_targets(summary, _target_problems(rows, memory_problem))
    run_settings = {
        "budget_s": budget_s, "repeats": repeats, "max_repeats": MAX_REPEATS, "threads": threads,
        "blas_threads": thread_method, "torch_threads": None if torch is None else torch.get_num_threads(),
        "peak_memory_method": meter.method, "memory_limit_gib": memory_limit_gib or None,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average_1min": {"start": load_at_start, "end": _load_average()},
        **(settings or {}),
    }
    machine = machine_info(torch)
    run_settings["warnings"] = (_busy_machine_warnings(blas_before["gflops"], blas_after["gflops"], load_at_start)
                                + _pinned_blas_warnings(machine["blas"], _cpu_flags()))
    problem_table = [_describe_problem(problem) for problem in problems]
    return Report(machine, run_settings, problem_table, blas, rows, memory, summary, targets)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


#: BLAS rates before and after the problems further apart than this mean the machine was shared.
BLAS_RATE_SPREAD = 0.2
#: A one-minute load average above this share of the cores before the run means other work was running.
BUSY_LOAD_PER_CORE = 0.5


def _busy_machine_warnings(before: float | None, after: float | None, load: float | None) -> list[str]:
    """Signs that something else shared the CPUs, which makes every timing of the run unreliable."""
    warnings = []
    if before and after and abs(before - after) > BLAS_RATE_SPREAD * max(before, after):
        warnings.append(f"the BLAS rate moved from {before:.1f} to {after:.1f} GFLOP/s during the run: the machine "
                        "was probably busy and the timings are unreliable")
    if load is not None and load > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1):
        warnings.append(f"the one-minute load average was {load:.2f} on {os.cpu_count()} cores when the run "
                        "started: other processes may have been using the CPUs")
    return warnings


def _describe_problem(problem: Problem) -> dict[str, Any]:
    described: dict[str, Any] = {"name": problem.name, "family": problem.family, "kind": problem.kind,
                                 "dtype": problem.dtype, "summary": problem.describe()}
    if isinstance(problem, ConvProblem):
        described.update(input_shape=problem.input_shape, weight_shape=problem.weight_shape, stride=problem.stride,
                         padding=problem.padding, dilation=problem.dilation, groups=problem.groups,
                         output_shape=problem.output_shape, flops=problem.flops)
    elif isinstance(problem, FilterProblem):
        described.update(image_shape=problem.image_shape, kernel_shape=problem.kernel_shape, mode=problem.mode,
                         flops=problem.flops)
    else:
        described.update(input_shape=problem.input_shape, weight_shape=problem.weight_shape, padding=problem.padding)
    return described


# --------------------------------------------------------------------------- rendering


def _ms(timing: Timing | None) -> str:
    if timing is None:
        return "-"
    return "error" if not timing.ok else f"{timing.median_s * 1e3:.2f}"


def _mib(timing: Timing | None) -> str:
    return "-" if timing is None or timing.peak_bytes is None else f"{timing.peak_bytes / MIB:.0f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _describe_row(row: Row) -> str:
    text = f"convolab {_ms(row.convolab)} ms"
    if row.reference_timing is not None:
        text += f", {row.reference} {_ms(row.reference_timing)} ms, ratio {_num(row.ratio)}"
    errors = [t.error for t in (row.convolab, row.reference_timing) if t is not None and t.error]
    return text + (f" ({'; '.join(errors)})" if errors else "")


def _describe_memory(memory: dict[str, Any]) -> str:
    parts = []
    for library in ("convolab", "torch"):
        probe = memory.get(library)
        if probe is None:
            continue
        if "error" in probe:
            parts.append(f"{library} {probe['error']}")
        else:
            parts.append(f"{library} {probe['above_input_output_bytes'] / MIB:.0f} MiB above input+output "
                         f"({probe['seconds']:.2f} s)")
    return "; ".join(parts)


def _table_rows(report: Report) -> list[list[str]]:
    lines = []
    previous = None
    for row in report.rows:
        lines.append([
            row.problem if row.problem != previous else "", row.phase, _ms(row.convolab),
            row.reference or "-", _ms(row.reference_timing), _num(row.ratio), _mib(row.convolab),
            _mib(row.reference_timing), _num(row.gflops(row.convolab), 1), _num(row.gflops(row.reference_timing), 1),
        ])
        previous = row.problem
    return lines


_TABLE_HEADER = ["problem", "phase", "convolab ms", "vs", "ref ms", "ratio", "cl MiB", "ref MiB", "cl GFLOP/s",
                 "ref GFLOP/s"]


def _format_value(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _summary_lines(report: Report) -> list[str]:
    s = report.summary
    lines = []
    if report.blas and report.blas.get("gflops"):
        size = report.blas["matmul_shape"][0]
        lines.append(f"BLAS rate: {report.blas['gflops']:.1f} GFLOP/s (float32 matmul {size}x{size}x{size}; "
                     f"{_num(report.blas['before']['gflops'], 1)} before the problems, "
                     f"{_num(report.blas['after']['gflops'], 1)} after)")
    if s["phase_geomeans"] and any(v is not None for v in s["phase_geomeans"].values()):
        lines.append("geomean convolab/PyTorch by phase: " + ", ".join(
            f"{phase} {_format_value(value, 2)}" for phase, value in s["phase_geomeans"].items()))
    if s["forward_worst_problem"]:
        lines.append(f"worst forward: {s['forward_worst_problem']} ({s['forward_worst']:.2f})")
    if s["layers_3x3"]:
        lines.append("3x3 layers, forward GFLOP/s and fraction of the BLAS rate (convolab | PyTorch):")
        width = max(len(layer["problem"]) for layer in s["layers_3x3"])
        for layer in s["layers_3x3"]:
            lines.append(f"  {layer['problem'].ljust(width)}  {_num(layer['convolab_gflops'], 1):>7} "
                         f"{_pct(layer['convolab_fraction']):>7} | {_num(layer['torch_gflops'], 1):>7} "
                         f"{_pct(layer['torch_fraction']):>7}")
    if s["blas_fraction_3x3_worst_problem"]:
        lines.append(f"3x3 layer furthest from the BLAS rate: {s['blas_fraction_3x3_worst_problem']} "
                     f"({s['blas_fraction_3x3_worst']:.1%})")
    if s["convolab_failed"]:
        lines.append("convolab could not run: " + ", ".join(s["convolab_failed"]))
    lines.append("")
    lines.append("targets:")
    for target in report.targets:
        value = target["value"]
        shown = "-" if value is None else (f"{value:.1%}" if target["key"] == "blas_fraction_3x3" else f"{value:.3f}")
        lines.append(f"  [{target['status']:>12}] {target['description']}: {shown} (goal {target['goal']})")
    return lines


def render_table(report: Report) -> str:
    """The plain-text table of medians, ratios, peak memory and rates, then the summary and targets."""
    header = _TABLE_HEADER
    body = _table_rows(report)
    widths = [max(len(header[i]), *(len(line[i]) for line in body)) if body else len(header[i])
              for i in range(len(header))]

    def format_line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) if i < 2 or i == 3 else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [format_line(header), format_line(["-" * w for w in widths])]
    lines.extend(format_line(line) for line in body)
    errors = [(row.problem, row.phase, t.error) for row in report.rows
              for t in (row.convolab, row.reference_timing) if t is not None and t.error]
    if errors:
        lines.append("")
        lines.extend(f"error: {problem} {phase}: {error}" for problem, phase, error in errors)
    if report.memory:
        lines.append("")
        lines.append(f"peak memory, {report.memory['problem']}: {_describe_memory(report.memory)}")
    lines.append("")
    lines.extend(_summary_lines(report))
    s = report.settings
    lines.append("")
    lines.extend(f"WARNING: {warning}" for warning in s.get("warnings", []))
    lines.append(f"threads {s['threads']} (BLAS: {s['blas_threads'] or 'not controlled'}; PyTorch: "
                 f"{s['torch_threads'] if s['torch_threads'] is not None else 'not used'}); "
                 f"peak memory by {s['peak_memory_method']}; wall {s['wall_s']} s")
    return "\n".join(lines) + "\n"


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i >= right_from else "---" for i in range(len(header))) + "|"]
    lines.extend("| " + " | ".join(cells) + " |" for cells in body)
    return lines


def render_results_md(report: Report) -> str:
    """``benchmarks/RESULTS.md``: the machine, the targets, the 3x3 and filtering tables, every row, the method."""
    m, s, summary = report.machine, report.settings, report.summary
    command = s.get("command", "convolab bench")
    lines = ["# convolab benchmark results", "",
             f"Suite version {SUITE_VERSION}, run on {m['date']} with `{command}` "
             f"(convolab {m['convolab']}{', revision ' + m['convolab_revision'] if m['convolab_revision'] else ''}).",
             "Regenerate with `python benchmarks/bench.py --json benchmarks/results.json "
             "--results benchmarks/RESULTS.md` (a full run).", ""]
    partial = (["--quick"] if s.get("quick") else []) + [f"--filter {f}" for f in s.get("filter") or []]
    if partial:
        lines += [f"**Partial run** ({' '.join(partial)}): only some problems were measured.", ""]
    blas = m["blas"]
    blas_text = " ".join(str(v) for v in (blas.get("name"), blas.get("version")) if v) or "unknown"
    if blas.get("configuration"):
        blas_text += f" (build: {blas['configuration']})"
    if blas.get("architecture"):
        chosen_by = (f"`{CORETYPE_VARIABLE}={blas['coretype_variable']}` in the environment"
                     if blas.get("coretype_variable") else "detected from the CPU")
        blas_text += f"; kernels at run time: {blas['architecture']} ({chosen_by})"
    lines += [f"**Warning**: {warning}." for warning in s.get("warnings", [])]
    if s.get("warnings"):
        lines.append("")
    lines += ["## Machine", "",
              f"- CPU: {m['cpu']}",
              f"- Cores: {m['cores']} ({m['usable_cores']} usable by this process)",
              f"- Memory: {_gib_text(m['memory_bytes'])}",
              f"- OS: {m['os']}",
              f"- Python {m['python']}, NumPy {m['numpy']}, SciPy {m['scipy']}, "
              f"PyTorch {m['torch'] or 'not used'}",
              f"- BLAS: {blas_text}",
              f"- Threads: {s['threads']}; NumPy's BLAS: {s['blas_threads'] or 'not controlled'}; PyTorch: "
              + (f"`torch.set_num_threads({s['torch_threads']})`" if s["torch_threads"] is not None else "not used"),
              f"- Float32 matrix-product rate (BLAS, {_matmul_size(report)}^3 matmul): "
              f"{_format_value(summary['blas_gflops'], 1)} GFLOP/s (the higher of "
              f"{_num((report.blas or {}).get('before', {}).get('gflops'), 1)} before the problems and "
              f"{_num((report.blas or {}).get('after', {}).get('gflops'), 1)} after)",
              ""]
    lines += ["## Targets", "", "Ratios are convolab's median time over the reference's; below 1 is faster.", ""]
    body = []
    for target in report.targets:
        value = target["value"]
        shown = "-" if value is None else (f"{value:.1%}" if target["key"] == "blas_fraction_3x3" else f"{value:.3f}")
        if target["key"] == "forward_worst" and summary.get("forward_worst_problem"):
            shown += f" ({summary['forward_worst_problem']})"
        if target["convolab_failed"]:
            shown += f"; convolab failed on {', '.join(target['convolab_failed'])}"
        body.append([target["description"], target["goal"], shown, target["status"]])
    lines += _md_table(["target", "goal", "measured", "status"], body, right_from=4)
    lines.append("")
    if summary["layers_3x3"]:
        lines += ["## 3x3 layers against the BLAS rate", "",
                  "Achieved forward GFLOP/s (2 x multiply-adds / median) over the float32 matmul rate, "
                  "each layer's timed in turns with it and with PyTorch (a slow spell of the machine "
                  "falls on all three).", ""]
        lines += _md_table(["layer", "BLAS GFLOP/s", "convolab GFLOP/s", "fraction", "PyTorch GFLOP/s", "fraction"], [
            [layer["problem"], _num(layer.get("blas_gflops"), 1), _num(layer["convolab_gflops"], 1),
             _pct(layer["convolab_fraction"]), _num(layer["torch_gflops"], 1), _pct(layer["torch_fraction"])]
            for layer in summary["layers_3x3"]])
        lines.append("")
    filtering_rows = [row for row in report.rows if row.reference == "scipy"]
    if filtering_rows:
        lines += ["## Image filtering against SciPy", "",
                  "`convolab.correlate(image, kernel, mode='same', method='auto')` against "
                  "`scipy.signal.correlate(..., method='auto')`, float32, 2048x2048.", ""]
        lines += _md_table(["problem", "convolab ms", "SciPy ms", "ratio"], [
            [row.problem, _ms(row.convolab), _ms(row.reference_timing), _num(row.ratio)] for row in filtering_rows])
        lines.append("")
    if report.memory:
        lines += ["## Peak memory", "", f"`{report.memory['problem']}`: one float32 forward convolution in a fresh "
                  "subprocess; `ru_maxrss` after minus `ru_maxrss` once the input is allocated, minus the "
                  "output's bytes. The tracemalloc column counts NumPy's allocations only (no BLAS buffers).", ""]
        body = []
        for library in ("convolab", "torch"):
            probe = report.memory.get(library)
            if probe is None:
                continue
            if "error" in probe:
                body.append([library, probe["error"], "-", "-"])
            else:
                traced = probe.get("tracemalloc_above_input_output_bytes")
                body.append([library, f"{probe['above_input_output_bytes'] / MIB:.0f}",
                             "-" if traced is None else f"{traced / MIB:.0f}", f"{probe['seconds']:.2f}"])
        lines += _md_table(["library", "RSS above input+output, MiB", "tracemalloc, MiB", "seconds"], body)
        lines.append("")
    lines += ["## Every problem", "",
              "Medians in milliseconds; peak memory (MiB) is the warm-up call's resident-set high-water mark above "
              "what was resident before it, output included.", ""]
    lines += _md_table(_TABLE_HEADER, _table_rows(report), right_from=2)
    lines += ["", "## Suite", ""]
    lines += _md_table(["problem", "family", "shapes"],
                       [[p["name"], p["family"], p["summary"]] for p in report.problems], right_from=3)
    lines += ["", "## Method", "",
              f"- Timing: one warm-up call, then repeats until {s['budget_s']} s is spent (at least 1, at most "
              f"{s['max_repeats']}{'; fixed at ' + str(s['repeats']) if s['repeats'] else ''}); the median is "
              f"reported. The garbage collector is off while timing. Each library is timed on its own after "
              f"{SETTLE_S} s of rest (the other's worker threads spin for a while after its calls); a 3x3 "
              "forward takes turns, call for call, with the BLAS matmul whose rate it is divided by.",
              "- convolab: `convolab.conv`, `convolab.grad.conv_input`, `convolab.grad.conv_weight` with "
              "`algorithm='auto'`; PyTorch: `torch.nn.functional.conv{1,2,3}d` under `no_grad`, "
              "`torch.nn.grad.conv{1,2,3}d_input` and `_weight`.",
              "- The forward + backward ratio of a layer is the sum of its three convolab medians over the sum of "
              "PyTorch's; the target is their geometric mean.",
              "- The 3x3 target is the geometric mean of the fraction over the dense 2-d 3x3 layers, each "
              "against the BLAS rate timed in turns with it; the worst layer is listed beside it.",
              f"- Address space capped at what the benchmark had mapped plus "
              f"{_format_value(s['memory_limit_gib'], 1)} GiB; a call that needs more is reported as out of memory.",
              ""]
    return "\n".join(lines)


def _matmul_size(report: Report) -> int | str:
    return (report.blas or {}).get("matmul_shape", ["?"])[0]


def _gib_text(value: int | None) -> str:
    return "unknown" if value is None else f"{value / GIB:.1f} GiB"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


# --------------------------------------------------------------------------- command line


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
    parser.add_argument("--budget", type=_positive_float, metavar="SECONDS",
                        help=f"time budget per measurement (default {DEFAULT_BUDGET_S}, {QUICK_BUDGET_S} with --quick)")
    parser.add_argument("--no-torch", action="store_true", help="time convolab alone, even if PyTorch is installed")
    parser.add_argument("--threads", type=_positive_int, default=2,
                        help="threads for PyTorch and for NumPy's BLAS (default 2)")
    parser.add_argument("--memory-limit", type=float, metavar="GIB", default=None,
                        help="address space the benchmark may add, in GiB (default: half the available memory; "
                             "0 for no cap)")
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
    for flag in ("json", "results", "repeats", "budget", "threads", "memory_limit"):
        value = getattr(args, flag, None)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    return argv


def _list_problems(problems: Sequence[Problem]) -> str:
    width = max((len(p.name) for p in problems), default=0)
    return "".join(f"{p.name.ljust(width)}  {p.family:<13} {p.describe()}\n" for p in problems)


def run_bench(args: argparse.Namespace) -> int:
    """Run the ``bench`` subcommand: measure, print the table, write JSON and RESULTS.md if asked."""
    problems = select_problems(SUITE, quick=args.quick, filters=args.filter)
    if not problems:
        print(f"convolab bench: --filter {' '.join(args.filter or [])} matches no problem of the suite "
              f"(try --list)", file=sys.stderr)
        return 2
    if args.list:
        print(_list_problems(problems), end="")
        return 0
    with _blas_threads(args.threads) as thread_method:
        if thread_method is None and not os.environ.get(_REEXEC_MARK):
            # The BLAS read its thread count when NumPy loaded; run again with the variables set.
            env = _child_environment(args.threads)
            env[_REEXEC_MARK] = "1"
            print(f"convolab bench: no threadpoolctl; running in a subprocess with "
                  f"{', '.join(THREAD_VARIABLES)}={args.threads}", file=sys.stderr, flush=True)
            return subprocess.run([sys.executable, "-m", "convolab.bench", *_argv_from_args(args)],
                                  env=env).returncode
        torch = _load_torch(not args.no_torch, args.threads)
        if not args.no_torch and torch is None:
            print("convolab bench: PyTorch is not installed; timing convolab alone", file=sys.stderr)
        budget = args.budget or (QUICK_BUDGET_S if args.quick else DEFAULT_BUDGET_S)
        memory_limit = default_memory_limit_gib() if args.memory_limit is None else args.memory_limit
        command = " ".join(["convolab bench", *_argv_from_args(args)])
        report = run_suite(problems, torch=torch, budget_s=budget, repeats=args.repeats, threads=args.threads,
                           thread_method=thread_method, memory_limit_gib=memory_limit,
                           settings={"quick": args.quick, "filter": args.filter, "command": command})
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


_SECTION_START, _SECTION_END = "<!-- section: {name} -->", "<!-- end of section: {name} -->"


def kept_sections(text: str) -> str:
    """The marked sections of a results page that other scripts wrote (training, ...), to keep on rewrite."""
    kept, position = [], 0
    while (start := text.find("<!-- section: ", position)) != -1:
        name = text[start + len("<!-- section: "):text.find(" -->", start)]
        end_marker = _SECTION_END.format(name=name)
        end = text.find(end_marker, start)
        if end == -1:
            break
        kept.append("\n" + text[start:end + len(end_marker)] + "\n")
        position = end + len(end_marker)
    return "".join(kept)


def write_section(path: str | os.PathLike[str], name: str, body: str) -> None:
    """Put ``body`` into ``path`` between the markers of section ``name``, replacing that section if present."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    start_marker, end_marker = _SECTION_START.format(name=name), _SECTION_END.format(name=name)
    block = f"{start_marker}\n{body.rstrip()}\n{end_marker}"
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end != -1:
        text = text[:start] + block + text[end + len(end_marker):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convolab.bench [flags]`` (and ``benchmarks/bench.py``): the ``bench`` subcommand alone."""
    parser = argparse.ArgumentParser(prog="convolab bench", description=_DESCRIPTION)
    _add_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
