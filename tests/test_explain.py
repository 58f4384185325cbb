"""``convolab explain``: golden output on the standard examples, the user's own cases, checks that ran.

The golden files are the text and Markdown renderings of the standard walk-through.
They change only when the explanation is deliberately rewritten: regenerate
them with ``convolab explain --format text > tests/golden/explain.txt`` (and
``--format markdown``) and read the difference before committing it.
"""

from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import convolab as cl
from convolab.cli import main, parse_matrix, parse_padding
from convolab.show.explain import TOPICS, Case, explain, render_json, render_markdown, render_text, standard_cases

GOLDEN = pathlib.Path(__file__).parent / "golden"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("style, golden", [("text", "explain.txt"), ("markdown", "explain.md")])
def test_standard_walkthrough_matches_golden(capsys, monkeypatch, style, golden):
    monkeypatch.setenv("COLUMNS", "80")  # the golden text is wrapped to 80 columns, whatever the terminal
    code, out, err = run(capsys, "explain", "--format", style)
    assert code == 0 and err == ""
    assert out == (GOLDEN / golden).read_text()


def test_standard_walkthrough_answers_the_four_questions_and_the_size():
    explanation = explain()
    assert explanation.passed
    assert [t for t in TOPICS if any(step.topic == t for step in explanation.steps)] == [
        "dot", "im2col", "backprop", "flip", "shape"]
    text = render_text(explanation)
    for question in ("dot product", "one matrix product", "rotated by 180", "differ from the textbook",
                     "How big is the output"):
        assert question in text
    assert text.count("[check passed]") == len(explanation.steps)


def test_the_unrotated_gradient_is_caught_elementwise_though_its_mean_matches():
    step = next(s for s in explain(topics=["backprop"]).steps if "unrotated" in s.data)
    assert step.data["means_match"] and step.data["elements_differing"] == 9
    np.testing.assert_array_equal(step.data["gradient"],
                                  cl.grad.conv2d_input((1, 1, 3, 3), np.array([[[[9, 8], [7, 6]]]]),
                                                       np.array([[[[1, 2], [3, 4]]]]))[0])


def test_user_case_json_holds_the_output_as_conv2d_computes_it(capsys):
    code, out, _ = run(capsys, "explain", "--input", "1 2 3 4; 5 6 7 8; 9 10 11 12; 13 14 15 16",
                       "--kernel", "1 0 -1; 2 0 -2; 1 0 -1", "--kernel", "1 1 1; 0 0 0; -1 -1 -1",
                       "--stride", "2", "--padding", "(1,0),(0,1)", "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["passed"]
    case = document["cases"][0]
    image = np.arange(1, 17).reshape(1, 1, 4, 4)
    weight = np.array([[[[1, 0, -1], [2, 0, -2], [1, 0, -1]]], [[[1, 1, 1], [0, 0, 0], [-1, -1, -1]]]])
    expected = cl.conv2d(image, weight, stride=2, padding=((1, 0), (0, 1)))[0]
    assert case["output"] == expected.tolist() and case["output_shape"] == [2, 2, 2]


def test_user_case_with_channels_groups_and_dilation(capsys):
    code, out, _ = run(capsys, "explain", "--input", "1 2 3 4 5; 6 7 8 9 10; 1 2 3 4 5; 6 7 8 9 10; 1 1 1 1 1 | "
                       "5 4 3 2 1; 1 2 3 4 5; 5 4 3 2 1; 1 2 3 4 5; 0 0 0 0 0",
                       "--kernel", "1 0; 0 1", "--kernel", "0 1; 1 0", "--groups", "2", "--dilation", "2",
                       "--padding", "same", "--format", "json")
    assert code == 0
    document = json.loads(out)
    case = document["cases"][0]
    image, weight = np.array(case["input"]), np.array(case["weight"])
    assert image.shape == (2, 5, 5) and weight.shape == (2, 1, 2, 2)
    assert case["output"] == cl.conv2d(image, weight, dilation=2, padding="same", groups=2).tolist()
    assert all(step["passed"] for step in document["steps"])


def test_unread_rows_and_columns_are_named(capsys):
    code, out, _ = run(capsys, "explain", "shape", "--input", "; ".join(["1 2 3 4 5 6"] * 6), "--kernel",
                       "1 1 1; 1 1 1; 1 1 1", "--stride", "2", "--format", "text")
    assert code == 0
    assert "Never read: input row 5 (of 6)" in out and "column 5 (of 6)" in out


@pytest.mark.parametrize("topic", [t for t in TOPICS if t != "slide"])
def test_each_topic_alone_on_a_user_case(topic):
    case = Case("yours", np.arange(1.0, 26.0).reshape(1, 5, 5), np.array([[[[1.0, -1.0], [0.5, 2.0]]]]), stride=2,
                padding=1)
    explanation = explain(case, [topic])
    assert explanation.steps and all(step.topic == topic for step in explanation.steps)
    assert explanation.passed


def test_generated_cases_pass_every_check():
    rng = np.random.default_rng(0)
    for _ in range(12):
        groups = int(rng.choice([1, 2]))
        channels, filters = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        kernel = tuple(int(k) for k in rng.integers(1, 4, 2))
        image = rng.integers(-5, 6, size=(channels, *(int(n) for n in rng.integers(4, 7, 2))))
        weight = rng.integers(-3, 4, size=(filters, channels // groups, *kernel))
        stride = tuple(int(s) for s in rng.integers(1, 3, 2))
        case = Case("generated", image, weight, stride=stride, padding=int(rng.integers(0, 2)), groups=groups)
        explanation = explain(case)
        assert explanation.passed, case.describe()


def test_transposed_case_slides(capsys):
    code, out, _ = run(capsys, "explain", "--input", "1 2; 3 4", "--kernel", "1 1; 1 1", "--transposed",
                       "--stride", "2", "--format", "json")
    assert code == 0
    document = json.loads(out)
    expected = cl.conv_transpose2d(np.array([[[1, 2], [3, 4]]]), np.ones((1, 1, 2, 2), dtype=np.int64), stride=2)
    assert document["cases"][0]["output"] == expected.tolist()
    assert {step["topic"] for step in document["steps"]} == {"slide"}


def test_dot_topic_at_a_chosen_element(capsys):
    code, out, _ = run(capsys, "explain", "dot", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "9 8; 7 6",
                       "--at", "0,1,1", "--format", "json")
    assert code == 0
    step = json.loads(out)["steps"][0]
    assert step["data"]["dot"] == step["data"]["sum"] == 203


def test_rich_rendering_shows_the_numbers(capsys):
    pytest.importorskip("rich")
    from rich.console import Console

    from convolab.show.explain import render_rich

    buffer = io.StringIO()
    render_rich(explain(topics=["dot"]), Console(file=buffer, width=120, color_system=None))
    text = buffer.getvalue()
    assert "83" in text and "check passed" in text


def test_markdown_rendering_has_headings_and_checks():
    text = render_markdown(explain(topics=["flip"]))
    assert text.startswith("# ") and "**Check passed:**" in text and "-13" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--input", "1 2; 3", "--kernel", "1"], "--input: '1 2; 3' has rows of different lengths"),
        (["--input", "1 2; 3 x", "--kernel", "1"], "--input: 'x'"),
        (["--input", "1 2; 3 4", "--kernel", "1 1 1; 1 1 1; 1 1 1"], "weight must fit inside the padded input"),
        (["--input", "1 2; 3 4"], "give both --input"),
        (["--input", "1 2; 3 4", "--kernel", "1", "--stride", "two"], "--stride"),
        (["--input", "1 2; 3 4", "--kernel", "1", "--padding", "sideways"], "--padding"),
        (["--input", "1 2; 3 4", "--kernel", "1 1", "--kernel", "1; 1"], "--kernel: every kernel needs the same shape"),
        (["--input", "1 2; 3 4 | 5 6; 7 8", "--kernel", "1"], "input must have 1 channels"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_the_flag(capsys, argv, message):
    code, out, err = run(capsys, "explain", *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_parsers():
    assert parse_matrix("1 2; 3 4", "--input").dtype == np.int64
    assert parse_matrix("1.5 2; 3 4", "--input").dtype == np.float64
    assert parse_padding("1,2") == (1, 2)
    assert parse_padding("full") == "full"


def test_unknown_topic_and_at_out_of_range():
    with pytest.raises(ValueError, match="topic"):
        explain(topics=["winograd"])
    with pytest.raises(ValueError, match="at must be"):
        explain(standard_cases()["classic"], ["dot"], at=(0, 5, 0))


def test_core_import_and_explain_need_neither_matplotlib_nor_rich():
    # Block both packages outright: `import convolab`, the CLI module and a plain-text walk-through must not care.
    script = (
        "import sys\n"
        "sys.modules['matplotlib'] = None; sys.modules['rich'] = None; sys.modules['PIL'] = None\n"
        "import convolab, convolab.show.explain, convolab.cli\n"
        "code = convolab.cli.main(['explain', '--format', 'text'])\n"
        "print('exit', code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("exit 0")
    assert "All checks passed." in result.stdout and "[[ 83 113]" in result.stdout
    loaded = subprocess.run([sys.executable, "-c", "import sys, convolab, convolab.cli, convolab.show.explain; "
                             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'rich', 'PIL')))"],
                            capture_output=True, text=True, timeout=120)
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_the_old_module_paths_give_the_moved_objects():
    # identities.py, explain.py and pictures.py moved into convolab.show (issue 14); old imports keep working.
    import convolab.explain
    import convolab.identities
    import convolab.pictures
    import convolab.show
    import convolab.show.explain
    import convolab.show.pictures

    for old, new in ((convolab.identities, convolab.show), (convolab.explain, convolab.show.explain),
                     (convolab.pictures, convolab.show.pictures)):
        assert old.__all__ == new.__all__
        assert all(getattr(old, name) is getattr(new, name) for name in old.__all__)
    assert convolab.identities.scipy_mode is convolab.show.checks.scipy_mode
    assert convolab.explain.strict_json is convolab.show._format.strict_json
    assert all(getattr(cl, name) is getattr(convolab.show, name) for name in convolab.show.__all__ if name in cl.__all__)

@pytest.mark.parametrize("stride, padding, output_padding, dilation", [
    (2, 1, 1, 1),      # output_padding adds a zero row/column past the scattered extent
    (3, 3, 0, 1),      # padding > dilation*(k-1): the spread input is cropped, not padded
    (2, (0, 2), (1, 0), 2),
])
def test_transposed_slide_frames_sum_to_conv_transpose(stride, padding, output_padding, dilation):
    x = np.arange(1, 10).reshape(1, 3, 3)
    w = np.arange(1, 19).reshape(1, 2, 3, 3)  # conv_transpose weight: (C_in, C_out/groups, kH, kW)
    case = Case("t", x, w, stride=stride, padding=padding, dilation=dilation, transposed=True,
                output_padding=output_padding)
    steps = explain(case).steps
    expected = cl.conv_transpose2d(x, w, stride=stride, padding=padding, output_padding=output_padding,
                                   dilation=dilation)
    assert all(step.passed for step in steps)
    frames = steps[1:]
    assert len(frames) == expected.size
    got = np.zeros_like(expected)
    for step in frames:
        got[tuple(step.data["at"])] = step.data["sum"]
    np.testing.assert_array_equal(got, expected)
    # Every sample of the input sits on the canvas exactly once, stride-spread.
    role, canvas = steps[0].data["role"], steps[0].data["canvas"]
    assert sorted(canvas[0][role == 0].tolist()) == sorted(x.ravel().tolist()) or padding == 3


def test_dilation_leaves_interior_rows_unread_and_says_why():
    case = Case("holes", np.arange(30).reshape(1, 5, 6), np.ones((1, 1, 2, 2), dtype=np.int64), stride=3, dilation=2)
    step = explain(case, ["shape"]).steps[0]
    assert step.passed
    assert step.data["unread_rows"] == [1, 3, 4] and step.data["unread_columns"] == [1, 4]
    text = " ".join(render_text(explain(case, ["shape"])).split())
    # Rows: one window (taps 0 and 2) leaves row 1 between its taps and rows 3-4 past its end.
    # Columns: windows at 0 and 3 (taps 0, 2, 3, 5) leave columns 1 and 4 between the taps.
    assert "row 1 (of 5) and columns 1, 4 (of 6), because the dilated kernel's taps step over them" in text
    assert "rows 3-4 (of 5), because the stride 3 does not divide 2" in text
    # The read counts are zero exactly there.
    counts = np.asarray(step.data["read_count"])
    assert [r for r in range(5) if not counts[r].any()] == [1, 3, 4]


def test_every_step_is_json_and_its_shown_arrays_exist():
    document = explain().to_dict()
    json.dumps(document)  # plain data throughout
    for step in document["steps"]:
        for item in step["body"]:
            if "show" in item:
                assert all(key in step["data"] for key in item["show"]), (step["title"], item)


# -- sizes and numbers a walk-through can show (issue 13) ----------------------------------------------------


def test_the_convolution_matrix_stays_sparse_and_prints_as_the_dense_one_did():
    import scipy.sparse

    from convolab.show._format import array_lines

    case = Case("ten", np.arange(100).reshape(1, 10, 10) % 7 - 3, np.arange(9).reshape(1, 1, 3, 3) - 4, padding=1)
    step = explain(case, ["im2col"]).steps[1]
    matrix = step.data["matrix"]
    assert scipy.sparse.issparse(matrix) and matrix.shape == (100, 100)
    # Summarized (first and last rows and columns), exactly as NumPy prints the dense matrix.
    assert array_lines(matrix) == array_lines(matrix.toarray())
    assert "..." in "\n".join(array_lines(matrix))
    assert step.to_dict()["data"]["matrix"] == matrix.toarray().tolist()  # small enough to be dense in JSON


def test_a_case_at_the_size_limit_walks_through_without_a_dense_matrix():
    from convolab.show.explain import MAX_CELLS, MAX_DENSE_MATRIX_CELLS

    side = int(MAX_CELLS ** 0.5)
    case = Case("large", np.arange(side * side).reshape(1, side, side) % 5, np.ones((1, 1, 3, 3), dtype=np.int64),
                padding=1)
    explanation = explain(case)
    assert explanation.passed
    step = next(s for s in explanation.steps if "matrix" in s.data)
    assert step.data["matrix"].shape == (MAX_CELLS, MAX_CELLS) and MAX_CELLS ** 2 > MAX_DENSE_MATRIX_CELLS
    document = json.loads(render_json(explain(case, ["im2col"])))
    data = document["steps"][1]["data"]
    assert data["matrix"] is None and len(data["values"]) == step.data["matrix"].nnz  # taps kept, sparse
    assert "M (4096, 4096)" in render_text(explain(case, ["im2col"]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(input=np.zeros((1, 65, 65)), weight=np.ones((1, 1, 1, 1))), "input must have at most 4,096 cells"),
    (dict(input=np.zeros((1, 2, 2)), weight=np.ones((1, 1, 1, 1)), padding=3000),
     "output must have at most 4,096 cells"),
    (dict(input=np.zeros((1, 2, 2)), weight=np.ones((1, 1, 2, 2)), dilation=200, padding=100),
     "padding must leave the kernel to slide over at most 16,384 cells"),
    (dict(input=np.zeros((1, 3, 3)), weight=np.ones((1, 1, 2, 2)), stride=100, transposed=True),
     "output must have at most 4,096 cells"),
    (dict(input=np.zeros((1, 64, 64)), weight=np.ones((1, 1, 9, 9)), padding=4),
     "weight must need at most 262,144 multiply-adds"),
    (dict(input=np.array([[[1.0, np.nan]]]), weight=np.ones((1, 1, 1, 1))), "input must hold finite numbers"),
    (dict(input=np.ones((1, 2, 2)), weight=np.array([[[[np.inf]]]])), "weight must hold finite numbers"),
    (dict(input=np.full((1, 2, 2), 1e308), weight=np.ones((1, 1, 1, 1))), "within float64's range"),
    (dict(input=np.full((1, 2, 2), 2**62), weight=np.full((1, 1, 1, 1), 4)), "within int64's range"),
    (dict(input=np.ones((1, 1, 2, 2)), weight=np.ones((1, 1, 1, 1))), "input must be one unbatched image"),
])
def test_a_case_is_refused_before_it_is_computed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Case("refused", **kwargs)


def test_slide_refuses_more_steps_than_its_limit():
    from convolab.show.explain import MAX_SLIDE_STEPS, slide_steps

    case = Case("wide", np.zeros((1, 40, 40)), np.ones((1, 1, 3, 3)), padding=1)
    assert case.output().size > MAX_SLIDE_STEPS
    with pytest.raises(ValueError, match=f"at most {MAX_SLIDE_STEPS:,} elements to slide over"):
        slide_steps(case)


# -- issue 16: every statement true, every case visible, a shorter first run ------------------------------------

CLAIM_CASES = {
    "stride 2, padding 1": Case("s2p1", np.arange(1, 17).reshape(1, 4, 4), np.array([[[[1, 2], [3, -1]]]]), stride=2,
                                padding=1),
    "dilation": Case("dilated", np.arange(1, 26).reshape(1, 5, 5), np.array([[[[1, 0], [2, -1]]]]), dilation=2),
    "groups, channels": Case("grouped", np.arange(1, 33).reshape(2, 4, 4), np.array([[[[1, 2], [0, 1]]],
                                                                                     [[[0, 1], [3, 0]]]]), groups=2),
    "channels, floats": Case("floats", np.arange(1.0, 19.0).reshape(2, 3, 3) / 4,
                             np.array([[[[0.5, 1], [2, 0]], [[1, 0], [0, -1.5]]]]), padding="same"),
}


def _printed_equations(step) -> list[str]:
    """The formula line and the lines under the check, as the text renderer printed them (continuations joined)."""
    from convolab.show.explain import Explanation

    lines = render_text(Explanation("one step", (), (step,)), width=10**4, verbose=True).splitlines()
    equations = [lines[lines.index(next(line for line in lines if line.startswith("1. "))) + 1].strip()]
    check = next(i for i, line in enumerate(lines) if line.startswith("[check passed]"))
    for line in lines[check + 1:]:
        if not line.strip():
            break
        equations.append(line.strip())
    return equations


def _evaluate_printed(equation: str, step) -> None:
    import ast

    from convolab.show.explain.steps import NAMESPACE

    sides = equation.split(" = ")
    try:
        printed = ast.literal_eval(sides[-1])
        sides = sides[:-1]
    except (ValueError, SyntaxError):
        printed = None
    values = [np.asarray(eval(side, {**NAMESPACE, **step.data})) for side in sides]  # noqa: S307 - our own text
    for side, value in zip(sides, values):
        assert value.shape == values[0].shape and np.allclose(value, values[0], rtol=1e-12, atol=1e-12), (
            equation, side)
        if printed is not None:
            assert np.allclose(value, np.asarray(printed), rtol=1e-5, atol=1e-9), (equation, side, value)


@pytest.mark.parametrize("name", ["standard", *CLAIM_CASES, "transposed"])
def test_every_printed_equation_is_numpy_that_gives_the_printed_value(name):
    if name == "standard":
        explanation = explain()
    elif name == "transposed":
        explanation = explain(Case("t", np.arange(1, 10).reshape(1, 3, 3), np.arange(1, 10).reshape(1, 1, 3, 3),
                                   stride=2, padding=1, output_padding=1, transposed=True), ["shape"])
    else:
        explanation = explain(CLAIM_CASES[name])
    assert explanation.passed
    checked = 0
    for step in explanation.steps:
        if step.topic == "slide":
            continue
        equations = _printed_equations(step)
        assert len(equations) == len(step.claims) >= 1, (step.title, equations)
        for equation in equations:
            _evaluate_printed(equation, step)
            checked += 1
    assert checked >= 3


def test_the_statements_the_issue_found_wrong_are_true_now():
    text = " ".join(render_text(explain(), verbose=True).split())
    assert "trace(window.T @ kernel) = 79" not in text  # a 3-D window: the trace is taken per channel
    assert "np.sum([np.trace(window[c].T @ kernel[c]) for c in range(2)])" in text
    assert "on every axis" not in text and "on its two spatial axes" in text
    assert "x[y + i, x + j]" not in text
    assert "spread(g) has stride - 1 zeros between its samples" in text
    assert "Yet the means agree (true 33.3333, unrotated 33.3333)" in text
    assert "true first" in text
    # The strided backprop explains the extra row and the crop.
    strided = " ".join(render_text(explain(standard_cases()["stride-2-padding-1"], ["backprop"])).split())
    assert ("on both axes 1 before (dilation*(k - 1)) and 2 after (1 more for the padded input's last row and "
            "column, which no window read: gradient 0)") in strided
    assert "crop it away to leave the input's 3x3" in strided


def test_plurals_are_right():
    case = Case("one", np.arange(1, 5).reshape(1, 2, 2), np.ones((1, 1, 2, 2), dtype=np.int64))
    for text in (render_text(explain(case)), render_text(explain(), verbose=True)):
        for wrong in ("1 rows", "1 steps", "1 channels", "1 filters", "1 columns", "1 numbers"):
            assert wrong not in text, wrong
    assert "(1 step)" in render_text(explain(case, ["flip"]))


def test_the_first_run_is_short_wraps_and_verbose_keeps_the_long_form(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["explain", "--format", "text"]) == 0
    short = capsys.readouterr().out
    words = " ".join(short.split())
    assert main(["explain", "--format", "text", "--verbose"]) == 0
    long = capsys.readouterr().out
    assert len(short.splitlines()) < len(long.splitlines())
    assert max(len(line) for line in short.splitlines()) <= 80
    # Said once: the general size formula, the Hadamard remark; each case introduced once.
    assert words.count("fits (n + low + high - d*(k - 1) - 1) // s + 1 times") == 1
    assert words.count("name one computation") == 1
    assert short.count("Case 'classic':") == 1
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["explain", "dot", "--format", "text"]) == 0
    narrow = capsys.readouterr().out
    prose = [line for line in narrow.splitlines() if " " in line.strip() and not line.startswith("   [")]
    assert max(len(line) for line in prose if "=" not in line) <= 60


def test_each_case_is_shown_with_its_window_marked_and_im2col_named():
    text = render_text(explain())
    words = " ".join(text.split())
    assert "Case 'sobel':" in text and "Case 'two-channel':" in text
    assert "[1] [2]  3" in text  # the classic input with the window of output[0, 0, 0] in brackets
    assert "im2col ('image to columns'" in words
    assert "unrolled[0] = padded_input[0:1, 0:2, 0:2].ravel() = [1, 2, 4, 5]" in text
    assert "kernel[..., ::-1, ::-1] = -kernel" in text  # sobel's rotation is a sign flip, said so
    assert "(W - K + 2P)/S + 1" in words and "PyTorch refuses padding='same'" in words


def test_the_weight_gradient_is_a_correlation_of_the_input_with_grad_output():
    step = next(s for s in explain(topics=["backprop"]).steps if "grad_weight" in s.data)
    expected = cl.grad.conv2d_weight(np.arange(1, 10).reshape(1, 1, 3, 3), (1, 1, 2, 2), np.array([[[[1, 2], [3, 4]]]]))
    np.testing.assert_array_equal(step.data["grad_weight"], expected)
    assert step.passed and step.data["grad_weight"][0, 0, 0, 0] == 1 * 1 + 2 * 2 + 4 * 3 + 5 * 4
    strided = explain(standard_cases()["stride-2-padding-1"], ["backprop"]).steps[-1]
    assert strided.passed and "dilation=(2, 2)" in strided.formula


def test_flags_alone_apply_to_the_classic_example(capsys):
    code, out, _ = run(capsys, "explain", "--stride", "2", "--format", "json")
    assert code == 0
    case = json.loads(out)["cases"][0]
    assert case["input"] == [[[1, 2, 3], [4, 5, 6], [7, 8, 9]]] and case["output"] == [[[83]]]
    code, out, _ = run(capsys, "explain", "shape", "--transposed", "--stride", "2", "--padding", "1",
                       "--output-padding", "1", "--format", "text")
    assert code == 0
    expected = cl.conv_transpose2d(np.arange(1, 10).reshape(1, 3, 3), np.array([[[[9, 8], [7, 6]]]]), stride=2,
                                   padding=1, output_padding=1)
    assert expected.shape == (1, 5, 5)
    assert "(3 - 1)*2 - 1 - 1 + 1*(2 - 1) + 1 + 1 = output.shape[1] = 5" in out and "All checks passed" in out


def test_animate_transposed_alone_takes_the_classic_example(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    assert main(["animate", "--output", str(tmp_path / "slide.gif"), "--transposed"]) == 0
    assert "16 frames" in capsys.readouterr().out  # conv_transpose2d of the 3x3 classic input: a 4x4 output
