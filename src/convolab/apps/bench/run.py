"""Running the suite: each problem timed on both sides, the BLAS rate around them, the peak-memory probe.

How things are measured
-----------------------
Timing
    :mod:`.timing`: a warm-up, then repeats until a per-problem budget is spent;
    the median. Each library is timed in its own blocks after a pause of
    :data:`~.protocol.SETTLE_S` (the other library's worker threads keep
    spinning for a while after its last call: PyTorch alternated call for call
    with convolab ran 2x slower, and convolab right after a BLAS matmul 1.8x),
    :data:`~.protocol.ROUNDS` blocks each, alternating; a library's time is the
    median of its blocks' medians (:func:`~.timing.time_in_rounds`). A 3x3
    layer's forward is followed by a block of the BLAS matmul whose rate its
    fraction divides by, after the same rest. SciPy's FFTs run on one thread
    (``workers=1``, their default) on both sides.
Peak memory, the memory target
    A fresh subprocess allocates the ``(1, 64, 1024, 1024)`` float32 input and
    the weight, runs one small convolution (BLAS buffers, lazy imports), reads
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, runs the convolution and reads
    it again: the growth minus the output's bytes is the memory above input and
    output. The same subprocess then repeats the call under ``tracemalloc``
    (NumPy's allocations only, no BLAS buffers) and reports that figure beside it.
BLAS rate
    A float32 ``np.matmul`` of two 2048×2048 matrices, timed before and after
    the problems; the higher of the two rates is the ceiling the 3×3 layers
    are held to (the lower one usually means the machine was busy).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from typing import Any, Callable, Sequence

import numpy as np

from . import protocol
from .machine import (address_space_limit, busy_machine_warnings, child_environment, cpu_flags, load_average,
                      machine_info, pinned_blas_warnings)
from .render import describe_blas_rates, describe_memory, describe_row
from .results import Report, Row, evaluate_targets, summarize, target_problems
from .suite import (CONV_PHASES, POOL_PHASES, ConvProblem, FilterProblem, MemoryProblem, PoolProblem, Problem,
                    describe_problem)
from .timing import PeakMeter, Timing, time_call, time_in_rounds

__all__ = ["run_suite", "measure_blas_rate"]


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.dtype(dtype))


def _convolab_calls(problem: ConvProblem, x: np.ndarray, w: np.ndarray, g: np.ndarray) -> dict[str, Callable]:
    import convolab as cl  # the package's public surface, as a user calls it

    stride, padding, dilation, groups = problem.stride, problem.padding, problem.dilation, problem.groups
    if problem.transposed:
        # y = conv_transpose(x, w) is the input gradient of conv(., w); its gradients are that conv's forward
        # (for x) and weight gradient with the roles of input and grad_output swapped (for w).
        return {
            "forward": lambda: cl.conv_transpose(x, w, None, stride, padding, 0, groups, dilation),
            "input_grad": lambda: cl.conv(g, w, None, stride, padding, dilation, groups),
            "weight_grad": lambda: cl.grad.conv_weight(g, w.shape, x, stride, padding, dilation, groups),
        }
    return {
        "forward": lambda: cl.conv(x, w, None, stride, padding, dilation, groups),
        "input_grad": lambda: cl.grad.conv_input(x.shape, w, g, stride, padding, dilation, groups),
        "weight_grad": lambda: cl.grad.conv_weight(x, w.shape, g, stride, padding, dilation, groups),
    }


def _torch_calls(torch: Any, problem: ConvProblem, x: np.ndarray, w: np.ndarray,
                 g: np.ndarray) -> dict[str, Callable]:
    functional = torch.nn.functional
    conv = {1: functional.conv1d, 2: functional.conv2d, 3: functional.conv3d}[problem.rank]
    conv_transpose = {1: functional.conv_transpose1d, 2: functional.conv_transpose2d,
                      3: functional.conv_transpose3d}[problem.rank]
    conv_input = getattr(torch.nn.grad, f"conv{problem.rank}d_input")
    conv_weight = getattr(torch.nn.grad, f"conv{problem.rank}d_weight")
    tx, tw, tg = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(g)
    stride, padding, dilation, groups = problem.stride, problem.padding, problem.dilation, problem.groups

    def forward():
        with torch.no_grad():
            if problem.transposed:
                return conv_transpose(tx, tw, None, stride, padding, 0, groups, dilation)
            return conv(tx, tw, None, stride, padding, dilation, groups)

    def transposed_input_grad():
        with torch.no_grad():
            return conv(tg, tw, None, stride, padding, dilation, groups)

    if problem.transposed:
        calls = {
            "forward": forward,
            "input_grad": transposed_input_grad,
            "weight_grad": lambda: conv_weight(tg, list(w.shape), tx, stride, padding, dilation, groups),
        }
    else:
        calls = {
            "forward": forward,
            "input_grad": lambda: conv_input(list(x.shape), tw, tg, stride, padding, dilation, groups),
            "weight_grad": lambda: conv_weight(tx, list(w.shape), tg, stride, padding, dilation, groups),
        }
    for fn in calls.values():
        fn.foreign_allocator = True  # tracemalloc cannot see PyTorch's allocations
    return calls


def _timed_sides(ours: Callable, theirs: Callable | None, budget_s: float, repeats: int | None, meter: PeakMeter,
                 rounds: int) -> tuple[Timing, Timing | None]:
    """convolab's and the reference's timings of one phase, in alternating blocks (:func:`.time_in_rounds`)."""
    timings = time_in_rounds([ours] if theirs is None else [ours, theirs], rounds=rounds, budget_s=budget_s,
                             repeats=repeats, meter=meter, settle_s=protocol.SETTLE_S)
    return timings[0], (timings[1] if theirs is not None else None)


def _run_conv(problem: ConvProblem, torch: Any, budget_s: float, repeats: int | None, meter: PeakMeter,
              rng: np.random.Generator, blas_size: int = protocol.BLAS_MATMUL_SIZE,
              rounds: int = protocol.ROUNDS) -> list[Row]:
    """Each phase timed in blocks alternating with PyTorch's; a 3x3 forward then the BLAS matmul of its fraction."""
    x = _random(rng, problem.input_shape, problem.dtype)
    w = _random(rng, problem.weight_shape, problem.dtype)
    g = _random(rng, problem.output_shape, problem.dtype)
    ours = _convolab_calls(problem, x, w, g)
    theirs = _torch_calls(torch, problem, x, w, g) if torch is not None else None
    rows = []
    for phase in CONV_PHASES:
        with_blas = problem.is_3x3 and phase == "forward"
        convolab_timing, reference_timing = _timed_sides(ours[phase], theirs[phase] if theirs else None, budget_s,
                                                         repeats, meter, rounds)
        blas_timing = None
        if with_blas:
            time.sleep(protocol.SETTLE_S)
            blas_timing = time_call(_blas_matmul(blas_size), budget_s=budget_s / rounds, repeats=repeats,
                                    meter=meter, measure_memory=False)
        rows.append(Row(problem.name, problem.family, phase, problem.flops, convolab_timing,
                        "torch" if theirs is not None else None, reference_timing, problem.is_3x3,
                        blas_timing=blas_timing, blas_flops=2 * blas_size ** 3 if with_blas else 0,
                        is_wide_3x3=problem.is_wide_3x3))
    return rows


def _pool_calls(problem: PoolProblem, x: np.ndarray, g: np.ndarray) -> dict[str, Callable]:
    import convolab as cl

    arguments = problem.pool_arguments()
    if problem.op == "adaptive_avg_pool":
        # No public input-gradient function: the pullback, whose forward is made once, outside the timing
        # (a linear op's pullback keeps nothing of it).
        _, pullback = cl.vjp(cl.adaptive_avg_pool, x, **arguments)
        return {"forward": lambda: cl.adaptive_avg_pool(x, **arguments), "input_grad": lambda: pullback(g)[0]}
    forward, input_grad = getattr(cl, problem.op), getattr(cl.grad, f"{problem.op}_input")
    return {"forward": lambda: forward(x, **arguments), "input_grad": lambda: input_grad(g, x, **arguments)}


def _torch_pool_calls(torch: Any, problem: PoolProblem, x: np.ndarray, g: np.ndarray) -> dict[str, Callable]:
    """PyTorch's pooling forward, and the input gradient from ``grad_output`` and the input, as convolab's:
    a max pool's is its forward with indices (autograd's) and their scatter; an average's, its backward op."""
    functional, aten = torch.nn.functional, torch.ops.aten
    tx, tg = torch.from_numpy(x), torch.from_numpy(g)
    arguments = problem.pool_arguments()
    rank = problem.rank
    forward_op = getattr(functional, f"{problem.op}{rank}d")

    def forward():
        with torch.no_grad():
            return forward_op(tx, **arguments)

    if problem.op == "max_pool":
        def input_grad():
            leaf = tx.detach().requires_grad_()
            return torch.autograd.grad(forward_op(leaf, **arguments), leaf, tg)[0]
    else:
        # ATen has average pooling backward ops for 2-d and 3-d; a 1-d pool is a 2-d one of height 1, as there.
        lift = (lambda t: t.unsqueeze(-2)) if rank == 1 else (lambda t: t)
        lifted_x, lifted_g, lifted = lift(tx), lift(tg), (1,) * (rank == 1)
        if problem.op == "avg_pool":
            backward_op = getattr(aten, f"avg_pool{max(rank, 2)}d_backward")

            def lifted_input_grad():
                return backward_op(lifted_g, lifted_x, [*lifted, *problem.kernel_size],
                                   [*lifted, *problem.stride], [*(0,) * len(lifted), *problem.padding], False,
                                   problem.count_include_pad, None)
        else:
            backward_op = getattr(aten, f"_adaptive_avg_pool{max(rank, 2)}d_backward")

            def lifted_input_grad():
                return backward_op(lifted_g, lifted_x)

        def input_grad():
            return lifted_input_grad().reshape(tx.shape)
    calls = {"forward": forward, "input_grad": input_grad}
    for fn in calls.values():
        fn.foreign_allocator = True  # tracemalloc cannot see PyTorch's allocations
    return calls


def _run_pool(problem: PoolProblem, torch: Any, budget_s: float, repeats: int | None, meter: PeakMeter,
              rng: np.random.Generator, rounds: int = protocol.ROUNDS) -> list[Row]:
    """Each phase of :data:`~.suite.POOL_PHASES` timed on its own, then PyTorch's, as a convolution's are."""
    x = _random(rng, problem.input_shape, problem.dtype)
    g = _random(rng, problem.output_shape, problem.dtype)
    ours = _pool_calls(problem, x, g)
    theirs = _torch_pool_calls(torch, problem, x, g) if torch is not None else None
    rows = []
    for phase in POOL_PHASES:
        convolab_timing, reference_timing = _timed_sides(ours[phase], theirs[phase] if theirs else None, budget_s,
                                                         repeats, meter, rounds)
        rows.append(Row(problem.name, problem.family, phase, problem.flops, convolab_timing,
                        "torch" if theirs is not None else None, reference_timing))
    return rows


def _blas_matmul(size: int) -> Callable[[], Any]:
    """The BLAS-rate call: a float32 ``size × size`` matmul (inputs made once)."""
    rng = np.random.default_rng(1)
    a = _random(rng, (size, size), "float32")
    b = _random(rng, (size, size), "float32")
    return lambda: np.matmul(a, b)


def _run_filter(problem: FilterProblem, budget_s: float, repeats: int | None, meter: PeakMeter,
                rng: np.random.Generator, rounds: int = protocol.ROUNDS) -> list[Row]:
    import scipy.signal

    import convolab as cl

    image = _random(rng, problem.image_shape, problem.dtype)
    kernel = _random(rng, problem.kernel_shape, problem.dtype)
    ours, theirs = _timed_sides(lambda: cl.correlate(image, kernel, mode=problem.mode, method="auto"),
                                lambda: scipy.signal.correlate(image, kernel, mode=problem.mode, method="auto"),
                                budget_s, repeats, meter, rounds)
    return [Row(problem.name, problem.family, "forward", problem.flops, ours, "scipy", theirs)]


def measure_blas_rate(*, size: int = protocol.BLAS_MATMUL_SIZE, budget_s: float = protocol.BLAS_MIN_BUDGET_S,
                      repeats: int | None = None) -> dict[str, Any]:
    """GFLOP/s of a float32 ``np.matmul`` of two ``size × size`` matrices, the ceiling for a 3×3 layer."""
    rng = np.random.default_rng(1)
    a = _random(rng, (size, size), "float32")
    b = _random(rng, (size, size), "float32")
    timing = time_call(lambda: np.matmul(a, b), budget_s=budget_s, repeats=repeats, measure_memory=False)
    flops = 2 * size ** 3
    return {"matmul_shape": [size, size, size], "dtype": "float32", "median_s": timing.median_s,
            "repeats": len(timing.times_s), "gflops": None if not timing.ok else flops / timing.median_s / 1e9,
            "error": timing.error}


# --------------------------------------------------------------------------- the peak-memory probe


def _memory_probe(problem: dict[str, Any], library: str, memory_limit_gib: float) -> dict[str, Any]:
    """Run in a fresh interpreter (see :func:`_run_memory_probe`): peak memory of one forward conv."""
    import resource

    with address_space_limit(memory_limit_gib):
        rng = np.random.default_rng(2)
        input_shape, weight_shape, padding = tuple(problem["input_shape"]), tuple(problem["weight_shape"]), \
            problem["padding"]
        if library == "torch":
            import torch

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

            def conv(x, w):
                with torch.no_grad():
                    return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=padding)
        else:
            import convolab as cl

            def conv(x, w):
                return cl.conv(x, w, padding=padding)
        # Warm up on a small problem: lazy imports and the BLAS's own buffers land in the baseline.
        conv(_random(rng, (1, weight_shape[1], 32, 32), "float32"), _random(rng, weight_shape, "float32"))
        x = _random(rng, input_shape, "float32")
        w = _random(rng, weight_shape, "float32")
        gc.collect()
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is in KiB on Linux
        start = time.perf_counter()
        try:
            out = conv(x, w)
        except MemoryError as error:
            return {"library": library, "error": f"out of memory: {error}"}
        elapsed = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        output_bytes = out.nbytes if library != "torch" else out.numel() * out.element_size()
        result: dict[str, Any] = {
            "library": library, "seconds": elapsed, "input_bytes": x.nbytes, "output_bytes": output_bytes,
            "baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
            "above_input_output_bytes": peak - baseline - output_bytes,
            "tracemalloc_above_input_output_bytes": None,
        }
        if library != "torch":  # tracemalloc sees NumPy's allocations, not PyTorch's
            del out
            gc.collect()
            tracemalloc.start()
            out = conv(x, w)
            result["tracemalloc_above_input_output_bytes"] = tracemalloc.get_traced_memory()[1] - out.nbytes
            tracemalloc.stop()
        return result


def _run_memory_probe(problem: MemoryProblem, library: str, env: dict[str, str],
                      memory_limit_gib: float) -> dict[str, Any]:
    """Measure ``problem`` for ``library`` in a fresh interpreter, so earlier work cannot raise the baseline."""
    payload = json.dumps({"input_shape": problem.input_shape, "weight_shape": problem.weight_shape,
                          "padding": problem.padding})
    code = ("import json, sys; from convolab.apps.bench.run import _memory_probe; "
            "print(json.dumps(_memory_probe(json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]))))")
    completed = subprocess.run([sys.executable, "-c", code, payload, library, str(memory_limit_gib)],
                               capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        tail = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"library": library, "error": f"probe exited with status {completed.returncode}: {tail}"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- running the suite


def _progress(message: str, started: float, stream: Any) -> None:
    if stream is not None:
        elapsed = int(time.perf_counter() - started)
        print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {message}", file=stream, flush=True)


def run_suite(problems: Sequence[Problem], *, torch: Any = None, budget_s: float = protocol.DEFAULT_BUDGET_S,
              repeats: int | None = None, threads: int = 2, thread_method: str | None = None,
              memory_limit_gib: float = 0.0, blas_size: int | None = None, progress: Any = sys.stderr,
              settings: dict[str, Any] | None = None, probes: bool = False, rounds: int = protocol.ROUNDS) -> Report:
    """Measure ``problems`` and summarize them against the targets.

    ``torch`` is the imported module or None (then convolab is timed alone);
    the memory problem also runs PyTorch's side in its subprocess when given.
    ``probes``: also measure import time and the first compiled call
    (:mod:`.probes`), each in fresh processes. ``rounds``: blocks per library
    and phase (``budget_s`` is split among them).
    """
    started = time.perf_counter()
    load_at_start = load_average()
    blas_size = blas_size or protocol.BLAS_MATMUL_SIZE
    meter = PeakMeter()
    rng = np.random.default_rng(0)
    rows: list[Row] = []
    memory: dict[str, Any] | None = None
    memory_problem = None
    _progress(f"BLAS rate: float32 matmul {blas_size}^3", started, progress)
    blas_budget = max(budget_s, protocol.BLAS_MIN_BUDGET_S)
    blas_before = measure_blas_rate(size=blas_size, budget_s=blas_budget, repeats=repeats)
    with address_space_limit(memory_limit_gib):
        for index, problem in enumerate(problems, 1):
            label = f"{index}/{len(problems)} {problem.name}"
            if isinstance(problem, ConvProblem):
                new_rows = _run_conv(problem, torch, budget_s, repeats, meter, rng, blas_size, rounds)
            elif isinstance(problem, PoolProblem):
                new_rows = _run_pool(problem, torch, budget_s, repeats, meter, rng, rounds)
            elif isinstance(problem, FilterProblem):
                new_rows = _run_filter(problem, budget_s, repeats, meter, rng, rounds)
            else:
                memory_problem = problem.name
                env = child_environment(threads)
                memory = {"problem": problem.name, "method": "ru_maxrss growth minus output bytes, fresh subprocess",
                          "convolab": _run_memory_probe(problem, "convolab", env, memory_limit_gib),
                          "torch": None if torch is None else _run_memory_probe(problem, "torch", env,
                                                                                memory_limit_gib)}
                _progress(f"{label}: {describe_memory(memory)}", started, progress)
                if "error" in memory["convolab"]:
                    rows.append(Row(problem.name, problem.family, "forward", 0,
                                    Timing(None, [], None, memory["convolab"]["error"])))
                continue
            rows.extend(new_rows)
            for row in new_rows:
                _progress(f"{label} {row.phase}: {describe_row(row)}", started, progress)
    probe_results = None
    if probes:
        from .probes import run_probes

        _progress("probes: import time, first compiled call", started, progress)
        probe_results = run_probes(child_environment(threads))
        _progress(f"probes: {json.dumps(probe_results)}", started, progress)
    blas_after = measure_blas_rate(size=blas_size, budget_s=blas_budget, repeats=repeats)
    rates = [rate for rate in (blas_before["gflops"], blas_after["gflops"]) if rate is not None]
    blas = {"matmul_shape": blas_before["matmul_shape"], "dtype": "float32",
            "gflops": max(rates) if rates else None, "before": blas_before, "after": blas_after}
    _progress(describe_blas_rates(blas_before["gflops"], blas_after["gflops"]), started, progress)
    summary = summarize(rows, blas, memory, probe_results)
    targets = evaluate_targets(summary, target_problems(rows, memory_problem))
    run_settings = {
        "budget_s": budget_s, "repeats": repeats, "max_repeats": protocol.MAX_REPEATS, "threads": threads,
        "rounds": rounds, "min_repeats": protocol.MIN_REPEATS,
        "blas_threads": thread_method, "torch_threads": None if torch is None else torch.get_num_threads(),
        "peak_memory_method": meter.method, "memory_limit_gib": memory_limit_gib or None,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_average_1min": {"start": load_at_start, "end": load_average()},
        **(settings or {}),
    }
    machine = machine_info(torch)
    run_settings["warnings"] = (busy_machine_warnings(blas_before["gflops"], blas_after["gflops"], load_at_start)
                                + pinned_blas_warnings(machine["blas"], cpu_flags()))
    problem_table = [describe_problem(problem) for problem in problems]
    return Report(machine, run_settings, problem_table, blas, rows, memory, summary, targets, probe_results)
