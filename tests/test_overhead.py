"""The costs around the arithmetic: what ``import convolab`` loads, and what repeated calls reuse."""

from __future__ import annotations

import numpy as np
import pytest

import convolab as cl
from convolab import _engine, planner
from convolab.algorithms import ALGORITHMS, register, unregister
from convolab.spec import conv_spec
from test_compiled import run_python

#: Heavy modules that ``import convolab`` must leave for first use (each costs a tenth of a second or more here).
LAZY_MODULES = ("scipy", "numba", "convolab.show", "convolab.nn", "convolab.chunked", "convolab.apps",
                "dask", "matplotlib", "torch")


# -- what import loads -----------------------------------------------------------------------------------------


def test_import_convolab_leaves_the_heavy_modules_unloaded():
    out = run_python(f"""
        import sys
        import convolab
        heavy = {LAZY_MODULES!r}
        print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy)))
        """)
    assert out.strip() == "[]"


def test_the_lazy_names_load_on_first_use_and_stay():
    out = run_python("""
        import sys
        import convolab as cl
        before = "convolab.show" in sys.modules
        from convolab import conv_matrix
        print(before, "convolab.show" in sys.modules, cl.trace is sys.modules["convolab.show"].trace,
              cl.show is sys.modules["convolab.show"], "trace" in vars(cl))
        """)
    assert out.split() == ["False", "True", "True", "True", "True"]


def test_every_public_name_is_listed_and_reachable():
    names = dir(cl)
    assert all(name in names for name in cl.__all__)
    assert "show" in names
    assert all(getattr(cl, name) is not None for name in cl.__all__)
    assert cl.show.Trace is cl.Trace


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        cl.no_such_name  # noqa: B018


# -- what repeated calls reuse -----------------------------------------------------------------------------------


def test_a_repeated_argument_list_reuses_its_spec():
    arguments = dict(stride=(1, 2), padding=((1, 0), (2, 1)), dilation=1, groups=2, padding_mode="reflect",
                     flip=True, op="conv2d", rank=2)
    first = _engine.frozen_spec((3, 4, 9, 9), (6, 2, 3, 3), **arguments)
    assert _engine.frozen_spec((3, 4, 9, 9), (6, 2, 3, 3), **arguments) is first
    assert first == conv_spec((3, 4, 9, 9), (6, 2, 3, 3), **arguments)


def test_a_spec_is_hashed_once_and_pickled_without_that_hash():
    """The planner's caches hash a spec many times a step, so the hash is kept; a string's hash changes from
    process to process, so a pickled spec (to a dask worker) leaves it behind, and its copy hashes afresh."""
    import dataclasses
    import pickle

    spec = conv_spec((3, 4, 9, 9), (6, 2, 3, 3), stride=2, padding=1, groups=2, op="conv2d", rank=2)
    fields = tuple(getattr(spec, field.name) for field in dataclasses.fields(spec))
    assert hash(spec) == hash(fields) and spec.__dict__["_hash"] == hash(fields)
    copy = pickle.loads(pickle.dumps(spec))
    assert "_hash" not in copy.__dict__ and copy == spec and hash(copy) == hash(spec)
    other = dataclasses.replace(spec, flip=True)
    assert other != spec and hash(other) == hash(fields[:-1] + (True,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.batch = 1  # type: ignore[misc]


@pytest.mark.parametrize("name, plain, other", [
    ("stride", 1, True),  # equal and of equal hash, but conv_spec refuses a bool
    ("groups", 1, 1.0),
    ("flip", False, 0),
    ("dilation", (1, 1), [1, 1]),  # a list is never remembered: checked every time
    ("padding", 1, np.int64(1)),
])
def test_a_remembered_spec_never_answers_for_an_argument_that_only_compares_equal(name, plain, other):
    shapes = ((2, 2, 5, 5), (2, 2, 3, 3))
    _engine.frozen_spec(*shapes, **{name: plain}, op="conv2d", rank=2)
    for _ in range(2):  # the second time as the first: errors and specs are conv_spec's own
        try:
            expected = conv_spec(*shapes, **{name: other}, op="conv2d", rank=2)
        except (TypeError, ValueError) as error:
            with pytest.raises(type(error)) as raised:
                _engine.frozen_spec(*shapes, **{name: other}, op="conv2d", rank=2)
            assert str(raised.value) == str(error)
        else:
            assert _engine.frozen_spec(*shapes, **{name: other}, op="conv2d", rank=2) == expected


def test_a_refused_argument_list_is_refused_every_time():
    for _ in range(2):
        with pytest.raises(ValueError, match="conv2d: groups"):
            cl.conv2d(np.ones((1, 4, 5, 5)), np.ones((3, 2, 3, 3)), groups=2)


def test_plans_are_reused_and_replanned_when_the_settings_change():
    spec = conv_spec((8, 16, 12, 12), (16, 16, 3, 3), padding=1)
    dtype = np.dtype(np.float32)
    planner._forget_plans()
    with cl.thread_count(1):
        first = planner.plan_for(spec, dtype)
        assert planner.plan_for(spec, dtype) is first
        misses = planner._plan_cached.cache_info().misses
        with cl.thread_count(2):
            planner.plan_for(spec, dtype)
        with cl.workspace_limit(1 << 16):
            planner.plan_for(spec, dtype)
        assert planner._plan_cached.cache_info().misses == misses + 2  # each setting is part of the key
        assert planner.plan_for(spec, dtype) is first


def test_the_remembered_problem_is_forgotten_when_the_registry_changes():
    spec = conv_spec((1, 1, 5), (1, 1, 3), padding=10**5, stride=10**5)  # huge padding and stride: compact
    bounded, compact = _engine._planned_problem(spec)
    assert compact is not None and _engine._planned_problem.cache_info().currsize >= 1

    class Probe(ALGORITHMS["direct"].__class__):
        name = "overhead_probe"
        automatic = False

    register(Probe())
    try:
        assert _engine._planned_problem.cache_info().currsize == 0
    finally:
        unregister("overhead_probe")


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_repeated_calls_give_the_same_numbers_as_the_first(padding_mode):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((4, 6, 7, 7)), rng.standard_normal((6, 3, 3, 3))
    arguments = dict(stride=(2, 1), padding=1, groups=2, padding_mode=padding_mode)
    y = cl.conv2d(x, w, **arguments)
    g = rng.standard_normal(y.shape)
    first = (y, cl.grad.conv2d_input(x.shape, w, g, **arguments), cl.grad.conv2d_weight(x, w.shape, g, **arguments))
    again = (cl.conv2d(x, w, **arguments), cl.grad.conv2d_input(x.shape, w, g, **arguments),
             cl.grad.conv2d_weight(x, w.shape, g, **arguments))
    for got, want in zip(again, first):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(y, cl.conv2d(x, w, **arguments, algorithm="direct"), rtol=1e-12, atol=1e-12)


def test_a_small_max_pool_leaves_numba_unloaded_and_takes_its_loops_once_loaded():
    out = run_python("""
        import sys
        import numpy as np
        import convolab as cl
        x = np.arange(2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6)
        values, pullback = cl.vjp(cl.max_pool2d, x, 2)
        pullback(np.ones_like(values))
        first = "numba" in sys.modules
        from convolab.algorithms._compiled import numba_loaded, numba_missing
        before = numba_loaded()
        numba_missing()  # what a compiled convolution's plan does
        again, _ = cl.vjp(cl.max_pool2d, x, 2)
        print(first, before, numba_loaded(), "convolab.algorithms._kernels_pool" in sys.modules,
              np.array_equal(values, again))
        """)
    assert out.split() == ["False", "False", "True", "True", "True"]
