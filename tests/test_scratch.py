"""Scratch arrays kept between calls (``convolab.algorithms._scratch``): which sizes are kept, per thread and
per name, and that passes reusing them give the same results call after call, from several threads at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import convolab as cl
from convolab.algorithms import _scratch
from convolab.algorithms._scratch import KEPT_BYTES, kept_bytes, reused_empty
from test_compiled import compiled_everywhere, three_passes  # noqa: F401 - a fixture

F32 = np.dtype(np.float32)
#: A size the tests keep: 32 MiB.
BYTES = 32 * 2**20


@pytest.fixture(autouse=True)
def _forget_the_buffers():
    """The buffers these tests make in the test run's own thread are dropped after each test."""
    yield
    _scratch._kept.__dict__.pop("buffers", None)


def test_arrays_of_any_size_up_to_the_bound_are_kept():
    """Small and large arrays alike come from the thread's buffer for their name (malloc gives a few-MiB
    temporary's pages back at the heap's top too); past :data:`KEPT_BYTES`, a fresh array."""
    small = reused_empty((1024,), F32, "test sizes")
    assert np.shares_memory(small, reused_empty((32, 32), F32, "test sizes"))
    kept = reused_empty((BYTES // 4,), F32, "test sizes")
    again = reused_empty((BYTES // 8, 2), F32, "test sizes")
    assert np.shares_memory(kept, again) and again.shape == (BYTES // 8, 2) and again.dtype == F32
    huge = reused_empty((KEPT_BYTES // 4 + 1,), F32, "test sizes")
    assert huge.base is None and not np.shares_memory(huge, kept)


def test_a_larger_request_replaces_the_buffer_and_names_and_threads_keep_their_own():
    first = reused_empty((BYTES // 4,), F32, "test growth")
    held = kept_bytes()
    larger = reused_empty((BYTES // 2,), F32, "test growth")
    assert not np.shares_memory(first, larger) and kept_bytes() == held + BYTES
    other_name = reused_empty((BYTES // 4,), F32, "test other name")
    assert not np.shares_memory(other_name, larger)
    seen = []
    worker = threading.Thread(target=lambda: seen.append(reused_empty((BYTES // 4,), F32, "test growth")))
    worker.start()
    worker.join()
    assert not np.shares_memory(seen[0], larger)


def test_all_threads_buffers_together_stay_within_their_bound(monkeypatch):
    monkeypatch.setattr(_scratch, "KEPT_BYTES", 2**20)
    monkeypatch.setattr(_scratch, "ALL_KEPT_BYTES", _scratch._held[0] + 3 * 2**19)  # room for 1.5 MiB more
    reused_empty((2**18,), F32, "test bound")  # 1 MiB, kept
    assert kept_bytes() == 2**20

    def other_thread():
        seen.append(reused_empty((2**18,), F32, "test bound").base is None)
        seen.append(kept_bytes())

    seen = []
    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert seen == [True, 0]  # 1 MiB more would pass the bound: allocated for its call alone
    _scratch._kept.__dict__.pop("buffers")  # freed: its bytes are released
    seen.clear()
    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert seen == [False, 2**20]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_passes_reusing_the_grid_agree_with_direct_call_after_call_and_across_threads(monkeypatch, dtype,
                                                                                     compiled_everywhere):
    """Every array kept, as always: compiled's forward, input gradient and weight gradient,
    each on new data every call, in four threads at once, agree with the references (a grid left over from an
    earlier call, or another thread's, would not)."""
    rng = np.random.default_rng(5)
    shapes = [((2, 3, 6, 9, 8), (4, 3, 3, 2, 3), {"padding": 1}),
              ((2, 4, 11, 10), (8, 4, 3, 3), {"stride": 2, "padding": 1})]
    failures = []

    def check(seed):
        local = np.random.default_rng(seed)
        try:
            for _ in range(3):
                for x_shape, w_shape, params in shapes:
                    x = local.standard_normal(x_shape).astype(dtype)
                    w = local.standard_normal(w_shape).astype(dtype)
                    g = local.standard_normal(cl.output_shape(x.shape, w.shape, **params)).astype(dtype)
                    out, grad_input, grad_weight = three_passes(x, w, g, **params)
                    np.testing.assert_allclose(out, cl.conv(x, w, algorithm="direct", **params), rtol=1e-4,
                                               atol=1e-4)
                    np.testing.assert_allclose(grad_input, cl.grad.conv_input(x.shape, w, g, algorithm="scatter",
                                                                              **params), rtol=1e-4, atol=1e-4)
                    np.testing.assert_allclose(grad_weight, cl.grad.conv_weight(x, w.shape, g, algorithm="im2col",
                                                                                **params), rtol=1e-4, atol=1e-4)
        except Exception as error:  # noqa: BLE001 - reported below, from the main thread
            failures.append(error)

    threads = [threading.Thread(target=check, args=(int(rng.integers(1 << 30)),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
