"""The costs a user meets outside one layer: starting up, compiling, and training a small network.

Each probe runs in fresh interpreters (:func:`_python`), so nothing measured
before it (imports, compiled kernels, warm caches) flatters it:

- :func:`import_seconds`: ``python -c "import convolab"``, wall time, the median
  of a few runs (the first run after a change also compiles the bytecode, so
  one unrecorded run goes first).
- :func:`compile_seconds`: the first call of a compiled algorithm in a fresh
  process, with a cold Numba cache (a new, empty cache folder) and with a warm
  one, against the first call of a NumPy path in a fresh process; what counts
  is the difference.

Training time against PyTorch has its own script, ``benchmarks/train_torch.py``
(the same network, weights, batches and optimizer in both libraries), which
writes its own section of the results page.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

__all__ = ["COMPILED_ALGORITHM", "import_seconds", "compile_seconds", "run_probes"]

#: The compiled algorithm whose first-call cost is measured, and the layer it is measured on (a depthwise 3x3).
COMPILED_ALGORITHM = "compiled"
_FIRST_CALL_LAYER = {"input": (8, 32, 56, 56), "weight": (32, 1, 3, 3), "groups": 32, "padding": 1}


def _python(code: str, env: dict[str, str], *args: str) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter: (wall seconds, its last line of output)."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        tail = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"exited with status {completed.returncode}: {tail}")
    lines = completed.stdout.strip().splitlines()
    return elapsed, lines[-1] if lines else ""


def import_seconds(env: dict[str, str], runs: int = 5) -> dict[str, Any]:
    """Median wall seconds of ``python -c "import convolab"`` (and of ``python -c pass``, for scale)."""
    try:
        _python("import convolab", env)  # compiles the bytecode of a fresh checkout; not recorded
        times = [_python("import convolab", env)[0] for _ in range(runs)]
        bare = [_python("pass", env)[0] for _ in range(runs)]
    except RuntimeError as error:
        return {"error": str(error)}
    return {"median_s": statistics.median(times), "python_alone_s": statistics.median(bare), "runs": runs}


_FIRST_CALL = """
import json, sys, time
if sys.argv[3:] == ["numpy"]:
    sys.modules["numba"] = None  # Numba cannot be imported: every algorithm keeps to its NumPy path
import numpy as np
import convolab as cl
layer = json.loads(sys.argv[1])
algorithm = sys.argv[2]
if algorithm not in cl.algorithms.ALGORITHMS:
    print(json.dumps({"error": f"no algorithm named {algorithm!r} is registered"}))
    raise SystemExit
x = np.ones(layer["input"], np.float32)
w = np.ones(layer["weight"], np.float32)
started = time.perf_counter()
cl.conv(x, w, padding=layer["padding"], groups=layer["groups"], algorithm=algorithm)
first = time.perf_counter() - started
started = time.perf_counter()
cl.conv(x, w, padding=layer["padding"], groups=layer["groups"], algorithm=algorithm)
print(json.dumps({"first_s": first, "second_s": time.perf_counter() - started}))
"""


def compile_seconds(env: dict[str, str], algorithm: str = COMPILED_ALGORITHM,
                    numpy_algorithm: str = "depthwise") -> dict[str, Any]:
    """The first call's extra seconds for ``algorithm`` (cold and warm Numba cache) over ``numpy_algorithm``'s."""
    layer = json.dumps(_FIRST_CALL_LAYER)

    def first_call(name: str, cache_dir: str | None) -> dict[str, Any]:
        child = dict(env)
        if cache_dir is not None:
            child["NUMBA_CACHE_DIR"] = cache_dir
        return json.loads(_python(_FIRST_CALL, child, layer, name, *(() if cache_dir else ("numpy",)))[1])

    try:
        numpy_path = first_call(numpy_algorithm, None)  # Numba hidden: depthwise also has compiled kernels
        with tempfile.TemporaryDirectory(prefix="convolab-numba-cache-") as cache_dir:
            cold = first_call(algorithm, cache_dir)
            warm = first_call(algorithm, cache_dir)
    except (RuntimeError, ValueError) as error:
        return {"error": str(error)}
    for result in (numpy_path, cold, warm):
        if "error" in result:
            return {"error": result["error"]}
    return {
        "layer": _FIRST_CALL_LAYER, "algorithm": algorithm, "numpy_algorithm": numpy_algorithm,
        "numpy_first_s": numpy_path["first_s"], "cold_first_s": cold["first_s"], "warm_first_s": warm["first_s"],
        "cold_extra_s": cold["first_s"] - numpy_path["first_s"], "warm_extra_s": warm["first_s"] - numpy_path["first_s"],
        "compiled_second_s": warm["second_s"], "numpy_second_s": numpy_path["second_s"],
    }


def run_probes(env: dict[str, str]) -> dict[str, Any]:
    """Every probe, for the report's ``probes`` section."""
    return {"import": import_seconds(env), "first_compiled_call": compile_seconds(env)}


if __name__ == "__main__":  # a quick look: python -m convolab.apps.bench.probes
    print(json.dumps(run_probes(dict(os.environ)), indent=2))
