"""``convolab gallery``: every standard case, its transposed counterpart, true statements, an index, small GIFs."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest

import convolab as cl
from convolab.cli import main
from convolab.show.gallery import GALLERY_NAMES, INDEX_NAME, gallery_cases, write_gallery
from convolab.show.explain.slide import PADDING, UNREAD, slide_steps

#: A gallery GIF must stay within this many bytes ("a few hundred KB").
MAX_GIF_BYTES = 400 * 1024


def test_the_cases_are_the_standard_ones_each_with_its_transposed_counterpart():
    entries = gallery_cases()
    assert [entry.name for entry in entries] == list(GALLERY_NAMES) and len(entries) == 12
    for forward, transposed in zip(entries[::2], entries[1::2]):
        assert not forward.case.transposed and transposed.case.transposed
        assert transposed.name == forward.name + "-transposed"
        # The transposed convolution takes the forward output's shape back to the forward input's.
        assert transposed.case.input.shape == forward.case.output().shape
        assert transposed.case.output().shape == forward.case.input.shape
        np.testing.assert_array_equal(transposed.case.output(), cl.conv_transpose2d(
            transposed.case.input, transposed.case.weight, stride=transposed.case.stride,
            padding=transposed.case.padding, dilation=transposed.case.dilation,
            output_padding=transposed.case.output_padding))
    params = {entry.name: entry.case for entry in entries}
    assert params["same"].padding == 1 and params["full"].padding == 2 and params["stride-2"].stride == 2
    assert params["stride-2-padding-1"].padding == 1 and params["dilation-2"].dilation == 2


def test_each_size_formula_the_index_prints_evaluates_to_the_output_size():
    formula = re.compile(r"(floor\(\([\d +*-]+\)/\d\)|\([\d +*-]+\)/\d) \+ 1 = (\d+)")
    for entry in gallery_cases()[::2]:
        found = formula.search(entry.shows)
        assert found, entry.shows
        size = eval(found.group(1) + " + 1", {"floor": math.floor})  # noqa: S307 (our own text)
        assert size == int(found.group(2)) == entry.case.output().shape[1] == entry.case.output().shape[2]


def test_what_the_texts_say_about_unread_cells_and_padding_is_true():
    cases = {entry.name: entry for entry in gallery_cases()}
    role = slide_steps(cases["stride-2"].case)[0].data["role"]
    assert (role[5, :] == UNREAD).all() and (role[:, 5] == UNREAD).all() and (role[:5, :5] != UNREAD).all()
    for name, entry in cases.items():
        if "not padded at all" in entry.shows:
            assert not (slide_steps(entry.case)[0].data["role"] == PADDING).any(), name
        if "output_padding 1" in entry.shows:
            assert entry.case.output_padding == (1, 1), name


def test_every_case_fits_the_frame_limit():
    from convolab.show.pictures import FRAME_LIMIT

    assert all(entry.case.output().size <= FRAME_LIMIT for entry in gallery_cases())


def test_the_gallery_writes_every_file_and_the_index_lists_them(tmp_path, monkeypatch):
    # Drawing all 200 frames takes minutes: stand in for animate, and check what the gallery does with it.
    import convolab.show.pictures

    drawn = []

    def stand_in(steps, path, *, fps, dpi, frames):
        drawn.append((steps[0].case, frames))
        with open(path, "wb") as file:
            file.write(b"GIF89a")
        return {"path": str(path), "frames": len(steps) - 1, "elements": len(steps) - 1, "size": (800, 400),
                "bytes": 6}

    monkeypatch.setattr(convolab.show.pictures, "animate", stand_in)
    result = write_gallery(tmp_path / "new" / "gallery")
    folder = tmp_path / "new" / "gallery"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{name}.gif" for name in GALLERY_NAMES] + [INDEX_NAME])
    assert [case for case, _ in drawn] == list(GALLERY_NAMES)
    index = (folder / INDEX_NAME).read_text()
    for entry, gif in zip(gallery_cases(), result["gifs"]):
        assert f"]({entry.name}.gif)" in index and f"## {entry.title}\n" in index and entry.shows in index
        assert f"{gif['frames']} frames" in index and f"--output {entry.name}.gif" in index


def test_gallery_gifs_are_small_with_a_frame_per_output_element(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    pytest.importorskip("matplotlib")
    result = write_gallery(tmp_path, names=["stride-2"])
    (gif,) = result["gifs"]
    entry = {e.name: e for e in gallery_cases()}["stride-2"]
    with Image.open(gif["path"]) as image:
        assert image.n_frames == gif["frames"] == entry.case.output().size
        assert min(image.size) >= 400
    assert 0 < gif["bytes"] <= MAX_GIF_BYTES
    index = (tmp_path / INDEX_NAME).read_text()
    assert "(stride-2.gif)" in index and "(same.gif)" not in index


def test_cli_gallery_writes_one_line_per_file_and_refuses_in_one_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["gallery", "--output", str(tmp_path / "g"), "--only", "dilation-2"]) == 0
    out = capsys.readouterr().out
    assert "dilation-2.gif: 4 frames" in out and f"{INDEX_NAME}: what each GIF shows" in out
    (tmp_path / "a-file").write_text("")
    assert main(["gallery", "--output", str(tmp_path / "a-file"), "--only", "stride-2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convolab gallery: error: ") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["gallery", "--output", str(tmp_path), "--only", "nope"])
    with pytest.raises(ValueError, match="gallery: names must be among no-padding, .*, got \\['nope'\\]"):
        write_gallery(tmp_path, names=["nope"])


def test_building_the_parser_and_the_gallery_module_import_no_matplotlib():
    code = ("import sys, convolab.cli, convolab.show.gallery; convolab.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'PIL')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


def test_docs_gallery_frames_exist_and_are_small():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    pictures = re.findall(r"\]\(([\w-]+\.png)\)", (docs / "gallery.md").read_text())
    assert len(pictures) == 2
    for name in pictures:
        assert (docs / name).is_file() and (docs / name).stat().st_size < 100 * 1024, name


def test_each_index_command_draws_the_same_case():
    import shlex

    from convolab.cli import _case_from_args, build_parser
    from convolab.show.gallery import _command

    for entry in gallery_cases():
        words = shlex.split(_command(entry.case))
        assert words[:2] == ["convolab", "animate"]
        case = _case_from_args(build_parser().parse_args(words[1:]))
        assert case.transposed == entry.case.transposed and case.describe() == entry.case.describe()
        np.testing.assert_array_equal(case.output(), entry.case.output())
