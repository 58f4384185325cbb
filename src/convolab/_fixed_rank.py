"""The fixed-rank variants of an N-d op (``conv``, ``conv1d``, ``conv2d``, ``conv3d``) from one implementation.

An op family is written once, as ``implementation(op, rank, *public parameters)``:
``op`` is the public name (for messages) and ``rank`` the number of spatial
dimensions (``None``: read from the arguments). :func:`fixed_rank_ops` makes the
public functions from it, one per rank, each

- with the implementation's parameters after ``op`` and ``rank``, their
  defaults and annotations: ``inspect.signature`` and ``help`` show them, and
  Python's own argument errors name the public op (``conv2d() got an
  unexpected keyword argument ...``);
- named ``family``, ``family1d``, ... (plus a ``suffix``: ``conv1d_input``),
  with ``__module__`` the implementation's, so doctest finds their examples;
- documented by one template, formatted per rank (:func:`rank_words` gives the
  axis names: ``"H, W"``, ``"kH, kW"``, ``"H_out, W_out"``);
- with its vector-Jacobian product registered (:func:`convolab._vjp.defines_vjp`)
  where the family has a rule ``vjp(op, rank, *arrays, **params)``.

Each public function is compiled from a two-line source (``def conv2d(input,
weight, ...): return implementation("conv2d", 2, input, weight, ...)``) rather
than forwarding ``*args, **kwargs``: a call then costs what a hand-written
wrapper costs (no signature binding), and a wrong argument is refused by
Python with the op's own name.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable, Mapping, Sequence

from ._vjp import defines_vjp

__all__ = ["fixed_rank_ops", "fixed_rank_op", "rank_words", "RANKS"]

#: The variants of a family: N-d (rank read from the arguments), 1-d, 2-d, 3-d.
RANKS: tuple[int | None, ...] = (None, 1, 2, 3)

_SPATIAL = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def rank_words(rank: int | None) -> dict[str, str]:
    """The words a docstring template uses for ``rank`` spatial axes (``None``: any number).

    ``rank_name`` (``"2d"``, or ``""`` for N-d), ``spatial`` (``"H, W"``),
    ``kernel`` (``"kH, kW"``) and ``out`` (``"H_out, W_out"``).

    >>> rank_words(2)
    {'rank_name': '2d', 'spatial': 'H, W', 'kernel': 'kH, kW', 'out': 'H_out, W_out'}
    >>> rank_words(None)["spatial"]
    '*spatial'
    """
    if rank is None:
        return {"rank_name": "", "spatial": "*spatial", "kernel": "*kernel_size", "out": "*out"}
    axes = _SPATIAL.get(rank, tuple(f"S{i}" for i in range(rank)))
    return {"rank_name": f"{rank}d", "spatial": ", ".join(axes), "kernel": ", ".join(f"k{a}" for a in axes),
            "out": ", ".join(f"{a}_out" for a in axes)}


def fixed_rank_op(
    implementation: Callable[..., Any],
    name: str,
    rank: int | None,
    doc: str | None = None,
    *,
    vjp: Callable[..., Any] | None = None,
) -> Callable[..., Any]:
    """The public op ``name``: ``implementation(name, rank, ...)`` with the parameters after those two.

    Examples
    --------
    >>> def _scale(op, rank, x, factor=2, *, offset=0):
    ...     return x * factor + offset
    >>> scale2d = fixed_rank_op(_scale, "scale2d", 2, "Scale.")
    >>> scale2d(3, offset=1), scale2d.__name__, str(inspect.signature(scale2d))
    (7, 'scale2d', '(x, factor=2, *, offset=0)')
    """
    parameters = list(inspect.signature(implementation).parameters.values())[2:]  # after op and rank
    source = (f"def {name}({_parameter_list(parameters)}):\n"
              f"    return implementation({name!r}, {rank!r}, {_argument_list(parameters)})\n")
    namespace: dict[str, Any] = {}
    # The implementation's globals, so the new function's are its module's (doctest looks for them there).
    exec(_closure(source, name), implementation.__globals__, namespace)
    function = namespace["_make"](implementation)
    function.__defaults__ = implementation.__defaults__
    function.__kwdefaults__ = implementation.__kwdefaults__
    function.__annotations__ = {key: value for key, value in implementation.__annotations__.items()
                                if key not in ("op", "rank")}
    function.__module__ = implementation.__module__
    function.__qualname__ = name
    function.__doc__ = doc
    if vjp is not None:
        defines_vjp(function)(partial(vjp, name, rank))
    return function


def fixed_rank_ops(
    implementation: Callable[..., Any],
    family: str,
    doc: str,
    *,
    suffix: str = "",
    ranks: Sequence[int | None] = RANKS,
    words: Mapping[int | None, Mapping[str, str]] | None = None,
    vjp: Callable[..., Any] | None = None,
) -> tuple[Callable[..., Any], ...]:
    """The family's public ops, one per rank in ``ranks``: ``family`` (N-d), ``family1d``, ... plus ``suffix``.

    ``doc`` is formatted per rank with ``op`` (the public name), :func:`rank_words`
    and ``words[rank]`` (a per-rank summary, examples...), which take precedence.

    Examples
    --------
    >>> def _total(op, rank, x):
    ...     '''Sum a list.'''
    ...     return sum(x)
    >>> total, total1d = fixed_rank_ops(_total, "total", "{op}: sum over {spatial}.", ranks=(None, 1))
    >>> total1d([1, 2]), total1d.__doc__
    (3, 'total1d: sum over L.')
    """
    ops = []
    for rank in ranks:
        name = f"{family}{'' if rank is None else f'{rank}d'}{suffix}"
        fields = {"op": name, **rank_words(rank), **((words or {}).get(rank, {}))}
        ops.append(fixed_rank_op(implementation, name, rank, doc.format(**fields), vjp=vjp))
    return tuple(ops)


def _closure(source: str, name: str) -> str:
    """``source`` (a function ``name``) inside a maker that closes it over ``implementation``."""
    body = "".join(f"    {line}\n" for line in source.splitlines())
    return f"def _make(implementation):\n{body}    return {name}\n"


def _parameter_list(parameters: list[inspect.Parameter]) -> str:
    """The parameters' names as a ``def`` writes them (``*`` before the keyword-only ones); no defaults:
    they are set on the function afterwards, from the implementation's."""
    names, star_written = [], False
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            names.append(f"*{parameter.name}")
            star_written = True
        elif parameter.kind is parameter.VAR_KEYWORD:
            names.append(f"**{parameter.name}")
        else:
            if parameter.kind is parameter.KEYWORD_ONLY and not star_written:
                names.append("*")
                star_written = True
            names.append(parameter.name)
    return ", ".join(names)


def _argument_list(parameters: list[inspect.Parameter]) -> str:
    """The call passing every parameter on: positionally where it is positional, else by keyword."""
    arguments = []
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            arguments.append(f"*{parameter.name}")
        elif parameter.kind is parameter.VAR_KEYWORD:
            arguments.append(f"**{parameter.name}")
        elif parameter.kind is parameter.KEYWORD_ONLY:
            arguments.append(f"{parameter.name}={parameter.name}")
        else:
            arguments.append(parameter.name)
    return ", ".join(arguments)
