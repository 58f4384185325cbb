"""The input gradient of an algorithm with two formulations of it: its own forward on grad_output, or the
forward's windows written back.

Differentiating ``y[n, o, p] = sum_{c, j} x_p[n, c, p*s + j*d] * k[o, c, j]``,
each padded input cell collects every output that read it::

    dx_p[n, c, q] = sum_{o, p, j : p*s + j*d = q} g[n, o, p] * k[o, c, j]

- "full": at stride 1 that is ``sum_{o, j} g[n, o, q - j*d] * k[o, c, j]``, a
  correlation of grad_output, padded by the dilated kernel's extent less one,
  with the kernel reversed and each group's input and output channels
  swapped: the algorithm's own forward. The padding zeros it multiplies are
  harmless, except times an inf or NaN in the kernel.
- "scatter": each window's gradient added back where the forward read it;
  only real products are summed, at any stride.

An algorithm with both (:class:`FullOrScatter`) implements
``_input_grad_full`` and ``_input_grad_scatter``; the choice between them is
made here, once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._dtypes import all_finite
from ..spec import ConvSpec
from . import Formulation
from ._blocking import stride_one

__all__ = ["FullOrScatter", "full_padding", "channels_swapped"]


def channels_swapped(kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The kernel with input and output channels swapped per group, ``(G*O, C, *kernel)`` -> ``(G*C, O,
    *kernel)`` (a copy where the swap is not a view): the filters of the correlations that give the input
    gradient ("full" and "phases", in the engine and in an algorithm's own ``_input_grad_full``).

    >>> import convolab as cl
    >>> spec = cl.conv_spec((1, 4, 5, 5), (6, 2, 3, 3), groups=2)  # 2 groups of 3 filters over 2 channels
    >>> kernel = np.arange(6 * 2 * 3 * 3.).reshape(6, 2, 3, 3)
    >>> swapped = channels_swapped(kernel, spec)
    >>> swapped.shape, bool((swapped[3, 1] == kernel[4, 1]).all())  # group 1's channel 1, its filter 1
    ((4, 3, 3, 3), True)
    """
    grouped = kernel.reshape(spec.groups, spec.out_channels_per_group, spec.in_channels_per_group, *spec.kernel_size)
    return grouped.swapaxes(1, 2).reshape(spec.in_channels, spec.out_channels_per_group, *spec.kernel_size)


def full_padding(spec: ConvSpec) -> tuple[tuple[int, int], ...] | None:
    """The padding of grad_output for the "full" formulation (the dilated kernel's extent less one, less the
    forward's zero padding, so that only the input's cells come out), or None where the forward's zero padding
    is wider than that, so that the cells would need cropping."""
    zeros = spec.padding_mode == "zeros"
    extents = [d * (k - 1) for k, d in zip(spec.kernel_size, spec.dilation)]
    padding = tuple((e - low, e - high) if zeros else (e, e) for e, (low, high) in zip(extents, spec.padding))
    return padding if min(min(pair) for pair in padding) >= 0 else None


class FullOrScatter:
    """Mixin for an :class:`~convolab.algorithms.Algorithm` whose input gradient has both formulations
    (``_input_grad_full`` and ``_input_grad_scatter``): "full" at stride 1 with a finite kernel where the
    padding fits the kernel, else "scatter"."""

    def pass_formulation(self, name: str, spec: ConvSpec, dtype: np.dtype, *, finite: bool = True,
                         asked: bool = False) -> Formulation | str:
        if name != "input_grad":
            return super().pass_formulation(name, spec, dtype, finite=finite, asked=asked)  # type: ignore[misc]
        if not stride_one(spec):
            formulation, why = "scatter", f"stride {spec.stride}: the full correlation would read spread zeros"
        elif not finite:
            formulation, why = "scatter", "the weight holds inf or NaN, which the full correlation would multiply " \
                                          "by its padding zeros"
        elif full_padding(spec) is None:
            formulation, why = "scatter", "the padding is wider than the kernel reaches: the full correlation " \
                                          "would need cropping"
        else:
            formulation, why = "full", "stride 1: its own forward on grad_output"
        return Formulation(formulation, why, (("formulation", formulation),))

    def input_grad(self, grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec, *,
                   formulation: str | None = None) -> np.ndarray:
        """The gradient with respect to the input, ``(N, C_in, *input)``, for the oriented ``kernel``.

        ``formulation``: "full" (``_input_grad_full``) or "scatter"
        (``_input_grad_scatter``), as the plan says; None: as
        :meth:`pass_formulation` says for this kernel.
        """
        if formulation is None:
            chosen: Any = self.pass_formulation("input_grad", spec, kernel.dtype, finite=all_finite(kernel))
            formulation = dict(chosen.options)["formulation"]
        if formulation == "full":
            return self._input_grad_full(grad_output, kernel, spec)  # type: ignore[attr-defined]
        return self._input_grad_scatter(grad_output, kernel, spec)  # type: ignore[attr-defined]
