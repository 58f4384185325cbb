"""``convolab animate`` and ``convolab draw``: the files open, with the expected frames and sizes."""

from __future__ import annotations

import numpy as np
import pytest

from convolab.cli import main
from convolab.show.explain import Case, explain, slide_steps, standard_cases

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from convolab.show.pictures import MAX_FRAMES, animate, draw_conv_matrix, draw_im2col  # noqa: E402


def opened_gif(path):
    image = Image.open(path)
    assert image.format == "GIF"
    return image


@pytest.mark.parametrize(
    "case",
    [
        standard_cases()["classic"],
        Case("strided", np.arange(1, 26).reshape(1, 5, 5), np.ones((1, 1, 3, 3), dtype=np.int64), stride=2, padding=1),
        Case("dilated", np.arange(1.0, 17.0).reshape(1, 4, 4), np.ones((1, 1, 2, 2)), dilation=2, padding=(0, 1)),
        Case("transposed", np.array([[[1, 2], [3, 4]]]), np.ones((1, 1, 2, 2), dtype=np.int64), stride=2,
             transposed=True),
    ],
    ids=lambda case: case.name,
)
def test_animate_one_frame_per_output_element(tmp_path, case):
    path = tmp_path / f"{case.name}.gif"
    result = animate(slide_steps(case), path, fps=4)
    gif = opened_gif(path)
    assert gif.n_frames == result["frames"] == case.output().size
    assert gif.size == result["size"]
    assert min(gif.size) > 200


def test_animate_refuses_too_many_frames(tmp_path):
    case = Case("big", np.zeros((1, 30, 30)), np.ones((1, 1, 2, 2)))
    assert case.output().size > MAX_FRAMES
    with pytest.raises(ValueError, match="frames"):
        animate(slide_steps(case), tmp_path / "big.gif")


def test_draw_both_matrix_views(tmp_path):
    im2col_step, matrix_step = explain(standard_cases()["classic"], ["im2col"]).steps
    for drawer, step, name in ((draw_im2col, im2col_step, "im2col.png"), (draw_conv_matrix, matrix_step, "m.png")):
        result = drawer(step, tmp_path / name)
        png = Image.open(tmp_path / name)
        assert png.format == "PNG" and png.size == result["size"] and min(png.size) > 200
    with pytest.raises(ValueError, match="im2col"):
        draw_im2col(matrix_step, tmp_path / "wrong.png")


def test_draw_with_groups_and_padding(tmp_path):
    case = Case("grouped", np.arange(32.0).reshape(2, 4, 4), np.ones((2, 1, 3, 3)), padding=1, groups=2)
    im2col_step, matrix_step = explain(case, ["im2col"]).steps
    assert Image.open(draw_im2col(im2col_step, tmp_path / "g.png")["path"]).format == "PNG"
    assert Image.open(draw_conv_matrix(matrix_step, tmp_path / "gm.png")["path"]).format == "PNG"


def test_cli_animate_and_draw(tmp_path, capsys):
    gif = tmp_path / "slide.gif"
    assert main(["animate", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "1 0; 0 1", "--stride", "2",
                 "--padding", "1", "--output", str(gif)]) == 0
    assert opened_gif(gif).n_frames == 4 and "4 frames" in capsys.readouterr().out
    assert main(["draw", "--output", str(tmp_path / "classic")]) == 0
    for suffix in ("im2col", "conv-matrix"):
        assert Image.open(tmp_path / f"classic-{suffix}.png").format == "PNG"
    assert main(["draw", "--input", "1 2; 3 4", "--kernel", "1", "--transposed", "--output",
                 str(tmp_path / "t")]) == 2
    assert "--transposed" in capsys.readouterr().err


def test_draw_refuses_a_matrix_too_large_to_draw_before_drawing_anything(tmp_path, capsys):
    from convolab.show.pictures import MAX_DRAWN_CELLS

    ones = "; ".join([" ".join(["1"] * 64)] * 64)  # explain takes it; its 4096 x 4096 matrix is too many cells
    assert main(["draw", "--input", ones, "--kernel", "1", "--output", str(tmp_path / "big")]) == 2
    err = capsys.readouterr().err
    assert f"M must have at most {MAX_DRAWN_CELLS:,} cells to be drawn" in err and "(4096, 4096)" in err
    assert err.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_pictures_go_into_a_new_folder_and_an_unwritable_path_is_one_line(tmp_path, capsys):
    # The README's `draw --output pictures/classic` in a fresh checkout: the folder is made.
    assert main(["draw", "--output", str(tmp_path / "pictures" / "classic")]) == 0
    assert (tmp_path / "pictures" / "classic-im2col.png").is_file()
    (tmp_path / "a-file").write_text("")
    assert main(["animate", "--output", str(tmp_path / "a-file" / "slide.gif")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convolab animate: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("fps", [0, -1.0, float("nan"), "fast"])
def test_animate_checks_fps(tmp_path, fps):
    with pytest.raises(ValueError, match="animate: fps must be a finite number > 0"):
        animate(slide_steps(standard_cases()["classic"]), tmp_path / "x.gif", fps=fps)
