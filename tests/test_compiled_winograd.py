"""Winograd with compiled transforms (Numba): against its NumPy transforms, direct and PyTorch, and the planner's
accuracy policy for it.

The compiled path (:func:`convolab.algorithms.winograd.compiled_winograd_conv`)
computes the same sums as the NumPy path (:func:`~convolab.algorithms.winograd.winograd_conv`):
the same generated matrices, the same products per tile position; only the
order of the additions differs (the transforms one axis at a time, zero
coefficients skipped; the filter transform as one product). Two evaluations of
one sum of ``n`` terms in different orders differ by at most ``n * eps`` times
the sum of the terms' magnitudes. Here the magnitudes are those of every
intermediate value, which the NumPy path computes itself when given the
absolute values of the data and of the matrices (:func:`transform_magnitude`);
``n`` counts the terms each output collects through the chain: the channels of
the products, and each transform's taps along each axis.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convolab as cl
from convolab import _grad_problems, planner
from convolab._engine import oriented_kernel
from convolab.algorithms import ALGORITHMS, register, unregister
from convolab.algorithms import _compiled, _winograd_compiled
from convolab.algorithms import winograd as winograd_module
from convolab.algorithms._winograd_compiled import compiled_winograd_conv, fused_winograd_conv
from convolab.algorithms.winograd import POINTS, Winograd, winograd_conv, winograd_matrices
from conv_cases import generate_cases
from test_depthwise import batched, torch_padded

TILES = tuple(POINTS)  # every generated tile size: F(2), F(3), F(4)
DTYPES = [np.float32, np.float64]


def winograd_cases(count: int, seed: int) -> list:
    """Generated cases with every kernel axis 3 taps, stride 1, dilation 1 (where the padding still fits): every
    rank, padding kind and mode, groups, zero-size batches and unbatched inputs."""
    chosen = []
    for case in generate_cases(4 * count, seed=seed):
        candidate = dataclasses.replace(case, kernel_size=(3,) * case.rank, stride=1, dilation=1)
        if all(p >= 3 for p in candidate.padded_size):
            chosen.append(candidate)
    return chosen[:count]


CASES = winograd_cases(40, seed=15)


def transform_magnitude(padded: np.ndarray, kernel: np.ndarray, spec, m: int) -> np.ndarray:
    """The NumPy path run on absolute values with absolute matrices: per output, the sum of the magnitudes of
    every term any order of evaluation adds up."""
    original = winograd_module.winograd_matrices

    def absolute(*args, **kwargs):
        return tuple(np.abs(matrix) for matrix in original(*args, **kwargs))

    winograd_module.winograd_matrices = absolute
    try:
        return winograd_conv(np.abs(padded).astype(np.float64), np.abs(kernel).astype(np.float64), spec, m)
    finally:
        winograd_module.winograd_matrices = original


def order_bound(spec, m: int, magnitude: np.ndarray, dtype) -> np.ndarray:
    """What two orders of the same sums may differ by: ``n * eps`` times the terms' magnitudes."""
    a = m + 2
    terms = spec.in_channels_per_group + spec.rank * (2 * a + 3)  # products, input/output/filter transforms
    return 2 * terms * float(np.finfo(dtype).eps) * magnitude


def padded_problem(case, dtype):
    x, w, _ = case.arrays(dtype)
    x = batched(case, x)
    spec = cl.conv_spec(x.shape, w.shape, **case.kwargs())
    from convolab._window import pad

    return pad(x, spec.padding, spec.padding_mode), w, spec


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_compiled_transforms_agree_with_the_numpy_transforms(case, tile, dtype):
    assert_numpy_transforms_sums(compiled_winograd_conv, case, tile, dtype)


def test_straight_output_transform_keeps_only_the_nonzero_coefficients():
    """F(2)'s ``A^T`` rows have three nonzeros each: along each axis every output of a 2-d tile reads three values,
    and the kernel of each tile size and rank is its own, compiled under the module's file (its cache)."""
    from convolab.algorithms import _kernels_winograd

    source = _kernels_winograd._straight_output_source(2, 2, "probe")
    sums = [line.split("=", 1)[1] for line in source.splitlines()
            if line.strip().startswith(("h_", "stage[group_at"))]
    assert len(sums) == 2 * (2 * 4 + 2 * 2)  # the full block's loop and the remainder's: 8 along H, 4 along W
    assert all(expression.count("p_") + expression.count("h_") == 3 for expression in sums)
    names = set()
    for tile in TILES:
        for rank in (1, 2):
            kernel = _kernels_winograd._straight_output_tiles(tile, rank, "float64")
            assert kernel.py_func.__code__.co_filename == _kernels_winograd.__file__
            names.add(kernel.py_func.__name__)
    assert len(names) == 2 * len(TILES)


def assert_numpy_transforms_sums(winograd, case, tile: int, dtype) -> None:
    """``winograd`` (a compiled Winograd forward on the padded input) gives the NumPy path's sums within the bound
    of two orders of evaluation."""
    padded, w, spec = padded_problem(case, dtype)
    got = winograd(padded, ((0, 0),) * spec.rank, w, spec, tile)
    expected = winograd_conv(padded, w, spec, tile)
    assert got.dtype == expected.dtype == dtype and got.shape == expected.shape
    bound = order_bound(spec, tile, transform_magnitude(padded, w, spec, tile), dtype)
    error = np.abs(got.astype(np.float64) - expected)
    assert np.all(error <= bound), f"error {np.max(error - bound)} over the bound"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", CASES[:24], ids=str)
def test_fused_forward_agrees_with_the_numpy_transforms(case, tile, dtype):
    """The fused forward (every step of a block of tiles in one thread, the products in registers): the same
    sums, the channels added in their order, within the same bound of two orders."""
    assert_numpy_transforms_sums(fused_winograd_conv, case, tile, dtype)


#: Odd sizes (partial tiles), asymmetric zero padding read in place, groups whose filters end inside a run of
#: lanes, 70 filters (past a whole run), 1-d and 3-d.
ODD_PROBLEMS = [((5, 8, 37, 45), (36, 4, 3, 3), dict(padding=((1, 2), (0, 1)), groups=2)),
                ((3, 64, 20, 19), (70, 64, 3, 3), dict(padding=1)),
                ((2, 4, 9, 10, 11), (6, 4, 3, 3, 3), dict(padding=1)),
                ((2, 6, 301), (40, 6, 3), dict(padding=((0, 3),)))]


def assert_direct_sums(forward, problems, dtype, seed: int) -> None:
    """``forward(x, padding, w, spec, tile)`` gives the direct sum in float64 within Winograd's rounding (1e-4
    relative to the largest output in float32, 1e-12 in float64), for every problem and tile size."""
    rng = np.random.default_rng(seed)
    for input_shape, weight_shape, params in problems:
        x = rng.standard_normal(input_shape).astype(dtype)
        w = rng.standard_normal(weight_shape).astype(dtype)
        spec = cl.conv_spec(x.shape, w.shape, **params)
        expected = cl.conv(x.astype(np.float64), w.astype(np.float64), **params, algorithm="direct")
        for tile in TILES:
            got = forward(x, spec.padding, w, spec, tile)
            tolerance = (1e-4 if dtype == np.float32 else 1e-12) * np.abs(expected).max()
            np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fused_forward_over_jobs_threads_groups_and_partial_runs(dtype):
    """Several groups of samples and jobs (small blocks), two threads, the odd problems."""
    with cl.thread_count(2), pytest.MonkeyPatch.context() as patch:
        patch.setattr(_winograd_compiled, "FUSED_BLOCK_BYTES", 2**12)
        patch.setattr(_winograd_compiled, "FUSED_BLOCK_TILES", 1)
        patch.setattr(_winograd_compiled, "CHANNELS_LAST_BYTES", 2**12)
        assert_direct_sums(fused_winograd_conv, ODD_PROBLEMS, dtype, seed=7)


@pytest.mark.parametrize("jobs", [1, 2, 1000], ids=["one-a-thread", "two-a-thread", "a-row-each"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_channels_last_copy_in_few_or_many_jobs(jobs, dtype):
    """The channels-last copy's jobs (:func:`._winograd_compiled._copy_channels_last`): one or two ranges of
    the buffer's rows per thread, or a row each, on three threads, with the border's zeros written in the jobs
    (an uninitialised buffer), in the BLAS products and (1-d and 2-d) the pooled ones."""
    with cl.thread_count(3), pytest.MonkeyPatch.context() as patch:
        patch.setattr(_winograd_compiled, "COPY_JOBS_PER_THREAD", jobs)
        problems = [((7, 16, 4, 4), (32, 16, 3, 3), dict(padding=1)),
                    ((7, 8, 37, 45), (12, 4, 3, 3), dict(padding=((1, 2), (0, 1)), groups=2)),
                    ((7, 4, 5, 6, 7), (6, 4, 3, 3, 3), dict(padding=1))]
        assert_direct_sums(compiled_winograd_conv, problems, dtype, seed=11)
        assert_direct_sums(lambda *args: compiled_winograd_conv(*args, blas=False), problems[:2], dtype, seed=12)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("source_shape, buffer_size, lows", [
    ((3, 40, 1, 7, 7), (1, 10, 10), (0, 1, 1)),  # rows narrower than a square: a column at a time
    ((2, 37, 1, 5, 35), (1, 9, 40), (0, 2, 3)),  # two whole squares of columns, then three; channels past 32
    ((2, 16, 1, 3, 16), (1, 3, 16), (0, 0, 0)),  # exactly one square, no border
    ((2, 5, 4, 3, 18), (7, 6, 22), (2, 1, 0)),  # three axes, borders on every side, fewer channels than a square
], ids=["narrow", "squares", "one-square", "3d"])
def test_channels_last_rows_against_numpy(source_shape, buffer_size, lows, dtype):
    """The compiled copy (:func:`._kernels_winograd.channels_last_rows`) writes every cell of its rows: the
    source's cells where they fall, zeros around them (a buffer of NaN before), from a sample offset, and only
    its own rows."""
    kernels = _compiled.kernels("winograd")
    rng = np.random.default_rng(5)
    source = rng.standard_normal(source_shape).astype(dtype)
    first, samples = 1, source_shape[0] - 1
    expected = np.zeros((samples, *buffer_size, source_shape[1]), dtype=dtype)
    inside = tuple(slice(low, low + size) for low, size in zip(lows, source_shape[2:]))
    expected[(slice(None), *inside)] = np.moveaxis(source[first:], 1, -1)
    target = np.full_like(expected, np.nan)
    rows = samples * buffer_size[0] * buffer_size[1]
    kernels.channels_last_rows(source, target, first, 0, rows // 2, *lows)
    flat_rows = target.reshape(rows, -1)
    assert np.isnan(flat_rows[rows // 2:]).all()  # the other rows untouched
    kernels.channels_last_rows(source, target, first, rows // 2, rows, *lows)
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", [case for case in CASES if case.rank <= 2][:20], ids=str)
def test_pooled_products_agree_with_the_numpy_transforms(case, tile, dtype):
    """The products on the pool (the filters in panels, the channels added in their order): the same sums within
    the bound of two orders."""
    assert_numpy_transforms_sums(lambda *args: compiled_winograd_conv(*args, blas=False), case, tile, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_pooled_products_over_blocks_threads_groups_and_partial_panels(dtype):
    """Several blocks of tiles (a small workspace), three threads sharing the tile positions, the odd problems in
    1-2 dimensions (filters ending inside a panel, 70 filters past a whole one); and through the public op, a
    view of an unbatched input and an empty batch."""
    with cl.thread_count(3), cl.workspace_limit(2**16):
        assert_direct_sums(lambda *args: compiled_winograd_conv(*args, blas=False),
                           [problem for problem in ODD_PROBLEMS if len(problem[0]) <= 4], dtype, seed=8)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((40, 19, 2 * 23)).astype(dtype)[:, :, ::2]  # unbatched, every other column
    w = rng.standard_normal((33, 40, 3, 3)).astype(dtype)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(winograd_module, "_pooled", lambda spec, dtype: spec.rank <= 2)
        for tile in TILES:
            got = cl.conv2d(x, w, padding=1, algorithm=f"winograd{tile}")
            expected = cl.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, algorithm="direct")
            tolerance = (1e-4 if dtype == np.float32 else 1e-12) * np.abs(expected).max()
            np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)
            empty = cl.conv2d(np.zeros((0, 40, 9, 9), dtype), w, padding=1, algorithm=f"winograd{tile}")
            assert empty.shape == (0, 33, 9, 9) and empty.dtype == dtype
            # the input gradient's full correlation, as the engine makes it: its kernel a swapped, reversed view of
            # the forward's weight, which the filter transform reads as it is
            g = rng.standard_normal((2, 33, 19, 23)).astype(dtype)
            spec = cl.conv_spec((2, *x.shape), w.shape, padding=1)
            full_spec, on_input, _ = _grad_problems.full_problem(spec)
            kernel = oriented_kernel(w.reshape(1, 33, 40, 3, 3).swapaxes(1, 2).reshape(40, 33, 3, 3), full_spec.flip)
            assert on_input and _winograd_compiled._swapped_source(kernel, full_spec) is not None
            got = ALGORITHMS[f"winograd{tile}"].run_unpadded(g, kernel, full_spec)
            expected = cl.grad.conv_input((2, *x.shape), w.astype(np.float64), g.astype(np.float64), padding=1,
                                          algorithm="scatter")
            tolerance = (1e-4 if dtype == np.float32 else 1e-12) * np.abs(expected).max()
            np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("swapped", [False, True], ids=["forward", "swapped"])
def test_filter_panels_over_spans_of_channels(swapped, tile, dtype):
    """The panels' transform, channels taken a span (:data:`PANEL_SPAN`) at a time: ``G g G^T`` of every filter in
    its panel, zeros past the last filter, against NumPy's product with the generated ``G``. Channels past two whole
    spans and not a whole gather chunk (150), filters ending inside a panel (70), two groups, three threads; the
    swapped source is the input gradient's kernel, a swapped and reversed view of the forward's weight (one group,
    where the engine's swap is a view). Each
    thread's scratch is within what :func:`panel_scratch_bytes` counts."""
    groups, channels, filters = 1 if swapped else 2, 2 * _winograd_compiled.PANEL_SPAN + 22, 70
    rng = np.random.default_rng(12)
    if swapped:  # the full correlation's kernel (G*C, O, 3, 3) viewed on the forward's weight (G*O, C, 3, 3)
        forward = rng.standard_normal((groups * channels, filters, 3, 3)).astype(dtype)
        kernel = forward.reshape(groups, channels, filters, 3, 3).swapaxes(1, 2).reshape(
            groups * filters, channels, 3, 3)[:, :, ::-1, ::-1]
        spec = cl.conv_spec((1, groups * channels, 9, 9), kernel.shape, padding=1, groups=groups)
        assert _winograd_compiled._swapped_source(kernel, spec) is not None
    else:
        kernel = rng.standard_normal((groups * filters, channels, 3, 3)).astype(dtype)
        spec = cl.conv_spec((1, groups * channels, 9, 9), kernel.shape, padding=1, groups=groups)
    lanes = 32
    sizes = []
    real_empty = np.empty

    def counted_empty(shape, *args, **kwargs):  # the scratch the wrapper makes per thread: 1-d, not the kept bytes
        array = real_empty(shape, *args, **kwargs)
        if array.ndim == 1 and array.dtype != np.uint8:
            sizes.append(array.nbytes)
        return array

    with cl.thread_count(3), pytest.MonkeyPatch.context() as patch:
        patch.setattr(_winograd_compiled.np, "empty", counted_empty)
        panels = _winograd_compiled._filter_panels(kernel, spec, tile, lanes)
    _, g_matrix, _ = winograd_matrices(tile, 3)
    grouped = np.ascontiguousarray(kernel).astype(np.float64).reshape(groups, filters, channels, 3, 3)
    transformed = np.einsum("pi,gocij,qj->gpqco", g_matrix, grouped, g_matrix)
    expected = np.zeros((groups, (tile + 2)**2, -(-filters // lanes) * lanes, channels))
    expected[:, :, :filters] = transformed.reshape(groups, (tile + 2)**2, channels, filters).swapaxes(2, 3)
    expected = expected.reshape(groups, (tile + 2)**2, -1, lanes, channels).swapaxes(3, 4)  # (G, P, R, C, lanes)
    tolerance = (1e-6 if dtype == np.float32 else 1e-14) * np.abs(expected).max()
    np.testing.assert_allclose(panels, expected, rtol=0, atol=tolerance)
    assert np.all(panels[:, :, -1, :, filters % lanes:] == 0)  # exactly zeros past the last filter
    per_thread = _winograd_compiled.panel_scratch_bytes(spec, tile, np.dtype(dtype).itemsize)
    assert sizes and len(sizes) % 2 == 0 and all(
        sum(sizes[i:i + 2]) <= per_thread for i in range(0, len(sizes), 2))
    if not swapped:  # the bound is reached where the spans are used
        assert sum(sizes[:2]) == per_thread


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", [case for case in CASES if case.padding_mode == "zeros"][:12], ids=str)
def test_padding_read_as_the_tiles_go_is_the_padded_input(case, tile):
    """``run_unpadded`` reads zero padding where the tiles reach it: exactly ``run`` on the padded input."""
    x, w, _ = case.arrays(np.float64)
    x = batched(case, x)
    spec = cl.conv_spec(x.shape, w.shape, **case.kwargs())
    padded, _, _ = padded_problem(case, np.float64)
    np.testing.assert_array_equal(ALGORITHMS[f"winograd{tile}"].run_unpadded(x, w, spec),
                                  ALGORITHMS[f"winograd{tile}"].run(padded, w, spec))


@pytest.fixture
def winograd_everywhere(request, monkeypatch):
    """The planner picks ``winograd{tile}`` for every problem it can run (its estimate is zero), whatever its
    channels (the planner's accuracy rule would keep these small cases from it)."""
    tile = request.param
    monkeypatch.setattr(planner, "WINOGRAD_MIN_CHANNELS", 1)

    class Everywhere(Winograd):
        automatic = True

        def estimate(self, spec, dtype):
            return 0.0

    name = f"winograd{tile}"
    original = ALGORITHMS[name]
    unregister(name)
    register(Everywhere(tile))
    try:
        yield name
    finally:
        unregister(name)
        register(original)


def three_passes(x, w, g, **kwargs):
    return (cl.conv(x, w, **kwargs), cl.grad.conv_input(x.shape, w, g, **kwargs),
            cl.grad.conv_weight(x, w.shape, g, **kwargs))


#: Error allowed against PyTorch, relative to the largest magnitude of an output's terms (normwise: with these
#: few channels an output whose own terms are small takes the rounding of its tile's larger values): the
#: planner's bound for float32, the rounding of a few hundred terms through the transforms for float64.
RELATIVE_TO_TERMS = {np.float32: planner.WINOGRAD_ERROR_BOUND, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("winograd_everywhere", TILES, indirect=True)
@pytest.mark.parametrize("case", [case for case in CASES if case.batch > 0][::3], ids=str)
def test_forward_and_gradients_agree_with_torch(case, dtype, winograd_everywhere):
    """Through the public ops: the forward, and the input gradient's "full" correlation, run Winograd."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    x, w, _ = case.arrays(dtype)
    g = np.random.default_rng(9).standard_normal(case.output_shape).astype(dtype)
    kwargs = case.kwargs()
    chosen = cl.plan(batched(case, x).shape, w.shape, dtype, **kwargs)
    assert chosen.algorithm == winograd_everywhere
    functional = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}
    xt = torch.tensor(batched(case, x), requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    out_t = functional[case.rank](torch_padded(torch, xt, case), wt, None, case.strides, 0, case.dilations, case.groups)
    out_t.backward(torch.tensor(batched(case, g)))
    f64 = lambda a: np.abs(a).astype(np.float64)  # noqa: E731
    with cl.thread_count(2):
        got = (cl.conv(x, w, **kwargs), cl.grad.conv_input(x.shape, w, g, **kwargs),
               cl.grad.conv_weight(x, w.shape, g, **kwargs))
    terms = (cl.conv(f64(x), f64(w), **kwargs, algorithm="direct"),
             cl.grad.conv_input(x.shape, f64(w), f64(g), **kwargs, algorithm="scatter"),
             cl.grad.conv_weight(f64(x), w.shape, f64(g), **kwargs, algorithm="im2col"))
    expected = (out_t.detach().numpy(), xt.grad.numpy(), wt.grad.numpy())
    for actual, reference, magnitude, unbatch in zip(got, expected, terms, (True, True, False)):
        if unbatch:
            reference = reference if case.batched else reference[0]
        assert actual.dtype == dtype and actual.shape == reference.shape
        error = np.abs(actual.astype(np.float64) - reference)
        assert np.all(error <= RELATIVE_TO_TERMS[dtype] * magnitude.max()), np.max(error) / magnitude.max()


@pytest.mark.parametrize("threads, channels, path", [(2, 64, "fused"), (1, 64, "blas"), (2, 256, "pool"),
                                                     (2, 512, "pool"), (1, 512, "pool"), (1, 256, "blas")])
def test_the_fused_path_runs_on_threads_with_filters_that_fit(threads, channels, path, monkeypatch):
    """More than one thread and filters of at most FUSED_FILTER_BYTES per tile position: the fused forward; else
    the products on the pool on more than one thread or with POOLED_FILTER_BYTES of filters per position, else on
    the BLAS. All give the direct sum within Winograd's rounding."""
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, channels, 12, 11)).astype(np.float32)
    w = (rng.standard_normal((channels, channels, 3, 3)) / channels).astype(np.float32)
    ran = []
    paths = {"fused_winograd_conv": lambda **options: "fused",
             "compiled_winograd_conv": lambda blas=True: "blas" if blas else "pool"}
    for name, which in paths.items():
        original = getattr(winograd_module, name)
        monkeypatch.setattr(winograd_module, name, lambda *args, original=original, which=which, **options: (
            ran.append(which(**options)), original(*args, **options))[1])
    # a small problem, shared all the same: the path's choice reads the thread count where the wrappers live
    monkeypatch.setattr(_winograd_compiled, "threads_for", lambda work: threads)
    with cl.thread_count(threads):
        got = cl.conv2d(x, w, padding=1, algorithm="winograd4")
    assert ran == [path]
    expected = cl.conv2d(x, w, padding=1, algorithm="direct")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("tile", TILES)
def test_larger_blocks_threads_groups_and_a_view(tile):
    """Several blocks of tile rows (a small workspace), jobs shared among threads, groups, 3-d and 1-d, an
    input that is not contiguous and read-only arrays."""
    rng = np.random.default_rng(tile)
    problems = [((3, 8, 37, 45), (12, 4, 3, 3), dict(padding=(1, 2), groups=2)),
                ((2, 4, 9, 10, 11), (6, 4, 3, 3, 3), dict(padding=1)),
                ((2, 6, 301), (4, 6, 3), dict(padding=((0, 3),)))]
    for input_shape, weight_shape, params in problems:
        x = rng.standard_normal((*input_shape[:-1], 2 * input_shape[-1]))[..., ::2]  # every other column: a view
        w = rng.standard_normal(weight_shape)
        x.flags.writeable = w.flags.writeable = False
        expected = cl.conv(x, w, **params, algorithm="direct")
        with cl.workspace_limit(64 * 2**10), cl.thread_count(3):
            got = cl.conv(x, w, **params, algorithm=f"winograd{tile}")
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("path", ["blas", "pooled", "fused"])
@pytest.mark.parametrize("tile", TILES)
def test_kept_filter_buffers_carry_nothing_from_one_call_to_the_next(tile, path):
    """The transformed filters live in the thread's kept scratch: two calls with different weights on each path
    each agree with direct, and the second call's filters are written where the first's were."""
    rng = np.random.default_rng(20 + tile)
    spec = cl.conv_spec((2, 12, 11, 10), (10, 12, 3, 3), padding=1)
    x = rng.standard_normal(spec.input_shape)
    buffers = []
    with cl.thread_count(2):
        for _ in range(2):
            w = rng.standard_normal(spec.weight_shape)
            if path == "fused":
                got = fused_winograd_conv(x, [(1, 1), (1, 1)], w, spec, tile)
                filters, flat = _winograd_compiled._transformed_filters(w, spec, tile, spare=32)
                assert np.shares_memory(filters, flat) and np.all(flat[filters.size:] == 0)
            else:
                got = compiled_winograd_conv(x, [(1, 1), (1, 1)], w, spec, tile, blas=path == "blas")
                filters = (_winograd_compiled._transformed_filters(w, spec, tile)[0] if path == "blas" else
                           _winograd_compiled._filter_panels(w, spec, tile, 32))
            buffers.append(filters)
            np.testing.assert_allclose(got, cl.conv(x, w, padding=1, algorithm="direct"), rtol=1e-10, atol=1e-10)
    assert np.shares_memory(*buffers)


@pytest.mark.parametrize("tile", TILES)
def test_without_numba_the_numpy_transforms_run(tile, without_numba):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 10, 9)), rng.standard_normal((4, 3, 3, 3))
    spec = cl.conv_spec(x.shape, w.shape, padding=1)
    from convolab._window import pad

    padded = pad(x, spec.padding, spec.padding_mode)
    np.testing.assert_array_equal(cl.conv2d(x, w, padding=1, algorithm=f"winograd{tile}"),
                                  winograd_conv(padded, w, spec, tile))


# -- the plan: where "auto" takes Winograd, and the data it keeps from it -------------------------------------


@pytest.mark.parametrize("input_shape, weight_shape, params, winograd", [
    ((8, 128, 28, 28), (128, 128, 3, 3), dict(padding=1), True),  # ResNet-18 layer2: measured 1.5x folded's speed
    ((8, 256, 14, 14), (256, 256, 3, 3), dict(padding=1), True),  # layer3
    # layer4: F(2), its filters in panels and its products on the pool: in session 11 gemm measured faster on two
    # threads (9.4 against 12.8 ms); in session 20 F(2) did (8.8-9.7 against 10.9-11.5, the BLAS slower by then)
    ((8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1), True),
    ((8, 64, 56, 56), (128, 64, 3, 3), dict(padding=1, stride=2), False),  # strided: no tiles
    ((8, 8, 56, 56), (8, 8, 3, 3), dict(padding=1), False),  # few channels: the accuracy rule
    ((2, 32, 16, 32, 32), (32, 32, 3, 3, 3), dict(padding=1), False),  # 3-d: no cost model fitted
])
def test_auto_picks_winograd_where_it_measured_faster(input_shape, weight_shape, params, winograd):
    chosen = cl.plan(input_shape, weight_shape, "float32", **params)
    assert chosen.algorithm.startswith("winograd") == winograd, str(chosen)


WIDE = ((2, 128, 28, 28), (128, 128, 3, 3))


def wide_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random(WIDE[0]).astype(np.float32)
    w = (rng.standard_normal(WIDE[1]) / 34).astype(np.float32)
    return x, w


def relative_to_terms(got, x, w, padding=1):
    exact = cl.conv2d(x.astype(np.float64), w.astype(np.float64), padding=padding, algorithm="gemm")
    terms = cl.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), padding=padding, algorithm="gemm")
    return float((np.abs(got - exact) / terms).max())


def test_ordinary_data_get_winograd_within_the_bound():
    x, w = wide_problem()
    spec = cl.conv_spec(x.shape, w.shape, padding=1)
    from convolab._window import pad

    chosen = planner.plan_for_arrays(spec, np.dtype(np.float32), pad(x, spec.padding, spec.padding_mode), w)
    assert chosen.algorithm.startswith("winograd")
    assert relative_to_terms(cl.conv2d(x, w, padding=1), x, w) <= planner.WINOGRAD_ERROR_BOUND


@pytest.mark.parametrize("spike", [1e4, np.inf, np.nan])
def test_a_spike_or_a_non_finite_value_keeps_auto_from_winograd(spike):
    x, w = wide_problem(1)
    x[1, 5, 7, 9] = spike
    spec = cl.conv_spec(x.shape, w.shape, padding=1)
    from convolab._window import pad

    assert cl.plan(x.shape, w.shape, "float32", padding=1).algorithm.startswith("winograd")  # by shapes alone
    chosen = planner.plan_for_arrays(spec, np.dtype(np.float32), pad(x, spec.padding, spec.padding_mode), w)
    assert not chosen.algorithm.startswith("winograd"), str(chosen)
    with np.errstate(invalid="ignore", over="ignore"):
        got, direct = cl.conv2d(x, w, padding=1), cl.conv2d(x, w, padding=1, algorithm="direct")
    for mask in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(mask(got), mask(direct))
    if np.isfinite(spike):
        assert relative_to_terms(got, x, w) < 1e-5  # a summing algorithm's rounding, not the tiles'


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("where", [0, 7, -1])
@pytest.mark.parametrize("value", [None, -1e6, np.inf, -np.inf, np.nan, "zeros"])
def test_the_compiled_data_check_gives_numpys_traits(value, where, dtype, monkeypatch):
    """The one-pass compiled check of "auto" (largest magnitude from the values' bits, the median's sample taken
    as it goes) gives the traits NumPy's passes give: the same peak, the same sample, the same inf or NaN."""
    from convolab.algorithms._compiled import numba_missing

    assert numba_missing() is None
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 64, 33, 31)).astype(dtype)  # more values than a thread's share: two threads
    if value == "zeros":
        x[:] = 0
    elif value is not None:
        x.reshape(-1)[where] = value
    w = rng.standard_normal((4, 64, 3, 3)).astype(dtype)
    calls = []
    compiled_pass = planner._peak_and_sample
    monkeypatch.setattr(planner, "_peak_and_sample", lambda *args: calls.append(1) or compiled_pass(*args))
    monkeypatch.setattr(planner, "_CHECK_VALUES_PER_THREAD", 2**16)
    with cl.thread_count(2):
        got = planner.data_traits(x, w, transform_length=64)
    assert calls and compiled_pass(x, 17) is not None  # the compiled pass ran
    monkeypatch.setattr(planner, "_peak_and_sample", lambda *args: None)
    assert got == planner.data_traits(x, w, transform_length=64)
    assert compiled_pass(x[:, :, :, ::2], 17) is None  # not contiguous: NumPy's passes


def test_auto_reads_zero_padding_in_place_and_pads_other_modes(monkeypatch):
    """With zero padding "auto" checks the input itself and the tiles read the zeros as they go (no padded copy);
    with another mode the engine pads first, as before. Both within the bound of the direct sum."""
    x, w = wide_problem(2)
    calls = []
    run, run_unpadded = Winograd.run, Winograd.run_unpadded
    monkeypatch.setattr(Winograd, "run", lambda self, *args: calls.append("padded") or run(self, *args))
    monkeypatch.setattr(Winograd, "run_unpadded",
                        lambda self, *args: calls.append("unpadded") or run_unpadded(self, *args))
    got = cl.conv2d(x, w, padding=1)
    assert calls == ["unpadded"]
    assert relative_to_terms(got, x, w) <= planner.WINOGRAD_ERROR_BOUND
    calls.clear()
    reflected = cl.conv2d(x, w, padding=1, padding_mode="reflect")
    assert calls == ["padded"]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    assert relative_to_terms(reflected, padded, w, padding=0) <= planner.WINOGRAD_ERROR_BOUND
