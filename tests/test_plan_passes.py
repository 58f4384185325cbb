"""The planner decides every pass (forward, input gradient, weight gradient) and the engine runs what it says.

Each case checks *which* path the plan chose and that the gradient functions ran exactly that one (a
spy on the pass), not only the values. The NumPy paths' planning is pinned here, as where Numba cannot be
imported (the compiled algorithm, which takes the depthwise layers where it can, is planned in
test_compiled.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab import _engine, planner
from convolab.algorithms import ALGORITHMS, Im2col, register, unregister
from convolab.spec import conv_spec

RESNET = ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1))  # folded forward, folding saves under half
UNET3D = ((2, 32, 6, 10, 10), (32, 32, 3, 3, 3), dict(padding=1))  # folded forward and weight gradient
MOBILENET = ((4, 32, 40, 40), (32, 1, 3, 3), dict(padding=1, groups=32))  # depthwise, stride 1
MOBILENET_STRIDED = ((4, 32, 40, 40), (64, 1, 3, 3), dict(stride=2, padding=1, groups=32))
STRIDED = ((8, 64, 56, 56), (128, 64, 3, 3), dict(padding=1, stride=2))  # gemm forward
LARGE_KERNEL = ((1, 1, 300, 300), (1, 1, 41, 41), {})  # fft forward

pytestmark = pytest.mark.usefixtures("without_numba")


def passes(shapes) -> tuple[str, str, str, str, str]:
    """The plan's forward algorithm, then each gradient pass's method and detail."""
    input_shape, weight_shape, params = shapes
    chosen = cl.plan(input_shape, weight_shape, "float32", **params)
    return (chosen.algorithm, chosen.input_grad.method, chosen.input_grad.detail, chosen.weight_grad.method,
            chosen.weight_grad.detail)


@pytest.mark.parametrize("shapes, expected", [
    (RESNET, ("folded", "full", "a forward convolution of grad_output with the kernel reversed", "gemm",
              "columns @ g.T")),
    (UNET3D, ("folded", "full", "a forward convolution of grad_output with the kernel reversed", "folded",
              "columns @ g moved by each of 3 last-axis taps")),
    (MOBILENET, ("depthwise", "depthwise", "full", "depthwise", "every tap's run against grad_output")),
    (MOBILENET_STRIDED, ("depthwise", "depthwise", "scatter", "depthwise", "every tap's run against grad_output")),
    (STRIDED, ("gemm", "scatter", "each window's gradient added back where it was read", "gemm", "columns @ g.T")),
    (LARGE_KERNEL, ("fft", "full", "a forward convolution of grad_output with the kernel reversed", "folded",
                    "columns @ g moved by each of 41 last-axis taps")),  # 8 ms against gemm's 47 (one thread)
    (((2, 3, 10, 10), (4, 3, 3, 3), dict(padding=1)), ("gemm", "full",
                                                        "a forward convolution of grad_output with the kernel reversed",
                                                        "gemm", "g @ columns.T")),  # 200 positions: g @ columns.T
], ids=["resnet", "unet3d", "mobilenet", "mobilenet-strided", "strided", "large-kernel", "small"])
def test_the_plan_names_every_pass(shapes, expected):
    assert passes(shapes) == expected


def test_the_plan_text_shows_all_three_passes_with_their_reasons():
    text = str(cl.plan(*UNET3D[:2], "float32", **UNET3D[2]))
    forward, *rest = text.splitlines()
    assert forward.startswith("forward: folded: estimated")
    assert "input gradient: full (a forward convolution of grad_output with the kernel reversed): stride 1" in text
    assert ("weight gradient: folded (columns @ g moved by each of 3 last-axis taps): the forward runs folded: its "
            "own pass; folding copies 384 values per position against gemm's 864") in text
    resnet = str(cl.plan(*RESNET[:2], "float32", **RESNET[2]))
    assert ("weight gradient: gemm (columns @ g.T): folding copies 384 values per position against gemm's 576, "
            "under half saved: gemm's instead; 25088 output positions, at least 4096") in resnet


@pytest.mark.parametrize("shapes, input_method, input_detail, weight_method", [
    (RESNET, "scatter", "each window's gradient added back where it was read", "gemm"),  # full would spread inf
    (UNET3D, "scatter", "each window's gradient added back where it was read", "gemm"),  # folded reads zeros too
    (MOBILENET, "depthwise", "scatter", "depthwise"),
], ids=["resnet", "unet3d", "mobilenet"])
def test_non_finite_data_get_the_passes_that_keep_their_pattern(shapes, input_method, input_detail, weight_method):
    input_shape, weight_shape, params = shapes
    spec = conv_spec(input_shape, weight_shape, **params)
    chosen = planner.plan_for(spec, np.dtype(np.float32), planner.NON_FINITE)
    assert (chosen.input_grad.method, chosen.input_grad.detail) == (input_method, input_detail)
    assert chosen.weight_grad.method == weight_method
    assert "inf or NaN" in chosen.input_grad.reason


def test_data_are_looked_at_only_where_their_finiteness_would_change_the_pass():
    def matters(shapes):
        chosen = cl.plan(*shapes[:2], "float32", **shapes[2])
        return chosen.input_grad.finite_matters, chosen.weight_grad.finite_matters

    assert matters(RESNET) == (True, False)  # full at stride 1; gemm takes exact columns by itself
    assert matters(UNET3D) == (True, True)  # and folded's weight gradient refuses an inf
    assert matters(STRIDED) == (False, False)  # scatter whatever the weight holds
    assert matters(MOBILENET) == (True, False)
    assert matters(MOBILENET_STRIDED) == (False, False)


def test_passes_asked_for_by_name():
    spec = conv_spec(UNET3D[0], UNET3D[1], **UNET3D[2])
    f32 = np.dtype(np.float32)
    folded = planner.pass_for("weight_grad", spec, f32, "folded")
    assert folded.method == "folded" and folded.reason.startswith("asked for by name") and folded.finite_matters
    refused = planner.pass_for("weight_grad", spec, f32, "folded", finite=False)
    assert refused.method == "gemm" and refused.reason.startswith("asked for folded, but the input holds inf or NaN")
    assert planner.pass_for("input_grad", spec, f32, "full", finite=False).method == "full"  # as asked
    assert planner.pass_for("weight_grad", spec, f32, "conv").method == "conv"
    assert planner.pass_for("weight_grad", spec, f32, "im2col").method == "im2col"
    # folded refuses a 1-tap last axis whatever the data: asked for by name, that is an error, not a fallback
    with pytest.raises(ValueError, match="one tap along the last axis"):
        cl.grad.conv2d_weight(np.ones((1, 1, 6, 6)), (1, 1, 3, 1), np.ones((1, 1, 4, 6)), algorithm="folded")


@pytest.fixture
def spy(monkeypatch):
    """``spy(owner, name)``: record the keyword arguments of every call to ``owner.name``, then call it."""

    def install(owner, name: str) -> list[dict]:
        calls: list[dict] = []
        original = getattr(owner, name)

        def recording(*args, **kwargs):
            calls.append(kwargs)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, recording)
        return calls

    return install


def arrays(shapes, seed=0):
    input_shape, weight_shape, params = shapes
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(input_shape).astype(np.float32)
    w = rng.standard_normal(weight_shape).astype(np.float32)
    g = rng.standard_normal(cl.output_shape(input_shape, weight_shape, **params)).astype(np.float32)
    return x, w, g, params


def test_the_engine_runs_the_weight_gradient_the_plan_names(spy):
    x, w, g, params = arrays(UNET3D)
    folded, gemm = spy(ALGORITHMS["folded"], "weight_grad"), spy(ALGORITHMS["gemm"], "weight_grad")
    expected = cl.grad.conv_weight(x.astype(np.float64), w.shape, g.astype(np.float64), **params, algorithm="im2col")
    np.testing.assert_allclose(cl.grad.conv_weight(x, w.shape, g, **params), expected, rtol=2e-4, atol=2e-3)
    assert len(folded) == 1 and not gemm
    x[0, 0, 2, 2, 2] = np.inf  # folded's products would meet it with zeros: the plan for such data is gemm's
    with np.errstate(invalid="ignore"):
        cl.grad.conv_weight(x, w.shape, g, **params)
        cl.grad.conv_weight(x, w.shape, g, **params, algorithm="folded")  # asked for, and declined alike
    assert len(folded) == 1 and len(gemm) == 2
    assert gemm[0] == gemm[1] == {"transposed": False}  # 2 x 6x10x10 = 1200 positions: g @ columns.T


def test_the_engine_runs_the_input_gradient_the_plan_names(spy):
    x, w, g, params = arrays(MOBILENET)
    depthwise = spy(ALGORITHMS["depthwise"], "input_grad")
    scatter, full = spy(_engine, "_input_grad_scatter"), spy(_engine, "_input_grad_full")
    reference = cl.grad.conv2d_input(x.shape, w, g, **params, algorithm="scatter")
    assert len(scatter) == 1
    np.testing.assert_allclose(cl.grad.conv2d_input(x.shape, w, g, **params), reference, rtol=1e-5, atol=1e-5)
    assert depthwise == [{"formulation": "full"}]
    w[3, 0, 1, 1] = np.inf  # the full correlation would multiply it by its padding's zeros
    with np.errstate(invalid="ignore"):
        cl.grad.conv2d_input(x.shape, w, g, **params)
    assert depthwise[1] == {"formulation": "scatter"} and len(scatter) == 1 and not full
    x, w, g, params = arrays(((2, 3, 10, 10), (4, 3, 3, 3), dict(padding=1)))
    cl.grad.conv2d_input(x.shape, w, g, **params)
    assert len(full) == 1 and len(scatter) == 1
    w[0, 0, 0, 0] = np.nan
    cl.grad.conv2d_input(x.shape, w, g, **params)
    assert len(full) == 1 and len(scatter) == 2


def test_a_registered_algorithm_with_its_own_weight_gradient_is_planned_for_it(spy):
    """An automatic algorithm that has a weight-gradient pass runs "auto"'s weight gradient where it runs the
    forward; its missing input-gradient pass falls to the generic formulations. Nothing else changes."""

    class Cheap(Im2col):  # im2col's forward and weight gradient, with a cost model that wins every problem
        name = "cheap"
        automatic = True

        def estimate(self, spec, dtype):
            return 0.0

    x, w, g, params = arrays(((2, 3, 10, 10), (4, 3, 3, 3), dict(padding=1)))
    register(Cheap())
    try:
        chosen = cl.plan(x.shape, w.shape, x.dtype, **params)
        assert (chosen.algorithm, chosen.input_grad.method, chosen.weight_grad.method) == ("cheap", "full", "cheap")
        assert chosen.weight_grad.reason == "the forward runs cheap: its own pass"
        calls = spy(ALGORITHMS["cheap"], "weight_grad")
        np.testing.assert_allclose(cl.grad.conv2d_weight(x, w.shape, g, **params),
                                   cl.grad.conv2d_weight(x, w.shape, g, **params, algorithm="im2col"), rtol=1e-5)
        assert len(calls) == 1
    finally:
        unregister("cheap")
    assert cl.plan(x.shape, w.shape, x.dtype, **params).weight_grad.method == "gemm"
