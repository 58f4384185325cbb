"""A deterministic generator of small, always-valid convolution problems.

Differential tests (against PyTorch, SciPy, NumPy, or one algorithm against
another) and gradient tests share this module: each :class:`ConvCase` is one
call of ``convolab.conv``, with its arguments in exactly the loose forms the
public API accepts (an int or a tuple, a padding string, a mode alias), plus
helpers that resolve them independently of convolab (so the tests do not check
the library against itself).

Typical use::

    from conv_cases import generate_cases

    CASES = generate_cases(300)

    @pytest.mark.parametrize("case", CASES, ids=str)
    def test_something(case):
        x, w, b = case.arrays(np.float64)
        out = cl.conv(x, w, b, **case.kwargs())
        ...

Coverage. :func:`generate_cases` walks a seeded shuffle of every
``(rank, padding kind, padding mode)`` combination, so any ``count`` at least
``len(ranks) * len(padding_kinds) * len(modes)`` (168 with the defaults) holds
each combination at least once. On top of that, fixed residues of the case
index force unbatched inputs, empty batches (N=0), depthwise groups, dilation,
and bias; everything else (sizes, kernel, stride, channels) is drawn at random.
Case ``i`` depends only on ``(seed, i)`` and the combination list, so
``generate_cases(100)`` is a prefix of ``generate_cases(300)``.

Sizes are kept small (spatial sizes up to 12 in 1-d, 9 in 2-d, 6 in 3-d;
channels up to 6; kernels up to 5/4/3 taps) so that even the one-element-at-a-time
``"direct"`` algorithm runs hundreds of cases in seconds.

>>> cases = generate_cases(5, ranks=(2,), modes=("zeros",))
>>> len(cases), all(c.rank == 2 for c in cases)
(5, True)
>>> x, w, b = cases[0].arrays(np.float32, rng=0)
>>> x.shape == cases[0].input_shape and w.shape == cases[0].weight_shape
True
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from math import prod
from typing import Any, Sequence, Union

import numpy as np

__all__ = [
    "ConvCase",
    "generate_cases",
    "reference_conv",
    "PADDING_KINDS",
    "PADDING_MODES",
    "CANONICAL_MODES",
    "CANONICAL_MODE",
    "NUMPY_PAD_MODE",
    "resolve_padding",
    "same_padding",
]

#: The kinds of ``padding`` argument the generator produces.
#:
#: ``int``: one int for every side; ``per_dim``: one int per spatial dimension;
#: ``pairs``: one ``(low, high)`` pair per dimension (asymmetric somewhere,
#: sometimes mixed with plain ints); ``valid``/``same``/``full``: the strings,
#: ``same`` at stride 1; ``same_strided``: ``"same"`` with stride > 1 somewhere.
PADDING_KINDS = ("int", "per_dim", "pairs", "valid", "same", "same_strided", "full")

#: Every ``padding_mode`` name convolab accepts (PyTorch's, then NumPy's aliases).
PADDING_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric", "constant", "edge", "wrap")

#: The five distinct padding behaviours.
CANONICAL_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")

#: Any accepted mode name to its canonical (PyTorch, or "symmetric") name.
CANONICAL_MODE = {
    "zeros": "zeros",
    "constant": "zeros",
    "reflect": "reflect",
    "replicate": "replicate",
    "edge": "replicate",
    "circular": "circular",
    "wrap": "circular",
    "symmetric": "symmetric",
}

#: Any accepted mode name to the ``numpy.pad`` mode that fills the same cells.
NUMPY_PAD_MODE = {name: {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                         "circular": "wrap", "symmetric": "symmetric"}[canon]
                  for name, canon in CANONICAL_MODE.items()}

Padding = Union[int, str, tuple]

_MAX_SIZE = {1: 12, 2: 9, 3: 6}
_MAX_KERNEL = {1: 5, 2: 4, 3: 3}
_MAX_PAD = {1: 3, 2: 3, 3: 2}
_MAX_CHANNELS = 6


def _as_tuple(value: int | Sequence[int], rank: int) -> tuple[int, ...]:
    return (int(value),) * rank if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """The ``(low, high)`` padding of ``padding="same"``, written out from its definition.

    Output size ``ceil(size / stride)``; total padding
    ``max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)``; the odd
    unit on the high side (TensorFlow/JAX).

    >>> same_padding(6, 4), same_padding(7, 3, stride=2), same_padding(5, 2, stride=2)
    ((1, 2), (1, 1), (0, 1))
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return (total // 2, total - total // 2)


def resolve_padding(padding: Padding, input_size: Sequence[int], kernel_size: Sequence[int],
                    stride: Sequence[int], dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Any accepted ``padding`` argument as one ``(low, high)`` pair per dimension.

    >>> resolve_padding((1, (0, 2)), (5, 5), (3, 3), (1, 1), (1, 1))
    ((1, 1), (0, 2))
    >>> resolve_padding("full", (5,), (3,), (1,), (2,))
    ((4, 4),)
    """
    rank = len(input_size)
    if padding == "valid":
        return ((0, 0),) * rank
    if padding == "full":
        return tuple((d * (k - 1),) * 2 for k, d in zip(kernel_size, dilation))
    if padding == "same":
        return tuple(same_padding(i, k, s, d) for i, k, s, d in zip(input_size, kernel_size, stride, dilation))
    if isinstance(padding, (int, np.integer)):
        return ((int(padding), int(padding)),) * rank
    return tuple((int(p), int(p)) if isinstance(p, (int, np.integer)) else (int(p[0]), int(p[1])) for p in padding)


def _mode_allows(mode: str, pairs: Sequence[tuple[int, int]], input_size: Sequence[int]) -> bool:
    """Whether ``mode`` can fill ``pairs`` of padding around an input of ``input_size``.

    reflect does not repeat the edge, so it needs ``pad < size``; circular and
    symmetric may wrap or mirror once, ``pad <= size`` (PyTorch's rules, which
    convolab follows).
    """
    canon = CANONICAL_MODE[mode]
    for (low, high), size in zip(pairs, input_size):
        largest = max(low, high)
        if largest == 0 or canon in ("zeros", "replicate"):
            continue
        if canon == "reflect" and largest >= size:
            return False
        if canon in ("circular", "symmetric") and largest > size:
            return False
    return True


@dataclass(frozen=True)
class ConvCase:
    """One convolution problem: the arguments of a ``convolab.conv`` call, minus the arrays.

    ``stride``, ``padding`` and ``dilation`` are stored exactly as they are passed
    to ``convolab.conv`` (an int, a tuple, ``(low, high)`` pairs, or a string);
    :attr:`strides`, :attr:`dilations` and :attr:`padding_pairs` give them
    resolved per dimension. ``batch`` is 1 when ``batched`` is False (the input
    then has no batch axis).
    """

    rank: int
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: int | tuple[int, ...]
    padding: Padding
    dilation: int | tuple[int, ...]
    padding_mode: str = "zeros"
    bias: bool = False
    batched: bool = True

    # -- resolved arguments -------------------------------------------------

    @property
    def strides(self) -> tuple[int, ...]:
        return _as_tuple(self.stride, self.rank)

    @property
    def dilations(self) -> tuple[int, ...]:
        return _as_tuple(self.dilation, self.rank)

    @property
    def padding_pairs(self) -> tuple[tuple[int, int], ...]:
        """``(low, high)`` per dimension, resolved from the definitions (not by convolab)."""
        return resolve_padding(self.padding, self.input_size, self.kernel_size, self.strides, self.dilations)

    @property
    def padding_kind(self) -> str:
        """One of :data:`PADDING_KINDS`."""
        if isinstance(self.padding, str):
            if self.padding == "same" and any(s > 1 for s in self.strides):
                return "same_strided"
            return self.padding
        if isinstance(self.padding, (int, np.integer)):
            return "int"
        if all(isinstance(p, (int, np.integer)) for p in self.padding):
            return "per_dim"
        return "pairs"

    @property
    def canonical_mode(self) -> str:
        """``padding_mode`` with NumPy aliases resolved: one of :data:`CANONICAL_MODES`."""
        return CANONICAL_MODE[self.padding_mode]

    @property
    def numpy_pad_mode(self) -> str:
        """The ``numpy.pad`` mode that fills padding as ``padding_mode`` does."""
        return NUMPY_PAD_MODE[self.padding_mode]

    @property
    def padded_size(self) -> tuple[int, ...]:
        return tuple(i + lo + hi for i, (lo, hi) in zip(self.input_size, self.padding_pairs))

    @property
    def dilated_kernel_size(self) -> tuple[int, ...]:
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilations))

    @property
    def output_size(self) -> tuple[int, ...]:
        """``floor((in + lo + hi - d*(k-1) - 1) / s) + 1`` per dimension."""
        return tuple((p - e) // s + 1 for p, e, s in zip(self.padded_size, self.dilated_kernel_size, self.strides))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """As passed: ``(N, C_in, *size)``, or ``(C_in, *size)`` when not batched."""
        lead = (self.batch,) if self.batched else ()
        return (*lead, self.in_channels, *self.input_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """As returned: ``(N, C_out, *out)``, or ``(C_out, *out)`` when not batched."""
        lead = (self.batch,) if self.batched else ()
        return (*lead, self.out_channels, *self.output_size)

    @property
    def terms_per_output(self) -> int:
        """Products summed into each output element: ``C_in/groups * prod(kernel)``."""
        return (self.in_channels // self.groups) * prod(self.kernel_size)

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.in_channels and self.groups > 1

    # -- the call -----------------------------------------------------------

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``convolab.conv`` (everything but the arrays)."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode)

    def arrays(self, dtype: Any = np.float64, rng: np.random.Generator | int | None = None,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(input, weight, bias or None)`` of ``dtype``, C-contiguous.

        Floats are standard normal (float16 rounded from it); complex dtypes
        have normal real and imaginary parts; signed integers are drawn from
        ``[-4, 4]`` and unsigned from ``[0, 4]``, small enough that every result
        is exact in float64 too. ``rng`` may be a Generator, a seed, or None
        for a seed derived from :attr:`id` (the same arrays every run).
        """
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(zlib.crc32(self.id.encode()) if rng is None else rng)
        dtype = np.dtype(dtype)

        def draw(shape: tuple[int, ...]) -> np.ndarray:
            if dtype.kind == "f":
                return rng.standard_normal(shape).astype(dtype)
            if dtype.kind == "c":
                return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
            if dtype.kind == "i":
                return rng.integers(-4, 5, size=shape).astype(dtype)
            if dtype.kind == "u":
                return rng.integers(0, 5, size=shape).astype(dtype)
            raise TypeError(f"no values for dtype {dtype}")

        x, w = draw(self.input_shape), draw(self.weight_shape)
        b = draw((self.out_channels,)) if self.bias else None
        return x, w, b

    # -- naming -------------------------------------------------------------

    @property
    def id(self) -> str:
        """A readable, stable name, e.g. ``2d-n2-c4o6g2-i7x5-k3x2-s2x1-d1x2-p(1,0)(0,2)-reflect-bias``."""
        join = lambda values: "x".join(map(str, values))  # noqa: E731
        parts = [f"{self.rank}d", f"n{self.batch}" if self.batched else "unbatched",
                 f"c{self.in_channels}o{self.out_channels}g{self.groups}",
                 f"i{join(self.input_size)}", f"k{join(self.kernel_size)}",
                 f"s{join(self.strides)}", f"d{join(self.dilations)}"]
        if isinstance(self.padding, str):
            parts.append(f"p{self.padding}")
        elif isinstance(self.padding, (int, np.integer)):
            parts.append(f"p{self.padding}")
        else:
            parts.append("p" + "".join(f"{p}" if isinstance(p, (int, np.integer)) else f"({p[0]},{p[1]})"
                                       for p in self.padding) if self.padding_kind == "pairs"
                         else f"p{join(self.padding)}")
        parts.append(self.padding_mode)
        if self.bias:
            parts.append("bias")
        return "-".join(parts)

    def __str__(self) -> str:
        return self.id


def reference_conv(case: ConvCase, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                   flip: bool = False) -> np.ndarray:
    """``case``'s convolution in plain NumPy (``numpy.pad`` + windows + ``einsum``).

    Independent of convolab, for small problems. Computed in the arrays' dtype
    (cast integers and float16 first if exactness or accuracy matters).
    """
    rank = case.rank
    batched_x = x if case.batched else x[np.newaxis]
    pairs = case.padding_pairs
    widths = [(0, 0), (0, 0), *pairs]
    if any(lo or hi for lo, hi in pairs):
        batched_x = np.pad(batched_x, widths, mode=case.numpy_pad_mode)
    if flip:
        w = w[(Ellipsis, *([slice(None, None, -1)] * rank))]
    n, g = batched_x.shape[0], case.groups
    cpg, opg = case.in_channels // g, case.out_channels // g
    out = np.zeros((n, case.out_channels, *case.output_size),
                   dtype=np.result_type(batched_x, w))
    for j in np.ndindex(*case.kernel_size):  # one kernel tap at a time
        start = [jj * d for jj, d in zip(j, case.dilations)]
        window = batched_x[(Ellipsis, *(slice(st, st + (o - 1) * s + 1, s)
                                        for st, o, s in zip(start, case.output_size, case.strides)))]
        window = window.reshape(n, g, cpg, *case.output_size)
        tap = w[(Ellipsis, *j)].reshape(g, opg, cpg)
        out += np.einsum("ngc...,goc->ngo...", window, tap).reshape(out.shape)
    if b is not None:
        out += b.reshape(-1, *([1] * rank))
    return out if case.batched else out[0]


def _maybe_scalar(values: tuple[int, ...], rng: np.random.Generator) -> int | tuple[int, ...]:
    """An int when every dimension agrees and a coin says so; the tuple otherwise."""
    if len(set(values)) == 1 and rng.random() < 0.5:
        return values[0]
    return values


def _draw_padding(kind: str, rank: int, rng: np.random.Generator) -> Padding:
    top = _MAX_PAD[rank]
    if kind == "int":
        return int(rng.integers(0, top + 1))
    if kind == "per_dim":
        return tuple(int(v) for v in rng.integers(0, top + 1, size=rank))
    if kind == "pairs":
        while True:
            pairs = [tuple(int(v) for v in rng.integers(0, top + 1, size=2)) for _ in range(rank)]
            if any(lo != hi for lo, hi in pairs):
                break
        if rank > 1 and rng.random() < 0.3:  # mixed form, e.g. (1, (0, 2))
            dim = int(rng.integers(rank))
            if pairs[dim][0] == pairs[dim][1]:
                return tuple(p[0] if i == dim else p for i, p in enumerate(pairs))
        return tuple(pairs)
    return "same" if kind == "same_strided" else kind


def _draw_case(rng: np.random.Generator, rank: int, kind: str, mode: str, *, unbatched: bool,
               empty_batch: bool, depthwise: bool, dilated: bool, bias: bool) -> ConvCase:
    for _ in range(10_000):
        if depthwise:
            in_channels = int(rng.integers(2, 5))
            groups = in_channels
            out_channels = in_channels * (int(rng.integers(1, 3)) if in_channels <= 3 else 1)
        else:
            groups = int(rng.choice([1, 1, 1, 2, 3]))
            per_in = int(rng.integers(1, _MAX_CHANNELS // groups + 1))
            per_out = int(rng.integers(1, _MAX_CHANNELS // groups + 1))
            in_channels, out_channels = groups * per_in, groups * per_out
        input_size = tuple(int(v) for v in rng.integers(1, _MAX_SIZE[rank] + 1, size=rank))
        kernel_size = tuple(int(v) for v in rng.integers(1, _MAX_KERNEL[rank] + 1, size=rank))
        if dilated:
            dilations = tuple(int(v) for v in rng.choice([1, 2, 3], size=rank))
            if max(dilations) == 1:
                continue
        else:
            dilations = (1,) * rank
        if kind == "same":
            strides = (1,) * rank
        else:
            strides = tuple(int(v) for v in rng.choice([1, 1, 2, 3], size=rank))
            if kind == "same_strided" and max(strides) == 1:
                continue
        padding = _draw_padding(kind, rank, rng)
        pairs = resolve_padding(padding, input_size, kernel_size, strides, dilations)
        extent = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilations)]
        if any(i + lo + hi < e for i, (lo, hi), e in zip(input_size, pairs, extent)):
            continue  # the dilated kernel must fit the padded input
        if not _mode_allows(mode, pairs, input_size):
            continue
        if kind != "valid" and CANONICAL_MODE[mode] != "zeros" and not any(lo or hi for lo, hi in pairs):
            continue  # a padding mode with nothing to pad tests nothing
        return ConvCase(
            rank=rank, batch=1 if unbatched else (0 if empty_batch else int(rng.integers(1, 4))),
            in_channels=in_channels, out_channels=out_channels, groups=groups,
            input_size=input_size, kernel_size=kernel_size,
            stride=_maybe_scalar(strides, rng), padding=padding, dilation=_maybe_scalar(dilations, rng),
            padding_mode=mode, bias=bias, batched=not unbatched,
        )
    raise RuntimeError(f"no valid case found for rank={rank} kind={kind} mode={mode}")  # pragma: no cover


def generate_cases(count: int, seed: int = 0, ranks: Sequence[int] = (1, 2, 3),
                   modes: Sequence[str] = PADDING_MODES,
                   padding_kinds: Sequence[str] = PADDING_KINDS) -> list[ConvCase]:
    """``count`` varied, small, valid convolution problems, the same ones every run.

    Parameters
    ----------
    count : int
        How many cases.
    seed : int
        Different seeds give different cases.
    ranks : sequence of int
        Spatial ranks to draw from (1, 2 and/or 3).
    modes : sequence of str
        ``padding_mode`` names to use (any of :data:`PADDING_MODES`).
    padding_kinds : sequence of str
        Which of :data:`PADDING_KINDS` to use.

    Every ``(rank, padding kind, mode)`` combination appears once per
    ``len(ranks) * len(padding_kinds) * len(modes)`` consecutive cases. Within
    each, case ``i`` is unbatched when ``i % 11 == 5``, has an empty batch (N=0)
    when ``i % 13 == 7``, is depthwise (``groups == C_in``) when ``i % 5 == 2``,
    has dilation > 1 somewhere when ``i % 3 == 1``, and has a bias when ``i`` is
    even.
    """
    for rank in ranks:
        if rank not in _MAX_SIZE:
            raise ValueError(f"rank must be 1, 2 or 3, got {rank}")
    for mode in modes:
        if mode not in CANONICAL_MODE:
            raise ValueError(f"unknown padding mode {mode!r}")
    for kind in padding_kinds:
        if kind not in PADDING_KINDS:
            raise ValueError(f"unknown padding kind {kind!r}")
    combos = [(rank, kind, mode) for rank in ranks for kind in padding_kinds for mode in modes]
    order = np.random.default_rng([seed, 0xC0DE]).permutation(len(combos))
    cases = []
    for i in range(count):
        rank, kind, mode = combos[order[i % len(combos)]]
        rng = np.random.default_rng([seed, i])
        cases.append(_draw_case(
            rng, rank, kind, mode,
            unbatched=i % 11 == 5, empty_batch=i % 13 == 7, depthwise=i % 5 == 2,
            dilated=i % 3 == 1, bias=i % 2 == 0,
        ))
    return cases
