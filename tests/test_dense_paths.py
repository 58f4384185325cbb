"""The dense layers' fast paths: the straight-line Winograd input transform (:mod:`convolab.algorithms._kernels_winograd`).

The straight-line kernel computes the loops' sums with the zero coefficients
left out and, per output, the same terms in an order of its own: against the
NumPy transforms it is held to :func:`test_compiled_winograd.order_bound`
(``n * eps`` times the magnitudes of every intermediate term). The channel
counts cover whole blocks of :data:`~convolab.algorithms._kernels_winograd.CHANNEL_BLOCK`
channels, a block and a remainder, and fewer channels than one block.
"""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab._window import pad
from convolab.algorithms import _kernels_winograd
from convolab.algorithms._winograd_compiled import compiled_winograd_conv
from convolab.algorithms.winograd import winograd_conv
from test_compiled_winograd import TILES, order_bound, transform_magnitude

BLOCK = _kernels_winograd.CHANNEL_BLOCK
PROBLEMS = [  # (input shape, weight shape, padding, groups): channels per group around the channel block
    ((2, BLOCK, 11, 13), (5, BLOCK, 3, 3), ((1, 1), (1, 1)), 1),
    ((3, 2 * BLOCK + 7, 9, 10), (6, 2 * BLOCK + 7, 3, 3), ((0, 2), (1, 0)), 1),
    ((1, 2 * (BLOCK - 3), 7, 8), (4, BLOCK - 3, 3, 3), ((1, 1), (2, 1)), 2),
    ((2, BLOCK + 1, 40), (3, BLOCK + 1, 3), ((1, 2),), 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda problem: f"{problem[0]}-g{problem[3]}")
def test_straight_input_transform_agrees_with_the_numpy_transforms(problem, tile, dtype):
    input_shape, weight_shape, padding, groups = problem
    rng = np.random.default_rng(len(input_shape) * 10 + tile)
    x = rng.standard_normal(input_shape).astype(dtype)
    w = rng.standard_normal(weight_shape).astype(dtype)
    spec = cl.conv_spec(x.shape, w.shape, padding=padding, groups=groups)
    padded = pad(x, spec.padding, spec.padding_mode)
    with cl.thread_count(2):
        got = compiled_winograd_conv(padded, ((0, 0),) * spec.rank, w, spec, tile)
    expected = winograd_conv(padded, w, spec, tile)
    bound = order_bound(spec, tile, transform_magnitude(padded, w, spec, tile), dtype)
    assert got.dtype == dtype and got.shape == expected.shape
    assert np.all(np.abs(got.astype(np.float64) - expected) <= bound)


def test_straight_input_transform_keeps_only_the_nonzero_coefficients():
    """F(2)'s ``B^T`` rows have two nonzeros each: every transformed value of a 1-d tile reads two inputs."""
    source = _kernels_winograd._straight_input_source(2, 1, "probe")
    sums = [line.split("=", 1)[1] for line in source.splitlines() if line.strip().startswith("t2_")]
    assert len(sums) == 2 * 4  # the full block's loop and the remainder's, four positions each
    assert all(expression.count("d_") == 2 for expression in sums)


def test_each_tile_size_and_rank_has_a_kernel_of_its_own_cached_with_the_module():
    """Numba keys its on-disk cache by the function's file and name: a kernel per (tile, rank), under the module's
    file, so the cache is found again and two kernels never share an entry."""
    names = set()
    for tile in TILES:
        for rank in (1, 2):
            kernel = _kernels_winograd._straight_input_tiles(tile, rank, "float64")
            assert kernel.py_func.__code__.co_filename == _kernels_winograd.__file__
            names.add(kernel.py_func.__name__)
    assert len(names) == 2 * len(TILES)


def test_auto_keeps_winograd_within_the_workspace_limit():
    """A large image's channels-last copy and "auto"'s padded copy would exceed the limit: the summing algorithms'
    blocks stay within it (the peak-memory problem of the benchmark); with room, Winograd is estimated faster than
    gemm and folded."""
    image = ((1, 64, 1024, 1024), (64, 64, 3, 3))
    tight = cl.plan(*image, "float32", padding=1)
    assert not tight.algorithm.startswith("winograd") and tight.estimates["winograd4"] == np.inf
    with cl.workspace_limit(2**30):
        roomy = cl.plan(*image, "float32", padding=1)
    assert roomy.estimates["winograd4"] < min(roomy.estimates["gemm"], roomy.estimates["folded"])
    resnet = ((8, 64, 56, 56), (64, 64, 3, 3))
    resnet_plan = cl.plan(*resnet, "float32", padding=1)
    assert "winograd4" not in resnet_plan.refused and resnet_plan.estimates["winograd4"] < resnet_plan.estimates["gemm"]


FILTER_PROBLEMS = [  # (rank, groups, filters per group, channels per group): whole and partial blocks of filters,
    (2, 1, 64, 64),  # channels past a gathered block of FILTER_CHANNELS, groups that end inside one
    (2, 3, 33, 20),
    (2, 2, 3, 4),
    (1, 1, 17, 9),
    (3, 2, 5, 3),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("problem", FILTER_PROBLEMS, ids=lambda problem: "-".join(map(str, problem)))
def test_filter_transform_is_the_kronecker_product_of_g(problem, tile, dtype):
    """``U = G g G^T`` of every filter, laid out ``(G, P, C, O)``: against ``(G ⊗ ... ⊗ G) @ taps`` in float64.
    Each value sums at most ``3^rank`` products of the generated coefficients, whose magnitudes are at most 4:
    the straight-line code drops the zero coefficients and adds in its own order, so the two agree within a few
    units of rounding of those terms."""
    from convolab.algorithms._winograd_compiled import _transformed_filters
    from convolab.algorithms.winograd import winograd_matrices

    rank, groups, out_channels, channels = problem
    rng = np.random.default_rng(rank * 100 + groups)
    w = rng.standard_normal((groups * out_channels, channels, *(3,) * rank)).astype(dtype)
    spec = cl.conv_spec((1, groups * channels, *(8,) * rank), w.shape, padding=1, groups=groups)
    with cl.thread_count(2):
        got, _ = _transformed_filters(w, spec, tile)
    _, g, _ = winograd_matrices(tile, 3)
    transform = np.ones((1, 1))
    for _ in range(rank):
        transform = np.kron(transform, g)
    taps = w.astype(np.float64).reshape(groups, out_channels, channels, -1)
    expected = np.einsum("pk,gock->gpco", transform, taps)
    magnitude = np.einsum("pk,gock->gpco", np.abs(transform), np.abs(taps))
    assert got.dtype == dtype and got.shape == expected.shape and got.flags.c_contiguous
    assert np.all(np.abs(got - expected) <= 4 * 3**rank * np.finfo(dtype).eps * magnitude)


@pytest.mark.parametrize("in_panels", [True, False], ids=["panels", "rows"])
@pytest.mark.parametrize("swapped", [False, True], ids=["forward", "swapped"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("problem", [p for p in FILTER_PROBLEMS if p[0] < 3] + [(2, 1, 70, 40)],
                         ids=lambda problem: "-".join(map(str, problem)))
def test_filter_panels_are_the_kronecker_product_of_g(problem, tile, dtype, swapped, in_panels):
    """The filters in panels of LANES, ``(G, P, R, C, LANES)`` (or ``(G, P, C, O)`` for the BLAS): the same values
    as ``(G ⊗ ... ⊗ G) @ taps`` (within the same bound as above), zeros past the last filter (panels partly
    filled: 70 filters, 33, 3). ``swapped``: the kernel is the forward's weight with its channels swapped per
    group and its taps reversed, as the input gradient's full correlation makes it (a view with one group, read
    as it is; a copy with more)."""
    from convolab.algorithms._kernels_tiled import LANES
    from convolab.algorithms._winograd_compiled import _filter_panels, _swapped_source, _transformed_filters
    from convolab.algorithms.winograd import winograd_matrices

    rank, groups, out_channels, channels = problem
    rng = np.random.default_rng(rank * 100 + groups + swapped)
    stored = (channels, out_channels) if swapped else (out_channels, channels)
    w = rng.standard_normal((groups * stored[0], stored[1], *(3,) * rank)).astype(dtype)
    kernel = w
    if swapped:  # (G*C, O, *3) -> (G*O, C, *3), reversed
        kernel = w.reshape(groups, *stored, *(3,) * rank).swapaxes(1, 2).reshape(w.shape[1] * groups, -1,
                                                                                 *(3,) * rank)
        kernel = np.flip(kernel, axis=tuple(range(2, 2 + rank)))
    spec = cl.conv_spec((1, groups * channels, *(8,) * rank), (groups * out_channels, channels, *(3,) * rank),
                        padding=1, groups=groups)
    source = _swapped_source(kernel, spec)
    assert (source is not None and np.shares_memory(source, w)) == (swapped and groups == 1)
    with cl.thread_count(2):
        got = _filter_panels(kernel, spec, tile, LANES) if in_panels else _transformed_filters(kernel, spec, tile)[0]
    _, g, _ = winograd_matrices(tile, 3)
    transform = np.ones((1, 1))
    for _ in range(rank):
        transform = np.kron(transform, g)
    taps = kernel.astype(np.float64).reshape(groups, out_channels, channels, -1)  # the kernel's own taps
    runs = -(-out_channels // LANES) if in_panels else 1
    lanes = LANES if in_panels else out_channels
    expected, magnitude = (np.zeros((groups, transform.shape[0], channels, runs * lanes)) for _ in range(2))
    expected[..., :out_channels] = np.einsum("pk,gock->gpco", transform, taps)
    magnitude[..., :out_channels] = np.einsum("pk,gock->gpco", np.abs(transform), np.abs(taps))
    if in_panels:
        as_panels = (groups, transform.shape[0], channels, runs, LANES)
        expected, magnitude = (a.reshape(as_panels).transpose(0, 1, 3, 2, 4) for a in (expected, magnitude))
    assert got.dtype == dtype and got.shape == expected.shape and got.flags.c_contiguous
    assert np.all(np.abs(got - expected) <= 4 * 3**rank * np.finfo(dtype).eps * magnitude)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("channels, out_channels, tiles", [(64, 64, 16), (37, 70, 24), (5, 3, 8), (300, 33, 8)])
def test_panel_products_are_the_matrix_products(channels, out_channels, tiles, dtype):
    """``panel_products`` against NumPy's ``(P, T, C) @ (P, C, O)`` in float64, within the summation-order bound
    ``C * eps * sum |terms|`` (both add the same C products per value, in another order), where the filters'
    panels are only partly filled and the tiles' rows and the products' rows are wider than one group's, at an
    offset (a second group); tiles past ``tiles`` in the layout are left as they were."""
    from convolab.algorithms._compiled import kernels

    fused = kernels("winograd_fused")
    step = fused.TILES_WIDE if dtype == np.float32 else fused.TILES_NARROW
    rng = np.random.default_rng(channels)
    positions, layout, in_width, out_width = 3, tiles + 1, 2 * channels, 2 * out_channels
    inputs = rng.standard_normal((positions, layout, in_width)).astype(dtype)
    filters = rng.standard_normal((positions, channels, out_channels)).astype(dtype)
    runs = -(-out_channels // fused.LANES)
    panels = np.zeros((positions, channels, runs * fused.LANES), dtype=dtype)
    panels[..., :out_channels] = filters
    panels = np.ascontiguousarray(panels.reshape(positions, channels, runs, fused.LANES).transpose(0, 2, 1, 3))
    products = np.full((positions, layout, out_width), 7.0, dtype=dtype)
    fused.panel_products(inputs.reshape(-1), panels.reshape(-1), products.reshape(-1), positions, tiles, channels,
                         out_channels, in_width, channels, out_width, out_channels, step, layout)
    block = inputs[:, :tiles, channels:].astype(np.float64)
    expected = block @ filters.astype(np.float64)
    magnitude = np.abs(block) @ np.abs(filters.astype(np.float64))
    assert np.all(np.abs(products[:, :tiles, out_channels:] - expected)
                  <= channels * np.finfo(dtype).eps * magnitude)
    assert np.all(products[:, :tiles, :out_channels] == 7) and np.all(products[:, tiles:] == 7)
