"""The costs around the arithmetic: what ``import convolab`` loads, and what repeated calls reuse."""

from __future__ import annotations

import pytest

import convolab as cl
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
