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
