"""Every example in README.md and docs/*.md runs as written (issue 16).

Each fenced ```python and ```sh block is run in a fresh temporary folder:

- a ``python`` block in a subprocess, as a script; a block of ``>>>`` lines as a doctest;
- a ``sh`` block line by line (backslash continuations joined, ``&&`` chains split,
  ``#`` comments dropped): ``convolab ...`` through :func:`convolab.cli.main` in a
  subprocess, ``python ...`` with this interpreter.

Not run, by rule:

- ``pip install ...``: installing is the reader's step, and this checkout is what the
  test runs (its ``src`` is first on ``PYTHONPATH``);
- ``python -m pytest``: the test suite itself;
- a block that connects to a real cluster's scheduler (``Client("tcp://...")``): there is
  no scheduler here, and the doc says that block is not run.

``convolab explore`` without ``--output`` serves until stopped: it passes when it says
it is serving (no browser is opened: ``BROWSER`` runs ``true``), and is then stopped.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", re.DOTALL | re.MULTILINE)
CLI = "import sys; from convolab.cli import main; sys.exit(main(sys.argv[1:]))"

#: Seconds an example may take; the dask LocalCluster example filters 1 GiB on two workers.
TIMEOUT = 600


def _blocks() -> list[tuple[str, str, str]]:
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in BLOCK.finditer(text):
            line = text[:match.start()].count("\n") + 1
            found.append((f"{document.relative_to(ROOT)}:{line}", match.group(1), match.group(2)))
    return found


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["BROWSER"] = "true"  # webbrowser runs `true URL`: no window opens
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _commands(block: str) -> list[list[str]]:
    """The block's commands as argument lists, continuations joined, ``&&`` split, comments dropped."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words:
                commands.append(words)
    return commands


def _skipped(words: list[str]) -> bool:
    return words[:2] == ["pip", "install"] or words[:3] == ["python", "-m", "pytest"]


def _run_command(words: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess | None:
    if words[0] == "convolab":
        argv = [sys.executable, "-c", CLI, *words[1:]]
    elif words[0] == "python":
        argv = [sys.executable, *words[1:]]
    else:
        pytest.fail(f"no rule to run {shlex.join(words)!r}: add one to this test, or write the doc's example as "
                    "a convolab or python command")
    if words[:2] == ["convolab", "explore"] and "--output" not in words:
        return _serve(argv, cwd)
    return subprocess.run(argv, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=TIMEOUT)


def _serve(argv: list[str], cwd: pathlib.Path) -> None:
    """Start a server command; it must say it is serving, and is then stopped."""
    server = subprocess.Popen(argv, cwd=cwd, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        line = server.stdout.readline()
        assert "serving http" in line, (line, server.stderr.read() if server.poll() is not None else "")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return None


@pytest.mark.parametrize("where, language, block", _blocks(), ids=[where for where, _, _ in _blocks()])
def test_example_runs_as_written(where, language, block, tmp_path):
    if language == "python":
        if re.search(r"Client\(\s*[\"']tcp://", block):
            pytest.skip("connects to a real cluster's scheduler (the doc says this block is not run)")
        if block.lstrip().startswith(">>>"):
            script = tmp_path / "example.txt"
            script.write_text(block)
            argv = [sys.executable, "-m", "doctest", str(script)]
        else:
            script = tmp_path / "example.py"
            script.write_text(block)
            argv = [sys.executable, str(script)]
        result = subprocess.run(argv, cwd=tmp_path, env=_environment(), capture_output=True, text=True,
                                timeout=TIMEOUT)
        assert result.returncode == 0, f"{where}:\n{result.stdout}\n{result.stderr}"
        return
    ran = 0
    for words in _commands(block):
        if _skipped(words):
            continue
        result = _run_command(words, tmp_path)
        ran += 1
        if result is not None:
            assert result.returncode == 0, f"{where}: {shlex.join(words)}\n{result.stdout[-2000:]}\n{result.stderr}"
            assert "Traceback" not in result.stderr, f"{where}: {shlex.join(words)}\n{result.stderr}"
    if ran == 0:
        pytest.skip("every command is one the rules skip (pip install, the test suite)")


def test_every_document_has_its_examples_found():
    # The README holds python and sh examples; docs/dask.md python ones: a fence the pattern missed would hide them.
    languages = {where.split(":")[0]: set() for where, _, _ in _blocks()}
    for where, language, _ in _blocks():
        languages[where.split(":")[0]].add(language)
    assert languages["README.md"] == {"python", "sh"} and "python" in languages[str(pathlib.Path("docs/dask.md"))]
