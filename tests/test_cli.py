"""The ``convolab explain`` command: exit status, passed checks, the numbers, and its JSON form."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest

import convolab as cl
from convolab.cli import main

CLASSIC_OUTPUT = [[83, 113], [173, 203]]


def console_script() -> str:
    """The installed ``convolab`` entry point of this interpreter's environment."""
    beside = pathlib.Path(sysconfig.get_path("scripts")) / "convolab"
    if beside.exists():
        return str(beside)
    found = shutil.which("convolab")
    if found is None:
        pytest.fail("the convolab console script is not installed (pip install -e .)")
    return found


def check_text_output(text: str) -> None:
    steps = re.findall(r"^(\d+)\. \S", text, flags=re.MULTILINE)
    assert len(steps) >= 4
    assert steps == [str(n) for n in range(1, len(steps) + 1)]
    statuses = re.findall(r"^\[(check passed|CHECK FAILED)\] ", text, flags=re.MULTILINE)
    assert len(statuses) == len(steps)  # one check per step
    assert statuses == ["check passed"] * len(steps)
    assert "CHECK FAILED" not in text
    for number in (83, 113, 173, 203):
        assert re.search(rf"\b{number}\b", text), number
    # the output matrix as a grid, and the first element's dot product
    assert re.search(r"\[\[\s*83\s+113\]\s*\n\s*\[173\s+203\]\]", text)
    assert "= 83" in text


def test_explain_text_via_main(capsys):
    assert main(["explain"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    check_text_output(captured.out)


def test_explain_text_is_the_default_format(capsys):
    assert main(["explain", "--format", "text"]) == 0
    explicit = capsys.readouterr().out
    assert main(["explain"]) == 0
    assert capsys.readouterr().out == explicit


def test_explain_via_installed_console_script():
    result = subprocess.run([console_script(), "explain"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    check_text_output(result.stdout)


def test_explain_json_output_matches_conv2d(capsys):
    assert main(["explain", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["passed"] is True
    steps = document["steps"]
    assert len(steps) >= 4
    for step in steps:
        assert step["passed"] is True
        assert {"topic", "title", "formula", "body", "check", "passed", "data"} <= set(step)
    # every case's output, as nested lists, is what conv2d computes for that case
    for case in document["cases"]:
        image, kernel = np.array(case["input"]), np.array(case["weight"])
        expected = cl.conv2d(image, kernel, stride=case["stride"], padding=[tuple(p) for p in case["padding_pairs"]],
                             dilation=case["dilation"], groups=case["groups"])
        assert case["output"] == expected.tolist()
    classic = next(case for case in document["cases"] if case["name"] == "classic")
    assert classic["input"] == [np.arange(1, 10).reshape(3, 3).tolist()]
    assert classic["weight"] == [[[[9, 8], [7, 6]]]]
    assert classic["output"] == [CLASSIC_OUTPUT]
    # the matrix-product step's output and the first dot-product step agree with it
    im2col = next(step for step in steps if step["topic"] == "im2col" and step["case"] == "classic")
    assert im2col["data"]["output"] == [CLASSIC_OUTPUT]
    dot = next(step for step in steps if step["topic"] == "dot" and step["case"] == "classic")
    assert dot["data"]["dot"] == dot["data"]["sum"] == CLASSIC_OUTPUT[0][0]


def test_explain_json_flip_step_matches_conv2d(capsys):
    assert main(["explain", "flip", "--format", "json"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert [step["topic"] for step in steps] == ["flip"]
    data = steps[0]["data"]
    assert np.array(data["correlation"]).squeeze().tolist() == [[13, 20, 17], [18, 24, 18], [-13, -20, -17]]
    assert np.array(data["convolution"]).squeeze().tolist() == [[-13, -20, -17], [-18, -24, -18], [13, 20, 17]]


def test_explain_json_via_console_script():
    result = subprocess.run([console_script(), "explain", "--format", "json"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [case["output"] for case in document["cases"] if case["name"] == "classic"] == [[CLASSIC_OUTPUT]]


def test_cli_rejects_unknown_format_and_missing_command(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["explain", "--format", "yaml"])
    assert caught.value.code == 2
    assert "--format" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"convolab {cl.__version__}"


# -- user input is refused in one line, never a traceback, never a runaway (issue 13) ------------------------


def refused(capsys, *argv: str) -> str:
    """Run ``convolab *argv``: exit status 2, nothing on stdout, one line on stderr; that line."""
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err)
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"convolab {argv[0]}: error: "), captured.err
    return captured.err


def test_an_integer_beyond_int64_is_refused_not_an_overflow_traceback(capsys):
    err = refused(capsys, "explain", "--input", "12345678901234567890 1; 2 3", "--kernel", "1")
    assert "--input: 12345678901234567890" in err and "does not fit int64" in err and "decimal point" in err


def test_a_float_beyond_float64_is_refused_not_silently_infinite(capsys):
    err = refused(capsys, "explain", "--input", "1 1e400; 3 4", "--kernel", "1 2; 3 4")
    assert "'1e400'" in err and "outside float64's range" in err


@pytest.mark.parametrize("padding", ["100000", "3000"])  # a MemoryError, and over a minute of work
def test_huge_padding_is_refused_before_anything_is_computed(capsys, padding):
    err = refused(capsys, "explain", "--input", "1 2; 3 4", "--kernel", "1", "--padding", padding)
    assert "output must have at most 4,096 cells" in err and "less padding" in err
    assert f"{2 * int(padding) + 2}" in err  # the shape it would have had


def test_groups_zero_is_an_error_not_one(capsys):
    err = refused(capsys, "explain", "--input", "1 2; 3 4", "--kernel", "1", "--groups", "0")
    assert err.startswith("convolab explain: error: --groups 0:") and "groups must be >= 1" in err


@pytest.mark.parametrize("argv, message", [
    (["--input", "1 2; 3 4", "--kernel", "1", "--output-padding", "1"], "--output-padding '1': applies only to a "
                                                                        "transposed convolution"),
    (["--output-padding", "1"], "--output-padding '1': applies only"),
    (["--at", "0,0,0"], "--at '0,0,0': chooses an element of your own case"),
    (["im2col", "--input", "1 2; 3 4", "--kernel", "1", "--at", "0,0,0"], "add the topic 'dot' or drop --at"),
    (["--input", "1 2; 3 4", "--input-file", "x.npy", "--kernel", "1"], "give --input or --input-file, not both"),
    (["--input", "1 2; 3 4", "--kernel", "1", "--kernel-file", "k.npy"], "give --kernel or --kernel-file, not both"),
])
def test_options_that_do_not_apply_are_errors(capsys, argv, message):
    assert message in refused(capsys, "explain", *argv)


@pytest.mark.parametrize("input, kernel, flag, found", [
    ("1 nan; 3 4", "1 2; 3 4", "--input", "got nan at (0, 0, 1)"),
    ("1 inf; 3 4", "1 2; 3 4", "--input", "got inf at (0, 0, 1)"),
    ("1 2; 3 4", "1 -inf; 3 4", "--kernel", "got -inf at (0, 0, 0, 1)"),
])
def test_non_finite_numbers_are_refused_never_a_failed_check(capsys, input, kernel, flag, found):
    err = refused(capsys, "explain", "--input", input, "--kernel", kernel)
    assert err.startswith(f"convolab explain: error: {flag} ") and "must hold finite numbers" in err and found in err
    assert "CHECK FAILED" not in err


def test_sums_that_would_overflow_to_infinity_are_refused(capsys):
    err = refused(capsys, "explain", "--input", "1 1e308; 3 4", "--kernel", "1 2; 3 4")
    assert "within float64's range" in err and "values up to 1e+308 against weight values up to 4" in err
    # Just inside the range the walk-through runs and every check holds.
    assert main(["explain", "--input", "1 1e300; 3 4", "--kernel", "1 2; 3 4", "--format", "text"]) == 0
    assert "CHECK FAILED" not in capsys.readouterr().out


def test_json_is_strict_and_writes_non_finite_numbers_as_strings():
    from convolab.show.explain import Explanation, Step, render_json

    step = Step(topic="dot", title="t", formula="f", body=(), check="c", passed=True,
                data={"values": np.array([1.5, np.nan, np.inf, -np.inf]), "scalar": np.float64(np.nan)})
    text = render_json(Explanation("title", (), (step,)))

    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    data = json.loads(text, parse_constant=reject)["steps"][0]["data"]
    assert data["values"] == [1.5, "nan", "inf", "-inf"] and data["scalar"] == "nan"


@pytest.mark.parametrize("shape", [(200, 200), (5000, 5000)])  # 12 GB, and 14 GB then a 4.44 PiB traceback
def test_large_inputs_are_refused_with_the_limit_and_what_to_do(tmp_path, capsys, shape):
    path = tmp_path / "big.npy"
    np.save(path, np.zeros(shape, dtype=np.uint8))
    for command in (["explain"], ["draw", "--output", str(tmp_path / "d")], ["animate", "--output",
                                                                                 str(tmp_path / "a.gif")]):
        err = refused(capsys, *command, "--input-file", str(path), "--kernel", "1 2; 3 4")
        assert "input must have at most 4,096 cells" in err and "give a smaller input" in err
        assert f"{shape[0] * shape[1]:,} cells" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npy"]  # nothing written


def test_animate_counts_frames_before_computing_them(tmp_path, capsys, monkeypatch):
    import convolab.show.explain

    def not_expected(*args, **kwargs):
        raise AssertionError("slide_steps ran before the frame count was checked")

    monkeypatch.setattr(convolab.show.explain, "slide_steps", not_expected)
    ones = "; ".join([" ".join(["1"] * 30)] * 30)  # 900 cells, 841 outputs: a case explain takes, too many frames
    err = refused(capsys, "animate", "--input", ones, "--kernel", "1 1; 1 1", "--output", str(tmp_path / "a.gif"))
    assert "at most 400 elements to animate" in err and "841" in err and ones not in err


def test_files_of_complex_or_batched_arrays_are_refused(tmp_path, capsys):
    np.save(tmp_path / "complex.npy", np.ones((3, 3)) * (1 + 2j))
    np.save(tmp_path / "batched.npy", np.ones((1, 1, 3, 3)))
    err = refused(capsys, "explain", "--input-file", str(tmp_path / "complex.npy"), "--kernel", "1")
    assert "holds complex128 values; it must hold real numbers" in err
    err = refused(capsys, "explain", "--input-file", str(tmp_path / "batched.npy"), "--kernel", "1")
    assert "input must be one unbatched image (C_in, H, W), got shape (1, 1, 3, 3)" in err


def test_fps_must_be_a_positive_finite_number(capsys):
    for fps in ("0", "-1", "nan", "inf"):
        with pytest.raises(SystemExit) as caught:
            main(["animate", "--fps", fps, "--output", "never.gif"])
        assert caught.value.code == 2 and "--fps" in capsys.readouterr().err


def test_long_flag_values_are_cut_short_in_messages(capsys):
    err = refused(capsys, "explain", "--input", "1 2; 3 4", "--kernel", "1", "--padding", "(" * 5000)
    assert len(err) < 200 and "...'" in err
