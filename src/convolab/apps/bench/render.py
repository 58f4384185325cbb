"""The report rendered: a plain-text table for the terminal, and the results page ``benchmarks/RESULTS.md``.

Both read a :class:`~.results.Report` and nothing else (the JSON file is
:meth:`~.results.Report.to_json`). The results page may carry sections other
scripts wrote (the training comparison of ``benchmarks/train_torch.py``):
:func:`write_section` puts one in, and :func:`kept_sections` keeps them when
the benchmark rewrites the page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from . import protocol
from .machine import CORETYPE_VARIABLE
from .results import Report, Row
from .suite import SUITE_VERSION
from .timing import Timing

__all__ = ["render_table", "render_results_md", "kept_sections", "write_section", "describe_row",
           "describe_memory", "describe_blas_rates"]


def _ms(timing: Timing | None) -> str:
    if timing is None:
        return "-"
    return "error" if not timing.ok else f"{timing.median_s * 1e3:.2f}"


def _mib(timing: Timing | None) -> str:
    return "-" if timing is None or timing.peak_bytes is None else f"{timing.peak_bytes / protocol.MIB:.0f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def describe_row(row: Row) -> str:
    """One row as a progress line: both medians and their ratio, and any error."""
    text = f"convolab {_ms(row.convolab)} ms"
    if row.reference_timing is not None:
        text += f", {row.reference} {_ms(row.reference_timing)} ms, ratio {_num(row.ratio)}"
    errors = [t.error for t in (row.convolab, row.reference_timing) if t is not None and t.error]
    return text + (f" ({'; '.join(errors)})" if errors else "")


def describe_blas_rates(before: float | None, after: float | None) -> str:
    """The BLAS rate measured before and after the problems, in GFLOP/s, as a progress line."""
    return f"BLAS rate: {_num(before, 1)} GFLOP/s before, {_num(after, 1)} after"


def describe_memory(memory: dict[str, Any]) -> str:
    """The peak-memory probe's outcome for each library, on one line."""
    parts = []
    for library in ("convolab", "torch"):
        probe = memory.get(library)
        if probe is None:
            continue
        if "error" in probe:
            parts.append(f"{library} {probe['error']}")
        else:
            parts.append(f"{library} {probe['above_input_output_bytes'] / protocol.MIB:.0f} MiB above input+output "
                         f"({probe['seconds']:.2f} s)")
    return "; ".join(parts)


def _table_rows(report: Report) -> list[list[str]]:
    lines = []
    previous = None
    for row in report.rows:
        lines.append([
            row.problem if row.problem != previous else "", row.phase, _ms(row.convolab),
            row.reference or "-", _ms(row.reference_timing), _num(row.ratio), _mib(row.convolab),
            _mib(row.reference_timing), _num(row.gflops(row.convolab), 1), _num(row.gflops(row.reference_timing), 1),
        ])
        previous = row.problem
    return lines


_TABLE_HEADER = ["problem", "phase", "convolab ms", "vs", "ref ms", "ratio", "cl MiB", "ref MiB", "cl GFLOP/s",
                 "ref GFLOP/s"]


def _format_value(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _target_value(target: dict[str, Any], summary: dict[str, Any]) -> str:
    """A target's measured value as shown, with the problem behind a worst case."""
    value = target["value"]
    shown = "-" if value is None else f"{value:.3f}"
    worst = {"forward_worst": "forward_worst_problem", "training_worst": "training_worst_problem"}.get(target["key"])
    if worst and summary.get(worst):
        shown += f" ({summary[worst]})"
    return shown


def _summary_lines(report: Report) -> list[str]:
    s = report.summary
    lines = []
    if report.blas and report.blas.get("gflops"):
        size = report.blas["matmul_shape"][0]
        lines.append(f"BLAS rate: {report.blas['gflops']:.1f} GFLOP/s (float32 matmul {size}x{size}x{size}; "
                     f"{_num(report.blas['before']['gflops'], 1)} before the problems, "
                     f"{_num(report.blas['after']['gflops'], 1)} after)")
    if s["phase_geomeans"] and any(v is not None for v in s["phase_geomeans"].values()):
        lines.append("geomean convolab/PyTorch by phase: " + ", ".join(
            f"{phase} {_format_value(value, 2)}" for phase, value in s["phase_geomeans"].items()))
    if s.get("pool_forward_geomean") is not None:
        lines.append(f"pooling layers (not in the geomeans above), geomean convolab/PyTorch: forward "
                     f"{_format_value(s['pool_forward_geomean'], 2)}, forward + input grad "
                     f"{_format_value(s.get('pool_training_geomean'), 2)}")
    if s["forward_worst_problem"]:
        lines.append(f"worst forward: {s['forward_worst_problem']} ({s['forward_worst']:.2f})")
    if s.get("training_worst_problem"):
        lines.append(f"worst forward + gradients: {s['training_worst_problem']} ({s['training_worst']:.2f})")
    if s["layers_3x3"]:
        lines.append("3x3 layers, forward GFLOP/s and fraction of the BLAS rate (convolab | PyTorch):")
        width = max(len(layer["problem"]) for layer in s["layers_3x3"])
        for layer in s["layers_3x3"]:
            lines.append(f"  {layer['problem'].ljust(width)}  {_num(layer['convolab_gflops'], 1):>7} "
                         f"{_pct(layer['convolab_fraction']):>7} | {_num(layer['torch_gflops'], 1):>7} "
                         f"{_pct(layer['torch_fraction']):>7}")
    if s["blas_fraction_3x3_worst_problem"]:
        lines.append(f"3x3 layer furthest from the BLAS rate: {s['blas_fraction_3x3_worst_problem']} "
                     f"({s['blas_fraction_3x3_worst']:.1%})")
    if s["convolab_failed"]:
        lines.append("convolab could not run: " + ", ".join(s["convolab_failed"]))
    lines.append("")
    lines.append("targets:")
    for target in report.targets:
        lines.append(f"  [{target['status']:>12}] {target['description']}: {_target_value(target, s)} "
                     f"(goal {target['goal']})")
    return lines


def render_table(report: Report) -> str:
    """The plain-text table of medians, ratios, peak memory and rates, then the summary and targets."""
    header = _TABLE_HEADER
    body = _table_rows(report)
    widths = [max(len(header[i]), *(len(line[i]) for line in body)) if body else len(header[i])
              for i in range(len(header))]

    def format_line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) if i < 2 or i == 3 else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [format_line(header), format_line(["-" * w for w in widths])]
    lines.extend(format_line(line) for line in body)
    errors = [(row.problem, row.phase, t.error) for row in report.rows
              for t in (row.convolab, row.reference_timing) if t is not None and t.error]
    if errors:
        lines.append("")
        lines.extend(f"error: {problem} {phase}: {error}" for problem, phase, error in errors)
    if report.memory:
        lines.append("")
        lines.append(f"peak memory, {report.memory['problem']}: {describe_memory(report.memory)}")
    lines.append("")
    lines.extend(_summary_lines(report))
    s = report.settings
    lines.append("")
    lines.extend(f"WARNING: {warning}" for warning in s.get("warnings", []))
    lines.append(f"threads {s['threads']} (BLAS: {s['blas_threads'] or 'not controlled'}; PyTorch: "
                 f"{s['torch_threads'] if s['torch_threads'] is not None else 'not used'}); "
                 f"peak memory by {s['peak_memory_method']}; wall {s['wall_s']} s")
    return "\n".join(lines) + "\n"


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i >= right_from else "---" for i in range(len(header))) + "|"]
    lines.extend("| " + " | ".join(cells) + " |" for cells in body)
    return lines


def render_results_md(report: Report) -> str:
    """``benchmarks/RESULTS.md``: the machine, the targets, the 3x3 and filtering tables, every row, the method."""
    m, s, summary = report.machine, report.settings, report.summary
    command = s.get("command", "convolab bench")
    lines = ["# convolab benchmark results", "",
             f"Suite version {SUITE_VERSION}, run on {m['date']} with `{command}` "
             f"(convolab {m['convolab']}{', revision ' + m['convolab_revision'] if m['convolab_revision'] else ''}).",
             "Regenerate with `python benchmarks/bench.py --json benchmarks/results.json "
             "--results benchmarks/RESULTS.md` (a full run).", ""]
    partial = (["--quick"] if s.get("quick") else []) + [f"--filter {f}" for f in s.get("filter") or []]
    if partial:
        lines += [f"**Partial run** ({' '.join(partial)}): only some problems were measured.", ""]
    blas = m["blas"]
    blas_text = " ".join(str(v) for v in (blas.get("name"), blas.get("version")) if v) or "unknown"
    if blas.get("configuration"):
        blas_text += f" (build: {blas['configuration']})"
    if blas.get("architecture"):
        chosen_by = (f"`{CORETYPE_VARIABLE}={blas['coretype_variable']}` in the environment"
                     if blas.get("coretype_variable") else "detected from the CPU")
        blas_text += f"; kernels at run time: {blas['architecture']} ({chosen_by})"
    lines += [f"**Warning**: {warning}." for warning in s.get("warnings", [])]
    if s.get("warnings"):
        lines.append("")
    lines += ["## Machine", "",
              f"- CPU: {m['cpu']}",
              f"- Cores: {m['cores']} ({m['usable_cores']} usable by this process)",
              f"- Memory: {_gib_text(m['memory_bytes'])}",
              f"- OS: {m['os']}",
              f"- Python {m['python']}, NumPy {m['numpy']}, SciPy {m['scipy']}, "
              f"PyTorch {m['torch'] or 'not used'}",
              f"- BLAS: {blas_text}",
              f"- Threads: {s['threads']}; NumPy's BLAS: {s['blas_threads'] or 'not controlled'}; PyTorch: "
              + (f"`torch.set_num_threads({s['torch_threads']})`" if s["torch_threads"] is not None else "not used"),
              f"- Float32 matrix-product rate (BLAS, {_matmul_size(report)}^3 matmul): "
              f"{_format_value(summary['blas_gflops'], 1)} GFLOP/s (the higher of "
              f"{_num((report.blas or {}).get('before', {}).get('gflops'), 1)} before the problems and "
              f"{_num((report.blas or {}).get('after', {}).get('gflops'), 1)} after)",
              ""]
    lines += ["## Targets", "", "Ratios are convolab's median time over the reference's; below 1 is faster.", ""]
    body = []
    for target in report.targets:
        shown = _target_value(target, summary)
        if target["convolab_failed"]:
            shown += f"; convolab failed on {', '.join(target['convolab_failed'])}"
        body.append([target["description"], target["goal"], shown, target["status"]])
    lines += _md_table(["target", "goal", "measured", "status"], body, right_from=4)
    lines.append("")
    if summary["layers_3x3"]:
        lines += ["## 3x3 layers against the BLAS rate", "",
                  "Achieved forward GFLOP/s (2 x multiply-adds / median) over the float32 matmul rate "
                  "timed in a block of its own right after the layer's (a slow spell of the machine falls "
                  "on all three).", ""]
        lines += _md_table(["layer", "BLAS GFLOP/s", "convolab GFLOP/s", "fraction", "PyTorch GFLOP/s", "fraction"], [
            [layer["problem"], _num(layer.get("blas_gflops"), 1), _num(layer["convolab_gflops"], 1),
             _pct(layer["convolab_fraction"]), _num(layer["torch_gflops"], 1), _pct(layer["torch_fraction"])]
            for layer in summary["layers_3x3"]])
        lines.append("")
    filtering_rows = [row for row in report.rows if row.reference == "scipy"]
    if filtering_rows:
        lines += ["## Image filtering against SciPy", "",
                  "`convolab.correlate(image, kernel, mode='same', method='auto')` against "
                  "`scipy.signal.correlate(..., method='auto')`, float32, 2048x2048.", ""]
        lines += _md_table(["problem", "convolab ms", "SciPy ms", "ratio"], [
            [row.problem, _ms(row.convolab), _ms(row.reference_timing), _num(row.ratio)] for row in filtering_rows])
        lines.append("")
    if report.probes:
        lines += ["## Start-up and compilation", ""]
        lines += _probe_lines(report.probes)
        lines.append("")
    if report.memory:
        lines += ["## Peak memory", "", f"`{report.memory['problem']}`: one float32 forward convolution in a fresh "
                  "subprocess; `ru_maxrss` after minus `ru_maxrss` once the input is allocated, minus the "
                  "output's bytes. The tracemalloc column counts NumPy's allocations only (no BLAS buffers).", ""]
        body = []
        for library in ("convolab", "torch"):
            probe = report.memory.get(library)
            if probe is None:
                continue
            if "error" in probe:
                body.append([library, probe["error"], "-", "-"])
            else:
                traced = probe.get("tracemalloc_above_input_output_bytes")
                body.append([library, f"{probe['above_input_output_bytes'] / protocol.MIB:.0f}",
                             "-" if traced is None else f"{traced / protocol.MIB:.0f}", f"{probe['seconds']:.2f}"])
        lines += _md_table(["library", "RSS above input+output, MiB", "tracemalloc, MiB", "seconds"], body)
        lines.append("")
    lines += ["## Every problem", "",
              "Medians in milliseconds; peak memory (MiB) is the warm-up call's resident-set high-water mark above "
              "what was resident before it, output included.", ""]
    lines += _md_table(_TABLE_HEADER, _table_rows(report), right_from=2)
    lines += ["", "## Suite", ""]
    lines += _md_table(["problem", "family", "shapes"],
                       [[p["name"], p["family"], p["summary"]] for p in report.problems], right_from=3)
    lines += ["", "## Method", "",
              f"- Timing: each library in its own blocks, {_rounds(s)} per phase, alternating (convolab, PyTorch, "
              f"convolab, ...), each after {protocol.SETTLE_S} s of rest (the other's worker threads spin for a "
              f"while after its calls: convolab right after a BLAS matmul measured 1.8x slower). A block is one "
              f"warm-up call, then repeats until {s['budget_s']} s / {_rounds(s)} is spent (at least "
              f"{s.get('min_repeats', 1)}, at most {s['max_repeats']}"
              f"{'; fixed at ' + str(s['repeats']) if s['repeats'] else ''}); a library's time is the median of "
              f"its blocks' medians. The garbage collector is off while timing. A 3x3 forward is followed by a "
              f"block of the BLAS matmul its fraction divides by.",
              "- convolab: `convolab.conv`, `convolab.grad.conv_input`, `convolab.grad.conv_weight` with "
              "`algorithm='auto'`; PyTorch: `torch.nn.functional.conv{1,2,3}d` under `no_grad`, "
              "`torch.nn.grad.conv{1,2,3}d_input` and `_weight`.",
              "- The forward + backward ratio of a layer is the sum of its three convolab medians over the sum of "
              "PyTorch's; the target is their geometric mean.",
              "- A transposed layer's gradients are the convolutions PyTorch and convolab both compute them with: "
              "the input gradient is `conv(grad_output, weight)`, the weight gradient `conv_weight` with the "
              "input and grad_output swapped.",
              "- The 3x3 table gives the fraction of the BLAS rate each dense 2-d 3x3 layer reaches, against the "
              "BLAS rate timed right after it (reported, no longer a target). The wide-3x3 target is the "
              "forward geomean over the 3x3 stride-1 layers with at least 64 channels.",
              f"- Address space capped at what the benchmark had mapped plus "
              f"{_format_value(s['memory_limit_gib'], 1)} GiB; a call that needs more is reported as out of memory.",
              ""]
    return "\n".join(lines)


def _rounds(settings: dict[str, Any]) -> int:
    """Blocks per library and phase (runs before rounds existed had one)."""
    return settings.get("rounds") or 1


def _probe_lines(probes: dict[str, Any]) -> list[str]:
    """The probes (:mod:`.probes`) as a list: import time, the first compiled call."""
    lines = []
    found = probes.get("import") or {}
    lines.append("- `python -c 'import convolab'`: " + (found["error"] if "error" in found else
                 f"{found['median_s']:.3f} s (median of {found['runs']}; `python -c pass` "
                 f"{found['python_alone_s']:.3f} s)"))
    found = probes.get("first_compiled_call") or {}
    if "error" in found:
        lines.append(f"- First compiled call: not measured ({found['error']})")
    elif found:
        layer = found["layer"]
        lines.append(f"- First call in a fresh process, `algorithm={found['algorithm']!r}` on x{tuple(layer['input'])} "
                     f"w{tuple(layer['weight'])} groups {layer['groups']}: {found['cold_first_s']:.2f} s with a cold "
                     f"Numba cache, {found['warm_first_s']:.3f} s warm, against {found['numpy_first_s']:.3f} s for "
                     f"`{found['numpy_algorithm']}` (NumPy): {found['cold_extra_s']:+.2f} s cold, "
                     f"{found['warm_extra_s']:+.3f} s warm. Second calls: {found['compiled_second_s'] * 1e3:.2f} ms "
                     f"compiled, {found['numpy_second_s'] * 1e3:.2f} ms NumPy.")
    return lines


def _matmul_size(report: Report) -> int | str:
    return (report.blas or {}).get("matmul_shape", ["?"])[0]


def _gib_text(value: int | None) -> str:
    return "unknown" if value is None else f"{value / protocol.GIB:.1f} GiB"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


# --------------------------------------------------------------------------- sections other scripts wrote


_SECTION_START, _SECTION_END = "<!-- section: {name} -->", "<!-- end of section: {name} -->"


def kept_sections(text: str) -> str:
    """The marked sections of a results page that other scripts wrote (training, ...), to keep on rewrite."""
    kept, position = [], 0
    while (start := text.find("<!-- section: ", position)) != -1:
        name = text[start + len("<!-- section: "):text.find(" -->", start)]
        end_marker = _SECTION_END.format(name=name)
        end = text.find(end_marker, start)
        if end == -1:
            break
        kept.append("\n" + text[start:end + len(end_marker)] + "\n")
        position = end + len(end_marker)
    return "".join(kept)


def write_section(path: str | os.PathLike[str], name: str, body: str) -> None:
    """Put ``body`` into ``path`` between the markers of section ``name``, replacing that section if present."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    start_marker, end_marker = _SECTION_START.format(name=name), _SECTION_END.format(name=name)
    block = f"{start_marker}\n{body.rstrip()}\n{end_marker}"
    start, end = text.find(start_marker), text.find(end_marker)
    if start != -1 and end != -1:
        text = text[:start] + block + text[end + len(end_marker):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
