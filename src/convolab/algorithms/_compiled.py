"""The lazy seam to Numba: the compiled kernels are imported on first use, and only then is Numba.

``import convolab`` must stay light and must not compile anything, so no module
of the package imports Numba at its top except the kernel modules
(``_kernels_*``), and those are imported only through :func:`kernels`. A
compiled algorithm asks :func:`numba_missing` in its ``why_not``, after its
cheaper refusals (a dtype or rank it never runs), so Numba is imported when a
problem it could run is first planned or run.

Where Numba cannot be imported (not installed, or built for another NumPy),
:func:`numba_missing` says why, every compiled algorithm refuses with that
reason, and the planner keeps to the NumPy paths.

The kernels are compiled with ``cache=True``: the machine code is kept on disk,
next to the module (``__pycache__``) or, where the package directory is
read-only, in the user's cache directory (Numba's ``NUMBA_CACHE_DIR``, else
``~/.cache/numba``), so a fresh process loads it instead of compiling again.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

__all__ = ["numba_missing", "numba_loaded", "kernels"]

#: Why Numba cannot be used (None: it can), once known.
_missing: str | None = None
_checked = False
_lock = threading.Lock()


def numba_missing() -> str | None:
    """None if Numba imports, else the reason it cannot be used: "numba is not installed (...)".

    The first call imports Numba (about a third of a second); later calls only
    read the answer.
    """
    global _missing, _checked
    if not _checked:
        with _lock:
            if not _checked:
                try:
                    importlib.import_module("numba")
                except (ImportError, OSError) as error:  # OSError: llvmlite's shared library did not load
                    _missing = f"numba is not installed ({type(error).__name__}: {error})"
                _checked = True
    return _missing


def numba_loaded() -> bool:
    """Whether Numba has already been imported (by :func:`numba_missing`) and works, without importing it: for a
    path too small to be worth the import on its own (a small pool), that takes the loops once another path
    has paid for them."""
    return _checked and _missing is None


def kernels(name: str) -> ModuleType:
    """The kernel module ``convolab.algorithms._kernels_<name>``, imported (with Numba) on first use.

    Only for a caller that has checked :func:`numba_missing`: it raises the
    ImportError otherwise.
    """
    module = _loaded.get(name)
    if module is None:  # importlib's lookup of a loaded module costs microseconds: a small layer's kernel is not
        # much more
        module = _loaded[name] = importlib.import_module(f"{__package__}._kernels_{name}")
    return module


#: The kernel modules imported so far, by name.
_loaded: dict[str, ModuleType] = {}
