"""fft: products of Fourier transforms, in blocks and within the workspace limit."""

from __future__ import annotations

import itertools
from math import log2, prod

import numpy as np

from .._dtypes import is_exact
from .._settings import current_workspace_limit
from .._window import reverse_spatial
from ..spec import ConvSpec
from . import Algorithm
from ._rates import ELEMENTWISE_RATE, FFT_RATE

__all__ = ["FFT", "fft_blocks", "transform_length", "FFT_MIN_BLOCK", "FFT_BLOCK_GAIN"]

#: Fixed cost of a call: the transforms' setup dominates tiny problems.
CALL_OVERHEAD = 150e-6


class FFT(Algorithm):
    """Products of Fourier transforms (``scipy.fft``), then every ``stride``-th sample.

    A valid correlation with kernel ``w`` is a circular convolution with the
    reversed kernel, read from offset ``k_eff - 1``; with a transform at least as
    long as the input slab, no wrapped-around sample lands in that range.
    Dilation spreads the kernel with zeros first. Never used for integers, whose
    results must be exact.

    Long inputs are cut into blocks along each axis where that is cheaper
    (overlap-save, the valid-output form of overlap-add): a block of ``B``
    outputs reads ``(B - 1) * stride + k_eff`` inputs, overlapping its neighbour
    by ``k_eff - stride``, and is transformed at a fast length chosen to minimize
    work per output (:func:`fft_blocks`). The blocks are a strided view with
    one extra axis per blocked axis, so all of them go through one batched
    transform; they share the kernel's transform, and never need adding, even at
    stride > 1.

    The spectra stay within :func:`convolab.workspace_limit`: samples, then
    filters, are taken a few at a time (:class:`_FFTLayout`), and where even one
    sample's and one filter's spectra would not fit, the spatial blocks are
    made shorter. A problem whose smallest blocks still would not fit is refused.
    """

    name = "fft"
    automatic = True
    mixes_outputs = True

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """Forward transforms of the inputs and the kernels, the spectral products (summed over input
        channels), the inverse transforms; long transforms at :data:`~convolab.algorithms._rates.FFT_RATE`,
        shorter ones slower."""
        length = transform_length(spec)
        levels = log2(max(length, 2))
        per_transform = 2.5 * length * levels / (FFT_RATE * min(1.0, levels / 22))
        transforms = spec.batch * spec.in_channels + spec.out_channels * spec.in_channels_per_group
        transforms += spec.batch * spec.out_channels
        products = 8 * spec.batch * spec.out_channels * spec.in_channels_per_group * (length / 2 + 1)
        return CALL_OVERHEAD + transforms * per_transform + products / ELEMENTWISE_RATE

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        if is_exact(dtype):
            return f"integer inputs ({np.dtype(dtype)}) must give exact results, and the FFT rounds"
        layout = _FFTLayout(spec, np.dtype(dtype))
        if not layout.fits:
            return (f"its smallest blocks need {layout.workspace_bytes / 2**20:.3g} MiB of spectra, over the workspace "
                    f"limit of {layout.limit / 2**20:.3g} MiB")
        return None

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        return _FFTLayout(spec, np.dtype(f"f{itemsize}")).workspace_bytes

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        rank = spec.rank
        axes = tuple(range(-rank, 0))
        layout = _FFTLayout(spec, padded.dtype)
        if any(d > 1 for d in spec.dilation):
            spread = np.zeros((*kernel.shape[:2], *layout.extent), dtype=kernel.dtype)
            spread[(Ellipsis, *(slice(None, None, d) for d in spec.dilation))] = kernel
            kernel = spread
        import scipy.fft  # on first use: it takes a fifth of a second, and `import convolab` should not

        complex_input = np.iscomplexobj(padded)
        forward = scipy.fft.fftn if complex_input else scipy.fft.rfftn
        inverse = scipy.fft.ifftn if complex_input else scipy.fft.irfftn
        groups, filters = spec.groups, spec.out_channels_per_group
        lengths = layout.lengths

        def kernel_spectra(o0: int, o1: int) -> np.ndarray:  # (G, o1-o0, C, *1 per blocked axis, *freq)
            chosen = kernel.reshape(groups, filters, *kernel.shape[1:])[:, o0:o1]
            spectra = forward(reverse_spatial(chosen, rank), s=lengths, axes=axes)
            return spectra.reshape(*spectra.shape[:3], *(1,) * rank, *spectra.shape[3:])  # broadcast over the blocks

        cached = kernel_spectra(0, filters) if layout.kernels_cached else None
        out = np.empty(spec.output_shape, dtype=padded.dtype)
        rows_of_blocks = layout.block_counts[0]
        for n0 in range(0, spec.batch, layout.samples):
            n1 = min(spec.batch, n0 + layout.samples)
            for r0 in range(0, rows_of_blocks, layout.rows):
                r1 = min(rows_of_blocks, r0 + layout.rows)
                slab_hat = forward(layout.slabs(padded[n0:n1], r0, r1), s=lengths, axes=axes)  # (nb, G*C, rb, ..., *freq)
                slab_hat = slab_hat.reshape(n1 - n0, groups, spec.in_channels_per_group, *slab_hat.shape[2:])
                first, last = layout.output_rows(r0, r1)
                for o0 in range(0, filters, layout.filters):
                    o1 = min(filters, o0 + layout.filters)
                    kernel_hat = cached[:, o0:o1] if cached is not None else kernel_spectra(o0, o1)
                    product = np.einsum("ngc...,goc...->ngo...", slab_hat, kernel_hat)  # (nb, G, ob, rb, ..., *freq)
                    circular = inverse(product, s=lengths, axes=axes)  # (nb, G, ob, rb, *blocks, *lengths)
                    target = out[n0:n1].reshape(n1 - n0, groups, filters, *spec.output_size)[:, :, o0:o1, first:last]
                    target[...] = layout.valid_outputs(circular, last - first)
        return out


class _FFTLayout:
    """How the FFT cuts one problem so that its spectra fit the workspace limit.

    Per axis, ``block_outputs`` outputs per spatial block at transform length
    ``lengths`` (:func:`fft_blocks`, or shorter where the limit asks).
    Each step transforms ``samples`` samples, ``rows`` blocks along the first
    axis (all blocks along the others), and takes ``filters`` filters per
    group at a time; the kernels' spectra are kept for every filter where they
    take at most half the limit (``kernels_cached``). Scratch per step: the
    slabs' spectra (and the slabs copied and zero-extended to the transform
    length on the way in, and a zero-extended copy of the samples where the last
    blocks reach past the input), the products, the inverse transforms' complex
    intermediate and real result, the valid outputs gathered out of the blocks,
    and the kernels' spectra (with their zero-extended copies).
    """

    def __init__(self, spec: ConvSpec, dtype: np.dtype):
        self.spec = spec
        self.limit = current_workspace_limit()
        self.real = np.dtype(dtype).kind != "c"
        self.itemsize = np.dtype(dtype).itemsize
        self.complex_itemsize = 2 * self.itemsize if self.real else self.itemsize
        self.extent = tuple(d * (k - 1) + 1 for k, d in zip(spec.kernel_size, spec.dilation))
        cap, previous, smallest = None, None, None
        while True:
            self.block_outputs, self.lengths = fft_blocks(spec.padded_size, self.extent, spec.stride,
                                                          spec.output_size, max_length=cap)
            if self._choose_counts():
                return
            smallest = min(smallest or self.workspace_bytes, self.workspace_bytes)
            if self.lengths == previous or max(self.lengths) <= _FFT_SHORTEST:
                break  # the kernel allows no shorter blocks
            # Even one row of blocks of one sample with one filter is over the limit: shorter blocks.
            cap, previous = max(_FFT_SHORTEST, max(self.lengths) // 2), self.lengths
        self.workspace_bytes = smallest  # what the refusal reports: the least any blocking needs

    def _choose_counts(self) -> bool:
        spec = self.spec
        self.block_counts = tuple(-(-o // b) for o, b in zip(spec.output_size, self.block_outputs))
        self.reach = tuple((count * b - 1) * st + e for count, b, st, e in
                           zip(self.block_counts, self.block_outputs, spec.stride, self.extent))
        points = prod(self.lengths[:-1]) * (self.lengths[-1] // 2 + 1) if self.real else prod(self.lengths)
        spectrum, extended = points * self.complex_itemsize, prod(self.lengths) * self.itemsize
        row_blocks = prod(self.block_counts[1:])  # blocks in one row along the first axis
        grown = any(r > size for r, size in zip(self.reach, spec.padded_size))
        self.grows = grown
        # Bytes per (sample, row of blocks), per (sample, row, filter), per filter, and fixed per sample.
        per_row = spec.in_channels * row_blocks * (spectrum + 2 * extended)
        per_product = spec.groups * row_blocks * (2 * spectrum + extended + prod(self.block_outputs) * self.itemsize)
        per_kernel = spec.groups * spec.in_channels_per_group * (spectrum + 2 * extended)
        if grown:  # a row's input, copied into zeros that reach as far as its blocks
            step = self.block_outputs[0] * spec.stride[0]
            per_row += spec.in_channels * (step + self.extent[0]) * prod(self.reach[1:]) * self.itemsize
        per_sample = 0
        all_filters, all_rows, limit = spec.out_channels_per_group, self.block_counts[0], self.limit
        self.kernels_cached = all_filters * per_kernel <= limit // 2
        fixed_kernels, kernel_each = (all_filters * per_kernel, 0) if self.kernels_cached else (0, per_kernel)

        def total(samples: int, rows: int, filters: int) -> int:
            return (samples * (per_sample + rows * (per_row + filters * per_product))
                    + fixed_kernels + filters * kernel_each)

        samples, rows, filters = max(1, spec.batch), all_rows, all_filters
        if total(samples, rows, filters) > limit:  # fewer samples; then fewer filters; then fewer rows
            samples = max(1, (limit - total(0, rows, filters)) // max(1, total(1, rows, filters) - total(0, rows, filters)))
            if total(samples, rows, filters) > limit:
                filters = max(1, (limit - total(1, rows, 0)) // max(1, total(1, rows, 1) - total(1, rows, 0)))
                if total(samples, rows, filters) > limit:
                    rows = max(1, (limit - total(1, 0, 1)) // max(1, total(1, 1, 1) - total(1, 0, 1)))
        self.samples, self.rows, self.filters = samples, rows, filters
        self.workspace_bytes = total(samples, rows, filters)
        self.fits = self.workspace_bytes <= limit
        return self.fits

    def slabs(self, padded: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` of the overlapping slabs of some samples: ``(nb, G*C, r1-r0, *blocks[1:], *slab)``.

        A view where the blocks stay inside the input. Every block is full:
        where the last blocks reach past the input, the rows' input is copied
        into zeros first; those zeros feed only outputs that
        :meth:`valid_outputs` crops.
        """
        spec = self.spec
        slab_sizes = [(b - 1) * st + e for b, st, e in zip(self.block_outputs, spec.stride, self.extent)]
        step = self.block_outputs[0] * spec.stride[0]
        start, stop = r0 * step, (r1 - 1) * step + slab_sizes[0]
        padded = padded[:, :, start:stop]
        if self.grows:
            grown = np.zeros((*padded.shape[:2], stop - start, *(max(r, size) for r, size in
                                                                   zip(self.reach[1:], spec.padded_size[1:]))),
                             dtype=padded.dtype)
            grown[(Ellipsis, *(slice(0, size) for size in padded.shape[2:]))] = padded
            padded = grown
        spatial_strides = padded.strides[2:]
        return np.lib.stride_tricks.as_strided(
            padded, shape=(*padded.shape[:2], r1 - r0, *self.block_counts[1:], *slab_sizes),
            strides=(*padded.strides[:2], *(b * st * step for b, st, step in zip(self.block_outputs, spec.stride,
                                                                                  spatial_strides)),
                     *spatial_strides),
            writeable=False)

    def output_rows(self, r0: int, r1: int) -> tuple[int, int]:
        """The outputs along the first axis that rows ``r0:r1`` of blocks give."""
        per_block, size = self.block_outputs[0], self.spec.output_size[0]
        return r0 * per_block, min(size, r1 * per_block)

    def valid_outputs(self, circular: np.ndarray, first_rows: int) -> np.ndarray:
        """The outputs in circular results ``(..., *blocks, *lengths)``: ``(..., first_rows, *output_size[1:])``."""
        spec, rank = self.spec, self.spec.rank
        valid = circular[(Ellipsis, *(slice(e - 1, e - 1 + (b - 1) * st + 1, st)
                                      for e, b, st in zip(self.extent, self.block_outputs, spec.stride)))]
        # (..., *blocks, *block_outputs) -> (..., blocks_1, outputs_1, blocks_2, ...) -> crop
        lead = valid.ndim - 2 * rank
        interleaved = valid.transpose(*range(lead), *itertools.chain.from_iterable(
            (lead + i, lead + rank + i) for i in range(rank)))
        full = interleaved.reshape(*valid.shape[:lead], *(count * b for count, b in zip(valid.shape[lead:lead + rank],
                                                                                     self.block_outputs)))
        return full[(Ellipsis, slice(0, first_rows), *(slice(0, o) for o in spec.output_size[1:]))]


#: Blocks are at least this long (a shorter transform costs more in call overhead than it saves).
FFT_MIN_BLOCK = 128
#: Blocking must save at least this fraction of the work per output to be worth its extra calls.
FFT_BLOCK_GAIN = 0.85
#: The shortest transform the workspace limit may ask for (below it, the calls' overhead dominates).
_FFT_SHORTEST = 16


def fft_blocks(padded_size: tuple[int, ...], extent: tuple[int, ...], stride: tuple[int, ...],
               output_size: tuple[int, ...], max_length: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per axis, how many outputs one FFT block yields and the transform length it uses.

    An axis is transformed whole (one block) unless a shorter fast length ``L``
    does less work per output: ``L log L / B`` with ``B = (L - k_eff) // stride + 1``
    outputs per block, at most :data:`FFT_BLOCK_GAIN` of the whole axis's.
    ``max_length`` (the workspace limit's) caps ``L`` where the kernel allows:
    a block must hold at least one output, ``L >= k_eff``.

    >>> fft_blocks((100_000,), (501,), (1,), (99_500,))
    ((3550,), (4050,))
    >>> fft_blocks((64, 64), (5, 5), (1, 1), (60, 60))  # short axes stay whole
    ((60, 60), (64, 64))
    >>> fft_blocks((64, 64), (5, 5), (1, 1), (60, 60), max_length=32)
    ((28, 28), (32, 32))
    """
    import scipy.fft

    blocks, lengths = [], []
    for size, e, st, o in zip(padded_size, extent, stride, output_size):
        whole = scipy.fft.next_fast_len(size, real=True)
        cap = whole if max_length is None else max(max_length, e)
        best_cost, best = whole * np.log2(max(whole, 2)) / max(o, 1) * FFT_BLOCK_GAIN, (o, whole)
        if whole > cap:
            best_cost, best = float("inf"), None
        length = scipy.fft.next_fast_len(max(min(FFT_MIN_BLOCK, cap), 2 * e if 2 * e <= cap else e), real=True)
        while length < whole and length <= cap:
            outputs = (length - e) // st + 1
            cost = length * np.log2(max(length, 2)) / outputs
            if cost < best_cost:
                best_cost, best = cost, (min(outputs, o), length)
            length = scipy.fft.next_fast_len(length + 1, real=True) if length < 4 * e else \
                scipy.fft.next_fast_len(2 * length, real=True)
        if best is None:  # no fast length fits under the cap: the cap itself
            best = (min((cap - e) // st + 1, o), cap)
        blocks.append(best[0])
        lengths.append(best[1])
    return tuple(blocks), tuple(lengths)


def transform_length(spec: ConvSpec) -> int:
    """The FFT's transform length for ``spec``, as its cost model takes it (the planner's error estimate's ``L``)."""
    import scipy.fft

    return prod(scipy.fft.next_fast_len(size, real=True) for size in spec.padded_size)
