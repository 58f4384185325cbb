"""The benchmark harness: the suite is well-formed, and tiny runs produce the table, JSON and RESULTS.md.

No timing is asserted anywhere: these check the harness, not the speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

import convolab as cl
from convolab.apps import bench
from convolab.apps.bench.suite import ConvProblem, FilterProblem, MemoryProblem, PoolProblem

REPO = pathlib.Path(__file__).resolve().parent.parent

TINY = (
    ConvProblem(name="tiny.conv3x3", family="resnet18", input_shape=(2, 3, 8, 8), weight_shape=(4, 3, 3, 3),
                stride=(1, 1), padding=(1, 1), dilation=(1, 1)),
    ConvProblem(name="tiny.dw1d", family="audio1d", input_shape=(2, 4, 32), weight_shape=(4, 1, 5),
                stride=(2,), padding=(2,), dilation=(1,), groups=4),
    FilterProblem(name="tiny.filter", family="filtering", image_shape=(16, 16), kernel_shape=(3, 3)),
)
TINY_MEMORY = MemoryProblem(name="tiny.memory", family="memory", input_shape=(1, 4, 16, 16),
                            weight_shape=(4, 4, 3, 3), padding=1)
TARGET_KEYS = {key for key, *_ in bench.TARGETS}
ROW_KEYS = {"problem", "family", "phase", "flops", "convolab", "reference", "reference_timing", "ratio",
            "convolab_gflops", "reference_gflops", "is_3x3"}


def conv_problems(kind=ConvProblem):
    return [p for p in bench.SUITE if isinstance(p, kind)]


# --------------------------------------------------------------------------- the suite


@pytest.mark.parametrize("problem", conv_problems(), ids=lambda p: p.name)
def test_every_layer_has_valid_shapes(problem):
    assert problem.dtype == "float32"
    assert len(problem.stride) == len(problem.padding) == len(problem.dilation) == problem.rank
    if problem.transposed:
        # PyTorch's ConvTranspose size, (in - 1)*s - 2p + d*(k - 1) + 1, and each input cell meets
        # C_out/groups * prod(k) weights.
        batch, _, *spatial = problem.input_shape
        size = [(n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in
                zip(spatial, problem.stride, problem.padding, problem.dilation, problem.weight_shape[2:])]
        expected = (batch, problem.weight_shape[1] * problem.groups, *size)
        assert problem.output_shape == expected
        assert problem.flops == 2 * math.prod(problem.input_shape) * math.prod(problem.weight_shape[1:])
    else:
        expected = cl.output_shape(problem.input_shape, problem.weight_shape, stride=problem.stride,
                                   padding=problem.padding, dilation=problem.dilation, groups=problem.groups)
        assert problem.output_shape == expected
        assert problem.flops == 2 * math.prod(expected) * math.prod(problem.weight_shape[1:])
    assert min(expected) > 0


def test_the_suite_covers_the_layer_classes_off_the_gemm_path():
    """Issue 15: depthwise (stride 1 and 2), grouped, dilated, stems, transposed decoders, 3-d, 1-d."""
    layers = conv_problems()
    depthwise = [p for p in layers if p.groups > 1 and p.groups == p.input_shape[1] and p.rank == 2]
    assert {p.stride for p in depthwise} >= {(1, 1), (2, 2)}
    assert any(1 < p.groups < p.input_shape[1] and p.input_shape[1] // p.groups <= 8 for p in layers)
    assert any(max(p.dilation) > 1 and p.rank == 2 for p in layers)
    stems = [p for p in layers if p.input_shape[1] == 3 and p.stride == (2, 2) and not p.transposed]
    assert {p.weight_shape[2] for p in stems} >= {5, 7}
    assert any(p.transposed and p.stride == (2, 2) for p in layers)
    assert any(p.rank == 3 and p.input_shape[1] != p.weight_shape[0] for p in layers)
    assert any(p.rank == 1 for p in layers)
    assert any(p.is_wide_3x3 for p in layers) and not any(p.is_wide_3x3 and p.stride != (1, 1) for p in layers)


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_calls_are_the_same_math_on_both_sides(groups):
    torch = pytest.importorskip("torch")
    from convolab.apps.bench.run import _convolab_calls, _torch_calls

    problem = ConvProblem(name="tiny.up", family="transposed", input_shape=(2, 4, 5, 5), weight_shape=(4, 3, 4, 4),
                          stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=groups, transposed=True)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(problem.input_shape), rng.standard_normal(problem.weight_shape)
    g = rng.standard_normal(problem.output_shape)
    ours, theirs = _convolab_calls(problem, x, w, g), _torch_calls(torch, problem, x, w, g)
    # The reference: autograd through PyTorch's conv_transpose2d.
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    out = torch.nn.functional.conv_transpose2d(tx, tw, None, 2, 1, 0, groups)
    out.backward(torch.tensor(g))
    expected = {"forward": out.detach().numpy(), "input_grad": tx.grad.numpy(), "weight_grad": tw.grad.numpy()}
    for phase, value in expected.items():
        np.testing.assert_allclose(ours[phase](), value, rtol=1e-10, atol=1e-10, err_msg=phase)
        np.testing.assert_allclose(theirs[phase]().numpy(), value, rtol=1e-10, atol=1e-10, err_msg=phase)


def test_names_are_unique_and_families_complete():
    names = [p.name for p in bench.SUITE]
    assert len(names) == len(set(names))
    families = {p.family for p in bench.SUITE}
    assert {"resnet18", "resnet50", "vgg16", "mobilenet_dw", "stem", "audio1d", "volume3d", "filtering",
            "memory"} <= families


def test_cnn_layers_are_at_batch_8():
    for problem in conv_problems():
        if problem.family in ("resnet18", "resnet50", "vgg16", "mobilenet_dw", "stem"):
            assert problem.input_shape[0] == 8, problem.name


def test_the_special_layers_are_what_they_claim():
    by_family = {}
    for problem in conv_problems():
        by_family.setdefault(problem.family, []).append(problem)
    assert any(p.weight_shape[2:] == (7, 7) and p.stride == (2, 2) for p in by_family["stem"])
    depthwise = by_family["mobilenet_dw"]
    assert depthwise and all(p.groups == p.input_shape[1] == p.weight_shape[0] and p.weight_shape[1] == 1
                             for p in depthwise)
    assert all(p.rank == 1 for p in by_family["audio1d"])
    assert all(p.rank == 3 for p in by_family["volume3d"])
    assert sum(p.is_3x3 for p in by_family["resnet18"] + by_family["resnet50"] + by_family["vgg16"]) >= 10
    assert not any(p.is_3x3 for p in depthwise)


def test_image_filtering_covers_kernels_3_to_63_on_2048_squared():
    filters = conv_problems(FilterProblem)
    assert sorted(p.kernel_shape[0] for p in filters) == list(bench.FILTER_KERNEL_SIZES)
    assert bench.FILTER_KERNEL_SIZES[0] == 3 and bench.FILTER_KERNEL_SIZES[-1] == 63
    for problem in filters:
        assert problem.image_shape == (2048, 2048)
        assert problem.kernel_shape[0] == problem.kernel_shape[1]
        assert problem.mode == "same" and problem.output_shape == problem.image_shape
        assert problem.flops == 2 * 2048 * 2048 * problem.kernel_shape[0] ** 2


POOL_OPS = {"max_pool": "max_pool", "avg_pool": "avg_pool", "adaptive_avg_pool": "adaptive_avg_pool"}


@pytest.mark.parametrize("problem", conv_problems(PoolProblem), ids=lambda p: p.name)
def test_every_pool_has_valid_shapes(problem):
    """Each pool's output shape and arguments are convolab's own (a tiny batch of it, one channel)."""
    assert problem.dtype == "float32" and problem.family == "pool" and problem.op in POOL_OPS
    small = (1, 1, *problem.input_shape[2:])
    out = getattr(cl, problem.op)(np.zeros(small, dtype=np.float32), **problem.pool_arguments())
    assert problem.output_shape == (*problem.input_shape[:2], *out.shape[2:])
    assert problem.flops > 0


def test_the_suite_has_the_pooling_layers():
    pools = {p.name: p for p in conv_problems(PoolProblem)}
    assert pools["resnet.maxpool3x3s2"].pool_arguments() == {"kernel_size": (3, 3), "stride": (2, 2),
                                                             "padding": (1, 1)}
    assert pools["inception.avgpool3x3s1_nopad"].pool_arguments()["count_include_pad"] is False
    assert pools["resnet.global_avgpool"].output_shape == (8, 512, 1, 1)
    assert {p.rank for p in pools.values()} == {1, 2, 3}
    assert "pool" in bench.list_problems(list(pools.values()))


TINY_POOLS = (
    PoolProblem(name="tiny.maxpool", family="pool", op="max_pool", input_shape=(2, 3, 9, 9), kernel_size=(3, 3),
                stride=(2, 2), padding=(1, 1)),
    PoolProblem(name="tiny.avgpool1d", family="pool", op="avg_pool", input_shape=(2, 3, 16), kernel_size=(3,),
                stride=(1,), padding=(1,), count_include_pad=False),
    PoolProblem(name="tiny.global", family="pool", op="adaptive_avg_pool", input_shape=(2, 3, 5, 5),
                output_size=(1, 1)),
)


def test_tiny_pools_against_torch():
    """Pools are timed forward and for the input gradient, and count in the ratios' targets."""
    torch = pytest.importorskip("torch")
    report = run_tiny(torch, problems=TINY_POOLS[:1] + TINY_POOLS[2:])
    data = json.loads(json.dumps(report.to_json()))
    assert [(r["problem"], r["phase"]) for r in data["results"]] == [
        (p.name, phase) for p in TINY_POOLS[:1] + TINY_POOLS[2:] for phase in bench.POOL_PHASES]
    assert all(r["ratio"] > 0 and r["reference"] == "torch" for r in data["results"])
    summary = data["summary"]
    assert set(summary["training_ratios"]) == {"tiny.maxpool", "tiny.global"}
    assert summary["phase_geomeans"]["weight_grad"] is None
    # Pools count in the worst-problem targets, but the geometric means that are targets are the convolutions'.
    assert summary["forward_geomean"] is None and summary["training_geomean"] is None
    assert summary["phase_geomeans"]["forward"] is None
    ratios = summary["training_ratios"]
    assert summary["pool_training_geomean"] == pytest.approx((ratios["tiny.maxpool"] * ratios["tiny.global"]) ** 0.5)
    assert summary["pool_forward_geomean"] > 0
    assert summary["training_worst_problem"] in ratios
    assert {t["key"]: t["status"] for t in data["targets"]}["training_worst"] in ("pass", "FAIL")
    assert "pooling layers (not in the geomeans above)" in bench.render_table(report)
    assert "tiny.maxpool" in bench.render_table(report)


def test_tiny_pool_calls_compute_what_torch_does():
    """The timed calls agree: each phase's convolab result equals PyTorch's."""
    torch = pytest.importorskip("torch")
    from convolab.apps.bench.run import _pool_calls, _torch_pool_calls

    rng = np.random.default_rng(3)
    for problem in TINY_POOLS:
        x = rng.standard_normal(problem.input_shape, dtype=np.float32)
        g = rng.standard_normal(problem.output_shape, dtype=np.float32)
        ours, theirs = _pool_calls(problem, x, g), _torch_pool_calls(torch, problem, x, g)
        for phase in bench.POOL_PHASES:
            np.testing.assert_allclose(ours[phase](), theirs[phase]().numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{problem.name} {phase}")


def test_memory_problem_is_the_target_configuration():
    (memory,) = conv_problems(MemoryProblem)
    assert memory.input_shape == (1, 64, 1024, 1024) and memory.weight_shape == (64, 64, 3, 3)
    assert cl.output_shape(memory.input_shape, memory.weight_shape, padding=memory.padding) == (1, 64, 1024, 1024)


def test_quick_subset_and_filter():
    quick = bench.select_problems(bench.SUITE, quick=True)
    assert 0 < len(quick) < len(bench.SUITE)
    assert {type(p) for p in quick} == {ConvProblem, PoolProblem, FilterProblem, MemoryProblem}
    assert [p.name for p in bench.select_problems(bench.SUITE, filters=["vgg16.conv1"])] == \
        ["vgg16.conv1_1", "vgg16.conv1_2"]
    assert bench.select_problems(bench.SUITE, filters=["no such problem"]) == []


# --------------------------------------------------------------------------- measuring


def test_time_call_reports_a_failure_instead_of_raising():
    def runs_out():
        raise MemoryError("Unable to allocate 66.0 GiB")

    timing = bench.time_call(runs_out, budget_s=0.01)
    assert not timing.ok and timing.median_s is None
    assert timing.error.startswith("out of memory")


def test_time_call_takes_the_median_of_fixed_repeats():
    timing = bench.time_call(lambda: np.ones(1000), budget_s=0.01, repeats=5)
    assert timing.ok and len(timing.times_s) == 5
    assert timing.median_s == sorted(timing.times_s)[2]
    assert timing.peak_bytes is not None and timing.peak_bytes >= 0


def test_time_turns_takes_turns_and_keeps_each_ones_count():
    calls = []
    first = lambda: calls.append("first")  # noqa: E731
    second = lambda: calls.append("second")  # noqa: E731
    timed_first, timed_second = bench.time_turns([first, second], budget_s=0.01, repeats=3,
                                                 measure_memory=[True, False])
    assert calls[:2] == ["first", "second"]  # the warm-ups
    assert calls[2:] == ["first", "second"] * 3  # then call for call
    assert len(timed_first.times_s) == len(timed_second.times_s) == 3
    assert timed_first.median_s == sorted(timed_first.times_s)[1] and timed_second.ok
    assert timed_first.peak_bytes is not None and timed_second.peak_bytes is None


def test_time_turns_times_the_others_alone_when_one_fails():
    def fails():
        raise ValueError("no such algorithm")

    calls = []
    timed_first, timed_second = bench.time_turns([fails, lambda: calls.append(1)], budget_s=0.01, repeats=4)
    assert not timed_first.ok and timed_first.error == "ValueError: no such algorithm"
    assert timed_second.ok and len(timed_second.times_s) == 4 and len(calls) == 5


def test_time_in_rounds_alternates_blocks_and_takes_the_median_of_their_medians(monkeypatch):
    calls, rests = [], []
    monkeypatch.setattr(bench.timing.time, "sleep", rests.append)
    ours = lambda: calls.append("ours")  # noqa: E731
    theirs = lambda: calls.append("theirs")  # noqa: E731
    timed_ours, timed_theirs = bench.time_in_rounds([ours, theirs], rounds=3, budget_s=0.01, repeats=2,
                                                    settle_s=0.25)
    # each block: a warm-up and two timed calls, after a rest; the libraries alternate block for block
    assert calls == (["ours"] * 3 + ["theirs"] * 3) * 3
    assert rests == [0.25] * 6
    assert len(timed_ours.times_s) == len(timed_theirs.times_s) == 6
    block_medians = [statistics.median(timed_ours.times_s[i:i + 2]) for i in (0, 2, 4)]
    assert timed_ours.median_s == statistics.median(block_medians)
    assert timed_ours.peak_bytes is not None and timed_theirs.ok


def test_time_in_rounds_stops_a_side_at_its_first_failure():
    def fails():
        raise MemoryError("Unable to allocate 66.0 GiB")

    calls = []
    failed, fine = bench.time_in_rounds([fails, lambda: calls.append(1)], rounds=2, budget_s=0.01, repeats=3)
    assert not failed.ok and failed.error.startswith("out of memory")
    assert fine.ok and len(fine.times_s) == 6 and len(calls) == 8


def test_a_slow_warm_up_leaves_at_least_min_repeats():
    first = []

    def slow_once():
        if not first:
            first.append(time.sleep(0.05))  # a one-time cost: the warm-up alone exceeds the budget

    timing = bench.time_call(slow_once, budget_s=0.01)
    assert len(timing.times_s) == bench.protocol.MIN_REPEATS


def test_tracemalloc_meter_sees_numpy_allocations():
    meter = bench.PeakMeter()
    meter.method, meter.sees_foreign = "tracemalloc", False
    _, peak = meter.call(lambda: np.ones(1 << 20))  # 8 MiB
    assert peak >= 8 * (1 << 20)


def run_tiny(torch, problems=TINY):
    settle, bench.protocol.SETTLE_S = bench.protocol.SETTLE_S, 0.0  # tiny calls leave no threads spinning worth waiting for
    try:
        return bench.run_suite(problems, torch=torch, repeats=1, budget_s=0.01, blas_size=64, progress=None,
                               memory_limit_gib=2.0, thread_method="test", rounds=1)
    finally:
        bench.protocol.SETTLE_S = settle


def check_report_json(report):
    data = json.loads(json.dumps(report.to_json()))  # JSON-serializable, and survives the round trip
    assert {"schema", "machine", "settings", "problems", "blas", "results", "memory", "summary",
            "targets"} <= set(data)
    assert {"cpu", "cores", "numpy", "scipy", "torch", "blas", "date"} <= set(data["machine"])
    assert {row["problem"] for row in data["results"]} >= {p.name for p in TINY}
    for row in data["results"]:
        assert ROW_KEYS <= set(row)
        assert {"median_s", "times_s", "peak_bytes", "error"} <= set(row["convolab"])
    assert {target["key"] for target in data["targets"]} == TARGET_KEYS
    assert data["blas"]["gflops"] > 0
    return data


@pytest.fixture(scope="module")
def torch_report():
    torch = pytest.importorskip("torch")
    return torch, run_tiny(torch)


@pytest.fixture(scope="module")
def plain_report():
    """A run without PyTorch, the peak-memory probe included."""
    return run_tiny(None, problems=(*TINY, TINY_MEMORY))


def test_tiny_run_against_torch_and_scipy(torch_report):
    torch, report = torch_report
    data = check_report_json(report)
    assert [(r["problem"], r["phase"]) for r in data["results"]][:3] == [
        ("tiny.conv3x3", phase) for phase in bench.CONV_PHASES]
    assert {r["reference"] for r in data["results"]} == {"torch", "scipy"}
    assert all(r["ratio"] > 0 for r in data["results"])
    summary = data["summary"]
    assert summary["forward_geomean"] > 0 and summary["training_geomean"] > 0
    assert summary["forward_worst_problem"] in ("tiny.conv3x3", "tiny.dw1d")
    assert [layer["problem"] for layer in summary["layers_3x3"]] == ["tiny.conv3x3"]
    assert data["settings"]["torch_threads"] == torch.get_num_threads()
    assert {"warnings", "load_average_1min", "budget_s", "blas_threads", "peak_memory_method"} <= \
        set(data["settings"])
    table = bench.render_table(report)
    header = table.splitlines()[0]
    for column in ("problem", "phase", "convolab ms", "ref ms", "ratio", "cl MiB", "ref MiB"):
        assert column in header
    for name in ("tiny.conv3x3", "tiny.dw1d", "tiny.filter", "input_grad", "weight_grad", "torch", "scipy"):
        assert name in table
    assert "targets:" in table
    statuses = {t["key"]: t["status"] for t in data["targets"]}
    # No memory problem, no probes and no wide 3x3 layer in this run: those targets are not measured.
    unmeasured = {"memory_above_io_gib", "import_s", "first_compiled_call_extra_s", "forward_wide_3x3_geomean"}
    assert {key: statuses[key] for key in unmeasured} == dict.fromkeys(unmeasured, "not measured")
    assert all(statuses[key] in ("pass", "FAIL") for key in TARGET_KEYS - unmeasured)


def test_tiny_run_without_torch_reports_convolab_alone(plain_report):
    report = plain_report
    data = check_report_json(report)
    conv_rows = [r for r in data["results"] if r["family"] != "filtering"]
    assert conv_rows and all(r["reference"] is None and r["ratio"] is None for r in conv_rows)
    assert all(r["convolab"]["median_s"] > 0 for r in conv_rows)
    assert data["machine"]["torch"] is None
    summary = data["summary"]
    assert summary["forward_geomean"] is None and summary["training_geomean"] is None
    assert summary["filtering_geomean"] > 0  # SciPy is always there
    memory = data["memory"]
    assert memory["torch"] is None
    assert {"above_input_output_bytes", "tracemalloc_above_input_output_bytes", "output_bytes"} <= \
        set(memory["convolab"])
    statuses = {t["key"]: t["status"] for t in data["targets"]}
    for key in ("forward_geomean", "forward_worst", "training_geomean"):
        assert statuses[key] == "not measured"
    assert statuses["memory_above_io_gib"] in ("pass", "FAIL")
    table = bench.render_table(report)
    assert "tiny.dw1d" in table and "torch" not in table.split("targets:")[0].replace("PyTorch", "")
    assert "peak memory, tiny.memory" in table


def test_results_md_has_machine_and_targets(plain_report):
    report = dataclasses.replace(plain_report, settings={**plain_report.settings, "quick": True, "filter": None,
                                                         "command": "convolab bench --quick"})
    text = bench.render_results_md(report)
    assert text.startswith("# convolab benchmark results")
    assert "## Machine" in text and "## Targets" in text
    machine = text.split("## Machine", 1)[1].split("## Targets", 1)[0]
    for label in ("CPU:", "Cores:", "Memory:", "NumPy", "SciPy", "PyTorch not used", "BLAS:", "Threads:"):
        assert label in machine
    assert report.machine["cpu"] in machine and report.machine["date"] in text
    for key, description, comparison, goal in bench.TARGETS:
        line = next(line for line in text.splitlines() if line.startswith(f"| {description} |"))
        assert f"| {comparison} {f'{goal:.0%}' if key == 'blas_fraction_3x3' else f'{goal:g}'} |" in line
    assert "**Partial run** (--quick)" in text
    assert "tiny.filter" in text.split("## Image filtering against SciPy", 1)[1]
    assert "## Peak memory" in text and "## Every problem" in text


def test_results_md_with_torch_lists_the_3x3_layers(torch_report):
    torch, report = torch_report
    text = bench.render_results_md(report)
    assert f"PyTorch {torch.__version__}" in text
    section = text.split("## 3x3 layers against the BLAS rate", 1)[1].split("##", 1)[0]
    assert "tiny.conv3x3" in section and "tiny.dw1d" not in section
    assert "Partial run" not in text
    # the fraction divides by the BLAS rate timed right after that layer's forward, not the run's
    (row,) = [row for row in report.rows if row.is_3x3 and row.phase == "forward"]
    assert row.blas_timing is not None and row.blas_gflops > 0
    assert all(r.blas_timing is None for r in report.rows if r is not row)
    (layer,) = report.summary["layers_3x3"]
    assert layer["blas_gflops"] == row.blas_gflops
    assert layer["convolab_fraction"] == pytest.approx(row.gflops(row.convolab) / row.blas_gflops)
    assert report.to_json()["results"][report.rows.index(row)]["blas_gflops_beside"] == row.blas_gflops


def test_a_busy_machine_is_reported(plain_report):
    assert bench.machine.busy_machine_warnings(180.0, 175.0, 0.1) == []
    (moved,) = bench.machine.busy_machine_warnings(80.0, 180.0, 0.1)
    assert "80.0 to 180.0 GFLOP/s" in moved
    (loaded,) = bench.machine.busy_machine_warnings(180.0, 180.0, 100.0)
    assert "100.00" in loaded
    report = dataclasses.replace(plain_report, settings={**plain_report.settings, "warnings": [moved]})
    assert f"WARNING: {moved}" in bench.render_table(report)
    assert f"**Warning**: {moved}." in bench.render_results_md(report)


# --------------------------------------------------------------------------- the command line


def bench_parser():
    parser = argparse.ArgumentParser(prog="convolab")
    bench.add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_parser_flags_and_their_round_trip():
    args = bench_parser().parse_args(["bench", "--quick", "--filter", "vgg", "--filter", "k63", "--json", "out.json",
                                      "--results", "R.md", "--repeats", "3", "--no-torch", "--threads", "4"])
    assert args.run is bench.run_bench
    assert (args.quick, args.filter, args.json, args.results, args.repeats, args.no_torch, args.threads) == \
        (True, ["vgg", "k63"], "out.json", "R.md", 3, True, 4)
    again = bench_parser().parse_args(["bench", *bench.command._argv_from_args(args)])
    assert vars(again) == vars(args)
    with pytest.raises(SystemExit):
        bench_parser().parse_args(["bench", "--repeats", "0"])


@pytest.fixture
def tiny_suite(monkeypatch):
    monkeypatch.setattr(bench.suite, "SUITE", TINY)
    monkeypatch.setattr(bench.protocol, "BLAS_MATMUL_SIZE", 64)
    for name in bench.THREAD_VARIABLES:  # as if set before NumPy loaded: run in this process
        monkeypatch.setenv(name, "2")


@pytest.mark.parametrize("torch_flag, rounds", [([], 2), (["--no-torch"], 1)], ids=["torch", "no-torch"])
def test_run_bench_prints_the_table_and_writes_json_and_results(tiny_suite, tmp_path, capsys, torch_flag, rounds):
    if not torch_flag:
        pytest.importorskip("torch")
    json_path, results_path = tmp_path / "bench.json", tmp_path / "RESULTS.md"
    args = bench_parser().parse_args(["bench", "--filter", "tiny", "--repeats", "1", "--memory-limit", "4",
                                      "--rounds", str(rounds), "--json", str(json_path), "--results",
                                      str(results_path), *torch_flag])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "tiny.conv3x3" in out and "targets:" in out
    data = check_report_json_file(json_path)
    # threadpoolctl (installed with scikit-learn) limits BLAS itself; without it, the environment does
    assert data["settings"]["blas_threads"].startswith(("environment", "threadpoolctl"))
    assert (data["machine"]["torch"] is None) == bool(torch_flag)
    assert data["settings"]["rounds"] == rounds
    # each library's timed calls: one per block (--repeats 1), a block per round
    assert all(len(row["convolab"]["times_s"]) == rounds for row in data["results"] if row["convolab"]["median_s"])
    assert "## Machine" in results_path.read_text()


def check_report_json_file(path):
    data = json.loads(path.read_text())
    assert {"machine", "settings", "results", "summary", "targets"} <= set(data)
    return data


def test_without_threadpoolctl_run_bench_runs_again_with_the_thread_variables(tiny_suite, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # as if not installed
    for name in bench.THREAD_VARIABLES:
        monkeypatch.delenv(name)
    monkeypatch.delenv("CONVOLAB_BENCH_REEXEC", raising=False)
    calls = []

    def fake_run(command, env):
        calls.append((command, env))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(bench.command.subprocess, "run", fake_run)
    args = bench_parser().parse_args(["bench", "--filter", "tiny", "--threads", "3", "--no-torch"])
    assert args.run(args) == 0
    (command, env), = calls
    assert command[:3] == [sys.executable, "-m", "convolab.bench"]
    assert command[3:] == ["--no-torch", "--filter", "tiny", "--threads", "3"]
    assert all(env[name] == "3" for name in bench.THREAD_VARIABLES)
    assert "running in a subprocess" in capsys.readouterr().err


def test_run_bench_rejects_a_filter_matching_nothing(tiny_suite, capsys):
    args = bench_parser().parse_args(["bench", "--filter", "no such problem"])
    assert args.run(args) == 2
    assert "matches no problem" in capsys.readouterr().err


def test_list_prints_the_selected_problems(capsys):
    assert bench.main(["--quick", "--list"]) == 0
    out = capsys.readouterr().out
    assert {line.split()[0] for line in out.splitlines()} == {p.name for p in bench.select_problems(
        bench.SUITE, quick=True)}


def test_the_script_runs_the_same_code_without_torch(tmp_path):
    json_path = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--filter", "audio1d.wav2vec2", "--repeats", "1",
         "--no-torch", "--json", str(json_path)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "audio1d.wav2vec2_conv0_k10s5" in completed.stdout
    data = check_report_json_file(json_path)
    assert [r["phase"] for r in data["results"]] == list(bench.CONV_PHASES)
    # threadpoolctl (installed with scikit-learn) limits BLAS itself; without it, the environment does
    assert data["settings"]["blas_threads"].startswith(("environment", "threadpoolctl"))


def test_a_blas_pinned_below_the_cpu_is_reported():
    avx512 = frozenset({"avx2", "avx512f"})
    pinned = {"coretype_variable": "Haswell", "architecture": "Haswell"}
    (warning,) = bench.machine.pinned_blas_warnings(pinned, avx512)
    assert "OPENBLAS_CORETYPE=Haswell" in warning and "AVX-512" in warning
    # Nothing to say without the variable, on a CPU without AVX-512, or when the pin is a wide core type.
    assert bench.machine.pinned_blas_warnings({"coretype_variable": None, "architecture": "Haswell"}, avx512) == []
    assert bench.machine.pinned_blas_warnings(pinned, frozenset({"avx2"})) == []
    assert bench.machine.pinned_blas_warnings({"coretype_variable": "SkylakeX", "architecture": "SkylakeX"}, avx512) == []


def test_the_blas_kernels_in_use_are_recorded(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    info = bench.machine._blas_info()
    assert info["coretype_variable"] == "Haswell"
    assert "architecture" in info


# --------------------------------------------------------------------------- where the harness lives


def test_the_old_import_paths_reach_the_same_objects():
    import convolab.bench as old_bench
    import convolab.train as old_train
    from convolab.apps import train

    assert {name: getattr(old_bench, name) for name in old_bench.__all__} == \
        {name: getattr(bench, name) for name in old_bench.__all__}
    assert old_bench.write_section is bench.write_section and old_bench.machine_info is bench.machine_info
    assert {name: getattr(old_train, name) for name in old_train.__all__} == \
        {name: getattr(train, name) for name in old_train.__all__}


def test_import_convolab_loads_no_app_and_the_command_line_loads_only_the_bench_flags():
    """In a fresh interpreter: what ``import convolab`` and building the parser load, then ``-m convolab.bench``."""
    script = """if True:
        import json, runpy, sys
        def apps():
            return sorted(m for m in sys.modules if m.startswith(("convolab.apps", "convolab.bench", "convolab.train")))
        import convolab
        after_import = apps()
        import convolab.cli
        convolab.cli.build_parser()
        after_parser = apps()
        print(json.dumps([after_import, after_parser]))
        sys.argv = ["convolab.bench", "--quick", "--list"]
        runpy.run_module("convolab.bench", run_name="__main__", alter_sys=True)
    """
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                               env=bench.machine.child_environment(2))
    assert completed.returncode == 0, completed.stderr
    loaded, *listing = completed.stdout.splitlines()
    after_import, after_parser = json.loads(loaded)
    assert after_import == []
    assert after_parser == ["convolab.apps", "convolab.apps.bench", "convolab.apps.bench.command",
                            "convolab.apps.bench.protocol", "convolab.apps.explore", "convolab.apps.explore.command",
                            "convolab.apps.train"]
    assert [line.split()[0] for line in listing] == [p.name for p in bench.select_problems(bench.SUITE, quick=True)]


def test_probe_results_reach_the_targets_and_the_page():
    from convolab.apps.bench.render import render_results_md
    from convolab.apps.bench.results import Report, evaluate_targets, summarize

    probes = {"import": {"median_s": 0.5, "python_alone_s": 0.02, "runs": 5},
              "first_compiled_call": {"layer": {"input": [8, 32, 56, 56], "weight": [32, 1, 3, 3], "groups": 32,
                                                "padding": 1},
                                      "algorithm": "compiled", "numpy_algorithm": "depthwise", "numpy_first_s": 0.01,
                                      "cold_first_s": 3.0, "warm_first_s": 0.3, "cold_extra_s": 2.99,
                                      "warm_extra_s": 0.29, "compiled_second_s": 0.001, "numpy_second_s": 0.004}}
    summary = summarize([], None, None, probes)
    assert (summary["import_s"], summary["first_compiled_call_extra_s"]) == (0.5, 0.29)
    statuses = {t["key"]: t["status"] for t in evaluate_targets(summary, {})}
    assert statuses["import_s"] == statuses["first_compiled_call_extra_s"] == "pass"
    slow = {**probes, "first_compiled_call": {**probes["first_compiled_call"], "warm_extra_s": 0.6}}
    assert {t["key"]: t["status"] for t in evaluate_targets(summarize([], None, None, slow), {})}[
        "first_compiled_call_extra_s"] == "FAIL"
    machine = {"date": "today", "convolab": "0", "convolab_revision": None, "blas": {}, "cpu": "cpu", "cores": 2,
               "usable_cores": 2, "memory_bytes": None, "os": "os", "python": "3", "numpy": "2", "scipy": "1",
               "torch": None}
    settings = {"threads": 2, "blas_threads": None, "torch_threads": None, "budget_s": 1, "max_repeats": 1,
                "repeats": None, "memory_limit_gib": None}
    page = render_results_md(Report(machine, settings, [], None, [], None, summary,
                                    evaluate_targets(summary, {}), probes))
    assert "3.00 s with a cold Numba cache, 0.300 s warm" in page
