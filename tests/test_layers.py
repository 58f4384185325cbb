"""The layers of docs/architecture.md, checked: imports and calls only go down.

Two checks:

- every ``import`` of a convolab module anywhere in ``src/convolab`` (at the
  top of a module or inside a function) names a module of the importer's layer
  or of a layer below it;
- following a parameter from a public function to the arithmetic (``padding``,
  ``algorithm``, a gradient, a pooling window, a transposed convolution) goes
  down the layers: every call from one convolab function to another, traced
  with ``sys.setprofile``, lands in the caller's layer or below, never back in
  a layer the call has already left.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import numpy as np
import pytest

import convolab as cl

SOURCE = pathlib.Path(cl.__file__).parent

#: The layers, bottom to top, as in docs/architecture.md. A module belongs to the first entry that is its
#: name or a package above it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("convolab._errors", "convolab._dtypes", "convolab._settings", "convolab.shapes", "convolab.spec",
              "convolab._checks", "convolab._geometry", "convolab._window", "convolab._vjp",
              "convolab._fixed_rank")),
    ("algorithms", ("convolab.algorithms",)),
    ("planner", ("convolab.planner", "convolab._grad_problems")),
    ("engine", ("convolab._engine",)),
    ("ops", ("convolab.functional", "convolab.transposed", "convolab.unfold", "convolab.pooling",
             "convolab.signal")),
    ("gradients", ("convolab.grad",)),
    ("show, nn, chunked", ("convolab.show", "convolab.nn", "convolab.chunked")),
    # ``import convolab as cl``: the public surface, which the apps use as a user would.
    ("the package", ("convolab",)),
    ("apps and the command line", ("convolab.apps", "convolab.cli", "convolab.__main__")),
    # Kept only so that old import paths work; nothing inside the library imports them.
    ("old import paths", ("convolab._conv", "convolab.bench", "convolab.train", "convolab.winograd",
                          "convolab.identities", "convolab.explain", "convolab.pictures", "convolab.dask")),
]


def layer_of(module: str) -> int:
    """The layer of ``module``: of the longest name in :data:`LAYERS` that is it or a package above it."""
    best, best_length = None, -1
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best_length:
                best, best_length = index, len(name)
    if best is None:
        raise KeyError(module)
    return best


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) for every convolab module ``path`` imports, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "convolab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "convolab":
                continue
            # ``from . import shapes`` imports a module; ``from .spec import conv_spec`` a name of one.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                is_module = (SOURCE.parent / pathlib.Path(*candidate.split("."))).with_suffix(".py").exists() or \
                    (SOURCE.parent / pathlib.Path(*candidate.split("."))).is_dir()
                found.append((node.lineno, candidate if is_module else target))
    return found


MODULES = sorted(SOURCE.rglob("*.py"))


def test_every_module_has_a_layer():
    unplaced = []
    for path in MODULES:
        try:
            layer_of(module_name(path))
        except KeyError:
            unplaced.append(module_name(path))
    assert unplaced == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_only_go_down(path):
    importer = module_name(path)
    upward = [f"line {line}: {target} ({LAYERS[layer_of(target)][0]})" for line, target in imported_modules(path)
              if layer_of(target) > layer_of(importer)]
    assert upward == [], f"{importer} ({LAYERS[layer_of(importer)][0]}) imports from a layer above it"


def traced_calls(run) -> list[tuple[str, str, str]]:
    """Every call from one convolab function to another while ``run()`` runs: (caller, callee, callee function)."""
    calls = []

    def profile(frame, event, arg):
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        caller_frame = frame.f_back
        caller = caller_frame.f_globals.get("__name__", "") if caller_frame is not None else ""
        if callee.startswith("convolab") and caller.startswith("convolab"):
            calls.append((caller, callee, frame.f_code.co_name))

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return calls


_rng = np.random.default_rng(0)
_x = _rng.standard_normal((2, 4, 9, 9))
_w = _rng.standard_normal((6, 2, 3, 3))
_g = _rng.standard_normal((2, 6, 5, 5))

PUBLIC_CALLS = {
    "conv2d padding": lambda: cl.conv2d(_x, _w, padding=(1, (0, 2)), stride=2, groups=2),
    "conv2d padding_mode": lambda: cl.conv2d(_x, _w, padding=1, stride=2, groups=2, padding_mode="reflect"),
    "conv2d algorithm=gemm": lambda: cl.conv2d(_x, _w, padding=1, stride=2, groups=2, algorithm="gemm"),
    "conv2d algorithm=fft": lambda: cl.conv2d(_x, _w, padding=1, stride=2, groups=2, algorithm="fft"),
    "conv2d algorithm=measure": lambda: cl.conv2d(_x, _w, padding=1, stride=2, groups=2, algorithm="measure"),
    "grad.conv2d_input": lambda: cl.grad.conv2d_input(_x.shape, _w, _g, stride=2, padding=1, groups=2),
    "grad.conv2d_weight": lambda: cl.grad.conv2d_weight(_x, _w.shape, _g, stride=2, padding=1, groups=2),
    "conv_transpose2d": lambda: cl.conv_transpose2d(_g, _w, stride=2, padding=1, output_padding=0, groups=2),
    "max_pool2d": lambda: cl.max_pool2d(_x, 3, stride=2, padding=1, return_indices=True),
    "avg_pool2d": lambda: cl.avg_pool2d(_x, 3, stride=2, padding=1, ceil_mode=True),
    "unfold": lambda: cl.unfold(_x, 3, padding=1, stride=2),
    "correlate": lambda: cl.correlate(_x[0, 0], _w[0, 0], mode="same"),
    "depthwise": lambda: cl.conv2d(_x, _rng.standard_normal((4, 1, 3, 3)), padding=1, groups=4),
}


@pytest.mark.parametrize("name", PUBLIC_CALLS)
def test_following_a_parameter_only_goes_down(name):
    calls = traced_calls(PUBLIC_CALLS[name])
    assert calls, "the trace saw no call inside convolab"
    climbs = sorted({f"{caller} ({LAYERS[layer_of(caller)][0]}) -> {callee}.{function} "
                     f"({LAYERS[layer_of(callee)][0]})"
                     for caller, callee, function in calls if layer_of(callee) > layer_of(caller)})
    assert climbs == []
