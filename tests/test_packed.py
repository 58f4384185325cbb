"""The packed algorithm (gemm's columns and products in compiled jobs, no BLAS): against direct, gemm and PyTorch,
its inf/NaN pattern, its refusals, its fallback without Numba, and what "auto" makes of its estimate.

Its sums are the direct sum's terms in another order (each output's ``K`` terms in (channel, tap) order, one
multiply-add at a time, in chunks of channels resumed from the output), so results agree with "direct" within
the bound of any summation order of those terms (as in test_algorithms.py): ``terms * eps`` times the sum of
their magnitudes.
"""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab.algorithms import ALGORITHMS
from convolab.algorithms import packed as packed_module
from conv_cases import generate_cases
from test_compiled import assert_within, run_python, summation_bound
from test_depthwise import batched, torch_padded
from test_nonfinite import assert_same_pattern

PACKED = ALGORITHMS["packed"]
DTYPES = [np.float32, np.float64]
#: Generated cases: every rank, padding kind and mode, groups, strides, dilations, empty batches, unbatched inputs.
CASES = generate_cases(80, seed=21)


def _magnitude(x, w, **kwargs):
    """Per output, the sum of its terms' magnitudes (gemm on absolute values, in float64)."""
    return cl.conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), **kwargs, algorithm="gemm")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_agrees_with_direct(case, dtype):
    x, w, _ = case.arrays(dtype)
    kwargs = case.kwargs()
    out = cl.conv(x, w, **kwargs, algorithm="packed")
    assert_within(out, cl.conv(x, w, **kwargs, algorithm="direct"),
                  summation_bound(case.terms_per_output, _magnitude(x, w, **kwargs), dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", [case for case in CASES if case.batch > 0][::3], ids=str)
def test_agrees_with_torch(case, dtype):
    torch = pytest.importorskip("torch")
    x, w, _ = case.arrays(dtype)
    functional = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}
    expected = functional[case.rank](torch_padded(torch, torch.tensor(batched(case, x)), case), torch.tensor(w),
                                     None, case.strides, 0, case.dilations, case.groups).numpy()
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(batched(case, cl.conv(x, w, **case.kwargs(), algorithm="packed")), expected,
                               **tolerance)


#: Larger problems: channels in several chunks (3x3 kernels: at most 113 channels per chunk), output channels left over
#: after the register tiles (O mod 8, O mod 4), blocks that end mid-row and panels narrower than a run, jobs
#: shared among threads, a stride along every axis, a padding mode other than zeros, a flipped kernel.
LARGER = [
    ((2, 70, 13, 11), (14, 70, 3, 3), dict(padding=(2, 1))),
    ((3, 8, 41, 37), (12, 4, 5, 3), dict(padding=(2, 1), stride=2, dilation=(1, 2), groups=2)),
    ((2, 3, 500), (5, 3, 9), dict(padding=4, stride=2, dilation=2)),
    ((1, 3, 64, 64), (16, 3, 7, 7), dict(padding=3, stride=2, padding_mode="reflect")),
    ((2, 20, 9, 18, 20), (9, 20, 3, 3, 3), dict(padding=1, stride=(2, 1, 3), flip=True)),
    ((4, 130, 7, 7), (33, 130, 3, 3), dict(padding=1)),
    ((5, 12, 13, 14), (18, 4, 3, 3), dict(padding=(1, 2), stride=2, groups=3)),
]


@pytest.mark.parametrize("threads", [2, 3])
def test_the_threads_share_the_jobs_evenly(threads):
    """ResNet-50 layer3.0 (49 runs of all samples' positions, 7 blocks by the cache) and ResNet-18 layer3.0 (5) in
    as many jobs of equal runs (within one) as make a multiple of the threads; ASPP's 2 x 5 already do at two."""
    for shapes, params in [(((8, 256, 28, 28), (256, 256, 3, 3)), dict(stride=2, padding=1)),
                           (((8, 128, 28, 28), (256, 128, 3, 3)), dict(stride=2, padding=1)),
                           (((2, 512, 33, 33), (256, 512, 3, 3)), dict(padding=6, dilation=6))]:
        spec = cl.conv_spec(*shapes, **params)
        with cl.thread_count(threads):
            spans, blocks, _ = packed_module._layout(spec, 4)
        assert (blocks * (1 if spans else spec.batch)) % threads == 0, (shapes, blocks)


def test_blocks_span_samples_where_a_samples_last_run_would_waste_lanes():
    """7x7 and 14x14 outputs leave 31% and 14% of their last runs' lanes unused within one sample, so blocks
    span samples (the larger problems above check the results: 7x7, and 7x7 with three groups); 33x33 (3%) and
    one sample do not."""
    def spans(*shapes, **params):
        with cl.thread_count(2):
            return packed_module._layout(cl.conv_spec(*shapes, **params), 4)[0]

    assert spans((8, 512, 14, 14), (512, 512, 3, 3), stride=2, padding=1)
    assert spans((8, 256, 28, 28), (256, 256, 3, 3), stride=2, padding=1)
    assert spans((5, 12, 13, 14), (18, 4, 3, 3), padding=(1, 2), stride=2, groups=3)
    assert not spans((2, 512, 33, 33), (256, 512, 3, 3), padding=6, dilation=6)
    assert not spans((1, 512, 14, 14), (512, 512, 3, 3), stride=2, padding=1)


@pytest.mark.parametrize("input_shape, weight_shape, params", LARGER)
def test_larger_problems_threaded_and_not_contiguous(input_shape, weight_shape, params):
    rng = np.random.default_rng(sum(input_shape))
    x = rng.standard_normal((*input_shape[:-1], 2 * input_shape[-1]))[..., ::2]  # every other column: a view
    w = rng.standard_normal(weight_shape)
    for array in (x, w):
        array.flags.writeable = False
    with cl.thread_count(3):
        out = cl.conv(x, w, **params, algorithm="packed")
        out32 = cl.conv(x.astype(np.float32), w.astype(np.float32), **params, algorithm="packed")
    expected = cl.conv(x, w, **params, algorithm="gemm")
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out32, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("poisoned", ["input", "weight"])
def test_inf_and_nan_land_where_the_direct_sum_puts_them(poisoned):
    """Zero padding is packed as zeros, so an inf weight meets it as the direct sum's does (NaN); a panel's lanes
    past its positions are computed from whatever the scratch holds and never stored."""
    rng = np.random.default_rng(3)
    params = dict(padding=1, stride=(1, 2), groups=2)
    x, w = rng.standard_normal((2, 120, 12, 14)), rng.standard_normal((10, 60, 3, 3))
    operand = {"input": x, "weight": w}[poisoned]
    operand[0, 1, 2, 1], operand[1, 0, 1, 2] = np.inf, np.nan
    operand[1, 59, 0, 0] = -np.inf
    for dtype in DTYPES:
        with np.errstate(invalid="ignore", over="ignore"):
            got = cl.conv(x.astype(dtype), w.astype(dtype), **params, algorithm="packed")
            expected = cl.conv(x.astype(dtype), w.astype(dtype), **params, algorithm="direct")
        assert_same_pattern(got, expected, 1e-4 if dtype == np.float32 else 1e-10)


#: Padding wide enough that whole panels' leading taps read only zeros (the first and last rows under dilation 6,
#: ASPP's shape; a 3-d one with rows and planes of padding; a 1-d one, whose single row never skips).
SKIPPING = [
    ((2, 6, 33, 33), (9, 6, 3, 3), dict(padding=6, dilation=6)),
    ((1, 3, 7, 6, 40), (4, 3, 3, 3, 3), dict(padding=(4, 3, 1), dilation=(4, 3, 1), stride=(1, 2, 1))),
    ((2, 3, 90), (5, 3, 5), dict(padding=8, dilation=4)),
]


@pytest.mark.parametrize("input_shape, weight_shape, params", SKIPPING)
def test_padding_rows_are_left_out_only_where_every_weight_is_finite(input_shape, weight_shape, params):
    """A panel's taps whose rows lie in the padding for all its positions are left out of its sums where every
    weight is finite (zeros add nothing), and summed where one is not (0 x inf is NaN, as in the direct sum)."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(input_shape), rng.standard_normal(weight_shape)
    skips = packed_module._live_share(cl.conv_spec(input_shape, weight_shape, **params)) < 1
    assert skips == (len(input_shape) > 3)
    for dtype in DTYPES:
        out = cl.conv(x.astype(dtype), w.astype(dtype), **params, algorithm="packed")
        assert_within(out, cl.conv(x.astype(dtype), w.astype(dtype), **params, algorithm="direct"),
                      summation_bound(w[0].size, _magnitude(x, w, **params), dtype))
    w[1, 2, 0], w[2, 0, -1] = np.inf, -np.inf  # a first and a last leading tap: those a panel may leave out
    for dtype in DTYPES:
        with np.errstate(invalid="ignore", over="ignore"):
            got = cl.conv(x.astype(dtype), w.astype(dtype), **params, algorithm="packed")
            expected = cl.conv(x.astype(dtype), w.astype(dtype), **params, algorithm="direct")
        assert np.isnan(expected).any()
        assert_same_pattern(got, expected, 1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex64])
def test_other_dtypes_are_refused_by_name(dtype):
    spec = cl.conv_spec((1, 2, 5, 5), (2, 2, 3, 3))
    assert PACKED.why_not(spec, np.dtype(dtype)).startswith("compiled kernels run float32 and float64 only")
    with pytest.raises(ValueError, match="conv2d: algorithm cannot run this problem: compiled kernels run float32"):
        cl.conv2d(np.ones((1, 2, 5, 5), dtype), np.ones((2, 2, 3, 3), dtype), algorithm="packed")
    assert "1 to 3 spatial dimensions" in PACKED.why_not(cl.conv_spec((1, 1, 3, 3, 3, 3), (1, 1, 1, 1, 1, 1)),
                                                        np.dtype(np.float32))


def test_without_numba_it_says_so_and_auto_falls_back(without_numba):
    spec = cl.conv_spec((8, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1)
    assert PACKED.why_not(spec, np.dtype(np.float32)).startswith("numba is not installed")
    chosen = cl.plan(spec.input_shape, spec.weight_shape, "float32", stride=2, padding=1)
    assert chosen.algorithm != "packed" and chosen.refused["packed"].startswith("numba is not installed")


def test_import_loads_neither_numba_nor_its_kernels():
    out = run_python("""
        import sys
        import convolab as cl
        cl.plan((1, 2, 5, 5), (2, 2, 3, 3), "float16")
        print("numba" in sys.modules, "convolab.algorithms._kernels_packed" in sys.modules)
        """)
    assert out.split() == ["False", "False"]


def test_the_wrapper_lays_out_the_panels_its_kernel_reads():
    # packed.py takes the kernel's run width from compiled.py, so that planning never imports Numba
    from convolab.algorithms._compiled import kernels

    assert packed_module.LANES == kernels("packed").LANES


def test_workspace_is_each_threads_chunk_of_columns():
    spec = cl.conv_spec((8, 128, 56, 56), (128, 128, 3, 3), stride=2, padding=1)
    with cl.thread_count(2):
        workspace = PACKED.workspace_bytes(spec, 4)
    chunk = 64 * 9  # whole channels' taps within CHUNK_ROWS (1024), the 128 channels in two even chunks
    assert packed_module._chunk_channels(spec) == 64
    block = packed_module._block_positions(spec, 4)
    assert block % packed_module.LANES == 0 and chunk * block * 4 <= packed_module.BLOCK_BYTES
    assert workspace == 2 * (chunk * block + packed_module.LANES) * 4


def test_columns_stay_within_the_workspace_limit_or_it_is_refused():
    shapes = ((1, 64, 56, 56), (64, 64, 3, 3))
    spec = cl.conv_spec(*shapes, stride=2, padding=1)
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(shapes[0]).astype(np.float32), rng.standard_normal(shapes[1]).astype(np.float32)
    with cl.thread_count(2), cl.workspace_limit(300_000):  # smaller blocks than the L2 cache's
        assert PACKED.workspace_bytes(spec, 4) <= 300_000 and PACKED.why_not(spec, np.dtype(np.float32)) is None
        got = cl.conv(x, w, stride=2, padding=1, algorithm="packed")
    assert_within(got, cl.conv(x, w, stride=2, padding=1, algorithm="direct"),
                  summation_bound(64 * 9, _magnitude(x, w, stride=2, padding=1), np.float32))
    with cl.thread_count(2), cl.workspace_limit(2**16):  # one run of 32 positions per thread does not fit
        assert "exceeds the workspace limit (0.0625 MiB)" in PACKED.why_not(spec, np.dtype(np.float32))
        assert cl.plan(*shapes, stride=2, padding=1).algorithm != "packed"


def test_spanning_blocks_store_into_the_output_with_no_scratch_of_its_size():
    """Blocks that span samples store each run's lanes into the output's planes, a run that reaches into the next
    sample jumping to that sample's plane: no output-sized array, so they span at a workspace limit far below the
    output's 3 MiB, and give direct's sums there."""
    shapes = ((64, 64, 7, 7), (256, 64, 3, 3))
    spec = cl.conv_spec(*shapes, padding=1)
    output_bytes = 64 * 256 * 7 * 7 * 4
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal(shapes[0]).astype(np.float32), rng.standard_normal(shapes[1]).astype(np.float32)
    with cl.thread_count(1), cl.workspace_limit(2**20):
        assert packed_module._layout(spec, 4)[0]  # 7x7: a sample's last run of 32 would leave most lanes unused
        assert PACKED.workspace_bytes(spec, 4) <= 2**20 < output_bytes
        assert PACKED.why_not(spec, np.dtype(np.float32)) is None
        got = cl.conv(x, w, padding=1, algorithm="packed")
    assert_within(got, cl.conv(x, w, padding=1, algorithm="direct"),
                  summation_bound(64 * 9, _magnitude(x, w, padding=1), np.float32))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_runs_that_pass_several_samples(dtype, threads):
    """3x3 and 2x5 outputs (9 and 10 positions): one run of 32 lanes passes into three or four more samples, each
    lane stored in its own sample's plane; 13 output channels (7 per group) leave one (three) for the tail after
    the tiles; a non-contiguous input; against direct and PyTorch."""
    rng = np.random.default_rng(11)
    for shapes, params in [(((7, 10, 6, 6), (13, 10, 3, 3)), dict(stride=2, padding=1)),
                           (((5, 6, 4, 9), (14, 3, 3, 2)), dict(stride=(1, 2), padding=(0, 1), groups=2))]:
        n, c, h, w_size = shapes[0]
        x = np.swapaxes(rng.standard_normal((n, c, w_size, h)), 2, 3).astype(dtype)  # a view, not contiguous
        w = rng.standard_normal(shapes[1]).astype(dtype)
        spec = cl.conv_spec(*shapes, **params)
        with cl.thread_count(threads):
            assert packed_module._layout(spec, np.dtype(dtype).itemsize)[0]
            got = cl.conv(x, w, **params, algorithm="packed")
        assert not x.flags.c_contiguous
        assert_within(got, cl.conv(x, w, **params, algorithm="direct"),
                      summation_bound(int(np.prod(shapes[1][1:])), _magnitude(x, w, **params), dtype))
        torch = pytest.importorskip("torch")
        expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), None, params["stride"],
                                              params["padding"], 1, params.get("groups", 1)).numpy()
        tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(got, expected, **tolerance)


def test_empty_problems():
    x = np.ones((0, 3, 5, 5), np.float32)
    assert cl.conv(x, np.ones((4, 3, 3, 3), np.float32), algorithm="packed").shape == (0, 4, 3, 3)
    out = cl.conv(np.ones((2, 0, 5, 5)), np.ones((4, 0, 3, 3)), algorithm="packed")
    assert out.shape == (2, 4, 3, 3) and not out.any()


def test_auto_leaves_pointwise_layers_at_stride_one_to_gemm():
    spec = cl.conv_spec((8, 64, 56, 56), (256, 64, 1, 1))
    assert PACKED.estimate(spec, np.dtype(np.float32)) == float("inf")
    with cl.thread_count(1):
        assert cl.plan(spec.input_shape, spec.weight_shape, "float32").algorithm == "gemm"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_packings_vector_copies_move_exactly_the_values_asked(dtype):
    """``copy_run`` (the packing's, and the phase grids') moves runs of 16 as whole vectors at strides 1 and 2, and a shorter last part as a vector whose
    other lanes are stored back: every length around those steps, reads and writes that end at their arrays'
    ends (where the vectors would pass them, it copies value by value), give what a slice gives, and leave every
    other value of the scratch as it was."""
    from numba import njit, uint64

    from convolab.algorithms._compiled import kernels

    copy = kernels("moves").copy_run

    @njit
    def call(col, to, flat_x, read, count, sw):
        copy(col, uint64(to), flat_x, uint64(read), count, sw)

    source = np.arange(1, 301, dtype=dtype)
    for sw in (1, 2, 3):
        for count in range(0, 41):
            last_read = sw * (count - 1) if count else 0
            for read in (0, 7, source.size - 1 - last_read):
                for room in (count, count + 3, 200):
                    col = np.full(5 + room, -1.0, dtype=dtype)
                    call(col, 5, source, read, count, sw)
                    expected = np.full_like(col, -1.0)
                    expected[5:5 + count] = source[read:read + sw * count:sw][:count]
                    np.testing.assert_array_equal(col, expected, err_msg=f"sw {sw} count {count} read {read}")
