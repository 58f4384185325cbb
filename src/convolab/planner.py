"""The planner: how each pass of a convolution runs (forward, input gradient, weight gradient), and why.

``algorithm="auto"`` asks :func:`plan_for` for the cheapest algorithm by a
documented cost model; ``algorithm="measure"`` times the candidates once per
problem signature and remembers the winner (like ``cudnn.benchmark``).

Each algorithm owns its cost model (:meth:`convolab.algorithms.Algorithm.estimate`):
seconds on the rates of one machine (:mod:`convolab.algorithms._rates`,
measured on the project's 2-core reference machine; only their ratios
matter). In short:

- gemm: FLOPs at the matrix-product rate (lower when a side of the product is
  short), plus the unrolled copy at memory bandwidth and the results' copy
  into the output (what bounds a shallow product);
- folded: the same for its taller, shallower product and its smaller copy,
  plus one pass over the output per last-axis tap;
- depthwise: per block of channels, the grid copy, then every tap's run copied
  into columns and read back by a small product per channel, shared among
  threads;
- fft: forward transforms of inputs and kernels, the spectral products, the
  inverse transforms;
- compiled: the loads and stores of its compiled inner loops at the cache's
  rate, the loops' starts, and its passes over memory (the phase grid's copy);
- winograd2/3/4: one product per tile position at a measured fraction
  of the matrix-product rate, its compiled transforms' values at their rates,
  and the padded copy and data check "auto" makes before a mixing algorithm;
  space_to_batch (dilated layers): Winograd's estimate on its phases (read
  and written in place; where they are split, on one thread only, plus the
  split and interleave's strided copies);
- each: plus a fixed cost per call (larger for the FFT), which decides tiny
  problems.

Only the registered algorithms marked ``automatic`` are candidates.
"direct" and "im2col" are references, never chosen automatically. "shifted"
runs only when asked for by name: in NumPy its extra passes over memory
(accumulations) cost what they save. The Winograd tiles are candidates in 2-d
with their compiled transforms (Numba); their NumPy transforms, like
"shifted", measured no faster than "gemm", and run only when asked for.

What the data hold can change the choice (:class:`DataTraits`). An algorithm
whose ``mixes_outputs`` is true (the FFT, the Winograd tiles) computes every
output from transforms of whole slabs, so a value reaches outputs whose
windows never read it:

- an inf or NaN in the input or the weight would spread over every output, so
  such data never get one (they get the next best; the non-finite pattern then
  matches the direct sum and PyTorch exactly). Where a Winograd forward's
  output holds fewer values than its weight (:func:`winograd_output_vouches`),
  the engine looks at the output instead of the weight: a weight holding an
  inf or NaN gives an output holding one, which sends the call to a plan that
  looks at the weight, and its algorithm runs instead;
- a value far above the rest brings rounding of its own size to every output.
  The FFT's error at an output is about ``eps * log2(L) * rms(x)`` times the
  kernel's magnitude, where the direct sum's terms are about ``m`` times it
  (``m`` the median magnitude of the nonzero inputs, ``L`` the transform
  length, ``eps`` the dtype's). ``auto`` takes a mixing algorithm only while
  ``eps * log2(L) * rms(x) / m <= FFT_ERROR_BOUND`` (1e-4). Measured on
  512×512 inputs with a 31×31 kernel in float32, every output then stayed within
  6e-6 of its terms' magnitude ``sum |x*w|`` (uniform, normal, microscopy-like
  and 1e4-spiked data; 5e-8 on uniform data, where direct's own rounding is
  about 1e-7), while a single 1e9 pixel (estimate 8.4) put 46% errors on
  outputs that never read it: such data go to a direct algorithm instead.

- Winograd mixes values only within a tile (``m + 2`` inputs a side), so
  its error follows the largest value a tile may hold: about ``growth * eps
  * max|x| / m`` of an output's terms (:attr:`DataTraits.tile_error`, with
  the growth measured per tile size and rank:
  :meth:`~convolab.algorithms.winograd.Winograd.error_growth`). ``auto``
  takes it only while that is at most ``WINOGRAD_ERROR_BOUND`` (1e-4), and
  only with at least ``WINOGRAD_MIN_CHANNELS`` (16) input channels per
  group: with fewer, an output whose own terms are small takes the rounding
  of its tile's larger values (measured up to 2e-3 of its terms in float32
  on a 3-d F(4) input gradient with one channel). In float32 that admits
  data whose largest value is up to about 80 (F(3), F(4)) or 800 (F(2)) times
  their median, which ordinary activations and images are; measured, see
  ``docs/winograd.md``.

Integers never go to the FFT or Winograd (their results must be exact).
Explicitly named algorithms run as asked.

The planner decides the gradients' passes too, in one place (:class:`PassPlan`):

- the input gradient: the forward's own pass where its algorithm has one
  (depthwise, compiled), else "full" (a forward convolution of grad_output, so the fast
  algorithms apply) at stride 1 with a finite weight, else "scatter"
  (:func:`input_grad_formulation`), its windows added back by a compiled
  col2im where Numba can run it and its estimate beats NumPy's strided adds;
  at stride 1 too where that compiled "scatter" is estimated faster than the
  full correlation's best forward (few input channels: a small CNN's layers,
  a stem, whose full correlation has few output channels);
- the weight gradient: the forward's own pass where its algorithm has one and
  takes it (depthwise, compiled; folded where folding halves the copies and the input is
  finite) and gemm's is not estimated faster by :data:`OWN_PASS_MARGIN` (compiled's
  passes lose to gemm's product on 7x7-14x14 layers with hundreds of channels), else gemm's, in the
  product orientation gemm chooses; then, under either, another algorithm's own pass where its estimate
  for that pass (:meth:`~convolab.algorithms.Algorithm.pass_estimate`) is below :data:`CHEAPER_PASS_MARGIN`
  of it: compiled's dot products or register tiles, read in place from the phase grid, on stems, small groups
  and 3x3-5x5 layers of 28x28 positions and more (under a folded forward too: inception's 5x5), or
  folded's on long kernels.

Each algorithm says how its pass would run (:meth:`~convolab.algorithms.Algorithm.pass_formulation`);
the engine (:mod:`convolab._engine`) runs what the plan says, and looks at the
data only where their finiteness would change a pass (:attr:`PassPlan.finite_matters`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import lru_cache
from math import ceil, inf, isfinite, log10, log2, prod
from typing import Any, Sequence

import numpy as np

from . import algorithms
from ._dtypes import all_finite, check_supported_dtype, compute_dtype
from ._grad_problems import full_problem, phase_problems
from ._settings import current_thread_count, current_workspace_limit
from .algorithms._columns import compiled_columns_missing, scatter_add_seconds
from .algorithms._compiled import kernels, numba_loaded
from .algorithms._rates import COPY_RATE, product_rate
from .algorithms._threads import in_parallel
from .spec import ConvSpec, PaddingArg, conv_spec

__all__ = ["Plan", "PassPlan", "DataTraits", "plan", "plan_for", "pass_for", "data_traits", "measured_choice",
           "input_grad_formulation", "plan_for_arrays", "values_finite", "winograd_output_vouches",
           "auto_candidates", "FFT_ERROR_BOUND", "WINOGRAD_ERROR_BOUND", "WINOGRAD_MIN_CHANNELS", "OWN_PASS_MARGIN",
           "CHEAPER_PASS_MARGIN"]


def auto_candidates() -> tuple[str, ...]:
    """The algorithms "auto" and "measure" choose among: the registered ones marked ``automatic``."""
    return tuple(name for name, algorithm in algorithms.ALGORITHMS.items() if algorithm.automatic)


@dataclass(frozen=True)
class PassPlan:
    """How a plan runs one pass, and why.

    ``method`` is what runs it, named as the pass's ``algorithm`` argument
    names it: for the forward an algorithm; for the input gradient "full" or
    "scatter", or an algorithm whose own pass runs it ("depthwise"); for the
    weight gradient an algorithm whose own pass runs it ("gemm", "folded",
    "depthwise", "im2col") or "conv". ``detail`` says how (the formulation),
    ``options`` are the keyword arguments the plan gives that algorithm's pass
    method, and ``finite_matters`` whether an inf or NaN in the operand the
    pass multiplies by zeros that are not data would change the pass (so the
    engine looks at the data only then).
    """

    method: str
    detail: str
    reason: str
    options: tuple[tuple[str, Any], ...] = ()
    finite_matters: bool = False

    def __str__(self) -> str:
        return f"{self.method} ({self.detail}): {self.reason}" if self.detail else f"{self.method}: {self.reason}"


@dataclass(frozen=True)
class Plan:
    """What the planner decided for one problem: the forward, and both gradients' passes.

    ``algorithm`` and ``reason`` are the forward's (also as :attr:`forward`);
    ``estimates`` holds the estimated seconds of every candidate that can run
    it, ``refused`` the reason each other candidate cannot. ``input_grad`` and
    ``weight_grad`` are the passes the gradients' "auto" runs.
    """

    algorithm: str
    reason: str
    flops: int
    workspace_bytes: int
    input_grad: PassPlan
    weight_grad: PassPlan
    estimates: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def forward(self) -> PassPlan:
        """The forward pass: :attr:`algorithm`, for :attr:`reason`."""
        return PassPlan(self.algorithm, "", self.reason)

    def __str__(self) -> str:
        lines = [f"forward: {self.forward}",
                 f"  {self.flops / 1e9:.3g} GFLOP, workspace {self.workspace_bytes / 2**20:.3g} MiB"]
        lines += [f"  {name}: ~{seconds * 1e3:.3g} ms" for name, seconds in sorted(self.estimates.items(),
                                                                                 key=lambda item: item[1])]
        lines += [f"  {name}: cannot run ({why})" for name, why in self.refused.items()]
        lines += [f"input gradient: {self.input_grad}", f"weight gradient: {self.weight_grad}"]
        return "\n".join(lines)


#: The largest estimated error, relative to the magnitude of an output's terms, that "auto" accepts
#: from an algorithm that mixes values across outputs (see the module notes and :func:`data_traits`).
FFT_ERROR_BOUND = 1e-4
#: The same for Winograd's tiles: the largest estimated error ``error_growth * eps * max|x| / m`` "auto" accepts
#: (see the module notes and :class:`DataTraits`).
WINOGRAD_ERROR_BOUND = 1e-4
#: "auto" runs Winograd only with at least this many input channels per group (see the module notes).
WINOGRAD_MIN_CHANNELS = 16
#: Elements the median of :func:`data_traits` looks at: an evenly spaced sample, not a sort of everything.
_MEDIAN_SAMPLE = 2**14
#: Values per thread of the compiled data check (:func:`_peak_and_sample`): fewer run on one; and below this
#: many NumPy's passes run (read from the caches, they cost less than a call of the kernel).
_CHECK_VALUES_PER_THREAD, _CHECK_VALUES_COMPILED = 2**20, 2**16


@dataclass(frozen=True)
class DataTraits:
    """What the planner needs to know about the arrays' values, not only their shapes.

    ``finite``: no operand holds an inf or NaN. ``fft_error``: the estimated
    error of a transform-based algorithm relative to the magnitude of an
    output's terms, rounded up to a power of ten (so plans stay few and cached);
    0 where nothing was estimated. ``tile_error``: ``eps * max|x| / m``, the
    error a tile transform makes per unit of its growth (:attr:`Winograd.error_growth
    <convolab.algorithms.winograd.Winograd.error_growth>`), rounded up alike.
    """

    finite: bool = True
    fft_error: float = 0.0
    tile_error: float = 0.0

    def why_not_mixing(self, tile_growth: float | None = None) -> str | None:
        """Why an algorithm that mixes values across outputs must not run on these data, if it must not.

        ``tile_growth``: the algorithm mixes values within small tiles
        (Winograd), with this error growth, and is held to
        :data:`WINOGRAD_ERROR_BOUND`; None: across whole transforms (the FFT),
        held to :data:`FFT_ERROR_BOUND`.
        """
        if not self.finite:
            return "the data hold inf or NaN, which a transform would spread to every output"
        if tile_growth is not None:
            error = tile_growth * self.tile_error
            if error > WINOGRAD_ERROR_BOUND:
                return (f"the data's dynamic range gives an estimated error of {error:.0e} of the outputs' terms "
                        f"in the tile transforms, over the bound of {WINOGRAD_ERROR_BOUND:.0e}")
            return None
        if self.fft_error > FFT_ERROR_BOUND:
            return (f"the data's dynamic range gives an estimated error of {self.fft_error:.0e} of the outputs' "
                    f"terms, over the bound of {FFT_ERROR_BOUND:.0e}")
        return None


#: Data that are finite and whose dynamic range has not been asked about.
ORDINARY = DataTraits()
#: Data holding an inf or a NaN.
NON_FINITE = DataTraits(finite=False)


def data_traits(signal: np.ndarray, *others: np.ndarray, transform_length: int = 1, fft: bool = True) -> DataTraits:
    """The traits of ``signal`` (the array slid over) and ``others`` (the kernel), for the planner.

    The FFT's error estimate is ``eps * log2(L) * rms / m``: ``rms`` the largest
    root-mean-square value of one sample's channel (a transform's input), ``m``
    the median magnitude of the nonzero values (of an evenly spaced sample), ``L``
    ``transform_length``. The tiles' is ``eps * max|x| / m``: a tile mixes few
    values, so its error follows the largest one it may hold, not the mean.
    ``fft=False``: the tiles' estimate only (no pass for the root-mean-squares;
    ``fft_error`` stays 0, so only for a plan that will not take the FFT).

    >>> import numpy as np
    >>> x = np.ones((1, 1, 64, 64), np.float32)
    >>> data_traits(x, np.ones((1, 1, 3, 3), np.float32), transform_length=4096).fft_error
    1e-05
    >>> x[0, 0, 5, 5] = 1e9
    >>> data_traits(x, transform_length=4096)
    DataTraits(finite=True, fft_error=100.0, tile_error=1000.0)
    >>> data_traits(x, np.array([np.nan], np.float32))
    DataTraits(finite=False, fft_error=0.0, tile_error=0.0)
    """
    if not all(values_finite(a) for a in others):
        return DataTraits(finite=False)
    if signal.dtype.kind not in "fc" or signal.size == 0:
        return ORDINARY
    rows = signal.reshape(signal.shape[0] * signal.shape[1], -1) if signal.ndim > 2 else signal.reshape(1, -1)
    parts = (rows.real, rows.imag) if signal.dtype.kind == "c" else (rows,)
    step = max(1, signal.size // _MEDIAN_SAMPLE)
    compiled = _peak_and_sample(signal, step)
    if compiled is not None:
        peak, sample = compiled
    else:
        with np.errstate(invalid="ignore"):  # two passes, no copy; an inf or NaN makes the peak one
            peak = max(max(float(part.max()), -float(part.min())) for part in parts) * (2**0.5 if len(parts) > 1 else 1)
        sample = np.abs(signal.reshape(-1)[::step])
    if not isfinite(peak):
        return DataTraits(finite=False)
    rms = 0.0
    if fft:
        with np.errstate(over="ignore", invalid="ignore"):  # one pass, no copy: squares summed row by row
            squares = sum((part[:, None, :] @ part[:, :, None]).reshape(-1) for part in parts)  # a BLAS dot per row
        if not np.isfinite(squares).all():  # squares past the dtype's range: judged as an inf
            return DataTraits(finite=False)
        rms = float(np.sqrt(squares.max() / rows.shape[1]))
    nonzero = sample[sample != 0]
    if peak == 0 or nonzero.size == 0:
        return ORDINARY  # all zeros: nothing to round
    eps, median = float(np.finfo(signal.dtype).eps), _median(nonzero)
    fft_error = _power_of_ten_above(eps * log2(max(transform_length, 2)) * rms / median) if fft else 0.0
    return DataTraits(fft_error=fft_error, tile_error=_power_of_ten_above(eps * peak / median))


def _median(values: np.ndarray) -> float:
    """``np.median(values)`` of a 1-d array without NaN, by one partition: NumPy's median partitions an even count
    around both middle positions at once, which took 160-190 us of 16384 float32 values against 15 for one
    position (the lower middle value is then the largest of the values below it).

    >>> _median(np.array([4.0, 1.0, 3.0, 2.0], np.float32)), _median(np.array([5.0, 1.0, 3.0]))
    (2.5, 3.0)
    """
    middle = values.size // 2
    parted = np.partition(values, middle)
    if values.size % 2:
        return float(parted[middle])
    return float(np.mean(np.array([parted[:middle].max(), parted[middle]], dtype=values.dtype)))  # as np.median


def values_finite(a: np.ndarray) -> bool:
    """Whether ``a`` holds no inf or NaN: by the compiled peak (:func:`_peak_and_sample`, shared among threads)
    where it runs, else by :func:`~convolab._dtypes.all_finite`'s sum. ResNet-18 layer4's 512 x 512 x 3 x 3
    weight (two threads): 0.33 ms against the sum's 0.47-0.49."""
    compiled = _peak_and_sample(a, max(a.size, 1))
    return all_finite(a) if compiled is None else isfinite(compiled[0])


def _peak_and_sample(signal: np.ndarray, step: int) -> tuple[float, np.ndarray] | None:
    """``max|signal|`` (inf or NaN where it holds one) and ``|signal.reshape(-1)[::step]|`` in one compiled pass
    (:mod:`~convolab.algorithms._kernels_traits`), shared among threads; None where it does not run: Numba not
    yet imported by another path (the check is not worth the import), a dtype other than float32 and float64,
    an array not C-contiguous, or a small one. The same values as NumPy's passes, which read the array three
    times (ResNet-18's 56x56 input: 0.86 ms with NumPy, 0.63 compiled; VGG-16's 224x224 one 16 and 9 ms, one
    thread)."""
    dtype = signal.dtype
    if dtype.kind != "f" or dtype.itemsize not in (4, 8) or not dtype.isnative or not signal.flags.c_contiguous \
            or signal.size < _CHECK_VALUES_COMPILED or not numba_loaded():
        return None
    unsigned = np.dtype(f"uint{8 * dtype.itemsize}")
    bits = signal.reshape(-1).view(unsigned)
    sample = np.empty(-(-bits.size // step), dtype=unsigned)
    magnitude = unsigned.type(np.iinfo(unsigned).max >> 1)  # every bit but the sign
    pieces = max(1, min(current_thread_count(), bits.size // _CHECK_VALUES_PER_THREAD))
    bounds = [bits.size * i // pieces for i in range(pieces + 1)]
    peaks = [unsigned.type(0)] * pieces
    peak_bits = kernels("traits").peak_bits

    def worker():
        def run(piece: int) -> None:
            peaks[piece] = peak_bits(bits, magnitude, bounds[piece], bounds[piece + 1], step, sample)
        return run

    in_parallel(range(pieces), worker, pieces)
    peak = float(np.array(max(peaks), dtype=unsigned).view(dtype))  # the float of those bits: inf or NaN too
    return peak, np.abs(sample.view(dtype))


def _power_of_ten_above(error: float) -> float:
    """``error`` rounded up to a power of ten: the plan cache sees a handful of values, never one per array."""
    return 10.0 ** ceil(log10(error)) if isfinite(error) else inf


def _why_not_mixing(algorithm: algorithms.Algorithm, spec: ConvSpec, data: DataTraits) -> str | None:
    """Why "auto" must not run ``algorithm``, which mixes values across outputs, on this problem and these data:
    the FFT's bound, or Winograd's (enough channels, and its error growth for the rank)."""
    if not isinstance(algorithm, algorithms.Winograd):
        return data.why_not_mixing()
    if spec.in_channels_per_group < WINOGRAD_MIN_CHANNELS:
        return (f"{spec.in_channels_per_group} input channels per group: with fewer than {WINOGRAD_MIN_CHANNELS}, "
                f"an output whose own terms are small takes the rounding of its tile's larger values")
    return data.why_not_mixing(algorithm.error_growth(spec.rank))


def plan_for_arrays(spec: ConvSpec, dtype: np.dtype, signal: np.ndarray, kernel: np.ndarray | None) -> Plan:
    """The plan for these arrays: the shapes' plan, refined by the data's traits where its pick mixes outputs.

    Looking at the values costs passes over them, so only a plan whose pick
    could spread an inf or lose accuracy (the FFT, Winograd) pays for it, and
    a Winograd pick only for the passes its own rule needs (the FFT's estimate
    is made too if the data send the plan to the FFT). ``kernel`` None: the
    kernel is not looked at, and the caller vouches for its finiteness
    otherwise (:func:`winograd_output_vouches`).
    """
    chosen = plan_for(spec, dtype)
    picked = algorithms.ALGORITHMS[chosen.algorithm]
    if not picked.mixes_outputs:
        return chosen
    length = algorithms.transform_length(spec)
    tiles_only = isinstance(picked, algorithms.Winograd)
    others = () if kernel is None else (kernel,)
    chosen = plan_for(spec, dtype, data_traits(signal, *others, transform_length=length, fft=not tiles_only))
    replanned = algorithms.ALGORITHMS[chosen.algorithm]
    if tiles_only and replanned.mixes_outputs and not isinstance(replanned, algorithms.Winograd):
        chosen = plan_for(spec, dtype, data_traits(signal, *others, transform_length=length))
    return chosen


def winograd_output_vouches(spec: ConvSpec) -> bool:
    """Whether "auto" looks at a Winograd forward's output for an inf or NaN instead of at its kernel: where the
    output holds fewer values (ResNet-18 layer4's 3x3: 200,704 against 2,359,296, a check of 0.03 ms against
    0.33 ms of the 7-8 ms call). A kernel holding an inf or NaN gives an output holding one: each tap has a nonzero
    coefficient at some tile position, each position at some output, and ``0 * inf`` is NaN. So a finite output
    vouches for the kernel, and a non-finite one sends the call back to a plan that looks at the kernel
    (:func:`values_finite`)."""
    return prod(spec.output_shape) < prod(spec.weight_shape)


def input_grad_formulation(spec: ConvSpec, weight_finite: bool) -> tuple[str, str]:
    """Which formulation of the input gradient "auto" runs ("full" or "scatter"), and why, where the forward's
    algorithm has no input-gradient pass of its own.

    "full" is a forward convolution of grad_output (the planner's fast
    algorithms apply), but it multiplies cells that are not data: the zeros of
    its own padding, and at stride > 1 the zeros spread between samples. Those
    are harmless, except times an inf or NaN in the weight, which would turn a
    zero into a NaN no output read (PyTorch and the direct sum give a number).
    """
    if any(s != 1 for s in spec.stride):
        return "scatter", "stride > 1: the full correlation would spend most of its work on the spread zeros"
    if not weight_finite:
        return "scatter", "the weight holds inf or NaN, which the full correlation would multiply by its padding zeros"
    return "full", "stride 1: a forward convolution of grad_output, run by the planner's pick"


#: The compiled "scatter" replaces the full correlation at stride 1 only where its estimate is below this
#: fraction of the full's: DeepLab's ASPP layer (dilation 6), estimated 0.96 of the full on space_to_batch,
#: measured 39 ms against 35.5 (one thread); ResNet-18 layer4, at 0.93 of the full on winograd2, 15-17 ms against
#: 17-18.
SCATTER_MARGIN = 0.95


def _scatter_if_faster(spec: ConvSpec, dtype: np.dtype) -> PassPlan | None:
    """The compiled "scatter" at stride 1 (:func:`_scatter_pass`), where it is estimated faster than the full
    correlation's best forward by the margin :data:`SCATTER_MARGIN`, else None.

    Its estimate: the product of every window's gradient (the forward's FLOPs,
    ``(C*K, O) @ (O, positions)`` per group, at the forward product's
    :func:`~convolab.algorithms._rates.product_rate`) and the compiled add-back
    (:func:`~convolab.algorithms._columns.scatter_add_seconds`). That rate's
    penalty for a product shallower than tall stands for a forward's results
    moved into the output; here that move is the add-back, counted on its own:
    the ``(C*K, O)`` products measured 124-150 GFLOP/s on the suite's shapes
    (one thread), as fast as the forward's ``(O, C*K)`` (ResNet-18 layer4's
    ``(4608, 512) @ (512, 392)`` 12.9 ms, its forward's 12.8). With few input
    channels the full correlation has few output channels, and its products
    run far from the BLAS's peak (the digits CNN's (32, 16, 4, 4) layer:
    measured 0.24 ms full, 0.16 ms scatter; VGG's first layer 65 and 32 ms, one
    thread each). A 1x1 kernel never takes it: its full correlation is the
    same product with its results in place, the scatter that product and an
    add-back (ResNet-50's 1x1 layers measured 5-50% slower by scatter).
    """
    if all(k == 1 for k in spec.kernel_size) or compiled_columns_missing(spec, dtype) is not None:
        return None
    accumulate = compute_dtype(dtype)
    rate = product_rate(accumulate, spec.out_channels_per_group, spec.terms)
    scatter_seconds = spec.flops / rate + scatter_add_seconds(spec, accumulate)[1]
    estimates, _ = _candidate_estimates(full_problem(spec)[0], dtype, ORDINARY)
    best = min(estimates, key=estimates.get)
    if scatter_seconds >= SCATTER_MARGIN * estimates[best]:
        return None
    return PassPlan("scatter", f"{_INPUT_GRAD_DETAILS['scatter']}, by a compiled col2im",
                    f"stride 1, but estimated {estimates[best] / max(scatter_seconds, 1e-12):.3g}x faster than the "
                    f"full correlation on {best}", (("col2im", "compiled"),))


#: "phases" replaces the "scatter" at stride > 1 only where its estimate is below this fraction of the scatter's.
#: On the suite's strided layers it is estimated and measured slower, so "auto" keeps the scatter there (one
#: thread, CPU time, median of 7, session 12; estimates in brackets): DCGAN 256 -> 128 phases 26.4 ms [26.9]
#: against the scatter's 15.4 [16.0]; ResNet-18 layer2.0 10.7 [16.5] against 8.0 [7.9], layer3.0 10.9 [12.4]
#: against 7.3 [7.0], layer4.0 11.9 [10.7] against 6.7 [6.6]; DCGAN 64 -> 3 11.4 [18.1] against 3.5 [2.1].
PHASES_MARGIN = 0.9


def _phases_if_faster(spec: ConvSpec, dtype: np.dtype, scatter: PassPlan) -> PassPlan | None:
    """The "phases" input gradient at stride > 1, where its estimate is below :data:`PHASES_MARGIN` of the
    ``scatter`` pass's, else None.

    The scatter's estimate is its product (the forward's FLOPs at the forward product's rate, as in
    :func:`_scatter_if_faster`) and its add-back; the phases' the sum of their forward problems' best
    estimates, and each phase's result copied into its strided cells.
    """
    accumulate = compute_dtype(dtype)
    if accumulate.kind != "f":
        return None
    compiled = dict(scatter.options).get("col2im") == "compiled"
    rate = product_rate(accumulate, spec.out_channels_per_group, spec.terms)
    scatter_seconds = spec.flops / rate + scatter_add_seconds(spec, accumulate)[1 if compiled else 0]
    phases_seconds = spec.batch * spec.in_channels * prod(spec.input_size) * accumulate.itemsize * 2 \
        / COPY_RATE["strided"]
    for phase in phase_problems(spec):
        if phase.spec is not None:
            estimates, _ = _candidate_estimates(phase.spec, dtype, ORDINARY)
            phases_seconds += min(estimates.values())
    if phases_seconds >= PHASES_MARGIN * scatter_seconds:
        return None
    return PassPlan("phases", _INPUT_GRAD_DETAILS["phases"],
                    f"stride {spec.stride}: estimated {scatter_seconds / max(phases_seconds, 1e-12):.3g}x faster "
                    "than the scatter")


#: What the input gradient's own formulations do.
_INPUT_GRAD_DETAILS = {"full": "a forward convolution of grad_output with the kernel reversed",
                       "scatter": "each window's gradient added back where it was read",
                       "phases": "each stride phase a stride-1 forward convolution of grad_output with its taps"}


def _scatter_pass(spec: ConvSpec, dtype: np.dtype, reason: str) -> PassPlan:
    """The "scatter" formulation under "auto", chosen for ``reason``: its add-back by the compiled col2im
    (:func:`~convolab.algorithms._columns.add_columns`: the same sums in the same order, in one pass per plane)
    where that can run and is estimated faster than NumPy's strided adds, one pass per tap
    (:func:`~convolab.algorithms._columns.scatter_add_seconds`). Asked for by name, "scatter" runs NumPy's."""
    if compiled_columns_missing(spec, dtype) is None:
        numpy_seconds, compiled_seconds = scatter_add_seconds(spec, compute_dtype(dtype))
        if compiled_seconds < numpy_seconds:
            return PassPlan("scatter", f"{_INPUT_GRAD_DETAILS['scatter']}, by a compiled col2im",
                            f"{reason}; the compiled add-back estimated {numpy_seconds / compiled_seconds:.3g}x "
                            "faster than NumPy's strided adds", (("col2im", "compiled"),))
    return PassPlan("scatter", _INPUT_GRAD_DETAILS["scatter"], reason)


def _own_pass(name: str, algorithm: str, spec: ConvSpec, dtype: np.dtype, finite: bool, asked: bool,
              why: str) -> PassPlan | str:
    """``algorithm``'s own pass ``name`` for this problem, run because ``why`` (and for what the algorithm
    says), or why it does not run it (``asked``: see :meth:`~convolab.algorithms.Algorithm.pass_formulation`)."""
    chosen = algorithms.ALGORITHMS[algorithm].pass_formulation(name, spec, dtype, finite=finite, asked=asked)
    if isinstance(chosen, str):
        return chosen
    return PassPlan(algorithm, chosen.detail, f"{why}; {chosen.reason}" if chosen.reason else why, chosen.options)


def _choose_pass(name: str, spec: ConvSpec, dtype: np.dtype, requested: str, forward: str, finite: bool) -> PassPlan:
    """Gradient pass ``name`` for ``requested`` ("auto": under a forward run by ``forward``), on an operand
    that is ``finite`` or not (see :class:`PassPlan`)."""
    asked = requested != "auto"
    why = "asked for by name" if asked else f"the forward runs {forward}: its own pass"
    if name == "input_grad":
        if not asked:
            own = _own_pass(name, forward, spec, dtype, finite, asked, why)
            if isinstance(own, PassPlan):
                return own
            formulation, reason = input_grad_formulation(spec, finite)
            if formulation == "scatter":
                scatter = _scatter_pass(spec, dtype, reason)
                if not finite or all(s == 1 for s in spec.stride):
                    return scatter  # the phases' padding zeros would meet an inf or NaN of the weight
                return _phases_if_faster(spec, dtype, scatter) or scatter
            faster = _scatter_if_faster(spec, dtype)
            if faster is not None:
                return faster
        else:
            formulation, reason = requested, why
        return PassPlan(formulation, _INPUT_GRAD_DETAILS[formulation], reason)
    if requested == "conv":
        return PassPlan("conv", "a convolution of the input with grad_output as its kernel", why)
    own = _own_pass(name, requested if asked else forward, spec, dtype, finite, asked, why)
    if isinstance(own, PassPlan) and (asked or own.method != "gemm"):
        if asked:
            return own
        # the forward's own pass, unless gemm's or another algorithm's is estimated faster by the margin
        return _cheapest_weight_grad(_unless_gemm_is_faster(own, spec, dtype, finite), spec, dtype, finite)
    # gemm's weight gradient runs every problem: the fallback of every other, unless another's own pass is
    # estimated faster.
    if isinstance(own, PassPlan):
        gemm_pass = own
    else:
        declined = f"asked for {requested}, but {own}" if asked else own
        gemm_pass = _own_pass(name, "gemm", spec, dtype, finite, True, f"{declined}: gemm's instead")
    return gemm_pass if asked else _cheapest_weight_grad(gemm_pass, spec, dtype, finite)


#: Another algorithm's own weight-gradient pass replaces gemm's only where its estimate is below this fraction
#: of gemm's: the pass estimates' fit to measured times scatters by about 15% (compiled's against gemm's, see
#: :meth:`convolab.algorithms.compiled.Compiled.pass_estimate`), so nearer parity gemm's stays.
OWN_PASS_MARGIN = 0.9
#: Another algorithm's own weight-gradient pass replaces gemm's (or the forward's own) where its estimate is below
#: this fraction of the best so far (:func:`_cheapest_weight_grad`). Compiled's register tiles, estimated at
#: 0.92-0.95 of gemm's, measured 12-25% faster on every such suite layer (one thread, CPU time, median of 7,
#: session 12: ResNet-18 layer2 3x3 11.5-12.2 -> 8.9 ms, layer3 11.4 -> 9.5, VGG-16 conv2_1 78-82 -> 64, conv2_2
#: 153-168 -> 128, DCGAN 256 -> 128's transposed weight gradient 15.2-15.4 -> 13.5); ASPP, at 0.987, stays.
CHEAPER_PASS_MARGIN = 0.96


def _unless_gemm_is_faster(own: PassPlan, spec: ConvSpec, dtype: np.dtype, finite: bool) -> PassPlan:
    """The forward's own weight-gradient pass ``own``, unless its algorithm has a cost model for the pass and
    gemm's is estimated faster by the margin :data:`OWN_PASS_MARGIN` (compiled's dot products under its tiled
    forward lose to gemm's product on a 7x7 stem, say)."""
    algorithm, accumulate = algorithms.ALGORITHMS[own.method], compute_dtype(dtype)
    if type(algorithm).pass_estimate is algorithms.Algorithm.pass_estimate:
        return own
    own_seconds = algorithm.pass_estimate("weight_grad", spec, accumulate)
    gemm_seconds = algorithms.ALGORITHMS["gemm"].pass_estimate("weight_grad", spec, accumulate)
    if own_seconds is None or gemm_seconds is None or gemm_seconds >= OWN_PASS_MARGIN * own_seconds:
        return own
    why = (f"{own.reason.split(';')[0]}, but gemm's pass estimated {own_seconds / max(gemm_seconds, 1e-12):.3g}x "
           "faster than it")
    gemm_pass = _own_pass("weight_grad", "gemm", spec, dtype, finite, True, why)
    return gemm_pass if isinstance(gemm_pass, PassPlan) else own


def _cheapest_weight_grad(base: PassPlan, spec: ConvSpec, dtype: np.dtype, finite: bool) -> PassPlan:
    """``base`` (gemm's weight gradient, or the forward's own pass), or the own pass of another automatic
    algorithm that can run the problem and whose :meth:`~convolab.algorithms.Algorithm.pass_estimate` for it is
    below :data:`CHEAPER_PASS_MARGIN` of the best so far (compiled's, where Numba runs). A ``base`` whose algorithm
    has no cost model for the pass (depthwise's) stays."""
    accumulate, algorithm = compute_dtype(dtype), algorithms.ALGORITHMS[base.method]
    if type(algorithm).pass_estimate is algorithms.Algorithm.pass_estimate:
        return base
    best, best_seconds = base.method, algorithm.pass_estimate("weight_grad", spec, accumulate)
    base_seconds = best_seconds
    for name in auto_candidates():
        algorithm = algorithms.ALGORITHMS[name]
        if name == base.method or "weight_grad" not in algorithm.passes:
            continue
        if type(algorithm).pass_estimate is algorithms.Algorithm.pass_estimate or algorithm.why_not(spec, dtype):
            continue  # no cost model for the pass (it runs under its own forward only), or cannot run it
        seconds = algorithm.pass_estimate("weight_grad", spec, accumulate)
        if seconds is not None and best_seconds is not None and seconds < CHEAPER_PASS_MARGIN * best_seconds:
            if isinstance(_own_pass("weight_grad", name, spec, dtype, finite, False, ""), PassPlan):
                best, best_seconds = name, seconds  # an algorithm that declines the pass here is no candidate
    if best == base.method:
        return base
    why = f"{best}'s own pass estimated {base_seconds / max(best_seconds, 1e-12):.3g}x faster than {base.method}'s"
    return _own_pass("weight_grad", best, spec, dtype, finite, False, why)


def _gradient_pass(name: str, spec: ConvSpec, dtype: np.dtype, requested: str, forward: str,
                   finite: bool) -> PassPlan:
    """:func:`_choose_pass`, and whether the other finiteness would choose another pass."""
    chosen = _choose_pass(name, spec, dtype, requested, forward, finite)
    other = _choose_pass(name, spec, dtype, requested, forward, not finite)
    changes = (chosen.method, chosen.detail, chosen.options) != (other.method, other.detail, other.options)
    return dataclasses.replace(chosen, finite_matters=changes)


def pass_for(name: str, spec: ConvSpec, dtype: np.dtype, requested: str = "auto", finite: bool = True) -> PassPlan:
    """The gradient pass ``name`` ("input_grad", "weight_grad") for ``requested`` (its ``algorithm``
    argument), on an operand that is ``finite`` or not: the plan's for "auto" (cached), else the one asked
    for (which may still decline data it would get wrong, as folded an inf)."""
    if requested == "auto":
        chosen = plan_for(spec, dtype, ORDINARY if finite else NON_FINITE)
        return chosen.input_grad if name == "input_grad" else chosen.weight_grad
    return _gradient_pass(name, spec, np.dtype(dtype), requested, requested, finite)


def plan_for(spec: ConvSpec, dtype: np.dtype, data: DataTraits = ORDINARY) -> Plan:
    """The plan for a frozen spec, the caller's dtype and the data's traits, under the current settings.

    Cached on everything that changes the choice: the spec, the dtype, the
    traits, the workspace limit and the thread count.
    """
    return _plan_cached(spec, np.dtype(dtype), data, current_workspace_limit(), current_thread_count())


def _candidate_estimates(spec: ConvSpec, dtype: np.dtype, data: DataTraits) -> tuple[dict[str, float], dict[str, str]]:
    """The estimated seconds of every automatic candidate that can run the forward of ``spec`` on such data, and
    why each other one cannot."""
    accumulate = compute_dtype(dtype)
    estimates: dict[str, float] = {}
    refused: dict[str, str] = {}
    for name in auto_candidates():
        algorithm = algorithms.ALGORITHMS[name]
        why = algorithm.why_not(spec, dtype)
        if why is None and algorithm.mixes_outputs:
            why = _why_not_mixing(algorithm, spec, data)
        if why is None:
            estimates[name] = algorithm.estimate(spec, accumulate)
        else:
            refused[name] = why
    return estimates, refused


@lru_cache(maxsize=4096)
def _plan_cached(spec: ConvSpec, dtype: np.dtype, data: DataTraits, workspace_limit: int, threads: int) -> Plan:
    """:func:`plan_for`, whose settings are arguments so that the cache keys on them (they are read inside)."""
    accumulate = compute_dtype(dtype)
    estimates, refused = _candidate_estimates(spec, dtype, data)
    best = min(estimates, key=estimates.get)
    runner_up = sorted(estimates, key=estimates.get)[1:2]
    if runner_up:
        ratio = estimates[runner_up[0]] / max(estimates[best], 1e-12)
        reason = f"estimated {ratio:.3g}x faster than {runner_up[0]}"
    else:
        reason = "the only candidate that can run this problem"
    # The gradients follow the forward that shapes alone choose: which data refuse a mixing forward is no
    # reason to change theirs, and their own finiteness is asked about by pass.
    forward = best if data == ORDINARY else _plan_cached(spec, dtype, ORDINARY, workspace_limit, threads).algorithm
    return Plan(algorithm=best, reason=reason, flops=spec.flops,
                workspace_bytes=algorithms.ALGORITHMS[best].workspace_bytes(spec, accumulate.itemsize),
                input_grad=_gradient_pass("input_grad", spec, dtype, "auto", forward, data.finite),
                weight_grad=_gradient_pass("weight_grad", spec, dtype, "auto", forward, data.finite),
                estimates=estimates, refused=refused)


def plan(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    dtype: Any = np.float32,
    stride: Any = 1,
    padding: PaddingArg = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
) -> Plan:
    """How ``conv(..., algorithm="auto")`` and its gradients would run, why, its FLOPs and workspace.

    Parameters
    ----------
    input_shape, weight_shape : tuple of int
        As for :func:`convolab.output_shape`.
    dtype : dtype-like
        The arrays' dtype.
    stride, padding, dilation, groups, padding_mode, flip
        As for :func:`convolab.conv`.

    Returns
    -------
    Plan
        ``algorithm``, ``reason``, ``flops``, ``workspace_bytes`` (scratch memory
        beyond input and output), the estimate of each candidate and why any
        other could not run; ``input_grad`` and ``weight_grad``, the passes the
        gradients' "auto" runs (for data without inf or NaN), each with its reason.

    Examples
    --------
    >>> import convolab as cl
    >>> cl.plan((8, 256, 28, 28), (512, 256, 3, 3), "float32", padding=1).algorithm  # 4x fewer multiplications
    'winograd4'
    >>> cl.plan((8, 256, 28, 28), (512, 256, 3, 3), "float32", padding=1, stride=2).algorithm  # register tiles
    'packed'
    >>> cl.plan((2, 32, 16, 64, 64), (32, 32, 3, 3, 3), "float32", padding=1).algorithm  # 32 filters: register tiles
    'compiled'
    >>> cl.plan((1, 1, 2048, 2048), (1, 1, 63, 63), "float32").algorithm
    'fft'
    >>> cl.plan((8, 32, 112, 112), (32, 1, 3, 3), "float32", padding=1, groups=32).algorithm
    'depthwise'
    >>> cl.plan((1, 1, 2048, 2048), (1, 1, 63, 63), "int32").refused["fft"]
    'integer inputs (int32) must give exact results, and the FFT rounds'
    >>> chosen = cl.plan((2, 32, 16, 64, 64), (32, 32, 3, 3, 3), "float32", padding=1)
    >>> chosen.input_grad.method, chosen.weight_grad.method
    ('compiled', 'compiled')
    >>> chosen.weight_grad.reason
    'the forward runs compiled: its own pass; compiled loops'
    >>> cl.plan((8, 512, 7, 7), (512, 512, 3, 3), "float32", padding=1).weight_grad.method  # one big product
    'gemm'
    """
    dtype = np.dtype(dtype)
    check_supported_dtype("plan", "dtype", dtype)
    spec = conv_spec(input_shape, weight_shape, stride=stride, padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, flip=flip, op="plan")
    return plan_for(spec, dtype)


_MEASURED: dict[tuple[Any, ...], str] = {}


def _forget_plans() -> None:
    """The registry changed: plans and measured winners chose among other candidates."""
    _plan_cached.cache_clear()
    _MEASURED.clear()


algorithms.on_registry_change(_forget_plans)


def measured_choice(padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec, dtype: np.dtype) -> str:
    """Time every candidate that can run once on these arrays; remember the fastest.

    The memory is keyed on everything that changes which candidates may run:
    the spec, the dtype, the data's traits (a winner measured on finite data is
    never reused for data holding an inf) and the settings.
    """
    traits = data_traits(padded, kernel, transform_length=algorithms.transform_length(spec))
    candidates = plan_for(spec, dtype, traits)
    key = (spec, np.dtype(dtype).str, traits, current_workspace_limit(), current_thread_count())
    if key not in _MEASURED:
        timings = {}
        for name in candidates.estimates:
            start = time.perf_counter()
            algorithms.ALGORITHMS[name].run(padded, kernel, spec)
            timings[name] = time.perf_counter() - start
        _MEASURED[key] = min(timings, key=timings.get)
    return _MEASURED[key]
