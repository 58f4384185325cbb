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
    steps = json.loads(capsys.readouterr().out)
    assert isinstance(steps, list) and len(steps) >= 4
    for step in steps:
        assert step["passed"] is True
        assert {"title", "formula", "lines", "check", "passed", "data"} <= set(step)
    with_output = [step for step in steps if "output" in step["data"]]
    assert len(with_output) == 1
    data = with_output[0]["data"]
    image, kernel = np.array(data["input"]), np.array(data["kernel"])
    assert image.tolist() == np.arange(1, 10).reshape(3, 3).tolist()
    assert kernel.tolist() == [[9, 8], [7, 6]]
    expected = cl.conv2d(image[None, None], kernel[None, None])[0, 0]
    assert data["output"] == expected.tolist() == CLASSIC_OUTPUT
    # the dot-product step agrees with the first output element
    dot_steps = [step for step in steps if "dot" in step["data"]]
    assert len(dot_steps) == 1
    assert dot_steps[0]["data"]["dot"] == dot_steps[0]["data"]["sum"] == CLASSIC_OUTPUT[0][0]


def test_explain_json_flip_step_matches_conv2d(capsys):
    assert main(["explain", "--format", "json"]) == 0
    steps = json.loads(capsys.readouterr().out)
    flip_steps = [step for step in steps if "convolution" in step["data"]]
    assert len(flip_steps) == 1
    data = flip_steps[0]["data"]
    assert data["correlation"] == [[13, 20, 17], [18, 24, 18], [-13, -20, -17]]
    assert data["convolution"] == [[-13, -20, -17], [-18, -24, -18], [13, 20, 17]]


def test_explain_json_via_console_script():
    result = subprocess.run([console_script(), "explain", "--format", "json"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)
    assert [step["data"]["output"] for step in steps if "output" in step["data"]] == [CLASSIC_OUTPUT]


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
