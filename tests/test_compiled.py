"""The compiled algorithm (Numba): forward and both gradients against the references and PyTorch, and its seam.

Generated cases (every rank, padding kind and mode, groups including depthwise,
strides, dilations, empty batches, unbatched inputs) run through the public
ops with the planner made to pick "compiled" for everything, so that its
forward and its own gradient passes run as users reach them. Forward results
are compared with "direct" within the bound of any summation order (as in
test_algorithms.py), the gradients with the reference formulations ("scatter",
"im2col"), and all three with PyTorch.

The seam: Numba is imported only when a compiled algorithm is first planned
for a problem it could run (never by ``import convolab`` or ``convolab
explain``); without Numba every compiled algorithm says why and "auto" keeps to
the NumPy paths; the on-disk cache works from a read-only package; the kernels
run right from many threads at once and in a forked child.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import convolab as cl
from convolab.algorithms import ALGORITHMS, register, unregister
from convolab.algorithms import compiled as compiled_module
from convolab.algorithms.compiled import Compiled
from conv_cases import generate_cases
from threaded import results_from_threads
from test_depthwise import assert_like_torch, batched
from test_nonfinite import assert_same_pattern

#: Generated cases, every fourth made depthwise (with a channel multiplier of 1 or 2), rank 1 to 3.
CASES = [dataclasses.replace(case, groups=case.in_channels, out_channels=case.in_channels * (1 + index // 4 % 2))
         if index % 4 == 1 else case for index, case in enumerate(generate_cases(100, seed=15))]
DTYPES = [np.float32, np.float64]
#: Where ``convolab`` is imported from, for the subprocesses.
SOURCE_ROOT = str(Path(cl.__file__).resolve().parents[1])


@pytest.fixture
def compiled_everywhere():
    """The planner picks "compiled" for every problem it can run (its estimate is zero), and runs its own
    gradient passes (as if asked for by name: it never declines one; its weight gradient is estimated free)."""

    class Everywhere(Compiled):
        def estimate(self, spec, dtype):
            return 0.0

        def pass_formulation(self, name, spec, dtype, *, finite=True, asked=False):
            return super().pass_formulation(name, spec, dtype, finite=finite, asked=True)

        def pass_estimate(self, name, spec, dtype):  # nor does auto trade its weight gradient for gemm's
            return 0.0 if name == "weight_grad" else None

    original = ALGORITHMS["compiled"]
    unregister("compiled")
    register(Everywhere())
    try:
        yield
    finally:
        unregister("compiled")
        register(original)


@pytest.mark.parametrize("kernel_module, kernel_name, wrapper_name", [
    ("direct", "OUT_BLOCK", "OUT_BLOCK"), ("direct", "TAP_BLOCK", "TAP_BLOCK"),
    ("tiled", "LANES", "LANES"), ("tiled", "TILE_WIDE", "TILE_WIDE"), ("tiled", "TILE_NARROW", "TILE_NARROW"),
])  # the weight gradient's: test_compiled_wgrad
def test_the_wrapper_lays_out_the_blocks_its_kernels_loop_over(kernel_module, kernel_name, wrapper_name):
    # compiled.py repeats the kernels' block sizes so that planning never imports Numba; a layout made for
    # other sizes than the kernel's loops would be read wrongly, not refused
    from convolab.algorithms._compiled import kernels

    assert getattr(compiled_module, wrapper_name) == getattr(kernels(kernel_module), kernel_name)


def summation_bound(terms: int, scale: np.ndarray, dtype) -> np.ndarray:
    """Two sums of the same ``terms`` products, in any orders, differ by at most this (see test_algorithms)."""
    return 2 * terms * float(np.finfo(dtype).eps) / 2 * scale


def assert_within(actual: np.ndarray, expected: np.ndarray, bound: np.ndarray) -> None:
    error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert np.all(error <= bound), f"error {np.max(error - bound)} over the bound"


def three_passes(x, w, g, **kwargs):
    """Forward, input gradient and weight gradient through the public ops, "auto" everywhere."""
    return (cl.conv(x, w, **kwargs), cl.grad.conv_input(x.shape, w, g, **kwargs),
            cl.grad.conv_weight(x, w.shape, g, **kwargs))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_agrees_with_the_references(case, dtype, compiled_everywhere):
    x, w, _ = case.arrays(dtype)
    g = np.random.default_rng(len(case.id)).standard_normal(case.output_shape).astype(dtype)
    chosen = cl.plan(batched(case, x).shape, w.shape, dtype, **case.kwargs())
    assert (chosen.algorithm, chosen.input_grad.method, chosen.weight_grad.method) == ("compiled",) * 3
    out, grad_input, grad_weight = three_passes(x, w, g, **case.kwargs())
    kwargs = case.kwargs()
    f64 = lambda a: np.abs(a).astype(np.float64)  # noqa: E731
    terms_in = (case.out_channels // case.groups) * int(np.prod(case.kernel_size))
    terms_weight = case.batch * int(np.prod(case.output_size))
    assert_within(out, cl.conv(x, w, **kwargs, algorithm="direct"),
                  summation_bound(case.terms_per_output, cl.conv(f64(x), f64(w), **kwargs, algorithm="gemm"), dtype))
    assert_within(grad_input, cl.grad.conv_input(x.shape, w, g, **kwargs, algorithm="scatter"),
                  summation_bound(terms_in, cl.grad.conv_input(x.shape, f64(w), f64(g), **kwargs, algorithm="scatter"),
                                  dtype))
    assert_within(grad_weight, cl.grad.conv_weight(x, w.shape, g, **kwargs, algorithm="im2col"),
                  summation_bound(terms_weight, cl.grad.conv_weight(f64(x), w.shape, f64(g), **kwargs,
                                                                    algorithm="im2col"), dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", [case for case in CASES if case.batch > 0][::2], ids=str)
def test_agrees_with_torch(case, dtype, compiled_everywhere):
    x, w, _ = case.arrays(dtype)
    g = np.random.default_rng(9).standard_normal(case.output_shape).astype(dtype)
    assert_like_torch(case, x, w, g, three_passes(x, w, g, **case.kwargs()))


#: Larger problems: runs of several rows and of part of a row, jobs shared among threads, a stride
#: along every axis, a flipped kernel, read-only arrays and an input that is not contiguous.
LARGER = [
    ((2, 4, 70, 70), (6, 2, 3, 3), dict(padding=1, groups=2)),
    ((3, 8, 41, 37), (8, 1, 5, 3), dict(padding=(2, 1), stride=2, dilation=(1, 2), groups=8)),
    ((2, 3, 5000), (5, 3, 9), dict(padding=4, stride=2, dilation=2)),
    ((1, 3, 64, 64), (16, 3, 7, 7), dict(padding=3, stride=2, padding_mode="reflect")),
    ((2, 4, 9, 18, 20), (8, 4, 3, 3, 3), dict(padding=1, stride=(2, 1, 3), flip=True)),
]


@pytest.mark.parametrize("input_shape, weight_shape, params", LARGER)
def test_larger_problems_threaded_and_not_contiguous(input_shape, weight_shape, params, compiled_everywhere):
    rng = np.random.default_rng(sum(input_shape))
    x = rng.standard_normal((*input_shape[:-1], 2 * input_shape[-1]))[..., ::2]  # every other column: a view
    w = rng.standard_normal(weight_shape)
    out_shape = cl.conv(x, w, **params, algorithm="direct").shape
    g = rng.standard_normal(out_shape)
    for array in (x, w, g):
        array.flags.writeable = False
    with cl.thread_count(3):
        out = cl.conv(x, w, **params)
        grad_input = cl.grad.conv_input(x.shape, w, g, **params)
        grad_weight = cl.grad.conv_weight(x, w.shape, g, **params)
    tolerance = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out, cl.conv(x, w, **params, algorithm="gemm"), **tolerance)
    np.testing.assert_allclose(grad_input, cl.grad.conv_input(x.shape, w, g, **params, algorithm="scatter"),
                               **tolerance)
    np.testing.assert_allclose(grad_weight, cl.grad.conv_weight(x, w.shape, g, **params, algorithm="im2col"),
                               **tolerance)


@pytest.mark.parametrize("shape, stride, padding, shared", [
    ((2, 3, 1, 7, 9), (2, 2), ((0, 0), (1, 1), (1, 2)), 0),  # the stem's case: odd padding at stride 2
    ((1, 2, 3, 5, 6), (3, 2), ((1, 1), (2, 0), (0, 3)), 0),  # depth padding; a stride above the padded size's
    ((1, 1, 2, 4, 4), (1, 3), ((0, 2), (3, 1), (4, 0)), 0),  # rows no sample lands on
    ((1, 1, 1, 5, 5), (4, 4), ((0, 0), (2, 3), (3, 2)), 0),
    ((2, 2, 1, 5, 7), (1, 1), ((0, 0), (1, 1), (1, 1)), 1),  # shared padding: a shorter pitch, a row of zeros
    ((1, 2, 2, 4, 6), (2, 1), ((1, 1), (2, 2), (3, 1)), 1),
    # rows of whole vectors and a last part (copy_run), each plane's last run ending within a vector of the
    # next plane's first cell: the part's stored-back lanes stay in its own plane
    ((2, 3, 1, 5, 57), (2, 2), ((0, 0), (1, 1), (1, 0)), 0),
    ((1, 3, 1, 3, 37), (1, 1), ((0, 0), (0, 0), (0, 0)), 0),
    ((1, 2, 1, 4, 50), (1, 3), ((0, 0), (1, 1), (2, 1)), 0),
])
def test_the_phase_grid_copy_writes_every_cell(shape, stride, padding, shared):
    """copy_phases pads as it copies: its grid needs no zeroing first (to_grid allocates it empty), and
    copying back gives the input."""
    from convolab.algorithms._compiled import kernels

    copy_phases = kernels("direct").copy_phases
    x = np.random.default_rng(len(shape) + sum(shape)).standard_normal(shape).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), *padding))
    (sh, sw), (low_d, low_h, low_w) = stride, (low for low, _ in padding)
    # (N, C, D, SH, SW, Hq, Wq); shared: rows stride 1 apart share min(low, high) padding columns
    grid_shape = (*shape[:2], padded.shape[2], sh, sw, -(-padded.shape[3] // sh) + shared,
                  -(-padded.shape[4] // sw) - shared * min(padding[2]))
    expected = np.zeros(grid_shape, np.float32)
    for rh in range(sh):
        for rw in range(sw):
            phase = padded[..., rh::sh, rw::sw]
            if shared:  # each row's cells run on into the next row's: as one flat run of the pitch
                runs = np.zeros((*phase.shape[:3], grid_shape[5] * grid_shape[6] + padding[2][1]), np.float32)
                for u in range(phase.shape[3]):
                    runs[..., u * grid_shape[6]:u * grid_shape[6] + phase.shape[4]] += phase[..., u, :]
                expected[:, :, :, rh, rw] = runs[..., :grid_shape[5] * grid_shape[6]].reshape(
                    *phase.shape[:3], *grid_shape[5:])
            else:
                expected[:, :, :, rh, rw, :phase.shape[3], :phase.shape[4]] = phase
    grid = np.full(grid_shape, np.nan, np.float32)
    copy_phases(x, grid, 0, shape[0] * shape[1], True, low_d, low_h, low_w)
    np.testing.assert_array_equal(grid, expected)
    back = np.full_like(x, np.nan)
    copy_phases(back, grid, 0, shape[0] * shape[1], False, low_d, low_h, low_w)
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("poisoned", ["input", "weight", "grad_output"])
def test_inf_and_nan_land_where_the_direct_sum_puts_them(poisoned, compiled_everywhere):
    """Wide rows' extra columns never meet an inf or NaN: the gradients take one row per run then."""
    rng = np.random.default_rng(3)
    params = dict(padding=1, stride=(1, 2), groups=2)
    x, w = rng.standard_normal((2, 4, 12, 14)), rng.standard_normal((6, 2, 3, 3))
    g = rng.standard_normal(cl.conv(x, w, **params, algorithm="direct").shape)
    operand = {"input": x, "weight": w, "grad_output": g}[poisoned]
    operand[0, 1, 2, 1], operand[1, 0, 1, 2] = np.inf, np.nan
    with np.errstate(invalid="ignore", over="ignore"):
        got = three_passes(x, w, g, **params)
        expected = (cl.conv(x, w, **params, algorithm="direct"),
                    cl.grad.conv_input(x.shape, w, g, **params, algorithm="scatter"),
                    cl.grad.conv_weight(x, w.shape, g, **params, algorithm="im2col"))
    for actual, reference in zip(got, expected):
        assert_same_pattern(actual, reference, 1e-12)


def test_refusals_name_the_rule():
    compiled = ALGORITHMS["compiled"]
    spec = cl.conv_spec((1, 2, 5, 5), (2, 2, 3, 3))
    for dtype in (np.int32, np.float16, np.complex64):
        assert compiled.why_not(spec, np.dtype(dtype)).startswith("compiled kernels run float32 and float64 only")
    assert "1 to 3 spatial dimensions" in compiled.why_not(cl.conv_spec((1, 1, 3, 3, 3, 3), (1, 1, 1, 1, 1, 1)),
                                                          np.dtype(np.float32))
    with pytest.raises(ValueError, match="conv2d: algorithm cannot run this problem: compiled kernels run float32 .* "
                                         "got 'compiled'"):
        cl.conv2d(np.ones((1, 2, 5, 5), np.int64), np.ones((2, 2, 3, 3), np.int64), algorithm="compiled")
    assert cl.plan((1, 2, 5, 5), (2, 2, 3, 3), np.int32).refused["compiled"].startswith("compiled kernels run")


def test_workspace_is_the_phase_grid_and_the_scratch_sums():
    compiled = ALGORITHMS["compiled"]
    strided = cl.conv_spec((2, 3, 20, 20), (4, 3, 3, 3), stride=2, padding=1)  # a grid of 2*3 * (2*2 * 11*11)
    unit = cl.conv_spec((2, 3, 20, 20), (4, 3, 3, 3))  # the input read in place
    padded = cl.conv_spec((2, 3, 20, 20), (4, 3, 3, 3), padding=1)  # a grid of 2*3 * 22*22: padded as copied
    with cl.thread_count(1):
        assert compiled.workspace_bytes(unit, 4) < compiled_module.SCRATCH_BYTES + 4 * 22
        assert compiled.workspace_bytes(strided, 4) - 2 * 3 * 4 * 11 * 11 * 4 < compiled_module.SCRATCH_BYTES + 4 * 11
        assert compiled.workspace_bytes(padded, 4) - 2 * 3 * 22 * 22 * 4 < compiled_module.SCRATCH_BYTES + 4 * 22
    with cl.workspace_limit(2 * 3 * 4 * 11 * 11 * 4 - 1):  # the grid would not fit
        assert compiled.why_not(strided, np.dtype(np.float32)).startswith(
            "its phase grid (the input padded, split at a stride")
        assert compiled.why_not(padded, np.dtype(np.float32)).startswith("its phase grid")
        assert compiled.why_not(unit, np.dtype(np.float32)) is None  # read in place


# -- the plan ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("input_shape, weight_shape, params, compiled", [
    # depthwise layers: depthwise's own compiled kernel (test_compiled_depthwise.py), measured faster still
    ((8, 32, 112, 112), (32, 1, 3, 3), dict(padding=1, groups=32), False),  # MobileNet depthwise
    ((8, 240, 28, 28), (240, 1, 5, 5), dict(padding=2, groups=240), False),  # EfficientNet depthwise 5x5
    ((8, 128, 56, 56), (128, 4, 3, 3), dict(padding=1, groups=32), True),  # ResNeXt, 4 channels per group
    # ResNet 3x3: Winograd's tiles in float32 and float64 (session 8: winograd4 12.5 ms against compiled's 20.6,
    # float64 19.6 against 39.2, one thread; test_planner.py), as float64 before (the register tiles of four
    # channels read the input twice as often)
    ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), (False, False)),
    ((8, 64, 56, 56), (128, 64, 1, 1), {}, False),  # 1x1: a plain matrix product (gemm)
    ((8, 32, 8000), (32, 32, 9), dict(padding=4), True),  # 1-d, k 9: the register tiles (10.4 ms, gemm 19.3 ms)
    ((8, 128, 56, 56), (128, 128, 3, 3), dict(stride=2, padding=1), False),  # 128 channels at stride 2: gemm
    # stem: the register tiles (13 ms, gemm 18); in float64 broadcast measured alike (one thread, CPU, session
    # 19: 22.3 and 24.9 ms against compiled's 23.2 and 22.1), and either may be picked
    ((8, 3, 224, 224), (48, 3, 5, 5), dict(stride=2, padding=2), (True, None)),
])
def test_auto_picks_compiled_where_it_measured_faster(input_shape, weight_shape, params, compiled):
    for dtype, expected in zip(("float32", "float64"), compiled if isinstance(compiled, tuple) else (compiled,) * 2):
        chosen = cl.plan(input_shape, weight_shape, dtype, **params)
        if expected is None:  # a tie measured: compiled or broadcast
            assert chosen.algorithm in ("compiled", "broadcast"), str(chosen)
        else:
            assert (chosen.algorithm == "compiled") == expected, str(chosen)
        assert "compiled" in chosen.estimates


# 4 input and 2 output channels per group (depthwise has its own algorithm; from 4 output channels per group the
# register tiles run the forward, and auto declines compiled's own scatter for the generic one)
GROUPED = ((4, 32, 40, 40), (16, 4, 3, 3), dict(padding=1, groups=8))


def test_its_forward_brings_its_own_gradient_passes(monkeypatch):
    """The plan names compiled's passes, the engine runs them, and an inf in the weight gets the scatter."""
    chosen = cl.plan(*GROUPED[:2], "float32", **GROUPED[2])
    assert (chosen.algorithm, chosen.input_grad.method, chosen.input_grad.detail, chosen.weight_grad.method) == (
        "compiled", "compiled", "full", "compiled")
    assert chosen.input_grad.finite_matters and not chosen.weight_grad.finite_matters
    calls: list = []
    original = ALGORITHMS["compiled"].input_grad
    monkeypatch.setattr(ALGORITHMS["compiled"], "input_grad",
                        lambda *args, **kwargs: calls.append(kwargs) or original(*args, **kwargs))
    rng = np.random.default_rng(4)
    w, g = rng.standard_normal(GROUPED[1]), rng.standard_normal((4, 16, 40, 40))
    reference = cl.grad.conv2d_input(GROUPED[0], w, g, **GROUPED[2], algorithm="scatter")
    np.testing.assert_allclose(cl.grad.conv2d_input(GROUPED[0], w, g, **GROUPED[2]), reference, rtol=1e-12,
                               atol=1e-12)
    w[3, 0, 1, 1] = np.inf
    with np.errstate(invalid="ignore"):
        cl.grad.conv2d_input(GROUPED[0], w, g, **GROUPED[2])
    assert calls == [{"formulation": "full"}, {"formulation": "scatter"}]


# -- threads and fork ------------------------------------------------------------------------------------------


def _reference_passes(x, w, g, params):
    return (cl.conv(x, w, **params, algorithm="compiled"),
            ALGORITHMS["compiled"].input_grad(g, w, cl.conv_spec(x.shape, w.shape, **params)),
            ALGORITHMS["compiled"].weight_grad(x, g, cl.conv_spec(x.shape, w.shape, **params)))


THREADED = ((4, 32, 40, 40), (32, 1, 3, 3), dict(padding=1, groups=32, stride=2))


def test_many_python_threads_at_once():
    """Eight threads, each running all three passes (each pass shares its jobs among pool threads too)."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(THREADED[0]), rng.standard_normal(THREADED[1])
    g = rng.standard_normal((4, 32, 20, 20))
    with cl.thread_count(2):
        expected = _reference_passes(x, w, g, THREADED[2])

    def passes():
        with cl.thread_count(2):
            return _reference_passes(x, w, g, THREADED[2])

    results = results_from_threads(passes, threads=8)
    for result in results:
        for got, want in zip(result, expected):
            np.testing.assert_array_equal(got, want)  # the same blocks, summed in the same order


def test_a_forked_child_computes_after_the_parent_used_the_kernels():
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    rng = np.random.default_rng(6)
    x, w, g = rng.standard_normal(THREADED[0]), rng.standard_normal(THREADED[1]), rng.standard_normal((4, 32, 20, 20))
    with cl.thread_count(2):
        expected = _reference_passes(x, w, g, THREADED[2])  # the kernels are loaded, the pool threads exist
    with multiprocessing.get_context("fork").Pool(1) as pool:
        result = pool.apply_async(_child_passes, (x, w, g)).get(timeout=120)
    for got, want in zip(result, expected):
        np.testing.assert_array_equal(got, want)


def _child_passes(x, w, g):
    with cl.thread_count(2):
        return _reference_passes(x, w, g, THREADED[2])


# -- the seam, in fresh processes --------------------------------------------------------------------------------


def run_python(*code: str) -> str:
    """Run the pieces of ``code`` in a fresh interpreter importing this convolab; its stdout (it must succeed)."""
    environment = dict(os.environ, PYTHONPATH=SOURCE_ROOT)
    done = subprocess.run([sys.executable, "-c", "".join(map(textwrap.dedent, code))], capture_output=True, text=True,
                          env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_and_explain_do_not_import_numba():
    out = run_python("""
        import sys
        import convolab
        print("numba" in sys.modules)
        from convolab.cli import main
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):
            main(["explain"])
        print("numba" in sys.modules)
        """)
    assert out.split() == ["False", "False"]


#: Makes ``import numba`` fail, as where it is not installed.
HIDE_NUMBA = """
    import sys
    class NoNumba:
        def find_spec(self, name, path=None, target=None):
            if name == "numba" or name.startswith("numba."):
                raise ImportError("No module named 'numba'")
            return None
    sys.meta_path.insert(0, NoNumba())
    """


def test_without_numba_every_compiled_algorithm_says_so_and_auto_falls_back():
    out = run_python(HIDE_NUMBA, """
        import numpy as np
        import convolab as cl
        from convolab.algorithms import ALGORITHMS
        from convolab.algorithms.compiled import Compiled
        compiled = [name for name, algorithm in ALGORITHMS.items() if isinstance(algorithm, Compiled)]
        assert compiled, ALGORITHMS
        spec = cl.conv_spec((8, 32, 56, 56), (32, 1, 3, 3), padding=1, groups=32)
        for name in compiled:
            assert ALGORITHMS[name].why_not(spec, np.dtype(np.float32)).startswith("numba is not installed"), name
        chosen = cl.plan(spec.input_shape, spec.weight_shape, "float32", padding=1, groups=32)
        assert chosen.algorithm not in compiled and chosen.refused["compiled"].startswith("numba is not installed")
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal((2, 8, 12, 12)), rng.standard_normal((8, 1, 3, 3))
        g = rng.standard_normal((2, 8, 12, 12))
        expected = cl.conv2d(x, w, padding=1, groups=8, algorithm="direct")
        assert np.allclose(cl.conv2d(x, w, padding=1, groups=8), expected)
        assert np.allclose(cl.grad.conv2d_input(x.shape, w, g, padding=1, groups=8),
                           cl.grad.conv2d_input(x.shape, w, g, padding=1, groups=8, algorithm="scatter"))
        assert np.allclose(cl.grad.conv2d_weight(x, w.shape, g, padding=1, groups=8),
                           cl.grad.conv2d_weight(x, w.shape, g, padding=1, groups=8, algorithm="im2col"))
        try:
            cl.conv2d(x, w, padding=1, groups=8, algorithm="compiled")
        except ValueError as error:
            assert "numba is not installed" in str(error), error
        else:
            raise AssertionError("compiled ran without numba")
        print("numba" in sys.modules, "fell back")
        """)
    assert out.split() == ["False", "fell", "back"]


def test_the_cache_works_from_a_read_only_package(tmp_path):
    """A copy of the package that cannot be written to: Numba keeps its cache in the user's cache directory,
    and a second process loads the kernel from there instead of compiling it."""
    package = tmp_path / "site" / "convolab"
    shutil.copytree(Path(cl.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    if os.geteuid() == 0:  # root writes through any mode bits: a file where the cache directory would go
        for directory in [package, *[path for path in package.rglob("*") if path.is_dir()]]:
            (directory / "__pycache__").write_text("")
    for path in [*package.rglob("*"), package]:
        path.chmod(stat.S_IREAD | (stat.S_IEXEC if path.is_dir() else 0))
    home = tmp_path / "home"
    environment = {key: value for key, value in os.environ.items() if key not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    environment.update(HOME=str(home), PYTHONPATH=str(package.parent))
    code = """
        import numpy as np
        import convolab
        from convolab.algorithms._compiled import kernels
        assert convolab.__file__.startswith(%r), convolab.__file__
        x = np.arange(2 * 3 * 5 * 7, dtype=np.float64).reshape(2, 3, 1, 5, 7)
        grid = np.zeros((2, 3, 1, 2, 2, 3, 4))
        split = kernels("direct").copy_phases  # the smallest kernel: the cache is the same for all
        split(x, grid, 0, 6, True, 0, 0, 0)
        assert (grid[:, :, :, 1, 0, :2, :] == x[:, :, :, 1::2, 0::2]).all()
        print(len(split.stats.cache_hits))
        """ % str(package)
    try:
        runs = [subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                               env=environment, timeout=120) for _ in range(2)]
    finally:
        for path in [package, *package.rglob("*")]:
            path.chmod(stat.S_IRWXU)
    for done in runs:
        assert done.returncode == 0, done.stderr
    assert [done.stdout.split() for done in runs] == [["0"], ["1"]]  # compiled once, then loaded
    assert list((home / ".cache" / "numba").rglob("*.nbi")), "the index went to the user's cache directory"
