"""What a run measured, as data: :class:`Row` and :class:`Report`, and the summary and targets drawn from them.

A :class:`Report` is a JSON-ready tree (:meth:`Report.to_json` is the JSON
file); rendering it as a table or as ``RESULTS.md`` is :mod:`.render`'s job.
The targets (:data:`TARGETS`) are ratios of convolab's median time over the
reference library's, the fraction of the BLAS matmul rate the 3×3 layers reach,
and the peak memory of one large convolution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from . import protocol
from .suite import CONV_PHASES, POOL_FAMILY, SUITE_VERSION
from .timing import Timing

__all__ = ["Row", "Report", "TARGETS", "summarize", "evaluate_targets", "target_problems"]


@dataclass
class Row:
    """One problem in one phase: convolab's timing and the reference library's."""

    problem: str
    family: str
    phase: str
    flops: int
    convolab: Timing
    reference: str | None = None
    reference_timing: Timing | None = None
    is_3x3: bool = False
    #: A 3x3 forward's BLAS matmul, timed in a block right after it (its rate is the fraction's denominator).
    blas_timing: Timing | None = None
    blas_flops: int = 0
    #: A dense 3x3 stride-1 layer with at least 64 channels (the Winograd target's layers).
    is_wide_3x3: bool = False

    @property
    def blas_gflops(self) -> float | None:
        if self.blas_timing is None or not self.blas_timing.ok or self.blas_timing.median_s <= 0:
            return None
        return self.blas_flops / self.blas_timing.median_s / 1e9

    @property
    def ratio(self) -> float | None:
        """convolab's median over the reference's: below 1 is faster."""
        if self.reference_timing is None or not (self.convolab.ok and self.reference_timing.ok):
            return None
        return self.convolab.median_s / self.reference_timing.median_s

    def gflops(self, timing: Timing | None) -> float | None:
        if timing is None or not timing.ok or timing.median_s <= 0:
            return None
        return self.flops / timing.median_s / 1e9

    def to_json(self) -> dict[str, Any]:
        return {
            "problem": self.problem, "family": self.family, "phase": self.phase, "flops": self.flops,
            "is_3x3": self.is_3x3, "is_wide_3x3": self.is_wide_3x3, "convolab": asdict(self.convolab), "convolab_gflops": self.gflops(self.convolab),
            "reference": self.reference,
            "reference_timing": None if self.reference_timing is None else asdict(self.reference_timing),
            "reference_gflops": self.gflops(self.reference_timing), "ratio": self.ratio,
            "blas_gflops_beside": self.blas_gflops,
        }


@dataclass
class Report:
    """Everything one run measured, and what it concludes; :meth:`to_json` is the JSON file."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    problems: list[dict[str, Any]]
    blas: dict[str, Any] | None
    rows: list[Row]
    memory: dict[str, Any] | None
    summary: dict[str, Any]
    targets: list[dict[str, Any]]
    #: Import time, the first compiled call, a training epoch (:mod:`.probes`); None when not run.
    probes: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": f"convolab-bench/{SUITE_VERSION}", "machine": self.machine, "settings": self.settings,
            "problems": self.problems, "blas": self.blas, "results": [row.to_json() for row in self.rows],
            "memory": self.memory, "probes": self.probes, "summary": self.summary, "targets": self.targets,
        }


# --------------------------------------------------------------------------- summary and targets

#: (key, what is measured, comparison, goal). Ratios are convolab's time over the reference's.
#: The goals are issue 15's ("compiled kernels"); the BLAS fraction of the 3x3 layers is still
#: reported beside them, but is no longer a target (it was set against a half-speed pinned BLAS).
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("forward_worst", "forward, worst problem convolab/PyTorch", "<=", 1.5),
    ("training_worst", "forward + input grad + weight grad (a pool: forward + input grad), worst problem "
     "convolab/PyTorch", "<=", 1.5),
    ("forward_geomean", "forward, geometric mean of convolab/PyTorch over the convolution layers", "<=", 0.9),
    ("training_geomean", "forward + input grad + weight grad, geometric mean of convolab/PyTorch over the "
     "convolution layers", "<=", 0.9),
    ("forward_wide_3x3_geomean", "3x3 stride-1 layers with >= 64 channels, forward geometric mean of "
     "convolab/PyTorch", "<=", 0.85),
    ("filtering_geomean", "image filtering 2048x2048, k 3..63, geometric mean of convolab/SciPy", "<=", 0.7),
    ("memory_above_io_gib", "conv (1,64,1024,1024) * (64,64,3,3) padding 1: peak memory above input+output, GiB",
     "<=", 0.25),
    ("import_s", "python -c 'import convolab', median wall seconds", "<=", 0.65),
    ("first_compiled_call_extra_s", "first compiled call in a fresh process, warm cache: seconds more than a "
     "NumPy-path first call", "<=", 0.5),
)
# The training target (convolab train's seconds per epoch over PyTorch's, <= 0.7) is measured by
# benchmarks/train_torch.py, which writes its own section of the results page.


def _geomean(values: Sequence[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarize(rows: Sequence[Row], blas: dict[str, Any] | None, memory: dict[str, Any] | None,
              probes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ratios the targets read, with the problems behind each and those that could not be compared."""
    probes = probes or {}
    conv_rows = [row for row in rows if row.reference == "torch"]
    by_problem: dict[str, dict[str, Row]] = {}
    for row in conv_rows:
        by_problem.setdefault(row.problem, {})[row.phase] = row
    failed = sorted({row.problem for row in rows if not row.convolab.ok})
    # The geometric means (the targets' and the per-phase ones) are taken over the convolution layers only: the
    # issue set them on a suite of convolutions, and pooling problems (where PyTorch's CPU kernels are slow)
    # would flatter them. The pools count in the worst-problem targets and get geometric means of their own.
    pools = {row.problem for row in conv_rows if row.family == POOL_FAMILY}

    forward = {name: phases["forward"].ratio for name, phases in by_problem.items() if "forward" in phases}
    forward_ok = {name: r for name, r in forward.items() if r is not None}
    worst = max(forward_ok.items(), key=lambda item: item[1]) if forward_ok else None
    wide = [phases["forward"].ratio for phases in by_problem.values()
            if "forward" in phases and phases["forward"].is_wide_3x3 and phases["forward"].ratio is not None]
    per_phase = {}
    for phase in CONV_PHASES:
        ratios = [phases[phase].ratio for name, phases in by_problem.items() if phase in phases and name not in pools]
        per_phase[phase] = _geomean([r for r in ratios if r is not None])

    training = {}  # every phase a problem has: a convolution's three, a pool's forward and input gradient
    for name, phases in by_problem.items():
        if all(row.ratio is not None for row in phases.values()):
            ours = sum(row.convolab.median_s for row in phases.values())
            theirs = sum(row.reference_timing.median_s for row in phases.values())
            training[name] = ours / theirs
    training_worst = max(training.items(), key=lambda item: item[1]) if training else None

    blas_gflops = None if blas is None else blas.get("gflops")
    layers_3x3 = []
    for row in rows:
        if row.is_3x3 and row.phase == "forward":
            ours, theirs = row.gflops(row.convolab), row.gflops(row.reference_timing)
            rate = row.blas_gflops or blas_gflops  # measured right after the layer, else the run's
            layers_3x3.append({
                "problem": row.problem, "convolab_gflops": ours, "torch_gflops": theirs, "blas_gflops": rate,
                "convolab_fraction": None if ours is None or not rate else ours / rate,
                "torch_fraction": None if theirs is None or not rate else theirs / rate,
            })
    fractions = [layer["convolab_fraction"] for layer in layers_3x3 if layer["convolab_fraction"] is not None]
    worst_3x3 = min(layers_3x3, key=lambda layer: layer["convolab_fraction"]) if fractions else None

    filtering = {row.problem: row.ratio for row in rows if row.reference == "scipy"}
    filtering_ok = {name: r for name, r in filtering.items() if r is not None}

    memory_above = None
    if memory and memory.get("convolab") and "above_input_output_bytes" in memory["convolab"]:
        memory_above = memory["convolab"]["above_input_output_bytes"] / protocol.GIB
    return {
        "forward_geomean": _geomean([r for name, r in forward_ok.items() if name not in pools]),
        "forward_worst": None if worst is None else worst[1],
        "forward_worst_problem": None if worst is None else worst[0],
        "phase_geomeans": per_phase,
        "training_geomean": _geomean([r for name, r in training.items() if name not in pools]),
        "pool_forward_geomean": _geomean([r for name, r in forward_ok.items() if name in pools]),
        "pool_training_geomean": _geomean([r for name, r in training.items() if name in pools]),
        "training_worst": None if training_worst is None else training_worst[1],
        "training_worst_problem": None if training_worst is None else training_worst[0],
        "training_ratios": training,
        "forward_wide_3x3_geomean": _geomean(wide),
        "blas_gflops": blas_gflops,
        "layers_3x3": layers_3x3,
        "blas_fraction_3x3": _geomean(fractions),
        "blas_fraction_3x3_worst": None if worst_3x3 is None else worst_3x3["convolab_fraction"],
        "blas_fraction_3x3_worst_problem": None if worst_3x3 is None else worst_3x3["problem"],
        "filtering_geomean": _geomean(list(filtering_ok.values())),
        "filtering_ratios": filtering,
        "memory_above_io_gib": memory_above,
        "import_s": (probes.get("import") or {}).get("median_s"),
        "first_compiled_call_extra_s": (probes.get("first_compiled_call") or {}).get("warm_extra_s"),
        "convolab_failed": failed,
        "compared_problems": {"torch": len(by_problem), "scipy": len(filtering)},
    }


def evaluate_targets(summary: dict[str, Any], measured_problems: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Each target with its measured value and status: ``pass``, ``FAIL`` or ``not measured``.

    A target fails outright if convolab could not run one of its problems
    (out of memory, say): a missing ratio must not flatter a geometric mean.
    """
    targets = []
    for key, description, comparison, goal in TARGETS:
        value = summary.get(key)
        problems = measured_problems.get(key, [])
        missing = sorted(set(problems) & set(summary["convolab_failed"]))
        if value is None and not missing:
            status = "not measured"
        elif missing:
            status = "FAIL"
        else:
            holds = value <= goal if comparison == "<=" else value >= goal if comparison == ">=" else value < goal
            status = "pass" if holds else "FAIL"
        shown_goal = f"{goal:g}"
        targets.append({"key": key, "description": description, "goal": f"{comparison} {shown_goal}",
                        "value": value, "status": status, "convolab_failed": missing})
    return targets


def target_problems(rows: Sequence[Row], memory_problem: str | None) -> dict[str, list[str]]:
    """The problems behind each target, by its key: a target fails if convolab could not run one of them."""
    compared = sorted({row.problem for row in rows if row.reference == "torch"})
    conv = sorted({row.problem for row in rows if row.reference == "torch" and row.family != POOL_FAMILY})
    return {
        "forward_geomean": conv, "forward_worst": compared, "training_geomean": conv, "training_worst": compared,
        "forward_wide_3x3_geomean": sorted({row.problem for row in rows if row.is_wide_3x3}),
        "filtering_geomean": sorted({row.problem for row in rows if row.reference == "scipy"}),
        "memory_above_io_gib": [memory_problem] if memory_problem else [],
    }
