"""The FFT keeps its spectra within ``cl.workspace_limit``, says so truthfully, and plans see the settings."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import convolab as cl
from convolab.algorithms import FFT
from convolab.spec import conv_spec

MiB = 2**20
CASES = [  # (input shape, weight shape, keyword arguments)
    ((24, 8, 64, 64), (8, 8, 9, 9), {}),
    ((2, 3, 300, 200), (4, 3, 21, 21), {"stride": 2}),
    ((2, 4, 3000), (4, 2, 201), {"groups": 2, "dilation": 2}),
    ((2, 4, 24, 24, 24), (4, 2, 5, 5, 5), {"groups": 2}),
    ((1, 1, 1024, 1024), (1, 1, 31, 31), {}),
]


@pytest.mark.parametrize("limit", [4 * MiB, 16 * MiB])
@pytest.mark.parametrize("shapes", CASES, ids=lambda shapes: "x".join(map(str, shapes[0])))
def test_fft_peak_scratch_stays_within_the_limit_and_its_report(shapes, limit) -> None:
    input_shape, weight_shape, params = shapes
    rng = np.random.default_rng(0)
    x, w = rng.random(input_shape, np.float32), rng.random(weight_shape, np.float32)
    expected = cl.conv(x, w, **params, algorithm="gemm")
    with cl.workspace_limit(limit):
        reported = FFT().workspace_bytes(conv_spec(input_shape, weight_shape, **params), 4)
        tracemalloc.start()
        try:
            got = cl.conv(x, w, **params, algorithm="fft")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    scratch = peak - got.nbytes
    assert 0 < reported <= limit
    assert scratch <= limit, f"{scratch / MiB:.1f} MiB of scratch under a {limit / MiB:.0f} MiB limit"
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_plan_reports_the_fft_workspace_instead_of_zero() -> None:
    chosen = cl.plan((96, 16, 128, 128), (16, 16, 15, 15), "float32")
    assert chosen.algorithm == "fft"
    assert 0 < chosen.workspace_bytes <= cl._settings.current_workspace_limit()
    with cl.workspace_limit(16 * MiB):
        assert 0 < cl.plan((96, 16, 128, 128), (16, 16, 15, 15), "float32").workspace_bytes <= 16 * MiB


def test_an_fft_that_cannot_fit_is_refused_by_name_and_skipped_by_auto() -> None:
    with cl.workspace_limit(2**16):
        with pytest.raises(ValueError, match=r"algorithm.*workspace limit.*'fft'"):
            cl.conv2d(np.ones((1, 1, 256, 256)), np.ones((1, 1, 63, 63)), algorithm="fft")
        assert "workspace limit" in cl.plan((1, 1, 256, 256), (1, 1, 63, 63)).refused["fft"]


def test_plans_are_cached_with_the_settings_they_were_made_under(without_numba: None) -> None:
    """Among the NumPy paths, whose workspaces these numbers are (compiled's tiles now run the 3x3 layer)."""
    shapes = ((8, 64, 56, 56), (64, 64, 3, 3))
    default = cl.plan(*shapes, padding=1)
    with cl.workspace_limit(2**16):
        limited = cl.plan(*shapes, padding=1)
        cl.planner._plan_cached.cache_clear()
        fresh = cl.plan(*shapes, padding=1)
    assert limited == fresh
    # Before plans keyed on the settings, the limited plan was the default's, 8,521,728 bytes.
    assert limited.workspace_bytes == 236_544 < default.workspace_bytes
    with cl.thread_count(1):
        one_thread = cl.plan((8, 32, 112, 112), (32, 1, 3, 3), padding=1, groups=32)
    with cl.thread_count(2):
        two_threads = cl.plan((8, 32, 112, 112), (32, 1, 3, 3), padding=1, groups=32)
    assert one_thread.estimates["depthwise"] > two_threads.estimates["depthwise"]
