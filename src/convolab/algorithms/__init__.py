"""Convolution algorithms behind one interface, and the registry the planner chooses from.

Every algorithm solves the same *valid* problem: the input is already padded
(by :func:`convolab._window.pad`) and the kernel already oriented (flipped or
not, decided once in :mod:`convolab._engine`). Its forward pass gets

- ``padded``: ``(N, C_in, *padded_size)`` in the accumulation dtype,
- ``kernel``: ``(C_out, C_in/groups, *kernel_size)`` in the same dtype,
- ``spec``: the frozen :class:`~convolab.spec.ConvSpec` (stride, dilation, groups),

and returns ``(N, C_out, *output_size)`` in that dtype. A *problem* is a spec
and a dtype; for one, each algorithm says

- :meth:`Algorithm.why_not`: why it cannot run it (``None`` if it can), so a
  caller asking for one by name gets a reason rather than a wrong answer;
- :meth:`Algorithm.estimate`: its cost model, the seconds it would take on the
  reference machine (the planner compares these, and never reads an
  algorithm's private helpers);
- :meth:`Algorithm.workspace_bytes`: the scratch memory it would use;

and it implements the passes named in :attr:`Algorithm.passes`: the forward
(:meth:`Algorithm.run`), and optionally its own input gradient
(:meth:`Algorithm.input_grad`) and weight gradient (:meth:`Algorithm.weight_grad`).
For a gradient pass, :meth:`Algorithm.pass_formulation` says how it would run
the problem (or why it should not), so that the planner
(:mod:`convolab.planner`) decides every pass in one place and reports it.

Modules: :mod:`.reference` ("direct", "im2col"), :mod:`.gemm`, :mod:`.folded`,
:mod:`.shifted`, :mod:`.depthwise`, :mod:`.winograd` ("winograd2",
"winograd3", "winograd4"), :mod:`.fft`, :mod:`.compiled` (compiled loops: Numba, imported
on first use through :mod:`._compiled`), :mod:`.packed` (gemm's columns and
products in compiled jobs on the thread pool, no BLAS), :mod:`.space_to_batch` (a dilated problem's phases
as one undilated Winograd problem), :mod:`.row_shifts` (the last axis unrolled, the
other axes' taps as shifts of whole rows); shared support in :mod:`._blocking` (unrolled
columns in blocks of bounded size), :mod:`._threads` (the thread pool, and the
compiled kernels' job runner), :mod:`._kernel_layout` (the arrays the compiled
kernels take) and :mod:`._rates` (the reference machine's rates).

Adding an algorithm is writing one module and registering it; nothing else
changes. ``algorithm=`` accepts its name at once, and "auto" and "measure"
consider it when it is ``automatic`` (which needs an :meth:`~Algorithm.estimate`).
A built-in one is registered in the list at the end of this file; anyone else's
with :func:`register`:

>>> from math import prod
>>> import numpy as np
>>> import convolab as cl
>>> from convolab._window import sliding_windows
>>> from convolab.algorithms import Algorithm, register, unregister
>>> class Einsum(Algorithm):
...     '''Every window against every filter of its group, in one einsum.'''
...     name = "einsum"
...     def run(self, padded, kernel, spec):
...         windows = sliding_windows(padded, spec.kernel_size, spec.stride, spec.dilation)  # (N, C_in, *out, *k)
...         g, c, o = spec.groups, spec.in_channels_per_group, spec.out_channels_per_group
...         windows = windows.reshape(spec.batch, g, c, prod(spec.output_size), prod(spec.kernel_size))
...         out = np.einsum("ngcpk,gock->ngop", windows, kernel.reshape(g, o, c, -1))
...         return out.reshape(spec.output_shape)
>>> einsum = register(Einsum())
>>> x, w = np.arange(16.0).reshape(1, 1, 4, 4), np.ones((1, 1, 3, 3))
>>> cl.conv2d(x, w, algorithm="einsum").tolist()
[[[[45.0, 54.0], [81.0, 90.0]]]]
>>> unregister("einsum")

Axis legend used in the comments: N batch, G groups, C input channels per
group, O output channels per group, P output positions (product of ``*out``),
K kernel taps (product of ``*kernel``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from .._errors import fail
from .._window import pad
from ..spec import ConvSpec

__all__ = ["Algorithm", "Formulation", "Direct", "Im2col", "Gemm", "Folded", "Shifted", "Depthwise", "Winograd", "FFT",
           "Compiled", "SpaceToDepth", "Packed", "SpaceToBatch", "RowShifts", "Broadcast", "FillsZeroPadding",
           "ALGORITHMS", "PASSES", "register", "unregister", "on_registry_change", "algorithm_choices", "check_algorithm_name",
           "select_algorithm",
           # helpers other modules use
           "CACHE_BLOCK_BYTES", "depthwise_threads", "fft_blocks", "transform_length", "unroll", "filter_matrix",
           "fold_product", "add_bias"]

#: The passes an algorithm may implement.
PASSES = ("forward", "input_grad", "weight_grad")


def add_bias(out: np.ndarray, bias: np.ndarray | None, spec: ConvSpec) -> np.ndarray:
    """``out`` ``(N, C_out, *out)``, a forward's own result, plus ``bias`` ``(C_out,)`` (or None), in place."""
    if bias is not None:
        out += bias.reshape(-1, *([1] * spec.rank))
    return out


@dataclass(frozen=True)
class Formulation:
    """How an algorithm's pass would run one problem: what it does, why, and what the planner passes it.

    ``options`` are keyword arguments of the pass method (:meth:`Algorithm.input_grad`,
    :meth:`Algorithm.weight_grad`), as ``(name, value)`` pairs so that a plan stays hashable.
    """

    detail: str
    reason: str
    options: tuple[tuple[str, Any], ...] = ()


class Algorithm:
    """One way of computing a convolution: what it can run, what that costs, and its passes.

    Subclasses set :attr:`name` and implement :meth:`run`; the rest is optional.
    """

    #: The name ``algorithm=`` takes.
    name: ClassVar[str]
    #: The passes it implements (of :data:`PASSES`): always the forward; its own gradients where it has them.
    passes: ClassVar[frozenset[str]] = frozenset({"forward"})
    #: Whether "auto" and "measure" consider it (then it needs :meth:`estimate`); the others run only by name.
    automatic: ClassVar[bool] = False
    #: Whether one input value reaches outputs whose windows never read it (through a transform of a whole
    #: slab): an inf or NaN would spread, a large value would round every output. The planner keeps such
    #: algorithms from data where that shows (:class:`convolab.planner.DataTraits`).
    mixes_outputs: ClassVar[bool] = False

    def why_not(self, spec: ConvSpec, dtype: np.dtype) -> str | None:
        """``None`` if this algorithm can run the problem (the caller's ``dtype``), else the reason it cannot."""
        return None

    def estimate(self, spec: ConvSpec, dtype: np.dtype) -> float:
        """Its cost model: the estimated seconds of the forward on the reference machine, in the accumulation
        ``dtype``. Only the ratios between algorithms matter (:mod:`convolab.planner`)."""
        raise NotImplementedError(f"{self.name} has no cost model, so it runs only when asked for by name")

    def workspace_bytes(self, spec: ConvSpec, itemsize: int) -> int:
        """Scratch memory of the forward beyond the padded input and the output, in bytes."""
        return 0

    def pass_estimate(self, name: str, spec: ConvSpec, dtype: np.dtype) -> float | None:
        """The estimated seconds of its own gradient pass ``name``, in the units of :meth:`estimate`, or None
        where it has no cost model for that pass (the planner then runs it only under its own forward)."""
        return None

    def pass_formulation(self, name: str, spec: ConvSpec, dtype: np.dtype, *, finite: bool = True,
                         asked: bool = False) -> Formulation | str:
        """How its own gradient pass ``name`` would run the problem, or why it should not run it.

        ``finite``: whether the operand the pass multiplies by zeros that are not
        data (the weight for the input gradient, the input for the weight
        gradient) holds no inf or NaN. ``asked``: the caller named this
        algorithm; otherwise "auto" is considering it because the forward runs
        it, and it may decline where another pass would be faster. The
        formulation's reason says why it runs that way (the planner adds why
        this algorithm). The default: its pass, if it has one, as it is.
        """
        if name not in self.passes:
            return f"{self.name} has no {name.replace('_grad', '-gradient')} pass of its own"
        return Formulation("", "")

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """The forward pass on the padded input: ``(N, C_out, *output_size)``."""
        raise NotImplementedError

    def run_unpadded(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """The forward pass on the input before padding; an algorithm that can pads as it goes."""
        return self.run(pad(x, spec.padding, spec.padding_mode), kernel, spec)

    def run_unpadded_with_bias(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec,
                               bias: np.ndarray | None) -> np.ndarray:
        """:meth:`run_unpadded` plus ``bias`` ``(C_out,)`` (in ``x``'s dtype, or None) on every output position:
        here a pass of its own over the output; an algorithm whose results pass through a layout where the bias
        is cheaper to add (gemm's product rows) adds it there, each value the same one addition."""
        return add_bias(self.run_unpadded(x, kernel, spec), bias, spec)

    def input_grad(self, grad_output: np.ndarray, kernel: np.ndarray, spec: ConvSpec, **options: Any) -> np.ndarray:
        """Its own input-gradient pass (``"input_grad"`` in :attr:`passes`) for the oriented ``kernel``:
        ``(N, C_in, *input_size)``. ``options``: its :meth:`pass_formulation`'s."""
        raise NotImplementedError(f"{self.name} has no input-gradient pass of its own")

    def weight_grad(self, x: np.ndarray, grad_output: np.ndarray, spec: ConvSpec, **options: Any) -> np.ndarray:
        """Its own weight-gradient pass (``"weight_grad"`` in :attr:`passes`) on the input before padding:
        ``(G*O, C, *kernel)`` for the oriented kernel. ``options``: its :meth:`pass_formulation`'s."""
        raise NotImplementedError(f"{self.name} has no weight-gradient pass of its own")


class FillsZeroPadding(Algorithm):
    """An algorithm whose kernel reads the input before zero padding and fills the zeros itself (other padding
    modes are padded first, and the kernel then reads that array unpadded). A subclass implements
    ``_forward(source, padding, kernel, spec)``: ``source`` ``(N, G*C, *size)`` zero-padded by ``padding`` (per
    axis, ``(low, high)``)."""

    def run(self, padded: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        return self._forward(padded, ((0, 0),) * spec.rank, kernel, spec)

    def run_unpadded(self, x: np.ndarray, kernel: np.ndarray, spec: ConvSpec) -> np.ndarray:
        """:meth:`run` on the input before padding: the kernel fills zero padding itself."""
        if spec.padding_mode != "zeros":
            return super().run_unpadded(x, kernel, spec)
        return self._forward(x, spec.padding, kernel, spec)

    def _forward(self, source: np.ndarray, padding: tuple[tuple[int, int], ...], kernel: np.ndarray,
                 spec: ConvSpec) -> np.ndarray:
        raise NotImplementedError


#: Every algorithm by name, in registration order.
ALGORITHMS: dict[str, Algorithm] = {}
#: Called after every change to :data:`ALGORITHMS` (the planner forgets its plans).
_listeners: list[Callable[[], None]] = []


def on_registry_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever an algorithm is registered or unregistered."""
    _listeners.append(listener)


def register(algorithm: Algorithm) -> Algorithm:
    """Add ``algorithm`` to :data:`ALGORITHMS` under its name, and return it.

    The name must be new and not one of the planner's modes ("auto",
    "measure"); an ``automatic`` algorithm must have an ``estimate``.
    """
    if not isinstance(algorithm, Algorithm):
        fail(TypeError, "register", "algorithm", type(algorithm).__name__,
             "must be a convolab.algorithms.Algorithm")
    name = getattr(algorithm, "name", None)
    if not isinstance(name, str) or not name or name in ("auto", "measure") or name in ALGORITHMS:
        fail(ValueError, "register", "algorithm.name", repr(name),
             "must be a non-empty string that is neither 'auto', 'measure' nor a registered algorithm's name")
    unknown = set(algorithm.passes) - set(PASSES)
    if "forward" not in algorithm.passes or unknown:
        fail(ValueError, "register", "algorithm.passes", repr(sorted(algorithm.passes)),
             f"must include 'forward' and name only passes of {PASSES}")
    if algorithm.automatic and type(algorithm).estimate is Algorithm.estimate:
        fail(ValueError, "register", "algorithm.automatic", repr(True),
             "needs an estimate (the algorithm's cost model)")
    ALGORITHMS[name] = algorithm
    for listener in _listeners:
        listener()
    return algorithm


def unregister(name: str) -> None:
    """Remove the algorithm called ``name`` from :data:`ALGORITHMS`."""
    if name not in ALGORITHMS:
        fail(ValueError, "unregister", "name", repr(name), "must be a registered algorithm's name")
    del ALGORITHMS[name]
    for listener in _listeners:
        listener()


def algorithm_choices() -> tuple[str, ...]:
    """Every value the ``algorithm`` argument accepts: the planner's two modes and each registered algorithm."""
    return ("auto", "measure", *ALGORITHMS)


def check_algorithm_name(op: str, name: object) -> str:
    """``name`` if the ``algorithm`` argument accepts it, else a ValueError listing the choices."""
    choices = algorithm_choices()
    if not isinstance(name, str) or name not in choices:
        fail(ValueError, op, "algorithm", repr(name), f"must be one of {', '.join(map(repr, choices))}")
    return name


def select_algorithm(name: str, spec: ConvSpec, dtype: np.dtype) -> Algorithm:
    """The algorithm called ``name``, checked against the problem (the planner handles "auto")."""
    algorithm = ALGORITHMS[check_algorithm_name(spec.op, name)]
    reason = algorithm.why_not(spec, dtype)
    if reason is not None:
        fail(ValueError, spec.op, "algorithm", repr(name), f"cannot run this problem: {reason}")
    return algorithm


# The modules below subclass Algorithm, so they come after it.
from ._blocking import CACHE_BLOCK_BYTES  # noqa: E402
from .broadcast import Broadcast  # noqa: E402
from .compiled import Compiled  # noqa: E402
from .depthwise import Depthwise, depthwise_threads  # noqa: E402
from .fft import FFT, fft_blocks, transform_length  # noqa: E402
from .folded import Folded  # noqa: E402
from .gemm import Gemm  # noqa: E402
from .packed import Packed  # noqa: E402
from .reference import Direct, Im2col, filter_matrix, fold_product, unroll  # noqa: E402
from .row_shifts import RowShifts  # noqa: E402
from .shifted import Shifted  # noqa: E402
from .space_to_batch import SpaceToBatch  # noqa: E402
from .space_to_depth import SpaceToDepth  # noqa: E402
from .winograd import Winograd  # noqa: E402

# The built-in algorithms, in the order the choices list them.
for _algorithm in (Direct(), Im2col(), Gemm(), Folded(), Shifted(), Depthwise(), Winograd(2), Winograd(3), Winograd(4),
                   FFT(), Compiled(), SpaceToDepth(), Packed(), SpaceToBatch(), RowShifts(), Broadcast()):
    register(_algorithm)
del _algorithm
