"""space_to_batch (a stride-1 dilated convolution as one undilated Winograd problem on its phases) against the
direct sum and PyTorch, its phase arithmetic, and the planner's rules for it.

Tolerances: the inner Winograd's transforms round (the planner's module notes), so results are compared
normwise, relative to the largest magnitude of an output's terms (``sum |x*w|``): within the planner's bound
:data:`~convolab.planner.WINOGRAD_ERROR_BOUND` in float32, and 1e-12 (a few hundred terms' rounding through the
transforms) in float64, as tests/test_compiled_winograd.py holds Winograd itself.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convolab as cl
from convolab import _grad_problems, planner
from convolab._window import pad
from convolab.algorithms import ALGORITHMS, space_to_batch
from convolab.algorithms._winograd_compiled import compiled_winograd_conv
from convolab.algorithms.space_to_batch import interleave_phases, phase_spec, split_phases
from conv_cases import generate_cases
from test_compiled_winograd import TILES
from test_depthwise import batched, torch_padded

S2B = ALGORITHMS["space_to_batch"]
DTYPES = [np.float32, np.float64]
RELATIVE_TO_TERMS = {np.float32: planner.WINOGRAD_ERROR_BOUND, np.float64: 1e-12}


def dilated_cases(count: int, seed: int) -> list:
    """Generated cases made 3-tap, stride 1, with a dilation of 1-3 per axis and at least one above 1 (where the
    padding still fits): every rank, padding kind and mode, groups, zero-size batches, unbatched inputs."""
    rng = np.random.default_rng(seed)
    chosen = []
    for case in generate_cases(6 * count, seed=seed):
        dilation = tuple(int(d) for d in rng.integers(1, 4, size=case.rank))
        if all(d == 1 for d in dilation):
            dilation = (2, *dilation[1:])
        candidate = dataclasses.replace(case, kernel_size=(3,) * case.rank, stride=1, dilation=dilation)
        try:  # the padding must still fit the dilated kernel and its mode
            cl.conv_spec((max(case.batch, 1), case.in_channels, *case.input_size),
                         (case.out_channels, case.in_channels // case.groups, *candidate.kernel_size),
                         **candidate.kwargs())
        except ValueError:
            continue
        chosen.append(candidate)
    return chosen[:count]


CASES = dilated_cases(36, seed=23)


@pytest.fixture
def everywhere(monkeypatch):
    """The planner picks space_to_batch for every problem it can run (its estimate is zero), whatever its channels
    (the planner's accuracy rule would keep these small cases from it)."""
    monkeypatch.setattr(planner, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(type(S2B), "estimate", lambda self, spec, dtype: 0.0)
    planner._forget_plans()
    yield
    monkeypatch.undo()
    planner._forget_plans()


def normwise_error(actual: np.ndarray, expected: np.ndarray, magnitude: np.ndarray) -> float:
    """The largest error over the largest magnitude of an output's terms (0 for empty outputs)."""
    if not actual.size:
        return 0.0
    return float(np.max(np.abs(actual.astype(np.float64) - expected)) / max(magnitude.max(), 1e-300))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_agrees_with_direct(case, dtype):
    x, w, b = case.arrays(dtype)
    kwargs = case.kwargs()
    got = cl.conv(x, w, b, **kwargs, algorithm="space_to_batch")
    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    absolute = lambda a: None if a is None else np.abs(a).astype(np.float64)  # noqa: E731
    expected = cl.conv(f64(x), f64(w), f64(b), **kwargs, algorithm="direct")
    magnitude = cl.conv(absolute(x), absolute(w), absolute(b), **kwargs, algorithm="direct")
    assert got.dtype == dtype and got.shape == expected.shape
    assert normwise_error(got, expected, magnitude) <= RELATIVE_TO_TERMS[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", [case for case in CASES if case.batch > 0][::4], ids=str)
def test_forward_and_input_gradient_agree_with_torch(case, dtype, everywhere):
    """By name, and the input gradient's "full" correlation (a stride-1 dilated forward) with "auto" made to pick
    space_to_batch wherever it can run."""
    torch = pytest.importorskip("torch")
    x, w, _ = case.arrays(dtype)
    g = np.random.default_rng(9).standard_normal(case.output_shape).astype(dtype)
    kwargs = case.kwargs()
    functional = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}
    xt = torch.tensor(batched(case, x).astype(np.float64), requires_grad=True)
    wt = torch.tensor(w.astype(np.float64))
    out_t = functional[case.rank](torch_padded(torch, xt, case), wt, None, case.strides, 0, case.dilations,
                                  case.groups)
    out_t.backward(torch.tensor(batched(case, g).astype(np.float64)))
    spec = cl.conv_spec(batched(case, x).shape, w.shape, **kwargs)
    if planner.plan_for(spec, dtype).input_grad.method == "full":
        assert planner.plan_for(_grad_problems.full_problem(spec)[0], dtype).algorithm == "space_to_batch"
    got = cl.conv(x, w, **kwargs, algorithm="space_to_batch"), cl.grad.conv_input(x.shape, w, g, **kwargs)
    absolute = lambda a: np.abs(a).astype(np.float64)  # noqa: E731
    terms = (cl.conv(absolute(x), absolute(w), **kwargs, algorithm="direct"),
             cl.grad.conv_input(x.shape, absolute(w), absolute(g), **kwargs, algorithm="scatter"))
    for actual, reference, magnitude in zip(got, (out_t.detach().numpy(), xt.grad.numpy()), terms):
        reference = reference if case.batched else reference[0]
        assert actual.dtype == dtype and actual.shape == reference.shape
        assert normwise_error(actual, reference, magnitude) <= RELATIVE_TO_TERMS[dtype]


@pytest.mark.parametrize("size, padding, dilation", [
    ((10, 7), ((1, 3), (0, 2)), (3, 2)),  # lengths and padding that are not multiples of the dilation
    ((9,), ((4, 4),), (4,)),
    ((5, 6, 7), ((2, 0), (1, 1), (0, 3)), (2, 1, 3)),  # an undilated axis has one phase, itself
])
def test_phases_are_every_dth_padded_cell_and_outputs_go_back_in_place(size, padding, dilation):
    """The split is ``P[r::d]`` of the zero-padded input (zeros past it up to ``d*M``), and the interleave puts
    phase ``r``'s outputs on ``r::d``: checked on cell numbers, not sums."""
    x = np.arange(2 * 3 * np.prod(size), dtype=np.float64).reshape(2, 3, *size) + 1
    spec = cl.conv_spec(x.shape, (4, 3, *(3,) * len(size)), padding=padding, dilation=dilation)
    phases = split_phases(x, spec.padding, spec)
    sub = phase_spec(spec)
    assert phases.shape == sub.input_shape and sub.output_size == tuple(-(-o // d) for o, d in
                                                                         zip(spec.output_size, dilation))
    padded = pad(x, spec.padding, "zeros")
    by_phase = phases.reshape(*dilation, *x.shape[:2], *sub.input_size)
    for phase in np.ndindex(*dilation):
        cells = padded[(slice(None), slice(None), *(slice(r, None, d) for r, d in zip(phase, dilation)))]
        held = by_phase[phase]
        np.testing.assert_array_equal(held[(..., *(slice(0, n) for n in cells.shape[2:]))], cells)
        beyond = held.copy()
        beyond[(..., *(slice(0, n) for n in cells.shape[2:]))] = 0
        assert not beyond.any()  # zeros past the padded input
    outputs = np.arange(np.prod(sub.output_shape), dtype=np.float64).reshape(sub.output_shape)
    out = interleave_phases(outputs, spec)
    by_phase = outputs.reshape(*dilation, spec.batch, *sub.output_shape[1:])
    for phase in np.ndindex(*dilation):
        placed = out[(slice(None), slice(None), *(slice(r, None, d) for r, d in zip(phase, dilation)))]
        np.testing.assert_array_equal(placed, by_phase[phase][(..., *(slice(0, n) for n in placed.shape[2:]))])


@pytest.mark.parametrize("blas", [True, False], ids=["blas", "pool"])
@pytest.mark.parametrize("limit", [None, 2**16], ids=["roomy", "tight"])
@pytest.mark.parametrize("shapes, padding, dilation", [
    (((3, 40, 23, 29), (24, 40, 3, 3)), ((3, 4), (5, 2)), (3, 5)),  # 15 phases a sample, uneven padding
    (((2, 33, 50), (7, 33, 3)), ((6, 5),), (4,)),
])
def test_phases_in_place_agree_with_the_split_phases(shapes, padding, dilation, limit, blas):
    """The compiled transforms reading the phases from the samples and writing their outputs into the output (no
    split, no interleave) against the split path, on the BLAS's products and the pool's; with a tight workspace
    limit the blocks of tiles hold one phase's rows at a time and one sample is laid out at a time."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    spec = cl.conv_spec(x.shape, w.shape, padding=padding, dilation=dilation)
    sub = phase_spec(spec)
    with cl.workspace_limit(limit) if limit else cl.thread_count(2):
        for tile in TILES:
            got = compiled_winograd_conv(x, spec.padding, w, sub, tile, blas=blas, dilated=spec)
            split = compiled_winograd_conv(split_phases(x, spec.padding, spec), ((0, 0),) * spec.rank, w, sub, tile,
                                           blas=blas)
            np.testing.assert_allclose(got, interleave_phases(split, spec), rtol=1e-12, atol=1e-12)
    assert S2B.workspace_bytes(spec, 8) > 0


def test_a_view_and_other_padding_modes():
    """A non-contiguous input, and padding modes other than zeros (padded first by the engine, then split)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 14, 19))[:, ::2, :, ::-1]
    w = rng.standard_normal((4, 3, 3, 3))
    for mode in ("zeros", "reflect", "replicate", "circular"):
        params = dict(padding=((2, 1), (3, 2)), dilation=(2, 3), padding_mode=mode)
        np.testing.assert_allclose(cl.conv2d(x, w, **params, algorithm="space_to_batch"),
                                   cl.conv2d(x, w, **params, algorithm="direct"), rtol=1e-10, atol=1e-10)


def test_without_numba_the_numpy_transforms_run(without_numba):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 11, 9)), rng.standard_normal((4, 3, 3, 3))
    params = dict(padding=2, dilation=2)
    np.testing.assert_allclose(cl.conv2d(x, w, **params, algorithm="space_to_batch"),
                               cl.conv2d(x, w, **params, algorithm="direct"), rtol=1e-10, atol=1e-10)
    chosen = cl.plan((2, 256, 33, 33), (256, 256, 3, 3), "float32", **params)
    assert chosen.algorithm != "space_to_batch" and chosen.estimates["space_to_batch"] == np.inf


@pytest.mark.parametrize("params, dtype, reason", [
    (dict(stride=2, dilation=2), np.float32, "stride"),
    (dict(dilation=1), np.float32, "nothing to split"),
    (dict(dilation=2, kernel=5), np.float32, "3-tap"),
    (dict(dilation=2), np.int32, "integer"),
])
def test_refuses_what_it_cannot_run(params, dtype, reason):
    params = dict(params)
    k = params.pop("kernel", 3)
    spec = cl.conv_spec((1, 4, 20, 20), (4, 4, k, k), **params)
    assert reason in S2B.why_not(spec, np.dtype(dtype))
    with pytest.raises(ValueError, match="algorithm cannot run this problem.*got 'space_to_batch'"):
        cl.conv2d(np.ones((1, 4, 20, 20), dtype=dtype), np.ones((4, 4, k, k), dtype=dtype), **params,
                  algorithm="space_to_batch")


# -- the plan: where "auto" takes it, and the data it keeps from it ------------------------------------------


@pytest.mark.parametrize("input_shape, weight_shape, params, picked", [
    # DeepLab: in place 8.0-9.3 ms against compiled's and packed's 13.7-13.9 (one thread, CPU time)
    ((2, 256, 33, 33), (256, 256, 3, 3), dict(padding=2, dilation=2), True),
    # ASPP: in place 17.8 against row_shifts' 22.7 and packed's 24.8 (session 13: docs/compiled.md)
    ((2, 512, 33, 33), (256, 512, 3, 3), dict(padding=6, dilation=6), True),
    ((8, 64, 16000), (64, 64, 3), dict(padding=8, dilation=8), False),  # 1-d: Winograd has no fitted model
    ((8, 8, 56, 56), (8, 8, 3, 3), dict(padding=2, dilation=2), False),  # few channels: Winograd's accuracy rule
])
def test_auto_picks_it_where_it_measured_faster(input_shape, weight_shape, params, picked):
    """At one thread and at two by its estimate: in place, every step but 3-9% of its one-thread time runs in the
    pool's jobs (see :meth:`SpaceToBatch.estimate`)."""
    for threads in (1, 2):
        with cl.thread_count(threads):
            chosen = cl.plan(input_shape, weight_shape, "float32", **params)
        assert (chosen.algorithm == "space_to_batch") == picked, str(chosen)
    assert S2B.workspace_bytes(cl.conv_spec(input_shape, weight_shape, **params), 4) > 0


def test_on_two_threads_it_stays_out_where_the_phases_would_be_split():
    """Where the inner Winograd would run fused (few channels, two threads) the phases are split and interleaved on
    the calling thread, which measured slower there (session 12): ``inf``; in place on one thread."""
    spec = cl.conv_spec((8, 64, 56, 56), (64, 64, 3, 3), padding=2, dilation=2)
    with cl.thread_count(2):
        assert not space_to_batch.in_place(spec, np.dtype(np.float32))
        assert S2B.estimate(spec, np.dtype(np.float32)) == np.inf
    with cl.thread_count(1):
        assert space_to_batch.in_place(spec, np.dtype(np.float32))
        assert S2B.estimate(spec, np.dtype(np.float32)) < np.inf


def test_auto_keeps_its_phases_within_the_workspace_limit():
    shapes, params = ((2, 256, 33, 33), (256, 256, 3, 3)), dict(padding=2, dilation=2)
    phases = 4 * np.prod(phase_spec(cl.conv_spec(*shapes, **params)).input_shape)  # the phases alone, in float32
    with cl.thread_count(1), cl.workspace_limit(int(phases)):
        assert cl.plan(*shapes, "float32", **params).estimates["space_to_batch"] == np.inf


def dilated_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.random((2, 64, 21, 21)).astype(np.float32),
            (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32))


def test_ordinary_data_get_it_within_the_bound(everywhere):
    x, w = dilated_problem()
    params = dict(padding=2, dilation=2)
    spec = cl.conv_spec(x.shape, w.shape, **params)
    assert planner.plan_for_arrays(spec, np.dtype(np.float32), x, w).algorithm == "space_to_batch"
    got = cl.conv2d(x, w, **params)
    exact = cl.conv2d(x.astype(np.float64), w.astype(np.float64), **params, algorithm="direct")
    terms = cl.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), **params, algorithm="direct")
    assert float((np.abs(got - exact) / terms).max()) <= planner.WINOGRAD_ERROR_BOUND
    assert S2B.error_growth(2) == max(ALGORITHMS[f"winograd{tile}"].error_growth(2) for tile in TILES)


@pytest.mark.parametrize("spike", [1e5, np.inf, np.nan])
def test_a_spike_or_a_non_finite_value_keeps_auto_from_it(spike, everywhere):
    """The direct sum's inf/NaN pattern, and a summing algorithm's rounding, where the data would break the
    tiles' bound."""
    x, w = dilated_problem(1)
    x[1, 5, 7, 9] = spike
    params = dict(padding=2, dilation=2)
    spec = cl.conv_spec(x.shape, w.shape, **params)
    assert cl.plan(x.shape, w.shape, "float32", **params).algorithm == "space_to_batch"  # by shapes alone
    assert planner.plan_for_arrays(spec, np.dtype(np.float32), x, w).algorithm != "space_to_batch"
    with np.errstate(invalid="ignore", over="ignore"):
        got, direct = cl.conv2d(x, w, **params), cl.conv2d(x, w, **params, algorithm="direct")
    for mask in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(mask(got), mask(direct))


@pytest.mark.parametrize("three, four, chosen", [
    (0.95, 0.80, 2),  # neither enough below F(2)'s estimate: F(4) at 0.8, over its margin of 0.75
    (0.85, 0.80, 3),  # F(3) under its margin of 0.9; F(4) not
    (0.85, 0.60, 4),  # both under: the smallest over its margin (0.94 against 0.8)
    (0.70, 0.60, 3),  # 0.78 against 0.8
])
def test_the_phases_take_the_smallest_estimate_over_its_margin(three, four, chosen, monkeypatch):
    """``_inner_choice``: each inner Winograd's estimate on the phases, divided by its margin
    (:data:`~convolab.algorithms.space_to_batch.MARGINS`); the smallest wins, and its estimate is S2B's."""
    relative = {2: 1.0, 3: three, 4: four}
    monkeypatch.setattr(type(ALGORITHMS["winograd2"]), "estimate", lambda self, spec, dtype: relative[self.tile])
    space_to_batch._remembered_choice.cache_clear()
    spec = cl.conv_spec((2, 32, 21, 21), (32, 32, 3, 3), padding=3, dilation=3)
    try:
        inner, seconds = space_to_batch._inner_choice(S2B._inner, spec, np.dtype(np.float32))
    finally:
        space_to_batch._remembered_choice.cache_clear()  # no estimate of this test's kept for the others
    assert (inner.tile, seconds) == (chosen, relative[chosen])
    assert space_to_batch.MARGINS[2] == 1.0
